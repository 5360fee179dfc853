"""The ValidatingWebhookConfiguration iotsec ships."""

from __future__ import annotations

import base64

import kubernetes_validate
import pytest

from iotsec.desired.webhook import (
    ca_bundle_patch,
    client_config,
    tls_secret,
    validating_webhook_configuration,
)

CONFIG = validating_webhook_configuration(
    "iotsec", client_config(service=("iotsec-system", "iotsec-webhook", 443)), "iotsec-system", ["monitoring"]
)


def _hook(name: str) -> dict:
    return next(w for w in CONFIG["webhooks"] if w["name"] == name)


def test_is_valid_kubernetes():
    kubernetes_validate.validate(CONFIG, kubernetes_validate.latest_version(), strict=True)
    kubernetes_validate.validate(
        tls_secret("ns", "s", {"tls.crt": "x", "tls.key": "y"}), kubernetes_validate.latest_version(), strict=True
    )


def test_workloads_fail_closed_fast_and_without_side_effects():
    hook = _hook("workloads.iotsec.io")
    assert hook["failurePolicy"] == "Fail"
    assert hook["timeoutSeconds"] <= 5
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert all(rule["operations"] == ["CREATE", "UPDATE"] for rule in hook["rules"])
    resources = {r for rule in hook["rules"] for r in rule["resources"]}
    assert {
        "pods",
        "deployments",
        "statefulsets",
        "daemonsets",
        "replicasets",
        "jobs",
        "cronjobs",
        "services",
        "ingresses",
        "persistentvolumeclaims",
        "rolebindings",
        "configmaps",
    } <= resources


def test_exemptions_key_only_on_the_immutable_namespace_name_label():
    selector = _hook("workloads.iotsec.io")["namespaceSelector"]
    assert list(selector) == ["matchExpressions"]
    (expression,) = selector["matchExpressions"]
    assert expression["key"] == "kubernetes.io/metadata.name"
    assert expression["operator"] == "NotIn"
    assert set(expression["values"]) == {"kube-system", "kube-public", "kube-node-lease", "iotsec-system", "monitoring"}


def test_cluster_bindings_fail_open_so_an_outage_cannot_lock_out_rbac_repairs():
    hook = _hook("bindings.iotsec.io")
    assert hook["failurePolicy"] == "Ignore"
    assert hook["rules"][0]["resources"] == ["clusterrolebindings"]


def test_service_and_url_client_configs():
    assert client_config(service=("ns", "svc", 8443))["service"] == {
        "namespace": "ns",
        "name": "svc",
        "port": 8443,
        "path": "/validate",
    }
    config = client_config(url="https://127.0.0.1:9443/validate", ca_bundle="PEM")
    assert config == {"url": "https://127.0.0.1:9443/validate", "caBundle": base64.b64encode(b"PEM").decode()}
    with pytest.raises(ValueError, match="url or its service"):
        client_config()


def test_timeout_is_bounded():
    with pytest.raises(ValueError, match="1-5"):
        validating_webhook_configuration("x", client_config(url="https://a/validate"), "ns", timeout_seconds=10)


def test_ca_bundle_patch_owns_only_the_bundle():
    patch = ca_bundle_patch("iotsec", ["workloads.iotsec.io"], "PEM")
    assert patch["webhooks"] == [
        {"name": "workloads.iotsec.io", "clientConfig": {"caBundle": base64.b64encode(b"PEM").decode()}}
    ]
