"""The SecurityDomain builder: who may reach whom, judged by evaluating the generated NetworkPolicies."""

from __future__ import annotations

import copy
import random
from typing import Any

import kubernetes_validate
import pytest
import yaml

from iotsec.api.securitydomain import SecurityDomainSpec
from iotsec.build.securitydomain import (
    Domain,
    Edge,
    NamespaceInfo,
    NetworkSettings,
    namespace_labels,
    plan_domain,
    reachability,
)
from iotsec.model.labels import DOMAIN_LABEL
from tests.conftest import load_examples
from tests.netpol import External, Pod, can_connect

EXAMPLE_DOMAINS = [
    Domain(d["metadata"]["name"], SecurityDomainSpec.model_validate(d["spec"]), f"2026-01-01T00:00:0{i}Z")
    for i, d in enumerate(doc for doc in load_examples() if doc["kind"] == "SecurityDomain")
]
DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
BASE_NAMESPACES = {
    "kube-system": {"kubernetes.io/metadata.name": "kube-system"},
    "iot-gateway": {},
    "iot-ingest": {},
    "iot-processing": {},
    "admin-console": {},
    "partner-api": {},
    "backup": {},
    "monitoring": {},
    "scratch": {},
    "acme-meters": {"iotsec.io/security-domain": "ingestion"},
}


def build(domains: list[Domain], namespaces: dict[str, dict[str, str]] | None = None):
    """Plans of every domain, all their policies, and namespace labels as they are after reconciling."""
    namespaces = copy.deepcopy(namespaces or BASE_NAMESPACES)
    infos = [NamespaceInfo(name, labels) for name, labels in namespaces.items()]
    plans = {d.name: plan_domain(d, domains, infos) for d in domains}
    for plan in plans.values():
        for ns, labels in plan.namespace_labels.items():
            namespaces[ns].update(labels)
    policies = [p for plan in plans.values() for p in plan.policies]
    return plans, policies, namespaces


def domain(name: str, created: str = "2026-01-01T00:00:00Z", **spec: Any) -> Domain:
    return Domain(name, SecurityDomainSpec.model_validate(spec), created)


@pytest.fixture(scope="module")
def platform():
    return build(EXAMPLE_DOMAINS)


def test_every_member_is_default_deny_both_ways(platform):
    plans, policies, ns = platform
    for plan in plans.values():
        for member in plan.members:
            deny = next(
                p
                for p in policies
                if p["metadata"]["name"] == f"iotsec-{plan.domain}-default-deny"
                and p["metadata"]["namespace"] == member
            )
            assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    # an unlisted port between two members of different domains is closed both ways
    assert not can_connect(policies, ns, Pod("iot-gateway"), Pod("iot-ingest"), 5432)
    assert not can_connect(policies, ns, Pod("iot-ingest"), Pod("iot-gateway"), 8883)


def test_members_resolve_by_name_and_selector(platform):
    plans, _, _ = platform
    assert plans["ingestion"].members == ["acme-meters", "iot-ingest", "iot-processing"]
    assert plans["operations"].members == ["backup", "monitoring"]


def test_namespace_labels_carry_domain_zone_and_pod_security(platform):
    plans, _, _ = platform
    labels = plans["partner-api"].namespace_labels["partner-api"]
    assert labels[DOMAIN_LABEL] == "partner-api"
    assert labels["iotsec.io/zone"] == "interface"
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert labels[f"pod-security.kubernetes.io/{mode}-version"] == "latest"


@pytest.mark.parametrize(
    ("enforcement", "modes"),
    [("enforce", {"enforce", "warn", "audit"}), ("warn", {"warn", "audit"}), ("audit", {"audit"})],
)
def test_pod_security_labels_follow_the_enforcement_mode(enforcement, modes):
    """A warn or audit domain must not have the API server's Pod Security admission deny what iotsec only warns
    about (issue 15): the enforce label is set only when the domain enforces."""
    labels = namespace_labels(domain("d", zone="core", namespaces=["a"], enforcement=enforcement))
    found = {k.split("/")[1] for k in labels if k.startswith("pod-security.kubernetes.io/") and "-version" not in k}
    assert found == modes
    assert all(labels[f"pod-security.kubernetes.io/{m}-version"] == "latest" for m in modes)


def test_dns_only_to_kube_dns(platform):
    _, policies, ns = platform
    pod = Pod("iot-ingest", {"iotsec.io/security-level": "standard"})
    assert can_connect(policies, ns, pod, DNS, 53, "UDP")
    assert can_connect(policies, ns, pod, DNS, 53, "TCP")
    assert not can_connect(policies, ns, pod, Pod("kube-system", {"k8s-app": "metrics"}), 53, "UDP")
    assert not can_connect(policies, ns, pod, External("8.8.8.8"), 53, "UDP")


def test_explicit_rules_open_exactly_their_ports_between_domains(platform):
    _, policies, ns = platform
    gateway, ingest = Pod("iot-gateway"), Pod("iot-ingest")
    assert can_connect(policies, ns, gateway, ingest, 9092)
    assert not can_connect(policies, ns, gateway, ingest, 9093)
    assert not can_connect(policies, ns, gateway, ingest, 9092, "UDP")
    assert not can_connect(policies, ns, ingest, gateway, 9092), "the rule is one-way"


def test_peer_pod_selector_narrows_the_peer(platform):
    _, policies, ns = platform
    prometheus = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
    other = Pod("monitoring", {"app.kubernetes.io/name": "grafana"})
    assert can_connect(policies, ns, prometheus, Pod("iot-gateway"), 9090)
    assert not can_connect(policies, ns, other, Pod("iot-gateway"), 9090)


def test_cidr_peers_with_except_and_deny_list(platform):
    _, policies, ns = platform
    api = Pod("partner-api")
    assert can_connect(policies, ns, External("203.0.113.10"), api, 8443)
    assert not can_connect(policies, ns, External("203.0.113.66"), api, 8443), "denyCIDRs"
    assert not can_connect(policies, ns, External("203.0.113.200"), api, 8443), "except"
    assert can_connect(policies, ns, External("2001:db8:1234::1"), api, 8443)
    assert not can_connect(policies, ns, External("198.51.100.1"), api, 8443)
    assert not can_connect(policies, ns, External("10.20.1.1"), api, 8443), "the VPN range is the console's"
    assert can_connect(policies, ns, External("10.20.1.1"), Pod("admin-console"), 8443)


def test_internet_exposure_is_public_addresses_only(platform):
    _, policies, ns = platform
    gateway = Pod("iot-gateway")
    assert can_connect(policies, ns, External("198.51.100.7"), gateway, 8883)
    assert can_connect(policies, ns, External("2a00:1450::1"), gateway, 8883)
    for private in ("10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "fd00::1"):
        assert not can_connect(policies, ns, External(private), gateway, 8883), private
    assert not can_connect(policies, ns, External("198.51.100.7"), gateway, 9090), "only internet.ports"
    assert not can_connect(policies, ns, External("198.51.100.7"), Pod("iot-ingest"), 9092), "core is not exposed"


@pytest.mark.parametrize("mode", ["namespace", "domain", "none"])
def test_intra_domain_traffic_modes(mode):
    domains = [
        domain("core", zone="core", namespaces=["a", "b"], intraDomainTraffic=mode, securityLevelIsolation=False),
        domain("other", zone="core", namespaces=["c"], intraDomainTraffic="domain", securityLevelIsolation=False),
    ]
    _, policies, ns = build(domains, {"a": {}, "b": {}, "c": {}, "plain": {}})
    same_ns = can_connect(policies, ns, Pod("a"), Pod("a"), 8080)
    cross_ns = can_connect(policies, ns, Pod("a"), Pod("b"), 8080)
    assert (same_ns, cross_ns) == {"namespace": (True, False), "domain": (True, True), "none": (False, False)}[mode]
    for outsider in (Pod("c"), Pod("plain")):
        assert not can_connect(policies, ns, outsider, Pod("a"), 8080), "another domain's pods never get in"
        assert not can_connect(policies, ns, Pod("a"), outsider, 8080), "and members never get out to them"


@pytest.mark.parametrize("mode", ["namespace", "domain"])
def test_security_levels_are_isolated_inside_a_namespace(mode):
    domains = [
        domain("core", zone="core", namespaces=["a", "b"], intraDomainTraffic=mode, securityLevels=["standard", "high"])
    ]
    _, policies, ns = build(domains, {"a": {}, "b": {}})

    def level(namespace: str, value: str | None) -> Pod:
        return Pod(namespace, {"iotsec.io/security-level": value} if value else {})

    assert can_connect(policies, ns, level("a", "high"), level("a", "high"), 80)
    assert not can_connect(policies, ns, level("a", "high"), level("a", "standard"), 80)
    assert not can_connect(policies, ns, level("a", "standard"), level("a", "high"), 80)
    assert not can_connect(policies, ns, level("a", None), level("a", "high"), 80)
    assert can_connect(policies, ns, level("a", None), level("a", None), 80)
    assert not can_connect(policies, ns, level("a", "secret"), level("a", "secret"), 80), "undeclared level"
    assert can_connect(policies, ns, level("a", "high"), level("b", "high"), 80) == (mode == "domain")


def test_deny_list_covering_every_peer_drops_the_rule_instead_of_opening_it():
    domains = [
        domain(
            "api",
            zone="interface",
            namespaces=["a"],
            denyCIDRs=["203.0.113.0/24"],
            allow=[{"name": "partners", "from": [{"cidr": "203.0.113.0/25"}], "ports": [{"port": 443}]}],
        )
    ]
    plans, policies, ns = build(domains, {"a": {}})
    assert not any(p["metadata"]["name"].endswith("in-partners") for p in policies)
    assert plans["api"].dropped_rules == ["allow/partners: every peer lies inside denyCIDRs"]
    assert not can_connect(policies, ns, External("203.0.113.5"), Pod("a"), 443)


def test_port_ranges():
    domains = [
        domain(
            "a",
            zone="core",
            namespaces=["a"],
            egress=[{"name": "b", "to": [{"domain": "b"}], "ports": [{"port": 8000, "endPort": 8010}]}],
        ),
        domain(
            "b",
            zone="core",
            namespaces=["b"],
            allow=[{"name": "a", "from": [{"domain": "a"}], "ports": [{"port": 8005, "endPort": 8020}]}],
        ),
    ]
    plans, policies, ns = build(domains, {"a": {}, "b": {}})
    assert can_connect(policies, ns, Pod("a"), Pod("b"), 8007)
    assert not can_connect(policies, ns, Pod("a"), Pod("b"), 8002)
    assert not can_connect(policies, ns, Pod("a"), Pod("b"), 8015)
    assert Edge("a", "b", ("8005-8010/TCP",)) in plans["a"].reachability
    assert plans["b"].half_open == ["b allow/a: a has no egress to b on all of 8005-8020/TCP"]
    assert plans["a"].half_open == ["a egress/b: b does not allow ingress from a on all of 8000-8010/TCP"]


def test_conflicting_claims_keep_the_namespace_with_one_domain_and_both_report_it():
    older = domain("older", "2026-01-01T00:00:00Z", zone="core", namespaces=["shared", "x"])
    newer = domain("newer", "2026-02-01T00:00:00Z", zone="support", namespaces=["shared", "y"])
    plans, policies, _ = build([newer, older], {"shared": {}, "x": {}, "y": {}})
    assert plans["older"].members == ["shared", "x"]
    assert plans["newer"].members == ["y"]
    assert plans["older"].conflicts == ["namespace shared is also claimed by newer; this domain keeps it"]
    assert plans["newer"].conflicts == ["namespace shared is also claimed by older; older keeps it"]
    owners = {p["metadata"]["labels"][DOMAIN_LABEL] for p in policies if p["metadata"]["namespace"] == "shared"}
    assert owners == {"older"}, "nothing is applied to the namespace twice"


def test_the_current_holder_keeps_a_contested_namespace():
    older = domain("older", "2026-01-01T00:00:00Z", zone="core", namespaces=["shared"])
    newer = domain("newer", "2026-02-01T00:00:00Z", zone="support", namespaces=["shared"])
    plans, _, _ = build([older, newer], {"shared": {DOMAIN_LABEL: "newer"}})
    assert plans["newer"].members == ["shared"]
    assert plans["older"].members == []


def test_reserved_and_missing_namespaces_and_missing_peers_are_reported():
    d = domain(
        "core",
        zone="core",
        namespaces=["kube-system", "ghost", "a"],
        allow=[{"name": "x", "from": [{"domain": "nowhere"}], "ports": [{"port": 1}]}],
    )
    plans, policies, _ = build([d], {"kube-system": {}, "a": {}})
    plan = plans["core"]
    assert plan.members == ["a"]
    assert plan.reserved_namespaces == ["kube-system"]
    assert plan.missing_namespaces == ["ghost"]
    assert plan.missing_peers == ["nowhere"]
    assert all(p["metadata"]["namespace"] == "a" for p in policies)


def test_reachability_of_the_example_platform():
    edges, half_open = reachability(EXAMPLE_DOMAINS)
    assert Edge("device-gateway", "ingestion", ("9092/TCP",)) in edges
    assert Edge("internet", "device-gateway", ("8883/TCP",)) in edges
    assert Edge("cidr:10.20.0.0/16", "admin-console", ("8443/TCP",)) in edges
    assert Edge("operations", "cidr:198.51.100.10/32", ("443/TCP",)) in edges
    assert Edge("ingestion", "ingestion") in edges
    assert not any(e.source == "ingestion" and e.target == "device-gateway" for e in edges)
    assert half_open == []


def test_every_reachability_edge_fits_the_status_schema_the_crd_publishes():
    """An egress edge to a CIDR (`cidr:198.51.100.10/32`) was refused by the status schema (a DNS name) with 422,
    so the status of such a domain was never written (issue 15)."""
    import jsonschema

    from iotsec.api.crd import all_crds

    crd = next(c for c in all_crds() if c["spec"]["names"]["kind"] == "SecurityDomain")
    status_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    edges, _ = reachability(EXAMPLE_DOMAINS)
    assert any(e.target.startswith("cidr:") for e in edges)
    jsonschema.validate({"reachability": [e.manifest() for e in edges]}, status_schema)


def test_policies_name_their_controls_and_owner(platform):
    _, policies, _ = platform
    for policy in policies:
        meta = policy["metadata"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "iotsec"
        assert meta["labels"]["iotsec.io/owner-kind"] == "SecurityDomain"
        assert meta["name"].startswith(f"iotsec-{meta['labels']['iotsec.io/owner-name']}-")
        assert meta["annotations"]["iotsec.io/controls"].startswith("X1369-")
    names = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in policies]
    assert len(names) == len(set(names))


def test_rendering_is_deterministic_whatever_the_input_order(platform):
    _, policies, _ = platform
    shuffled = EXAMPLE_DOMAINS[:]
    random.Random(7).shuffle(shuffled)
    _, again, _ = build(shuffled)
    key = lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])  # noqa: E731
    assert yaml.safe_dump(sorted(policies, key=key)) == yaml.safe_dump(sorted(again, key=key))


def test_every_policy_is_valid_kubernetes(platform):
    _, policies, _ = platform
    version = kubernetes_validate.latest_version()
    for policy in policies:
        kubernetes_validate.validate(policy, version, strict=True)


def test_custom_dns_settings():
    d = domain("core", zone="core", namespaces=["a"])
    settings = NetworkSettings(
        dns_namespace="openshift-dns", dns_pod_labels={"dns.operator.openshift.io/daemonset-dns": "default"}
    )
    plan = plan_domain(d, [d], [NamespaceInfo("a")], settings)
    dns = next(p for p in plan.policies if p["metadata"]["name"] == "iotsec-core-dns")
    peer = dns["spec"]["egress"][0]["to"][0]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "openshift-dns"}


@pytest.mark.parametrize("isolation", [True, False])
def test_tenants_of_one_domain_cannot_reach_each_other_but_both_reach_the_platform(isolation):
    core = domain(
        "core",
        zone="core",
        namespaceSelector={"matchLabels": {"zone": "core"}},
        intraDomainTraffic="domain",
        securityLevelIsolation=isolation,
        allow=[{"name": "from-edge", "from": [{"domain": "edge"}], "ports": [{"port": 9092}]}],
    )
    edge = domain(
        "edge",
        zone="access",
        namespaces=["edge-platform", "edge-acme", "edge-globex"],
        egress=[{"name": "to-core", "to": [{"domain": "core"}], "ports": [{"port": 9092}]}],
    )
    namespaces = {
        "platform": {"zone": "core"},
        "acme-a": {"zone": "core", "iotsec.io/tenant": "acme"},
        "acme-b": {"zone": "core", "iotsec.io/tenant": "acme"},
        "globex": {"zone": "core", "iotsec.io/tenant": "globex"},
        "edge-platform": {},
        "edge-acme": {"iotsec.io/tenant": "acme"},
        "edge-globex": {"iotsec.io/tenant": "globex"},
    }
    _, policies, ns = build([core, edge], namespaces)
    level = {"iotsec.io/security-level": "standard"} if isolation else {}

    def pod(namespace: str) -> Pod:
        return Pod(namespace, dict(level))

    assert can_connect(policies, ns, pod("acme-a"), pod("acme-b"), 80), "a tenant's namespaces talk to each other"
    assert not can_connect(policies, ns, pod("acme-a"), pod("globex"), 80), "never to another tenant"
    assert not can_connect(policies, ns, pod("globex"), pod("acme-a"), 80)
    assert can_connect(policies, ns, pod("acme-a"), pod("platform"), 80), "tenants reach the platform"
    assert can_connect(policies, ns, pod("platform"), pod("globex"), 80), "and the platform reaches them"
    # explicit rules from another domain respect tenants too
    assert can_connect(policies, ns, Pod("edge-acme"), pod("acme-a"), 9092)
    assert can_connect(policies, ns, Pod("edge-platform"), pod("globex"), 9092)
    assert not can_connect(policies, ns, Pod("edge-globex"), pod("acme-a"), 9092)
