"""`iotsec render`: every object the operator would apply for a set of custom resources (no cluster)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from iotsec.build import render
from iotsec.cli.common import EXIT_INVALID, EXIT_OK
from iotsec.model.manifests import dump_yaml, load_documents


def register(sub: Any) -> None:
    parser = sub.add_parser("render", help="print every object the operator would apply for custom resources")
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="custom resources (and Namespace objects for selectors)"
    )
    parser.add_argument("--summary", action="store_true", help="members and reachability matrix instead of YAML")
    parser.set_defaults(handler=_render)


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
