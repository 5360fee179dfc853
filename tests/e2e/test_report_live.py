"""`iotsec report` against a real API server: a domain's NetworkPolicies as the operator writes them read as
9.4.1-2 met for its namespace; one deleted, the same control reads not met, naming the missing policy (where the
testenv runs the operator, it may write the policy again first: then met, and the read without it not met).
Monitoring kinds, the dashboard ConfigMap and a device registry as the live inventory reads them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from iotsec.build import render
from iotsec.conformance.assess import assess
from iotsec.conformance.model import Inventory, Verdict
from iotsec.k8s.kube import Kube
from iotsec.model.manifests import Document
from iotsec.services.inventory import gather

GROUP, VERSION, PLURAL = "iotsec.io", "v1alpha1", "securitydomains"
SUFFIX = uuid.uuid4().hex[:5]
DOMAIN, NAMESPACE = f"e2e-report-{SUFFIX}", f"e2e-report-{SUFFIX}"
SEGMENT = "X1369-9.4.1-2"


def _domain() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SecurityDomain",
        "metadata": {"name": DOMAIN},
        "spec": {"zone": "core", "namespaces": [NAMESPACE]},
    }


@pytest.fixture(scope="module")
def applied(api_client, core, custom, crds) -> Iterator[list[dict[str, Any]]]:
    """The domain, its namespace and what the operator would apply for it, applied with the admin client."""
    namespace = {"metadata": {"name": NAMESPACE, "labels": {"kubernetes.io/metadata.name": NAMESPACE}}}
    core.create_namespace(namespace)
    custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, _domain())
    ns_doc = {"apiVersion": "v1", "kind": "Namespace", **namespace}
    planned = render.render([Document("e2e", 0, _domain()), Document("e2e", 1, ns_doc)]).objects
    netpol = client.NetworkingV1Api(api_client)
    try:
        for obj in planned:
            if obj["kind"] == "Namespace":
                core.patch_namespace(NAMESPACE, {"metadata": {"labels": obj["metadata"]["labels"]}})
            elif obj["kind"] == "NetworkPolicy":
                _create_or_replace(netpol, obj)
        yield planned
    finally:
        _delete_domain(core, custom)


def _create_or_replace(netpol: client.NetworkingV1Api, obj: dict[str, Any]) -> None:
    """A running operator may have written the domain's policy first (it reconciles the same domain)."""
    try:
        netpol.create_namespaced_network_policy(NAMESPACE, obj)
    except ApiException as exc:
        if exc.status != 409:
            raise
        netpol.replace_namespaced_network_policy(obj["metadata"]["name"], NAMESPACE, obj)


def _delete_domain(core, custom) -> None:
    for delete in (
        lambda: custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, DOMAIN),
        lambda: core.delete_namespace(NAMESPACE),
    ):
        try:
            delete()
        except ApiException as exc:
            if exc.status != 404:
                raise


def _read(api_client) -> Inventory:
    return gather(Kube(api_client), datetime.now(UTC), "testenv")


def _segment(inventory: Inventory) -> Any:
    result = next(r for r in assess(inventory).results if r.control.id == SEGMENT)
    return next(a for a in result.assessments if a.scope.kind == "namespace" and a.scope.name == NAMESPACE)


def test_deleting_a_network_policy_turns_the_namespace_not_met(api_client, applied):
    before = _segment(_read(api_client))
    assert before.verdict is Verdict.MET, before.summary
    assert before.scope.domain == DOMAIN
    name = f"iotsec-{DOMAIN}-default-deny"
    client.NetworkingV1Api(api_client).delete_namespaced_network_policy(name, NAMESPACE)
    inventory = _read(api_client)
    healed = [o for o in inventory.objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == name]
    if healed:  # a running operator wrote it again before the read: met, and judged without it as read
        assert _segment(inventory).verdict is Verdict.MET
        kept = [o for o in inventory.objects if o is not healed[0]]
        inventory = Inventory("cluster", inventory.now, kept, source="testenv", unavailable=inventory.unavailable)
    after = _segment(inventory)
    assert after.verdict is Verdict.NOT_MET
    assert f"NetworkPolicy {NAMESPACE}/{name} (missing)" in after.summary
    named = [o for e in after.evidence for o in e.objects if o.name == name]
    assert named
    assert named[0].namespace == NAMESPACE


def _config_map(name: str, labels: dict[str, str], data: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NAMESPACE, "labels": labels}, "data": data}


def test_monitoring_kinds_dashboards_and_the_device_registry_read_live(api_client, core, applied):
    """The live inventory lists PrometheusRules and ServiceMonitors or says their CRD is missing; the dashboard
    ConfigMap is situation-awareness evidence; a device registry keeps its serials (and nothing else's values)."""
    ours = {"app.kubernetes.io/part-of": "iotsec", "app.kubernetes.io/managed-by": "iotsec"}
    dashboard = _config_map("iotsec-dashboard", {**ours, "grafana_dashboard": "1"}, {"iotsec.json": "{}"})
    registry = _config_map("iotsec-device-registry-e2e", ours, {"issued": '{"7": "dev-7"}', "revoked": "{}"})
    for body in (dashboard, registry):
        core.create_namespaced_config_map(NAMESPACE, body)
    inventory = _read(api_client)
    for kind in ("PrometheusRule", "ServiceMonitor"):
        listed = any(o["kind"] == kind for o in inventory.objects)
        why = inventory.unavailable.get(f"monitoring.coreos.com/{kind}")
        assert listed or why in ("CRD not installed", None), why
    maps = {o["metadata"]["name"]: o for o in inventory.objects if o["metadata"].get("namespace") == NAMESPACE}
    assert maps["iotsec-device-registry-e2e"]["data"] == {"issued": '{"7": "dev-7"}', "revoked": "{}"}
    assert "data" not in maps["iotsec-dashboard"]
    assert maps["iotsec-dashboard"]["dataKeys"] == ["iotsec.json"]
    results = {r.control.id: r for r in assess(inventory).results}
    aware = results["X1369-9.6.2-1"].assessments[0]
    assert f"dashboard ConfigMap {NAMESPACE}/iotsec-dashboard" in " ".join(e.text for e in aware.evidence)
    incident = results["X1369-9.6.1-1"]
    assert incident.verdict is not Verdict.MET  # evidenced: alerts at best, the response process unobservable
    if "monitoring.coreos.com/PrometheusRule" in inventory.unavailable:
        assert "not observable: PrometheusRule CRD not installed" in incident.assessments[0].summary
