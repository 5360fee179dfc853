"""`iotsec audit …`: render the API server's audit configuration, run the sink, export and verify the trail."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iotsec.cli.common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, OUTPUT_FORMATS, fail, print_json
from iotsec.model.platform import Platform
from iotsec.model.time import parse_rfc3339

if TYPE_CHECKING:
    from iotsec.api.auditpolicy import AuditPolicySpec
    from iotsec.k8s.kube import Kube
    from iotsec.services.audit import SinkCredentials

EXIT_BROKEN = EXIT_INVALID  # `audit verify`: the trail does not verify
AUDIT_NAMESPACE = Platform().audit_namespace  # the chart's <release>-audit for a release named iotsec
log = logging.getLogger("iotsec.audittrail")


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="audit policy, sink, export and verification (X.1369 §9.6.4)")
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    _register_policy(commands)
    _register_serve(commands)
    _register_export(commands)
    _register_verify(commands)


# ---------------------------------------------------------------------------------------------- policy


def _register_policy(commands: Any) -> None:
    policy = commands.add_parser(
        "policy",
        help="print the audit Policy an AuditPolicy renders, the kube-apiserver flags and the webhook kubeconfig",
    )
    policy.add_argument("file", type=Path, nargs="?", help="a YAML file holding the AuditPolicy (the first one)")
    policy.add_argument(
        "--from-cluster",
        metavar="NAME",
        help="read what the operator made for AuditPolicy NAME: its policy ConfigMap, or with --webhook-kubeconfig "
        "the sink's CA, address and the API server's client credentials",
    )
    policy.add_argument(
        "--namespace", default=AUDIT_NAMESPACE, help="the audit namespace the sinks live in (with --from-cluster)"
    )
    policy.add_argument("--operator-user", action="append", default=[], help="iotsec's own identity (repeatable)")
    policy.add_argument("--canary", metavar="NAMESPACE/NAME", help="the canary ConfigMap recorded at Request level")
    policy.add_argument("--flags", action="store_true", help="print the kube-apiserver flags instead")
    policy.add_argument("--policy-path", default="/etc/kubernetes/audit/policy.yaml")
    policy.add_argument("--webhook-config-path", default="/etc/kubernetes/audit/webhook.kubeconfig")
    policy.add_argument("--webhook-kubeconfig", action="store_true", help="print the audit webhook kubeconfig")
    policy.add_argument("--server", help="the sink's URL, e.g. https://10.96.0.50/audit")
    policy.add_argument("--ca-file", type=Path, help="CA that signed the sink's serving certificate")
    policy.add_argument("--client-cert", type=Path, help="client certificate the API server presents")
    policy.add_argument("--client-key", type=Path)
    policy.add_argument("--token-file", type=Path, help="bearer token the API server presents")
    policy.set_defaults(handler=_policy)


def _policy(args: argparse.Namespace) -> int:
    from iotsec.build import apiserver_audit as rendering
    from iotsec.model.manifests import dump_yaml

    if args.flags:
        for flag in rendering.apiserver_flags(
            policy_path=args.policy_path, webhook_config_path=args.webhook_config_path
        ):
            print(flag)
        return EXIT_OK
    if args.webhook_kubeconfig:
        return _webhook_kubeconfig(args)
    if args.from_cluster:
        return _policy_from_cluster(args.from_cluster, args.namespace)
    if args.file is None:
        fail("audit policy", "name a FILE or --from-cluster NAME")
        return EXIT_USAGE
    spec = _spec_from_file(args.file)
    if spec is None:
        return EXIT_USAGE
    canary = tuple(args.canary.split("/", 1)) if args.canary else None
    rendered = rendering.render_policy(spec, operator_users=args.operator_user, canary=canary)
    sys.stdout.write(dump_yaml([rendered]))
    return EXIT_OK


def _webhook_kubeconfig(args: argparse.Namespace) -> int:
    from iotsec.build import apiserver_audit as rendering
    from iotsec.model.manifests import dump_yaml

    parts: SinkCredentials
    try:
        if args.from_cluster:
            from iotsec.k8s.kube import Kube
            from iotsec.services.audit import sink_credentials

            parts = sink_credentials(Kube(), args.from_cluster, args.namespace, args.server)
        elif not args.server or not args.ca_file:
            raise ValueError("--webhook-kubeconfig needs --server and --ca-file, or --from-cluster NAME")
        else:
            parts = {
                "server": args.server,
                "ca_pem": args.ca_file.read_bytes(),
                "client_cert_pem": args.client_cert.read_bytes() if args.client_cert else None,
                "client_key_pem": args.client_key.read_bytes() if args.client_key else None,
                "token": args.token_file.read_text().strip() if args.token_file else None,
            }
        config = rendering.webhook_kubeconfig(**parts)
    except (OSError, ValueError) as exc:
        fail("audit policy", exc)
        return EXIT_USAGE
    sys.stdout.write(dump_yaml([config]))
    return EXIT_OK


def _policy_from_cluster(name: str, namespace: str) -> int:
    from iotsec.k8s.kube import Kube
    from iotsec.services.audit import AuditLookupError, rendered_policy

    try:
        text = rendered_policy(Kube(), name, namespace)
    except AuditLookupError as exc:
        fail("audit policy", exc)
        return EXIT_USAGE
    sys.stdout.write(text)
    return EXIT_OK


def _spec_from_file(path: Path) -> Any:
    from iotsec.api.validation import InvalidResourceError, parse_resource
    from iotsec.model.manifests import load_documents

    for document in load_documents([path]):
        if isinstance(document.obj, dict) and document.obj.get("kind") == "AuditPolicy":
            try:
                return parse_resource(document.obj).spec
            except InvalidResourceError as exc:
                fail("audit", f"{path}: invalid AuditPolicy: {exc}")
                return None
    fail("audit", f"{path} holds no AuditPolicy")
    return None


# ---------------------------------------------------------------------------------------------- serve


def _register_serve(commands: Any) -> None:
    from iotsec.servers import bounded

    serve = commands.add_parser("serve", help="run the audit sink (HTTPS endpoint of the API server's audit webhook)")
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument("--audit-policy", metavar="NAME", help="read the AuditPolicy from the cluster and report to it")
    source.add_argument("--spec", type=Path, help="read the AuditPolicy from a file (no cluster)")
    serve.add_argument(
        "--namespace", default=AUDIT_NAMESPACE, help="the audit namespace: where the canary and the signing key live"
    )
    serve.add_argument("--store", type=Path, required=True, help="the audit store folder (a persistent volume)")
    key = serve.add_mutually_exclusive_group(required=True)
    key.add_argument(
        "--signing-key", type=Path, help="Ed25519 key file (created when missing, unless --signing-key-readonly)"
    )
    key.add_argument(
        "--signing-key-secret", metavar="NAME", help="read the key from this Secret in --namespace (never creates it)"
    )
    serve.add_argument(
        "--signing-key-readonly",
        action="store_true",
        help="never create the key: a missing or unreadable file is an error (the operator mounts the key Secret "
        "read-only; a sink never makes a replacement key of its own)",
    )
    serve.add_argument("--tls-cert", type=Path, required=True)
    serve.add_argument("--tls-key", type=Path, required=True)
    auth = serve.add_mutually_exclusive_group(required=True)
    auth.add_argument("--client-ca", type=Path, help="callers must present a certificate this CA signed")
    auth.add_argument("--token-file", type=Path, help="callers must present this bearer token")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--metrics-port", type=int, default=0, help="Prometheus metrics port (0: off)")
    serve.add_argument("--limit-bytes", type=int, help="override the store limit from the spec (tests, migrations)")
    serve.add_argument("--housekeeping-seconds", type=float, default=10.0)
    serve.add_argument("--verify-every", default="6h", help="verify the sealed segments in place this often")
    bounded.add_arguments(serve, bounded.SINK_BOUNDS)
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from iotsec.api.durations import parse_duration
    from iotsec.api.quantities import quantity_bytes
    from iotsec.audittrail import chain
    from iotsec.audittrail.anomaly import AnomalyDetector
    from iotsec.audittrail.store import AuditStore
    from iotsec.build.audit import canary_name
    from iotsec.pki.tls import ReloadingTLS
    from iotsec.servers import bounded
    from iotsec.servers.auditsink.server import Authentication, Canary, Sink, serve
    from iotsec.services.audit import published_head, signing_key

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kube = publisher = generation = None
    if args.audit_policy:
        from iotsec.build.audit import SINK_FIELD_MANAGER
        from iotsec.k8s.kube import Kube

        kube = Kube(field_manager=SINK_FIELD_MANAGER)
        spec, generation = _spec_from_cluster(kube, args.audit_policy)
    else:
        spec = _spec_from_file(args.spec)
    if spec is None:
        return EXIT_USAGE
    try:
        key = signing_key(
            kube,
            args.namespace,
            secret=args.signing_key_secret,
            key_file=args.signing_key,
            readonly=args.signing_key_readonly,
        )
    except (OSError, ValueError) as exc:
        fail("audit serve", f"signing key {args.signing_key or args.signing_key_secret}: {exc}")
        return EXIT_USAGE
    store = AuditStore(args.store, key, limit_bytes=args.limit_bytes or quantity_bytes(spec.sink.storage.size))
    canary = None
    if args.audit_policy:
        canary = Canary(args.namespace, canary_name(args.audit_policy), parse_duration(spec.sink.canary.deadline))
    sink = Sink(store, AnomalyDetector([], []), canary=canary)
    store.on_quarantine = lambda _: setattr(sink.state, "last_verified", None)  # report it at the next housekeeping
    sink.configure(spec, args.limit_bytes)
    sink.verify_every = parse_duration(args.verify_every)
    background = []
    if kube is not None:
        from iotsec.servers.auditsink.reporter import Publisher

        publisher = Publisher(kube, args.audit_policy, args.namespace, sink, args.limit_bytes, generation)
        if head := published_head(kube, args.audit_policy):
            sink.check_published_head(*head)
        sink.on_hits = publisher.queue_hits
        background.append(publisher.tick)
    if args.metrics_port:
        start_http_server(args.metrics_port)
    if args.client_ca:
        auth, tls = Authentication("clientCertificate"), ReloadingTLS(args.tls_cert, args.tls_key, args.client_ca)
    else:
        token = args.token_file.read_text().strip()
        auth, tls = Authentication("bearerToken", token), ReloadingTLS(args.tls_cert, args.tls_key)
    log.info("audit store %s: key %s, %d records", args.store, chain.key_id(key.public_key()), store.records)
    asyncio.run(
        serve(
            sink,
            auth,
            host=args.host,
            port=args.port,
            tls=tls,
            housekeeping_seconds=args.housekeeping_seconds,
            background=background,
            bounds=bounded.bounds_from_args(args),
        )
    )
    return EXIT_OK


def _spec_from_cluster(kube: Kube, name: str) -> tuple[AuditPolicySpec | None, int | None]:
    from iotsec.services.audit import AuditLookupError, policy_spec

    try:
        return policy_spec(kube, name)
    except AuditLookupError as exc:
        fail("audit serve", exc)
        return None, None


# ---------------------------------------------------------------------------------------------- export / verify


def _register_export(commands: Any) -> None:
    export = commands.add_parser("export", help="write a verifiable bundle of sealed segments (X1369-9.6.4-5)")
    export.add_argument("--store", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True, help="bundle folder to create (must not exist)")
    export.add_argument("--since", type=_moment, help="RFC 3339 time, a date, or a duration ago such as 7d")
    export.add_argument("--until", type=_moment, help="RFC 3339 time, a date, or a duration ago")
    export.set_defaults(handler=_export)


def _moment(text: str) -> datetime:
    from iotsec.api.durations import parse_duration

    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        return parse_rfc3339(text, naive_is_utc=True)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a time (2026-11-01T00:00:00Z), a date nor a duration"
        ) from None


def _export(args: argparse.Namespace) -> int:
    from iotsec.audittrail.store import export_bundle

    if args.out.exists():
        fail("audit export", f"{args.out} exists; name a new folder")
        return EXIT_USAGE
    if not (args.store / "signing.pub").exists():
        fail("audit export", f"{args.store} is not an audit store (no signing.pub)")
        return EXIT_USAGE
    names = export_bundle(args.store, args.out, args.since, args.until)
    print(f"exported {len(names)} sealed segments to {args.out} (marked exported in {args.store})")
    return EXIT_OK


def _register_verify(commands: Any) -> None:
    verify = commands.add_parser("verify", help="check every hash and signature of a store or bundle")
    verify.add_argument("path", type=Path, help="an audit store folder or an exported bundle")
    verify.add_argument("--public-key", type=Path, help="the trusted key (default: the copy in the folder)")
    verify.add_argument("--bundle", action="store_true", help="PATH is an export (it may start after seq 1)")
    verify.add_argument("--expect-seq", type=int, help="status.chainHeadSeq: catches records cut off the end")
    verify.add_argument("--expect-head", help="status.chainHead: the hash the record at --expect-seq must have")
    verify.add_argument(
        "--allow-legacy",
        action="store_true",
        help="exit 0 even when segments are UNVERIFIED (written before checkpoints: no signature covers them)",
    )
    verify.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="text")
    verify.set_defaults(handler=_verify)


def _verify(args: argparse.Namespace) -> int:
    from iotsec.audittrail.chain import PUBLIC_KEY, load_public_key
    from iotsec.audittrail.verify import verify

    try:
        trusted = load_public_key(args.public_key) if args.public_key else None
        if trusted is None and not (args.path / PUBLIC_KEY).exists():
            raise ValueError(f"{args.path} has no {PUBLIC_KEY}; pass --public-key")
        if (args.expect_seq is None) != (args.expect_head is None):
            raise ValueError("--expect-seq and --expect-head go together")
        expect = (args.expect_seq, args.expect_head) if args.expect_seq is not None else None
        report = verify(args.path, trusted, bundle=args.bundle, expect=expect)
    except (OSError, ValueError) as exc:
        fail("audit verify", exc)
        return EXIT_USAGE
    if args.output == "json":
        print_json(report.as_dict())
    else:
        print(_verify_text(report))
    if not report.ok:
        return EXIT_BROKEN
    if report.unverified and not args.allow_legacy:
        # a forger who strips every checkpoint can make records look older than checkpoints: never OK by default
        fail(
            "audit verify",
            f"{len(report.unverified)} UNVERIFIED segments (no signature covers their records); "
            "pass --allow-legacy if they are known to predate checkpoints",
        )
        return EXIT_BROKEN
    return EXIT_OK


def _verify_text(report: Any) -> str:
    lines = [
        f"key {report.key_id} ({report.key_source})",
        f"{report.records} records in {report.segments} segments ({report.sealed} sealed), head {report.head[:16]}…",
        *report.notes,
        *(f"UNVERIFIED: {entry}" for entry in report.unverified),
    ]
    if report.broken:
        lines.append(f"BROKEN: {report.broken}")
    elif report.unverified:
        lines.append(
            "OK: every hash, link and signature verifies; the UNVERIFIED records above are covered by no signature "
            "(accepted only with --allow-legacy)"
        )
    else:
        lines.append("OK: every hash, link and signature verifies")
    return "\n".join(lines)
