"""YAML documents built straight from libyaml's events: the objects `yaml.load_all(text, yaml.CSafeLoader)` builds,
about three times faster.

PyYAML's C loader parses in C but composes a node per value (calling the Python resolver for each) and then
constructs each node in Python. Here the parser's events are turned into dicts, lists and scalars in one loop,
with each distinct plain scalar resolved once. The loop covers the YAML that manifests are made of: untagged
scalars, mappings and sequences, anchors and aliases. Anything else (an explicit tag, a merge key `<<`, a key that
is a mapping, a sequence or an alias, a duplicate or undefined anchor, a value the loader's constructor refuses,
nesting deeper than MAX_DEPTH, a parse error) makes `load_all` return None, and the caller loads the text with
PyYAML's own loader, which then gives its own result or error: the two paths never disagree.

Kept the same as PyYAML's safe loader (YAML 1.1 as PyYAML resolves it): `yes`/`on`/`off` are booleans (`y` and
`n` strings); `017` (octal), `0x1F`, `1_000` and `1:30` are ints but `0o17` is a string; `1e3` is a string but
`1.0e+3` a float; `2024-01-01` is a date; a later duplicate key wins; an alias is the very object its anchor built
(a recursive alias gives an object containing itself, as PyYAML does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode

_CParser: Any
try:
    from yaml._yaml import CParser as _CParser
except ImportError:  # PyYAML without libyaml: its pure-Python loader reads everything
    _CParser = None

MAX_DEPTH = 200  # containers nested in one document; deeper input goes to PyYAML's loader (and its limits)

_TAG = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ = _TAG + "str", _TAG + "map", _TAG + "seq"
_SHARED = {_TAG + "null", _TAG + "bool", _TAG + "int"}  # immutable, so one object per distinct text is safe
_FRESH = {_TAG + "float", _TAG + "timestamp"}  # built anew for each occurrence, as construct_object does
_STOCK = {  # the constructors the loop stands in for; if any was replaced, the loop is not used
    _STR: SafeConstructor.construct_yaml_str,
    _MAP: SafeConstructor.construct_yaml_map,
    _SEQ: SafeConstructor.construct_yaml_seq,
    **{tag: SafeConstructor.yaml_constructors[tag] for tag in _SHARED | _FRESH},
}
_NO_KEY = object()


class _UnsupportedError(Exception):
    """Input outside what the loop builds: PyYAML's loader reads it."""


@dataclass(frozen=True)
class Loaded:
    """One document, and what is known about its size without walking it."""

    obj: Any
    tree: bool  # no alias to a mapping or sequence: nothing in it is shared, nothing contains itself
    values: int  # the sum over its mappings of 1 + 2 x their length, and over its sequences of 1 + their length:
    # for a tree, at least the values manifests._measure counts (a key and its value are two)
    depth: int  # containers nested, the outermost included


def load_all(text: str) -> list[Loaded] | None:
    """Every document of `text` as `yaml.load_all(text, yaml.CSafeLoader)` builds it, or None when this loop
    does not build that input the same way (the caller then uses PyYAML's loader). None too without libyaml."""
    loader = getattr(yaml, "CSafeLoader", None)
    if _CParser is None or loader is None or not _stock(loader):
        return None
    try:
        return _Builder(loader, text).documents()
    except Exception:  # PyYAML's loader then raises its own error for the same input
        return None


def _stock(loader: Any) -> bool:
    constructors = loader.yaml_constructors
    return not loader.yaml_path_resolvers and all(constructors.get(tag) is f for tag, f in _STOCK.items())


class _Builder:
    """Builds documents by recursive descent over the parser's events; a mapping's or sequence's common case (an
    untagged, unanchored scalar) is handled inline, everything else by _node."""

    def __init__(self, loader: Any, text: str) -> None:
        self._get = _CParser(text).get_event
        self._loader = loader("")  # its resolver and constructors, for plain scalars other than strings
        self._plain: dict[str, Any] = {}  # plain scalar text -> its value (str, None, bool, int)
        self._fresh: dict[str, str] = {}  # plain scalar text -> its tag, for values built each time
        self._anchors: dict[str, Any] = {}
        self._values = self._depth = 0
        self._tree = True

    def documents(self) -> list[Loaded]:
        get = self._get
        get()  # StreamStartEvent
        documents = []
        while get().__class__ is not StreamEndEvent:  # a DocumentStartEvent
            self._anchors, self._values, self._depth, self._tree = {}, 0, 0, True
            root = self._node(get(), 0)
            if get().__class__ is not DocumentEndEvent:
                raise _UnsupportedError("a document holds one node")
            documents.append(Loaded(root, self._tree, self._values, self._depth))
        return documents

    def _node(self, event: Any, depth: int) -> Any:
        kind = event.__class__
        if kind is AliasEvent:
            value = self._anchors[event.anchor]  # KeyError: an undefined alias
            if type(value) is dict or type(value) is list:
                self._tree = False
            return value
        if event.tag is not None:
            raise _UnsupportedError("an explicit tag")
        if kind is ScalarEvent:
            value = self._scalar(event)
        elif kind is MappingStartEvent:
            value = {}
            self._anchor(event, value)
            return self._mapping(value, depth + 1)
        elif kind is SequenceStartEvent:
            value = []
            self._anchor(event, value)
            return self._sequence(value, depth + 1)
        else:
            raise _UnsupportedError(kind.__name__)
        self._anchor(event, value)
        return value

    def _anchor(self, event: Any, value: Any) -> None:
        if event.anchor is not None:
            if event.anchor in self._anchors:
                raise _UnsupportedError("a duplicate anchor")
            self._anchors[event.anchor] = value

    def _scalar(self, event: Any) -> Any:
        text = event.value
        if not event.implicit[0]:  # quoted, literal (|) or folded (>): a string
            return text
        try:
            return self._plain[text]
        except KeyError:
            return self._resolve(text)

    def _mapping(self, mapping: dict[Any, Any], depth: int) -> dict[Any, Any]:
        if depth > self._depth:
            self._deeper(depth)
        get, plain, scalar = self._get, self._plain, ScalarEvent
        while True:
            event = get()
            if event.__class__ is scalar and event.tag is None and event.anchor is None:
                key = event.value
                if event.implicit[0]:
                    try:
                        key = plain[key]
                    except KeyError:
                        key = self._resolve(key)
            elif event.__class__ is MappingEndEvent:
                self._values += 1 + 2 * len(mapping)
                return mapping
            elif event.__class__ is ScalarEvent:
                key = self._node(event, depth)  # anchored or tagged
            else:
                raise _UnsupportedError("a key that is a mapping, a sequence or an alias")
            event = get()
            if event.__class__ is scalar and event.tag is None and event.anchor is None:
                value = event.value
                if event.implicit[0]:
                    try:
                        value = plain[value]
                    except KeyError:
                        value = self._resolve(value)
                mapping[key] = value
            else:
                mapping[key] = self._node(event, depth)

    def _sequence(self, sequence: list[Any], depth: int) -> list[Any]:
        if depth > self._depth:
            self._deeper(depth)
        get, plain, append, scalar = self._get, self._plain, sequence.append, ScalarEvent
        while True:
            event = get()
            if event.__class__ is scalar and event.tag is None and event.anchor is None:
                value = event.value
                if event.implicit[0]:
                    try:
                        value = plain[value]
                    except KeyError:
                        value = self._resolve(value)
                append(value)
            elif event.__class__ is SequenceEndEvent:
                self._values += 1 + len(sequence)
                return sequence
            else:
                append(self._node(event, depth))

    def _deeper(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise _UnsupportedError("nested too deep")
        self._depth = depth

    def _resolve(self, text: str) -> Any:
        """A plain scalar's value, as the loader's resolver and constructor make it (as construct_object does)."""
        loader = self._loader
        tag = self._fresh.get(text) or loader.resolve(ScalarNode, text, (True, False))
        if tag == _STR:
            self._plain[text] = text
            return text
        if tag not in _SHARED and tag not in _FRESH:
            raise _UnsupportedError(tag)  # a merge key `<<`, `=` (tag:yaml.org,2002:value)...
        value = loader.yaml_constructors[tag](loader, ScalarNode(tag, text))
        if tag in _SHARED:
            self._plain[text] = value
        else:
            self._fresh[text] = tag
        return value
