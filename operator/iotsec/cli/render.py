"""`iotsec render`: every object the operator would apply for a set of custom resources (no cluster)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from iotsec.build import render
from iotsec.cli.common import EXIT_CODES_EPILOG, EXIT_INVALID, EXIT_OK, EXIT_USAGE, print_invalid
from iotsec.model.manifests import clip, dump_yaml, load_documents, shape_problem


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "render",
        help="print every object the operator would apply for custom resources",
        epilog=EXIT_CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="custom resources (and Namespace objects for selectors)"
    )
    parser.add_argument("--summary", action="store_true", help="members and reachability matrix instead of YAML")
    parser.set_defaults(handler=_render)


def _render(args: argparse.Namespace) -> int:
    documents, malformed = [], 0
    for document in load_documents(args.paths):
        problem = shape_problem(document.obj)
        if problem is None:
            documents.append(document)
        else:
            malformed += 1
            print_invalid(document, [problem])
    if malformed:
        print("nothing rendered: the input holds documents that are not Kubernetes objects", file=sys.stderr)
        return EXIT_USAGE
    result = render.render(documents)
    for document, problems in result.invalid:
        print(f"INVALID {document.title} ({document.where})", file=sys.stderr)
        for problem in problems:
            print(f"          {clip(problem)}", file=sys.stderr)
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
