"""The CEL rules of the generated schemas (`x-kubernetes-validations`), compiled with cel-python as the API server
compiles them: one environment, its parser built once (or loaded from the user's cache), each rule compiled when a
resource first reaches it. Importing this module costs nothing; celpy is loaded with the first rule."""

from __future__ import annotations

import threading
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import celpy

_PARSER_CACHE: dict[str, Path] = {}  # "file": where the CEL parser's grammar analysis is kept, if anywhere


def cache_cel_parser_in(path: Path | None) -> None:
    """Save the CEL parser's grammar analysis (most of the time a first CEL rule costs) to `path` and load it from
    there next time. Lark pickles it: the caller vouches that only this user can write there."""
    _PARSER_CACHE.pop("file", None)
    if path is not None:
        _PARSER_CACHE["file"] = path


@cache
def _environment() -> celpy.Environment:
    """One CEL environment for every rule, built when the first rule is compiled (its parser is the costly part)."""
    import celpy
    from celpy import celparser

    path = _PARSER_CACHE.get("file")
    if path is not None and celparser.CELParser.CEL_PARSER is None:
        _build_parser(path)
    return celpy.Environment()


def _build_parser(path: Path) -> None:
    """celpy's own parser, built by celpy with lark's `cache=path` added to its options: lark keys the file on the
    grammar, those options and lark's and Python's versions, so a file of any other parser is never used."""
    import celpy
    from celpy import celparser

    names = vars(celparser)
    lark = names["Lark"]
    names["Lark"] = partial(lark, cache=str(path))
    try:
        celparser.CELParser(tree_class=celpy.InterpretedRunner.tree_node_class)  # as celpy.Environment() builds it
    finally:
        names["Lark"] = lark


_LOCK = threading.Lock()


@cache
def program(rule: str) -> celpy.Runner:
    """A rule's compiled program: compiled when a resource first reaches it, then reused (keyed by the rule text).

    Under a lock: the operator's handler threads reach their first rules at once, and each built a parser of its
    own (`cache` does not make concurrent first calls wait), a twelfth of a cold start's CPU (issue 18)."""
    with _LOCK:
        environment = _environment()
        return environment.program(environment.compile(rule))
