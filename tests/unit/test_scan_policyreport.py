"""The scan's PolicyReports (iotsec.build.policyreport): the seams' shape, fail/warn/skip/pass, summary counts, the
size cap, and every report valid against the wgpolicyk8s.io/v1alpha2 CRD the chart ships."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from iotsec.admission.scan import ObjectRef, RuleFinding, ScannedObject, ScanResult, scan
from iotsec.build import policyreport
from iotsec.build.policyreport import policy_reports
from tests.unit.test_scan import NOW, cluster, deployment, domain, namespace

CRDS = Path(__file__).parents[2] / "charts/iotsec-operator/files/policyreport-crds.yaml"


def _schemas() -> dict[str, dict[str, Any]]:
    crds = [d for d in yaml.safe_load_all(CRDS.read_text()) if d]
    return {c["spec"]["names"]["kind"]: c["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for c in crds}


SCHEMAS = _schemas()


def valid(report: dict[str, Any]) -> None:
    """Against the CRD's openAPIV3Schema, plus what a structural schema leaves unsaid but the API server needs."""
    jsonschema.validate(report, SCHEMAS[report["kind"]])
    assert report["apiVersion"] == "wgpolicyk8s.io/v1alpha2"
    for result in report["results"]:
        assert all(isinstance(v, str) and v for v in result.get("properties", {}).values())  # "" arrives as null
    assert len(json.dumps(report).encode()) < 1_500_000


def test_the_chart_copy_is_the_v1alpha2_crd_with_critical_and_info():
    assert set(SCHEMAS) == {"PolicyReport", "ClusterPolicyReport"}
    severity = SCHEMAS["PolicyReport"]["properties"]["results"]["items"]["properties"]["severity"]
    assert set(severity["enum"]) == {"critical", "high", "medium", "low", "info"}


def test_the_schema_check_can_fail():
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"results": [{"policy": "iotsec", "result": "denied"}]}, SCHEMAS["PolicyReport"])


def _mixed_cluster() -> list[dict[str, Any]]:
    exception = {
        "rule": "no-privileged",
        "target": {"namespace": "line-a", "kind": "Deployment", "name": "waived"},
        "justification": "the gateway driver needs raw device access until firmware 3.0",
        "approver": "ciso@example.com",
        "expires": (NOW + timedelta(days=30)).isoformat(),
    }
    admin = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "everyone-admin", "uid": "uid-crb"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "Group", "name": "developers", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    return [
        domain("plant", ["line-a"], exceptions=[exception]),
        domain("lab", ["lab"], enforcement="warn"),
        *(namespace(n) for n in ("line-a", "lab")),
        deployment("bad", "line-a", privileged=True),
        deployment("waived", "line-a", privileged=True),
        deployment("good", "line-a"),
        deployment("probe", "lab", privileged=True),
        admin,
    ]


def _reports() -> dict[tuple[str, str], dict[str, Any]]:
    reports = policy_reports(scan(_mixed_cluster(), NOW), NOW)
    return {(r["kind"], r["metadata"].get("namespace", "")): r for r in reports}


def test_one_report_per_namespace_and_one_cluster_report_all_valid():
    reports = _reports()
    assert list(reports) == [("PolicyReport", "lab"), ("PolicyReport", "line-a"), ("ClusterPolicyReport", "")]
    for report in reports.values():
        valid(report)
        assert report["metadata"]["name"] == "iotsec-scan"
        assert report["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "iotsec"}


def test_results_carry_rule_control_severity_and_the_object():
    line_a = _reports()[("PolicyReport", "line-a")]
    fail = next(r for r in line_a["results"] if r["result"] == "fail")
    assert fail["policy"] == "iotsec"
    assert fail["source"] == "iotsec"
    assert (fail["rule"], fail["category"], fail["severity"]) == ("no-privileged", "X1369-9.4.3-1", "critical")
    assert fail["resources"] == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "bad", "namespace": "line-a", "uid": "uid-bad"}
    ]
    assert fail["properties"] == {"control": "X1369-9.4.3-1", "domain": "plant", "mode": "enforce"}
    assert fail["timestamp"] == {"seconds": int(NOW.timestamp()), "nanos": 0}
    assert fail["message"].startswith("[X1369-9.4.3-1 no-privileged]")


def test_enforce_fails_warn_warns_waivers_skip_and_clean_objects_pass():
    reports = _reports()
    line_a = {(r["resources"][0]["name"], r["result"]) for r in reports[("PolicyReport", "line-a")]["results"]}
    assert line_a == {("bad", "fail"), ("waived", "skip"), ("good", "pass")}
    assert {r["result"] for r in reports[("PolicyReport", "lab")]["results"]} == {"warn"}
    skip = next(r for r in reports[("PolicyReport", "line-a")]["results"] if r["result"] == "skip")
    assert skip["properties"]["exception"] == "plant/exceptions[0]"
    assert skip["properties"]["approver"] == "ciso@example.com"
    assert skip["properties"]["justification"].startswith("the gateway driver")
    passed = next(r for r in reports[("PolicyReport", "line-a")]["results"] if r["result"] == "pass")
    assert passed["rule"] == "all"
    assert "severity" not in passed
    cluster_results = reports[("ClusterPolicyReport", "")]["results"]
    assert [(r["rule"], r["result"]) for r in cluster_results] == [("trusted-admin-binding", "fail")]
    assert "namespace" not in cluster_results[0]["resources"][0]


def test_summary_counts_the_results():
    reports = _reports()
    assert reports[("PolicyReport", "line-a")]["summary"] == {"pass": 1, "fail": 1, "warn": 0, "error": 0, "skip": 1}
    assert reports[("PolicyReport", "lab")]["summary"] == {"pass": 0, "fail": 0, "warn": 1, "error": 0, "skip": 0}


def test_results_are_sorted_failures_first_and_stably():
    first = policy_reports(scan(_mixed_cluster(), NOW), NOW)
    again = policy_reports(scan(list(reversed(_mixed_cluster())), NOW), NOW)
    assert first == again
    results = [r["result"] for r in first[1]["results"]]
    assert results == sorted(results, key=["fail", "warn", "error", "skip", "pass"].index)


def test_no_objects_no_reports():
    assert policy_reports(scan(cluster(), NOW), NOW) == []


def _many(count: int) -> ScanResult:
    result = ScanResult(NOW)
    finding = RuleFinding(
        "no-privileged", "X1369-9.4.3-1", "critical", "[X1369-9.4.3-1 no-privileged] " + "m" * 200, ()
    )
    for index in range(count):
        ref = ObjectRef("apps/v1", "Deployment", f"app-{index:05d}", "crowded", f"uid-{index}")
        result.objects.append(ScannedObject(ref, "crowded", "plant", "enforce", (finding,)))
    result.objects.append(ScannedObject(ObjectRef("v1", "Service", "calm", "crowded"), "crowded", "plant", "enforce"))
    return result


def test_a_crowded_namespace_is_cut_under_the_size_limit_with_a_closing_result():
    (report,) = policy_reports(_many(6000), NOW)
    valid(report)
    assert len(json.dumps(report).encode()) <= policyreport.MAX_REPORT_BYTES
    last = report["results"][-1]
    left_out = 6001 - (len(report["results"]) - 1)
    assert left_out > 0
    assert (last["rule"], last["result"]) == ("results-left-out", "error")
    assert last["properties"]["leftOut"] == str(left_out)
    assert f"{left_out} more results" in last["message"]
    assert report["summary"] == {"pass": 1, "fail": 6000, "warn": 0, "error": 1, "skip": 0}
    assert all(r["result"] == "fail" for r in report["results"][:-1])  # the pass is what was cut first


def test_a_small_namespace_is_not_cut():
    (report,) = policy_reports(_many(10), NOW)
    assert len(report["results"]) == 11
    assert report["summary"]["error"] == 0


def test_an_object_the_engine_cannot_judge_is_an_error_result_not_left_out():
    """A privileged Rollout whose pod template holds one odd field (a CRD kind the API server stores in any shape)
    cannot be judged: it is reported as an error naming the object and why, so it cannot vanish from the reports
    (and the summary counts it)."""
    template = {"spec": {"securityContext": 1, "containers": [{"name": "app", "image": "x", "securityContext": {}}]}}
    template["spec"]["containers"][0]["securityContext"]["privileged"] = True
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "odd", "namespace": "line-a", "uid": "uid-odd"},
        "spec": {"template": template},
    }
    result = scan(cluster(rollout), NOW)
    assert [ref.title for ref, _ in result.invalid] == ["Rollout line-a/odd"]
    (report,) = policy_reports(result, NOW)
    valid(report)
    (error,) = report["results"]
    assert (error["result"], error["rule"], error["resources"][0]["name"]) == ("error", policyreport.ERROR_RULE, "odd")
    assert "malformed" in error["message"]
    assert report["summary"]["error"] == 1
