"""`iotsec check`: answer for manifests as the admission webhook would, without a cluster."""

from __future__ import annotations

import argparse
import gc
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from iotsec.admission import snapshot as checking
from iotsec.admission.defaults import CURRENT_MINOR, DEFAULT_NAMESPACE
from iotsec.admission.model import MEMBERSHIP_RULE, Violation, summarise_membership
from iotsec.cli.common import (
    ENFORCEMENT_MODES,
    EXIT_CODES_EPILOG,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    OUTPUT_FORMATS,
    keep_cel_parser_cached,
    print_invalid,
    print_json,
    rfc3339_argument,
)
from iotsec.model.manifests import MESSAGE_LIMIT, Document, clip, load_documents

JSON_FIELD_LIMIT = 4_096  # characters of one field of a violation in -o json (input quoted in it is cut)

EPILOG = f"""{EXIT_CODES_EPILOG}
  With --strict, findings in warn or audit mode (admitted, but reported) exit 1 as well.

Objects are judged as the API server stores them: a namespaced object without metadata.namespace is judged in the
-n namespace (default "default", as kubectl and helm), a cluster-scoped one in none; container ports get protocol
TCP and, with hostNetwork, hostPort = containerPort (Pods; pod templates too before Kubernetes 1.28).
Kinds the webhook does not judge (Secrets, ServiceAccounts, ...) and objects in the namespaces it leaves out
(kube-system, kube-public, kube-node-lease, iotsec-system) are counted as not checked, never as clean.

With --cluster, the objects that exist in the kubeconfig's cluster are judged instead (the background scan's
findings, on demand): every kind the webhook judges, in the namespaces of SecurityDomains, and the cluster-scoped
ones, as stored; a Deployment's ReplicaSets and Pods are answered for by the Deployment. The release namespace
(--release-namespace) and --exclude namespaces are left out as the webhook leaves them out.
"""


def register(sub: Any) -> None:
    check = sub.add_parser(
        "check",
        help="check manifests as the admission webhook would (no cluster needed)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="manifests (- for stdin, e.g. helm template ... | iotsec check -); iotsec custom "
        "resources, Namespaces, StorageClasses, ClusterRoles and ConfigMaps among them give the context",
    )
    check.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="text")
    check.add_argument(
        "-n",
        "--namespace",
        type=_namespace,
        default=DEFAULT_NAMESPACE,
        help="namespace of namespaced objects that name none, as helm --namespace (default: default)",
    )
    check.add_argument(
        "--kube-version",
        type=_minor_version,
        default=CURRENT_MINOR,
        metavar="1.MINOR",
        help="apply the defaults of this Kubernetes version's API server (default: a current one, 1.28 or later)",
    )
    check.add_argument("--strict", action="store_true", help="admitted findings (warn/audit mode) exit 1 too")
    check.add_argument("--list-rules", action="store_true", help="list the rules (as iotsec rules) and exit")
    check.add_argument(
        "--now", type=rfc3339_argument, help="evaluate exception expiry at this RFC 3339 time (default: now)"
    )
    check.add_argument(
        "--unassigned",
        choices=ENFORCEMENT_MODES,
        default="enforce",
        help="mode for namespaces in no SecurityDomain (default: enforce)",
    )
    check.add_argument(
        "--cluster", action="store_true", help="judge the objects in the kubeconfig's cluster instead of files"
    )
    check.add_argument("--context", help="kubeconfig context (with --cluster)")
    check.add_argument(
        "--release-namespace",
        type=_namespace,
        default="iotsec-system",
        help="with --cluster: iotsec's release namespace, which the webhook leaves out (default: iotsec-system)",
    )
    check.add_argument(
        "--exclude",
        type=_namespace,
        action="append",
        default=[],
        metavar="NAMESPACE",
        help="with --cluster: a namespace the webhook leaves out (the chart's webhook.excludedNamespaces); repeatable",
    )
    check.set_defaults(handler=_check)


def _namespace(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", text):
        raise argparse.ArgumentTypeError(f"{clip(text, 40)!r} is not a namespace name (a DNS label)")
    return text


def _minor_version(text: str) -> int:
    found = re.fullmatch(r"v?1\.(\d{1,3})(\.\d+)?", text)
    if not found:
        raise argparse.ArgumentTypeError(f"{clip(text, 40)!r} is not a Kubernetes version like 1.30")
    return int(found.group(1))


def _check(args: argparse.Namespace) -> int:
    if args.list_rules:
        from iotsec.cli.rules import print_rules

        return print_rules(args.output)
    if args.cluster and args.paths:
        print("iotsec check: give PATHs or --cluster, not both", file=sys.stderr)
        return EXIT_USAGE
    if args.context and not args.cluster:
        print("iotsec check: --context needs --cluster", file=sys.stderr)
        return EXIT_USAGE
    if not args.paths and not args.cluster:
        print("iotsec check: give at least one PATH (or --cluster, or --list-rules)", file=sys.stderr)
        return EXIT_USAGE
    now = args.now or datetime.now(UTC)
    notes: list[str] = []
    if args.cluster:
        read = _cluster_report(args, now)
        if read is None:
            return EXIT_USAGE
        report, notes = read
    else:
        keep_cel_parser_cached()
        with _no_cycle_collection():
            documents = load_documents(args.paths)
            report = checking.check(documents, now, args.unassigned, args.namespace, args.kube_version)
    for document, problems in report.invalid:
        print_invalid(document, problems)
    if args.output == "json":
        print_json(_report_json(report))
    else:
        _print_check(report)
        for note in notes:
            print(note)
    if report.invalid or any(note.startswith("not checked, cannot list") for note in notes):
        return EXIT_USAGE
    failing = report.violations if args.strict else report.denied
    return EXIT_INVALID if failing else EXIT_OK


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """The cyclic collector paused while files are read and judged: reading builds a dict, list or string per value
    (10^6 for 3,500 objects), all alive to the end, and every collection the allocations trigger would traverse
    them again (~7 % of such a check). Reading makes no garbage cycles; judging 3,500 objects ~9,000 objects in
    cycles, collected once the collector runs again."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _cluster_report(args: argparse.Namespace, now: datetime) -> tuple[checking.Report, list[str]] | None:
    """The cluster's objects judged by the background scan's code, as a check Report, and the lines that say what
    could not be checked (None: no cluster to read)."""
    from iotsec.k8s.kube import ApiError, Kube, default_api_client
    from iotsec.model.platform import Platform
    from iotsec.services.scan import run_scan

    try:
        api = Kube(default_api_client(args.context))
        outcome = run_scan(api, Platform(namespace=args.release_namespace), args.exclude, now, args.unassigned)
    except (ApiError, OSError, ValueError) as exc:  # no kubeconfig, no such context, unreachable or refused
        print(f"iotsec check: cannot read the cluster: {clip(exc, 300)}", file=sys.stderr)
        return None
    for kind, why in sorted(outcome.unavailable.items()):
        print(f"iotsec check: not checked, cannot list {kind}: {why}", file=sys.stderr)
    notes = [f"not checked, cannot list {kind} (exit 2)" for kind in sorted(outcome.unavailable)]
    outside = outcome.result.outside_domains
    if outside:
        spaces = ", ".join(f"namespace {clip(ns, 60)}: {count}" for ns, count in sorted(outside.items()))
        notes.append(f"not checked, in no SecurityDomain ({spaces})")
    return as_check_report(outcome.result), notes


def as_check_report(result: Any) -> checking.Report:
    """A ScanResult in `iotsec check`'s terms (where: the cluster)."""
    report = checking.Report(not_checked=result.not_checked, excluded=result.excluded)
    for scanned in result.objects:
        document = _cluster_document(scanned.ref)
        report.checked.append(checking.Checked(document, scanned.namespace, scanned.domain, scanned.decision))
    for ref, problem in result.invalid:
        report.invalid.append((_cluster_document(ref), [problem]))
    return report


@dataclass(frozen=True)
class _InCluster(Document):
    """An object read from the cluster: where it is, is the cluster."""

    @property
    def where(self) -> str:
        return self.source


def _cluster_document(ref: Any) -> Document:
    metadata = {"name": ref.name, **({"namespace": ref.namespace} if ref.namespace else {})}
    return _InCluster("cluster", 0, {"apiVersion": ref.api_version, "kind": ref.kind, "metadata": metadata})


def _report_json(report: checking.Report) -> list[dict[str, object]]:
    rows = [_checked_json(c) for c in report.checked]
    rows += [
        {
            "source": document.where,
            "object": document.title,
            "checked": False,
            "invalid": True,
            "problems": [clip(p) for p in problems],
        }
        for document, problems in report.invalid
    ]
    rows += [{"kind": kind, "objects": count, "checked": False} for kind, count in sorted(report.not_checked.items())]
    rows += [
        {"namespace": namespace, "objects": count, "checked": False, "excluded": True}
        for namespace, count in sorted(report.excluded.items())
    ]
    return rows


def _checked_json(checked: checking.Checked) -> dict[str, object]:
    decision = checked.decision
    return {
        "source": checked.document.where,
        "object": checked.title,
        "checked": True,
        "namespace": checked.namespace,
        "domain": checked.domain,
        "mode": decision.mode,
        "allowed": decision.allowed,
        "violations": [
            {key: clip(value, JSON_FIELD_LIMIT) for key, value in v.as_dict().items()} for v in decision.violations
        ],
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
        print(f"{verdict} {checked.title}  ({checked.document.where}, domain {checked.domain or '-'})")
        for violation in decision.violations:
            if violation.rule != MEMBERSHIP_RULE:  # said once per namespace below
                print(f"  {_line(violation)}")
        for use in decision.exceptions_used:
            print(f"  note: {use.line()}")
    for line in summarise_membership(report.checked):
        print(clip(line, 2 * MESSAGE_LIMIT))
    print(_summary(report))


def _line(violation: Violation) -> str:
    """violation.line() with each part bounded: a 10 MB container name or image is quoted short."""
    path, message, fix = (clip(part, 2 * MESSAGE_LIMIT) for part in (violation.path, violation.message, violation.fix))
    return f"[{violation.control} {violation.rule}] {path}: {message} — {fix}"


def _summary(report: checking.Report) -> str:
    objects = len(report.checked)
    failing = sum(1 for c in report.checked if c.decision.violations)
    admitted = failing - report.denied
    line = f"{objects} objects checked: {objects - failing} clean, {failing} with {report.violations} violations"
    if failing:
        line += f" ({report.denied} denied, {admitted} admitted in warn/audit mode)"
    if report.context_objects:
        line += f"; {report.context_objects} context objects"
    if report.not_checked:
        kinds = ", ".join(f"kind {clip(kind, 60)}: {count}" for kind, count in sorted(report.not_checked.items()))
        line += f"; not checked ({kinds})"
    if report.excluded:
        spaces = ", ".join(f"namespace {clip(ns, 60)}: {count}" for ns, count in sorted(report.excluded.items()))
        line += f"; not checked, the webhook leaves these namespaces out ({spaces})"
    if report.invalid:
        line += f"; {len(report.invalid)} invalid (exit 2)"
    return line
