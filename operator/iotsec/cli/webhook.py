"""`iotsec webhook` (serve the validating admission webhook) and `iotsec webhook-config` (its registration)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from iotsec.admission import snapshot as checking
from iotsec.cli.common import ENFORCEMENT_MODES, EXIT_OK, EXIT_USAGE, fail, settings
from iotsec.model.manifests import dump_yaml, load_documents
from iotsec.model.workloads import parse_workload_kinds
from iotsec.servers import bounded


def register(sub: Any) -> None:
    _register_serve(sub)
    _register_config(sub)


def _register_serve(sub: Any) -> None:
    hook = sub.add_parser("webhook", help="serve the validating admission webhook over HTTPS")
    hook.add_argument("--host", default="0.0.0.0")
    hook.add_argument("--port", type=int, default=8443)
    hook.add_argument("--tls-cert-file", type=Path, help="serving certificate (reloaded when it changes)")
    hook.add_argument("--tls-key-file", type=Path, help="its private key")
    hook.add_argument("--tls-secret-ref", metavar="NAMESPACE/NAME", help="read the pair from this Secret via the API")
    hook.add_argument(
        "--tls-wait-seconds",
        type=float,
        default=300.0,
        help="with --tls-secret-ref: how long to wait for the pair to appear (a fresh install) before giving up",
    )
    hook.add_argument(
        "--context",
        nargs="+",
        metavar="PATH",
        help="take SecurityDomains etc. from these files instead of the cluster (no API access)",
    )
    hook.add_argument(
        "--refresh-seconds", type=float, default=10.0, help="how often the serving certificate is checked for renewal"
    )
    hook.add_argument("--metrics-port", type=int, default=8001, help="Prometheus port, 0 disables")
    hook.add_argument(
        "--unassigned",
        choices=ENFORCEMENT_MODES,
        default="enforce",
        help="mode for namespaces in no SecurityDomain",
    )
    hook.add_argument(
        "--drain-seconds",
        type=float,
        default=5.0,
        help="on SIGTERM: this long not ready, closing each connection after its answer, before the listener closes "
        "(the endpoint leaves the Service meanwhile; answers in flight always finish)",
    )
    bounded.add_arguments(hook, bounded.WEBHOOK_BOUNDS)
    hook.set_defaults(handler=_webhook)


def _register_config(sub: Any) -> None:
    config = sub.add_parser("webhook-config", help="print the ValidatingWebhookConfiguration iotsec ships")
    config.add_argument("--name", default="iotsec")
    target = config.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="an out-of-cluster webhook URL (https://.../validate)")
    target.add_argument("--service", metavar="NAMESPACE/NAME[:PORT]", help="the webhook Service")
    config.add_argument("--operator-namespace", default="iotsec-system", help="never checked (nor kube-system)")
    config.add_argument("--exclude", nargs="*", default=[], metavar="NAMESPACE", help="more namespaces to leave out")
    config.add_argument("--timeout-seconds", type=int, default=5)
    config.add_argument(
        "--operator-user",
        help="the operator's username the fence answers for (default: system:serviceaccount:<operator-namespace>:"
        "iotsec-operator)",
    )
    config.add_argument(
        "--server-minor",
        type=int,
        help="the API server's minor version: below 28 the fence fails open (no matchConditions); default: current",
    )
    config.add_argument(
        "--workload-kinds",
        metavar="JSON",
        help="kinds added to the workload table, registered too: the chart's webhook.workloadKinds as JSON "
        "([{group, kind, resource, podSpecPaths}])",
    )
    bundle = config.add_mutually_exclusive_group()
    bundle.add_argument("--ca-bundle", type=Path, metavar="FILE", help="fill caBundle with this PEM CA bundle")
    bundle.add_argument(
        "--ca-from-secret",
        metavar="NAMESPACE/NAME",
        help="fill caBundle with the CA of the webhook TLS Secret the operator keeps (read through the API)",
    )
    config.set_defaults(handler=_webhook_config)


def _webhook(args: argparse.Namespace) -> int:
    import asyncio
    import tempfile

    from prometheus_client import start_http_server

    from iotsec.pki.tls import ReloadingTLS
    from iotsec.servers.webhook.server import SnapshotSource, StaticSnapshot, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if bool(args.tls_secret_ref) == bool(args.tls_cert_file and args.tls_key_file):
        fail("webhook", "give --tls-cert-file and --tls-key-file, or --tls-secret-ref")
        return EXIT_USAGE
    tasks = []
    source: SnapshotSource
    config = settings("webhook")  # IOTSEC_WORKLOAD_KINDS matters with --context too
    if config is None:
        return EXIT_USAGE
    if args.context:
        snapshot = checking.snapshot_from_objects(
            [d.obj for d in load_documents(args.context) if isinstance(d.obj, dict)],
            args.unassigned,
            assume_named_namespaces_exist=True,
            platform=config.platform,
        )
        source = StaticSnapshot(snapshot)
    else:
        from iotsec.k8s.kube import Kube
        from iotsec.servers.webhook.cluster import ClusterSnapshot

        source = ClusterSnapshot(Kube(), args.unassigned, config.platform)
    if args.tls_secret_ref:
        from iotsec.k8s.kube import Kube
        from iotsec.servers.webhook.cluster import SecretFiles

        namespace, _, name = args.tls_secret_ref.partition("/")
        files = SecretFiles(Kube(), namespace, name, Path(tempfile.mkdtemp(prefix="iotsec-webhook-tls-")))
        files.wait_for_pair(timeout=args.tls_wait_seconds)
        cert_file, key_file = files.cert_file, files.key_file
        tasks.append(files.keep_synced)
    else:
        cert_file, key_file = args.tls_cert_file, args.tls_key_file
    if args.metrics_port:
        start_http_server(args.metrics_port)

    async def main_loop() -> None:
        background = [asyncio.create_task(task(args.refresh_seconds)) for task in tasks]
        try:
            tls = ReloadingTLS(cert_file, key_file)
            bounds = bounded.bounds_from_args(args)
            await serve(
                source, args.host, args.port, tls, args.refresh_seconds, bounds=bounds, drain_seconds=args.drain_seconds
            )
        finally:
            for task in background:
                task.cancel()

    asyncio.run(main_loop())
    return EXIT_OK


def _webhook_config(args: argparse.Namespace) -> int:
    from iotsec.build.webhook import client_config, validating_webhook_configuration

    service = None
    if args.service:
        namespace, _, rest = args.service.partition("/")
        name, _, port = rest.partition(":")
        service = (namespace, name, int(port or 443))
    try:
        kinds = parse_workload_kinds(args.workload_kinds) if args.workload_kinds else ()
    except ValueError as exc:
        fail("webhook-config", f"--workload-kinds: {exc}")
        return EXIT_USAGE
    try:
        bundle = _webhook_ca_bundle(args.ca_bundle, args.ca_from_secret)
    except (OSError, ValueError) as exc:
        fail("webhook-config", exc)
        return EXIT_USAGE
    manifest = validating_webhook_configuration(
        args.name,
        client_config(args.url, service, bundle),
        args.operator_namespace,
        args.exclude,
        args.timeout_seconds,
        args.operator_user,
        args.server_minor,
        kinds,
    )
    sys.stdout.write(dump_yaml([manifest]))
    return EXIT_OK


def _webhook_ca_bundle(path: Path | None, secret_ref: str | None) -> str:
    """The PEM bundle for caBundle: from a file, from the operator's webhook TLS Secret, or none ("")."""
    from iotsec.build.webhook import validated_ca_bundle

    if path is not None:
        return validated_ca_bundle(path.read_text(), str(path))
    if not secret_ref:
        return ""
    namespace, _, name = secret_ref.partition("/")
    if not namespace or not name:
        raise ValueError(f"--ca-from-secret takes NAMESPACE/NAME, got {secret_ref!r}")
    from iotsec.k8s.kube import Kube
    from iotsec.services.webhook import ca_bundle_from_secret

    return ca_bundle_from_secret(Kube(), namespace, name)
