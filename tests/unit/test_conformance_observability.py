"""Observability probes: 9.6.1-1 (iotsec's alerts loaded; the response process is not observable, so partial at
best) and 9.6.2-1 (metrics scraped, scan fresh, dashboard and alerts: met only with all of them live), judged on
the objects the real chart renders (helm template) with its ServiceMonitor and PrometheusRule enabled."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from iotsec.conformance import observability
from iotsec.conformance.model import CLUSTER, Assessment, Inventory, Verdict

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
CHART = Path(__file__).resolve().parents[2] / "charts" / "iotsec-operator"
MONITORING = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    helm = shutil.which("helm") or str(Path(sys.executable).parent / "helm")
    if not Path(helm).is_file():
        pytest.fail("no helm binary: `make test` installs it (tools/install_helm.py)", pytrace=False)
    values = tmp_path_factory.mktemp("values") / "values.yaml"
    values.write_text(yaml.safe_dump(MONITORING))
    command = [helm, "template", "iotsec", str(CHART), "--namespace", "iotsec-system", "-f", str(values)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def scan_report(age: timedelta) -> dict[str, Any]:
    return {
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {"name": "iotsec-scan", "namespace": "app", "labels": {"app.kubernetes.io/managed-by": "iotsec"}},
        "results": [{"policy": "iotsec", "rule": "all", "result": "pass", "timestamp": _stamp(NOW - age)}],
    }


def _stamp(when: datetime) -> dict[str, int]:
    return {"seconds": int(when.timestamp()), "nanos": 0}


def judged(objects: list[dict[str, Any]], mode: str = "cluster", **unavailable: str) -> dict[str, Assessment]:
    inventory = Inventory(mode, NOW, list(objects), unavailable=dict(unavailable))  # type: ignore[arg-type]
    found = [a for probe in observability.PROBES for a in probe(inventory)]
    assert all(a.scope == CLUSTER for a in found)
    return {a.control: a for a in found}


def without(objects: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] not in kinds]


def test_the_charts_monitoring_with_a_fresh_scan_is_situation_awareness(chart: list[dict[str, Any]]) -> None:
    found = judged([*chart, scan_report(timedelta(minutes=4))])
    aware = found[observability.C_AWARENESS]
    assert aware.verdict is Verdict.MET
    texts = " | ".join(e.text for e in aware.evidence)
    assert "ServiceMonitor iotsec-system/iotsec -> Service iotsec-system/" in texts
    assert "dashboard ConfigMap iotsec-system/iotsec-dashboard" in texts
    assert "last scanned" in texts
    incident = found[observability.C_INCIDENT]
    assert incident.verdict is Verdict.PARTIAL  # evidenced: alerts, but no observable response process
    assert "IotsecWebhookErrors" in incident.summary
    assert "runbooks" in incident.missing


def test_nothing_monitoring_is_not_met_and_a_stale_scan_partial(chart: list[dict[str, Any]]) -> None:
    bare = without(chart, "ServiceMonitor", "PrometheusRule", "ConfigMap")
    found = judged([*bare, scan_report(timedelta(minutes=4))])
    assert found[observability.C_AWARENESS].verdict is Verdict.NOT_MET
    assert found[observability.C_INCIDENT].verdict is Verdict.NOT_MET
    assert "metrics.prometheusRule.enabled" in found[observability.C_INCIDENT].missing
    stale = judged([*chart, scan_report(timedelta(days=3))])[observability.C_AWARENESS]
    assert stale.verdict is Verdict.PARTIAL
    assert "stale" in stale.summary
    no_scan = judged(chart)[observability.C_AWARENESS]
    assert no_scan.verdict is Verdict.PARTIAL


def test_a_monitor_that_selects_no_service_and_absent_crds(chart: list[dict[str, Any]]) -> None:
    unscraped = judged([*without(chart, "Service"), scan_report(timedelta(minutes=1))])
    assert unscraped[observability.C_AWARENESS].verdict is Verdict.PARTIAL
    assert "selects no Service" in unscraped[observability.C_AWARENESS].summary
    crdless = without(chart, "ServiceMonitor", "PrometheusRule")
    gone = {
        "monitoring.coreos.com/PrometheusRule": "CRD not installed",
        "monitoring.coreos.com/ServiceMonitor": "CRD not installed",
    }
    found = judged([*crdless, scan_report(timedelta(minutes=1))], **gone)
    assert found[observability.C_INCIDENT].verdict is Verdict.PARTIAL
    assert "not observable: PrometheusRule CRD not installed" in found[observability.C_INCIDENT].summary
    assert found[observability.C_AWARENESS].verdict is Verdict.PARTIAL


def test_offline_both_need_a_live_cluster(chart: list[dict[str, Any]]) -> None:
    found = judged([*chart, scan_report(timedelta(minutes=1))], mode="files")
    assert {a.verdict for a in found.values()} == {Verdict.PARTIAL}
    assert all(observability.OFFLINE in a.summary for a in found.values())
