"""assess: every control gets a verdict, the worst of its assessments; out of scope from the catalog; a control
no probe answers says so; a failing probe never loses the report; filters recompute verdicts."""

from __future__ import annotations

from datetime import UTC, datetime

from iotsec.conformance import assess as assess_module
from iotsec.conformance.assess import assess, filtered, unprobed
from iotsec.conformance.model import CLUSTER, Assessment, Inventory, Scope, Verdict
from iotsec.model.controls import CONTROLS

NOW = datetime(2026, 12, 3, tzinfo=UTC)
EMPTY = Inventory("cluster", NOW)

# Controls in scope that no probe answers yet: this list may only shrink (tell the lead when it does).
STILL_WITHOUT_PROBE: set[str] = set()


def by_id(report):
    return {r.control.id: r for r in report.results}


def test_the_list_of_controls_without_a_probe_only_shrinks():
    assert set(unprobed()) <= STILL_WITHOUT_PROBE


def test_device_identity_classes_middleware_ports_and_observability_have_probes():
    for control in ("X1369-9.1.1.3-1", "X1369-9.1.2-3", "X1369-9.3.3-2", "X1369-9.6.1-1", "X1369-9.6.2-1"):
        assert control not in unprobed()
    assert "iotsec.conformance.observability" in [m.__name__ for m in assess_module.probe_modules()]


def test_every_control_gets_a_verdict_and_out_of_scope_comes_from_the_catalog():
    report = assess(EMPTY, probes=())
    assert [r.control.id for r in report.results] == [c.id for c in CONTROLS]
    results = by_id(report)
    assert results["X1369-9.4.2-1"].verdict is Verdict.OUT_OF_SCOPE
    unanswered = results["X1369-9.4.1-2"]
    assert unanswered.verdict is Verdict.PARTIAL
    assert unanswered.assessments[0].summary == "no evidence probe yet"


def probe_of(*assessments):
    def probe(_: Inventory):
        return assessments

    return probe


def test_the_verdict_is_the_worst_and_assessments_come_worst_first():
    ns = Scope("namespace", "app", "core")
    probe = probe_of(
        Assessment("X1369-9.4.1-2", CLUSTER, Verdict.MET, "ok"),
        Assessment("X1369-9.4.1-2", ns, Verdict.NOT_MET, "missing"),
        Assessment("X1369-9.4.1-2", Scope("domain", "core", "core"), Verdict.PARTIAL, "gap"),
    )
    result = by_id(assess(EMPTY, probes=(probe,)))["X1369-9.4.1-2"]
    assert result.verdict is Verdict.NOT_MET
    assert [a.verdict for a in result.assessments] == [Verdict.NOT_MET, Verdict.PARTIAL, Verdict.MET]


def test_out_of_scope_controls_ignore_probes():
    probe = probe_of(Assessment("X1369-9.4.2-1", CLUSTER, Verdict.NOT_MET, "wrongly judged"))
    assert by_id(assess(EMPTY, probes=(probe,)))["X1369-9.4.2-1"].verdict is Verdict.OUT_OF_SCOPE


def test_a_failing_probe_answers_its_controls_partial(monkeypatch):
    def broken(_: Inventory):
        raise KeyError("metadata")

    from iotsec.conformance import policy

    monkeypatch.setitem(policy.ANSWERS, broken, ("X1369-9.4.1-2",))
    result = by_id(assess(EMPTY, probes=(broken,)))["X1369-9.4.1-2"]
    assert result.verdict is Verdict.PARTIAL
    assert "probe broken failed: KeyError" in result.assessments[0].summary


def test_a_probed_control_with_nothing_to_judge_is_not_applicable():
    from iotsec.conformance import policy

    result = by_id(assess(EMPTY, probes=(policy.tenants,)))["X1369-9.2.3-1"]
    assert result.verdict is Verdict.NOT_APPLICABLE


def test_filters_keep_the_scope_and_cluster_facts_and_recompute():
    probe = probe_of(
        Assessment("X1369-9.4.1-2", Scope("namespace", "a", "core"), Verdict.NOT_MET, "missing"),
        Assessment("X1369-9.4.1-2", Scope("namespace", "b", "edge"), Verdict.MET, "ok"),
        Assessment("X1369-9.4.1-2", Scope("tenant", "acme", "edge", "acme"), Verdict.MET, "ok"),
        Assessment("X1369-9.4.1-3", CLUSTER, Verdict.PARTIAL, "cluster-wide"),
    )
    report = assess(EMPTY, probes=(probe,))
    edge = by_id(filtered(report, domain="edge"))
    assert edge["X1369-9.4.1-2"].verdict is Verdict.MET
    assert {a.scope.name for a in edge["X1369-9.4.1-2"].assessments} == {"b", "acme"}
    assert edge["X1369-9.4.1-3"].verdict is Verdict.PARTIAL
    assert by_id(filtered(report, namespace="a"))["X1369-9.4.1-2"].verdict is Verdict.NOT_MET
    assert by_id(filtered(report, tenant="acme"))["X1369-9.4.1-2"].verdict is Verdict.MET
    assert filtered(report, tenant="acme").filters == {"tenant": "acme"}


def test_probe_modules_missing_are_skipped():
    names = [m.__name__ for m in assess_module.probe_modules()]
    assert "iotsec.conformance.policy" in names


def test_assess_pauses_the_collector_for_the_inventory_only_and_restores_it():
    import gc

    seen = []

    def probe(_: Inventory):
        seen.append(gc.get_freeze_count())
        return ()

    assert gc.get_freeze_count() == 0
    assess(EMPTY, probes=(probe,))
    assert seen[0] > 0  # the objects alive before the run are frozen: collections skip them
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assess(EMPTY, probes=(probe,))
        assert gc.get_freeze_count() == frozen  # a caller's own freeze is left alone
    finally:
        gc.unfreeze()
