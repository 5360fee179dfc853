"""The committed example report (examples/report/, made live by `make example-report`): its JSON is a valid
document, and every other file is exactly what the renderers make of it, so a change to a renderer or to the schema
that leaves the example stale fails here."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from iotsec.conformance import html, render
from iotsec.conformance.document import schema

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "report"


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads((EXAMPLE / "report.json").read_text())


def test_the_example_is_a_valid_live_report(document):
    jsonschema.validate(document, schema())
    assert document["source"]["mode"] == "cluster"
    assert len(document["controls"]) == document["catalog"]["controls"] == 81
    verdicts = {c["verdict"] for c in document["controls"]}
    assert {"met", "partial", "not-met", "out-of-scope"} <= verdicts, "the example shows each kind of verdict"


@pytest.mark.parametrize(
    ("name", "renderer"),
    [("report.md", render.markdown), ("report.html", html.html), ("report.txt", render.text)],
)
def test_each_format_is_what_the_json_renders(document, name, renderer):
    rendered = renderer(document)
    assert (EXAMPLE / name).read_text() == (rendered if rendered.endswith("\n") else rendered + "\n"), (
        f"examples/report/{name} is stale: run `make example-report` (or iotsec report --document)"
    )
