"""Red-team finding F1 (issue 17): whoever may write PolicyReports in a namespace (Policy Reporter and Kyverno users
often may) must not be able to make `iotsec report --cluster` read `met` there. Live, the report judges the objects
it read again with the scan's engine; a published report adds only what the report cannot see itself (failures on
ConfigMaps, whose values the report never keeps), and only iotsec's own (name `iotsec-scan` and iotsec's label)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from iotsec.admission.scan import scan
from iotsec.build.policyreport import policy_reports
from iotsec.conformance import policy
from iotsec.conformance.model import Inventory, Verdict, worst
from tests.unit.test_conformance_policy import applied_cluster, domain, of

NOW = datetime(2026, 12, 3, tzinfo=UTC)
CONTROL = "X1369-9.4.3-1"


def escalating_deployment() -> dict:
    container = {
        "name": "app",
        "image": "registry.example.com/app@sha256:" + "a" * 64,
        "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": True,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "slipped", "namespace": "app"},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {"automountServiceAccountToken": False, "containers": [container]},
            },
        },
    }


def forged(reports: list[dict], label: bool = True, name: str = "iotsec-scan") -> list[dict]:
    """The operator's reports with every failure turned into a pass, as a forger would write them."""
    out = copy.deepcopy(reports)
    for report in out:
        report["metadata"]["name"] = name
        if not label:
            report["metadata"]["labels"] = {}
        for result in report.get("results") or ():
            result["result"] = "pass"
        report["summary"] = {"pass": len(report.get("results") or ()), "fail": 0}
    return out


def verdict(objects: list[dict]) -> Verdict:
    inventory = Inventory("cluster", NOW, objects, source="https://test")
    assessments = [a for probe in policy.PROBES for a in probe(inventory)]
    scanned = [a for a in of(assessments, CONTROL, "app") if "scan" in a.mechanism]
    assert scanned, "the background scan answers the control in the namespace"
    return worst_of(scanned)


def worst_of(assessments: list) -> Verdict:
    found = worst(a.verdict for a in assessments)
    assert found is not None
    return found


def test_a_forged_passing_report_does_not_hide_a_violating_deployment():
    objects = [*applied_cluster(domain()), escalating_deployment()]
    honest = policy_reports(scan(objects, NOW), NOW)
    assert verdict([*objects, *honest]) is Verdict.NOT_MET
    assert verdict([*objects, *forged(honest)]) is Verdict.NOT_MET
    assert verdict([*objects, *forged(honest, label=False)]) is Verdict.NOT_MET


def test_a_clean_namespace_reads_met_whatever_the_published_report_says():
    objects = applied_cluster(domain())
    honest = policy_reports(scan(objects, NOW), NOW)
    assert verdict([*objects, *honest]) is Verdict.MET


def test_a_published_failure_on_a_config_map_stays_though_the_report_cannot_see_values():
    from iotsec.conformance.inventory import policy_reports as read_reports
    from iotsec.conformance.inventory import view

    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "app"}}
    objects = [*applied_cluster(domain()), config_map]
    published = policy_reports(scan(objects, NOW), NOW)
    [report] = [r for r in published if r["metadata"].get("namespace") == "app"]
    failure = {
        "policy": "iotsec",
        "rule": "no-keys-in-configmap",
        "category": "X1369-9.2.4-2",
        "result": "fail",
        "resources": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "settings", "namespace": "app"}],
    }
    report["results"].append(failure)
    read = read_reports(view(Inventory("cluster", NOW, [*objects, *published], source="https://test")))
    [again] = [r for r in read if r["metadata"].get("namespace") == "app"]
    assert failure in again["results"]
    forger = forged(published, name="other")  # another tool's report, or iotsec's results under another name
    read = read_reports(view(Inventory("cluster", NOW, [*objects, *forger], source="https://test")))
    assert all(r["metadata"]["name"] == "iotsec-scan" for r in read)


def test_an_object_the_scan_could_not_judge_is_not_counted_as_passing(monkeypatch):
    """Red-team F4: a malformed object (a custom resource whose schema lets any shape through) is an error result;
    it fails every admission control in its namespace instead of reading as a pass."""
    objects = applied_cluster(domain())
    reports = policy_reports(scan(objects, NOW), NOW)
    [report] = [r for r in reports if r["metadata"].get("namespace") == "app"]
    report["results"].append(
        {
            "policy": "iotsec",
            "rule": "malformed",
            "result": "error",
            "message": "spec.template.spec.securityContext: not an object",
            "resources": [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "odd", "namespace": "app"}],
        }
    )
    inventory = Inventory("cluster", NOW, [*objects, *reports], source="https://test")
    from iotsec.conformance import inventory as reading

    monkeypatch.setattr(reading, "scan_reports", lambda objects, now, as_written=True: copy.deepcopy(reports))
    assessments = [a for probe in policy.PROBES for a in probe(inventory)]
    scanned = [a for a in of(assessments, CONTROL, "app") if "scan" in a.mechanism]
    assert worst_of(scanned) is Verdict.NOT_MET
    assert any(o.name == "odd" for a in scanned for e in a.evidence for o in e.objects)


def test_the_html_report_carries_no_terminal_control_characters():
    """Red-team F7: an object name with ESC or CR is harmless in a browser but runs in a terminal that `cat`s it."""
    from iotsec.conformance.html import html

    objects = [*applied_cluster(domain()), escalating_deployment()]
    objects[-1]["metadata"]["name"] = "slipped\x1b[2J\rgone"
    inventory = Inventory("cluster", NOW, objects, source="https://test")
    from iotsec.conformance.assess import assess
    from iotsec.conformance.document import to_document

    page = html(to_document(assess(inventory)))
    assert "slipped" in page
    assert not any(ch in page for ch in "\x1b\r\x07")
