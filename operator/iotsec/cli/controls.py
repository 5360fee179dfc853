"""`iotsec controls`: the X.1369 control catalog and what iotsec does about each control."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from iotsec.cli.common import EXIT_OK, OUTPUT_FORMATS, print_json
from iotsec.model.controls import CONTROLS, Control, Coverage

WIDTH = 120
ID_WIDTH, COVERAGE_WIDTH = 18, 13
TEXT_INDENT = " " * (ID_WIDTH + 1 + COVERAGE_WIDTH + 1)  # where the requirement starts
MISSING_LABEL = "missing: "


def register(sub: Any) -> None:
    controls = sub.add_parser(
        "controls",
        help="list the X.1369 control catalog",
        description="The X.1369 control catalog and how far iotsec goes for each control: enforced (a mechanism "
        "meets the requirement and a test proves it), partial (the line below says what is missing), "
        "evidenced (iotsec records or reports, an auditor judges) or out-of-scope.",
    )
    controls.add_argument("--coverage", choices=[c.value for c in Coverage], help="only controls with this coverage")
    controls.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="text")
    controls.set_defaults(handler=_controls)


def _controls(args: argparse.Namespace) -> int:
    selected = [c for c in CONTROLS if not args.coverage or c.coverage == args.coverage]
    if args.output == "json":
        print_json([_control_json(c) for c in selected])
        return EXIT_OK
    for c in selected:
        print("\n".join(_control_lines(c)))
    print(count_line(selected))
    return EXIT_OK


def count_line(controls: list[Control]) -> str:
    """`N controls: a enforced, b partial, c evidenced, d out-of-scope`, every coverage named even at 0."""
    counts = {cov: sum(1 for c in controls if c.coverage == cov) for cov in Coverage}
    return f"{len(controls)} controls: " + ", ".join(f"{n} {cov}" for cov, n in counts.items())


def _control_lines(control: Control) -> list[str]:
    """The control's row, wrapped to WIDTH, and for a partial control what is missing on indented lines below."""
    first = f"{control.id:<{ID_WIDTH}} {control.coverage:<{COVERAGE_WIDTH}} "
    lines = _wrap(control.requirement, first, TEXT_INDENT)
    if control.coverage is Coverage.PARTIAL and control.missing:
        lines += _wrap(control.missing, TEXT_INDENT + MISSING_LABEL, TEXT_INDENT + " " * len(MISSING_LABEL))
    return lines


def _wrap(text: str, first: str, rest: str) -> list[str]:
    """Wrap at spaces only, so ids like `iotsec.io/rate-limit` stay whole and searchable."""
    return textwrap.wrap(
        text, WIDTH, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False, break_long_words=False
    )


def _control_json(control: Control) -> dict[str, object]:
    return {
        "id": control.id,
        "area": control.area_title,
        "requirement": control.requirement,
        "k8sControl": control.k8s_control,
        "mechanisms": list(control.mechanisms),
        "coverage": str(control.coverage),
        "proofs": list(control.proofs),
        "missing": control.missing,
    }
