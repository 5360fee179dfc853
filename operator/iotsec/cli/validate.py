"""`iotsec validate`: check iotsec custom resources as the API server would, and stricter."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from iotsec.api.validation import is_iotsec, validate_resource
from iotsec.cli.common import (
    EXIT_CODES_EPILOG,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    OUTPUT_FORMATS,
    keep_cel_parser_cached,
    print_invalid,
    print_json,
)
from iotsec.model.manifests import clip, load_documents, shape_problem


def register(sub: Any) -> None:
    validate = sub.add_parser(
        "validate",
        help="validate iotsec custom resources in files or folders",
        epilog=EXIT_CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    validate.add_argument("paths", nargs="+", metavar="PATH", help="YAML/JSON files or folders (- for stdin)")
    validate.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="text")
    validate.set_defaults(handler=_validate)


def _validate(args: argparse.Namespace) -> int:
    results: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    malformed = 0
    keep_cel_parser_cached()
    for document in load_documents(args.paths):
        problem = shape_problem(document.obj)
        if problem is not None:
            malformed += 1
            print_invalid(document, [problem])
            continue
        if not is_iotsec(document.obj):
            skipped[clip(document.obj["kind"], 60)] += 1
            continue
        problems = [clip(p) for p in validate_resource(document.obj)]
        results.append({"source": document.where, "object": document.title, "problems": problems})
    invalid = [r for r in results if r["problems"]]
    if args.output == "json":
        print_json(results)
    else:
        for result in results:
            mark = "INVALID" if result["problems"] else "ok     "
            print(f"{mark} {result['object']}  ({result['source']})")
            for problem in result["problems"]:
                print(f"          {problem}")
        print(_summary(len(results), len(invalid), skipped, malformed))
    if malformed:
        return EXIT_USAGE
    return EXIT_INVALID if invalid else EXIT_OK


def _summary(resources: int, invalid: int, skipped: Counter[str], malformed: int) -> str:
    line = f"{resources} iotsec resources: {resources - invalid} valid, {invalid} invalid"
    kinds = ", ".join(f"kind {kind}: {count}" for kind, count in sorted(skipped.items()))
    line += f"; {sum(skipped.values())} other objects skipped" + (f" ({kinds})" if kinds else "")
    if malformed:
        line += f"; {malformed} not Kubernetes objects (exit 2)"
    return line
