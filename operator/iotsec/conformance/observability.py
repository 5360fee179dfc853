"""Observability evidence: iotsec's alerts loaded into Prometheus (PrometheusRule), its metrics scraped
(ServiceMonitor selecting a Service that serves them), its dashboard shipped (the chart's ConfigMap for Grafana's
sidecar) and the background scan assessing what runs (fresh PolicyReports).

Both controls are `evidenced` in the catalog: iotsec only reports. 9.6.1-1 (incident response) is never `met`
here: alerts are what iotsec brings, the response process (runbooks, on-call, escalation) is not observable in a
cluster. 9.6.2-1 (situation awareness) is `met` only with every facet observed live, the scan's results among them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from iotsec.conformance.inventory import published_reports, view
from iotsec.conformance.model import CLUSTER, Assessment, Evidence, Inventory, ObjectRef, Probe, Verdict
from iotsec.model.controls import CONTROLS
from iotsec.model.time import rfc3339

C_INCIDENT = "X1369-9.6.1-1"
C_AWARENESS = "X1369-9.6.2-1"
MONITORING = "monitoring.coreos.com"
METRIC_PREFIX = "iotsec_"  # every metric iotsec exports; an alert on one is iotsec's alert
PART_OF = ("app.kubernetes.io/part-of", "app.kubernetes.io/name")  # the chart's labels: iotsec
DASHBOARD_LABEL = "grafana_dashboard"  # what Grafana's sidecar watches (the chart's dashboard ConfigMap)
SCAN_FRESH = timedelta(days=1)  # the scan runs every few minutes (default 300 s); a day old means it stopped
SHOWN = 10
OFFLINE = "needs a live cluster"
OFFLINE_MISSING = "run `iotsec report` against the cluster (kubeconfig) to see what is loaded and scraped"


@dataclass(frozen=True)
class Facet:
    """One part of situation awareness: whether it is in place, the sentence saying so, where it was read."""

    name: str  # monitor | assess | visualise | alert
    present: bool
    text: str
    objects: tuple[ObjectRef, ...] = ()
    missing: str = ""
    observed_at: str | None = None

    @property
    def evidence(self) -> Evidence:
        return Evidence(f"{self.name}: {self.text}", self.objects, self.observed_at)


def incident_response(inventory: Inventory) -> Iterator[Assessment]:
    """9.6.1-1: iotsec's alert rules loaded (a PrometheusRule whose alerts watch iotsec_ metrics); partial at best,
    the response process behind the alerts is not observable; not met when the CRD is served but no rule is."""
    alert = _alerts(inventory)
    mechanism = "PrometheusRule (prometheus-operator) with iotsec's alert rules"
    gap = _gap(C_INCIDENT)
    if inventory.mode == "files":
        text = f"{alert.text}; {OFFLINE}"
        yield Assessment(C_INCIDENT, CLUSTER, Verdict.PARTIAL, text, (alert.evidence,), OFFLINE_MISSING, mechanism)
    elif alert.present:
        summary = f"{alert.text}; the response process behind them is not observable"
        yield Assessment(C_INCIDENT, CLUSTER, Verdict.PARTIAL, summary, (alert.evidence,), gap, mechanism)
    elif _unavailable(inventory, "PrometheusRule"):
        yield Assessment(C_INCIDENT, CLUSTER, Verdict.PARTIAL, alert.text, (alert.evidence,), alert.missing, mechanism)
    else:
        yield Assessment(C_INCIDENT, CLUSTER, Verdict.NOT_MET, alert.text, (alert.evidence,), alert.missing, mechanism)


def situation_awareness(inventory: Inventory) -> Iterator[Assessment]:
    """9.6.2-1: monitor (a ServiceMonitor scraping iotsec's metrics Service), assess (the background scan's fresh
    PolicyReports, and this report), visualise (the dashboard ConfigMap), alert (the PrometheusRule). Met with all
    four observed live; partial with some; not met when nothing but this report is there."""
    facets = (_monitor(inventory), _assess(inventory), _dashboard(inventory), _alerts(inventory))
    mechanism = "ServiceMonitor, PolicyReports, dashboard ConfigMap, PrometheusRule"
    evidence = tuple(f.evidence for f in facets)
    lacking = [f for f in facets if not f.present]
    if inventory.mode == "files":
        have = ", ".join(f.name for f in facets if f.present) or "nothing"
        text = f"in the documents: {have}; {OFFLINE}"
        yield Assessment(C_AWARENESS, CLUSTER, Verdict.PARTIAL, text, evidence, OFFLINE_MISSING, mechanism)
        return
    missing = "; ".join(f.missing for f in lacking if f.missing)
    if not lacking:
        text = "iotsec's metrics scraped, the background scan fresh, its dashboard and alerts loaded"
        yield Assessment(C_AWARENESS, CLUSTER, Verdict.MET, text, evidence, "", mechanism)
    elif len(lacking) == len(facets) or {f.name for f in lacking} >= {"monitor", "visualise", "alert"}:
        text = "nothing monitors, shows or alerts on iotsec's findings: " + "; ".join(f.text for f in lacking)
        yield Assessment(C_AWARENESS, CLUSTER, Verdict.NOT_MET, text, evidence, missing, mechanism)
    else:
        text = "; ".join(f.text for f in lacking)
        yield Assessment(C_AWARENESS, CLUSTER, Verdict.PARTIAL, text, evidence, missing, mechanism)


# ---------------------------------------------------------------- the facets


def _alerts(inventory: Inventory) -> Facet:
    rules = _observed(inventory, "PrometheusRule", MONITORING)
    ours = [(r, _iotsec_alerts(r)) for r in rules]
    ours = [(r, names) for r, names in ours if names]
    if ours:
        names = sorted({n for _, found in ours for n in found})
        shown = ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
        where = ", ".join(_where(r) for r, _ in ours)
        text = f"{len(names)} iotsec alert rules loaded from PrometheusRule {where}: {shown}"
        return Facet("alert", True, text, tuple(ObjectRef.of(r) for r, _ in ours[:SHOWN]))
    why = _unavailable(inventory, "PrometheusRule")
    if why:
        text = f"iotsec's alert rules not observable: PrometheusRule {why}"
        missing = "install prometheus-operator and set metrics.prometheusRule.enabled, or load the chart's rules"
        return Facet("alert", False, text, missing=missing)
    text = f"no PrometheusRule with an alert on {METRIC_PREFIX}* metrics ({len(rules)} PrometheusRules found)"
    return Facet("alert", False, text, missing="set the chart's metrics.prometheusRule.enabled=true")


def _iotsec_alerts(rule: Mapping[str, Any]) -> list[str]:
    groups = (rule.get("spec") or {}).get("groups") or ()
    return [
        str(r["alert"])
        for g in groups
        if isinstance(g, Mapping)
        for r in g.get("rules") or ()
        if isinstance(r, Mapping) and r.get("alert") and METRIC_PREFIX in str(r.get("expr", ""))
    ]


def _monitor(inventory: Inventory) -> Facet:
    monitors = [m for m in _observed(inventory, "ServiceMonitor", MONITORING) if _ours(m)]
    services = _observed(inventory, "Service", "")
    scraped = [(m, s) for m in monitors for s in services if _selects(m, s)]
    if scraped:
        pairs = ", ".join(f"{_where(m)} -> Service {_where(s)}" for m, s in scraped[:SHOWN])
        refs = tuple(r for m, s in scraped[:SHOWN] for r in (ObjectRef.of(m), ObjectRef.of(s)))
        return Facet("monitor", True, f"iotsec's metrics scraped: ServiceMonitor {pairs}", refs)
    if monitors:
        text = f"ServiceMonitor {', '.join(_where(m) for m in monitors)} selects no Service serving its port"
        refs = tuple(ObjectRef.of(m) for m in monitors[:SHOWN])
        return Facet("monitor", False, text, refs, "check the ServiceMonitor's selector and port against the Service")
    why = _unavailable(inventory, "ServiceMonitor")
    text = f"iotsec's metrics scraping not observable: ServiceMonitor {why}" if why else "no ServiceMonitor for iotsec"
    return Facet("monitor", False, text, missing="set the chart's metrics.serviceMonitor.enabled=true")


def _ours(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return any(labels.get(key) == "iotsec" for key in PART_OF)


def _selects(monitor: Mapping[str, Any], service: Mapping[str, Any]) -> bool:
    """The ServiceMonitor's matchLabels select the Service, in its namespace (or those it names), on a port it has."""
    spec = monitor.get("spec") or {}
    meta, service_meta = monitor.get("metadata") or {}, service.get("metadata") or {}
    names = (spec.get("namespaceSelector") or {}).get("matchNames") or [meta.get("namespace")]
    if not (spec.get("namespaceSelector") or {}).get("any") and service_meta.get("namespace") not in names:
        return False
    wanted = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = service_meta.get("labels") or {}
    if not wanted or any(labels.get(k) != v for k, v in wanted.items()):
        return False
    ports = {p.get("name") for p in (service.get("spec") or {}).get("ports") or () if isinstance(p, Mapping)}
    endpoints = [e.get("port") for e in spec.get("endpoints") or () if isinstance(e, Mapping)]
    return any(port in ports for port in endpoints)


def _dashboard(inventory: Inventory) -> Facet:
    found = [
        c
        for c in _observed(inventory, "ConfigMap", "")
        if DASHBOARD_LABEL in ((c.get("metadata") or {}).get("labels") or {}) and _ours(c)
    ]
    if found:
        keys = sorted({k for c in found for k in [*(c.get("dataKeys") or ()), *(c.get("data") or {})]})
        text = f"dashboard ConfigMap {', '.join(_where(c) for c in found)} for Grafana ({', '.join(keys) or 'no keys'})"
        return Facet("visualise", True, text, tuple(ObjectRef.of(c) for c in found[:SHOWN]))
    why = _unavailable(inventory, "ConfigMap")
    text = f"dashboard not observable: ConfigMap {why}" if why else "no iotsec dashboard ConfigMap"
    return Facet("visualise", False, text, missing="set the chart's metrics.dashboard.enabled=true (the default)")


def _assess(inventory: Inventory) -> Facet:
    reports = published_reports(view(inventory))
    if not reports:
        why = inventory.unavailable.get("wgpolicyk8s.io/PolicyReport", "no iotsec PolicyReport found")
        text = f"this report only; no background-scan results ({why})"
        return Facet("assess", False, text, missing="enable the background scan (the chart's scan.enabled)")
    stamps = [s for r in reports for s in _stamps(r)]
    refs = tuple(ObjectRef.of(r) for r in reports[:SHOWN])
    if not stamps:
        return Facet("assess", False, f"{len(reports)} scan reports carry no timestamp", refs, "check the scan runs")
    last = max(stamps)
    age = inventory.now - last
    when = rfc3339(last)
    text = f"this report and the background scan: {len(reports)} PolicyReports, last scanned {when}"
    if inventory.mode == "cluster" and age > SCAN_FRESH:
        return Facet("assess", False, f"{text} (stale: older than a day)", refs, "the background scan stopped", when)
    return Facet("assess", True, text, refs, observed_at=when)


def _stamps(report: Mapping[str, Any]) -> list[datetime]:
    found = []
    for result in report.get("results") or ():
        stamp = result.get("timestamp") if isinstance(result, Mapping) else None
        if isinstance(stamp, Mapping) and isinstance(stamp.get("seconds"), int):
            found.append(datetime.fromtimestamp(stamp["seconds"], UTC))
    return found


# ---------------------------------------------------------------- small pieces


def _observed(inventory: Inventory, kind: str, group: str) -> list[dict[str, Any]]:
    """Objects of `kind` as found (offline: in the documents, e.g. the chart rendered by helm template)."""
    return view(inventory).objects_of(kind, group)


def _unavailable(inventory: Inventory, kind: str) -> str | None:
    group = MONITORING if kind in ("PrometheusRule", "ServiceMonitor") else ""
    return inventory.unavailable.get(f"{group}/{kind}")


def _where(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}" if meta.get("namespace") else str(meta.get("name"))


def _gap(control_id: str) -> str:
    return next((c.missing for c in CONTROLS if c.id == control_id), "")


ANSWERS: dict[Probe, tuple[str, ...]] = {
    incident_response: (C_INCIDENT,),
    situation_awareness: (C_AWARENESS,),
}
PROBES: tuple[Probe, ...] = tuple(ANSWERS)
