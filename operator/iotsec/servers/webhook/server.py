"""The webhook's HTTPS server (aiohttp): /validate, /healthz, /readyz; certificates reload without a restart."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import Counter, Histogram

from iotsec.admission.context import Snapshot
from iotsec.pki.tls import ReloadingTLS
from iotsec.servers.bounded import WEBHOOK_BOUNDS, Bounds
from iotsec.servers.bounded import server as bounded
from iotsec.servers.webhook.review import MAX_BODY_BYTES, ReviewResult, review

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "iotsec_admission_requests_total",
    "Admission reviews by kind, operation and decision.",
    ["kind", "operation", "decision"],
)
DURATION = Histogram(
    "iotsec_admission_duration_seconds",
    "Time to answer one admission review.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
VIOLATIONS = Counter("iotsec_violations_total", "Violations found at admission, by control.", ["control"])
EXCEPTIONS_USED = Counter(
    "iotsec_exceptions_used_total", "Admission rules waived by an exception, by domain and rule.", ["domain", "rule"]
)


class SnapshotSource:
    """Where the policy context comes from; `current` is None until the first load."""

    current: Snapshot | None = None

    async def run(self) -> None:  # keeps the snapshot fresh; the static source has nothing to do
        return None

    async def holding(self, namespace: str) -> Snapshot | None:
        """A snapshot that holds `namespace`, if one arrives soon; the static source has only the one it has."""
        return self.current


@dataclass
class StaticSnapshot(SnapshotSource):
    snapshot: Snapshot

    @property
    def current(self) -> Snapshot | None:  # type: ignore[override]
        return self.snapshot


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
PROBE_METHODS = ("GET", "HEAD")


def make_handler(
    source: SnapshotSource,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    draining: Callable[[], bool] = lambda: False,
) -> Handler:
    """The webhook as one request handler for aiohttp's low-level server: POST /validate, GET or HEAD /healthz and
    /readyz, 405 (with Allow) for another method on those paths, 404 elsewhere, as aiohttp's router answers them.
    No Application, router or middleware chain on the way: they cost about as much as a third of a decision."""
    routes = _routes(source, now, draining)
    handlers = {(path, method): handler for path, (methods, handler) in routes.items() for method in methods}

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        handler = handlers.get((request.path, request.method))
        if handler is not None:
            return await handler(request)
        if request.path in routes:
            raise web.HTTPMethodNotAllowed(request.method, routes[request.path][0])
        raise web.HTTPNotFound()

    return dispatch


def make_app(
    source: SnapshotSource,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    draining: Callable[[], bool] = lambda: False,
) -> web.Application:
    """The same handlers as an aiohttp Application (for aiohttp's test client); `serve` runs `make_handler`'s."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    for path, (methods, handler) in _routes(source, now, draining).items():
        app.router.add_route(methods[0], path, handler)
        if "HEAD" in methods:
            app.router.add_route("HEAD", path, handler)
    return app


def _routes(
    source: SnapshotSource, now: Callable[[], datetime], draining: Callable[[], bool]
) -> dict[str, tuple[tuple[str, ...], Handler]]:
    """Path: (methods, handler). `draining`: once true (SIGTERM), /readyz fails so the Service stops sending new
    connections, and each answer closes its connection, so no client's next request lands on a keep-alive
    connection the server is closing."""

    async def validate(request: web.BaseRequest) -> web.Response:
        started = time.perf_counter()
        body = await _read_limited(request)
        outcome = review(body, source.current, now) if body is not None else _too_large()
        if outcome.unknown_namespace and body is not None:
            # The API server admits requests only in namespaces that exist: one the snapshot lacks was created
            # a moment ago and its watch event is on its way. Judge it by its domain, not as a stranger.
            fresher = await source.holding(outcome.unknown_namespace)
            if fresher is not None and outcome.unknown_namespace in fresher.namespaces:
                outcome = review(body, fresher, now)
        _record(outcome, time.perf_counter() - started)
        answer = web.Response(body=orjson.dumps(outcome.body), status=outcome.status, content_type="application/json")
        if draining():
            answer.force_close()
        return answer

    async def healthz(_: web.BaseRequest) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.BaseRequest) -> web.Response:
        if draining():
            return web.Response(text="draining: shutting down", status=503)
        ready = source.current is not None
        return web.Response(text="ok" if ready else "no cluster state yet", status=200 if ready else 503)

    return {
        "/validate": (("POST",), validate),
        "/healthz": (PROBE_METHODS, healthz),
        "/readyz": (PROBE_METHODS, readyz),
    }


async def _read_limited(request: web.BaseRequest) -> bytes | None:
    """The whole body (content.read(n) would return only what has arrived so far), or None when too large."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return None
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return None


async def _drain(draining: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    if draining.is_set():
        return
    log.info("SIGTERM: draining for %.0f s (not ready; each answer closes its connection), then stopping", seconds)
    draining.set()
    await asyncio.sleep(seconds)
    stop.set()


def _too_large() -> ReviewResult:
    return ReviewResult(400, {"error": f"body exceeds the {MAX_BODY_BYTES}-byte limit"})


class _Children:
    """A labelled metric's children by label values, kept so that a request costs a dict lookup instead of
    prometheus_client's labels() (argument checks, string conversion, a lock). Bounded: past MAX_KEPT label sets
    (request.kind is the client's) a child is looked up each time, as before."""

    MAX_KEPT = 1024

    def __init__(self, metric: Counter) -> None:
        self.metric = metric
        self.kept: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self.kept.get(values)
        if child is None:
            child = self.metric.labels(*values)
            if len(self.kept) < self.MAX_KEPT:
                self.kept[values] = child
        return child


_REQUESTS_BY = _Children(REQUESTS)


def _record(outcome: ReviewResult, seconds: float) -> None:
    DURATION.observe(seconds)
    _REQUESTS_BY(outcome.kind, outcome.operation, outcome.verdict).inc()
    decision = outcome.decision
    if decision is None or outcome.dry_run:
        return  # dry-run requests have no side effects, not even in the records
    for violation in decision.violations:
        VIOLATIONS.labels(violation.control).inc()
    for use in decision.exceptions_used:
        EXCEPTIONS_USED.labels(use.domain, use.rule).inc()
        log.warning("exception used: %s", use.line())


async def serve(
    source: SnapshotSource,
    host: str,
    port: int,
    tls: ReloadingTLS,
    reload_seconds: float = 10.0,
    stop: asyncio.Event | None = None,
    bounds: Bounds = WEBHOOK_BOUNDS,
    drain_seconds: float | None = None,
) -> None:
    """Serve until `stop` is set (or forever), within `bounds` (deadlines and connection caps). With
    `drain_seconds`, SIGTERM drains first: not ready, connections closed after each answer, for that long (the
    endpoint leaves the Service meanwhile), then the listener closes and answers in flight finish."""
    gc.collect()
    gc.freeze()  # start-up objects (models, schemas, clients) are permanent: keep collections off them
    draining = asyncio.Event()
    stop = stop or asyncio.Event()
    handler = make_handler(source, draining=draining.is_set)
    runner, _ = await bounded.start_handler(handler, "webhook", host, port, tls.context, bounds, MAX_BODY_BYTES)
    log.info("webhook listening on https://%s:%d/validate", host, port)
    tasks = [asyncio.create_task(source.run()), asyncio.create_task(tls.watch(reload_seconds))]
    if drain_seconds is not None:

        def on_sigterm() -> None:
            tasks.append(asyncio.create_task(_drain(draining, stop, drain_seconds)))

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await runner.cleanup()
