"""Reading Kubernetes manifests from files and folders (multi-document YAML, JSON, `List` kinds).

Input is untrusted (a chart's output, a colleague's file): parsing is bounded. YAML aliases are never expanded
(PyYAML shares the aliased object), but anything walking the result would expand them, so a document whose
expanded size exceeds MAX_NODES is refused, as is one nested deeper than MAX_DEPTH; both are measured on the
shared structure in time proportional to its distinct nodes. Every message quoting input is cut to MESSAGE_LIMIT.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from iotsec.model import fastyaml

SUFFIXES = (".yaml", ".yml", ".json")
MAX_DEPTH = 200  # nesting levels in one document; real objects (CRD schemas included) stay well below 100
MAX_NODES = 1_000_000  # values in one document with aliases expanded; a large CRD has about 50,000
MESSAGE_LIMIT = 200  # characters of one error message; input is never echoed beyond this
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser is ~10x faster when present


class ManifestError(ValueError):
    """A file that cannot be read or parsed; the message names the file and, for YAML, the line."""


@dataclass(frozen=True)
class Document:
    source: str
    index: int
    obj: Any

    @property
    def where(self) -> str:
        return f"{self.source}#{self.index}"

    @property
    def title(self) -> str:
        obj: dict[str, Any] = self.obj if isinstance(self.obj, dict) else {}
        metadata: dict[str, Any] = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
        name = clip(metadata.get("name", "<unnamed>"), 80)
        namespace = metadata.get("namespace")
        prefix = clip(namespace, 80) + "/" if namespace else ""
        kind = obj.get("kind") if isinstance(obj.get("kind"), str) else "<no kind>"
        return f"{clip(kind, 80)} {prefix}{name}"


def clip(value: object, limit: int = MESSAGE_LIMIT) -> str:
    """`value` as text on one line, at most `limit` characters (a 10 MB field is never printed back whole)."""
    text = str(value) if not isinstance(value, str) else value
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text.replace("\n", "\\n")


def shape_problem(obj: Any) -> str | None:
    """Why `obj` cannot be a Kubernetes object at all (None when it is shaped like one)."""
    if not isinstance(obj, dict):
        return f"not an object but {_a(obj)}: every document must be a Kubernetes object"
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        return "kind is missing" if kind is None else f"kind must be a string, got {_a(kind)}"
    if not isinstance(obj.get("apiVersion", ""), str):
        return f"apiVersion must be a string, got {_a(obj['apiVersion'])}"
    if obj.get("apiVersion") and not _API_VERSION.fullmatch(obj["apiVersion"]):
        return (
            f"apiVersion {clip(json.dumps(obj['apiVersion']), 80)} is not GROUP/VERSION (a lowercase DNS name, "
            "a version such as v1beta1) nor v1: the API server refuses it"
        )
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        return f"metadata must be an object, got {_a(metadata)}"
    for field in ("name", "namespace", "generateName"):
        if not isinstance(metadata.get(field, ""), str):
            return f"metadata.{field} must be a string, got {_a(metadata[field])}"
    for field in ("labels", "annotations"):
        if not isinstance(metadata.get(field) or {}, dict):
            return f"metadata.{field} must be an object, got {_a(metadata[field])}"
    return None


_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
# GROUP/VERSION (group a DNS-1123 subdomain, version a DNS-1035 label), or a version of the core group
_API_VERSION = re.compile(rf"(?=[^/]{{1,253}}/){_LABEL}(\.{_LABEL})*/[a-z]([-a-z0-9]{{0,61}}[a-z0-9])?|v1")


def _a(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


def manifest_files(paths: Iterable[str | Path]) -> list[Path]:
    """The manifest files named by `paths`, folders expanded recursively (suffixes in any case), stable order."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
            if not found:
                raise ManifestError(f"{clip(raw)}: no manifests (*.yaml, *.yml, *.json) in this folder")
            files.extend(found)
        elif path.exists() or str(raw) == "-":  # a file, or a pipe: iotsec check <(helm template ...)
            files.append(path)
        else:
            raise ManifestError(f"{clip(raw)}: no such file or directory")
    return files


NOT_MANIFESTS = ("iotsec.io/conformance/v1",)  # documents iotsec writes that are no Kubernetes objects


def load_documents(paths: Iterable[str | Path]) -> Iterator[Document]:
    """Every document in the given files, `kind: *List` objects flattened (nested Lists too); a document that is
    not an object is yielded as it is (the caller reports it). ManifestError when nothing at all was found."""
    names = [str(p) for p in paths]
    count, aliased = 0, [0]  # values added by alias expansion so far, over all documents
    for path in manifest_files(names):
        for document in _documents(path, aliased):
            count += 1
            yield document
    if count == 0:
        raise ManifestError(f"{clip(', '.join(names))}: no Kubernetes objects found")


def _documents(path: Path, aliased: list[int]) -> Iterator[Document]:
    index = 0
    for number, (doc, bounded) in enumerate(_parse(path, _read(path))):
        if doc is None:
            continue  # an empty document (`---` alone, comments only), as kubectl skips it
        if isinstance(doc, dict) and doc.get("apiVersion") in NOT_MANIFESTS:
            continue  # iotsec's own report (`iotsec report -o json`) kept beside the manifests it was made from
        where = f"{path} (document {number + 1})"
        aliased[0] += 0 if bounded else _measure(doc, where)
        if aliased[0] > MAX_NODES:  # many documents each just under the limit add up
            raise ManifestError(f"{where}: aliases add more than {MAX_NODES:,} values to the input in all")
        for obj in _flatten(doc):
            yield Document(str(path), index, obj)
            index += 1


def _parse(path: Path, text: str) -> list[tuple[Any, bool]]:
    """The documents of `text`, each with whether it is known to pass _measure adding nothing (a tree within the
    bounds): then _measure need not walk it. The YAML is built by fastyaml when it can, else by PyYAML's loader;
    both give the same objects (tests/unit/test_cli_loader.py)."""
    try:
        if path.suffix.lower() == ".json":
            doc = json.loads(text)
            return [(doc, _small_tree(doc))]  # json.loads never shares an object: always a tree
        fast = fastyaml.load_all(text)
        if fast is not None:
            return [(d.obj, d.tree and d.values <= MAX_NODES and d.depth <= MAX_DEPTH) for d in fast]
        return [(doc, False) for doc in yaml.load_all(text, Loader=_LOADER)]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(f"{path}{where}: invalid YAML: {clip(problem)}") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {clip(exc.msg)}") from None
    except RecursionError:
        raise ManifestError(f"{path}: nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, OverflowError) as exc:  # a value its type cannot hold: `2001-02-30`, a 5,000-digit int
        language = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise ManifestError(f"{path}: invalid {language}: {clip(exc)}") from None


def _small_tree(root: Any) -> bool:
    """Whether `root`, known to be a tree (no object in it twice), is at most MAX_DEPTH deep and holds at most
    MAX_NODES values by _measure's count (over-counted here): _measure would then refuse nothing and return 0."""
    level, depth, values = [root] if isinstance(root, dict | list) else [], 0, 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            return False
        values += sum(1 + 2 * len(node) if type(node) is dict else 1 + len(node) for node in level)
        if values > MAX_NODES:
            return False
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if isinstance(child, dict | list)
        ]
    return True


def _flatten(doc: Any) -> Iterator[Any]:
    """The objects of a document: a `*List` gives its items, recursively (kubectl accepts nested Lists)."""
    stack = [doc]
    while stack:
        obj = stack.pop()
        items = obj.get("items") if isinstance(obj, dict) and str(obj.get("kind", "")).endswith("List") else None
        if isinstance(items, list):
            stack.extend(reversed(items))
        else:
            yield obj


def _measure(root: Any, where: str) -> int:
    """Refuse a document nested deeper than MAX_DEPTH, larger than MAX_NODES with aliases expanded, or
    containing itself (a recursive alias); shared sub-objects are measured once (iterative, no recursion).
    Returns how many values alias expansion adds (0 without aliases)."""
    sizes: dict[int, tuple[int, int]] = {}  # id -> (expanded nodes, height)
    distinct = 0
    in_progress: set[int] = set()
    stack = [root] if isinstance(root, dict | list) else []
    while stack:
        node = stack[-1]
        key = id(node)
        if key in sizes:
            stack.pop()
            if len(in_progress) + sizes[key][1] > MAX_DEPTH:
                raise ManifestError(f"{where}: nested deeper than {MAX_DEPTH} levels")
            continue
        children = _containers(node)
        if key not in in_progress:
            in_progress.add(key)
            if len(in_progress) > MAX_DEPTH:
                raise ManifestError(f"{where}: nested deeper than {MAX_DEPTH} levels")
            if any(id(child) in in_progress for child in children):
                raise ManifestError(f"{where}: a recursive alias (an object that contains itself)")
            stack.extend(child for child in children if id(child) not in sizes)
            continue
        stack.pop()
        in_progress.discard(key)
        nodes = 1 + len(node) * (2 if isinstance(node, dict) else 1) - len(children)
        distinct += nodes
        nodes += sum(sizes[id(child)][0] for child in children)
        if nodes > MAX_NODES:
            raise ManifestError(f"{where}: more than {MAX_NODES:,} values once aliases are expanded")
        sizes[key] = (nodes, 1 + max((sizes[id(child)][1] for child in children), default=0))
    return sizes[id(root)][0] - distinct if id(root) in sizes else 0


def _containers(node: Any) -> list[Any]:
    values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    return [value for value in values if isinstance(value, dict | list)]


def _read(path: Path) -> str:
    try:
        if str(path) == "-":
            return sys.stdin.read()
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {clip(exc)}") from None


class _PlainDumper(yaml.SafeDumper):
    """Never writes anchors and aliases (&id001): shared sub-objects are spelled out, as kubectl users expect."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(objects: Iterable[Any]) -> str:
    """Multi-document YAML in a stable, diff-friendly form (field order kept)."""
    return "".join(
        "---\n" + yaml.dump(obj, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False, width=120)
        for obj in objects
    )
