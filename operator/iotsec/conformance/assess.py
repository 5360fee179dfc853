"""Run every probe over an inventory and give each control of the catalog its verdict: the worst of its
assessments. Out-of-scope controls are answered from the catalog; a control no probe answers says so (partial)."""

from __future__ import annotations

import gc
import importlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

from iotsec.conformance.model import (
    CLUSTER,
    WORST_FIRST,
    Assessment,
    Inventory,
    Probe,
    Verdict,
    worst,
)
from iotsec.model.controls import CONTROLS, Control

PROBE_MODULES = (
    "iotsec.conformance.policy",
    "iotsec.conformance.runtime",
    "iotsec.conformance.trivy",
    "iotsec.conformance.observability",
)
SCOPE_ORDER = {"cluster": 0, "domain": 1, "tenant": 2, "namespace": 3}


@dataclass(frozen=True)
class ControlResult:
    control: Control
    verdict: Verdict
    assessments: tuple[Assessment, ...]


@dataclass
class ConformanceReport:
    mode: str
    now: Any  # datetime
    source: str
    unavailable: dict[str, str]
    results: list[ControlResult] = field(default_factory=list)
    filters: dict[str, str] = field(default_factory=dict)  # domain/tenant/namespace the view is limited to


def probe_modules() -> list[ModuleType]:
    """The probe modules present in this build (runtime and trivy arrive separately)."""
    found = []
    for name in PROBE_MODULES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return found


def default_probes() -> tuple[Probe, ...]:
    return tuple(p for module in probe_modules() for p in getattr(module, "PROBES", ()))


def answered(probes: Iterable[Probe] | None = None) -> set[str]:
    """Control ids the probes declare they answer (each module's ANSWERS)."""
    wanted = set(probes) if probes is not None else None
    ids: set[str] = set()
    for module in probe_modules():
        answers: Mapping[Any, Sequence[str]] = getattr(module, "ANSWERS", {})
        for probe, controls in answers.items():
            if wanted is None or probe in wanted:
                ids |= set(controls)
    return ids


def unprobed(probes: Iterable[Probe] | None = None) -> list[str]:
    """Controls in scope that no probe answers yet."""
    covered = answered(probes)
    return [c.id for c in CONTROLS if not _out_of_scope(c) and c.id not in covered]


def _out_of_scope(control: Control) -> bool:
    return str(control.coverage) == "out-of-scope"


def assess(inventory: Inventory, probes: Sequence[Probe] | None = None) -> ConformanceReport:
    chosen = tuple(probes) if probes is not None else default_probes()
    by_control: dict[str, list[Assessment]] = defaultdict(list)
    with _collector_paused_for_old_objects():
        for probe in chosen:
            for assessment in _run(probe, inventory):
                by_control[assessment.control].append(assessment)
    covered = answered(chosen)
    report = ConformanceReport(inventory.mode, inventory.now, inventory.source, dict(inventory.unavailable))
    for control in CONTROLS:
        report.results.append(_result(control, by_control.get(control.id, []), control.id in covered))
    return report


@contextmanager
def _collector_paused_for_old_objects() -> Iterator[None]:
    """An inventory is tens of thousands of long-lived dicts; the cyclic collector would traverse all of them again
    on each collection the probes' many small allocations trigger (40 % of the time at 1,000 namespaces). Freeze
    what exists for the run (garbage made during it is still collected), unless the caller froze objects itself."""
    if gc.get_freeze_count() or not gc.isenabled():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _run(probe: Probe, inventory: Inventory) -> list[Assessment]:
    """A probe's assessments; a probe that fails answers its controls partial with the error (never a crash)."""
    try:
        return list(probe(inventory))
    except Exception as exc:  # one broken probe must not lose the whole report
        controls: Sequence[str] = ()
        for module in probe_modules():
            controls = getattr(module, "ANSWERS", {}).get(probe, controls)
        name = getattr(probe, "__name__", "probe")
        return [
            Assessment(
                c,
                CLUSTER,
                Verdict.PARTIAL,
                f"probe {name} failed: {type(exc).__name__}: {exc}",
                (),
                "report this as a bug of iotsec report",
                name,
            )
            for c in controls
        ]


def _result(control: Control, found: list[Assessment], covered: bool) -> ControlResult:
    if _out_of_scope(control):
        found = [
            Assessment(
                control.id, CLUSTER, Verdict.OUT_OF_SCOPE, f"out of scope: {control.k8s_control}", mechanism="catalog"
            )
        ]
    elif not found and covered:
        found = [
            Assessment(
                control.id,
                CLUSTER,
                Verdict.NOT_APPLICABLE,
                "nothing in the inventory that this control is about (no scope to judge)",
                mechanism="catalog",
            )
        ]
    elif not found:
        found = [
            Assessment(
                control.id,
                CLUSTER,
                Verdict.PARTIAL,
                "no evidence probe yet",
                missing="iotsec does not yet read evidence for this control; judge it by hand",
                mechanism="catalog",
            )
        ]
    ordered = tuple(sorted(found, key=sort_key))
    return ControlResult(control, worst(a.verdict for a in ordered) or Verdict.NOT_APPLICABLE, ordered)


def sort_key(assessment: Assessment) -> tuple[int, int, str]:
    return (WORST_FIRST.index(assessment.verdict), SCOPE_ORDER[assessment.scope.kind], assessment.scope.name)


def filtered(
    report: ConformanceReport, domain: str | None = None, tenant: str | None = None, namespace: str | None = None
) -> ConformanceReport:
    """The report limited to one domain, tenant and/or namespace: assessments of other scopes go, cluster-wide
    ones stay (they hold everywhere); each control's verdict is recomputed from what is left."""
    wanted = {k: v for k, v in (("domain", domain), ("tenant", tenant), ("namespace", namespace)) if v}
    if not wanted:
        return report
    results = []
    for result in report.results:
        kept = tuple(a for a in result.assessments if _keeps(a, domain, tenant, namespace))
        if not kept:
            kept = (
                Assessment(
                    result.control.id,
                    CLUSTER,
                    Verdict.NOT_APPLICABLE,
                    "nothing in the selected scope that this control is about",
                    mechanism="filter",
                ),
            )
        results.append(ControlResult(result.control, worst(a.verdict for a in kept) or Verdict.NOT_APPLICABLE, kept))
    return replace(report, results=results, filters=wanted)


def _keeps(a: Assessment, domain: str | None, tenant: str | None, namespace: str | None) -> bool:
    scope = a.scope
    if scope.kind == "cluster":
        return True
    if domain and scope.domain != domain and not (scope.kind == "domain" and scope.name == domain):
        return False
    if tenant and scope.tenant != tenant and not (scope.kind == "tenant" and scope.name == tenant):
        return False
    return not (namespace and not (scope.kind == "namespace" and scope.name == namespace))
