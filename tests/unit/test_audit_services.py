"""`iotsec.services.audit`: the cluster reads behind `iotsec audit policy --from-cluster` and `audit serve
--audit-policy`, through the `Kube` they are given, raising (never printing) what is missing; the CLI prints it."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from iotsec.audittrail import chain
from iotsec.build import audit as builder
from iotsec.build.apiserver_audit import POLICY_KEY, policy_configmap_name
from iotsec.cli import main as cli
from iotsec.services import audit
from tests.conftest import EXAMPLES

NAME, NS = "platform-audit", "iotsec-audit"
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMC4C\n-----END PRIVATE KEY-----\n"


class ReadOnlyKube:
    """`Kube.get` over a fixed set of objects; any write fails the test."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}
        self.reads: list[tuple[str, str | None, str]] = []

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        self.reads.append((kind, namespace, name))
        return copy.deepcopy(self.objects.get((kind, namespace, name)))

    def apply(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a read wrote to the cluster")

    create = patch_status = delete = apply


def secret(name: str, data: dict[str, str] | None = None) -> dict[str, Any]:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in (data or {}).items()}
    return {"kind": "Secret", "metadata": {"name": name, "namespace": NS}, "data": encoded}


def sink_objects(cluster_ip: str | None = "10.96.0.50") -> list[dict[str, Any]]:
    service = {"kind": "Service", "metadata": {"name": builder.sink_name(NAME), "namespace": NS}, "spec": {}}
    if cluster_ip:
        service["spec"]["clusterIP"] = cluster_ip
    return [
        service,
        secret(builder.tls_secret_name(NAME), {"ca-bundle.crt": CA}),
        secret(builder.client_secret_name(NAME), {"client.crt": CERT, "client.key": KEY}),
    ]


def audit_policy(**extra: Any) -> dict[str, Any]:
    body = next(
        d
        for d in yaml.safe_load_all((EXAMPLES / "platform" / "40-audit.yaml").read_text())
        if d["kind"] == "AuditPolicy"
    )
    body["metadata"]["generation"] = 4
    return {**body, **extra}


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch):
    """Make the CLI's `Kube()` this fake."""

    def use(kube: ReadOnlyKube) -> ReadOnlyKube:
        monkeypatch.setattr("iotsec.k8s.kube.Kube", lambda *args, **kwargs: kube)
        return kube

    return use


# ------------------------------------------------------------------------------------------ rendered policy


def test_the_rendered_policy_is_the_configmap_the_operator_made(cluster, capsys):
    config_map = {
        "kind": "ConfigMap",
        "metadata": {"name": policy_configmap_name(NAME), "namespace": NS},
        "data": {POLICY_KEY: "apiVersion: audit.k8s.io/v1\nkind: Policy\n"},
    }
    kube = cluster(ReadOnlyKube(config_map))
    assert audit.rendered_policy(kube, NAME, NS) == "apiVersion: audit.k8s.io/v1\nkind: Policy\n"  # type: ignore[arg-type]
    assert capsys.readouterr() == ("", ""), "a service prints nothing"

    assert cli.main(["audit", "policy", "--from-cluster", NAME, "--namespace", NS]) == 0
    assert capsys.readouterr().out == "apiVersion: audit.k8s.io/v1\nkind: Policy\n"


def test_a_missing_policy_configmap_is_an_error_the_cli_prints(cluster, capsys):
    kube = cluster(ReadOnlyKube())
    with pytest.raises(audit.AuditLookupError, match=f"no ConfigMap {NS}/{policy_configmap_name(NAME)}"):
        audit.rendered_policy(kube, NAME, NS)  # type: ignore[arg-type]
    assert capsys.readouterr() == ("", "")

    assert cli.main(["audit", "policy", "--from-cluster", NAME, "--namespace", NS]) == 2
    assert capsys.readouterr().err == f"iotsec audit policy: no ConfigMap {NS}/{policy_configmap_name(NAME)}\n"


# ------------------------------------------------------------------------------------------ sink credentials


def test_sink_credentials_come_from_the_service_and_secrets_the_operator_keeps():
    parts = audit.sink_credentials(ReadOnlyKube(*sink_objects()), NAME, NS)  # type: ignore[arg-type]
    assert parts == {
        "server": f"https://10.96.0.50:{builder.SERVICE_PORT}/audit",
        "ca_pem": CA.encode(),
        "client_cert_pem": CERT.encode(),
        "client_key_pem": KEY.encode(),
        "token": None,
    }


def test_a_given_server_needs_no_service():
    kube = ReadOnlyKube(*sink_objects(cluster_ip=None))
    parts = audit.sink_credentials(kube, NAME, NS, "https://sink.example:8443/audit")  # type: ignore[arg-type]
    assert parts["server"] == "https://sink.example:8443/audit"
    assert ("Service", NS, builder.sink_name(NAME)) not in kube.reads


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        (sink_objects(cluster_ip=None), "with a cluster IP; pass --server"),
        (sink_objects()[:1], "is the operator running, and the policy applied"),
        ([*sink_objects()[:1], secret(builder.tls_secret_name(NAME)), *sink_objects()[2:]], "holds no CA"),
    ],
)
def test_missing_sink_credentials_say_what_is_missing(objects, message, capsys):
    with pytest.raises(audit.AuditLookupError, match=message):
        audit.sink_credentials(ReadOnlyKube(*objects), NAME, NS)  # type: ignore[arg-type]
    assert capsys.readouterr() == ("", "")


def test_the_webhook_kubeconfig_from_the_cluster(cluster, capsys):
    cluster(ReadOnlyKube(*sink_objects()))
    argv = ["audit", "policy", "--webhook-kubeconfig", "--from-cluster", NAME, "--namespace", NS]
    assert cli.main(argv) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["clusters"][0]["cluster"]["server"] == f"https://10.96.0.50:{builder.SERVICE_PORT}/audit"
    assert base64.b64decode(config["users"][0]["user"]["client-key-data"]).decode() == KEY

    cluster(ReadOnlyKube(*sink_objects(cluster_ip=None)))
    assert cli.main(argv) == 2
    assert "with a cluster IP; pass --server" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ the policy itself


def test_the_policy_spec_and_its_generation():
    spec, generation = audit.policy_spec(ReadOnlyKube(audit_policy()), NAME)  # type: ignore[arg-type]
    assert generation == 4
    assert spec.sink.authentication == "clientCertificate"


def test_a_missing_or_invalid_policy_is_an_error(capsys):
    with pytest.raises(audit.AuditLookupError, match=f"AuditPolicy {NAME} not found"):
        audit.policy_spec(ReadOnlyKube(), NAME)  # type: ignore[arg-type]
    invalid = audit_policy(spec={"rules": "not a list"})
    with pytest.raises(audit.AuditLookupError, match=f"AuditPolicy {NAME} is invalid"):
        audit.policy_spec(ReadOnlyKube(invalid), NAME)  # type: ignore[arg-type]
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("status", "head"),
    [
        (None, None),
        ({"chainHeadSeq": 0, "chainHead": "abc"}, None),
        ({"chainHeadSeq": 7}, None),
        ({"chainHeadSeq": 7, "chainHead": "abc"}, (7, "abc")),
    ],
)
def test_the_published_head(status, head):
    body = audit_policy(status=status) if status is not None else audit_policy()
    assert audit.published_head(ReadOnlyKube(body), NAME) == head  # type: ignore[arg-type]
    assert audit.published_head(ReadOnlyKube(), NAME) is None  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ signing key


def test_the_signing_key_from_the_secret_never_from_a_file(tmp_path):
    key = Ed25519PrivateKey.generate()
    stored = {
        "kind": "Secret",
        "metadata": {"name": "signing", "namespace": NS},
        "data": {builder.SIGNING_KEY_FIELD: base64.b64encode(chain.private_pem(key)).decode()},
    }
    found = audit.signing_key(ReadOnlyKube(stored), NS, secret="signing", key_file=tmp_path / "k")  # type: ignore[arg-type]
    assert found.public_key() == key.public_key()
    assert not (tmp_path / "k").exists()


def test_a_signing_key_secret_needs_the_api():
    with pytest.raises(ValueError, match="--signing-key-secret needs --audit-policy"):
        audit.signing_key(None, NS, secret="signing")


def test_a_read_only_key_file_is_never_created(tmp_path):
    with pytest.raises(FileNotFoundError):
        audit.signing_key(None, NS, key_file=tmp_path / "missing.key", readonly=True)
    assert not (tmp_path / "missing.key").exists()
