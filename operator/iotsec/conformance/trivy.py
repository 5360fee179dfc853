"""Vulnerability and configuration scanning as evidence, read from Trivy Operator's reports instead of claimed.

Pinning an image is not patching it. Where Trivy Operator runs, its `VulnerabilityReport` (one per workload
container) and `ConfigAuditReport` (one per object) objects, `aquasecurity.github.io/v1alpha1`, say what the running
images contain; this module judges X1369-9.3.2-1, -9.3.3-1 and -9.1.4-3 from them per member namespace. Without
the CRDs the controls stay `partial`: iotsec has no scanner of its own.

Shapes as Trivy Operator writes them (pkg/apis/aquasecurity/v1alpha1/vulnerability_types.go and
config_audit_types.go of aquasecurity/trivy-operator): `report.summary.{critical,high,medium,low}Count`,
`report.artifact.{repository,tag,digest}`, `report.registry.server`, `report.updateTimestamp`, and the labels
`trivy-operator.resource.{kind,name,namespace}` and `trivy-operator.container.name` naming the scanned object.
A Deployment's reports name its ReplicaSet (`<deployment>-<pod-template-hash>`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from iotsec.admission.podspecs import pod_specs
from iotsec.admission.workloads import containers
from iotsec.conformance.model import CLUSTER, Assessment, Evidence, Inventory, ObjectRef, Probe, Scope, Verdict
from iotsec.conformance.runtime import Finding, Index, ago, assess, members, not_applicable, when

GROUP = "aquasecurity.github.io"
VULNERABILITY_REPORT = "VulnerabilityReport"
CONFIG_AUDIT_REPORT = "ConfigAuditReport"
STALE_AFTER = timedelta(days=7)
KIND_LABEL = "trivy-operator.resource.kind"
NAME_LABEL = "trivy-operator.resource.name"
NAMESPACE_LABEL = "trivy-operator.resource.namespace"
CONTAINER_LABEL = "trivy-operator.container.name"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob", "Job", "Pod")
NO_SCANNER = "no vulnerability scanner installed (Trivy Operator's VulnerabilityReports are read when present)"
INSTALL = "install Trivy Operator (aquasecurity/trivy-operator): its VulnerabilityReports become the evidence"
MECHANISM = "Trivy Operator VulnerabilityReport / ConfigAuditReport"

C_SCANNING = "X1369-9.1.4-3"
C_PATCHED = "X1369-9.3.2-1"
C_MIDDLEWARE = "X1369-9.3.3-1"
_POD_TEMPLATE_HASH = re.compile(r"[a-z0-9]{1,10}")
_NEVER = datetime.min.replace(tzinfo=UTC)
DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class _Workload:
    obj: Mapping[str, Any]
    kind: str
    name: str

    @property
    def title(self) -> str:
        return f"{self.kind} {self.name}"


def scanned_object(report: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, name) of the workload a report is about: a ReplicaSet `<deployment>-<pod-template-hash>` stands for its
    Deployment (Trivy Operator scans the ReplicaSet a Deployment runs)."""
    labels = _labels(report)
    kind, name = str(labels.get(KIND_LABEL, "")), str(labels.get(NAME_LABEL, ""))
    if kind == "ReplicaSet" and _POD_TEMPLATE_HASH.fullmatch(name.rsplit("-", 1)[-1]) and "-" in name:
        return "Deployment", name.rsplit("-", 1)[0]
    return kind, name


_Reports = dict[tuple[str, str], list[Mapping[str, Any]]]  # (kind, name) of the workload -> its reports


def _by_workload(reports: Sequence[Mapping[str, Any]]) -> _Reports:
    out: _Reports = {}
    for report in reports:
        out.setdefault(scanned_object(report), []).append(report)
    return out


def _labels(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _namespace(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or _labels(obj).get(NAMESPACE_LABEL) or "")


def _report(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("report") or {}


def scanned_at(report: Mapping[str, Any]) -> datetime | None:
    return when(_report(report).get("updateTimestamp")) or when((report.get("metadata") or {}).get("creationTimestamp"))


def image_of(report: Mapping[str, Any]) -> str:
    body = _report(report)
    artifact = body.get("artifact") or {}
    server = (body.get("registry") or {}).get("server")
    image = f"{server}/{artifact.get('repository', '?')}" if server else str(artifact.get("repository", "?"))
    if artifact.get("tag"):
        image += f":{artifact['tag']}"
    if artifact.get("digest"):
        image += f"@{artifact['digest']}"
    return image


def _counts(report: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """Critical, high, medium and low counts of the report's summary."""
    summary = _report(report).get("summary") or {}

    def count(severity: str) -> int:
        return int(summary.get(f"{severity}Count") or 0)

    return count("critical"), count("high"), count("medium"), count("low")


def _workloads(index: Index, namespace: str) -> list[_Workload]:
    """The namespace's workloads that Trivy scans: controllers, and Jobs and Pods that no controller owns."""
    found = []
    for kind in WORKLOAD_KINDS:
        for obj in index.in_namespace(kind, namespace):
            meta = obj.get("metadata") or {}
            if kind in ("Job", "Pod") and meta.get("ownerReferences"):
                continue
            found.append(_Workload(obj, kind, str(meta.get("name", ""))))
    return found


def image_key(image: str) -> tuple[str, str, str]:
    """(registry/repository, tag, digest) of an image reference, Docker Hub's spellings made one."""
    name, _, digest = image.partition("@")
    tag = ""
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    first, _, rest = name.partition("/")
    if not rest or not ("." in first or ":" in first or first == "localhost"):
        first, rest = "docker.io", name
    if first in DOCKER_HUB:
        first = "docker.io"
        rest = rest if "/" in rest else f"library/{rest}"
    return f"{first}/{rest}", tag or ("" if digest else "latest"), digest


def same_image(a: str, b: str) -> bool:
    """Whether two references name the same image: by digest when both carry one, else by repository and tag."""
    (repository_a, tag_a, digest_a), (repository_b, tag_b, digest_b) = image_key(a), image_key(b)
    if repository_a != repository_b:
        return False
    return digest_a == digest_b if digest_a and digest_b else tag_a == tag_b


def current_images(workload: Mapping[str, Any]) -> dict[str, str]:
    """Container name -> image of the pod template the workload runs now ({} for a shape without one)."""
    found: dict[str, str] = {}
    for pod in pod_specs(dict(workload)):
        for _, container in containers(pod):
            if isinstance(container.get("name"), str) and isinstance(container.get("image"), str):
                found.setdefault(container["name"], container["image"])
    return found


def _current_per_container(
    reports: Sequence[Mapping[str, Any]], images: Mapping[str, str]
) -> tuple[list[Mapping[str, Any]], list[str]]:
    """For each container the report of its current image that says the worst (red team F2: anyone who may write
    a VulnerabilityReport in the namespace could add a newer, clean one, or one for another image; now a report
    can only make the verdict worse), and the containers no report of the current image covers. A previous
    ReplicaSet's reports, for an older image, no longer count. Without a known pod template, every report counts."""
    chosen: dict[str, Mapping[str, Any]] = {}
    for report in reports:
        container = str(_labels(report).get(CONTAINER_LABEL, ""))
        if images and (container not in images or not same_image(image_of(report), images[container])):
            continue
        before = chosen.get(container)
        if before is None or _severity(report) > _severity(before):
            chosen[container] = report
    unscanned = sorted(name for name in images if name not in chosen)
    return list(chosen.values()), unscanned


def _severity(report: Mapping[str, Any]) -> tuple[tuple[int, int, int, int], datetime]:
    return _counts(report), scanned_at(report) or _NEVER


def vulnerabilities(inventory: Inventory) -> Iterator[Assessment]:
    """9.3.2-1, 9.3.3-1 and 9.1.4-3 per member namespace from VulnerabilityReports (and ConfigAuditReports for
    9.1.4-3)."""
    why = inventory.unavailable.get(f"{GROUP}/{VULNERABILITY_REPORT}")
    reports = inventory.of_kind(VULNERABILITY_REPORT, GROUP)
    if why is not None or (inventory.mode == "files" and not reports):
        text = f"{NO_SCANNER}: {why}" if why else f"{NO_SCANNER}; offline, none given"
        for control in (C_PATCHED, C_MIDDLEWARE, C_SCANNING):
            yield Assessment(control, CLUSTER, Verdict.PARTIAL, text, (Evidence(text),), INSTALL, MECHANISM)
        return
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for report in [*reports, *inventory.of_kind(CONFIG_AUDIT_REPORT, GROUP)]:
        by_namespace.setdefault(_namespace(report), []).append(report)
    group, index = members(inventory), Index.of(inventory, WORKLOAD_KINDS, None)
    for namespace in sorted(group.of):
        scope = group.scope(namespace)
        workloads = _workloads(index, namespace)
        if not workloads:
            for control in (C_PATCHED, C_MIDDLEWARE, C_SCANNING):
                yield not_applicable(control, scope, "no workloads in the namespace: nothing to scan", (), MECHANISM)
            continue
        own = _by_workload([r for r in by_namespace.get(namespace, []) if r.get("kind") == VULNERABILITY_REPORT])
        audits = _by_workload([r for r in by_namespace.get(namespace, []) if r.get("kind") == CONFIG_AUDIT_REPORT])
        findings = [_vulnerability_finding(inventory.now, w, own) for w in workloads]
        yield assess(C_PATCHED, scope, findings, MECHANISM)
        yield assess(C_MIDDLEWARE, scope, findings, MECHANISM)
        yield _scanning(inventory, scope, workloads, findings, audits)


def _vulnerability_finding(now: datetime, workload: _Workload, reports: _Reports) -> Finding:
    images = current_images(workload.obj)
    mine, unscanned = _current_per_container(reports.get((workload.kind, workload.name), []), images)
    ref = ObjectRef.of(workload.obj)
    if not mine:
        text = f"{workload.title}: no VulnerabilityReport of its current images (not scanned yet, or excluded)"
        return Finding(Verdict.PARTIAL, text, (ref,), missing="let Trivy Operator scan every workload")
    refs = (ref, *(ObjectRef.of(r) for r in mine))
    times = [t for t in (scanned_at(r) for r in mine) if t is not None]
    oldest = min(times, default=None)
    parts = []
    for report in mine:
        critical, high, medium, low = _counts(report)
        parts.append(f"{image_of(report)}: {critical} critical, {high} high, {medium} medium, {low} low")
    scanned = f"scanned {ago(now, oldest)}" if oldest else "scan time unknown"
    text = f"{workload.title}: {'; '.join(parts)} ({scanned})"
    critical = sum(_counts(r)[0] for r in mine)
    high = sum(_counts(r)[1] for r in mine)
    if critical:
        return Finding(Verdict.NOT_MET, text, refs, oldest, "update the images: critical vulnerabilities are known")
    if unscanned:
        missing = ", ".join(f"{name} ({images[name]})" for name in unscanned)
        text = f"{text}; not scanned for its current image: {missing}"
        return Finding(Verdict.PARTIAL, text, refs, oldest, "let Trivy Operator scan every container's current image")
    if oldest is None or now - oldest > STALE_AFTER:
        stale = f"{text}: stale (older than {STALE_AFTER.days} d)"
        return Finding(Verdict.PARTIAL, stale, refs, oldest, "reports are stale: check that Trivy Operator rescans")
    if high:
        return Finding(
            Verdict.PARTIAL, text, refs, oldest, "update the images: high-severity vulnerabilities are known"
        )
    return Finding(Verdict.MET, text, refs, oldest)


def _scanning(
    inventory: Inventory,
    scope: Scope,
    workloads: Sequence[_Workload],
    vulnerability: Sequence[Finding],
    audits: _Reports,
) -> Assessment:
    """9.1.4-3: vulnerability and configuration scanning; the configuration half from ConfigAuditReports."""
    findings = list(vulnerability)
    if f"{GROUP}/{CONFIG_AUDIT_REPORT}" in inventory.unavailable:
        why = inventory.unavailable[f"{GROUP}/{CONFIG_AUDIT_REPORT}"]
        findings.append(Finding(Verdict.PARTIAL, f"no configuration audit reports: {why}", missing=INSTALL))
    else:
        findings += [_config_finding(inventory.now, w, audits) for w in workloads]
    return assess(C_SCANNING, scope, findings, MECHANISM)


def _config_finding(now: datetime, workload: _Workload, audits: _Reports) -> Finding:
    mine, _ = _current_per_container(audits.get((workload.kind, workload.name), []), {})
    ref = ObjectRef.of(workload.obj)
    if not mine:
        text = f"{workload.title}: no ConfigAuditReport"
        return Finding(Verdict.PARTIAL, text, (ref,), missing="enable Trivy Operator's configuration auditing")
    report = mine[0]
    critical, high, medium, low = _counts(report)
    failed = [c.get("checkID") for c in _report(report).get("checks") or () if c.get("success") is False]
    at = scanned_at(report)
    text = (
        f"{workload.title} configuration audit: {critical} critical, {high} high, {medium} medium, {low} low failed "
        f"checks{' (' + ', '.join(str(f) for f in failed[:5]) + ')' if failed else ''}"
        f"{', audited ' + ago(now, at) if at else ''}"
    )
    refs = (ref, ObjectRef.of(report))
    if critical:
        return Finding(Verdict.NOT_MET, text, refs, at, "fix the failed critical configuration checks")
    if at is None or now - at > STALE_AFTER or high:
        return Finding(Verdict.PARTIAL, text, refs, at, "fix the failed high checks, or let Trivy re-audit")
    return Finding(Verdict.MET, text, refs, at)


ANSWERS: dict[Probe, tuple[str, ...]] = {vulnerabilities: (C_PATCHED, C_MIDDLEWARE, C_SCANNING)}
PROBES: tuple[Probe, ...] = tuple(ANSWERS)
