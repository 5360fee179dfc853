"""A webhook pod being stopped (issue 18: a replica killed at 300 req/s must fail no admission). On SIGTERM the
server drains before it closes: /readyz fails at once (the endpoint leaves the Service), every answer closes its
connection (no client sends its next review down a keep-alive connection about to be closed), a review in flight
is answered, and after --drain-seconds the process exits cleanly."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.webhook.test_bounded_servers import JSON, ServerProcess, admission_review

DRAIN_SECONDS = 3.0


class DrainingServer(ServerProcess):
    def command(self) -> list[str]:
        return [*super().command(), "--drain-seconds", str(DRAIN_SECONDS)]  # the last one given counts


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DrainingServer]:
    process = DrainingServer("webhook", tmp_path)
    process.start()
    yield process
    process.stop()


def _raw_review(server: ServerProcess) -> tuple[ssl.SSLSocket, bytes]:
    """A TLS connection with a review's headers and all but the last byte of its body sent: a review in flight."""
    body = json.dumps(admission_review()).encode()
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    tls = server.context().wrap_socket(raw, server_hostname="localhost")
    head = f"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    tls.sendall(head.encode() + body[:-1])
    return tls, body[-1:]


def test_sigterm_drains_then_stops_and_answers_everything_it_accepted(server: DrainingServer) -> None:
    keep_alive = server.connection()
    keep_alive.request("POST", "/validate", body=json.dumps(admission_review()), headers=JSON)
    first = keep_alive.getresponse()
    assert first.status == 200
    first.read()
    assert (first.getheader("Connection") or "").lower() != "close", "kept alive before the drain"
    in_flight, last_byte = _raw_review(server)
    assert server.get("/readyz")[0] == 200

    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while server.get("/readyz")[0] != 503:
        assert time.monotonic() < deadline, "readiness still passing after SIGTERM"
        time.sleep(0.05)
    keep_alive.request("POST", "/validate", body=json.dumps(admission_review()), headers=JSON)
    during = keep_alive.getresponse()
    assert during.status == 200, "still answering while draining"
    assert json.loads(during.read())["response"]["allowed"] in (True, False)
    assert (during.getheader("Connection") or "").lower() == "close", "the client opens a new connection next"

    in_flight.sendall(last_byte)
    answer = in_flight.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    in_flight.close()
    assert server.process.wait(timeout=DRAIN_SECONDS + 15) == 0
    assert "SIGTERM: draining for 3 s" in server.log()
