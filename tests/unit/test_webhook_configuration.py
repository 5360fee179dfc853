"""The ValidatingWebhookConfiguration iotsec ships."""

from __future__ import annotations

import base64

import kubernetes_validate
import pytest

from iotsec.build.webhook import (
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


# --- `iotsec webhook-config` with the caBundle filled, for out-of-cluster runs -------------------------------------


def _printed(capsys) -> dict:
    import yaml

    return yaml.safe_load(capsys.readouterr().out)


def _bundles(config: dict) -> set[str]:
    return {base64.b64decode(w["clientConfig"]["caBundle"]).decode() for w in config["webhooks"]}


def _tls(now=None):
    from datetime import UTC, datetime

    from iotsec.pki import certs

    tls, _ = certs.ensure_webhook_tls(None, ["localhost"], ["127.0.0.1"], now or datetime.now(UTC))
    return tls


def test_webhook_config_fills_the_ca_bundle_from_a_file(tmp_path, capsys):
    from iotsec.cli.main import main

    bundle = tmp_path / "ca.crt"
    bundle.write_text(_tls().bundle())
    assert main(["webhook-config", "--url", "https://127.0.0.1:9443/validate", "--ca-bundle", str(bundle)]) == 0
    config = _printed(capsys)
    assert _bundles(config) == {bundle.read_text()}, "every webhook trusts the CA"
    assert config["webhooks"][0]["clientConfig"]["url"] == "https://127.0.0.1:9443/validate"


@pytest.mark.parametrize("content", ["", "not a certificate\n", "-----BEGIN CERTIFICATE-----\nAAAA\n"])
def test_webhook_config_refuses_a_bundle_that_would_fail_every_call(tmp_path, capsys, content):
    from iotsec.cli.main import main

    bundle = tmp_path / "ca.crt"
    bundle.write_text(content)
    assert main(["webhook-config", "--url", "https://127.0.0.1:9443/validate", "--ca-bundle", str(bundle)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "ca.crt" in captured.err


class _SecretReader:
    def __init__(self, secrets: dict) -> None:
        self.secrets, self.read = secrets, []

    def __call__(self):
        return self

    def get(self, api_version, kind, name, namespace=None):
        self.read.append((kind, namespace, name))
        return self.secrets.get((namespace, name))


def test_webhook_config_reads_the_ca_from_the_operators_secret(monkeypatch, capsys):
    from iotsec.cli.main import main
    from iotsec.k8s import kube

    tls = _tls()
    reader = _SecretReader(
        {("iotsec-system", "iotsec-webhook-tls"): tls_secret("iotsec-system", "s", tls.to_secret_data())}
    )
    monkeypatch.setattr(kube, "Kube", reader)
    argv = ["webhook-config", "--service", "iotsec-system/iotsec-webhook", "--ca-from-secret"]
    assert main([*argv, "iotsec-system/iotsec-webhook-tls"]) == 0
    assert reader.read == [("Secret", "iotsec-system", "iotsec-webhook-tls")]
    assert _bundles(_printed(capsys)) == {tls.bundle()}
    assert main([*argv, "iotsec-system/missing"]) == 2
    assert "no Secret iotsec-system/missing" in capsys.readouterr().err
    assert main([*argv, "no-slash"]) == 2


def test_webhook_config_from_a_cert_manager_secret_takes_its_ca(monkeypatch, capsys):
    from iotsec.cli.main import main
    from iotsec.k8s import kube

    tls = _tls()
    data = {"ca.crt": tls.ca.cert_pem, "tls.crt": tls.serving.cert_pem, "tls.key": tls.serving.key_pem}
    monkeypatch.setattr(kube, "Kube", _SecretReader({("ns", "cm"): tls_secret("ns", "cm", data)}))
    assert main(["webhook-config", "--url", "https://127.0.0.1:1/validate", "--ca-from-secret", "ns/cm"]) == 0
    assert _bundles(_printed(capsys)) == {tls.ca.cert_pem}


def test_the_fence_fails_closed_for_the_operator_only_where_the_server_can_say_so():
    from iotsec.build.webhook import validating_webhook_configuration as build

    current = build("iotsec", client_config(url="https://h/validate"), "iotsec-system")
    (fence,) = [w for w in current["webhooks"] if w["name"] == "platform.iotsec.io"]
    assert fence["failurePolicy"] == "Fail"
    assert fence["matchConditions"] == [
        {
            "name": "operator-only",
            "expression": "request.userInfo.username == 'system:serviceaccount:iotsec-system:iotsec-operator'",
        }
    ]
    kubernetes_validate.validate(current, kubernetes_validate.latest_version(), strict=True)
    old = build("iotsec", client_config(url="https://h/validate"), "iotsec-system", server_minor=27)
    (fence,) = [w for w in old["webhooks"] if w["name"] == "platform.iotsec.io"]
    assert fence["failurePolicy"] == "Ignore", "without matchConditions a closed fence would stop everyone"
    assert "matchConditions" not in fence
