"""The audit sink as the API server meets it: real HTTPS, real EventList batches, client certs or tokens."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from iotsec.api.auditpolicy import AnomalyRule
from iotsec.audittrail.anomaly import AnomalyDetector
from iotsec.audittrail.store import AuditStore
from iotsec.audittrail.verify import verify
from iotsec.pki import certs
from iotsec.pki.tls import ReloadingTLS
from iotsec.servers.auditsink.server import Authentication, Canary, Sink, serve
from tests.webhook.test_webhook import _free_port

KEY = Ed25519PrivateKey.generate()
TOKEN = "s3cr3t-token-for-tests"
BRUTE_FORCE = AnomalyRule.model_validate(
    {"name": "brute-force", "type": "AuthFailures", "threshold": 3, "window": "5m", "groupBy": "sourceIP"}
)


def audit_event(n: int, *, code: int = 200, ip: str = "10.0.0.5", **extra: Any) -> dict[str, Any]:
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": f"a-{n}",
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/default/configmaps",
        "verb": "create",
        "user": {"username": "alice", "groups": ["platform:sre"]},
        "sourceIPs": [ip],
        "objectRef": {"resource": "configmaps", "namespace": "default", "name": f"cm-{n}", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": "2026-11-28T01:00:00.000000Z",
        "stageTimestamp": f"2026-11-28T01:00:{n % 60:02d}.000000Z",
        **extra,
    }


def event_list(*events: dict[str, Any]) -> bytes:
    return json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": list(events)}).encode()


class RunningSink:
    def __init__(self, folder: Path, mode: str, limit_bytes: int = 8 * 2**20):
        self.folder, self.port, self.mode = folder, _free_port(), mode
        now = datetime.now(UTC)
        self.ca = certs.new_ca("sink-ca", now)
        serving = certs.new_serving_cert(self.ca, ["localhost"], ["127.0.0.1"], now)
        self.client_ca = certs.new_ca("apiserver-client-ca", now)
        self.client = certs.new_client_cert(self.client_ca, "kube-apiserver", now)
        for name, text in {
            "ca.crt": self.ca.cert_pem,
            "tls.crt": serving.cert_pem,
            "tls.key": serving.key_pem,
            "client-ca.crt": self.client_ca.cert_pem,
            "client.crt": self.client.cert_pem,
            "client.key": self.client.key_pem,
        }.items():
            (folder / name).write_text(text)
        self.hits: list[Any] = []
        self.store = AuditStore(folder / "store", KEY, limit_bytes=limit_bytes, reserve_bytes=4096)
        self.sink = Sink(
            self.store,
            AnomalyDetector([BRUTE_FORCE], ["system:masters"]),
            warn_at_percent=50,
            canary=Canary("iotsec-system", "iotsec-audit-canary", timedelta(seconds=60)),
            on_hits=self.hits.extend,
        )
        client_ca = folder / "client-ca.crt" if mode == "clientCertificate" else None
        self.tls = ReloadingTLS(folder / "tls.crt", folder / "tls.key", client_ca)
        self.auth = Authentication(mode, TOKEN if mode == "bearerToken" else None)
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(
            serve(self.sink, self.auth, host="127.0.0.1", port=self.port, tls=self.tls, stop=self.stop)
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.request("GET", "/healthz")
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("sink did not start")

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=10)

    def context(self, with_client_cert: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.folder / "ca.crt"))
        if with_client_cert:
            context.load_cert_chain(self.folder / "client.crt", self.folder / "client.key")
        return context

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, dict[str, str], Any]:
        connection = http.client.HTTPSConnection("localhost", self.port, context=self.context(**kw), timeout=10)
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
        try:
            answer: Any = json.loads(raw)
        except ValueError:
            answer = raw.decode()
        return response.status, dict(response.headers), answer

    def post(self, body: bytes, **kw: Any) -> tuple[int, dict[str, str], Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"} if self.mode == "bearerToken" else {}
        headers.update(kw.pop("headers", {}))
        return self.request("POST", "/audit", body, headers, **kw)


@pytest.fixture
def cert_sink(tmp_path) -> Iterator[RunningSink]:
    running = RunningSink(tmp_path, "clientCertificate")
    running.start()
    yield running
    running.close()


@pytest.fixture
def token_sink(tmp_path) -> Iterator[RunningSink]:
    running = RunningSink(tmp_path, "bearerToken")
    running.start()
    yield running
    running.close()


def test_a_real_batch_is_stored_in_the_verified_chain(cert_sink):
    status, _, answer = cert_sink.post(event_list(*(audit_event(n) for n in range(5))))
    assert status == 200
    assert answer["stored"] == 5
    assert answer["lastSeq"] == 5
    cert_sink.store.seal()
    report = verify(cert_sink.folder / "store", KEY.public_key())
    assert report.ok
    assert report.records == 5
    assert report.head == answer["head"]
    stored = [
        json.loads(line.split(b" ", 1)[1])
        for line in next((cert_sink.folder / "store").rglob("*.jsonl")).read_bytes().splitlines()
        if not line.startswith(b"checkpoint ")
    ]
    assert [r["event"]["auditID"] for r in stored] == [f"a-{n}" for n in range(5)]


def test_a_caller_without_a_client_certificate_is_refused(cert_sink):
    status, _, answer = cert_sink.post(event_list(audit_event(1)), with_client_cert=False)
    assert status == 401
    assert "clientCertificate" in answer["message"]
    assert cert_sink.request("GET", "/healthz", with_client_cert=False)[0] == 200  # probes carry no certificate
    assert cert_sink.store.records == 0


def test_a_client_certificate_from_another_ca_is_refused(cert_sink, tmp_path):
    rogue_ca = certs.new_ca("rogue", datetime.now(UTC))
    rogue = certs.new_client_cert(rogue_ca, "kube-apiserver", datetime.now(UTC))
    (tmp_path / "client.crt").write_text(rogue.cert_pem)
    (tmp_path / "client.key").write_text(rogue.key_pem)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        cert_sink.post(event_list(audit_event(1)))
    assert cert_sink.store.records == 0


def test_bearer_token_callers_are_checked(token_sink):
    assert token_sink.post(event_list(audit_event(1)))[0] == 200
    status, _, answer = token_sink.post(event_list(audit_event(2)), headers={"Authorization": "Bearer wrong"})
    assert status == 401
    assert answer["reason"] == "Unauthorized"
    status, _, _ = token_sink.request("POST", "/audit", event_list(audit_event(3)))
    assert status == 401
    assert token_sink.store.records == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1beta1", "items": []}).encode(), "v1beta1"),
        (json.dumps({"kind": "AdmissionReview", "apiVersion": "audit.k8s.io/v1"}).encode(), "AdmissionReview"),
        (json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": {}}).encode(), "items must be"),
        (event_list({"stage": "ResponseComplete"}), "items[0] is not an audit event"),
        (event_list(audit_event(1), "text"), "items[1] is not an audit event"),
    ],
)
def test_malformed_bodies_get_400_with_the_reason_and_store_nothing(cert_sink, body, reason):
    status, _, answer = cert_sink.post(body)
    assert status == 400
    assert reason in answer["message"]
    assert cert_sink.store.records == 0


def test_a_full_store_answers_503_with_retry_after_and_keeps_what_it_accepted(tmp_path):
    running = RunningSink(tmp_path, "bearerToken", limit_bytes=64 * 1024)
    running.start()
    try:
        accepted, refused = 0, None
        for n in range(500):
            status, headers, answer = running.post(event_list(*(audit_event(n * 4 + i) for i in range(4))))
            if status != 200:
                refused = (status, headers, answer)
                break
            accepted += 4
        assert refused is not None
        status, headers, answer = refused
        assert status == 503
        assert headers["Retry-After"] == "10"
        assert "audit store full" in answer["message"]
        assert running.sink.state.refused_batches == 1
        assert running.sink.nearly_full()
        report = verify(tmp_path / "store", KEY.public_key())
        assert report.ok
        assert report.records == accepted
    finally:
        running.close()


def test_metrics_count_batches_by_outcome(token_sink):
    def sample(outcome: str) -> float:
        return REGISTRY.get_sample_value("iotsec_audit_batches_total", {"outcome": outcome}) or 0.0

    before = {o: sample(o) for o in ("stored", "invalid", "unauthenticated")}
    token_sink.post(event_list(audit_event(1)))
    token_sink.post(b"nope")
    token_sink.post(event_list(audit_event(2)), headers={"Authorization": "Bearer x"})
    assert {o: sample(o) - before[o] for o in before} == {"stored": 1, "invalid": 1, "unauthenticated": 1}
    assert REGISTRY.get_sample_value("iotsec_audit_records") == 1


def test_anomalies_fire_on_the_stream(token_sink):
    failures = [audit_event(n, code=401, ip="203.0.113.9") for n in range(3)]
    quiet = [audit_event(10 + n, code=401, ip=f"198.51.100.{n}") for n in range(3)]
    before = REGISTRY.get_sample_value("iotsec_audit_anomalies_total", {"rule": "brute-force"}) or 0.0
    assert token_sink.post(event_list(*quiet))[0] == 200
    assert token_sink.hits == []
    assert token_sink.post(event_list(*failures))[0] == 200
    assert [(h.rule, h.subject, h.count) for h in token_sink.hits] == [("brute-force", "203.0.113.9", 3)]
    assert REGISTRY.get_sample_value("iotsec_audit_anomalies_total", {"rule": "brute-force"}) == before + 1
    assert next(iter(token_sink.sink.state.hits)).control == "X1369-9.1.1.1-5"


def test_the_canary_is_seen_when_its_write_arrives(token_sink):
    sink = token_sink.sink
    sink.canary_written("nonce-1")
    sink.state.pending_canaries["nonce-1"] -= timedelta(seconds=120)
    sink.canary_written("nonce-2")  # a newer write does not hide the overdue one
    assert "has not reached the sink" in sink.pipeline_broken()
    other = audit_event(1, requestObject={"data": {"nonce": "nonce-0"}})
    other["objectRef"] = {"resource": "configmaps", "namespace": "iotsec-system", "name": "iotsec-audit-canary"}
    token_sink.post(event_list(other))
    assert sink.pipeline_broken() is not None  # an old nonce does not count
    canary = {**other, "auditID": "c-1", "requestObject": {"data": {"nonce": "nonce-1"}}}
    token_sink.post(event_list(canary))
    assert sink.pipeline_broken() is None
    assert list(sink.state.pending_canaries) == ["nonce-2"]
    assert sink.state.canary_seen is not None


def test_the_sink_verifies_its_sealed_segments_and_reports_a_break(token_sink):
    from iotsec.audittrail.chain import segment_files
    from iotsec.servers.auditsink.reporter import sink_status

    token_sink.post(event_list(*(audit_event(n) for n in range(6))))
    token_sink.store.seal()
    sink = token_sink.sink
    asyncio.run(sink.verify_sealed())
    assert sink.state.chain_break is None
    assert REGISTRY.get_sample_value("iotsec_audit_chain_intact") == 1
    intact = {c["type"]: c for c in sink_status(sink, [], 3)["conditions"]}
    assert intact["ChainIntact"]["status"] == "True"

    segment = segment_files(token_sink.folder / "store")[0]
    segment.write_bytes(segment.read_bytes().replace(b"cm-3", b"cm-9", 1))
    asyncio.run(sink.verify_sealed())
    assert "seq 4 (line 4): content does not match its recorded hash" in sink.state.chain_break
    assert REGISTRY.get_sample_value("iotsec_audit_chain_intact") == 0
    status = sink_status(sink, [{"type": "Applied", "status": "True", "reason": "Applied", "message": ""}], 3)
    found = {c["type"]: c for c in status["conditions"]}
    assert found["ChainIntact"]["status"] == "False"
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("False", "ChainBroken")
    assert status["lastVerified"]


def test_sink_status_reports_storage_and_keeps_the_operators_conditions(tmp_path):
    from iotsec.servers.auditsink.reporter import sink_status

    store = AuditStore(tmp_path, KEY, limit_bytes=150_000, reserve_bytes=1024)
    sink = Sink(store, AnomalyDetector([], ["system:masters"]), warn_at_percent=50)
    store.append([audit_event(n) for n in range(120)])
    sink.refresh()
    applied = {"type": "Applied", "status": "True", "reason": "Applied", "message": "ok", "lastTransitionTime": "x"}
    status = sink_status(sink, [applied], 2)
    found = {c["type"]: c for c in status["conditions"]}
    assert found["Applied"] == applied
    assert found["StorageNearlyFull"]["status"] == "True"
    assert status["percentUsed"] >= 50
    assert status["records"] == 120
    assert status["bytesLimit"] == 150_000
    assert found["AuditPipelineBroken"]["reason"] == "CanaryPending"
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("True", "Recording")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_shaped_events = st.fixed_dictionaries(
    {"auditID": st.text(max_size=8), "stage": _json_values},
    optional=dict.fromkeys(
        (
            "verb",
            "user",
            "impersonatedUser",
            "sourceIPs",
            "objectRef",
            "responseStatus",
            "annotations",
            "stageTimestamp",
            "requestReceivedTimestamp",
            "requestObject",
        ),
        _json_values,
    ),
)
_bodies = st.one_of(
    st.lists(_shaped_events, max_size=3).map(
        lambda items: json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}).encode()
    ),
    st.binary(max_size=200),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(_json_values, max_size=3).map(
        lambda items: json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}).encode()
    ),
)


@settings(max_examples=300, deadline=None)
@given(body=_bodies)
def test_any_body_is_stored_or_refused_with_400_never_an_error(tmp_path_factory, body):
    store = AuditStore(tmp_path_factory.mktemp("fuzz"), KEY, limit_bytes=2**20)
    sink = Sink(store, AnomalyDetector([BRUTE_FORCE], ["system:masters"]))
    status, answer = asyncio.run(sink.ingest(body))
    assert status in (200, 400), answer
    assert store.records == (answer["stored"] if status == 200 else 0)


def test_a_failing_anomaly_rule_never_fails_a_stored_batch(tmp_path, monkeypatch):
    sink = Sink(AuditStore(tmp_path, KEY, limit_bytes=2**20), AnomalyDetector([BRUTE_FORCE], []))

    def explode(event):
        raise RuntimeError("rule bug")

    monkeypatch.setattr(sink.detector, "observe", explode)
    before = REGISTRY.get_sample_value("iotsec_audit_watch_errors_total") or 0.0
    status, answer = asyncio.run(sink.ingest(event_list(audit_event(1), audit_event(2))))
    assert (status, answer["stored"]) == (200, 2)  # a 5xx after storing would make the API server send it twice
    assert REGISTRY.get_sample_value("iotsec_audit_watch_errors_total") == before + 1


def test_a_changed_spec_is_taken_without_a_restart(tmp_path):
    from iotsec.api.auditpolicy import AuditPolicySpec

    sink = Sink(AuditStore(tmp_path, KEY, limit_bytes=2**20), AnomalyDetector([], []), warn_at_percent=80)
    denied = [audit_event(n, code=401, ip="203.0.113.1") for n in range(3)]
    assert asyncio.run(sink.ingest(event_list(*denied)))[0] == 200
    assert list(sink.state.hits) == []
    spec = AuditPolicySpec.model_validate(
        {
            "sink": {"storage": {"size": "5Mi", "warnAtPercent": 60, "segmentSize": "1Mi"}, "retention": "30d"},
            "anomalyRules": [{"name": "bf", "type": "AuthFailures", "threshold": 2, "groupBy": "sourceIP"}],
        }
    )
    sink.configure(spec)
    assert (sink.store.limit_bytes, sink.store.segment_bytes, sink.warn_at_percent) == (5 * 2**20, 2**20, 60)
    assert sink.retention == timedelta(days=30)
    assert asyncio.run(sink.ingest(event_list(*denied[:2])))[0] == 200
    assert [(h.rule, h.subject) for h in sink.state.hits] == [("bf", "203.0.113.1")]


def test_odd_credentials_and_deep_nesting_get_401_and_400_not_500(token_sink):
    status, _, _ = token_sink.post(event_list(audit_event(1)), headers={"Authorization": "Bearer tokén"})
    assert status == 401
    deep = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, _, answer = token_sink.post(deep)
    assert status == 400
    assert "nested too deeply" in answer["message"]


def test_only_a_backup_that_names_the_store_claim_and_started_before_the_seal_counts():
    from iotsec.servers.auditsink.reporter import backed_up_before

    claim = "iotsec-audit-store-trail"
    status = {"lastSuccess": "2026-11-28T03:00:00Z", "lastDurationSeconds": 600.0}
    named = {"spec": {"pvcNames": [claim]}, "status": status}
    assert backed_up_before(named, claim) == datetime(2026, 11, 28, 2, 50, tzinfo=UTC)  # when that run started
    assert backed_up_before({"spec": {"pvcNames": ["tsdb-0"]}, "status": status}, claim) is None
    assert backed_up_before({"spec": {"pvcSelector": {"matchLabels": {"a": "b"}}}, "status": status}, claim) is None
    assert (
        backed_up_before({"spec": {"pvcNames": [claim]}, "status": {"lastSuccess": "2026-11-28T03:00:00Z"}}, claim)
        is None
    )
    assert backed_up_before(None, claim) is None


class StatusKube:
    """Just enough of the adapter for the Publisher: one AuditPolicy, its status patches and events."""

    def __init__(self, spec: dict[str, Any]):
        self.body = {"apiVersion": "iotsec.io/v1alpha1", "kind": "AuditPolicy", "spec": spec}
        self.body["metadata"] = {"name": "trail", "generation": 1, "resourceVersion": "1"}
        self.patches: list[dict[str, Any]] = []
        self.applied: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []

    def get(self, api_version, kind, name, namespace=None):
        return json.loads(json.dumps(self.body)) if kind == "AuditPolicy" else None

    def apply(self, obj, owner=None):
        self.applied.append(obj)
        return obj

    def patch_status(self, api_version, kind, name, status, namespace=None, resource_version=None):
        self.patches.append(status)
        self.body["status"] = status

    def post_event(self, involved, type_, reason, message):
        self.events.append((type_, reason, message))


def test_the_publisher_writes_on_change_not_every_tick_and_reloads_a_changed_spec(tmp_path):
    from iotsec.servers.auditsink.reporter import Publisher

    kube = StatusKube({"sink": {"canary": {"interval": "1h"}}})
    sink = Sink(
        AuditStore(tmp_path, KEY, limit_bytes=2**20),
        AnomalyDetector([], []),
        canary=Canary("iotsec-system", "iotsec-audit-canary-trail", timedelta(minutes=2)),
    )
    publisher = Publisher(kube, "trail", "iotsec-system", sink, generation=1)
    sink.on_hits = publisher.queue_hits
    publisher.tick()
    assert len(kube.applied) == 1  # the canary, with a fresh nonce
    assert kube.applied[0]["data"]["nonce"] in sink.state.pending_canaries
    publisher.tick()
    publisher.tick()
    assert len(kube.patches) == 1, "nothing an operator acts on changed: no new status write"
    kube.body["spec"] = {"anomalyRules": [{"name": "bf", "type": "AuthFailures", "threshold": 1}]}
    kube.body["metadata"]["generation"] = 2
    publisher.tick()
    assert [state.rule.name for state in sink.detector._states] == ["bf"]
    asyncio.run(sink.ingest(event_list(audit_event(1, code=401))))
    publisher.tick()
    assert len(kube.patches) == 2
    assert kube.patches[-1]["anomalies"][0]["rule"] == "bf"
    assert kube.events[-1][1] == "AnomalyAuthFailures"


def test_a_restart_finds_records_cut_off_while_the_sink_was_down(tmp_path):
    from iotsec.audittrail.chain import seal_path, segment_files

    store = AuditStore(tmp_path, KEY, limit_bytes=2**20)
    store.append([audit_event(n) for n in range(5)])
    store.seal()
    store.append([audit_event(n) for n in range(5, 8)])
    published = (store.next_seq - 1, store.head)
    newest = segment_files(tmp_path)[-1]
    newest.unlink()
    assert not seal_path(newest).exists()
    restarted = Sink(AuditStore(tmp_path, KEY, limit_bytes=2**20), AnomalyDetector([], []))
    restarted.check_published_head(*published)
    assert "records 6..8 were cut off" in restarted.state.chain_break
    asyncio.run(restarted.verify_sealed())
    assert restarted.state.chain_break is not None, "a later clean check of the sealed part does not clear it"


def test_retention_deletions_are_announced_as_events(tmp_path):
    from iotsec.audittrail.chain import segment_files
    from iotsec.audittrail.store import mark_exported
    from iotsec.servers.auditsink.reporter import Publisher

    clock_now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = AuditStore(tmp_path, KEY, limit_bytes=2**20, clock=lambda: clock_now[0])
    store.append([audit_event(1)])
    store.seal()
    store.append([audit_event(2)])
    mark_exported(tmp_path, [segment_files(tmp_path)[0].name])
    clock_now[0] += timedelta(days=500)
    sink = Sink(store, AnomalyDetector([], []), clock=lambda: clock_now[0])
    sink.retention = timedelta(days=400)
    asyncio.run(sink.housekeeping())
    kube = StatusKube({})
    Publisher(kube, "trail", "iotsec-system", sink, generation=1).tick()
    assert [(t, r) for t, r, _ in kube.events] == [("Normal", "RetentionDeleted")]
    assert "0000000001.jsonl" in kube.events[0][2]


def test_a_restart_finds_a_record_rewritten_while_the_sink_was_down(tmp_path):
    from iotsec.audittrail import chain

    store = AuditStore(tmp_path, KEY, limit_bytes=2**20)
    store.append([audit_event(n) for n in range(4)])
    store.seal()
    store.append([audit_event(n) for n in range(4, 7)])
    published = (store.next_seq - 1, store.head)
    open_segment = chain.segment_files(tmp_path)[-1]
    lines, prev = [], store.sealed_segments()[0]["head"]
    for seq in range(5, 8):
        line, prev = chain.record_line(seq, prev, "2026-11-28T00:00:00.000000Z", "apiserver", audit_event(seq))
        lines.append(line)
    open_segment.write_bytes(b"".join(lines))
    restarted = Sink(AuditStore(tmp_path, KEY, limit_bytes=2**20), AnomalyDetector([], []))
    restarted.check_published_head(*published)
    # the rewrite carries no checkpoint, so the store cut it off as a never-acknowledged batch
    assert restarted.state.chain_break.startswith("the chain ends at seq 4 but seq 7 was published")
    assert restarted.state.chain_break.endswith("(checked at start)")
    intact = Sink(AuditStore(tmp_path / "other", KEY, limit_bytes=2**20), AnomalyDetector([], []))
    intact.store.append([audit_event(1), audit_event(2)])
    intact.check_published_head(2, intact.store.head)
    assert intact.state.chain_break is None


# --- the signing key: the sink reads it, never makes one ----------------------------------------------------------


class _ReadOnlyKube:
    """An API that holds at most one Secret and fails the test on any write."""

    def __init__(self, secret: dict[str, Any] | None) -> None:
        self.secret = secret

    def get(self, api_version, kind, name, namespace=None):
        assert kind == "Secret"
        return self.secret

    def apply(self, *args, **kwargs):
        raise AssertionError("the sink wrote to the cluster")

    create = apply


def test_the_sink_reads_the_key_secret_and_never_creates_one():
    import base64

    from iotsec.audittrail.chain import private_pem
    from iotsec.model.keysecrets import KeyUnreadableError
    from iotsec.services.audit import signing_key_from_secret

    with pytest.raises(KeyUnreadableError, match="does not exist"):
        signing_key_from_secret(_ReadOnlyKube(None), "ns", "key")  # type: ignore[arg-type]
    damaged = {"metadata": {"name": "key"}, "data": {"ed25519.key": base64.b64encode(b"garbage").decode()}}
    with pytest.raises(KeyUnreadableError, match=r"ed25519\.key"):
        signing_key_from_secret(_ReadOnlyKube(damaged), "ns", "key")  # type: ignore[arg-type]
    good = {"metadata": {"name": "key"}, "data": {"ed25519.key": base64.b64encode(private_pem(KEY)).decode()}}
    found = signing_key_from_secret(_ReadOnlyKube(good), "ns", "key")  # type: ignore[arg-type]
    assert found.public_key() == KEY.public_key()


def _serve_argv(tmp_path: Path, key: Path, *extra: str) -> list[str]:
    from tests.conftest import ROOT

    (tmp_path / "token").write_text(TOKEN)
    return [
        "audit", "serve", "--spec", str(ROOT / "examples" / "platform" / "40-audit.yaml"),
        "--store", str(tmp_path / "store"), "--signing-key", str(key), *extra,
        "--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key"),
        "--token-file", str(tmp_path / "token"), "--port", "0",
    ]  # fmt: skip


def test_a_read_only_key_that_is_missing_stops_the_sink_before_it_serves(tmp_path, capsys):
    from iotsec.cli.main import main

    key = tmp_path / "mounted" / "ed25519.key"
    assert main(_serve_argv(tmp_path, key, "--signing-key-readonly")) == 2
    assert "signing key" in capsys.readouterr().err
    assert not key.exists(), "no replacement key of its own"
    assert not (tmp_path / "store").exists(), "nothing stored, nothing served"


def test_a_read_only_key_that_is_damaged_is_left_alone(tmp_path, capsys):
    from iotsec.cli.main import main

    key = tmp_path / "ed25519.key"
    key.write_bytes(b"damaged")
    for extra in (("--signing-key-readonly",), ()):  # without the flag too: an existing file is never replaced
        assert main(_serve_argv(tmp_path, key, *extra)) == 2
        assert key.read_bytes() == b"damaged"
    assert "ed25519.key" in capsys.readouterr().err


def test_local_runs_create_the_key_file_once(tmp_path):
    import stat

    from iotsec.services.audit import signing_key

    key = tmp_path / "dev" / "signing.key"
    made = signing_key(None, "ns", key_file=key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert signing_key(None, "ns", key_file=key).public_key() == made.public_key()
    read_only = signing_key(None, "ns", key_file=key, readonly=True)
    assert read_only.public_key() == made.public_key(), "a mounted key reads the same"


def test_a_restart_never_seals_a_first_segment_forged_without_checkpoints(tmp_path):
    """The downgrade: nothing sealed yet, every checkpoint dropped, records rewritten with recomputed hashes."""
    from iotsec.audittrail import chain

    store = AuditStore(tmp_path, KEY, limit_bytes=2**20)
    for first in (1, 4):
        store.append([audit_event(n) for n in range(first, first + 3)])
    lines, prev = [], chain.GENESIS
    for seq in range(1, 7):  # two batches, as the real ones were
        moment = f"2026-11-28T00:00:0{seq // 4}.000000Z"
        line, prev = chain.record_line(seq, prev, moment, "apiserver", audit_event(seq, verb="delete"))
        lines.append(line)
    chain.segment_files(tmp_path)[0].write_bytes(b"".join(lines))

    restarted = Sink(AuditStore(tmp_path, KEY, limit_bytes=2**20), AnomalyDetector([], []))
    assert restarted.store.last_sealed is None, "not sealed as unverified legacy"
    assert restarted.store.next_seq == 1
    asyncio.run(restarted.verify_sealed())
    assert restarted.state.chain_break is not None, "the set-aside forgery is reported even with no published head"
    assert "not one batch cut short by a crash" in restarted.state.chain_break
