"""Benchmark: 1,500 slow clients against `iotsec webhook` and `iotsec audit serve` (issue 12).

Each server runs as its own process on 127.0.0.1; 1,500 connections are opened against it from 8 loopback
addresses, a quarter each: silent (no TLS handshake), half a TLS handshake, half the request headers, half the
body. Prints per server: RSS before, with the connections open, peak (VmHWM) and after they are cut; the time a
real request (an AdmissionReview, or the sink's health probe) took while they were open; the connections
rejected or cut by reason (`iotsec_http_connections_rejected_total`) and when each kind was cut.

The scenario is the one tests/webhook/test_bounded_servers.py checks; deadlines are shortened to 8 s (the
defaults are 5 s handshake, 10 s headers, 10 s body (30 s on the sink)) so that a run takes about a minute.
Run: .venv/bin/python benchmarks/slow_clients.py [COUNT]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

from figures import record  # noqa: E402
from tests.webhook.test_bounded_servers import MiB, ServerProcess, run_scenario  # noqa: E402


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    for kind in ("webhook", "sink"):
        with tempfile.TemporaryDirectory(prefix=f"slow-{kind}-") as folder:
            server = ServerProcess(kind, Path(folder))
            server.start()
            try:
                seen = run_scenario(server, count)
            finally:
                server.stop()
            name = "iotsec webhook" if kind == "webhook" else "iotsec audit serve"
            print("\n".join(seen.lines(name)))
            record(f"{name}: peak RSS with {seen.opened:,} slow connections open", f"{seen.rss_peak / MiB:.0f} MiB")
            record(
                f"{name}: a real request while they were open",
                f"HTTP {seen.probe_status} in {seen.probe_seconds * 1000:.0f} ms",
            )


if __name__ == "__main__":
    main()
