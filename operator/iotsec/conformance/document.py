"""The report's JSON document (`iotsec report -o json`, and what every renderer reads): versioned, its schema
committed beside it (report.schema.json)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from iotsec.conformance.assess import ConformanceReport, ControlResult
from iotsec.conformance.model import SCHEMA_VERSION, WORST_FIRST, Verdict
from iotsec.model.controls import AREAS, CONTROLS
from iotsec.model.time import rfc3339

STANDARD = "ITU-T X.1369 (01/2022)"
KIND = "ConformanceReport"


def to_document(report: ConformanceReport) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": SCHEMA_VERSION,
        "kind": KIND,
        "generatedAt": rfc3339(report.now),
        "source": {"mode": report.mode, "from": report.source, "unavailable": dict(sorted(report.unavailable.items()))},
        "catalog": {"standard": STANDARD, "controls": len(CONTROLS)},
        "totals": _totals(report.results),
        "areas": [
            {"id": area, "title": title, "totals": _totals([r for r in report.results if r.control.area == area])}
            for area, title in AREAS.items()
        ],
        "scopes": _scopes(report.results),
        "controls": [_control(r) for r in report.results],
    }
    if report.filters:
        document["filters"] = dict(report.filters)
    return document


def _totals(results: list[ControlResult]) -> dict[str, int]:
    totals = {str(v): 0 for v in WORST_FIRST}
    for result in results:
        totals[str(result.verdict)] += 1
    return totals


def _scopes(results: list[ControlResult]) -> dict[str, list[str]]:
    domains: set[str] = set()
    tenants: set[str] = set()
    namespaces: set[str] = set()
    for result in results:
        for a in result.assessments:
            scope = a.scope
            domains |= {scope.domain} if scope.domain else set()
            tenants |= {scope.tenant} if scope.tenant else set()
            {"domain": domains, "tenant": tenants, "namespace": namespaces}.get(scope.kind, set()).add(scope.name)
    return {"domains": sorted(domains), "tenants": sorted(tenants), "namespaces": sorted(namespaces)}


def _control(result: ControlResult) -> dict[str, Any]:
    control = result.control
    return {
        "id": control.id,
        "area": control.area,
        "requirement": control.requirement,
        "coverage": str(control.coverage),
        "k8sControl": control.k8s_control,
        "mechanisms": list(control.mechanisms),
        "verdict": str(result.verdict),
        "assessments": [a.to_json() for a in result.assessments],
    }


@cache
def schema() -> dict[str, Any]:
    """The document's JSON Schema (draft 2020-12)."""
    text = resources.files("iotsec.conformance").joinpath("report.schema.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


VERDICTS = tuple(str(v) for v in Verdict)
