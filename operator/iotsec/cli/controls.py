"""`iotsec controls`: the X.1369 control catalog and what iotsec does about each control."""

from __future__ import annotations

import argparse
from typing import Any

from iotsec.cli.common import EXIT_OK, OUTPUT_FORMATS, print_json
from iotsec.model.controls import CONTROLS, Control, Coverage


def register(sub: Any) -> None:
    controls = sub.add_parser("controls", help="list the X.1369 control catalog")
    controls.add_argument("--coverage", choices=[c.value for c in Coverage], help="only controls with this coverage")
    controls.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="text")
    controls.set_defaults(handler=_controls)


def _controls(args: argparse.Namespace) -> int:
    selected = [c for c in CONTROLS if not args.coverage or c.coverage == args.coverage]
    if args.output == "json":
        print_json([_control_json(c) for c in selected])
        return EXIT_OK
    for c in selected:
        print(f"{c.id:<18} {c.coverage:<13} {c.requirement}")
    counts = {cov: sum(1 for c in selected if c.coverage == cov) for cov in Coverage}
    print(f"{len(selected)} controls: " + ", ".join(f"{n} {cov}" for cov, n in counts.items()))
    return EXIT_OK


def _control_json(control: Control) -> dict[str, object]:
    return {
        "id": control.id,
        "area": control.area_title,
        "requirement": control.requirement,
        "k8sControl": control.k8s_control,
        "mechanisms": list(control.mechanisms),
        "coverage": str(control.coverage),
    }
