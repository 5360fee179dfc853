"""Trivy Operator reports as evidence for the patching and scanning controls.

Fixtures are shaped like Trivy Operator's own examples and types: docs/docs/crds/vulnerability-report.md,
docs/docs/crds/configaudit-report.md and pkg/apis/aquasecurity/v1alpha1/{vulnerability,config_audit}_types.go of
github.com/aquasecurity/trivy-operator (report.summary.*Count, report.artifact, report.registry.server,
report.updateTimestamp, the trivy-operator.resource.* and trivy-operator.container.name labels; a Deployment's
reports name its ReplicaSet).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from iotsec.conformance import trivy
from iotsec.conformance.model import Assessment, Inventory, ObjectRef, Verdict
from iotsec.model.controls import CONTROLS
from iotsec.model.time import rfc3339

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
NAMESPACE = "plant-a"


def at(**delta: float) -> str:
    return rfc3339(NOW + timedelta(**delta))


def namespace(name: str = NAMESPACE) -> dict[str, Any]:
    labels = {"iotsec.io/domain": "plant", "iotsec.io/zone": "ot"}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def deployment(name: str = "mqtt", image: str = "eclipse-mosquitto:2.0.18") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"template": {"spec": {"containers": [{"name": "broker", "image": image}]}}},
    }


def vulnerability_report(
    kind: str = "ReplicaSet",
    name: str = "mqtt-6d4cf56db6",
    critical: int = 0,
    high: int = 0,
    updated: str | None = None,
    container: str = "broker",
    tag: str = "2.0.18",
) -> dict[str, Any]:
    return {
        "apiVersion": "aquasecurity.github.io/v1alpha1",
        "kind": "VulnerabilityReport",
        "metadata": {
            "name": f"{kind.lower()}-{name}-{container}",
            "namespace": NAMESPACE,
            "creationTimestamp": at(days=-30),
            "labels": {
                "trivy-operator.container.name": container,
                "trivy-operator.resource.kind": kind,
                "trivy-operator.resource.name": name,
                "trivy-operator.resource.namespace": NAMESPACE,
                "resource-spec-hash": "7cb64cb677",
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": name, "controller": True}],
        },
        "report": {
            "updateTimestamp": updated or at(hours=-5),
            "artifact": {"repository": "library/eclipse-mosquitto", "tag": tag},
            "os": {"family": "alpine", "name": "3.19.1"},
            "registry": {"server": "index.docker.io"},
            "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.57.1"},
            "summary": {
                "criticalCount": critical,
                "highCount": high,
                "mediumCount": 3,
                "lowCount": 7,
                "unknownCount": 0,
            },
            "vulnerabilities": [
                {
                    "vulnerabilityID": "CVE-2024-0000",
                    "resource": "libcrypto3",
                    "installedVersion": "3.1.4-r5",
                    "fixedVersion": "3.1.4-r6",
                    "severity": "CRITICAL" if critical else "MEDIUM",
                    "title": "",
                    "primaryLink": "https://avd.aquasec.com/nvd/cve-2024-0000",
                    "links": [],
                    "target": "library/eclipse-mosquitto:2.0.18 (alpine 3.19.1)",
                }
            ],
        },
    }


def config_audit_report(critical: int = 0, high: int = 0, updated: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "aquasecurity.github.io/v1alpha1",
        "kind": "ConfigAuditReport",
        "metadata": {
            "name": "replicaset-mqtt-6d4cf56db6",
            "namespace": NAMESPACE,
            "labels": {
                "trivy-operator.resource.kind": "ReplicaSet",
                "trivy-operator.resource.name": "mqtt-6d4cf56db6",
                "trivy-operator.resource.namespace": NAMESPACE,
                "plugin-config-hash": "7f65d98b75",
                "resource-spec-hash": "7cb64cb677",
            },
        },
        "report": {
            "updateTimestamp": updated or at(hours=-5),
            "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.57.1"},
            "summary": {"criticalCount": critical, "highCount": high, "mediumCount": 0, "lowCount": 1},
            "checks": [
                {
                    "category": "Security",
                    "checkID": "KSV017",
                    "messages": ["Privileged"],
                    "severity": "CRITICAL" if critical else "LOW",
                    "success": not critical,
                },
                {
                    "category": "Security",
                    "checkID": "KSV014",
                    "messages": ["Filesystem should be read only"],
                    "scope": {"type": "Container", "value": "broker"},
                    "severity": "LOW",
                    "success": False,
                },
            ],
        },
    }


def run(*objects: dict[str, Any], mode: str = "cluster", unavailable: dict[str, str] | None = None) -> list[Assessment]:
    inventory = Inventory(mode, NOW, objects=[namespace(), *objects], unavailable=dict(unavailable or {}))  # type: ignore[arg-type]
    return list(trivy.vulnerabilities(inventory))


def only(found: list[Assessment], control: str, kind: str = "namespace") -> Assessment:
    matches = [a for a in found if a.control == control and a.scope.kind == kind]
    assert len(matches) == 1, [(a.control, a.scope) for a in found]
    return matches[0]


def test_no_trivy_crd_is_partial_at_cluster_scope() -> None:
    found = run(deployment(), unavailable={"aquasecurity.github.io/VulnerabilityReport": "CRD not installed"})
    assert {a.control for a in found} == {trivy.C_PATCHED, trivy.C_MIDDLEWARE, trivy.C_SCANNING}
    for assessment in found:
        assert assessment.verdict == Verdict.PARTIAL
        assert assessment.scope.kind == "cluster"
        assert "no vulnerability scanner installed" in assessment.summary


def test_a_clean_scan_is_met_with_the_scan_time() -> None:
    found = run(deployment(), vulnerability_report(), config_audit_report())
    patched = only(found, trivy.C_PATCHED)
    assert patched.verdict == Verdict.MET
    assert patched.scope.domain == "plant"
    assert "index.docker.io/library/eclipse-mosquitto:2.0.18: 0 critical, 0 high" in patched.summary
    assert "scanned 5 h ago" in patched.summary
    objects = patched.evidence[0].objects
    assert ObjectRef("apps/v1", "Deployment", "mqtt", NAMESPACE) in objects
    assert (
        ObjectRef(
            "aquasecurity.github.io/v1alpha1", "VulnerabilityReport", "replicaset-mqtt-6d4cf56db6-broker", NAMESPACE
        )
        in objects
    )
    assert patched.evidence[0].observed_at == at(hours=-5)
    assert only(found, trivy.C_MIDDLEWARE).verdict == Verdict.MET
    assert only(found, trivy.C_SCANNING).verdict == Verdict.MET


def test_critical_vulnerabilities_are_not_met_naming_workload_image_and_counts() -> None:
    found = only(run(deployment(), vulnerability_report(critical=2, high=1)), trivy.C_PATCHED)
    assert found.verdict == Verdict.NOT_MET
    assert found.summary.startswith(
        "Deployment mqtt: index.docker.io/library/eclipse-mosquitto:2.0.18: 2 critical, 1 high"
    )
    assert found.missing


def test_high_only_is_partial_and_a_stale_report_is_partial() -> None:
    assert only(run(deployment(), vulnerability_report(high=4)), trivy.C_PATCHED).verdict == Verdict.PARTIAL
    stale = only(run(deployment(), vulnerability_report(updated=at(days=-9))), trivy.C_PATCHED)
    assert stale.verdict == Verdict.PARTIAL
    assert "stale" in stale.summary


def test_a_workload_without_a_report_is_partial() -> None:
    found = only(run(deployment(), deployment("historian"), vulnerability_report()), trivy.C_PATCHED)
    assert found.verdict == Verdict.PARTIAL
    assert "Deployment historian: no VulnerabilityReport" in found.summary


def test_only_the_deployments_own_replicasets_match() -> None:
    other = vulnerability_report(name="mqtt-bridge-5f7d9c8b4", critical=5)  # another Deployment's ReplicaSet
    found = only(run(deployment(), other), trivy.C_PATCHED)
    assert found.verdict == Verdict.PARTIAL
    assert "no VulnerabilityReport" in found.summary


def test_a_previous_replicasets_report_of_an_older_image_no_longer_counts() -> None:
    old = vulnerability_report(name="mqtt-5b6c7d8e9f", critical=3, updated=at(days=-3), tag="2.0.15")
    found = only(run(deployment(), old, vulnerability_report()), trivy.C_PATCHED)
    assert found.verdict == Verdict.MET
    assert "2.0.15" not in found.summary


def test_a_forged_newer_clean_report_cannot_hide_the_real_ones_criticals() -> None:
    """Red team F2: whoever may write VulnerabilityReports in the namespace added a newer one with no findings for
    the same container; the newest won and 2 critical CVEs read met. Now the worst report of the current image
    counts, so a forged report can only make the verdict worse."""
    real = vulnerability_report(critical=2, updated=at(hours=-5))
    forged = vulnerability_report(name="mqtt-6d4cf56db6", updated=at(minutes=-1))
    forged["metadata"]["name"] = "forged"
    found = only(run(deployment(), real, forged), trivy.C_PATCHED)
    assert found.verdict == Verdict.NOT_MET
    assert "2 critical" in found.summary


def test_a_report_of_another_image_is_not_evidence_for_the_running_one() -> None:
    other = vulnerability_report(tag="2.0.99")  # clean, newer, for an image the Deployment does not run
    found = only(run(deployment(), other), trivy.C_PATCHED)
    assert found.verdict == Verdict.PARTIAL
    assert "no VulnerabilityReport of its current images" in found.summary
    pinned = deployment(image="docker.io/library/eclipse-mosquitto:2.0.18@sha256:" + "a" * 64)
    report = vulnerability_report()
    report["report"]["artifact"]["digest"] = "sha256:" + "b" * 64  # same tag, another build
    assert only(run(pinned, report), trivy.C_PATCHED).verdict == Verdict.PARTIAL


def test_a_container_without_a_report_of_its_image_leaves_the_workload_partial() -> None:
    two = deployment()
    two["spec"]["template"]["spec"]["containers"].append({"name": "exporter", "image": "ghcr.io/acme/exporter:1"})
    found = only(run(two, vulnerability_report()), trivy.C_PATCHED)
    assert found.verdict == Verdict.PARTIAL
    assert "not scanned for its current image: exporter (ghcr.io/acme/exporter:1)" in found.summary


def test_image_references_are_compared_as_docker_spells_them() -> None:
    assert trivy.same_image("eclipse-mosquitto:2.0.18", "index.docker.io/library/eclipse-mosquitto:2.0.18")
    assert trivy.same_image("nginx", "docker.io/library/nginx:latest")
    assert trivy.same_image("localhost:5000/app:1", "localhost:5000/app:1@sha256:" + "c" * 64)
    assert not trivy.same_image("nginx:1.25", "nginx:1.26")
    assert not trivy.same_image("acme/app:1", "ghcr.io/acme/app:1")
    assert not trivy.same_image("app@sha256:" + "a" * 64, "app@sha256:" + "b" * 64)


def test_statefulsets_and_bare_pods_are_matched_by_kind_and_name_owned_pods_skipped() -> None:
    statefulset = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "tsdb", "namespace": NAMESPACE}}
    owned_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "tsdb-0", "namespace": NAMESPACE, "ownerReferences": [{"kind": "StatefulSet"}]},
    }
    report = vulnerability_report(kind="StatefulSet", name="tsdb", container="tsdb")
    found = only(run(statefulset, owned_pod, report), trivy.C_PATCHED)
    assert found.verdict == Verdict.MET
    assert len(found.evidence) == 1


def test_configuration_audit_failures_feed_9_1_4_3_only() -> None:
    found = run(deployment(), vulnerability_report(), config_audit_report(critical=1))
    scanning = only(found, trivy.C_SCANNING)
    assert scanning.verdict == Verdict.NOT_MET
    assert "KSV017" in scanning.summary
    assert only(found, trivy.C_PATCHED).verdict == Verdict.MET
    missing_audit = only(run(deployment(), vulnerability_report()), trivy.C_SCANNING)
    assert missing_audit.verdict == Verdict.PARTIAL


def test_a_namespace_without_workloads_is_not_applicable_and_offline_without_reports_partial() -> None:
    assert only(run(), trivy.C_PATCHED).verdict == Verdict.NOT_APPLICABLE
    offline = run(deployment(), mode="files")
    assert {(a.scope.kind, a.verdict) for a in offline} == {("cluster", Verdict.PARTIAL)}


def test_answers_are_catalog_controls() -> None:
    catalog = {c.id for c in CONTROLS}
    for probe, controls in trivy.ANSWERS.items():
        assert set(controls) <= catalog
        assert {a.control for a in run(deployment(), vulnerability_report())} <= set(controls)
        assert probe in trivy.PROBES
