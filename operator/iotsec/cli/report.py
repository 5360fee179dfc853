"""`iotsec report`: reserved for the conformance report, which is not implemented yet."""

from __future__ import annotations

import argparse
from typing import Any

from iotsec.cli.common import EXIT_USAGE, fail

WHY = "the X.1369 conformance report is not built yet; `iotsec controls` lists the catalog and what iotsec does"


def register(sub: Any) -> None:
    stub = sub.add_parser("report", help="(not yet implemented) the X.1369 conformance report")
    stub.add_argument("args", nargs=argparse.REMAINDER)
    stub.set_defaults(handler=_not_yet)


def _not_yet(_: argparse.Namespace) -> int:
    fail("report", f"not yet implemented: {WHY}")
    return EXIT_USAGE
