"""`iotsec rbac`: write or check the chart's RBAC rule files (from the table in `iotsec.build.rbac`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from iotsec.cli.common import EXIT_INVALID, EXIT_OK


def register(sub: Any) -> None:
    rbac = sub.add_parser("rbac", help="write or check the chart's RBAC rules (from the table in iotsec/build/rbac.py)")
    rbac.add_argument("--write", metavar="DIR", help="write operator-rules.yaml and webhook-rules.yaml into DIR")
    rbac.add_argument("--check", metavar="DIR", help="exit 1 if DIR's rule files differ from the table")
    rbac.set_defaults(handler=_rbac)


def _rbac(args: argparse.Namespace) -> int:
    from iotsec.build import rbac

    files = rbac.rule_files()
    if args.write:
        for name, text in files.items():
            (Path(args.write) / name).write_text(text, encoding="utf-8")
    if args.check:
        stale = [name for name, text in files.items() if _differs(Path(args.check) / name, text)]
        for name in stale:
            print(
                f"{Path(args.check) / name}: differs from operator/iotsec/build/rbac.py (run make crds)",
                file=sys.stderr,
            )
        return EXIT_INVALID if stale else EXIT_OK
    if not args.write:
        sys.stdout.write("".join(files.values()))
    return EXIT_OK


def _differs(path: Path, text: str) -> bool:
    return not path.is_file() or path.read_text() != text
