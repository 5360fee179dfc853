"""`iotsec report --document`: a report written with -o json rendered again, exactly as it was judged, and only
when it is one (the renderers trust the document's shape); the committed example report is what its JSON renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iotsec.cli import report as report_cli
from iotsec.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
NOW = "2026-12-01T00:00:00Z"
EXAMPLE = ROOT / "examples" / "report"


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.json"
    assert main(["report", str(ROOT / "examples"), "--now", NOW, "-o", "json", "--output-file", str(path)]) == 0
    return path


@pytest.mark.parametrize("output", ["text", "markdown", "html"])
def test_a_written_report_renders_as_the_run_that_judged_it(written, output, tmp_path):
    direct, again = tmp_path / "direct", tmp_path / "again"
    assert main(["report", str(ROOT / "examples"), "--now", NOW, "-o", output, "--output-file", str(direct)]) == 0
    assert main(["report", "--document", str(written), "-o", output, "--output-file", str(again)]) == 0
    assert again.read_text() == direct.read_text()


def test_fail_on_reads_the_written_verdicts(written, capsys):
    assert main(["report", "--document", str(written), "--fail-on", "not-met"]) == 1
    document = json.loads(written.read_text())
    assert any(c["verdict"] == "not-met" for c in document["controls"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"apiVersion": "iotsec.io/conformance/v1"}', "not an iotsec conformance report"),
        ("[1,", "Expecting value"),
        ('{"kind": "ConformanceReport", "controls": "<script>"}', "not an iotsec conformance report"),
    ],
)
def test_what_is_no_report_is_refused_in_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "r.json"
    path.write_text(content)
    assert main(["report", "--document", str(path), "-o", "html"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_a_document_over_the_bound_is_not_read_whole(written, capsys, monkeypatch):
    monkeypatch.setattr(report_cli, "MAX_DOCUMENT_BYTES", 1024)
    assert main(["report", "--document", str(written)]) == 2
    assert "over" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--domain", "x"], ["--cluster"], [str(ROOT / "examples")], ["--now", NOW]])
def test_a_written_report_is_not_mixed_with_a_new_one(written, capsys, extra):
    assert main(["report", "--document", str(written), *extra]) == 2
    assert "--document" in capsys.readouterr().err


def test_a_report_beside_the_manifests_is_not_taken_for_one(written, tmp_path, capsys):
    from iotsec.conformance.model import SCHEMA_VERSION
    from iotsec.model.manifests import NOT_MANIFESTS

    assert SCHEMA_VERSION in NOT_MANIFESTS
    (tmp_path / "report.json").write_text(written.read_text())
    assert main(["check", str(tmp_path)]) == 2
    assert "no Kubernetes objects found" in capsys.readouterr().err
    (tmp_path / "pod.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")
    assert main(["check", str(tmp_path)]) == 0
