"""NetworkPolicies in member namespaces may not widen what the namespace's SecurityDomain allows (issue 16).

NetworkPolicies only add, so a tenant's allow-all policy voids the domain's default deny. The webhook admits a
policy only when every (peer, port) it allows is allowed by the domain's own planned policies for every pod it may
select; iotsec's operator writes its policies unjudged. Verdicts are cross-checked with network-config-analyzer:
an admitted policy leaves nca's connectivity map unchanged, a refused one changes it.
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from iotsec.admission.context import Snapshot
from iotsec.admission.engine import decide
from iotsec.admission.model import Decision
from iotsec.admission.netpol import MAX_ITEMS, Ports, implies, requirements, uncovered_ports
from iotsec.admission.rules import RULES
from iotsec.admission.snapshot import snapshot_from_objects
from iotsec.build import render as iotsec_render
from iotsec.model.manifests import Document
from iotsec.model.platform import Platform
from iotsec.servers.webhook.review import review
from tests.conftest import EXAMPLES
from tests.netpol import External, Pod, allow_all, namespace_manifest, run_nca
from tests.netpol import _direction_allows as direction_allows
from tests.unit.test_isolation_nca_render import converged_render, declared_topology

NOW = datetime(2026, 12, 3, tzinfo=UTC)
RULE = "network-policy-scope"
LEVEL = "iotsec.io/security-level"
DOMAIN = "iotsec.io/domain"
PLATFORM_DOCS = [
    d for p in sorted((EXAMPLES / "platform").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d
]
OPERATOR = Platform().operator_user
BACKUP_POLICY, NETPOL = "iotsec-backup-timeseries", "NetworkPolicy"
TENANT_ADMIN = "alice@acme.example"


def policy(namespace: str, name: str = "user-policy", **spec: Any) -> dict[str, Any]:
    spec.setdefault("podSelector", {})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def domain_doc(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "iotsec.io/v1alpha1", "kind": "SecurityDomain", "metadata": {"name": name}, "spec": spec}


def rendered(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = iotsec_render.render(Document("input", i, d) for i, d in enumerate(docs))
    assert not result.invalid
    return result.objects


def snapshot_of(docs: list[dict[str, Any]]) -> Snapshot:
    """The webhook's view after the operator labelled the namespaces: given Namespaces, then the rendered patches."""
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    patches = [o for o in rendered(docs) if o["kind"] == "Namespace"]
    return snapshot_from_objects([*docs, *namespaces, *patches], assume_named_namespaces_exist=True)


@pytest.fixture(scope="module")
def platform() -> Snapshot:
    return snapshot_of(PLATFORM_DOCS)


BRIDGE = [
    domain_doc(
        "cloud-bridge",
        zone="interface",
        namespaces=["bridge"],
        internet={"egress": True, "ports": [{"port": 443}]},
        denyCIDRs=["198.51.100.0/24"],
        exceptions=[
            {
                "rule": RULE,
                "target": {"namespace": "bridge", "kind": "NetworkPolicy", "name": "legacy-uplink"},
                "justification": "vendor uplink until the bridge moves to the internet rule",
                "approver": "ciso@example.com",
                "expires": "2027-06-30T00:00:00Z",
            }
        ],
    ),
    domain_doc("vault", zone="core", namespaces=["vault"], intraDomainTraffic="namespace"),
    namespace_manifest("bridge", {}),
    namespace_manifest("vault", {}),
    namespace_manifest("loose", {}),
]


@pytest.fixture(scope="module")
def bridge() -> Snapshot:
    return snapshot_of(BRIDGE)


def judged(snapshot: Snapshot, obj: dict[str, Any], user: str = TENANT_ADMIN) -> Decision:
    return decide(obj, snapshot.context(obj["metadata"]["namespace"], NOW, user))


def scope_violations(decision: Decision) -> list[str]:
    return [f"{v.path}: {v.message}" for v in decision.violations if v.rule == RULE]


# ---------------------------------------------------------------- always refused


def test_allow_all_ingress_is_denied_naming_rule_control_and_fix(platform):
    decision = judged(platform, policy("iot-ingest", policyTypes=["Ingress"], ingress=[{}]))
    assert not decision.allowed
    [violation] = decision.violations
    assert (violation.rule, violation.control) == (RULE, RULES[RULE].control) == (RULE, "X1369-9.4.1-3")
    assert violation.path == "spec.ingress[0]"
    assert "ingress[0] has no from" in violation.message
    assert "every port" in violation.message
    assert violation.fix == "add the flow to SecurityDomain ingestion (spec.allow) instead"
    assert "X1369-9.4.1-3 network-policy-scope" in decision.message


def test_the_tenant_allow_all_of_the_isolation_tests_is_denied_both_ways(platform):
    decision = judged(platform, allow_all("acme-meters"))
    assert not decision.allowed
    assert {v.path for v in decision.violations} == {"spec.ingress[0]", "spec.egress[0]"}
    assert {v.fix for v in decision.violations} == {
        "add the flow to SecurityDomain ingestion (spec.allow) instead",
        "add the flow to SecurityDomain ingestion (spec.egress) instead",
    }


def test_a_rule_with_ports_but_no_peers_is_every_source(platform):
    decision = judged(platform, policy("iot-ingest", ingress=[{"ports": [{"port": 9092}]}]))
    assert scope_violations(decision) == [
        "spec.ingress[0]: ingress[0] has no from: allows every pod, namespace and address on TCP 9092"
    ]


def test_allow_from_all_namespaces_is_denied(platform):
    peers = [{"namespaceSelector": {}}]
    decision = judged(platform, policy("iot-ingest", ingress=[{"from": peers, "ports": [{"port": 9092}]}]))
    assert not decision.allowed
    assert scope_violations(decision) == [
        "spec.ingress[0].from[0]: ingress[0].from[0] allows every pod of every namespace (namespaceSelector {}) "
        "on TCP 9092"
    ]


def test_a_peer_domain_the_domain_does_not_allow_is_denied(platform):
    """ingestion admits the partner API on 8080, but never the gateway's neighbours in admin-console on 9092."""
    peers = [{"namespaceSelector": {"matchLabels": {DOMAIN: "admin-console"}}}]
    decision = judged(platform, policy("iot-ingest", ingress=[{"from": peers, "ports": [{"port": 9092}]}]))
    assert scope_violations(decision) == [
        "spec.ingress[0].from[0]: ingress[0].from[0] allows every pod of namespaces "
        "{iotsec.io/domain=admin-console} on TCP 9092"
    ]


def test_ports_beyond_the_allowed_ones_are_denied_and_named(platform):
    peers = [{"namespaceSelector": {"matchLabels": {DOMAIN: "device-gateway"}}}]
    ports = [{"port": 9090, "endPort": 9093}, {"protocol": "UDP", "port": 9092}]
    decision = judged(platform, policy("iot-ingest", ingress=[{"from": peers, "ports": ports}]))
    [line] = scope_violations(decision)
    assert line.endswith("on TCP 9090-9091,9093, UDP 9092"), line


def test_a_named_port_is_denied_where_the_domain_opens_numbers(platform):
    peers = [{"namespaceSelector": {"matchLabels": {DOMAIN: "device-gateway"}}}]
    decision = judged(platform, policy("iot-ingest", ingress=[{"from": peers, "ports": [{"port": "kafka"}]}]))
    [line] = scope_violations(decision)
    assert line.endswith("on TCP port named kafka")


def test_egress_to_everywhere_is_denied_in_a_core_zone(platform, bridge):
    for snapshot, namespace in ((platform, "iot-ingest"), (bridge, "vault")):
        to = [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
        decision = judged(snapshot, policy(namespace, egress=[{"to": to, "ports": [{"port": 443}]}]))
        assert not decision.allowed
        assert scope_violations(decision) == [
            "spec.egress[0].to[0]: egress[0].to[0] allows ipBlock 0.0.0.0/0 beyond the domain: all of it on TCP 443"
        ]
        to6 = [{"ipBlock": {"cidr": "::/0"}}]
        assert not judged(snapshot, policy(namespace, egress=[{"to": to6}])).allowed


# ---------------------------------------------------------------- the internet rule


PUBLIC_V4 = {
    "cidr": "0.0.0.0/0",
    "except": [
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "198.51.100.0/24",
    ],
}


def test_egress_to_the_internet_is_admitted_where_the_domains_internet_egress_opens_it(bridge):
    egress = [{"to": [{"ipBlock": PUBLIC_V4}], "ports": [{"port": 443}]}]
    assert judged(bridge, policy("bridge", egress=egress)).violations == ()
    one_host = [{"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}], "ports": [{"protocol": "TCP", "port": 443}]}]
    assert judged(bridge, policy("bridge", egress=one_host)).violations == ()


def test_everywhere_still_reaches_the_private_ranges_the_internet_rule_leaves_out(bridge):
    """0.0.0.0/0 is more than the internet: the cluster's own networks and the deny list are in it."""
    egress = [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]}]
    [line] = scope_violations(judged(bridge, policy("bridge", egress=egress)))
    assert line.endswith("beyond the domain: 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8 (+4 more) on TCP 443"), line


def test_the_internet_rule_opens_only_its_ports(bridge):
    egress = [{"to": [{"ipBlock": PUBLIC_V4}], "ports": [{"port": 443}, {"port": 8883}]}]
    [line] = scope_violations(judged(bridge, policy("bridge", egress=egress)))
    assert line.endswith("beyond the domain: all of it on TCP 8883"), line
    ingress = [{"from": [{"ipBlock": PUBLIC_V4}], "ports": [{"port": 443}]}]
    assert not judged(bridge, policy("bridge", ingress=ingress)).allowed, "egress only: no way in"


# ---------------------------------------------------------------- admitted


def test_policies_that_only_restrict_are_admitted(platform):
    for types in (["Ingress"], ["Egress"], ["Ingress", "Egress"]):
        assert judged(platform, policy("iot-ingest", policyTypes=types)).violations == ()
    levelled = policy("acme-meters", podSelector={"matchLabels": {LEVEL: "high"}}, policyTypes=["Ingress"])
    assert judged(platform, levelled).violations == ()


def test_a_narrowing_policy_is_admitted(platform):
    """Fewer pods, fewer peers, fewer ports than the domain's rules: still inside the domain's flows."""
    narrowing = policy(
        "iot-ingest",
        podSelector={"matchLabels": {"app.kubernetes.io/name": "broker", LEVEL: "standard"}},
        policyTypes=["Ingress", "Egress"],
        ingress=[
            {
                "from": [
                    {
                        "namespaceSelector": {"matchLabels": {DOMAIN: "device-gateway"}},
                        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "mqtt-gateway"}},
                    },
                    {"podSelector": {"matchLabels": {LEVEL: "standard"}}},
                ],
                "ports": [{"protocol": "TCP", "port": 9092}],
            }
        ],
        egress=[
            {
                "to": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    }
                ],
                "ports": [{"protocol": "UDP", "port": 53}],
            },
            {"to": [{"namespaceSelector": {"matchLabels": {DOMAIN: "operations"}}}], "ports": [{"port": 8000}]},
        ],
    )
    assert judged(platform, narrowing).violations == ()


def test_declared_cidrs_are_admitted_inside_and_denied_outside(platform):
    inside = [{"from": [{"ipBlock": {"cidr": "10.20.4.0/24"}}], "ports": [{"port": 8443}]}]
    assert judged(platform, policy("admin-console", ingress=inside)).violations == ()
    outside = [{"from": [{"ipBlock": {"cidr": "10.21.0.0/16"}}], "ports": [{"port": 8443}]}]
    assert scope_violations(judged(platform, policy("admin-console", ingress=outside)))


def test_an_ip_block_covered_only_by_two_domain_rules_together_is_admitted(platform):
    """partner-api admits 203.0.113.0/25 minus its deny list, in IPv4, and 2001:db8:1200::/40."""
    ingress = [
        {
            "from": [{"ipBlock": {"cidr": "203.0.113.0/25", "except": ["203.0.113.66/32"]}}],
            "ports": [{"port": 8443}],
        }
    ]
    assert judged(platform, policy("partner-api", ingress=ingress)).violations == ()
    ingress[0]["from"][0]["ipBlock"] = {"cidr": "203.0.113.0/25"}
    [line] = scope_violations(judged(platform, policy("partner-api", ingress=ingress)))
    assert "beyond the domain: 203.0.113.66/32 on TCP 8443" in line, "the deny list stays denied"


# ---------------------------------------------------------------- security levels


def test_a_policy_cannot_widen_across_security_levels(platform):
    low_from_high = policy(
        "iot-ingest",
        podSelector={"matchLabels": {LEVEL: "low"}},
        ingress=[{"from": [{"podSelector": {"matchLabels": {LEVEL: "high"}}}]}],
    )
    [line] = scope_violations(judged(platform, low_from_high))
    assert "pods {iotsec.io/security-level=high} of namespace iot-ingest on every port" in line
    low_from_low = copy.deepcopy(low_from_high)
    low_from_low["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"][LEVEL] = "low"
    assert judged(platform, low_from_low).violations == ()


@pytest.mark.parametrize(
    "pods",
    [
        {"matchLabels": {"app.kubernetes.io/name": "broker"}},  # some label the domain does not look at
        {},
        {"matchExpressions": [{"key": LEVEL, "operator": "In", "values": ["low", "high"]}]},
        {"matchExpressions": [{"key": LEVEL, "operator": "Exists"}]},
    ],
)
def test_pods_chosen_by_other_labels_get_no_traffic_between_levels(platform, pods):
    """Pods of any level may carry the app label: admitting it would join low and high."""
    same_selector = policy(
        "iot-ingest",
        podSelector=pods,
        ingress=[{"from": [{"podSelector": pods}]}],
        egress=[{"to": [{"podSelector": pods}]}],
    )
    assert len(scope_violations(judged(platform, same_selector))) == 2


def test_the_level_isolation_holds_inside_a_tenant_namespace_too(platform):
    """acme-meters is a tenant namespace of ingestion: even the same level is confined to the tenant's namespaces."""
    low = {"matchLabels": {LEVEL: "low"}}
    whole_domain = policy(
        "acme-meters",
        podSelector=low,
        ingress=[{"from": [{"namespaceSelector": {"matchLabels": {DOMAIN: "ingestion"}}, "podSelector": low}]}],
    )
    [line] = scope_violations(judged(platform, whole_domain))
    assert "namespaces {iotsec.io/domain=ingestion}" in line, "globex-telematics is in ingestion too"
    own_tenant = copy.deepcopy(whole_domain)
    own_tenant["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["iotsec.io/tenant"] = "acme"
    assert judged(platform, own_tenant).violations == ()


# ---------------------------------------------------------------- order, mode, exceptions, membership


MIXED_PEERS = [
    {"namespaceSelector": {"matchLabels": {DOMAIN: "device-gateway"}}},
    {"namespaceSelector": {"matchLabels": {DOMAIN: "operations"}}},
    {"ipBlock": {"cidr": "10.0.0.0/8"}},
    {"namespaceSelector": {"matchLabels": {DOMAIN: "partner-api"}}, "podSelector": {"matchLabels": {"a": "b"}}},
]
MIXED_PORTS = [{"port": 9092}, {"port": 8080}, {"protocol": "UDP", "port": 9090}, {"port": 9090}]


def _verdict(decision: Decision) -> tuple[bool, set[str]]:
    """The allowed flag and what is refused, without the positions that reordering moves."""
    return decision.allowed, {v.message.split(" allows ", 1)[1] for v in decision.violations}


def test_reordered_peers_and_ports_do_not_change_the_verdict(platform):
    verdicts = set()
    for peers, ports in itertools.product(itertools.permutations(MIXED_PEERS), itertools.permutations(MIXED_PORTS)):
        if len(verdicts) > 1:
            break
        obj = policy("iot-ingest", ingress=[{"from": list(peers), "ports": list(ports)}])
        allowed, refused = _verdict(judged(platform, obj))
        verdicts.add((allowed, frozenset(refused)))
    [(allowed, refused)] = verdicts
    assert not allowed
    assert len(refused) == 4, "each peer refused on the ports its domain rule leaves out, whatever the order"


def test_reordered_covered_peers_stay_admitted(platform):
    peers = [
        {"namespaceSelector": {"matchLabels": {DOMAIN: "device-gateway"}}},
        {"podSelector": {"matchLabels": {LEVEL: "low"}}},
    ]
    for order in itertools.permutations(peers):
        obj = policy(
            "iot-ingest",
            podSelector={"matchLabels": {LEVEL: "low"}},
            ingress=[{"from": list(order), "ports": [{"port": 9092}]}],
        )
        assert judged(platform, obj).violations == ()


def test_a_warn_domain_warns_and_admits(platform):
    decision = judged(platform, allow_all("monitoring"))  # operations: enforcement warn
    assert decision.allowed
    assert decision.mode == "warn"
    assert any("network-policy-scope" in w for w in decision.warnings)


def test_an_exception_by_rule_id_waives_the_named_policy_only(bridge):
    legacy = policy("bridge", name="legacy-uplink", egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}])
    decision = judged(bridge, legacy)
    assert decision.allowed
    assert decision.violations == ()
    assert [u.rule for u in decision.exceptions_used] == [RULE]
    other = copy.deepcopy(legacy)
    other["metadata"]["name"] = "another-uplink"
    assert not judged(bridge, other).allowed


def test_a_namespace_of_no_domain_is_treated_as_for_other_kinds(bridge):
    decision = judged(bridge, allow_all("loose"))
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "loose"}, "spec": {}}
    assert [v.rule for v in decision.violations] == ["domain-membership"]
    assert decision.violations == judged(bridge, service).violations
    assert decision.allowed is judged(bridge, service).allowed is False


def test_iotsecs_audit_namespace_takes_network_policies_from_the_operator_alone():
    """No domain has a say in the audit sinks' namespace; anyone else's policy there could open the sinks."""
    snapshot = Snapshot(platform=Platform())
    decision = decide(allow_all("iotsec-audit"), snapshot.context("iotsec-audit", NOW, TENANT_ADMIN))
    assert [(v.rule, v.path) for v in decision.violations] == [("network-policy-scope", "metadata.namespace")]
    operator = snapshot.platform.operator_user
    assert decide(allow_all("iotsec-audit"), snapshot.context("iotsec-audit", NOW, operator)).violations == ()


# ---------------------------------------------------------------- iotsec's own policies


def _example_sets() -> list[tuple[str, list[dict[str, Any]]]]:
    """Every example platform document set, and the same with every example workload file alongside."""
    workloads = [
        d for p in sorted((EXAMPLES / "workloads").rglob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d
    ]
    return [("platform", PLATFORM_DOCS), ("platform+workloads", [*PLATFORM_DOCS, *workloads]), ("bridge", BRIDGE)]


@pytest.mark.parametrize(("name", "docs"), _example_sets(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_planned_domain_policy_is_admitted_whoever_writes_it(name, docs):
    objects = rendered(docs)
    snapshot = snapshot_of(docs)
    planned = [o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].startswith("iotsec-")]
    audit = snapshot.platform.audit_namespace
    sinks = [o for o in planned if o["metadata"]["namespace"] == audit]
    domain_policies = [o for o in planned if not o["metadata"]["name"].startswith("iotsec-backup-") and o not in sinks]
    assert domain_policies, name
    for obj in domain_policies:
        for user in (OPERATOR, TENANT_ADMIN):
            assert judged(snapshot, obj, user).violations == (), (obj["metadata"], user)
    for obj in sinks:  # the audit sinks' own policies: the operator's alone
        assert judged(snapshot, obj, OPERATOR).violations == (), obj["metadata"]
        assert not judged(snapshot, obj, TENANT_ADMIN).allowed, obj["metadata"]


def test_a_backup_egress_is_admitted_for_the_operator_only(platform):
    """The BackupPolicy's Jobs reach their repositories by port (a policy cannot name a host): no domain rule
    says that, so only iotsec's operator, which plans it from the BackupPolicy, may write it."""
    [backup] = [o for o in rendered(PLATFORM_DOCS) if o["metadata"]["name"] == BACKUP_POLICY and o["kind"] == NETPOL]
    assert backup["metadata"]["namespace"] == "iot-processing"
    assert judged(platform, backup, OPERATOR).violations == ()
    assert not judged(platform, backup, TENANT_ADMIN).allowed
    assert not judged(platform, backup, "").allowed, "iotsec check knows no user: it judges like the webhook does"


def _review(obj: dict[str, Any], user: str) -> dict[str, Any]:
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u1",
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
            "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
            "operation": "CREATE",
            "namespace": obj["metadata"]["namespace"],
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": obj,
        },
    }
    return review(json.dumps(body).encode(), snapshot_of(PLATFORM_DOCS), lambda: NOW).body["response"]


def test_the_webhook_knows_the_operator_by_its_username():
    [backup] = [o for o in rendered(PLATFORM_DOCS) if o["metadata"]["name"] == BACKUP_POLICY and o["kind"] == NETPOL]
    assert _review(backup, OPERATOR)["allowed"] is True
    refused = _review(backup, TENANT_ADMIN)
    assert refused["allowed"] is False
    assert "network-policy-scope" in refused["status"]["message"]
    assert _review(allow_all("iot-ingest"), "system:serviceaccount:iot-ingest:default")["allowed"] is False


# ---------------------------------------------------------------- the pieces


def test_selector_implication_is_conservative():
    low = requirements({"matchLabels": {LEVEL: "low"}})
    assert implies(low, requirements({}))
    assert implies(low, requirements({"matchExpressions": [{"key": LEVEL, "operator": "In", "values": ["low", "x"]}]}))
    assert implies(low, requirements({"matchExpressions": [{"key": LEVEL, "operator": "Exists"}]}))
    assert implies(low, requirements({"matchExpressions": [{"key": LEVEL, "operator": "NotIn", "values": ["high"]}]}))
    assert not implies(requirements({}), low)
    assert not implies(low, requirements({"matchExpressions": [{"key": LEVEL, "operator": "DoesNotExist"}]}))
    absent = requirements({"matchExpressions": [{"key": LEVEL, "operator": "DoesNotExist"}]})
    assert implies(absent, requirements({"matchExpressions": [{"key": LEVEL, "operator": "NotIn", "values": ["a"]}]}))
    assert not implies(requirements({"matchExpressions": [{"key": LEVEL, "operator": "NotIn", "values": ["a"]}]}), low)


def test_port_sets():
    wanted = Ports.of([{"port": 8000, "endPort": 8010}, {"protocol": "UDP"}])
    left = uncovered_ports(wanted, [Ports.of([{"port": 8000, "endPort": 8004}]), Ports.of([{"port": 8006}])])
    assert str(left) == "TCP 8005,8007-8010, UDP 1-65535"
    assert not uncovered_ports(Ports.of([{"port": "http"}]), [Ports.of(None)])
    assert str(Ports.of([])) == "every port"


# ---------------------------------------------------------------- nca, the independent analyzer


JUDGED = ("iot-ingest", "acme-meters", "iot-gateway")  # keep their domain's policies; every other namespace is open
ADMITTED = [
    policy(
        "iot-ingest",
        name="narrow-low",
        podSelector={"matchLabels": {LEVEL: "low"}},
        ingress=[
            {
                "from": [{"namespaceSelector": {"matchLabels": {DOMAIN: "device-gateway"}}}],
                "ports": [{"port": 9092}],
            },
            {"from": [{"podSelector": {"matchLabels": {LEVEL: "low"}}}]},
        ],
        egress=[{"to": [{"namespaceSelector": {"matchLabels": {DOMAIN: "operations"}}}], "ports": [{"port": 8000}]}],
    ),
    policy(
        "acme-meters",
        name="own-tenant-high",
        podSelector={"matchLabels": {LEVEL: "high"}},
        ingress=[
            {
                "from": [
                    {
                        "namespaceSelector": {"matchLabels": {DOMAIN: "ingestion", "iotsec.io/tenant": "acme"}},
                        "podSelector": {"matchLabels": {LEVEL: "high"}},
                    }
                ]
            }
        ],
    ),
    policy("iot-gateway", name="deny-only", policyTypes=["Ingress", "Egress"]),
]
LOW_AND_HIGH = {"matchExpressions": [{"key": LEVEL, "operator": "In", "values": ["low", "high"]}]}
REFUSED = [
    allow_all("acme-meters"),
    policy(
        "iot-ingest",
        name="levels-meet",
        podSelector=LOW_AND_HIGH,
        ingress=[{"from": [{"podSelector": LOW_AND_HIGH}], "ports": [{"port": 8080}]}],
        egress=[{"to": [{"podSelector": LOW_AND_HIGH}], "ports": [{"port": 8080}]}],
    ),
    policy(
        "iot-gateway",
        name="more-ports",
        egress=[{"to": [{"namespaceSelector": {"matchLabels": {DOMAIN: "operations"}}}], "ports": [{"port": 8000}]}],
    ),
]


@pytest.fixture(scope="module")
def converged() -> tuple[list[dict[str, Any]], dict[str, dict[str, str]], Snapshot]:
    """The example platform's policies and namespace labels as the cluster ends up, and the webhook's view of it."""
    policies, ns_labels = converged_render()
    snapshot = snapshot_from_objects(
        [*PLATFORM_DOCS, *(namespace_manifest(n, labels) for n, labels in ns_labels.items())],
        assume_named_namespaces_exist=True,
    )
    return policies, ns_labels, snapshot


@pytest.fixture(scope="module")
def analysed(converged, tmp_path_factory):
    """nca's map with every namespace but JUDGED wide open: JUDGED's own side decides each connection there, so a
    policy that widens that side shows, and one that does not leaves the map as it was."""
    policies, ns_labels, snapshot = converged
    pods = declared_topology(ns_labels).pods(unlabelled=False)
    control = [*policies, *(allow_all(ns) for ns in sorted({p.namespace for p in pods.values()} - set(JUDGED)))]
    workdir: Path = tmp_path_factory.mktemp("nca-netpol")
    return control, ns_labels, snapshot, pods, run_nca(control, ns_labels, pods, workdir / "control"), workdir


def test_nca_sees_no_change_from_the_admitted_policies(analysed):
    control, ns_labels, snapshot, pods, base, workdir = analysed
    for obj in ADMITTED:
        assert judged(snapshot, obj).violations == (), obj["metadata"]["name"]
    assert run_nca([*control, *ADMITTED], ns_labels, pods, workdir / "admitted") == base


@pytest.mark.parametrize("obj", REFUSED, ids=lambda o: o["metadata"]["name"])
def test_nca_sees_what_a_refused_policy_would_open(analysed, obj):
    control, ns_labels, snapshot, pods, base, workdir = analysed
    assert not judged(snapshot, obj).allowed
    opened = run_nca([*control, obj], ns_labels, pods, workdir / obj["metadata"]["name"])
    widened = {pair for pair, conns in opened.items() if conns != base.get(pair)}
    namespace = obj["metadata"]["namespace"]
    assert widened, "the refused policy would have changed the connectivity"
    assert all(namespace in pair[0] + pair[1] for pair in widened), "and only around its own namespace"


# ---------------------------------------------------------------- soundness against tests/netpol.py, at random


EXTERNALS = [
    External(ip)
    for ip in (
        "10.20.1.1",
        "10.21.0.1",
        "192.168.1.1",
        "198.51.100.10",
        "203.0.113.5",
        "203.0.113.66",
        "203.0.113.200",
        "8.8.8.8",
        "2001:db8:1200::1",
    )
]
PROBES = [("TCP", 53), ("UDP", 53), ("TCP", 443), ("TCP", 8000), ("TCP", 8080), ("TCP", 8443)]
PROBES += [("TCP", 8883), ("TCP", 9090), ("TCP", 9092), ("UDP", 9092), ("TCP", 5432)]
POD_SELECTORS = [
    {},
    {"matchLabels": {LEVEL: "low"}},
    {"matchLabels": {LEVEL: "high"}},
    LOW_AND_HIGH,
    {"matchLabels": {"app.kubernetes.io/name": "app"}},
    {"matchExpressions": [{"key": LEVEL, "operator": "DoesNotExist"}]},
    {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
]
NAMESPACE_SELECTORS = [
    {},
    *({"matchLabels": {DOMAIN: d}} for d in ("ingestion", "device-gateway", "operations", "partner-api")),
    {"matchLabels": {DOMAIN: "ingestion", "iotsec.io/tenant": "acme"}},
    {"matchLabels": {"kubernetes.io/metadata.name": "iot-ingest"}},
    {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
]
BLOCKS = [
    {"cidr": "10.20.0.0/16"},
    {"cidr": "10.20.0.0/24"},
    {"cidr": "10.0.0.0/8"},
    {"cidr": "203.0.113.0/25", "except": ["203.0.113.66/32"]},
    {"cidr": "203.0.113.0/24"},
    {"cidr": "198.51.100.10/32"},
    {"cidr": "0.0.0.0/0"},
    PUBLIC_V4,
    {"cidr": "2001:db8:1200::/48"},
]
PORT_LISTS = [
    None,
    [{"port": 9092}],
    [{"port": 8080}, {"port": 9090}],
    [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    [{"port": 9000, "endPort": 9100}],
    [{"port": 8443}],
    [{"port": 8000}],
    [{"port": 443}],
    [{"protocol": "UDP", "port": 1, "endPort": 65535}],  # the evaluator needs a port: every UDP port
]


def _random_peer(rng: random.Random) -> dict[str, Any]:
    kind = rng.randrange(4)
    if kind == 0:
        return {"ipBlock": copy.deepcopy(rng.choice(BLOCKS))}
    if kind == 1:
        return {"podSelector": rng.choice(POD_SELECTORS)}
    if kind == 2:
        return {"namespaceSelector": rng.choice(NAMESPACE_SELECTORS)}
    return {"namespaceSelector": rng.choice(NAMESPACE_SELECTORS), "podSelector": rng.choice(POD_SELECTORS)}


def _random_policy(rng: random.Random, index: int) -> dict[str, Any]:
    rules: dict[str, list[dict[str, Any]]] = {"ingress": [], "egress": []}
    for key, peers_key in (("ingress", "from"), ("egress", "to")):
        for _ in range(rng.randrange(3)):
            rule: dict[str, Any] = {peers_key: [_random_peer(rng) for _ in range(rng.randint(1, 2))]}
            if (ports := rng.choice(PORT_LISTS)) is not None:
                rule["ports"] = copy.deepcopy(ports)
            rules[key].append(rule)
    namespace = rng.choice(["iot-ingest", "acme-meters", "iot-gateway", "partner-api", "admin-console", "backup"])
    return policy(
        namespace,
        name=f"random-{index}",
        podSelector=rng.choice(POD_SELECTORS),
        policyTypes=["Ingress", "Egress"],
        **{k: v for k, v in rules.items() if v},
    )


def _opened(domain_policies, extra, pods, others, ns_labels) -> set[tuple[str, str, str, str, int]]:
    """Every (direction, pod, other, protocol, port) the namespace's side allows with `extra` but not without."""
    found = set()
    for (name, pod), (other_name, other), (protocol, port), direction in itertools.product(
        pods.items(), others.items(), PROBES, ("Ingress", "Egress")
    ):
        before = direction_allows(domain_policies, pod, other, port, protocol, ns_labels, direction)
        if not before and direction_allows([*domain_policies, extra], pod, other, port, protocol, ns_labels, direction):
            found.add((direction, name, other_name, protocol, port))
    return found


def test_no_admitted_random_policy_opens_anything_the_evaluator_can_see(converged):
    """Soundness, asked of tests/netpol.py (Kubernetes semantics, written apart from the check): for random
    policies the check admits, no pod of the namespace may send or receive one more (peer, port) than before."""
    policies, ns_labels, snapshot = converged
    pods = declared_topology(ns_labels).pods(unlabelled=True)
    others: dict[str, Pod | External] = {**pods, **{e.ip: e for e in EXTERNALS}}
    rng = random.Random(16)
    admitted = refused = 0
    for index in range(400):
        obj = _random_policy(rng, index)
        namespace = obj["metadata"]["namespace"]
        if judged(snapshot, obj).violations:
            refused += 1
            continue
        admitted += 1
        own = [p for p in policies if p["metadata"]["namespace"] == namespace]
        mine = {n: p for n, p in pods.items() if p.namespace == namespace}
        assert _opened(own, obj, mine, others, ns_labels) == set(), obj
    assert admitted >= 20, f"too few admitted to mean anything: {admitted} of {admitted + refused}"


def test_iotsec_check_of_rendered_output_judges_the_operators_own_policies_as_the_webhook_does():
    """`iotsec render | iotsec check`: a BackupPolicy's egress (wider than its domain) is the operator's and is
    admitted exactly as planned; the same name with one more port, or written anew elsewhere, is judged as anyone's."""
    from iotsec.admission.snapshot import check
    from iotsec.model.manifests import load_documents

    context = list(load_documents([EXAMPLES / "platform"]))
    rendered = iotsec_render.render(context).objects
    backup = next(
        o
        for o in rendered
        if o["kind"] == "NetworkPolicy" and o["metadata"]["labels"].get("iotsec.io/owner-kind") == "BackupPolicy"
    )
    widened = copy.deepcopy(backup)
    widened["spec"]["egress"][0].setdefault("ports", []).append({"protocol": "TCP", "port": 8080})
    moved = copy.deepcopy(backup)
    moved["metadata"]["name"] = "copied-egress"

    def verdict(obj: dict[str, Any]) -> bool:
        report = check([*context, Document("rendered.yaml", 0, obj)], NOW)
        (checked,) = [c for c in report.checked if c.document.obj is obj]
        return checked.decision.allowed

    assert verdict(backup), "the operator's own planned policy is admitted"
    assert not verdict(widened), "one port more is no longer the operator's plan"
    assert not verdict(moved), "the plan's spec under another name is a user's policy"


# ---------------------------------------------------------------- found by the red-team review


@pytest.mark.parametrize(
    "cidr", ["::ffff:10.0.0.0/104", "::ffff:198.51.100.0/120", "64:ff9b::a00:0/104", "2002:a00::/24"]
)
def test_ipv6_ranges_that_embed_ipv4_addresses_do_not_reach_past_the_internet_rule(bridge, cidr):
    """A CNI may match ::ffff:10.0.0.0/104 as 10.0.0.0/8: the IPv6 internet the domain opens leaves them out."""
    egress = [{"to": [{"ipBlock": {"cidr": cidr}}], "ports": [{"port": 443}]}]
    assert not judged(bridge, policy("bridge", egress=egress)).allowed


def test_the_operators_identity_writes_only_a_backup_egress_unjudged(platform):
    """A stolen operator token gains no allow-all: only the BackupPolicy Job-egress shape skips the check."""
    assert not judged(platform, allow_all("acme-meters"), OPERATOR).allowed
    renamed = allow_all("acme-meters")
    renamed["metadata"]["name"] = "iotsec-backup-x"
    assert not judged(platform, renamed, OPERATOR).allowed
    selector = {"matchLabels": {"iotsec.io/owner-kind": "BackupPolicy", "iotsec.io/owner-name": "x"}}
    backup = policy(
        "acme-meters",
        "iotsec-backup-x",
        podSelector=selector,
        policyTypes=["Egress"],
        egress=[{"ports": [{"port": 443}]}],
    )
    assert judged(platform, backup, OPERATOR).allowed
    assert not judged(platform, backup, TENANT_ADMIN).allowed
    with_ingress = copy.deepcopy(backup)
    with_ingress["spec"].update(policyTypes=["Egress", "Ingress"], ingress=[{}])
    assert not judged(platform, with_ingress, OPERATOR).allowed


def test_rules_of_a_direction_the_policy_does_not_declare_are_ignored_as_kubernetes_does(bridge):
    ignored = policy("bridge", policyTypes=["Egress"], ingress=[{}])
    assert judged(bridge, ignored).violations == ()
    assert not judged(bridge, policy("bridge", ingress=[{}])).allowed, "no policyTypes: Ingress applies"


def test_a_policy_too_large_to_verify_in_time_is_refused_and_a_large_one_is_decided(bridge):
    ports = [{"port": p} for p in range(1000, 1000 + 2 * (MAX_ITEMS + 1), 2)]
    [violation] = judged(bridge, policy("bridge", egress=[{"to": [{"ipBlock": PUBLIC_V4}], "ports": ports}])).violations
    assert "too large to verify in time" in violation.message
    holes = [f"203.0.{i // 256}.{i % 256}/32" for i in range(0, 2 * MAX_ITEMS, 2)]
    block = {"ipBlock": {"cidr": "203.0.0.0/16", "except": holes}}
    wide = policy("bridge", egress=[{"to": [block] * 3, "ports": ports[:MAX_ITEMS]}])
    assert {v.rule for v in judged(bridge, wide).violations} == {RULE}, "beyond the internet rule's port 443"


def test_offline_iotsecs_own_labelled_policy_in_the_audit_namespace_passes_and_the_webhook_ignores_the_label():
    snapshot = Snapshot(platform=Platform())
    labelled = allow_all("iotsec-audit")
    labelled["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "iotsec"}
    assert decide(labelled, snapshot.context("iotsec-audit", NOW)).violations == (), "iotsec check: no identity"
    assert not decide(labelled, snapshot.context("iotsec-audit", NOW, TENANT_ADMIN)).allowed
    assert not decide(allow_all("iotsec-audit"), snapshot.context("iotsec-audit", NOW)).allowed


def test_no_planned_ipv6_block_excepts_an_ipv4_mapped_range_the_api_server_would_refuse():
    """Go reads ::ffff:0:0/96 as IPv4: as an except of ::/0 the API server refuses it (no strict subset), so the
    operator's internet policies must never carry it (a 422 at apply, found on the live cluster)."""
    from iotsec.admission.netpol import MAPPED

    blocks = [
        peer["ipBlock"]
        for obj in rendered([*PLATFORM_DOCS, *BRIDGE])
        if obj["kind"] == "NetworkPolicy"
        for rule in [*obj["spec"].get("ingress", ()), *obj["spec"].get("egress", ())]
        for peer in [*rule.get("from", ()), *rule.get("to", ())]
        if "ipBlock" in peer
    ]
    assert any(":" in b["cidr"] for b in blocks), "the examples open the IPv6 internet somewhere"
    for block in blocks:
        for hole in block.get("except", ()):
            network = ipaddress.ip_network(hole, strict=False)
            assert network.version == 4 or not network.subnet_of(MAPPED), block


def test_anyone_may_deny_in_the_audit_namespace():
    """The chart's own default deny there is applied by Helm as an administrator (helm upgrade was refused)."""
    snapshot = Snapshot(platform=Platform())
    deny = policy("iotsec-audit", "iotsec-default-deny", policyTypes=["Ingress", "Egress"])
    assert decide(deny, snapshot.context("iotsec-audit", NOW, TENANT_ADMIN)).violations == ()
    opens = policy("iotsec-audit", "iotsec-default-deny", policyTypes=["Egress"], egress=[{}])
    assert not decide(opens, snapshot.context("iotsec-audit", NOW, TENANT_ADMIN)).allowed
