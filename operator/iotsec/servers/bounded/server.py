"""The mechanism of bounded HTTPS serving (see iotsec.servers.bounded): guarded connections under an aiohttp runner."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import ssl
import time
from asyncio import sslproto
from collections import Counter as Tally
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_runner import BaseSite
from prometheus_client import Counter, Gauge

from iotsec.servers.bounded import Bounds

log = logging.getLogger(__name__)
RunnerT = TypeVar("RunnerT", bound=web.BaseRunner)

REJECTED = Counter(
    "iotsec_http_connections_rejected_total",
    "HTTPS connections refused or cut by the server, by reason (capacity, per_client, handshake_timeout, "
    "handshake_failed, header_timeout, body_timeout, idle_timeout).",
    ["server", "reason"],
)
OPEN = Gauge("iotsec_http_connections_open", "HTTPS connections open (accepted and not yet closed).", ["server"])
BODY_BYTES = Gauge(
    "iotsec_http_body_bytes_reserved", "Bytes of the body budget held by requests being read or handled.", ["server"]
)

GUARD_KEY = "iotsec.servers.bounded.guard"  # the connection's guard, as transport extra info for the request middleware
LOG_EVERY_SECONDS = 10.0
TLS_READ_BYTES = 32 * 1024  # one socket read and one decrypted read; a TLS record is at most 16 KiB
# What a connection whose body is not being read may hold: decrypted in aiohttp (twice HTTP_READ_BYTES) and still
# encrypted in the TLS layer; past that the client waits on TCP flow control, in kernel buffers.
HTTP_READ_BYTES = 16 * 1024
TLS_PENDING_BYTES = 32 * 1024
# Bodies up to this size skip the body budget: no more than a connection's buffers hold anyway, and the API
# server's usual admission reviews are this small, so slow large bodies cannot hold them up.
UNBUDGETED_BODY_BYTES = 64 * 1024
TRIM_AFTER_SECONDS = 2.0  # quiet time after a burst of closed connections before memory is handed back
TRIM_WHEN_CLOSED = 64  # connections closed since the last trim that make one worthwhile


class _Throttled:
    """One log line per reason, and under a flood one line per reason every LOG_EVERY_SECONDS with the count."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._held: Tally[str] = Tally()

    def info(self, reason: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -LOG_EVERY_SECONDS) < LOG_EVERY_SECONDS:
            self._held[reason] += 1
            return
        self._last[reason] = now
        held = self._held.pop(reason, 0)
        log.info(message + (f" (and {held} more like it since the last such line)" if held else ""), *args)


class _Memory:
    """Hands freed heap back to the system after a burst: glibc keeps freed memory for reuse, so without a trim
    the process stays at its peak resident size after the connections are gone (measured with 1,500 slow
    clients: 116 MiB at the peak and still 116 MiB after, against 75 MiB after with the trim)."""

    def __init__(self) -> None:
        self._closed_since_trim = 0
        self._pending: asyncio.TimerHandle | None = None
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
        self._malloc_trim = getattr(libc, "malloc_trim", None)

    def closed(self, loop: asyncio.AbstractEventLoop) -> None:
        self._closed_since_trim += 1
        if self._closed_since_trim < TRIM_WHEN_CLOSED:
            return
        if self._pending is not None:
            self._pending.cancel()  # still closing: wait for the burst to end
        self._pending = loop.call_later(TRIM_AFTER_SECONDS, self.trim)

    def trim(self) -> None:
        self._pending = None
        self._closed_since_trim = 0
        gc.collect()  # connection objects in reference cycles hold their buffers until collected
        if self._malloc_trim is not None:
            self._malloc_trim(0)


class Listener:
    """The shared state of one server: bounds, counts per source address, the TLS context, the HTTP handler."""

    def __init__(
        self,
        name: str,
        bounds: Bounds,
        tls: ssl.SSLContext,
        make_handler: Callable[[], asyncio.Protocol],
        max_body_bytes: int,
    ) -> None:
        self.name, self.bounds, self.tls, self.make_handler = name, bounds, tls, make_handler
        self.bodies = _BodyBudget(name, bounds.body_budget_bytes, max_body_bytes)
        self.per_client: Tally[str] = Tally()
        self.guards: set[_Guard] = set()
        self.log = _Throttled()
        self.memory = _Memory()
        # One receive buffer for all connections of this listener (one event loop): the TLS layer copies each
        # read out of it at once. asyncio's default is a zero-filled 256 KiB buffer per connection.
        self.read_buffer = memoryview(bytearray(TLS_READ_BYTES))
        shortest = min(bounds.handshake_seconds, bounds.header_seconds, bounds.body_seconds, bounds.idle_seconds)
        self.step = max(shortest, 0.1)  # how often a guard's timer wakes at most (see _Guard.arm)
        OPEN.labels(name).set(0)

    def reject(self, reason: str, peer: str, detail: str = "") -> None:
        REJECTED.labels(self.name, reason).inc()
        self.log.info(reason, "%s: connection from %s %s%s", self.name, peer, _REASON_TEXT[reason], detail)

    def admit(self, guard: _Guard) -> bool:
        if len(self.guards) >= self.bounds.max_connections:
            self.reject("capacity", guard.peer, f" ({self.bounds.max_connections} open)")
            return False
        if self.per_client[guard.peer] >= self.bounds.max_per_client:
            self.reject("per_client", guard.peer, f" ({self.bounds.max_per_client} open from it)")
            return False
        self.guards.add(guard)
        self.per_client[guard.peer] += 1
        OPEN.labels(self.name).inc()
        return True

    def release(self, guard: _Guard) -> None:
        self.guards.discard(guard)
        self.per_client[guard.peer] -= 1
        if self.per_client[guard.peer] <= 0:
            del self.per_client[guard.peer]
        OPEN.labels(self.name).dec()
        self.memory.closed(asyncio.get_running_loop())

    def close_all(self) -> None:
        for guard in list(self.guards):
            guard.cut = True  # the server stops: nothing to report about the client
            guard.abort()


class _BodyBudget:
    """Bytes of request bodies read at once, over all connections: a request waits for its declared size (or the
    largest body allowed, when it declares none) to fit. Many slow clients each sending part of a large body
    cannot make the server hold all those parts; the waiting ones stay at TCP flow control."""

    def __init__(self, name: str, limit: int, max_body_bytes: int) -> None:
        self.limit, self.max_body_bytes = limit, max_body_bytes
        self.used = 0
        self._freed = asyncio.Condition()
        self._gauge = BODY_BYTES.labels(name)
        self._gauge.set(0)

    def size_of(self, request: web.BaseRequest) -> int:
        declared = request.content_length
        if declared is None:
            return self.max_body_bytes if request.body_exists else 0
        if declared <= UNBUDGETED_BODY_BYTES or declared > self.max_body_bytes:  # small, or refused unread
            return 0
        return declared

    async def take(self, size: int) -> int:
        async with self._freed:
            await self._freed.wait_for(lambda: self.used == 0 or self.used + size <= self.limit)
            self.used += size
            self._gauge.set(self.used)
        return size

    async def give(self, size: int) -> None:
        async with self._freed:
            self.used -= size
            self._gauge.set(self.used)
            self._freed.notify_all()


_REASON_TEXT = {
    "capacity": "refused: connection limit reached",
    "per_client": "refused: per-client connection limit reached",
    "handshake_timeout": "cut: TLS handshake not finished in time",
    "handshake_failed": "closed: TLS handshake failed",
    "header_timeout": "cut: request headers not received in time",
    "body_timeout": "cut: request body not received in time",
    "idle_timeout": "closed: idle keep-alive",
}


class _Guard(asyncio.Protocol):
    """One connection: admitted or refused at accept, its TLS layer made at its first bytes, its deadlines."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.peer = "?"
        self.transport: asyncio.Transport | None = None
        self.tls: _TLSLayer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop that accepted it (set in connection_made)
        self.deadline: asyncio.TimerHandle | None = None
        self.wakes = 0.0  # when the deadline timer fires (loop time): asking the handle costs a call per request
        self.reason: str | None = None  # what the armed deadline is for
        self.due = 0.0  # when it is due (loop time)
        self.cut = False
        self.body_pending = self.in_request = False
        self.admitted = self.handshaken = False
        self.handshake_error: BaseException | None = None

    # -- raw TCP, until the first bytes
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.loop = asyncio.get_running_loop()  # once here, not per deadline: each lookup is a getpid() syscall
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "?"
        if not self.listener.admit(self):
            transport.abort()
            return
        self.admitted = True
        self.arm("handshake_timeout", self.listener.bounds.handshake_seconds)

    def data_received(self, data: bytes) -> None:
        """The client's first bytes (its ClientHello): from here on the TLS layer reads the socket."""
        assert self.transport is not None
        self.tls = _TLSLayer(self, _Handshaking(self))
        self.transport.set_protocol(self.tls)
        self.tls.connection_made(self.transport)
        view = memoryview(data)
        while view and self.tls is not None and not self.transport.is_closing():
            buffer = self.tls.get_buffer(len(view))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            self.tls.buffer_updated(size)
            view = view[size:]

    def eof_received(self) -> bool | None:
        return None  # closed before saying anything: asyncio closes the transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost()

    # -- called by the TLS layer, the handler and the middleware
    def lost(self) -> None:
        if self.tls is not None and not self.handshaken and not self.cut:
            self.cut = True  # went away mid-handshake, or sent what is not a TLS handshake we accept
            error = self.handshake_error
            self.listener.reject(
                "handshake_failed", self.peer, f": {_one_line(error) if error else 'closed by the client'}"
            )
        self.stop_timer()
        self.transport = self.tls = None
        if self.admitted:
            self.admitted = False
            self.listener.release(self)

    def ready(self) -> None:
        self.handshaken = True
        self.arm("header_timeout", self.listener.bounds.header_seconds)

    def bytes_arrived(self) -> None:
        if self.reason == "idle_timeout":  # a new request begins on a kept-alive connection
            self.arm("header_timeout", self.listener.bounds.header_seconds)

    def request_started(self) -> None:
        self.in_request = self.body_pending = True
        self.arm("body_timeout", self.listener.bounds.body_seconds)

    def body_received(self) -> None:
        self.body_pending = False
        if self.in_request:
            self.disarm()  # the server's own work is not the client's to hurry
        else:
            self.arm("idle_timeout", self.listener.bounds.idle_seconds)

    def request_finished(self) -> None:
        self.in_request = False
        if not self.body_pending:
            self.arm("idle_timeout", self.listener.bounds.idle_seconds)

    # -- deadlines
    # A request re-arms the deadline three times (body, none, idle, then headers again). Rather than a timer each
    # time, one timer per connection wakes at most every `step` seconds (the shortest deadline) and then at the
    # deadline itself: re-arming only notes the reason and when it is due.
    def arm(self, reason: str, seconds: float) -> None:
        loop = self.loop or asyncio.get_running_loop()
        now = loop.time()
        self.reason, self.due = reason, now + seconds
        if self.deadline is None:
            self._wake_at(loop, min(self.due, now + self.listener.step))
        elif self.wakes > self.due:  # only the first deadline after the handshake is this short
            self.deadline.cancel()
            self._wake_at(loop, self.due)

    def _wake_at(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self.wakes = when
        self.deadline = loop.call_at(when, self.expire)

    def disarm(self) -> None:
        self.reason = None  # the timer, if any, wakes and finds nothing due

    def stop_timer(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.deadline = self.reason = None

    def expire(self) -> None:
        self.deadline = None
        reason = self.reason
        if self.transport is None or reason is None:
            return
        loop = self.loop or asyncio.get_running_loop()
        now = loop.time()
        if now < self.due:  # re-armed since the timer was set: wake again, at most `step` from now
            self._wake_at(loop, min(self.due, now + self.listener.step))
            return
        self.cut = True
        self.listener.reject(reason, self.peer)
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _TLSLayer(sslproto.SSLProtocol):
    """asyncio's TLS protocol, reading into the listener's shared buffer and reporting to the guard."""

    max_size = TLS_READ_BYTES

    def __init__(self, guard: _Guard, app: asyncio.Protocol) -> None:
        self.guard = guard
        waiter = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(self._handshake_done)
        super().__init__(
            asyncio.get_running_loop(),
            app,
            guard.listener.tls,
            waiter,
            server_side=True,
            ssl_handshake_timeout=guard.listener.bounds.handshake_seconds * 2,  # ours comes first; this one is silent
            ssl_shutdown_timeout=guard.listener.bounds.handshake_seconds,  # a peer that never answers close_notify
        )
        # asyncio's internals (3.11-3.13): the buffer is only used inside buffer_updated, which copies it out at once
        self._ssl_buffer_view = guard.listener.read_buffer
        self._ssl_buffer = self._ssl_buffer_view.obj
        self._extra[GUARD_KEY] = guard

    def _handshake_done(self, waiter: asyncio.Future[None]) -> None:
        if (
            not waiter.cancelled()
        ):  # retrieved, so never "exception was never retrieved"; reported when the connection ends
            self.guard.handshake_error = waiter.exception()

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        self.guard.bytes_arrived()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.guard.lost()


class _Handshaking(asyncio.Protocol):
    """Stands in for the HTTP handler until the handshake ends: no handler exists for a half-open connection."""

    def __init__(self, guard: _Guard) -> None:
        self.guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.set_read_buffer_limits(high=TLS_PENDING_BYTES)
        handler = self.guard.listener.make_handler()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        self.guard.ready()


@web.middleware
async def request_bounds(request: web.BaseRequest, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]):
    """Times the body of a request, keeps bodies within the budget, and turns a client that goes away mid-request
    into one log line."""
    transport = request.transport
    guard = transport.get_extra_info(GUARD_KEY) if transport else None
    if guard is None:  # not served through a BoundedSite (tests with aiohttp's client)
        return await handler(request)
    guard.request_started()
    request.content.on_eof(guard.body_received)
    bodies = guard.listener.bodies
    reserved = bodies.size_of(request)
    if reserved:  # a small body (the usual admission review) takes nothing, so it neither waits nor locks
        try:
            async with asyncio.timeout(guard.listener.bounds.body_seconds):  # the guard cuts the connection by then
                reserved = await bodies.take(reserved)
        except TimeoutError:
            guard.request_finished()
            return web.Response(status=503, text="busy")
    try:
        return await handler(request)
    except (ConnectionError, HttpProcessingError, ssl.SSLError) as exc:
        # aiohttp keeps this exception on the request's payload; its traceback holds the frames of the body read,
        # and so the part of the body read so far, in a reference cycle only a full collection would free
        exc.__traceback__ = None
        if not guard.cut:
            guard.listener.log.info(
                "client_gone",
                "%s: %s went away during %s %s: %s",
                guard.listener.name,
                guard.peer,
                request.method,
                request.path,
                _one_line(exc),
            )
        return web.Response(status=400, text="connection lost")  # nobody reads it; aiohttp drops it quietly
    finally:
        if reserved:
            await bodies.give(reserved)
        guard.request_finished()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]  # a client's bytes may be in it: one line, and not too much of them
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _ClientErrorsInOneLine:
    """aiohttp's server logger, with a client's malformed or broken request as one line instead of a traceback."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._log = logging.getLogger("aiohttp.server")

    def exception(self, message: str, *args: Any, exc_info: Any = True, **kw: Any) -> None:
        if isinstance(exc_info, ConnectionError | HttpProcessingError | ssl.SSLError):
            self._log.info("%s: " + message + ": %s", self.name, *args, _one_line(exc_info))
        else:
            self._log.exception(message, *args, exc_info=exc_info, **kw)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._log, attribute)


def runner_options(name: str, bounds: Bounds) -> dict[str, Any]:
    """AppRunner keyword arguments that go with a BoundedSite."""
    return {
        "access_log": None,
        "logger": _ClientErrorsInOneLine(name),
        "keepalive_timeout": bounds.header_seconds
        + bounds.idle_seconds,  # a backstop: the guard's deadlines come first
        "lingering_time": min(10.0, bounds.body_seconds),
        "read_bufsize": HTTP_READ_BYTES,
    }


class BoundedSite(BaseSite):
    """An aiohttp site serving HTTPS through guarded connections (see the module's docstring)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        name: str,
        host: str,
        port: int,
        tls: ssl.SSLContext,
        bounds: Bounds,
        max_body_bytes: int,
        backlog: int = 512,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port = host, port
        server = runner.server
        assert server is not None
        self.listener = Listener(name, bounds, tls, server, max_body_bytes)

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Guard(self.listener), self._host, self._port, backlog=self._backlog, reuse_address=True
        )

    async def stop(self) -> None:
        await super().stop()
        self.listener.close_all()


async def start(
    app: web.Application, name: str, host: str, port: int, tls: ssl.SSLContext, bounds: Bounds, max_body_bytes: int
) -> tuple[web.AppRunner, BoundedSite]:
    """Run `app` (which takes bodies up to `max_body_bytes`) on a BoundedSite; the caller ends it with
    `await runner.cleanup()`."""
    app.middlewares.append(request_bounds)
    return await _serve(
        web.AppRunner(app, **runner_options(name, bounds)), name, host, port, tls, bounds, max_body_bytes
    )


async def start_handler(
    handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
    name: str,
    host: str,
    port: int,
    tls: ssl.SSLContext,
    bounds: Bounds,
    max_body_bytes: int,
) -> tuple[web.ServerRunner, BoundedSite]:
    """Like `start`, for one request handler on aiohttp's low-level server (no Application: no router, no
    middleware chain); the bounds wrap the handler directly and requests take bodies up to `max_body_bytes`."""
    loop = asyncio.get_running_loop()

    async def bounded(request: web.BaseRequest) -> web.StreamResponse:
        return await request_bounds(request, handler)

    def request_factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        return web.BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=max_body_bytes)

    server = web.Server(bounded, request_factory=request_factory, **runner_options(name, bounds))
    return await _serve(web.ServerRunner(server), name, host, port, tls, bounds, max_body_bytes)


async def _serve(
    runner: RunnerT, name: str, host: str, port: int, tls: ssl.SSLContext, bounds: Bounds, max_body_bytes: int
) -> tuple[RunnerT, BoundedSite]:
    await runner.setup()
    site = BoundedSite(runner, name, host, port, tls, bounds, max_body_bytes)
    await site.start()
    return runner, site
