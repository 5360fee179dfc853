"""`iotsec validate`: check iotsec custom resources as the API server would, and stricter."""

from __future__ import annotations

import argparse
from typing import Any

from iotsec.api.validation import is_iotsec, validate_resource
from iotsec.cli.common import EXIT_INVALID, EXIT_OK, OUTPUT_FORMATS, print_json
from iotsec.model.manifests import load_documents


def register(sub: Any) -> None:
    validate = sub.add_parser("validate", help="validate iotsec custom resources in files or folders")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="YAML/JSON files or folders (- for stdin)")
    validate.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="text")
    validate.set_defaults(handler=_validate)


def _validate(args: argparse.Namespace) -> int:
    results, skipped = [], 0
    for document in load_documents(args.paths):
        if not is_iotsec(document.obj):
            skipped += 1
            continue
        problems = validate_resource(document.obj)
        results.append({"source": document.where, "object": document.title, "problems": problems})
    invalid = [r for r in results if r["problems"]]
    if args.output == "json":
        print_json([{**r, "problems": [str(p) for p in r["problems"]]} for r in results])
    else:
        for result in results:
            mark = "INVALID" if result["problems"] else "ok     "
            print(f"{mark} {result['object']}  ({result['source']})")
            for problem in result["problems"]:
                print(f"          {problem}")
        summary = f"{len(results)} iotsec resources: {len(results) - len(invalid)} valid, {len(invalid)} invalid"
        print(f"{summary}; {skipped} other objects skipped")
    return EXIT_INVALID if invalid else EXIT_OK
