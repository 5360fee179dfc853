"""`iotsec run`: the operator itself, against the cluster (in-cluster or KUBECONFIG)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from iotsec.cli.common import EXIT_OK, EXIT_USAGE, settings
from iotsec.cli.leadership import leadership


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="run the operator against the cluster (in-cluster or KUBECONFIG)")
    run.add_argument("--resync-seconds", type=float, help="drift-correction interval (IOTSEC_RESYNC_SECONDS, 60)")
    run.add_argument("--metrics-port", type=int, help="Prometheus port, 0 disables (IOTSEC_METRICS_PORT, 8000)")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint ('' disables)")
    run.add_argument("--peering", metavar="NAME", help="kopf peering name for several replicas (default: standalone)")
    run.add_argument(
        "--leader-election",
        metavar="NAMESPACE/NAME",
        help="several replicas: reconcile only while holding this Lease, stand by (answering liveness) otherwise",
    )
    run.add_argument("-v", "--verbose", action="store_true")
    run.add_argument("--debug", action="store_true")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    config = settings("run")
    if config is None:
        return EXIT_USAGE
    config = config.with_values(resync_seconds=args.resync_seconds, metrics_port=args.metrics_port)
    import kopf  # the operator's dependencies load only for `run`

    from iotsec.controllers import register as register_handlers

    register_handlers(config)
    if config.metrics_port:  # before the election: a standby replica is a scrape target too (iotsec_leader 0)
        from prometheus_client import start_http_server

        start_http_server(config.metrics_port, config.metrics_host)
        logging.getLogger(__name__).info("metrics on http://%s:%d/metrics", config.metrics_host, config.metrics_port)

    # log_prefix: each per-object line (e.g. "reconciled (success): ...") names its object as [namespace/name]
    kopf.configure(verbose=args.verbose, debug=args.debug, log_prefix=True)
    logging.getLogger("celpy").setLevel(logging.WARNING)  # its DEBUG output traces every CEL evaluation
    if not (args.verbose or args.debug):
        logging.getLogger("kopf.objects").addFilter(EventHandlerSuccesses())
    lease = _lease(args.leader_election) if args.leader_election else None
    if args.leader_election and lease is None:
        return EXIT_USAGE
    with leadership(lease, args.liveness):
        kopf.run(
            clusterwide=True,
            liveness_endpoint=args.liveness or None,
            standalone=args.peering is None,
            peering_name=args.peering,
        )
    return EXIT_OK


class EventHandlerSuccesses(logging.Filter):
    """Drops kopf's "Handler 'x' succeeded." line of a watch-event handler (one kopf logs without posting it as an
    Event): a line per namespace, NetworkPolicy and custom resource event said nothing, yet made 47,000 of the 57,000
    lines of a cold start of 1,000 tenants, and 5% of its CPU (issue 18). Their failures, the reconcile handlers'
    lines and everything at --verbose stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO
            and getattr(record, "k8s_skip", False)
            and isinstance(record.msg, str)
            and record.msg.startswith("Handler '")
            and record.msg.endswith("' succeeded.")
        )


def _lease(text: str) -> tuple[str, str] | None:
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        print(f"iotsec run: --leader-election takes NAMESPACE/NAME, not {text!r}", file=sys.stderr)
        return None
    return namespace, name
