"""`iotsec check`: answer for manifests as the admission webhook would, without a cluster."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from iotsec.admission import snapshot as checking
from iotsec.cli.common import (
    ENFORCEMENT_MODES,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    OUTPUT_FORMATS,
    print_json,
    rfc3339_argument,
)
from iotsec.model.manifests import load_documents


def register(sub: Any) -> None:
    check = sub.add_parser("check", help="check manifests as the admission webhook would (no cluster needed)")
    check.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="manifests (- for stdin, e.g. helm template ... | iotsec check -); iotsec custom "
        "resources, Namespaces and StorageClasses among them give the context",
    )
    check.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="text")
    check.add_argument(
        "--now", type=rfc3339_argument, help="evaluate exception expiry at this RFC 3339 time (default: now)"
    )
    check.add_argument(
        "--unassigned",
        choices=ENFORCEMENT_MODES,
        default="enforce",
        help="mode for namespaces in no SecurityDomain (default: enforce)",
    )
    check.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    now = args.now or datetime.now(UTC)
    report = checking.check(load_documents(args.paths), now, args.unassigned)
    for document, problems in report.invalid:
        print(f"INVALID {document.title} ({document.where}): " + "; ".join(map(str, problems)), file=sys.stderr)
    if report.invalid:
        return EXIT_USAGE
    if args.output == "json":
        print_json([_checked_json(c) for c in report.checked])
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
