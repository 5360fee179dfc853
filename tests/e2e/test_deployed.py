"""iotsec as deployed (issue 14): the real chart, installed by `make testenv-install` with the image `make image`
built, on a node that runs pods. The operator and webhook run in their pods under the restricted security context,
and the API server calls the webhook through its Service.

These tests need that install; without it they skip and say so, unless IOTSEC_DEPLOYED_REQUIRED=1 (CI after
`make testenv-install`), which turns a missing install into a failure.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from iotsec.model.labels import DOMAIN_LABEL, ZONE_LABEL
from tests.e2e.conftest import eventually
from tests.e2e.deployed import DEPLOYMENTS, NAMESPACE, RELEASE, domain_namespace, require_install

RUNNABLE_IMAGE = "localhost/testenv/busybox:1.35"  # made by the testenv's images.sh on the node


@pytest.fixture(scope="module")
def apps(api_client) -> client.AppsV1Api:
    return require_install(api_client)


@pytest.fixture
def namespace(core, custom, apps) -> Iterator[str]:
    # imagePinning any: the node's runnable image is busybox:1.35, a release line that imagePinning: version (the
    # core zone's default) refuses
    with domain_namespace(core, custom, imagePinning="any") as name:
        yield name


def _pods(api_client, deployment: str) -> list[client.V1Pod]:
    selector = client.AppsV1Api(api_client).read_namespaced_deployment(deployment, NAMESPACE).spec.selector
    labels = ",".join(f"{k}={v}" for k, v in (selector.match_labels or {}).items())
    return client.CoreV1Api(api_client).list_namespaced_pod(NAMESPACE, label_selector=labels).items


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_the_product_runs_in_its_pods_under_the_restricted_context(api_client, apps, deployment):
    pods = [
        p for p in _pods(api_client, deployment) if p.status.phase == "Running" and not p.metadata.deletion_timestamp
    ]
    assert pods, f"no running pod of {deployment}"
    for pod in pods:
        ready = {c.type: c.status for c in pod.status.conditions or []}
        assert ready.get("Ready") == "True", pod.metadata.name
        spec = pod.spec
        assert spec.security_context.run_as_non_root is True
        assert spec.security_context.seccomp_profile.type == "RuntimeDefault"
        for container in spec.containers:
            assert container.image.startswith("localhost/iotsec/iotsec:"), "the image make image built"
            assert not container.image.endswith(":latest")
            context = container.security_context
            assert context.allow_privilege_escalation is False
            assert context.read_only_root_filesystem is True
            assert context.capabilities.drop == ["ALL"]
        restarts = sum(s.restart_count for s in pod.status.container_statuses or [])
        assert restarts == 0, f"{pod.metadata.name} restarted {restarts} times"


def test_the_api_server_calls_the_webhook_through_its_service(api_client, apps):
    configuration = client.AdmissionregistrationV1Api(api_client).read_validating_webhook_configuration(RELEASE)
    workloads = next(w for w in configuration.webhooks if w.name == "workloads.iotsec.io")
    assert workloads.client_config.url is None
    assert workloads.client_config.service.name == f"{RELEASE}-webhook"
    assert workloads.client_config.service.namespace == NAMESPACE
    assert workloads.client_config.ca_bundle, "the operator injected its CA"


def _deployment(name: str, namespace: str, privileged: bool) -> dict:
    container = {
        "name": "app",
        "image": RUNNABLE_IMAGE,
        "command": ["sh", "-c", "sleep 3600"],
        "securityContext": {
            "allowPrivilegeEscalation": privileged,
            "privileged": privileged,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"}},
    }
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, "iotsec.io/security-level": "standard"}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10002,
                        "runAsGroup": 10002,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                },
            },
        },
    }


def test_a_non_conforming_deployment_is_denied_with_the_control_and_the_fix(api_client, namespace):
    apps = client.AppsV1Api(api_client)
    with pytest.raises(ApiException) as denied:
        apps.create_namespaced_deployment(namespace, _deployment("privileged", namespace, privileged=True))
    assert denied.value.status in (400, 403)
    message = denied.value.body or ""
    assert "iotsec.io" in message or "X1369-" in message, message
    assert "X1369-" in message, "the denial names the control"
    assert "privileged" in message


def test_a_conforming_deployment_is_admitted_and_runs(api_client, namespace):
    apps = client.AppsV1Api(api_client)

    # at once: the webhook follows watches, so the domain reconciled a moment ago is already in its view
    apps.create_namespaced_deployment(namespace, _deployment("conforming", namespace, privileged=False))

    def ready() -> bool:
        found = apps.read_namespaced_deployment("conforming", namespace)
        return (found.status.ready_replicas or 0) >= 1

    eventually(ready, timeout=90, what="the conforming Deployment Ready on the node")


def test_deleting_a_domain_takes_its_labels_off_the_namespace_it_leaves_and_the_domain_goes(core, custom, apps):
    """Red team F8, as deployed: the deletion handler's unlabel is the operator's own request, judged by the
    webhook's fence, which saw the domain (it exists until its finalizer is removed) still prescribing the labels
    and refused; the domain never went while its namespace stayed."""
    with domain_namespace(core, custom, prefix="leave") as name:
        assert (core.read_namespace(name).metadata.labels or {}).get(DOMAIN_LABEL) == name
        custom.delete_cluster_custom_object("iotsec.io", "v1alpha1", "securitydomains", name)

        def gone() -> bool:
            try:
                custom.get_cluster_custom_object("iotsec.io", "v1alpha1", "securitydomains", name)
            except ApiException as exc:
                return exc.status == 404
            return False

        eventually(gone, timeout=60, what=f"SecurityDomain {name} deleted (its finalizer removed by the operator)")
        labels = core.read_namespace(name).metadata.labels or {}
        assert DOMAIN_LABEL not in labels, labels
        assert ZONE_LABEL not in labels, labels
