"""The `iotsec` command line: works without a cluster for everything but `run`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from iotsec import __version__
from iotsec.admission import snapshot as checking
from iotsec.api.crd import all_crds, crd_filename
from iotsec.api.kinds import KINDS
from iotsec.api.validation import is_iotsec, validate_resource
from iotsec.build import render
from iotsec.model.config import Config, ConfigError
from iotsec.model.controls import CONTROLS, Coverage
from iotsec.model.manifests import ManifestError, dump_yaml, load_documents
from iotsec.model.time import parse_rfc3339
from iotsec.servers import bounded

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
NOT_YET = {
    "report": "the conformance report arrives after the policy engine (issue #4)",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ManifestError as exc:
        print(f"iotsec: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iotsec",
        description="ITU-T X.1369 security controls for IoT service platforms on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"iotsec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    crds = sub.add_parser("crds", help="print, write or check the CustomResourceDefinitions")
    crds.add_argument("--write", metavar="DIR", action="append", default=[], help="write one file per CRD into DIR")
    crds.add_argument(
        "--check",
        metavar="DIR",
        action="append",
        default=[],
        help="exit 1 if DIR's CRDs differ from the models",
    )
    crds.set_defaults(handler=_crds)

    validate = sub.add_parser("validate", help="validate iotsec custom resources in files or folders")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="YAML/JSON files or folders (- for stdin)")
    validate.add_argument("-o", "--output", choices=("text", "json"), default="text")
    validate.set_defaults(handler=_validate)

    controls = sub.add_parser("controls", help="list the X.1369 control catalog")
    controls.add_argument("--coverage", choices=[c.value for c in Coverage], help="only controls with this coverage")
    controls.add_argument("-o", "--output", choices=("text", "json"), default="text")
    controls.set_defaults(handler=_controls)

    render = sub.add_parser("render", help="print every object the operator would apply for custom resources")
    render.add_argument(
        "paths", nargs="+", metavar="PATH", help="custom resources (and Namespace objects for selectors)"
    )
    render.add_argument("--summary", action="store_true", help="members and reachability matrix instead of YAML")
    render.set_defaults(handler=_render)

    run = sub.add_parser("run", help="run the operator against the cluster (in-cluster or KUBECONFIG)")
    run.add_argument("--resync-seconds", type=float, help="drift-correction interval (IOTSEC_RESYNC_SECONDS, 60)")
    run.add_argument("--metrics-port", type=int, help="Prometheus port, 0 disables (IOTSEC_METRICS_PORT, 8000)")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint ('' disables)")
    run.add_argument("--peering", metavar="NAME", help="kopf peering name for several replicas (default: standalone)")
    run.add_argument("-v", "--verbose", action="store_true")
    run.add_argument("--debug", action="store_true")
    run.set_defaults(handler=_run)

    check = sub.add_parser("check", help="check manifests as the admission webhook would (no cluster needed)")
    check.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="manifests (- for stdin, e.g. helm template ... | iotsec check -); iotsec custom "
        "resources, Namespaces and StorageClasses among them give the context",
    )
    check.add_argument("-o", "--output", choices=("text", "json"), default="text")
    check.add_argument("--now", help="evaluate exception expiry at this RFC 3339 time (default: now)")
    check.add_argument(
        "--unassigned",
        choices=("enforce", "warn", "audit"),
        default="enforce",
        help="mode for namespaces in no SecurityDomain (default: enforce)",
    )
    check.set_defaults(handler=_check)

    hook = sub.add_parser("webhook", help="serve the validating admission webhook over HTTPS")
    hook.add_argument("--host", default="0.0.0.0")
    hook.add_argument("--port", type=int, default=8443)
    hook.add_argument("--tls-cert-file", type=Path, help="serving certificate (reloaded when it changes)")
    hook.add_argument("--tls-key-file", type=Path, help="its private key")
    hook.add_argument("--tls-secret-ref", metavar="NAMESPACE/NAME", help="read the pair from this Secret via the API")
    hook.add_argument(
        "--context",
        nargs="+",
        metavar="PATH",
        help="take SecurityDomains etc. from these files instead of the cluster (no API access)",
    )
    hook.add_argument("--refresh-seconds", type=float, default=10.0, help="cluster state and certificate refresh")
    hook.add_argument("--metrics-port", type=int, default=8001, help="Prometheus port, 0 disables")
    hook.add_argument(
        "--unassigned",
        choices=("enforce", "warn", "audit"),
        default="enforce",
        help="mode for namespaces in no SecurityDomain",
    )
    bounded.add_arguments(hook, bounded.WEBHOOK_BOUNDS)
    hook.set_defaults(handler=_webhook)

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
    bundle = config.add_mutually_exclusive_group()
    bundle.add_argument("--ca-bundle", type=Path, metavar="FILE", help="fill caBundle with this PEM CA bundle")
    bundle.add_argument(
        "--ca-from-secret",
        metavar="NAMESPACE/NAME",
        help="fill caBundle with the CA of the webhook TLS Secret the operator keeps (read through the API)",
    )
    config.set_defaults(handler=_webhook_config)

    device = sub.add_parser("device", help="issue, revoke and list device certificates of a tenant's device CA")
    device_sub = device.add_subparsers(dest="action", required=True, metavar="ACTION")
    release = argparse.ArgumentParser(add_help=False)
    release.add_argument(
        "--namespace",
        help="where the device CA Secret and registry are: the release namespace (default: where the tenant's "
        "status records them, else iotsec-system); issue and revoke refuse one other than the recorded home",
    )
    issue = device_sub.add_parser("issue", parents=[release], help="issue a certificate and key bound to a device id")
    issue.add_argument("--tenant", required=True, help="TenantIsolation name")
    issue.add_argument("--device-id", required=True)
    issue.add_argument("--class", dest="device_class", required=True, help="a deviceClasses name of the tenant")
    issue.add_argument("--manufacturer", required=True)
    issue.add_argument("--model", required=True)
    issue.add_argument("--out", type=Path, default=Path("."), help="folder for ID.crt, ID.key (0600), ca-bundle.crt")
    issue.set_defaults(handler=_device_issue)
    revoke = device_sub.add_parser("revoke", parents=[release], help="revoke a device's certificates (CRLs follow)")
    revoke.add_argument("--tenant", required=True)
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("--serial", type=int)
    target.add_argument("--device-id")
    revoke.set_defaults(handler=_device_revoke)
    listing = device_sub.add_parser("list", parents=[release], help="the tenant's issued and revoked certificates")
    listing.add_argument("tenant", metavar="TENANT", help="TenantIsolation name")
    listing.add_argument("-o", "--output", choices=["table", "json"], default="table")
    listing.set_defaults(handler=_device_list)

    rbac = sub.add_parser("rbac", help="write or check the chart's RBAC rules (from the table in iotsec/build/rbac.py)")
    rbac.add_argument("--write", metavar="DIR", help="write operator-rules.yaml and webhook-rules.yaml into DIR")
    rbac.add_argument("--check", metavar="DIR", help="exit 1 if DIR's rule files differ from the table")
    rbac.set_defaults(handler=_rbac)

    restore = sub.add_parser(
        "restore", help="restore a BackupPolicy's snapshot into a new (or, on request, existing) claim"
    )
    restore.add_argument("policy", help="BackupPolicy name")
    restore.add_argument("-n", "--namespace", required=True)
    restore.add_argument("--snapshot", default="latest", help="snapshot id (default: latest)")
    restore.add_argument("--claim", help="the backed-up claim whose files to restore (default: --target-pvc)")
    restore.add_argument("--target-pvc", help="restore into this claim (default: a new claim POLICY-restore-TIME)")
    restore.add_argument("--overwrite", action="store_true", help="allow restoring over an existing claim")
    restore.add_argument("--size", default="10Gi", help="size of a new claim")
    restore.add_argument("--storage-class", help="StorageClass of a new claim")
    restore.add_argument(
        "--image", help="the iotsec image of the restore Job (default: the one the policy's backup CronJob runs)"
    )
    restore.set_defaults(handler=_restore)

    backup = sub.add_parser(
        "backup",
        help="run one restic operation of a BackupPolicy (what its Jobs run; also by hand)",
        description="run: initialise missing repositories, back up, copy off-site, apply retention. "
        "init|verify|restore|drill: that operation alone. Options as `python -m iotsec.servers.backupjob.runner -h`.",
    )
    backup.add_argument("operation", choices=("run", "init", "verify", "restore", "drill"))
    backup.add_argument("options", nargs=argparse.REMAINDER, help="--config CONFIG.json [--result FILE] ...")
    backup.set_defaults(handler=_backup)

    from iotsec.cli import audit as audit_cli

    audit_cli.register(sub)

    for name, what in NOT_YET.items():
        stub = sub.add_parser(name, help=f"(not yet implemented) {what.split(' arrive')[0]}")
        stub.add_argument("args", nargs=argparse.REMAINDER)
        stub.set_defaults(handler=_not_yet(name))
    return parser


def _crds(args: argparse.Namespace) -> int:
    rendered = {crd_filename(info): dump_yaml([crd]) for info, crd in zip(KINDS, all_crds(), strict=True)}
    if not args.write and not args.check:
        sys.stdout.write("".join(rendered.values()))
        return EXIT_OK
    for folder in map(Path, args.write):
        folder.mkdir(parents=True, exist_ok=True)
        for filename, text in rendered.items():
            (folder / filename).write_text(text, encoding="utf-8")
        print(f"wrote {len(rendered)} CRDs to {folder}")
    drifted = [problem for folder in map(Path, args.check) for problem in _crd_drift(folder, rendered)]
    for problem in drifted:
        print(problem, file=sys.stderr)
    if drifted:
        print("regenerate with: make crds", file=sys.stderr)
    return EXIT_INVALID if drifted else EXIT_OK


def _crd_drift(folder: Path, rendered: dict[str, str]) -> list[str]:
    problems = []
    for filename, text in rendered.items():
        path = folder / filename
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: differs from what the API models generate")
    extra = {p.name for p in folder.glob("*.yaml")} - set(rendered) if folder.is_dir() else set()
    problems += [f"{folder / name}: not generated by the API models (stale?)" for name in sorted(extra)]
    return problems


def _validate(args: argparse.Namespace) -> int:
    results, skipped = [], 0
    for document in load_documents(args.paths):
        if not is_iotsec(document.obj):
            skipped += 1
            continue
        problems = validate_resource(document.obj)
        results.append({"source": document.where, "object": document.title, "problems": problems})
    invalid = [r for r in results if r["problems"]]
    if args.output == "json":
        print(json.dumps([{**r, "problems": [str(p) for p in r["problems"]]} for r in results], indent=2))
    else:
        for result in results:
            mark = "INVALID" if result["problems"] else "ok     "
            print(f"{mark} {result['object']}  ({result['source']})")
            for problem in result["problems"]:
                print(f"          {problem}")
        summary = f"{len(results)} iotsec resources: {len(results) - len(invalid)} valid, {len(invalid)} invalid"
        print(f"{summary}; {skipped} other objects skipped")
    return EXIT_INVALID if invalid else EXIT_OK


def _controls(args: argparse.Namespace) -> int:
    selected = [c for c in CONTROLS if not args.coverage or c.coverage == args.coverage]
    if args.output == "json":
        rows = [
            {
                "id": c.id,
                "area": c.area_title,
                "requirement": c.requirement,
                "k8sControl": c.k8s_control,
                "mechanisms": list(c.mechanisms),
                "coverage": str(c.coverage),
            }
            for c in selected
        ]
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for c in selected:
        print(f"{c.id:<18} {c.coverage:<13} {c.requirement}")
    counts = {cov: sum(1 for c in selected if c.coverage == cov) for cov in Coverage}
    print(f"{len(selected)} controls: " + ", ".join(f"{n} {cov}" for cov, n in counts.items()))
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    now = parse_rfc3339(args.now, "--now") if args.now else datetime.now(UTC)
    report = checking.check(load_documents(args.paths), now, args.unassigned)
    for document, problems in report.invalid:
        print(f"INVALID {document.title} ({document.where}): " + "; ".join(map(str, problems)), file=sys.stderr)
    if report.invalid:
        return EXIT_USAGE
    if args.output == "json":
        print(json.dumps([_checked_json(c) for c in report.checked], indent=2))
    else:
        _print_check(report)
    return EXIT_INVALID if report.violations else EXIT_OK


def _checked_json(checked: checking.Checked) -> dict[str, object]:
    decision = checked.decision
    return {
        "source": checked.document.where,
        "object": checked.document.title,
        "namespace": checked.namespace,
        "domain": checked.domain,
        "mode": decision.mode,
        "allowed": decision.allowed,
        "violations": [v.as_dict() for v in decision.violations],
        "exceptionsUsed": [u.line() for u in decision.exceptions_used],
    }


def _print_check(report: checking.Report) -> None:
    for checked in report.checked:
        decision = checked.decision
        if not decision.violations and not decision.exceptions_used:
            continue
        verdict = (
            "DENIED"
            if not decision.allowed
            else f"ADMITTED ({decision.mode} mode)"
            if decision.violations
            else "ADMITTED"
        )
        print(f"{verdict} {checked.document.title}  ({checked.document.where}, domain {checked.domain or '-'})")
        for violation in decision.violations:
            print(f"  {violation.line()}")
        for use in decision.exceptions_used:
            print(f"  note: {use.line()}")
    objects = len(report.checked)
    failing = sum(1 for c in report.checked if c.decision.violations)
    print(f"{objects} objects checked: {objects - failing} clean, {failing} with {report.violations} violations")


def _webhook(args: argparse.Namespace) -> int:
    import asyncio
    import tempfile

    from prometheus_client import start_http_server

    from iotsec.pki.tls import ReloadingTLS
    from iotsec.servers.webhook.server import StaticSnapshot, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if bool(args.tls_secret_ref) == bool(args.tls_cert_file and args.tls_key_file):
        print("iotsec webhook: give --tls-cert-file and --tls-key-file, or --tls-secret-ref", file=sys.stderr)
        return EXIT_USAGE
    tasks = []
    if args.context:
        snapshot = checking.snapshot_from_objects(
            [d.obj for d in load_documents(args.context) if isinstance(d.obj, dict)],
            args.unassigned,
            assume_named_namespaces_exist=True,
        )
        source = StaticSnapshot(snapshot)
    else:
        from iotsec.k8s.kube import Kube
        from iotsec.servers.webhook.cluster import ClusterSnapshot

        settings = _settings("webhook")
        if settings is None:
            return EXIT_USAGE
        source = ClusterSnapshot(Kube(), args.refresh_seconds, args.unassigned, settings.platform)
    if args.tls_secret_ref:
        from iotsec.k8s.kube import Kube
        from iotsec.servers.webhook.cluster import SecretFiles

        namespace, _, name = args.tls_secret_ref.partition("/")
        files = SecretFiles(Kube(), namespace, name, Path(tempfile.mkdtemp(prefix="iotsec-webhook-tls-")))
        files.sync()
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
            await serve(source, args.host, args.port, tls, args.refresh_seconds, bounds=bounded.bounds_from_args(args))
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
        bundle = _webhook_ca_bundle(args.ca_bundle, args.ca_from_secret)
    except (OSError, ValueError) as exc:
        print(f"iotsec webhook-config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    manifest = validating_webhook_configuration(
        args.name,
        client_config(args.url, service, bundle),
        args.operator_namespace,
        args.exclude,
        args.timeout_seconds,
        args.operator_user,
        args.server_minor,
    )
    sys.stdout.write(dump_yaml([manifest]))
    return EXIT_OK


def _webhook_ca_bundle(path: Path | None, secret_ref: str | None) -> str:
    """The PEM bundle for caBundle: from a file, from the operator's webhook TLS Secret, or none ("")."""
    from iotsec.build.webhook import secret_ca_bundle, validated_ca_bundle

    if path is not None:
        return validated_ca_bundle(path.read_text(), str(path))
    if not secret_ref:
        return ""
    from iotsec.k8s.kube import ApiError, Kube
    from iotsec.model import secretdata

    namespace, _, name = secret_ref.partition("/")
    if not namespace or not name:
        raise ValueError(f"--ca-from-secret takes NAMESPACE/NAME, got {secret_ref!r}")
    try:
        secret = Kube().get("v1", "Secret", name, namespace)
    except ApiError as exc:
        raise ValueError(str(exc)) from None
    if secret is None:
        raise ValueError(f"no Secret {namespace}/{name}")
    return secret_ca_bundle(secretdata.decode(secret), f"Secret {namespace}/{name}")


def _device_issue(args: argparse.Namespace) -> int:
    from iotsec.k8s.kube import ApiError, Kube
    from iotsec.services import devices as device_cli

    try:
        issued = device_cli.issue(
            Kube(),
            args.tenant,
            args.device_id,
            args.device_class,
            args.manufacturer,
            args.model,
            args.out,
            args.namespace,
        )
    except (device_cli.DeviceError, ValueError, ApiError) as exc:
        print(f"iotsec device issue: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, device_cli.WrongHomeError) else EXIT_INVALID
    print(json.dumps(issued, indent=2))
    return EXIT_OK


def _device_revoke(args: argparse.Namespace) -> int:
    from iotsec.k8s.kube import ApiError, Kube
    from iotsec.services import devices as device_cli

    try:
        serials = device_cli.revoke(Kube(), args.tenant, args.serial, args.device_id, args.namespace)
    except (device_cli.DeviceError, ValueError, ApiError) as exc:
        print(f"iotsec device revoke: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, device_cli.WrongHomeError) else EXIT_INVALID
    print(f"revoked serials {', '.join(map(str, serials))}; the trust bundles' CRLs follow")
    return EXIT_OK


def _device_list(args: argparse.Namespace) -> int:
    from iotsec.k8s.kube import ApiError, Kube
    from iotsec.services import devices as device_cli

    try:
        rows = device_cli.list_devices(Kube(), args.tenant, args.namespace)
    except (device_cli.DeviceError, ValueError, ApiError) as exc:
        print(f"iotsec device list: {exc}", file=sys.stderr)
        return EXIT_INVALID
    sys.stdout.write(json.dumps(rows, indent=2) + "\n" if args.output == "json" else device_cli.table(rows))
    return EXIT_OK


def _rbac(args: argparse.Namespace) -> int:
    from iotsec.build import rbac

    files = rbac.rule_files()
    if args.write:
        for name, text in files.items():
            (Path(args.write) / name).write_text(text, encoding="utf-8")
    if args.check:
        stale = [
            name
            for name, text in files.items()
            if not (Path(args.check) / name).is_file() or (Path(args.check) / name).read_text() != text
        ]
        for name in stale:
            print(
                f"{Path(args.check) / name}: differs from operator/iotsec/build/rbac.py (run make crds)",
                file=sys.stderr,
            )
        return EXIT_INVALID if stale else EXIT_OK
    if not args.write:
        sys.stdout.write("".join(files.values()))
    return EXIT_OK


def _backup(args: argparse.Namespace) -> int:
    from iotsec.servers.backupjob import runner

    if args.operation != "run":
        return runner.main([args.operation, *args.options])
    # A scheduled run initialises what is missing first (a no-op `restic cat config` once the repositories exist).
    initialised = runner.main(["init", *args.options])
    if initialised != runner.EXIT_OK:
        return initialised
    return runner.main(["backup", *args.options])


def _restore(args: argparse.Namespace) -> int:
    from iotsec.k8s.kube import Kube
    from iotsec.services import restore as restore_cli

    try:
        started = restore_cli.restore(
            Kube(),
            args.policy,
            args.namespace,
            args.snapshot,
            args.target_pvc,
            args.overwrite,
            args.size,
            args.storage_class,
            args.claim,
            args.image,
        )
    except restore_cli.RestoreError as exc:
        print(f"iotsec restore: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(json.dumps(started, indent=2))
    return EXIT_OK


def _render(args: argparse.Namespace) -> int:
    result = render.render(load_documents(args.paths))
    for document, problems in result.invalid:
        print(f"INVALID {document.title} ({document.where})", file=sys.stderr)
        for problem in problems:
            print(f"          {problem}", file=sys.stderr)
    if result.invalid:
        print("nothing rendered: fix the invalid resources first (iotsec validate)", file=sys.stderr)
        return EXIT_INVALID
    if args.summary:
        sys.stdout.write(render.summary(result))
    else:
        sys.stdout.write(dump_yaml(result.objects))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return EXIT_OK


def _settings(command: str) -> Config | None:
    """The process's settings from its environment, read once; None (and every problem printed) when invalid."""
    try:
        settings = Config.from_env(os.environ)
    except ConfigError as error:
        print(f"iotsec {command}: {error}", file=sys.stderr)
        return None
    for name in settings.unknown(os.environ):
        print(f"iotsec {command}: warning: {name} is not an iotsec setting (ignored)", file=sys.stderr)
    return settings


def _run(args: argparse.Namespace) -> int:
    settings = _settings("run")
    if settings is None:
        return EXIT_USAGE
    settings = settings.with_values(resync_seconds=args.resync_seconds, metrics_port=args.metrics_port)
    import kopf  # the operator's dependencies load only for `run`

    from iotsec.controllers import register

    register(settings)

    kopf.configure(verbose=args.verbose, debug=args.debug)
    logging.getLogger("celpy").setLevel(logging.WARNING)  # its DEBUG output traces every CEL evaluation
    kopf.run(
        clusterwide=True,
        liveness_endpoint=args.liveness or None,
        standalone=args.peering is None,
        peering_name=args.peering,
    )
    return EXIT_OK


def _not_yet(name: str) -> Callable[[argparse.Namespace], int]:
    def handler(_: argparse.Namespace) -> int:
        print(f"iotsec {name}: not yet implemented: {NOT_YET[name]}", file=sys.stderr)
        return EXIT_USAGE

    return handler


if __name__ == "__main__":
    sys.exit(main())
