"""The audit sink: an HTTPS endpoint for the API server's audit webhook (`iotsec audit serve`).

POST /audit takes an `audit.k8s.io/v1` EventList from an authenticated caller (client certificate checked by
TLS, or a bearer token; X1369-9.6.4-6), appends it to the store durably and answers 200 only then. A batch
that does not fit gets 503 with Retry-After, so the API server keeps it buffered and retries: the sink
never drops silently (X1369-9.6.4-2). A body that is not an EventList gets 400 with the reason. Every
stored event passes the anomaly rules (X1369-9.6.4-7) and the canary check (AuditPipelineBroken).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from iotsec.api.auditpolicy import AuditPolicySpec
from iotsec.api.durations import parse_duration
from iotsec.api.quantities import quantity_bytes
from iotsec.audittrail.anomaly import AnomalyDetector, AnomalyHit
from iotsec.audittrail.store import AuditStore, StoreFullError
from iotsec.audittrail.verify import published_head_differs, verify
from iotsec.pki.tls import ReloadingTLS
from iotsec.servers.bounded import SINK_BOUNDS, Bounds
from iotsec.servers.bounded import server as bounded

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 2**20  # above the API server's default truncate-max-batch-size (10 MiB)
RETRY_AFTER_SECONDS = 10
EVENT_LIST = ("audit.k8s.io/v1", "EventList")

BATCHES = Counter(
    "iotsec_audit_batches_total", "Audit batches by outcome (stored, refused, invalid, unauthenticated).", ["outcome"]
)
EVENTS = Counter("iotsec_audit_events_total", "Audit events stored in the chain.")
INGEST = Histogram(
    "iotsec_audit_ingest_duration_seconds",
    "Time to store one batch (hash, write, fsync).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
STORE_BYTES = Gauge("iotsec_audit_store_bytes", "Bytes the audit store uses.")
STORE_LIMIT = Gauge("iotsec_audit_store_limit_bytes", "Bytes the audit store may use.")
STORE_RECORDS = Gauge("iotsec_audit_records", "Records in the audit chain.")
STORAGE_NEARLY_FULL = Gauge("iotsec_audit_storage_nearly_full", "1 when the audit store passed its warning level.")
ANOMALIES = Counter("iotsec_audit_anomalies_total", "Anomaly rule hits over the audit stream.", ["rule"])
WATCH_ERRORS = Counter("iotsec_audit_watch_errors_total", "Stored batches the anomaly rules could not evaluate.")
CHAIN_INTACT = Gauge("iotsec_audit_chain_intact", "0 when the sink's own verification found a break, else 1.")
CANARY_AGE = Gauge("iotsec_audit_canary_lag_seconds", "Seconds from the last canary write to its arrival.")


class BadBatchError(ValueError):
    """The body is not an audit.k8s.io/v1 EventList."""


def parse_event_list(body: bytes) -> list[dict[str, Any]]:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise BadBatchError(f"body is not JSON: {exc}") from None
    except RecursionError:
        raise BadBatchError("body is nested too deeply to be an audit EventList") from None
    if not isinstance(document, dict):
        raise BadBatchError("body is not a JSON object")
    found = (document.get("apiVersion"), document.get("kind"))
    if found != EVENT_LIST:
        raise BadBatchError(f"expected apiVersion audit.k8s.io/v1 kind EventList, got {found[0]!r} {found[1]!r}")
    items = document.get("items")
    if not isinstance(items, list):
        raise BadBatchError("items must be a list of audit events")
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("auditID"), str) or "stage" not in item:
            raise BadBatchError(f"items[{index}] is not an audit event (needs auditID and stage)")
    return items


@dataclass(frozen=True)
class Canary:
    namespace: str
    name: str
    deadline: timedelta


@dataclass
class SinkState:
    """What the sink observed beyond the store's figures (`Sink.usage`), for the AuditPolicy status."""

    startup_break: str | None = None
    retention_deleted: deque[str] = field(default_factory=lambda: deque(maxlen=1000))
    refused_batches: int = 0
    refusing: bool = False
    last_verified: datetime | None = None
    chain_break: str | None = None
    pending_canaries: dict[str, datetime] = field(default_factory=dict)  # nonce -> written, oldest first
    canary_seen: datetime | None = None
    hits: deque[AnomalyHit] = field(default_factory=lambda: deque(maxlen=32))


class Sink:
    """Ingest logic without HTTP: store, anomaly rules, canary. Calls are serialised by one lock."""

    def __init__(
        self,
        store: AuditStore,
        detector: AnomalyDetector,
        *,
        warn_at_percent: int = 80,
        canary: Canary | None = None,
        on_hits: Callable[[list[AnomalyHit]], None] = lambda hits: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store, self.detector, self.canary = store, detector, canary
        self.warn_at_percent = warn_at_percent
        self.on_hits = on_hits
        self.clock = clock
        self.state = SinkState()
        self.retention: timedelta | None = None
        self.verify_every: timedelta | None = None
        self.backed_up_before: datetime | None = None
        self._lock = asyncio.Lock()
        self._shared = threading.Lock()  # canary and detector state, also touched from the publisher's thread
        self.refresh()

    async def ingest(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON answer) for one POSTed batch."""
        try:
            events = parse_event_list(body)
        except BadBatchError as exc:
            BATCHES.labels("invalid").inc()
            return 400, _status(400, "BadRequest", str(exc))
        started = time.perf_counter()
        async with self._lock:
            try:
                appended = await asyncio.to_thread(self.store.append, events)
            except StoreFullError as exc:
                self.state.refused_batches += 1
                self.state.refusing = True
                BATCHES.labels("refused").inc()
                log.warning("audit batch of %d events refused: %s", len(events), exc)
                self.refresh()
                return 503, _status(503, "ServiceUnavailable", f"audit store full, retry later: {exc}")
            self.state.refusing = False
            self._watch(events)
            self.refresh()
        INGEST.observe(time.perf_counter() - started)
        BATCHES.labels("stored").inc()
        EVENTS.inc(appended.records)
        return 200, {"stored": appended.records, "lastSeq": appended.last_seq, "head": appended.head}

    def configure(self, spec: AuditPolicySpec, limit_override: int | None = None) -> None:
        """Take a (changed) AuditPolicy spec without a restart: limits, sealing, retention, canary, anomaly rules.

        Plain attribute assignments, so ingestion running meanwhile sees either the old or the new settings."""
        storage = spec.sink.storage
        self.store.limit_bytes = limit_override or quantity_bytes(storage.size)
        self.store.segment_bytes = quantity_bytes(storage.segment_size)
        self.store.segment_max_age = parse_duration(storage.segment_max_age)
        self.warn_at_percent = storage.warn_at_percent
        self.retention = parse_duration(spec.sink.retention)
        if self.canary is not None:
            self.canary = replace(self.canary, deadline=parse_duration(spec.sink.canary.deadline))
        detector = AnomalyDetector(spec.anomaly_rules or [], spec.trusted_admin_groups)
        with self._shared:
            self.detector = detector

    def _watch(self, events: list[dict[str, Any]]) -> None:
        """Anomaly rules and canary over stored events; a failure here must never fail a stored batch."""
        try:
            with self._shared:
                hits = [hit for event in events for hit in self.detector.observe(event)]
                for event in events:
                    self._check_canary(event)
        except Exception:  # the batch is already durable: a 5xx now would make the API server send it twice
            log.exception("anomaly rules or canary check failed on a stored batch")
            WATCH_ERRORS.inc()
            return
        if hits:
            for hit in hits:
                ANOMALIES.labels(hit.rule).inc()
                self.state.hits.appendleft(hit)
                log.warning("anomaly %s: %s", hit.rule, hit.message)
            self.on_hits(hits)

    def _check_canary(self, event: dict[str, Any]) -> None:
        if self.canary is None or not self.state.pending_canaries:
            return
        ref = _mapping(event.get("objectRef"))
        if (ref.get("resource"), ref.get("namespace"), ref.get("name")) != (
            "configmaps",
            self.canary.namespace,
            self.canary.name,
        ):
            return
        nonce = _mapping(_mapping(event.get("requestObject")).get("data")).get("nonce")
        pending = self.state.pending_canaries
        written = pending.get(nonce) if isinstance(nonce, str) else None
        if written is None:
            return
        self.state.canary_seen = self.clock()
        CANARY_AGE.set((self.state.canary_seen - written).total_seconds())
        for nonce in [n for n, at in pending.items() if at <= written]:  # it and every older one arrived or never will
            del pending[nonce]

    def canary_written(self, nonce: str) -> None:
        """A canary write was made; until it arrives, the oldest unanswered one is what the deadline measures."""
        with self._shared:
            pending = self.state.pending_canaries
            pending[nonce] = self.clock()
            while len(pending) > 1000:
                del pending[next(iter(pending))]

    def pipeline_broken(self) -> str | None:
        """Why the pipeline is broken (a canary overdue), or None."""
        with self._shared:
            oldest = next(iter(self.state.pending_canaries.values()), None)
        if self.canary is None or oldest is None:
            return None
        overdue = self.clock() - oldest
        if overdue <= self.canary.deadline:
            return None
        return (
            f"canary written {int(overdue.total_seconds())}s ago to configmap "
            f"{self.canary.namespace}/{self.canary.name} has not reached the sink (deadline "
            f"{int(self.canary.deadline.total_seconds())}s): the API server's audit webhook is not delivering"
        )

    def nearly_full(self) -> bool:
        return self.usage.percent >= self.warn_at_percent

    def refresh(self) -> None:
        self.usage = usage = self.store.usage()
        STORE_BYTES.set(usage.bytes_used)
        STORE_LIMIT.set(usage.bytes_limit)
        STORE_RECORDS.set(usage.records)
        STORAGE_NEARLY_FULL.set(1 if self.nearly_full() else 0)

    async def housekeeping(self) -> None:
        """Seal a segment that is old enough, apply retention, refresh the figures, verify the chain when due."""
        async with self._lock:
            await asyncio.to_thread(self.store.seal_if_due)
            if self.retention is not None:
                deleted = await asyncio.to_thread(self.store.apply_retention, self.retention, self.backed_up_before)
                if deleted:
                    log.info("retention deleted %d exported or backed-up segments: %s", len(deleted), deleted)
                    self.state.retention_deleted.extend(deleted)
            self.refresh()
        if self.verify_every is not None and (
            self.state.last_verified is None or self.clock() - self.state.last_verified >= self.verify_every
        ):
            await self.verify_sealed()

    def check_published_head(self, seq: int, head: str) -> None:
        """At start, before serving: the chain must still reach the (seq, head) the sink published last time;
        records cut off or rewritten while it was down leave ChainIntact False until an operator looks.

        Reads one segment, not the store: the full verification follows at the first housekeeping, off the path
        of ingestion (a start that verified a large store first would leave the API server's buffer filling)."""
        differs = published_head_differs(self.store.next_seq - 1, self.store.hash_at(seq), seq, head)
        if differs:
            self.state.startup_break = self.state.chain_break = f"{differs} (checked at start)"
            CHAIN_INTACT.set(0)
            log.error("audit chain does not reach the head published before the restart: %s", differs)

    async def verify_sealed(self) -> None:
        """Verify the sealed segments in place (X1369-9.6.4-4), without holding up ingestion."""
        report = await asyncio.to_thread(verify, self.store.root, self.store.public_key, True)
        self.state.last_verified = self.clock()
        self.state.chain_break = str(report.broken) if report.broken else self.state.startup_break
        CHAIN_INTACT.set(0 if self.state.chain_break else 1)
        if report.broken:
            log.error("audit chain verification failed: %s", report.broken)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


# ---------------------------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class Authentication:
    """clientCertificate: TLS has verified the caller's certificate against the client CA; bearerToken: compared
    in constant time."""

    mode: str
    token: str | None = None

    def allows(self, request: web.Request) -> bool:
        if self.mode == "clientCertificate":
            return bool(request.transport and request.transport.get_extra_info("peercert"))
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        expected = (self.token or "").encode()
        return (
            bool(self.token)
            and scheme.lower() == "bearer"
            and hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected)
        )


def make_app(sink: Sink, auth: Authentication) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        if not auth.allows(request):
            BATCHES.labels("unauthenticated").inc()
            return _json(401, _status(401, "Unauthorized", f"authenticate with a {auth.mode}"))
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            BATCHES.labels("invalid").inc()
            return _json(400, _status(400, "BadRequest", f"body exceeds {MAX_BODY_BYTES} bytes"))
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            BATCHES.labels("invalid").inc()
            return _json(400, _status(400, "BadRequest", f"body exceeds {MAX_BODY_BYTES} bytes"))
        status, answer = await sink.ingest(body)
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
        return _json(status, answer, headers)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        full = sink.usage.percent >= 100
        return web.Response(text="store full" if full else "ok", status=503 if full else 200)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.add_routes([web.post("/audit", receive), web.get("/healthz", healthz), web.get("/readyz", readyz)])
    return app


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


async def serve(
    sink: Sink,
    auth: Authentication,
    *,
    host: str,
    port: int,
    tls: ReloadingTLS,
    housekeeping_seconds: float = 10.0,
    background: list[Callable[[], Any]] | None = None,
    stop: asyncio.Event | None = None,
    bounds: Bounds = SINK_BOUNDS,
) -> None:
    """Serve until `stop` is set, within `bounds` (deadlines and connection caps); every `housekeeping_seconds`
    seal what is due and run `background` tasks."""
    runner, _ = await bounded.start(make_app(sink, auth), "audit-sink", host, port, tls.context, bounds, MAX_BODY_BYTES)
    log.info("audit sink listening on https://%s:%d/audit (%s)", host, port, auth.mode)
    stop = stop or asyncio.Event()
    try:
        while not stop.is_set():
            try:
                await sink.housekeeping()
                tls.reload()  # a renewed serving certificate or client CA: new handshakes use it
            except Exception:  # a seal, retention or verification that fails must not stop ingestion
                log.exception("audit sink housekeeping failed; retried at the next tick")
            for task in background or ():
                try:
                    await asyncio.to_thread(task)
                except Exception:  # a failing status write or canary must not stop ingestion
                    log.exception("audit sink background task failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), housekeeping_seconds)
    finally:
        await runner.cleanup()
