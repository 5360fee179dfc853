"""HTTPS serving with bounds, shared by the admission webhook and the audit sink (settings here, the mechanism
in iotsec.servers.bounded.server).

A client can hold a connection open at every step of a request; each step has a deadline here, and the number of
connections (in all, and per source address) is capped, so slow or idle clients cannot exhaust memory or sockets:

- over `max_connections` open, or `max_per_client` from one source address, a new connection is closed as it is
  accepted, before any TLS state exists for it;
- the TLS state is created when the client's first bytes arrive (a connection that sends nothing costs a socket),
  and the handshake must end within `handshake_seconds` of the accept;
- the request line and headers must arrive within `header_seconds` (counted from the handshake, or from the first
  byte after an idle keep-alive), the body within `body_seconds` of the headers;
- a keep-alive connection may stay idle `idle_seconds` between requests;
- request bodies larger than 64 KiB being read at once may add up to `body_budget_bytes`; a request whose declared
  size does not fit waits (its body deadline running), its client held back by TCP flow control. A connection
  whose body is not being read holds a few tens of KiB in buffers.

Cuts and refusals are counted in `iotsec_http_connections_rejected_total{server,reason}`; open connections in
`iotsec_http_connections_open{server}`. A client that goes away mid-handshake or mid-body is one log line, never
a traceback; under a flood, such lines are summarised (one line per reason every LOG_EVERY_SECONDS).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

__all__ = ["SINK_BOUNDS", "WEBHOOK_BOUNDS", "Bounds", "add_arguments", "bounds_from_args"]


@dataclass(frozen=True)
class Bounds:
    """Deadlines (seconds) and connection caps of one HTTPS server."""

    handshake_seconds: float = 5.0
    header_seconds: float = 10.0
    body_seconds: float = 10.0
    idle_seconds: float = 120.0  # above the API server's idle keep-alive (90 s), so the client closes first
    max_connections: int = 500
    max_per_client: int = 250
    body_budget_bytes: int = 32 * 2**20  # request bodies being read at once, over all connections


# The API server gives a webhook call at most 30 s. Measured per open connection (benchmarks/slow_clients.py):
# ~1 KiB silent, ~25 KiB after the handshake, ~50 KiB mid-handshake, up to ~150 KiB with a stalled body; so
# 500 connections and the body budget stay within the chart's 256Mi on top of the webhook's ~150 MB in use.
WEBHOOK_BOUNDS = Bounds()
# batches of up to 16 MiB from few callers (the API servers), in a container with 512Mi
SINK_BOUNDS = Bounds(body_seconds=30.0, max_connections=256, max_per_client=64, body_budget_bytes=64 * 2**20)


def add_arguments(parser: argparse.ArgumentParser, defaults: Bounds) -> None:
    """The bounds as command-line flags (`bounds_from_args` reads them back)."""
    group = parser.add_argument_group("connection bounds")
    for flag, field, kind, text in (
        ("--handshake-timeout", "handshake_seconds", float, "seconds a client has to finish the TLS handshake"),
        ("--header-timeout", "header_seconds", float, "seconds a client has to send a request's headers"),
        ("--body-timeout", "body_seconds", float, "seconds a client has to send a request's body"),
        ("--idle-timeout", "idle_seconds", float, "seconds a keep-alive connection may stay idle"),
        ("--max-connections", "max_connections", int, "open connections; more are closed as they come"),
        ("--max-connections-per-client", "max_per_client", int, "open connections from one source address"),
        ("--body-budget-bytes", "body_budget_bytes", int, "bytes of bodies over 64 KiB read at once; more wait"),
    ):
        default = getattr(defaults, field)
        metavar = "SECONDS" if kind is float else "BYTES" if field == "body_budget_bytes" else "COUNT"
        group.add_argument(
            flag, dest=f"bound_{field}", type=kind, default=default, metavar=metavar, help=f"{text} ({default})"
        )


def bounds_from_args(args: argparse.Namespace) -> Bounds:
    prefix = "bound_"
    return replace(
        Bounds(), **{name[len(prefix) :]: value for name, value in vars(args).items() if name.startswith(prefix)}
    )
