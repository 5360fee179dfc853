"""The real operator (`iotsec run`) against a real API server: SecurityDomains become NetworkPolicies."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e.conftest import eventually
from tests.e2e.processes import RESYNC_SECONDS, Operator

GROUP, VERSION, PLURAL = "iotsec.io", "v1alpha1", "securitydomains"
SUFFIX = uuid.uuid4().hex[:5]


@pytest.fixture(scope="module")
def operator(crds, tmp_path_factory) -> Iterator[Operator]:
    running = Operator(tmp_path_factory.mktemp("operator") / "operator.log")
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def netpol(api_client) -> client.NetworkingV1Api:
    return client.NetworkingV1Api(api_client)


@pytest.fixture(scope="module")
def namespaces(core) -> Iterator[list[str]]:
    names = [f"e2e-{role}-{SUFFIX}" for role in ("a", "b", "c", "d")]
    for name in names:
        # 1.20 does not set kubernetes.io/metadata.name by itself (1.21+ does)
        core.create_namespace({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})
    yield names
    for name in names:
        core.delete_namespace(name)


def _domain(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SecurityDomain", "metadata": {"name": name}, "spec": spec}


def _get(custom: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    return custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def _ready(custom: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    conditions = (_get(custom, name).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def _policies(netpol: client.NetworkingV1Api, namespace: str, domain: str) -> dict[str, Any]:
    items = netpol.list_namespaced_network_policy(namespace, label_selector=f"iotsec.io/owner-name={domain}").items
    return {p.metadata.name: p for p in items}


def _delete_domain(custom: client.CustomObjectsApi, name: str) -> None:
    try:
        custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture(scope="module")
def core_domain(operator, custom, namespaces) -> Iterator[str]:
    """A core domain on namespace a that admits a peer domain (edge) that does not exist yet."""
    name = f"core-{SUFFIX}"
    spec = {
        "zone": "core",
        "namespaces": [namespaces[0]],
        "allow": [{"name": "from-edge", "from": [{"domain": f"edge-{SUFFIX}"}], "ports": [{"port": 9092}]}],
    }
    custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, _domain(name, spec))
    yield name
    _delete_domain(custom, name)
    _delete_domain(custom, f"edge-{SUFFIX}")


def test_missing_peer_is_reported_and_converges_when_the_peer_appears(operator, custom, core_domain, namespaces):
    ready = eventually(
        lambda: _ready(custom, core_domain).get("reason") == "PeerDomainMissing" and _ready(custom, core_domain),
        what="Ready=False PeerDomainMissing",
    )
    assert ready["status"] == "False"
    assert f"edge-{SUFFIX}" in ready["message"]
    edge = _domain(
        f"edge-{SUFFIX}",
        {
            "zone": "access",
            "namespaces": [namespaces[2]],
            "egress": [{"name": "to-core", "to": [{"domain": core_domain}], "ports": [{"port": 9092}]}],
        },
    )
    custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, edge)
    ready = eventually(
        lambda: _ready(custom, core_domain).get("status") == "True" and _ready(custom, core_domain),
        timeout=RESYNC_SECONDS * 10,
        what="Ready=True once the peer exists",
    )
    assert ready["reason"] == "Reconciled"
    status = _get(custom, core_domain)["status"]
    assert status["observedGeneration"] == _get(custom, core_domain)["metadata"]["generation"]
    assert {"from": f"edge-{SUFFIX}", "to": core_domain, "ports": ["9092/TCP"]} in status["reachability"]


def test_policies_are_server_side_applied_by_iotsec_with_owner_references(
    custom, netpol, core, core_domain, namespaces
):
    ns = namespaces[0]
    expected = {
        f"iotsec-{core_domain}-{suffix}"
        for suffix in (
            "default-deny",
            "dns",
            "in-from-edge",
            "intra-low",
            "intra-standard",
            "intra-high",
            "intra-unlabelled",
        )
    }
    policies = eventually(
        lambda: expected <= _policies(netpol, ns, core_domain).keys() and _policies(netpol, ns, core_domain),
        what="policies applied",
    )
    uid = _get(custom, core_domain)["metadata"]["uid"]
    for policy in policies.values():
        managers = {(m.manager, m.operation) for m in policy.metadata.managed_fields}
        assert ("iotsec", "Apply") in managers
        assert [(o.kind, o.name, o.uid, o.controller) for o in policy.metadata.owner_references] == [
            ("SecurityDomain", core_domain, uid, True)
        ]
    deny = policies[f"iotsec-{core_domain}-default-deny"]
    assert deny.spec.policy_types == ["Ingress", "Egress"]
    assert deny.spec.ingress is None
    assert deny.spec.egress is None
    labels = core.read_namespace(ns).metadata.labels
    assert labels["iotsec.io/domain"] == core_domain
    assert labels["iotsec.io/zone"] == "core"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    status = _get(custom, core_domain)["status"]
    assert status["memberNamespaces"] == [ns]
    assert status["policyCount"] == len(policies)


def test_changed_spec_prunes_the_stale_policy_and_adds_the_new_member(custom, netpol, core, core_domain, namespaces):
    eventually(
        lambda: f"iotsec-{core_domain}-in-from-edge" in _policies(netpol, namespaces[0], core_domain),
        what="rule policy present",
    )
    body = _get(custom, core_domain)
    body["spec"]["allow"][0]["name"] = "from-edge-v2"
    body["spec"]["namespaces"] = [namespaces[0], namespaces[1]]
    custom.replace_cluster_custom_object(GROUP, VERSION, PLURAL, core_domain, body)
    eventually(
        lambda: (
            set(_policies(netpol, namespaces[0], core_domain)) >= {f"iotsec-{core_domain}-in-from-edge-v2"}
            and f"iotsec-{core_domain}-in-from-edge" not in _policies(netpol, namespaces[0], core_domain)
        ),
        what="stale rule policy pruned and its successor applied",
    )
    eventually(
        lambda: f"iotsec-{core_domain}-default-deny" in _policies(netpol, namespaces[1], core_domain),
        what="new member isolated",
    )
    assert core.read_namespace(namespaces[1]).metadata.labels["iotsec.io/domain"] == core_domain


def test_pod_security_labels_follow_the_enforcement_mode_live(custom, core, core_domain, namespaces):
    """A warn domain drops the enforce label (the API server's Pod Security admission would deny what iotsec only
    warns about) and keeps warn and audit; back to enforce, the label returns (issue 15)."""

    def psa_modes() -> set[str]:
        labels = core.read_namespace(namespaces[0]).metadata.labels or {}
        return {k.split("/")[1] for k in labels if k.startswith("pod-security.kubernetes.io/") and "-version" not in k}

    def set_enforcement(mode: str) -> None:
        body = _get(custom, core_domain)
        body["spec"]["enforcement"] = mode
        custom.replace_cluster_custom_object(GROUP, VERSION, PLURAL, core_domain, body)

    eventually(lambda: psa_modes() == {"enforce", "warn", "audit"}, what="enforcing labels")
    set_enforcement("warn")
    eventually(lambda: psa_modes() == {"warn", "audit"}, what="the enforce label removed for a warn domain")
    set_enforcement("enforce")
    eventually(lambda: psa_modes() == {"enforce", "warn", "audit"}, what="the enforce label back")


def test_deleted_policy_is_restored(netpol, core_domain, namespaces):
    name = f"iotsec-{core_domain}-default-deny"
    eventually(lambda: name in _policies(netpol, namespaces[0], core_domain), what="policy present")
    netpol.delete_namespaced_network_policy(name, namespaces[0])
    eventually(
        lambda: name in _policies(netpol, namespaces[0], core_domain),
        timeout=RESYNC_SECONDS * 10,
        what="deleted policy restored",
    )


def test_hand_edited_policy_is_reverted(netpol, core_domain, namespaces):
    name = f"iotsec-{core_domain}-dns"
    eventually(lambda: name in _policies(netpol, namespaces[0], core_domain), what="policy present")
    netpol.patch_namespaced_network_policy(name, namespaces[0], {"spec": {"egress": [{}]}})  # allow everything
    eventually(
        lambda: netpol.read_namespaced_network_policy(name, namespaces[0]).spec.egress[0].to,
        timeout=RESYNC_SECONDS * 10,
        what="hand edit reverted at the next resync",
    )


def _versions(netpol, core, custom, domain: str, namespaces: list[str]) -> dict[str, str]:
    versions = {f"domain/{domain}": _get(custom, domain)["metadata"]["resourceVersion"]}
    for ns in namespaces:
        versions[f"ns/{ns}"] = core.read_namespace(ns).metadata.resource_version
        for name, policy in _policies(netpol, ns, domain).items():
            versions[f"{ns}/{name}"] = policy.metadata.resource_version
    return versions


def test_restart_changes_nothing(operator, netpol, core, custom, core_domain, namespaces):
    members = namespaces[:2]
    eventually(lambda: _ready(custom, core_domain).get("status") == "True", what="domain ready")
    time.sleep(RESYNC_SECONDS * 2)  # let any in-flight reconciliation finish
    before = _versions(netpol, core, custom, core_domain, members)
    operator.stop()
    operator.start()
    time.sleep(RESYNC_SECONDS * 3)  # resume handlers plus at least two resync rounds
    assert _versions(netpol, core, custom, core_domain, members) == before


def test_conflicting_domain_reports_conflict_and_applies_nothing_there(custom, netpol, core_domain, namespaces):
    rival = f"rival-{SUFFIX}"
    custom.create_cluster_custom_object(
        GROUP, VERSION, PLURAL, _domain(rival, {"zone": "support", "namespaces": [namespaces[0]]})
    )
    try:
        rival_ready = eventually(
            lambda: _ready(custom, rival).get("reason") == "Conflict" and _ready(custom, rival),
            what="rival Ready=False Conflict",
        )
        assert namespaces[0] in rival_ready["message"]

        def conflict_on_both() -> bool:
            for name in (core_domain, rival):
                conditions = _get(custom, name)["status"]["conditions"]
                assert any(c["type"] == "Conflict" and c["status"] == "True" for c in conditions), name
            return True

        eventually(conflict_on_both, what="Conflict=True on both domains")
        assert _policies(netpol, namespaces[0], rival) == {}
        assert _ready(custom, core_domain)["status"] == "True", "the holder keeps enforcing"
    finally:
        _delete_domain(custom, rival)


def test_invalid_spec_gets_a_condition_and_an_event_and_changes_nothing(custom, core, netpol, namespaces):
    name = f"invalid-{SUFFIX}"
    # internet exposure of a core zone: a CEL rule 1.20 does not enforce, so the operator must
    custom.create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        _domain(
            name,
            {
                "zone": "core",
                "namespaces": [namespaces[2]],
                "internet": {"ingress": True},
                "allowedPorts": [{"port": 1}],
            },
        ),
    )
    try:
        ready = eventually(
            lambda: _ready(custom, name).get("reason") == "InvalidSpec" and _ready(custom, name),
            what="Ready=False InvalidSpec",
        )
        assert "only permitted for access and interface zones (X1369-9.4.1-4)" in ready["message"]
        events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}").items
        events += core.list_event_for_all_namespaces(field_selector=f"involvedObject.name={name}").items
        assert any(e.type == "Warning" and e.reason == "InvalidSpec" for e in events)
        assert _policies(netpol, namespaces[2], name) == {}
    finally:
        _delete_domain(custom, name)


def test_metrics_count_reconciliations(operator, core_domain):
    text = eventually(
        lambda: (
            'iotsec_reconcile_total{kind="SecurityDomain",result="success"}' in operator.metrics()
            and operator.metrics()
        ),
        what="reconcile metric",
    )
    assert "iotsec_reconcile_duration_seconds_bucket" in text
    assert f'iotsec_managed_objects{{kind="NetworkPolicy",owner="{core_domain}",owner_kind="SecurityDomain"}}' in text


def test_deleting_the_domain_removes_its_policies_and_labels_but_not_the_namespaces(custom, netpol, core, namespaces):
    name = f"temp-{SUFFIX}"
    custom.create_cluster_custom_object(
        GROUP, VERSION, PLURAL, _domain(name, {"zone": "support", "namespaces": [namespaces[3]]})
    )
    eventually(lambda: _policies(netpol, namespaces[3], name), what="policies applied")
    _delete_domain(custom, name)
    eventually(lambda: not _policies(netpol, namespaces[3], name), what="policies removed")
    labels = core.read_namespace(namespaces[3]).metadata.labels or {}
    assert "iotsec.io/domain" not in labels
    assert not any(k.startswith("pod-security.kubernetes.io/") for k in labels)


def test_changes_are_announced_as_normal_events(core, core_domain):
    def reconciled() -> bool:
        events = core.list_event_for_all_namespaces(field_selector=f"involvedObject.name={core_domain}").items
        return any(e.type == "Normal" and e.reason == "Reconciled" for e in events)

    eventually(reconciled, what="a Normal Reconciled event")
