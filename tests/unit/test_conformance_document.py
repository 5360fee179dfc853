"""The report document: exactly the seams' shape, valid against the committed JSON Schema (draft 2020-12)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from iotsec.conformance.assess import assess, filtered
from iotsec.conformance.document import schema, to_document
from iotsec.conformance.inventory import from_documents
from iotsec.conformance.model import Inventory, Verdict
from iotsec.model.manifests import load_documents

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 3, tzinfo=UTC)


@pytest.fixture(scope="module")
def example_document():
    docs = list(load_documents([ROOT / "examples/platform", ROOT / "examples/workloads"]))
    return to_document(assess(from_documents(docs, NOW, "examples")))


def validator():
    jsonschema.Draft202012Validator.check_schema(schema())
    return jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())


def test_the_example_document_is_valid(example_document):
    errors = sorted(validator().iter_errors(example_document), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]


def test_empty_and_filtered_documents_are_valid():
    empty = to_document(assess(Inventory("cluster", NOW, source="https://x", unavailable={"a/B": "forbidden"})))
    validator().validate(empty)
    assert empty["source"] == {"mode": "cluster", "from": "https://x", "unavailable": {"a/B": "forbidden"}}
    docs = list(load_documents([ROOT / "examples/platform"]))
    narrow = to_document(filtered(assess(from_documents(docs, NOW)), domain="ingestion"))
    validator().validate(narrow)
    assert narrow["filters"] == {"domain": "ingestion"}


def test_the_schema_rejects_what_the_seams_do_not_allow(example_document):
    broken = {**example_document, "controls": [{**example_document["controls"][0], "verdict": "fine"}]}
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(broken)
    with pytest.raises(jsonschema.ValidationError):
        validator().validate({**example_document, "extra": 1})


def test_shape_and_totals(example_document):
    doc = example_document
    assert doc["apiVersion"] == "iotsec.io/conformance/v1"
    assert doc["kind"] == "ConformanceReport"
    assert doc["generatedAt"] == "2026-12-03T00:00:00Z"
    assert doc["catalog"] == {"standard": "ITU-T X.1369 (01/2022)", "controls": 81}
    assert len(doc["controls"]) == 81
    assert sum(doc["totals"].values()) == 81
    assert list(doc["totals"]) == ["not-met", "partial", "met", "not-applicable", "out-of-scope"]
    for area in doc["areas"]:
        counted = [c for c in doc["controls"] if c["area"] == area["id"]]
        assert sum(area["totals"].values()) == len(counted)
    assert "ingestion" in doc["scopes"]["domains"]
    assert "acme-utilities" in doc["scopes"]["tenants"]
    assert "iot-gateway" in doc["scopes"]["namespaces"]


def test_each_control_is_its_worst_assessment_listed_worst_first(example_document):
    order = [
        str(v) for v in (Verdict.NOT_MET, Verdict.PARTIAL, Verdict.MET, Verdict.NOT_APPLICABLE, Verdict.OUT_OF_SCOPE)
    ]
    for control in example_document["controls"]:
        ranks = [order.index(a["verdict"]) for a in control["assessments"]]
        assert ranks == sorted(ranks)
        assert control["verdict"] == order[ranks[0]]
