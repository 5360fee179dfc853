"""Both HTTPS servers hold against slow and idle clients (issue 12): the webhook and the audit sink run as real
processes (`iotsec webhook`, `iotsec audit serve`) on 127.0.0.1 with short deadlines; 1,500 slow connections
(silent, half a handshake, half the headers, half the body) from several loopback addresses are opened against
each. While they are open the server answers a real request promptly and stays under its memory bound; each slow
one is cut after its deadline, counted by reason, and the memory comes back down afterwards.

`benchmarks/slow_clients.py` runs the same scenario and prints the figures.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import re
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import REGISTRY

from iotsec.audittrail.anomaly import AnomalyDetector
from iotsec.audittrail.store import AuditStore
from iotsec.pki import certs
from iotsec.pki.tls import ReloadingTLS
from iotsec.servers.auditsink.server import Authentication, Sink
from iotsec.servers.auditsink.server import serve as sink_serve
from iotsec.servers.bounded import Bounds
from iotsec.servers.webhook.server import StaticSnapshot
from iotsec.servers.webhook.server import serve as webhook_serve
from tests.conftest import EXAMPLES
from tests.webhook.test_webhook import SNAPSHOT

MiB = 2**20
WEBHOOK_RSS_LIMIT = 256 * MiB  # the chart's memory limit of the webhook container
SINK_RSS_LIMIT = 192 * MiB  # the bound this test sets for the sink (it has no chart limit of its own)
RETURNED_WITHIN = 24 * MiB  # after the slow clients are gone, RSS is at most this much above where it started
SETTLED_WITHIN = 8 * MiB  # what the figures wait for (at most 15 s), to report where RSS settles
PARTIAL_BODY_DECLARED = 4 * MiB  # what a slow body announces (both servers take it)
PARTIAL_BODY_SENT = MiB  # and sends before stalling: a slow body is also a big one
KINDS = ("silent", "partial_handshake", "partial_headers", "partial_body")
SOURCES = [f"127.0.0.{n}" for n in range(2, 10)]  # spread over addresses, as from many clients
TOKEN = "bounded-test-token"
TEST_BOUNDS = Bounds(
    handshake_seconds=8, header_seconds=8, body_seconds=8, idle_seconds=8, max_connections=1700, max_per_client=200
)
EXPECTED_REASON = {
    "silent": "handshake_timeout",
    "partial_handshake": "handshake_timeout",
    "partial_headers": "header_timeout",
    "partial_body": "body_timeout",
}


def free_ports(count: int) -> list[int]:
    """Distinct free ports (asked for while the others are still held, so none comes back twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for held in sockets:
            held.bind(("127.0.0.1", 0))
        return [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def bound_flags(bounds: Bounds) -> list[str]:
    return [
        f"--handshake-timeout={bounds.handshake_seconds}",
        f"--header-timeout={bounds.header_seconds}",
        f"--body-timeout={bounds.body_seconds}",
        f"--idle-timeout={bounds.idle_seconds}",
        f"--max-connections={bounds.max_connections}",
        f"--max-connections-per-client={bounds.max_per_client}",
        f"--body-budget-bytes={bounds.body_budget_bytes}",
    ]


AUDIT_POLICY = """
apiVersion: iotsec.io/v1alpha1
kind: AuditPolicy
metadata: {name: bounded-test}
spec: {}
"""


class ServerProcess:
    """`iotsec webhook` or `iotsec audit serve` as a child process, its RSS, metrics and a real request."""

    def __init__(self, kind: str, folder: Path, bounds: Bounds = TEST_BOUNDS) -> None:
        self.kind, self.folder, self.bounds = kind, folder, bounds
        self.port, self.metrics_port = free_ports(2)
        now = datetime.now(UTC)
        ca = certs.new_ca(f"{kind}-ca", now)
        serving = certs.new_serving_cert(ca, ["localhost"], ["127.0.0.1"], now)
        for name, text in {"ca.crt": ca.cert_pem, "tls.crt": serving.cert_pem, "tls.key": serving.key_pem}.items():
            (folder / name).write_text(text)
        self.path = "/validate" if kind == "webhook" else "/audit"
        self.log_file = folder / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        common = ["--host", "127.0.0.1", "--port", str(self.port), "--metrics-port", str(self.metrics_port)]
        if self.kind == "webhook":
            return [
                "webhook", "--context", str(EXAMPLES / "platform"),
                "--tls-cert-file", str(self.folder / "tls.crt"), "--tls-key-file", str(self.folder / "tls.key"),
                "--drain-seconds", "0", *common, *bound_flags(self.bounds),
            ]  # fmt: skip
        (self.folder / "policy.yaml").write_text(AUDIT_POLICY)
        (self.folder / "token").write_text(TOKEN)
        return [
            "audit", "serve", "--spec", str(self.folder / "policy.yaml"), "--store", str(self.folder / "store"),
            "--signing-key", str(self.folder / "signing.key"), "--token-file", str(self.folder / "token"),
            "--tls-cert", str(self.folder / "tls.crt"), "--tls-key", str(self.folder / "tls.key"),
            *common, *bound_flags(self.bounds),
        ]  # fmt: skip

    def start(self, tries: int = 3) -> None:
        raise_fd_limit(3 * (self.bounds.max_connections + 200))  # the child inherits it; the clients use it too
        for _ in range(tries):  # another process may take a free port before the server binds it
            if self._started():
                return
            self.port, self.metrics_port = free_ports(2)
        raise AssertionError(f"{self.kind} did not start:\n{self.log()}")

    def _started(self) -> bool:
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "iotsec", *self.command()], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                self.get("/healthz")
                return True
            except OSError:
                time.sleep(0.1)
        self.stop()
        assert "Address already in use" in self.log(), f"{self.kind} did not start:\n{self.log()}"
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def rss(self) -> int:
        return self._status("VmRSS")

    def peak_rss(self) -> int:
        return self._status("VmHWM")

    def _status(self, name: str) -> int:
        assert self.process is not None
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(rf"^{name}:\s+(\d+) kB", text, re.M)
        assert match, text
        return int(match.group(1)) * 1024

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.folder / "ca.crt"))

    def connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("localhost", self.port, context=self.context(), timeout=10)

    def get(self, path: str) -> tuple[int, bytes]:
        connection = self.connection()
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def real_request(self) -> tuple[int, bytes]:
        """What the server is there for: an AdmissionReview (webhook) or the health probe (sink)."""
        if self.kind != "webhook":
            return self.get("/healthz")
        connection = self.connection()
        try:
            connection.request("POST", "/validate", body=json.dumps(admission_review()), headers=JSON)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        found: dict[str, float] = {}
        for line in text.splitlines():
            match = re.match(r'iotsec_http_connections_rejected_total\{reason="(\w+)",server="[\w-]+"\} (\S+)', line)
            if match:
                found[match.group(1)] = float(match.group(2))
            match = re.match(r'iotsec_http_connections_open\{server="[\w-]+"\} (\S+)', line)
            if match:
                found["open"] = float(match.group(1))
        return found

    def slow_headers(self) -> bytes:
        auth = f"Authorization: Bearer {TOKEN}\r\n" if self.kind != "webhook" else ""
        return f"POST {self.path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n".encode()

    def slow_body_start(self, sent: int = 1000) -> bytes:
        """Headers announcing a body of PARTIAL_BODY_DECLARED bytes and the first `sent` of them."""
        headers = self.slow_headers() + f"Content-Length: {PARTIAL_BODY_DECLARED}\r\n\r\n".encode()
        return headers + b'{"items": [' + b" " * (sent - 11)


JSON = {"Content-Type": "application/json"}


def admission_review() -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "registry.example.com/app@sha256:" + "0" * 64}]},
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "bounded-probe",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": pod,
            "dryRun": False,
        },
    }


# ---------------------------------------------------------------------------------------------- slow clients


@dataclass
class SlowClient:
    kind: str
    writer: asyncio.StreamWriter
    reader: asyncio.StreamReader
    last_sent: float
    cut_after: float | None = None  # seconds from its last byte sent to the server closing it
    watcher: asyncio.Task[None] | None = None

    async def watch(self) -> None:
        """Read until the server closes the connection, and note when it did."""
        try:
            while await self.reader.read(4096):
                pass
        except (OSError, ssl.SSLError):
            pass
        self.cut_after = time.monotonic() - self.last_sent
        self.writer.close()


@dataclass
class SlowCrowd:
    clients: list[SlowClient] = field(default_factory=list)
    failed_to_open: int = 0

    def cut_after(self, kind: str) -> list[float]:
        return [c.cut_after for c in self.clients if c.kind == kind and c.cut_after is not None]

    def still_open(self) -> int:
        return sum(1 for c in self.clients if c.cut_after is None)


async def open_slow(server: ServerProcess, kind: str, source: str) -> SlowClient:
    local = (source, 0)
    if kind in ("silent", "partial_handshake"):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=local)
        if kind == "partial_handshake":
            writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's first bytes
            await writer.drain()
    else:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=server.context(), server_hostname="localhost", local_addr=local
        )
        if kind == "partial_headers":
            writer.write(server.slow_headers())
            await writer.drain()
        else:  # not drained: a server that stops reading leaves the rest in this side's buffers
            writer.write(server.slow_body_start(PARTIAL_BODY_SENT))
    return SlowClient(kind, writer, reader, time.monotonic())


async def open_crowd(server: ServerProcess, count: int, parallel: int = 64) -> SlowCrowd:
    crowd = SlowCrowd()
    gate = asyncio.Semaphore(parallel)

    async def one(index: int) -> None:
        async with gate:
            try:
                client = await asyncio.wait_for(
                    open_slow(server, KINDS[index % len(KINDS)], SOURCES[index % len(SOURCES)]), 15
                )
            except (OSError, TimeoutError, ssl.SSLError):
                crowd.failed_to_open += 1
                return
            client.watcher = asyncio.create_task(client.watch())  # from now: a late look would see a late cut
            crowd.clients.append(client)

    await asyncio.gather(*(one(i) for i in range(count)))
    return crowd


async def await_cuts(crowd: SlowCrowd, within: float) -> None:
    """Wait (at most `within` seconds) for the server to close each client."""
    waits = [client.watcher for client in crowd.clients if client.watcher is not None]
    await asyncio.wait(waits, timeout=within)
    for task in waits:
        task.cancel()
    for client in crowd.clients:
        if client.cut_after is None:
            client.writer.close()


@dataclass
class Figures:
    rss_before: int
    rss_open: int
    rss_peak: int
    rss_after: int
    probe_seconds: float
    probe_status: int
    opened: int
    failed_to_open: int
    rejected: dict[str, float]
    crowd: SlowCrowd

    def lines(self, name: str) -> list[str]:
        cuts = {kind: self.crowd.cut_after(kind) for kind in KINDS}
        return [
            f"{name}: {self.opened} slow connections open ({self.failed_to_open} failed to open)",
            f"  RSS before {self.rss_before / MiB:.0f} MiB, with them open {self.rss_open / MiB:.0f} MiB, "
            f"peak {self.rss_peak / MiB:.0f} MiB, after {self.rss_after / MiB:.0f} MiB",
            f"  real request while they were open: HTTP {self.probe_status} in {self.probe_seconds * 1000:.0f} ms",
            f"  rejected/cut by reason: {dict(sorted(self.rejected.items()))}",
            *(
                f"  {kind}: {len(times)} cut after {min(times):.1f}-{max(times):.1f} s"
                for kind, times in cuts.items()
                if times
            ),
        ]


def run_scenario(server: ServerProcess, count: int = 1500) -> Figures:
    """Open `count` slow clients, probe while they are open, wait for the cuts and for the memory to return."""
    server.real_request()  # warm: the first request builds what every request reuses
    rss_before = server.rss()

    async def scenario() -> Figures:
        crowd = await open_crowd(server, count)
        rss_open = server.rss()
        started = time.monotonic()
        status, _ = await asyncio.to_thread(server.real_request)
        probe_seconds = time.monotonic() - started
        await await_cuts(crowd, within=max(server.bounds.handshake_seconds, server.bounds.body_seconds) + 20)
        return Figures(rss_before, rss_open, 0, 0, probe_seconds, status, len(crowd.clients), 0, {}, crowd)

    figures = asyncio.run(scenario())
    figures.failed_to_open = figures.crowd.failed_to_open
    figures.rss_peak = server.peak_rss()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and server.rss() > rss_before + SETTLED_WITHIN:
        time.sleep(0.2)
    figures.rss_after = server.rss()
    figures.rejected = server.metrics()
    return figures


# ---------------------------------------------------------------------------------------------- the tests


@pytest.fixture
def webhook_process(tmp_path) -> Iterator[ServerProcess]:
    server = ServerProcess("webhook", tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sink_process(tmp_path) -> Iterator[ServerProcess]:
    server = ServerProcess("sink", tmp_path)
    server.start()
    yield server
    server.stop()


def check_scenario(server: ServerProcess, limit: int) -> None:
    figures = run_scenario(server)
    report = "\n".join(figures.lines(server.kind))
    assert figures.opened == 1500, report
    assert figures.failed_to_open == 0, report
    assert figures.probe_status == 200, report
    assert figures.probe_seconds < 2.0, report
    assert figures.crowd.still_open() == 0, report
    deadline = {
        "silent": server.bounds.handshake_seconds,
        "partial_handshake": server.bounds.handshake_seconds,
        "partial_headers": server.bounds.header_seconds,
        "partial_body": server.bounds.body_seconds,
    }
    for kind in KINDS:
        times = figures.crowd.cut_after(kind)
        assert len(times) == 375, report
        # not before its deadline; this side notes its last send late (its loop is busy with 1,500 connections, by
        # seconds on a loaded CI machine), so what it measures is shorter than what the server waited
        assert min(times) >= deadline[kind] * 0.5, report
        assert max(times) <= deadline[kind] + 5.0, report
    for kind, reason in EXPECTED_REASON.items():
        wanted = sum(1 for k in KINDS if EXPECTED_REASON[k] == reason) * 375
        assert figures.rejected.get(reason) == wanted, (kind, report)
    assert figures.rejected.get("open") == 0, report
    assert figures.rss_peak < limit, report
    assert figures.rss_after <= figures.rss_before + RETURNED_WITHIN, report
    assert "Traceback" not in server.log(), server.log()[-3000:]


def test_the_webhook_holds_against_1500_slow_clients(webhook_process):
    check_scenario(webhook_process, WEBHOOK_RSS_LIMIT)


def test_the_audit_sink_holds_against_1500_slow_clients(sink_process):
    check_scenario(sink_process, SINK_RSS_LIMIT)


# ---------------------------------------------------------------------------------------------- in-process


class InProcess:
    """The webhook or the sink served in a thread of this process (for its logs and metrics), with `bounds`."""

    def __init__(self, kind: str, folder: Path, bounds: Bounds) -> None:
        self.kind, self.folder, self.bounds = kind, folder, bounds
        self.files = ServerProcess(kind, folder, bounds)  # certificates, requests and slow-client bytes
        self.name = "webhook" if kind == "webhook" else "audit-sink"
        self.loop = asyncio.new_event_loop()
        self.stop_event = asyncio.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def port(self) -> int:
        return self.files.port

    def _serve(self) -> Any:
        tls = ReloadingTLS(self.folder / "tls.crt", self.folder / "tls.key")
        if self.kind == "webhook":
            return webhook_serve(
                StaticSnapshot(SNAPSHOT), "127.0.0.1", self.port, tls, 60, self.stop_event, self.bounds
            )
        store = AuditStore(self.folder / "store", Ed25519PrivateKey.generate(), limit_bytes=8 * MiB)
        sink = Sink(store, AnomalyDetector([], []))
        auth = Authentication("bearerToken", TOKEN)
        return sink_serve(
            sink, auth, host="127.0.0.1", port=self.port, tls=tls, stop=self.stop_event, bounds=self.bounds
        )

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    def __enter__(self) -> InProcess:
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.files.get("/healthz")
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"{self.kind} did not start")

    def __exit__(self, *_: Any) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout=10)

    def rejected(self, reason: str) -> float:
        labels = {"server": self.name, "reason": reason}
        return REGISTRY.get_sample_value("iotsec_http_connections_rejected_total", labels) or 0.0

    def wait_open(self, count: int) -> None:
        """Until the server counts `count` open connections (at most 5 s)."""
        labels = {"server": self.name}
        deadline = time.monotonic() + 5
        while REGISTRY.get_sample_value("iotsec_http_connections_open", labels) != count:
            assert time.monotonic() < deadline, REGISTRY.get_sample_value("iotsec_http_connections_open", labels)
            time.sleep(0.02)

    def body_bytes_reserved(self) -> float | None:
        return REGISTRY.get_sample_value("iotsec_http_body_bytes_reserved", {"server": self.name})

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=(source, 0))

    def tls_connect(self, source: str = "127.0.0.1") -> ssl.SSLSocket:
        return self.files.context().wrap_socket(self.connect(source), server_hostname="localhost")


def closed_by_server(sock: socket.socket, within: float = 5.0) -> bool:
    """True when the server closes `sock` within `within` seconds without sending anything."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


SERVERS = ["webhook", "sink"]


@pytest.mark.parametrize("kind", SERVERS)
def test_connections_over_the_per_client_limit_are_closed_before_any_tls(kind, tmp_path):
    with InProcess(kind, tmp_path, Bounds(max_per_client=3, max_connections=50)) as server:
        before = server.rejected("per_client")
        held = [server.connect("127.0.0.3") for _ in range(3)]
        extra = server.connect("127.0.0.3")
        assert closed_by_server(extra, within=2)
        assert server.rejected("per_client") == before + 1
        assert server.files.real_request()[0] == 200  # another client is still served
        held.pop().close()
        server.wait_open(2)  # the server notices the close asynchronously
        again = server.tls_connect("127.0.0.3")  # a slot freed: the same client is admitted again
        again.close()
        for sock in [*held, extra]:
            sock.close()


@pytest.mark.parametrize("kind", SERVERS)
def test_connections_over_the_limit_are_closed_at_once_and_counted(kind, tmp_path):
    with InProcess(kind, tmp_path, Bounds(max_per_client=10, max_connections=4)) as server:
        before = server.rejected("capacity")
        held = [server.connect(f"127.0.0.{n}") for n in range(2, 6)]
        extra = server.connect("127.0.0.7")
        started = time.monotonic()
        assert closed_by_server(extra, within=2)
        assert time.monotonic() - started < 1.0
        assert server.rejected("capacity") == before + 1
        held.pop().close()
        server.wait_open(3)  # the server notices the close asynchronously
        assert server.files.real_request()[0] == 200  # the freed slot serves a real request
        for sock in [*held, extra]:
            sock.close()


@pytest.mark.parametrize("kind", SERVERS)
def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(kind, tmp_path):
    with InProcess(kind, tmp_path, Bounds(idle_seconds=0.5, header_seconds=30)) as server:
        before = server.rejected("idle_timeout")
        connection = server.files.connection()
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        assert response.status == 200
        assert response.read() == b"ok"
        started = time.monotonic()
        assert connection.sock is not None
        assert closed_by_server(connection.sock, within=5)
        assert 0.4 <= time.monotonic() - started < 3
        assert server.rejected("idle_timeout") == before + 1


@pytest.mark.parametrize("kind", SERVERS)
def test_a_slow_request_on_a_kept_alive_connection_is_cut_after_the_header_timeout(kind, tmp_path):
    with InProcess(kind, tmp_path, Bounds(idle_seconds=30, header_seconds=0.5)) as server:
        before = server.rejected("header_timeout")
        sock = server.tls_connect()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert b"200" in sock.recv(4096)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # and then nothing
        started = time.monotonic()
        assert closed_by_server(sock, within=5)
        assert 0.4 <= time.monotonic() - started < 3
        assert server.rejected("header_timeout") == before + 1
        sock.close()


def _lines_from(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.INFO and "listening" not in r.getMessage()]


@pytest.mark.parametrize("kind", SERVERS)
def test_a_client_that_drops_mid_body_is_one_log_line(kind, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with InProcess(kind, tmp_path, Bounds()) as server:
        caplog.clear()
        sock = server.tls_connect()
        sock.sendall(server.files.slow_body_start())
        sock.close()  # mid-body
        deadline = time.monotonic() + 5
        while not _lines_from(caplog) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.files.real_request()[0] == 200
    lines = _lines_from(caplog)
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "went away during POST" in lines[0].getMessage()
    assert lines[0].exc_info is None


@pytest.mark.parametrize("kind", SERVERS)
def test_a_client_that_drops_mid_handshake_is_one_log_line_and_counted(kind, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with InProcess(kind, tmp_path, Bounds()) as server:
        before = server.rejected("handshake_failed")
        caplog.clear()
        sock = server.connect()
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        sock.close()  # mid-handshake
        deadline = time.monotonic() + 5
        while server.rejected("handshake_failed") == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.files.real_request()[0] == 200
    assert server.rejected("handshake_failed") == before + 1
    lines = _lines_from(caplog)
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "TLS handshake failed" in lines[0].getMessage()
    assert lines[0].exc_info is None


@pytest.mark.parametrize("kind", SERVERS)
def test_open_connections_are_a_gauge(kind, tmp_path):
    with InProcess(kind, tmp_path, Bounds()) as server:
        held = [server.connect() for _ in range(3)]
        server.wait_open(3)
        for sock in held:
            sock.close()
        server.wait_open(0)


@pytest.mark.parametrize("kind", SERVERS)
def test_large_bodies_wait_for_the_body_budget_and_small_ones_do_not(kind, tmp_path):
    """A stalled large body holds the budget: another large one waits until it is cut; a small one goes ahead."""
    bounds = Bounds(body_budget_bytes=300_000, body_seconds=1.5, header_seconds=30)
    with InProcess(kind, tmp_path, bounds) as server:
        stalled = server.tls_connect("127.0.0.2")
        stalled.sendall(server.files.slow_headers() + b"Content-Length: 200000\r\n\r\n" + b" " * 1000)
        deadline = time.monotonic() + 5
        while server.body_bytes_reserved() != 200_000:  # the stalled body holds the budget
            assert time.monotonic() < deadline, server.body_bytes_reserved()
            time.sleep(0.02)
        # the waiting body's own deadline runs while it waits: start it well after the stalled one's, or a loaded
        # machine cuts both (seen in CI: the waiting connection was closed unanswered)
        time.sleep(bounds.body_seconds / 3)
        waiting = server.tls_connect("127.0.0.3")
        started = time.monotonic()
        waiting.sendall(server.files.slow_headers() + b"Content-Length: 200000\r\n\r\n" + b" " * 200_000)
        small_status, _ = server.files.real_request()
        small_seconds = time.monotonic() - started
        waiting.settimeout(10)
        answer = waiting.recv(4096)
        waited = time.monotonic() - started
        assert small_status == 200
        assert small_seconds < 1.0
        assert answer.startswith(b"HTTP/1.1 ")
        assert 0.5 <= waited < 5, waited  # answered only once the stalled body's deadline freed the budget
        for sock in (stalled, waiting):
            sock.close()


def test_tls_layers_share_one_receive_buffer(tmp_path):
    """asyncio gives each TLS connection a zero-filled 256 KiB receive buffer; here all share the listener's one
    (this fails if a Python release renames the internals the sharing relies on)."""
    from iotsec.servers.bounded.server import TLS_READ_BYTES, Listener, _Guard, _TLSLayer

    ServerProcess("webhook", tmp_path)  # writes the certificate pair
    tls = ReloadingTLS(tmp_path / "tls.crt", tmp_path / "tls.key")

    async def buffers() -> list[memoryview]:
        listener = Listener("buffer-test", Bounds(), tls.context, asyncio.Protocol, 1024)
        layers = [_TLSLayer(_Guard(listener), asyncio.Protocol()) for _ in range(2)]
        return [listener.read_buffer, *(layer.get_buffer(-1) for layer in layers)]

    shared, first, second = asyncio.run(buffers())
    assert first.obj is shared.obj
    assert second.obj is shared.obj
    assert len(first) == TLS_READ_BYTES


@pytest.mark.parametrize("kind", SERVERS)
def test_a_malformed_request_is_answered_400_and_one_log_line_without_traceback(kind, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with InProcess(kind, tmp_path, Bounds()) as server:
        caplog.clear()
        sock = server.tls_connect()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nthis is not a header\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(4096).split(b"\r\n")[0].endswith(b" 400 Bad Request")
        sock.close()
    lines = _lines_from(caplog)
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].exc_info is None
    assert "Error handling request" in lines[0].getMessage()
