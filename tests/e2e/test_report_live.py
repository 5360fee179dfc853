"""`iotsec report` against a real API server: a domain's NetworkPolicies as the operator writes them read as
9.4.1-2 met for its namespace; one deleted, the same control reads not met, naming the missing policy."""

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
from iotsec.conformance.model import Verdict
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
    for obj in planned:
        if obj["kind"] == "Namespace":
            core.patch_namespace(NAMESPACE, {"metadata": {"labels": obj["metadata"]["labels"]}})
        elif obj["kind"] == "NetworkPolicy":
            netpol.create_namespaced_network_policy(NAMESPACE, obj)
    yield planned
    for delete in (
        lambda: custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, DOMAIN),
        lambda: core.delete_namespace(NAMESPACE),
    ):
        try:
            delete()
        except ApiException as exc:
            if exc.status != 404:
                raise


def _segment(api_client) -> Any:
    inventory = gather(Kube(api_client), datetime.now(UTC), "testenv")
    result = next(r for r in assess(inventory).results if r.control.id == SEGMENT)
    return next(a for a in result.assessments if a.scope.kind == "namespace" and a.scope.name == NAMESPACE)


def test_deleting_a_network_policy_turns_the_namespace_not_met(api_client, applied):
    before = _segment(api_client)
    assert before.verdict is Verdict.MET, before.summary
    assert before.scope.domain == DOMAIN
    client.NetworkingV1Api(api_client).delete_namespaced_network_policy(f"iotsec-{DOMAIN}-default-deny", NAMESPACE)
    after = _segment(api_client)
    assert after.verdict is Verdict.NOT_MET
    assert f"NetworkPolicy {NAMESPACE}/iotsec-{DOMAIN}-default-deny (missing)" in after.summary
    named = [o for e in after.evidence for o in e.objects if o.name == f"iotsec-{DOMAIN}-default-deny"]
    assert named
    assert named[0].namespace == NAMESPACE
