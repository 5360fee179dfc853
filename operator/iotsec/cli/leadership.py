"""`iotsec run --leader-election NAMESPACE/NAME`: the process side of leader election (services.leader decides).

Standing by, the process answers its liveness endpoint itself (kopf, which serves it otherwise, has not started)
and tries the Lease every `retry` seconds. Once it holds the Lease, kopf runs, and a thread renews the Lease; a
leader that cannot renew within the renew deadline exits at once, without kopf's graceful stop: by then another
replica may be reconciling, and two must never act together. A graceful stop releases the Lease.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import Gauge

from iotsec.k8s.kube import Kube
from iotsec.services.leader import Elector, identity

log = logging.getLogger(__name__)
EXIT_LOST_LEASE = 3
LEADER = Gauge(
    "iotsec_leader", "1 while this operator replica reconciles (holds the Lease, or runs alone), 0 standing by"
)


@contextmanager
def leadership(lease: tuple[str, str] | None, liveness: str) -> Iterator[None]:
    """Run the body as the leader of `lease` (namespace, name); without a lease, just run it."""
    if lease is None:
        LEADER.set(1)
        yield
        return
    elector = Elector(Kube(), lease[0], lease[1], identity())
    log.info("leader election: %s stands by for lease %s/%s", elector.holder, *lease)
    LEADER.set(0)
    _stand_by(elector, liveness)
    LEADER.set(1)
    stop = threading.Event()
    renewing = threading.Thread(target=_renew, args=(elector, stop), name="lease-renewal", daemon=True)
    renewing.start()
    try:
        yield
    finally:
        stop.set()
        renewing.join(timeout=elector.timing.retry * 2)
        elector.release()


def _stand_by(elector: Elector, liveness: str) -> None:
    server = _standby_liveness(liveness) if liveness else None
    try:
        while not elector.try_hold():
            time.sleep(elector.timing.retry)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


def _renew(elector: Elector, stop: threading.Event) -> None:
    while not stop.wait(elector.timing.retry):
        if elector.try_hold() or not elector.lost():
            continue
        log.error(
            "leader election: %s could not renew lease %s/%s within %.0f s; another replica may hold it now: "
            "exiting without reconciling further",
            elector.holder,
            elector.namespace,
            elector.name,
            elector.timing.renew_deadline,
        )
        logging.shutdown()
        os._exit(EXIT_LOST_LEASE)


def _standby_liveness(url: str) -> ThreadingHTTPServer:
    """Answer GET <path> with 200 while standing by (the process is alive; it just does not reconcile)."""
    parts = urlsplit(url)
    path = parts.path or "/"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            known = self.path.split("?", 1)[0] == path
            body = b'{"standby": true}' if known else b"not found"
            self.send_response(200 if known else 404)
            self.send_header("Content-Type", "application/json" if known else "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass  # a probe every few seconds is not worth a line

    server = ThreadingHTTPServer((parts.hostname or "0.0.0.0", parts.port or 80), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="standby-liveness", daemon=True).start()
    return server
