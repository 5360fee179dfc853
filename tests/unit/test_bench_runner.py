"""`make bench`'s runner (benchmarks/run_all.py): the figures a benchmark records become the table's rows, a
benchmark that fails or records nothing is said so, and one that needs the testenv is not run without it."""

from __future__ import annotations

import importlib
import shutil
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def run_all(monkeypatch, tmp_path) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module("run_all")
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(BENCHMARKS / "figures.py", tmp_path / "benchmarks")
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "LOGS", tmp_path / "logs")
    return module


def fake_benchmark(root: Path, name: str, body: str) -> None:
    (root / "benchmarks" / f"{name}.py").write_text(textwrap.dedent(body))


def test_recorded_figures_become_rows_with_the_quick_or_full_arguments(run_all, tmp_path):
    fake_benchmark(
        tmp_path,
        "fake",
        """
        import sys
        from figures import record
        record("objects checked", f"{sys.argv[1]} objects/s", "≥ 2,000 objects/s")
        record("peak RSS", "80 MiB")
        print("free text is logged, not tabled")
        """,
    )
    bench = run_all.Bench("fake", ["100"], ["5000"])
    quick, full = run_all.run(bench, False, ""), run_all.run(bench, True, "")
    assert quick.problem == ""
    assert full.problem == ""
    assert run_all.table([quick]) == [
        ("fake", "objects checked", "100 objects/s", "≥ 2,000 objects/s"),
        ("fake", "peak RSS", "80 MiB", "-"),
    ]
    assert full.rows[0]["value"] == "5000 objects/s"
    assert "free text is logged" in (tmp_path / "logs" / "fake.log").read_text()


def test_a_failing_or_silent_benchmark_is_a_row_that_says_so(run_all, tmp_path):
    fake_benchmark(tmp_path, "broken", "raise SystemExit(3)\n")
    fake_benchmark(tmp_path, "silent", "print('no figures')\n")
    broken = run_all.run(run_all.Bench("broken", [], []), False, "")
    silent = run_all.run(run_all.Bench("silent", [], []), False, "")
    assert broken.problem == "failed: exit 3, see build/bench/broken.log"
    assert silent.problem == "ran, but recorded no figure"
    assert run_all.table([broken])[-1] == ("broken", broken.problem, "-", "-")


@pytest.mark.parametrize(
    ("needs", "state", "reason"),
    [
        ("api", "", "no API server"),
        ("api", "chart", "the chart's operator is installed"),
        ("chart", "api", "needs the chart"),
        ("chart", "", "no API server"),
    ],
)
def test_a_cluster_benchmark_without_its_precondition_is_not_run(run_all, tmp_path, needs, state, reason):
    fake_benchmark(tmp_path, "cluster", "raise SystemExit('must not run')\n")
    outcome = run_all.run(run_all.Bench("cluster", [], [], needs=needs), False, state)
    assert outcome.problem.startswith("not run: ")
    assert reason in outcome.problem
    assert not (tmp_path / "logs" / "cluster.log").exists()


def test_markdown_names_date_machine_and_keeps_cells_apart(run_all):
    page = run_all.markdown([("fake", "p50 | p99", "1 ms | 2 ms", "-")], full=True)
    assert page.splitlines()[0].startswith("Measured 20")
    assert "make bench BENCH=--full" in page
    assert "| fake | p50 / p99 | 1 ms / 2 ms | - |" in page
