"""The audit pipeline end to end: the real kube-apiserver restarted with the rendered Policy and the webhook
backend pointing at a running `iotsec audit serve`; admin actions with kubectl land in the verified chain.

The module restarts the k8s-testenv control plane twice (with, then without, the audit flags); etcd keeps its
data, so the other modules' objects and CRDs survive.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from iotsec.api.validation import parse_resource
from iotsec.build import apiserver_audit as rendering
from iotsec.build.audit import canary_name
from iotsec.pki import certs
from tests.e2e.conftest import eventually
from tests.e2e.controlplane import TESTENV, kubectl, restart_control_plane
from tests.e2e.processes import _free_port, terminate

kubernetes = pytest.importorskip("kubernetes")

POLICY = "e2e-audit"
DEAF_POLICY = "e2e-audit-deaf"
NAMESPACE = "iotsec-e2e-audit"
WORK_NAMESPACE = "audit-e2e-work"
SECRET_VALUE = "do-not-record-me-7f3a"


def audit_policy(name: str, deadline: str = "30s") -> dict[str, Any]:
    return {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "AuditPolicy",
        "metadata": {"name": name},
        "spec": {
            "sink": {
                "authentication": "clientCertificate",
                "storage": {"size": "1Gi", "segmentMaxAge": "1h"},
                "canary": {"interval": "3s", "deadline": deadline},
            },
            "trustedAdminGroups": ["system:masters"],
            "anomalyRules": [
                {"name": "denied", "type": "AuthFailures", "threshold": 3, "window": "5m", "groupBy": "user"},
                {"name": "grants", "type": "PrivilegeGrant", "threshold": 1, "window": "1m", "groupBy": "user"},
            ],
        },
    }


class Sink:
    """`iotsec audit serve` in a subprocess with its own certificates."""

    def __init__(self, folder: Path, policy: str):
        self.folder, self.policy, self.port = folder, policy, _free_port()
        now = datetime.now(UTC)
        self.ca = certs.new_ca("e2e-sink-ca", now)
        serving = certs.new_serving_cert(self.ca, ["localhost"], ["127.0.0.1"], now)
        client_ca = certs.new_ca("e2e-apiserver-client-ca", now)
        self.client = certs.new_client_cert(client_ca, "kube-apiserver", now)
        for name, text in {
            "ca.crt": self.ca.cert_pem,
            "tls.crt": serving.cert_pem,
            "tls.key": serving.key_pem,
            "client-ca.crt": client_ca.cert_pem,
        }.items():
            (folder / name).write_text(text)
        self.store = folder / "store"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable, "-m", "iotsec", "audit", "serve",
            "--audit-policy", self.policy, "--namespace", NAMESPACE,
            "--store", str(self.store), "--signing-key", str(self.folder / "signing.key"),
            "--tls-cert", str(self.folder / "tls.crt"), "--tls-key", str(self.folder / "tls.key"),
            "--client-ca", str(self.folder / "client-ca.crt"),
            "--host", "127.0.0.1", "--port", str(self.port), "--housekeeping-seconds", "1",
        ]  # fmt: skip
        with (self.folder / "sink.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return (self.folder / "sink.log").read_text(errors="replace")[-4000:]

    def webhook_kubeconfig(self) -> dict[str, Any]:
        return rendering.webhook_kubeconfig(
            server=f"https://127.0.0.1:{self.port}/audit",
            ca_pem=self.ca.cert_pem.encode(),
            client_cert_pem=self.client.cert_pem.encode(),
            client_key_pem=self.client.key_pem.encode(),
        )

    def records(self) -> list[dict[str, Any]]:
        lines = [line for path in sorted(self.store.rglob("*.jsonl")) for line in path.read_bytes().splitlines()]
        return [json.loads(line.split(b" ", 1)[1]) for line in lines if not line.startswith(b"checkpoint ")]


@pytest.fixture(scope="module")
def objects(api_client, crds):
    return kubernetes.dynamic.DynamicClient(api_client)


@pytest.fixture(scope="module")
def audited(objects, tmp_path_factory):
    if not (TESTENV / "start.sh").exists():
        pytest.fail(f"the audit e2e restarts the control plane but {TESTENV}/start.sh is missing", pytrace=False)
    folder = tmp_path_factory.mktemp("audit-e2e")
    core = objects.resources.get(api_version="v1", kind="Namespace")
    for name in (NAMESPACE, WORK_NAMESPACE):
        if not any(ns.metadata.name == name for ns in core.get().items):
            core.create(body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    policies = objects.resources.get(api_version="iotsec.io/v1alpha1", kind="AuditPolicy")
    for body in (audit_policy(POLICY), audit_policy(DEAF_POLICY, deadline="4s")):
        policies.server_side_apply(body=body, field_manager="e2e", force_conflicts=True)
    sink = Sink(folder, POLICY)
    spec = parse_resource(audit_policy(POLICY)).spec
    policy = rendering.render_policy(spec, operator_users=[], canary=(NAMESPACE, canary_name(POLICY)))
    (folder / "policy.yaml").write_text(yaml.safe_dump(policy))
    (folder / "webhook.kubeconfig").write_text(yaml.safe_dump(sink.webhook_kubeconfig()))
    flags = rendering.apiserver_flags(
        policy_path=str(folder / "policy.yaml"), webhook_config_path=str(folder / "webhook.kubeconfig")
    )
    flags = [f for f in flags if not f.startswith("--audit-webhook-batch-max-wait")] + [
        "--audit-webhook-batch-max-wait=1s",
        "--audit-webhook-initial-backoff=1s",
    ]
    sink.start()
    restart_control_plane(" ".join(flags))
    try:
        yield sink
    finally:
        terminate(sink.process, 10)
        restart_control_plane("")


def _status(objects, name: str) -> dict[str, Any]:
    policies = objects.resources.get(api_version="iotsec.io/v1alpha1", kind="AuditPolicy")
    return policies.get(name=name).to_dict().get("status") or {}


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def test_admin_actions_with_kubectl_land_in_the_verified_chain(audited):
    kubectl("delete", "clusterrolebinding", "e2e-audit-view", "--ignore-not-found")  # a rerun on a kept etcd
    kubectl("-n", WORK_NAMESPACE, "delete", "secret,configmap", "e2e-secret", "e2e-cm", "--ignore-not-found")
    kubectl("create", "clusterrolebinding", "e2e-audit-view", "--clusterrole=view", "--user=e2e-audit-bob")
    kubectl("-n", WORK_NAMESPACE, "create", "secret", "generic", "e2e-secret", f"--from-literal=k={SECRET_VALUE}")
    kubectl("-n", WORK_NAMESPACE, "get", "secret", "e2e-secret", "-o", "name")
    kubectl("-n", WORK_NAMESPACE, "create", "configmap", "e2e-cm", "--from-literal=a=b")

    def recorded() -> dict[str, dict[str, Any]]:
        found = {}
        for record in audited.records():
            event = record["event"]
            ref = event.get("objectRef") or {}
            if event.get("stage") != "ResponseComplete":
                continue
            key = f"{event['verb']} {ref.get('resource')}/{ref.get('name')}"
            if ref.get("name") in {"e2e-audit-view", "e2e-secret", "e2e-cm"}:
                found[key] = event
        assert {
            "create clusterrolebindings/e2e-audit-view",
            "create secrets/e2e-secret",
            "get secrets/e2e-secret",
        } <= set(found), sorted(found)
        return found

    found = eventually(recorded, timeout=60, what=f"admin actions in the sink's chain; sink log:\n{audited.log()}")
    binding = found["create clusterrolebindings/e2e-audit-view"]
    assert binding["level"] == "RequestResponse"
    assert binding["user"]["username"] == "admin"
    assert binding["requestObject"]["subjects"][0]["name"] == "e2e-audit-bob"
    kubectl("delete", "clusterrolebinding", "e2e-audit-view")  # a cluster-wide grant must not outlive the test
    for verb in ("create", "get"):
        secret = found[f"{verb} secrets/e2e-secret"]
        assert secret["level"] == "Metadata"
        assert "requestObject" not in secret
        assert "responseObject" not in secret
    raw = b"".join(p.read_bytes() for p in audited.store.rglob("*.jsonl"))
    assert SECRET_VALUE.encode() not in raw
    import base64

    assert base64.b64encode(SECRET_VALUE.encode()) not in raw

    done = subprocess.run(
        [sys.executable, "-m", "iotsec", "audit", "verify", str(audited.store), "-o", "json",
         "--public-key", str(audited.store / "signing.pub")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["ok"] is True
    assert report["records"] >= 4


def test_the_sink_reports_chain_and_canary_in_the_status(audited, objects):
    def reported() -> dict[str, Any]:
        status = _status(objects, POLICY)
        assert status.get("records", 0) > 0, status
        assert _condition(status, "AuditPipelineBroken").get("reason") == "CanaryArrived", status
        return status

    status = eventually(reported, timeout=60, what=f"canary seen by the sink; sink log:\n{audited.log()}")
    assert len(status["chainHead"]) == 64
    assert status["bytesLimit"] > 0
    assert status["lastCanarySeen"]
    assert _condition(status, "StorageNearlyFull")["status"] == "False"
    assert _condition(status, "AuditPipelineBroken")["status"] == "False"
    own = [
        r["event"]
        for r in audited.records()
        if "fieldManager=iotsec-audit-sink" in r["event"].get("requestURI", "")
        and (r["event"].get("objectRef") or {}).get("name") == canary_name(POLICY)
    ]
    assert own, "iotsec's own canary writes are recorded in the chain too"
    assert own[-1]["level"] == "Request"
    assert own[-1]["requestObject"]["data"]["nonce"]


def test_an_anomaly_becomes_an_event_a_status_entry_and_a_record(audited, objects):
    for _ in range(3):
        out = kubectl("--as=mallory", "-n", WORK_NAMESPACE, "get", "secrets")
        assert "forbidden" in out.lower()

    def flagged() -> list[dict[str, Any]]:
        # only mallory's: with the testenv's node running, its kubelet collects denials of its own
        anomalies = _status(objects, POLICY).get("anomalies", [])
        hits = [a for a in anomalies if a["rule"] == "denied" and a["subject"] == "mallory"]
        assert hits, anomalies
        return hits

    hits = eventually(flagged, timeout=60, what=f"the AuthFailures rule in the status; sink log:\n{audited.log()}")
    assert hits[0]["count"] == 3
    events = objects.resources.get(api_version="v1", kind="Event")

    def posted() -> list[Any]:
        found = [
            e
            for e in events.get(namespace="default").items
            if e.involvedObject.name == POLICY and e.reason == "AnomalyAuthFailures" and "mallory" in e.message
        ]
        assert found
        return found

    event = eventually(posted, timeout=30, what="the anomaly Event on the AuditPolicy")[0]
    assert event.type == "Warning"
    assert "X1369-9.1.1.1-5" in event.message
    assert "mallory" in event.message


def test_a_sink_that_receives_nothing_reports_the_pipeline_broken(audited, objects, tmp_path):
    deaf = Sink(tmp_path, DEAF_POLICY)  # the API server does not send to it: like a deleted log file
    deaf.start()
    try:

        def broken() -> dict[str, Any]:
            status = _status(objects, DEAF_POLICY)
            condition = _condition(status, "AuditPipelineBroken")
            assert condition.get("status") == "True", status
            return status

        status = eventually(broken, timeout=60, what=f"AuditPipelineBroken; sink log:\n{deaf.log()}")
        condition = _condition(status, "AuditPipelineBroken")
        assert condition["reason"] == "CanaryMissing"
        assert "has not reached the sink" in condition["message"]
        assert _condition(status, "Ready")["status"] == "False"
    finally:
        terminate(deaf.process, 10)
