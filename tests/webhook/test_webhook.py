"""The webhook as the API server meets it: real HTTPS on loopback, real AdmissionReview v1 JSON."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from iotsec.admission.rules import RULES
from iotsec.admission.snapshot import snapshot_from_objects
from iotsec.model.manifests import load_documents
from iotsec.pki import certs
from iotsec.pki.tls import ReloadingTLS
from iotsec.servers.webhook.review import MAX_BODY_BYTES, review
from iotsec.servers.webhook.server import StaticSnapshot, serve
from tests.conftest import EXAMPLES

SNAPSHOT = snapshot_from_objects(
    [d.obj for d in load_documents([EXAMPLES / "platform"])], assume_named_namespaces_exist=True
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_pair(folder: Path, ca: certs.KeyPair) -> None:
    serving = certs.new_serving_cert(ca, ["localhost"], ["127.0.0.1"], datetime.now(UTC))
    (folder / "tls.crt").write_text(serving.cert_pem)
    (folder / "tls.key").write_text(serving.key_pem)


class Webhook:
    def __init__(self, folder: Path):
        self.folder, self.port = folder, _free_port()
        self.ca = certs.new_ca("test-ca", datetime.now(UTC))
        (folder / "ca.crt").write_text(self.ca.cert_pem)
        _write_pair(folder, self.ca)
        self.tls = ReloadingTLS(folder / "tls.crt", folder / "tls.key")
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(serve(StaticSnapshot(SNAPSHOT), "127.0.0.1", self.port, self.tls, 0.2, self.stop))

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.get("/healthz")
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("webhook did not start")

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=10)

    def connection(self, cafile: Path | None = None) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=str(cafile or self.folder / "ca.crt"))
        return http.client.HTTPSConnection("localhost", self.port, context=context, timeout=10)

    def get(self, path: str) -> tuple[int, str]:
        connection = self.connection()
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        connection = self.connection()
        connection.request(
            "POST", "/validate", body=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")


@pytest.fixture(scope="module")
def webhook(tmp_path_factory) -> Iterator[Webhook]:
    running = Webhook(tmp_path_factory.mktemp("webhook"))
    running.start()
    yield running
    running.close()


def admission_review(
    obj: dict[str, Any], operation: str = "CREATE", dry_run: bool = False, uid: str | None = None
) -> dict[str, Any]:
    group, _, version = obj["apiVersion"].rpartition("/")
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": group, "version": version, "kind": obj["kind"]},
            "resource": {"group": group, "version": version, "resource": obj["kind"].lower() + "s"},
            "namespace": obj["metadata"].get("namespace"),
            "operation": operation,
            "userInfo": {"username": "alice", "groups": ["acme:operators"]},
            "object": obj,
            "oldObject": obj if operation == "UPDATE" else None,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def example(path: str, index: int = 0) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "workloads" / path).read_text()) if d]
    return docs[index]


def _deployment(docs_path: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "workloads" / docs_path).read_text()) if d]
    return next(d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "CronJob", "Pod", "Job"))


def test_conforming_workload_is_allowed(webhook):
    review_body = admission_review(_deployment("conforming/mqtt-gateway.yaml"), uid="uid-allow")
    status, answer = webhook.post(json.dumps(review_body).encode())
    assert status == 200
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["response"] == {"uid": "uid-allow", "allowed": True}


def test_violating_workload_is_denied_with_one_line_per_rule_and_fix(webhook):
    status, answer = webhook.post(
        json.dumps(admission_review(_deployment("nonconforming/multiple-violations.yaml"), uid="uid-deny")).encode()
    )
    response = answer["response"]
    assert status == 200
    assert response["uid"] == "uid-deny"
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    lines = response["status"]["message"].splitlines()
    recorded = json.loads(response["auditAnnotations"]["violations"])  # every violation, one by one
    assert lines[0] == f"iotsec: {len(recorded)} X.1369 violations"
    assert (
        "[X1369-9.4.3-1 no-privileged] set privileged: false — container shell: privileged containers are not "
        "allowed in zone core (spec.containers[*].securityContext.privileged)" in lines
    )
    for rule in {entry.split()[1] for entry in recorded}:  # each rule on a line of its own, its fix first
        assert any(line.startswith(f"[{RULES[rule].control} {rule}] ") and " — " in line for line in lines), rule


def test_warn_domain_admits_with_warnings(webhook):
    pod = _deployment("nonconforming/privileged-container.yaml")
    pod["metadata"]["namespace"] = "monitoring"  # the operations domain runs in warn mode
    _status, answer = webhook.post(json.dumps(admission_review(pod)).encode())
    response = answer["response"]
    assert response["allowed"] is True
    assert any("no-privileged" in w for w in response["warnings"])
    assert all(len(w) <= 256 for w in response["warnings"])
    assert response["auditAnnotations"]["mode"] == "warn"


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_dry_run_is_decided_but_leaves_no_records(webhook):
    obj = _deployment("nonconforming/privileged-container.yaml")
    before = _metric("iotsec_violations_total", control="X1369-9.4.3-1")
    _status, answer = webhook.post(json.dumps(admission_review(obj, dry_run=True)).encode())
    assert answer["response"]["allowed"] is False
    assert "X1369-9.4.3-1" in answer["response"]["status"]["message"], "decided, and says why"
    assert "auditAnnotations" not in answer["response"], "no record in the API server's audit log either"
    assert _metric("iotsec_violations_total", control="X1369-9.4.3-1") == before
    _status, answer = webhook.post(json.dumps(admission_review(obj)).encode())
    assert json.loads(answer["response"]["auditAnnotations"]["violations"])
    assert _metric("iotsec_violations_total", control="X1369-9.4.3-1") > before


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "body is not JSON"),
        (b"[]", "not a JSON object"),
        (
            json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}).encode(),
            "expected apiVersion admission.k8s.io/v1",
        ),
        (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(), "has no request"),
        (
            json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "request": {"kind": {"kind": "Pod"}, "operation": "CREATE", "object": {}},
                }
            ).encode(),
            "request.uid is missing",
        ),
        (
            json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "request": {"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE", "object": "x"},
                }
            ).encode(),
            "request.object must be an object",
        ),
    ],
)
def test_malformed_requests_get_400_with_a_reason(webhook, body, reason):
    status, answer = webhook.post(body)
    assert status == 400
    assert reason in answer["error"]


def test_a_large_review_arriving_in_many_segments_is_read_whole(webhook):
    deployment = _deployment("conforming/mqtt-gateway.yaml")
    deployment["metadata"]["annotations"] = {f"note-{i}": "x" * 200 for i in range(400)}  # ~90 KB
    body = json.dumps(admission_review(deployment, uid="big")).encode()
    connection = webhook.connection()
    connection.putrequest("POST", "/validate")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders()
    for start in range(0, len(body), 1000):
        connection.send(body[start : start + 1000])
        time.sleep(0.001)
    response = connection.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["response"] == {"uid": "big", "allowed": True}


def test_huge_body_gets_400(webhook):
    body = json.dumps({"apiVersion": "admission.k8s.io/v1", "pad": "x" * (MAX_BODY_BYTES + 10)}).encode()
    status, answer = webhook.post(body)
    assert status == 400
    assert "exceeds" in answer["error"]


def test_malformed_object_of_a_known_kind_gets_400(webhook):
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "iot-ingest"},
        "spec": {"containers": "not-a-list"},
    }
    status, answer = webhook.post(json.dumps(admission_review(obj)).encode())
    assert status == 400
    assert "Pod is malformed" in answer["error"]


@pytest.mark.parametrize(
    ("obj", "operation"),
    [
        ({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "x"}}, "CREATE"),
        (
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "iot-ingest"},
                "spec": {"hostNetwork": True},
            },
            "DELETE",
        ),
    ],
)
def test_unknown_kinds_and_deletes_pass_unchecked(webhook, obj, operation):
    status, answer = webhook.post(json.dumps(admission_review(obj, operation, uid="u-skip")).encode())
    assert (status, answer["response"]) == (200, {"uid": "u-skip", "allowed": True})


def test_update_is_checked_like_create(webhook):
    obj = _deployment("nonconforming/host-network.yaml")
    _, answer = webhook.post(json.dumps(admission_review(obj, "UPDATE")).encode())
    assert answer["response"]["allowed"] is False


def test_probes_and_wrong_method(webhook):
    assert webhook.get("/healthz") == (200, "ok")
    assert webhook.get("/readyz") == (200, "ok")
    assert webhook.get("/validate")[0] == 405


ROUTING_CASES = [
    ("GET", "/healthz"),
    ("HEAD", "/healthz"),
    ("HEAD", "/readyz"),
    ("GET", "/readyz?verbose=1"),
    ("GET", "/validate"),
    ("PUT", "/validate"),
    ("DELETE", "/healthz"),
    ("POST", "/healthz"),
    ("GET", "/"),
    ("GET", "/validate/"),
    ("POST", "/Validate"),
    ("GET", "/metrics"),
    ("OPTIONS", "/validate"),
]


def _raw(webhook: Webhook, method: str, path: str) -> tuple[int, str, str]:
    connection = webhook.connection()
    connection.request(method, path, body=b"{}" if method in ("POST", "PUT") else None)
    response = connection.getresponse()
    return response.status, response.getheader("Allow") or "", response.read().decode()


async def _through_router(method: str, path: str) -> tuple[int, str, str]:
    from aiohttp.test_utils import TestClient, TestServer

    from iotsec.servers.webhook.server import make_app

    async with TestClient(TestServer(make_app(StaticSnapshot(SNAPSHOT)))) as client:
        response = await client.request(method, path, data=b"{}" if method in ("POST", "PUT") else None)
        return response.status, response.headers.get("Allow", ""), await response.text()


@pytest.mark.parametrize(("method", "path"), ROUTING_CASES)
def test_the_served_handler_routes_as_aiohttps_router_did(webhook, method, path):
    """`serve` dispatches on aiohttp's low-level server, without an Application: every path and method gets the
    status, Allow header and body that the Application's router gives (404, 405 with Allow, HEAD of GET routes)."""
    assert _raw(webhook, method, path) == asyncio.run(_through_router(method, path))


def test_a_review_with_the_api_servers_query_and_a_body_over_aiohttps_default_limit(webhook):
    """The API server calls /validate?timeout=10s; a review may exceed aiohttp's default 1 MiB body limit."""
    deployment = _deployment("conforming/mqtt-gateway.yaml")
    deployment["metadata"]["annotations"] = {f"note-{i}": "x" * 1000 for i in range(2000)}  # ~2 MB
    body = json.dumps(admission_review(deployment, uid="large")).encode()
    assert 2**20 < len(body) < MAX_BODY_BYTES
    connection = webhook.connection()
    connection.request("POST", "/validate?timeout=10s", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["response"] == {"uid": "large", "allowed": True}


def test_certificate_is_reloaded_without_a_restart(webhook, tmp_path):
    new_ca = certs.new_ca("rotated-ca", datetime.now(UTC))
    (tmp_path / "new-ca.crt").write_text(new_ca.cert_pem)
    _write_pair(webhook.folder, new_ca)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            connection = webhook.connection(tmp_path / "new-ca.crt")
            connection.request("GET", "/healthz")
            assert connection.getresponse().status == 200
            break
        except ssl.SSLCertVerificationError:
            time.sleep(0.1)
    else:
        raise AssertionError("the new certificate was never served")
    with pytest.raises(ssl.SSLCertVerificationError):
        webhook.get("/healthz")  # clients that only trust the old CA no longer verify
    (webhook.folder / "ca.crt").write_text(new_ca.cert_pem)


# ---------------------------------------------------------------- the pure handler, property-based

NOW = lambda: datetime(2026, 11, 27, tzinfo=UTC)  # noqa: E731
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(
    spec=st.dictionaries(
        st.sampled_from(
            ["containers", "initContainers", "volumes", "securityContext", "hostPID", "serviceAccountName"]
        ),
        json_values,
    ),
    uid=st.text(min_size=1, max_size=20),
)
def test_random_pod_specs_never_produce_a_500(spec, uid):
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "iot-ingest"}, "spec": spec}
    outcome = review(json.dumps(admission_review(obj, uid=uid)).encode(), SNAPSHOT, NOW)
    assert outcome.status in (200, 400)
    if outcome.status == 200:
        assert outcome.body["response"]["uid"] == uid


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_random_bodies_get_400_never_a_crash(body):
    assert review(body, SNAPSHOT, NOW).status == 400


def test_without_cluster_state_requests_are_refused_with_a_reason():
    outcome = review(
        json.dumps(admission_review(_deployment("conforming/mqtt-gateway.yaml"), uid="u")).encode(), None, NOW
    )
    assert outcome.body["response"]["allowed"] is False
    assert "not loaded the cluster's SecurityDomains" in outcome.body["response"]["status"]["message"]


def test_exception_use_is_recorded_in_the_audit_annotations():
    deployment = _deployment("nonconforming/writable-root-fs.yaml")
    deployment["metadata"].update(name="legacy-protocol-converter", namespace="iot-processing")
    outcome = review(
        json.dumps(admission_review(deployment)).encode(), SNAPSHOT, lambda: datetime(2027, 1, 1, tzinfo=UTC)
    )
    assert outcome.body["response"]["allowed"] is True
    assert (
        "waives read-only-root-fs (approved by ciso@example.com, ticket RISK-1042"
        in outcome.body["response"]["auditAnnotations"]["exceptions"]
    )
    expired = review(
        json.dumps(admission_review(deployment)).encode(),
        SNAPSHOT,
        lambda: datetime(2027, 3, 31, tzinfo=UTC) + timedelta(seconds=1),
    )
    assert expired.body["response"]["allowed"] is False


class _SecretLater:
    """A Secret the operator fills only after a few reads, as on a fresh install."""

    def __init__(self, reads_before_data: int):
        self.reads, self.reads_before_data = 0, reads_before_data

    def get(self, api_version, kind, name, namespace=None):
        self.reads += 1
        if self.reads <= self.reads_before_data:
            return {"metadata": {"name": name}}
        encode = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
        return {"metadata": {"name": name}, "data": {"tls.crt": encode("CERT"), "tls.key": encode("KEY")}}


def test_the_webhook_waits_for_its_serving_pair_instead_of_crashing(tmp_path):
    from iotsec.servers.webhook.cluster import SecretFiles

    kube = _SecretLater(reads_before_data=3)
    files = SecretFiles(kube, "iotsec-system", "iotsec-webhook-tls", tmp_path)
    files.wait_for_pair(timeout=30, interval=0)
    assert kube.reads == 4
    assert files.cert_file.read_text() == "CERT"
    assert oct(files.key_file.stat().st_mode & 0o777) == "0o600"


def test_the_webhook_gives_up_on_a_missing_pair_with_a_reason(tmp_path):
    from iotsec.k8s.kube import ApiError
    from iotsec.servers.webhook.cluster import SecretFiles

    ticks = iter(range(1000))
    files = SecretFiles(_SecretLater(reads_before_data=10**6), "ns", "tls", tmp_path)
    with pytest.raises(ApiError, match=r"no tls.crt and tls.key yet after waiting 5s: is the operator running\?"):
        files.wait_for_pair(timeout=5, interval=0, clock=lambda: next(ticks))
    assert not files.cert_file.exists()


def test_kubectl_debug_cannot_add_a_privileged_ephemeral_container(webhook):
    """`kubectl debug` updates pods/ephemeralcontainers; the webhook is sent that subresource and judges the pod."""
    from iotsec.build.webhook import client_config, validating_webhook_configuration

    configuration = validating_webhook_configuration("iotsec", client_config(url="https://x/validate"), "iotsec-system")
    workloads = next(w for w in configuration["webhooks"] if w["name"] == "workloads.iotsec.io")
    core = next(r for r in workloads["rules"] if r["apiGroups"] == [""])
    assert "pods/ephemeralcontainers" in core["resources"]
    assert "UPDATE" in core["operations"]

    pod = _deployment("conforming/telemetry-ingest.yaml")
    spec = pod["spec"]["template"]["spec"]
    debugged = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ingest-0", "namespace": "iot-ingest"}}
    debugged["spec"] = {
        **spec,
        "ephemeralContainers": [
            {
                "name": "debugger",
                "image": "registry.example.com/tools/shell:1.0",
                "securityContext": {"privileged": True},
            }
        ],
    }
    review = admission_review(debugged, operation="UPDATE")
    review["request"]["subResource"] = "ephemeralcontainers"
    review["request"]["resource"]["resource"] = "pods"
    _status, answer = webhook.post(json.dumps(review).encode())
    assert answer["response"]["allowed"] is False
    message = answer["response"]["status"]["message"]
    assert "[X1369-9.4.3-1 no-privileged] set privileged: false — ephemeral container debugger" in message
    assert "(spec.ephemeralContainers[*].securityContext.privileged)" in message
