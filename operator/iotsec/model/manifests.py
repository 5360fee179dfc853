"""Reading Kubernetes manifests from files and folders (multi-document YAML, JSON, `List` kinds)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SUFFIXES = (".yaml", ".yml", ".json")


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
        name = metadata.get("name", "<unnamed>")
        namespace = metadata.get("namespace")
        return f"{obj.get('kind', '<no kind>')} {namespace + '/' if namespace else ''}{name}"


def manifest_files(paths: Iterable[str | Path]) -> list[Path]:
    """The manifest files named by `paths`, folders expanded recursively, in a stable order."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file()))
        elif path.is_file() or str(raw) == "-":
            files.append(path)
        else:
            raise ManifestError(f"{raw}: no such file or directory")
    return files


def load_documents(paths: Iterable[str | Path]) -> Iterator[Document]:
    """Every object in the given files; `kind: List` objects are flattened into their items."""
    for path in manifest_files(paths):
        yield from _documents(path)


def _documents(path: Path) -> Iterator[Document]:
    text = _read(path)
    try:
        docs = [json.loads(text)] if path.suffix == ".json" else list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(f"{path}{where}: invalid YAML: {problem}") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    index = 0
    for doc in docs:
        if doc is None:
            continue
        items = doc.get("items") if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") else None
        for obj in items if isinstance(items, list) else [doc]:
            yield Document(str(path), index, obj)
            index += 1


def _read(path: Path) -> str:
    try:
        if str(path) == "-":
            return sys.stdin.read()
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from None


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
