"""The audit pipeline as deployed (issue 14): the sink runs as the pod the operator (in its pod) made for an
AuditPolicy, with the product's image; kube-apiserver is restarted with the Policy and the webhook kubeconfig that
`iotsec audit policy --from-cluster` prints (the sink's Service address, its CA, the API server's client
certificate); admin actions with kubectl land in the chain on the sink's volume, which verifies with the public
half of the signing key read from its Secret, and the canary arrives.

The store's volume is a hostPath PersistentVolume made by the test (the node is this machine), so the test reads
the chain where the sink wrote it. The module restarts the control plane twice (with, then without, the audit
flags); etcd keeps its data and the node keeps its pods.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from kubernetes import client
from kubernetes.client.rest import ApiException

from iotsec.build.audit import canary_name, signing_secret_name, sink_name, sink_selector, store_claim_name
from iotsec.cli.leadership import EXIT_LOST_LEASE
from tests.e2e.conftest import eventually
from tests.e2e.controlplane import TESTENV, kubectl, restart_control_plane
from tests.e2e.deployed import (
    RELEASE,
    delete_quietly,
    domain_namespace,
    host_path_volume,
    local_storage_class,
    operator_pods,
    operator_state,
    require_install,
)

SUFFIX = uuid.uuid4().hex[:5]
POLICY = f"deployed-audit-{SUFFIX}"
AUDIT_NAMESPACE = f"{RELEASE}-audit"  # the chart's default: <release>-audit
STORAGE_CLASS = f"iotsec-e2e-audit-{SUFFIX}"
WORK_NAMESPACE = f"audit-work-{SUFFIX}"
SECRET_VALUE = f"never-record-me-{SUFFIX}"
GROUP, VERSION = "iotsec.io", "v1alpha1"


@dataclass
class Pipeline:
    store: Path
    folder: Path
    operator_before: dict[str, int]  # the operator's pods and their restart counts before the control plane went
    log: str = ""


def _policy() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AuditPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "sink": {
                "authentication": "clientCertificate",
                "storage": {"size": "1Gi", "storageClassName": STORAGE_CLASS, "segmentMaxAge": "1h"},
                "canary": {"interval": "3s", "deadline": "30s"},
            },
            "trustedAdminGroups": ["system:masters"],
        },
    }


def _iotsec(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "iotsec", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"iotsec {' '.join(args)}: {done.stderr}"
    return done.stdout


def _sink_ready(apps: client.AppsV1Api) -> bool:
    try:
        found = apps.read_namespaced_deployment(sink_name(POLICY), AUDIT_NAMESPACE)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return (found.status.ready_replicas or 0) >= 1


def _sink_log(core: client.CoreV1Api) -> str:
    selector = ",".join(f"{k}={v}" for k, v in sink_selector(POLICY).items())
    pods = core.list_namespaced_pod(AUDIT_NAMESPACE, label_selector=selector).items
    logs = []
    for pod in pods:
        try:
            logs.append(core.read_namespaced_pod_log(pod.metadata.name, AUDIT_NAMESPACE, tail_lines=30))
        except ApiException as exc:
            logs.append(f"(no log of {pod.metadata.name}: {exc.reason})")
    return "\n".join(logs)[-4000:]


@pytest.fixture(scope="module")
def pipeline(api_client, core, custom, tmp_path_factory) -> Iterator[Pipeline]:
    if not (TESTENV / "start.sh").exists():
        pytest.fail(f"the deployed audit test restarts the control plane but {TESTENV}/start.sh is missing")
    apps = require_install(api_client)
    remove_storage_class = local_storage_class(api_client, STORAGE_CLASS)
    store = Path(tempfile.mkdtemp(prefix=f"iotsec-e2e-audit-{SUFFIX}-", dir="/var/tmp"))
    host_path_volume(core, STORAGE_CLASS, store, STORAGE_CLASS, claim=(AUDIT_NAMESPACE, store_claim_name(POLICY)))
    core.create_namespace({"metadata": {"name": WORK_NAMESPACE}})
    custom.create_cluster_custom_object(GROUP, VERSION, "auditpolicies", _policy())
    folder = tmp_path_factory.mktemp("deployed-audit")
    restarted = False
    try:
        eventually(lambda: _sink_ready(apps), timeout=120, what="the sink's pod Ready (made by the operator's pod)")

        def rendered() -> bool:
            try:
                (folder / "policy.yaml").write_text(_iotsec("audit", "policy", "--from-cluster", POLICY))
                kubeconfig = _iotsec(
                    "audit", "policy", "--from-cluster", POLICY, "--namespace", AUDIT_NAMESPACE, "--webhook-kubeconfig"
                )
            except AssertionError:
                return False  # the operator has not issued the client certificate yet
            (folder / "webhook.kubeconfig").write_text(kubeconfig)
            return True

        eventually(rendered, timeout=60, what="the Policy and the webhook kubeconfig from the cluster")
        flags = _iotsec(
            "audit", "policy", "--from-cluster", POLICY, "--flags",
            "--policy-path", str(folder / "policy.yaml"), "--webhook-config-path", str(folder / "webhook.kubeconfig"),
        ).split()  # fmt: skip
        flags = [f for f in flags if not f.startswith("--audit-webhook-batch-max-wait")]
        flags += ["--audit-webhook-batch-max-wait=1s", "--audit-webhook-initial-backoff=1s"]
        operator_before = _restarts(core)
        restart_control_plane(" ".join(flags))
        restarted = True
        yield Pipeline(store, folder, operator_before)
    finally:
        if restarted:
            restart_control_plane("")
        delete_quietly(lambda: custom.delete_cluster_custom_object(GROUP, VERSION, "auditpolicies", POLICY))
        delete_quietly(lambda: core.delete_namespace(WORK_NAMESPACE))
        delete_quietly(
            lambda: core.delete_namespaced_persistent_volume_claim(store_claim_name(POLICY), AUDIT_NAMESPACE)
        )
        delete_quietly(lambda: core.delete_persistent_volume(STORAGE_CLASS))
        remove_storage_class()
        shutil.rmtree(store, ignore_errors=True)


def _records(store: Path) -> list[dict[str, Any]]:
    lines = [line for path in sorted(store.rglob("*.jsonl")) for line in path.read_bytes().splitlines()]
    return [json.loads(line.split(b" ", 1)[1]) for line in lines if line and not line.startswith(b"checkpoint ")]


def _status(custom) -> dict[str, Any]:
    return custom.get_cluster_custom_object(GROUP, VERSION, "auditpolicies", POLICY).get("status") or {}


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def test_the_api_server_reaches_the_sink_through_its_service(pipeline):
    kubeconfig = (pipeline.folder / "webhook.kubeconfig").read_text()
    assert "127.0.0.1" not in kubeconfig, "the Service's address, not a port on this machine"
    assert "/audit" in kubeconfig


def test_admin_actions_with_kubectl_land_in_the_chain_on_the_sinks_volume(pipeline, core):
    kubectl("create", "clusterrolebinding", f"audit-view-{SUFFIX}", "--clusterrole=view", f"--user=bob-{SUFFIX}")
    kubectl("-n", WORK_NAMESPACE, "create", "secret", "generic", "kept", f"--from-literal=k={SECRET_VALUE}")
    kubectl("-n", WORK_NAMESPACE, "get", "secret", "kept", "-o", "name")

    def recorded() -> dict[str, dict[str, Any]]:
        found = {}
        for record in _records(pipeline.store):
            event = record["event"]
            ref = event.get("objectRef") or {}
            if event.get("stage") == "ResponseComplete" and ref.get("name") in {f"audit-view-{SUFFIX}", "kept"}:
                found[f"{event['verb']} {ref.get('resource')}/{ref.get('name')}"] = event
        wanted = {f"create clusterrolebindings/audit-view-{SUFFIX}", "create secrets/kept", "get secrets/kept"}
        assert wanted <= set(found), sorted(found)
        return found

    try:
        found = eventually(recorded, timeout=90, what="admin actions in the chain")
    finally:
        kubectl("delete", "clusterrolebinding", f"audit-view-{SUFFIX}", "--ignore-not-found")
    binding = found[f"create clusterrolebindings/audit-view-{SUFFIX}"]
    assert binding["level"] == "RequestResponse"
    assert binding["requestObject"]["subjects"][0]["name"] == f"bob-{SUFFIX}"
    for verb in ("create", "get"):
        secret = found[f"{verb} secrets/kept"]
        assert secret["level"] == "Metadata"
        assert "requestObject" not in secret
        assert "responseObject" not in secret
    raw = b"".join(p.read_bytes() for p in pipeline.store.rglob("*.jsonl"))
    assert SECRET_VALUE.encode() not in raw
    assert base64.b64encode(SECRET_VALUE.encode()) not in raw


def test_the_chain_verifies_with_the_key_from_the_signing_secret(pipeline, core):
    secret = core.read_namespaced_secret(signing_secret_name(POLICY), AUDIT_NAMESPACE)
    private = serialization.load_pem_private_key(base64.b64decode(secret.data["ed25519.key"]), password=None)
    public = pipeline.folder / "signing.pub"
    public.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    done = subprocess.run(
        [sys.executable, "-m", "iotsec", "audit", "verify", str(pipeline.store), "-o", "json", "--public-key",
         str(public)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["ok"] is True
    assert report["records"] >= 3


def test_the_canary_arrives_and_the_sink_reports_it_in_the_status(pipeline, custom, core):
    def reported() -> dict[str, Any]:
        status = _status(custom)
        assert status.get("records", 0) > 0, status
        assert _condition(status, "AuditPipelineBroken").get("reason") == "CanaryArrived", status
        return status

    status = eventually(reported, timeout=90, what=f"the canary seen by the sink's pod; its log:\n{_sink_log(core)}")
    assert status["lastCanarySeen"]
    assert len(status["chainHead"]) == 64
    own = [
        r["event"]
        for r in _records(pipeline.store)
        if (r["event"].get("objectRef") or {}).get("name") == canary_name(POLICY)
    ]
    assert own, "the canary's writes are in the chain"


def _restarts(core) -> dict[str, int]:
    return {
        pod.metadata.name: sum(s.restart_count for s in pod.status.container_statuses or ())
        for pod in operator_pods(core)
    }


def test_the_operator_outlasted_the_control_plane_restart_and_still_reconciles(pipeline, core, custom):
    """The control plane was down while the operator's pods ran: kopf must not give up on its requests and stop,
    and a stopping operator must not hang without a liveness endpoint (CI, issue 17: kubelet restarted it 70 s
    later and a domain was not reconciled within 60 s). With leader election a leader that could not renew its
    Lease while the API server was away exits on purpose (code 3) and stands by when it is back; any other
    restart (a liveness kill, 137) fails. And a new domain reconciles."""
    with domain_namespace(core, custom, prefix="outlast"):
        pass
    after = _restarts(core)
    for pod in operator_pods(core):
        name = pod.metadata.name
        if after.get(name, 0) == pipeline.operator_before.get(name, 0):
            continue
        for status in pod.status.container_statuses or ():
            last = status.last_state.terminated if status.last_state else None
            assert last is not None, operator_state(core)
            assert last.exit_code == EXIT_LOST_LEASE, f"{name} restarted for another reason\n{operator_state(core)}"
