"""Every proof the control catalog names is a test that exists: its file parses and holds that test function.

The tests are found by reading their files with `ast`, not by running or importing them: a proof that was renamed,
moved or deleted fails here, whatever the test's own dependencies (a cluster, chromium, restic).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

from iotsec.model.controls import CONTROLS
from tests.conftest import ROOT

TEST_ROOTS = ("tests/",)
THIS = "tests/unit/test_controls_proofs.py"


@cache
def _module(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _named(body: list[ast.stmt], name: str) -> ast.stmt | None:
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return next((node for node in body if isinstance(node, kinds) and node.name == name), None)


def proof_problem(node_id: str, root: Path = ROOT) -> str | None:
    """Why `node_id` does not name a test pytest would collect, or None when it does."""
    path_text, *names = node_id.split("::")
    path = root / path_text
    if not path_text.startswith(TEST_ROOTS) or not Path(path_text).name.startswith("test_") or path.suffix != ".py":
        return f"{node_id}: {path_text} is not a test file under tests/"
    if not names or len(names) > 2 or not all(names):
        return f"{node_id}: expected path::test_name or path::Class::test_name"
    if not path.is_file():
        return f"{node_id}: no file {path_text}"
    body: list[ast.stmt] = _module(path).body
    *classes, function = names
    for class_name in classes:
        found = _named(body, class_name)
        if not isinstance(found, ast.ClassDef) or not class_name.startswith("Test"):
            return f"{node_id}: no test class {class_name} in {path_text}"
        body = found.body
    found = _named(body, function)
    if not isinstance(found, ast.FunctionDef | ast.AsyncFunctionDef) or not function.startswith("test_"):
        return f"{node_id}: no test function {function} in {'::'.join([path_text, *classes])}"
    return None


def test_every_proof_of_the_catalog_names_a_test_that_exists():
    problems = [p for c in CONTROLS for proof in c.proofs if (p := proof_problem(proof))]
    assert problems == []


def test_proofs_are_not_repeated_within_a_control():
    for c in CONTROLS:
        assert len(set(c.proofs)) == len(c.proofs), c.id


class TestAClassOfTests:
    def test_a_method_resolves(self):
        assert proof_problem(f"{THIS}::TestAClassOfTests::test_a_method_resolves") is None


@pytest.mark.parametrize(
    "node_id",
    [
        f"{THIS}::test_every_proof_of_the_catalog_names_a_test_that_exists",
        f"{THIS}::TestAClassOfTests::test_a_method_resolves",
        "tests/unit/test_policy.py::test_each_pod_rule_fires_exactly_on_its_violation",
    ],
)
def test_the_resolver_accepts_real_tests(node_id):
    assert proof_problem(node_id) is None


@pytest.mark.parametrize(
    ("node_id", "why"),
    [
        (f"{THIS}::test_a_test_nobody_wrote", "no test function test_a_test_nobody_wrote"),
        (f"{THIS}::proof_problem", "no test function proof_problem"),
        (f"{THIS}::TestAClassOfTests::test_a_method_nobody_wrote", "no test function test_a_method_nobody_wrote"),
        (f"{THIS}::TestNoSuchClass::test_a_method_resolves", "no test class TestNoSuchClass"),
        (f"{THIS}::_module::test_a_method_resolves", "no test class _module"),
        ("tests/unit/test_nowhere.py::test_x", "no file tests/unit/test_nowhere.py"),
        ("operator/iotsec/model/controls.py::test_x", "is not a test file"),
        ("tests/conftest.py::test_x", "is not a test file"),
        (THIS, "expected path::test_name"),
        (f"{THIS}::", "expected path::test_name"),
        (f"{THIS}::A::B::test_c", "expected path::test_name"),
    ],
)
def test_the_resolver_refuses_what_names_no_test(node_id, why):
    problem = proof_problem(node_id)
    assert problem is not None
    assert why in problem
