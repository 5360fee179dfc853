"""`iotsec report`: the X.1369 conformance report, offline from manifests or live from a cluster (same probes)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from iotsec.cli.common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, fail, rfc3339_argument
from iotsec.conformance.model import WORST_FIRST, Verdict
from iotsec.model.manifests import clip, load_documents, shape_problem

FORMATS = ("text", "json", "markdown", "html")
MAX_DOCUMENT_BYTES = 256 * 2**20  # a report of 1,000 namespaces is ~10 MB; this bounds what --document reads
FAIL_ON = {"partial": Verdict.PARTIAL, "not-met": Verdict.NOT_MET}
EPILOG = """exit codes:
  0  the report was written (and, with --fail-on, no control in the view is that bad)
  1  --fail-on: some control's verdict is at least as bad as the level given
  2  invalid input or usage: unreadable files, objects that are not Kubernetes objects, unreachable cluster"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "report",
        help="the X.1369 conformance report: a verdict per control and scope, with its evidence",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="manifests to report on offline (files, folders)")
    parser.add_argument("--cluster", action="store_true", help="read the cluster (kubeconfig) instead of files")
    parser.add_argument("--context", help="kubeconfig context (with --cluster)")
    parser.add_argument(
        "--document",
        metavar="FILE",
        help="render a report written earlier with -o json (checked against its schema) in another -o format",
    )
    parser.add_argument("-o", "--output", choices=FORMATS, default="text", help="output format (default text)")
    parser.add_argument("--output-file", metavar="FILE", help="write the report here instead of stdout")
    parser.add_argument("--domain", help="only this SecurityDomain's scopes (cluster-wide facts stay)")
    parser.add_argument("--tenant", help="only this TenantIsolation's scopes")
    parser.add_argument("--namespace", help="only this namespace")
    parser.add_argument("--fail-on", choices=tuple(FAIL_ON), help="exit 1 when a control is at least this bad")
    parser.add_argument("--now", type=rfc3339_argument, help="judge as of this time (RFC 3339; default: now)")
    parser.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    problem = _usage_problem(args)
    if problem:
        fail("report", problem)
        return EXIT_USAGE
    document = _stored(args.document) if args.document else _assessed(args)
    if document is None:
        return EXIT_USAGE
    _write(_rendered(document, args.output), args.output_file)
    if args.fail_on and _at_least(document, FAIL_ON[args.fail_on]):
        return EXIT_INVALID
    return EXIT_OK


def _usage_problem(args: argparse.Namespace) -> str:
    if sum((bool(args.paths), args.cluster, bool(args.document))) != 1:
        return "give manifest paths, or --cluster to read the cluster, or --document FILE (one source, not both)"
    if args.context and not args.cluster:
        return "--context needs --cluster"
    if args.document and (args.domain or args.tenant or args.namespace or args.now):
        return (
            "--document renders the report as it was written: --domain, --tenant, --namespace and --now need a new one"
        )
    return ""


def _assessed(args: argparse.Namespace) -> dict[str, Any] | None:
    now = args.now or datetime.now(UTC)
    inventory = _live(args.context, now) if args.cluster else _files(args.paths, now)
    if inventory is None:
        return None
    from iotsec.conformance.assess import assess, filtered
    from iotsec.conformance.document import to_document

    return to_document(filtered(assess(inventory), args.domain, args.tenant, args.namespace))


def _stored(path: str) -> dict[str, Any] | None:
    """A document written by `iotsec report -o json`, only when its schema says it is one (the renderers trust it)."""
    import jsonschema

    from iotsec.conformance.document import schema

    try:
        with open(path, "rb") as handle:
            text = handle.read(MAX_DOCUMENT_BYTES + 1)
        if len(text) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"over {MAX_DOCUMENT_BYTES // 2**20} MiB")
        document = json.loads(text)
        jsonschema.validate(document, schema())
    except (OSError, ValueError) as exc:
        fail("report", f"{path}: {clip(exc)}")
        return None
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "the document"
        fail("report", f"{path}: not an iotsec conformance report: {where}: {clip(exc.message)}")
        return None
    return dict(document)


def _files(paths: list[str], now: datetime) -> Any:
    from iotsec.conformance.inventory import from_documents

    documents = list(load_documents(paths))
    bad = [d for d in documents if shape_problem(d.obj) is not None]
    if bad:
        fail("report", f"{bad[0].where}: {shape_problem(bad[0].obj)} ({len(bad)} documents are no Kubernetes objects)")
        return None
    return from_documents(documents, now, " ".join(paths))


def _live(context: str | None, now: datetime) -> Any:
    from iotsec.services.inventory import connect, gather

    try:
        kube, server = connect(context)
        return gather(kube, now, server)
    except Exception as exc:  # kubeconfig missing, connection refused, TLS, 401: one clear line, exit 2
        fail("report", f"cannot read the cluster: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return None


def _rendered(document: dict[str, Any], output: str) -> str:
    from iotsec.conformance import html, render

    renderers: dict[str, Callable[[dict[str, Any]], str]] = {
        "json": lambda d: json.dumps(d, indent=2) + "\n",
        "text": render.text,
        "markdown": render.markdown,
        "html": html.html,
    }
    return renderers[output](document)


def _write(text: str, output_file: str | None) -> None:
    if output_file:
        Path(output_file).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _at_least(document: dict[str, Any], level: Verdict) -> bool:
    bad = {str(v) for v in WORST_FIRST[: WORST_FIRST.index(level) + 1]}
    return any(control["verdict"] in bad for control in document["controls"])
