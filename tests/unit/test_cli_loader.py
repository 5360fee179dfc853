"""The CLI's YAML loader (iotsec.model.fastyaml) builds what PyYAML's CSafeLoader builds, or hands the input back.

Every input here is loaded both ways and compared by `canon`: types exactly (True is no 1, 1.0 no 1), values,
key order, and which containers are one and the same object (aliases). Input the fast loop does not build
(merge keys, explicit tags, errors...) must come back as None, and iotsec then reads it with PyYAML's loader:
the results and errors of `manifests.load_documents` are PyYAML's in both cases.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.model import fastyaml, manifests
from iotsec.model.manifests import ManifestError, load_documents
from tests.conftest import ROOT


def canon(obj: Any, seen: dict[int, int] | None = None) -> Any:
    """`obj` as nested tuples: each scalar by its exact type and repr, each container once (later: a reference)."""
    seen = {} if seen is None else seen
    if isinstance(obj, dict | list):
        if id(obj) in seen:
            return ("same-as", seen[id(obj)])
        seen[id(obj)] = len(seen)
        if isinstance(obj, dict):
            return ("map", tuple((canon(k, seen), canon(v, seen)) for k, v in obj.items()))
        return ("seq", tuple(canon(v, seen) for v in obj))
    return (type(obj).__name__, repr(obj))


def stock(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=yaml.CSafeLoader))


def fast(text: str) -> list[Any] | None:
    loaded = fastyaml.load_all(text)
    return None if loaded is None else [d.obj for d in loaded]


def assert_same(text: str) -> None:
    built = fast(text)
    assert built is not None, "the fast loop builds this input itself"
    assert canon(built) == canon(stock(text))


SCALARS = """\
booleans: [yes, Yes, YES, no, NO, on, On, off, OFF, true, True, FALSE, y, n, Y, N]
nulls: [~, null, Null, NULL, '', "~"]
empty:
ints: [0, -1, +7, 0o17, 017, 0x1F, 0b101, 1_000, '1', "2", 190:20:30, 00, 08, -0]
floats: [1.0, -1.5, 1e3, 1.0e+3, 6.8523015e+5, .5, .inf, -.Inf, .NaN, 1_000.5, 190:20:30.15, 1., 3.]
strings: [1.2.3, v1, 0x, 1e, '1.0', "yes", !!str yes, abc def, 'a''b', "a\\tb"]
timestamps: [2001-12-14, 2001-12-14t21:59:43.10-05:00, 2001-12-14 21:59:43.10, 2002-12-14T00:00:00Z]
block: |
  line one
  line two
folded: >-
  folded
  text
keys:
  1: int
  1.5: float
  true: bool
  null: none
  2024-01-01: date
  "1": string
"""


def test_scalars_get_pyyamls_yaml_1_1_types():
    text = SCALARS.replace("!!str yes, ", "")  # an explicit tag is PyYAML's to build (below)
    assert_same(text)
    [doc] = fast(text) or []
    assert doc["booleans"] == [True] * 3 + [False] * 2 + [True] * 2 + [False] * 2 + [True, True, False] + [
        "y",
        "n",
        "Y",
        "N",
    ]
    assert doc["ints"][:8] == [0, -1, 7, "0o17", 15, 31, 5, 1000], "YAML 1.1 octal is 017"
    assert type(doc["floats"][1]) is float
    assert doc["floats"][2] == "1e3", "PyYAML's float needs a dot"
    assert math.isnan(doc["floats"][8])
    assert doc["empty"] is None
    assert doc["nulls"][-2:] == ["", "~"]


def test_duplicate_keys_the_later_wins_and_equal_keys_keep_the_first_spelling():
    assert_same("a: 1\nb: 2\na: 3\n1: x\ntrue: y\n1.0: z\n")
    assert fast("a: 1\nb: 2\na: 3\n") == [{"a": 3, "b": 2}]


@pytest.mark.parametrize("text", [".nan: 1\n.nan: 2\n", ".nan: 1\n.NaN: 2\n", "-.nan: 1\n-.nan: 2\n", "[.nan, .nan]\n"])
def test_nan_keys_are_one_key_or_two_as_in_pyyaml(text):
    assert_same(text)  # PyYAML's `.nan` is one shared object (one key), `-.nan` a new one each time
    [doc] = fast(text) or []
    [expected] = stock(text)
    assert len(doc) == len(expected)
    if isinstance(doc, list):
        assert (doc[0] is doc[1]) == (expected[0] is expected[1])


def test_anchors_and_aliases_are_the_same_object_as_in_pyyaml():
    text = "base: &b {app: x, ports: &p [80, 443]}\none: *b\ntwo: *b\nports: *p\nname: &n gw\nalso: *n\n"
    assert_same(text)
    [doc] = fast(text) or []
    assert doc["one"] is doc["base"] is doc["two"]
    assert doc["ports"] is doc["base"]["ports"]
    [loaded] = fastyaml.load_all(text) or []
    assert not loaded.tree, "an alias to a mapping or sequence: _measure must walk it"


def test_an_alias_to_a_scalar_keeps_the_document_a_tree():
    [loaded] = fastyaml.load_all("a: &x 1\nb: *x\n") or []
    assert loaded.tree
    assert loaded.obj == {"a": 1, "b": 1}


def test_a_recursive_alias_builds_the_object_containing_itself_as_pyyaml_does():
    for text in ("&d {a: *d}\n", "&s [1, *s]\n", "a: &d\n  b: *d\n"):
        assert_same(text)
    [loop] = fast("&d {a: *d}\n") or []
    assert loop["a"] is loop


def test_documents_empty_documents_and_comments():
    assert_same("---\n---\na: 1\n...\n---\n# only a comment\n---\n- x\n")
    assert fast("") == stock("") == []
    assert fast("# nothing\n") == stock("# nothing\n") == []
    assert fast("---\n") == [None]


def test_anchors_are_per_document():
    text = "a: &x 1\n---\nb: *x\n"
    assert fast(text) is None
    with pytest.raises(yaml.YAMLError, match="undefined alias"):
        stock(text)


def test_flow_block_quoted_and_unicode():
    assert_same('{a: [1, {b: c}], "k: v": \'x\', ü: "\\u00fc", e: []}\n- ignored\n'.split("\n- ")[0] + "\n")
    assert_same("l:\n- - 1\n  - 2\n- {}\n- []\n- ''\nm: {? a : b}\n")


@pytest.mark.parametrize(
    "text",
    [
        "base: &b {a: 1}\nmerged:\n  <<: *b\n  c: 2\n",  # a merge key
        "a: !!str 1\n",  # explicit tags
        "a: !!binary aGk=\n",
        "a: !!set {x, y}\n",
        "a: !custom 1\n",
        "a: ! 1\n",
        "!!map {a: 1}\n",
        "? [a, b]\n: 1\n",  # a key that is a sequence
        "? {a: 1}\n: 1\n",
        "x: &k a\n*k : 1\n",  # an alias as a key
        "a: &x 1\nb: &x 2\n",  # a duplicate anchor
        "a: *nowhere\n",  # an undefined alias
        "a: =\n",  # tag:yaml.org,2002:value
        "a: 2001-02-30\n",  # a date the constructor refuses
        "a: [unclosed\n",  # a parse error
        "a: " + "[" * (fastyaml.MAX_DEPTH + 1) + "]" * (fastyaml.MAX_DEPTH + 1) + "\n",
    ],
)
def test_input_outside_the_loop_is_handed_back_to_pyyaml(text):
    assert fastyaml.load_all(text) is None


def test_what_is_handed_back_loads_exactly_as_pyyaml_loads_it(tmp_path):
    text = "base: &b {a: 1, c: 0}\nmerged:\n  <<: *b\n  c: 2\ntagged: !!str 1\n"
    [document] = load_documents([write(tmp_path, text)])
    assert canon(document.obj) == canon(stock(text)[0])
    assert document.obj["merged"] == {"a": 1, "c": 2}
    assert document.obj["tagged"] == "1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nb: [unclosed\n", r"bad\.yaml:3:1: invalid YAML: did not find expected ',' or ']'"),
        ("kind: x\na: *nowhere\n", r"bad\.yaml:2:4: invalid YAML: found undefined alias"),
        ("kind: x\na: &x 1\nb: &x 2\n", r"bad\.yaml:3:4: invalid YAML: second occurrence"),
    ],
)
def test_errors_are_pyyamls_with_the_line(tmp_path, monkeypatch, text, expected):
    path = write(tmp_path, text, "bad.yaml")
    with pytest.raises(ManifestError, match=expected) as fast_path:
        list(load_documents([path]))
    monkeypatch.setattr(fastyaml, "load_all", lambda text: None)
    with pytest.raises(ManifestError) as stock_path:
        list(load_documents([path]))
    assert str(fast_path.value) == str(stock_path.value)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("date.yaml", "kind: ConfigMap\ndata: {a: 2001-02-30}\n", "invalid YAML: day is out of range for month"),
        ("int.yaml", "kind: ConfigMap\ndata: {a: 0b_}\n", "invalid YAML: invalid literal for int() with base 2"),
        ("int.yaml", "kind: ConfigMap\nn: " + "9" * 5_000 + "\n", "invalid YAML: Exceeds the limit (4300 digits)"),
        (
            "int.json",
            '{"kind": "ConfigMap", "n": ' + "9" * 5_000 + "}",
            "invalid JSON: Exceeds the limit (4300 digits)",
        ),
    ],
)
def test_a_value_its_type_cannot_hold_is_invalid_input_not_a_crash(tmp_path, name, text, expected):
    with pytest.raises(ManifestError, match=re.escape(expected)):
        list(load_documents([write(tmp_path, text, name)]))


def write(folder: Path, text: str, name: str = "in.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- the bounds on what is read stay as they were

BOMB = "kind: ConfigMap\ndata:\n  a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"  {level}: &{level} [" + ",".join([f"*{previous}"] * 9) + "]\n"
    for level, previous in zip("bcdefghi", "abcdefgh", strict=True)
)


def test_a_yaml_bomb_is_refused_once_aliases_are_expanded(tmp_path):
    [loaded] = fastyaml.load_all(BOMB) or []
    assert not loaded.tree, "so _measure walks it"
    with pytest.raises(ManifestError, match="once aliases are expanded"):
        list(load_documents([write(tmp_path, BOMB)]))


def test_a_recursive_alias_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="recursive alias"):
        list(load_documents([write(tmp_path, "kind: ConfigMap\ndata: &d {a: *d}\n")]))


@pytest.mark.parametrize("levels", [manifests.MAX_DEPTH - 1, manifests.MAX_DEPTH + 5, 2_000])
def test_deep_nesting_gets_the_same_answer_as_with_pyyamls_loader(tmp_path, levels, monkeypatch):
    text = "kind: ConfigMap\ndata: " + "[" * levels + "]" * levels + "\n"
    path = write(tmp_path, text)
    answers = []
    for use_fast in (True, False):
        if not use_fast:
            monkeypatch.setattr(fastyaml, "load_all", lambda text: None)
        try:
            answers.append(("loaded", len(list(load_documents([path])))))
        except ManifestError as exc:
            answers.append(("refused", str(exc)))
    assert answers[0] == answers[1]
    assert answers[0][0] == ("loaded" if levels < manifests.MAX_DEPTH else "refused")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_tree_larger_than_the_node_bound_is_still_refused(tmp_path, monkeypatch, suffix):
    monkeypatch.setattr(manifests, "MAX_NODES", 50)
    small = write(tmp_path, '{"kind": "ConfigMap", "data": {"a": [1, 2, 3]}}', "small" + suffix)
    assert len(list(load_documents([small]))) == 1
    items = ", ".join(f'"v{i}"' for i in range(60))
    large = write(tmp_path, f'{{"kind": "ConfigMap", "data": {{"a": [{items}]}}}}', "large" + suffix)
    with pytest.raises(ManifestError, match="more than 50 values once aliases are expanded"):
        list(load_documents([large]))


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_json_and_yaml_nested_past_the_depth_bound_are_refused(tmp_path, suffix):
    levels = manifests.MAX_DEPTH + 1
    path = write(tmp_path, '{"kind": "x", "a": ' + "[" * levels + "]" * levels + "}", "deep" + suffix)
    with pytest.raises(ManifestError, match=f"nested deeper than {manifests.MAX_DEPTH} levels"):
        list(load_documents([path]))


def test_a_document_said_bounded_is_one_that_measure_passes_adding_nothing():
    for text in (SCALARS.replace("!!str yes, ", ""), "a: &x 1\nb: *x\n", "- [[[]]]\n- {a: {b: {}}}\n"):
        for loaded in fastyaml.load_all(text) or []:
            assert loaded.tree
            assert manifests._measure(loaded.obj, "here") == 0
            assert loaded.values >= _expanded(loaded.obj)


def _expanded(root: Any) -> int:
    """_measure's count of a tree's values: each container, each key, each value that is no container."""
    if isinstance(root, dict):
        return 1 + len(root) + sum(_expanded(v) if isinstance(v, dict | list) else 1 for v in root.values())
    if isinstance(root, list):
        return 1 + sum(_expanded(v) if isinstance(v, dict | list) else 1 for v in root)
    return 0


# ---------------------------------------------------------------- generated input

TOKENS = st.sampled_from(
    "yes no on off y n true False NULL ~ null 0 -0 +1 012 0o12 0x1f 0b11 1_0 1:20 1.5 .5 1e5 1.0e5 -.inf .nan "
    "2001-12-14 2001-12-14T21:59:43Z 1.2.3 v1 a-b 'q' \"d\" '' \"\" <<x x<< =x".split()
)
PLAIN = st.one_of(TOKENS, st.text(alphabet="abz019.:-_ ", min_size=1, max_size=6).map(str.strip).filter(bool))
VALUES = st.recursive(
    st.one_of(PLAIN, st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.one_of(PLAIN, st.integers()), children, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(VALUES, st.booleans())
def test_dumped_objects_load_the_same_both_ways(value, flow):
    text = yaml.safe_dump({"v": value}, default_flow_style=flow)
    built = fast(text)
    assert built is None or canon(built) == canon(stock(text))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(PLAIN, PLAIN), min_size=1, max_size=8), st.booleans())
def test_hand_written_plain_scalars_load_the_same_both_ways(pairs, flow):
    if flow:
        text = "{" + ", ".join(f"{k}: [{v}, {k}]" for k, v in pairs) + "}\n"
    else:
        text = "".join(f"{k}: {v}\n" for k, v in pairs) + "---\n" + "".join(f"- {v}\n" for _, v in pairs)
    try:
        expected = stock(text)
    except (yaml.YAMLError, ValueError):  # `0b_` resolves to an int that int() refuses
        assert fast(text) is None
        return
    built = fast(text)
    assert built is None or canon(built) == canon(expected)


# ---------------------------------------------------------------- the project's own YAML

CORPUS = sorted(
    path
    for folder in ("examples", "crds", "charts", "tests/data")
    for path in (ROOT / folder).rglob("*.y*ml")
    if path.suffix in (".yaml", ".yml")
)


def test_the_loop_is_used_with_the_installed_pyyaml():
    assert yaml.__with_libyaml__
    assert fastyaml.load_all("a: 1\n") is not None, "a PyYAML upgrade changed what the loop stands in for"


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_of_the_project_loads_the_same_both_ways(path):
    text = path.read_text()
    try:
        expected = stock(text)
    except yaml.YAMLError:  # a Helm template
        assert fast(text) is None
        return
    built = fast(text)
    assert built is not None, "manifests, CRDs and values are built by the loop"
    assert canon(built) == canon(expected)
