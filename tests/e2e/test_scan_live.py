"""The background scan against the real API server (issue 17): objects that bypassed admission (no webhook runs here:
they are created with the administrator's client) are found and published as PolicyReports; fixing one clears it;
what iotsec did not create is never overwritten or deleted; the release namespace is left out; large ConfigMaps do
not break a scan; `iotsec check --cluster` says the same on demand."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from iotsec.k8s.kube import Kube
from iotsec.model.platform import Platform
from iotsec.services.scan import Outcome, scan_and_publish
from tests.e2e.conftest import eventually

ROOT = Path(__file__).parents[2]
CRDS = ROOT / "charts/iotsec-operator/files/policyreport-crds.yaml"
SUFFIX = uuid.uuid4().hex[:5]
NS = f"scan-line-{SUFFIX}"
PLANTED_NS = f"scan-planted-{SUFFIX}"
RELEASE_NS = f"scan-release-{SUFFIX}"  # stands for iotsec's release namespace: the webhook leaves it out
DOMAIN = f"scan-plant-{SUFFIX}"
GROUP, VERSION = "wgpolicyk8s.io", "v1alpha2"


def _install_policy_report_crds(api_client: client.ApiClient) -> None:
    """The chart's copy, created only where absent (as the chart's lookup does)."""
    api = client.ApiextensionsV1Api(api_client)
    for crd in (d for d in yaml.safe_load_all(CRDS.read_text()) if d):
        try:
            api.read_custom_resource_definition(crd["metadata"]["name"])
        except ApiException as exc:
            if exc.status != 404:
                raise
            api.create_custom_resource_definition(crd)

    def established() -> bool:
        for name in ("policyreports.wgpolicyk8s.io", "clusterpolicyreports.wgpolicyk8s.io"):
            conditions = api.read_custom_resource_definition(name).status.conditions or []
            if not any(c.type == "Established" and c.status == "True" for c in conditions):
                return False
        return True

    eventually(established, timeout=60, what="PolicyReport CRDs established")


def _deployment(name: str, namespace: str, writable: bool) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "broker",
                            "image": "registry.example.com/iot/mqtt:2.0.18",
                            "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": not writable,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


@pytest.fixture(scope="module")
def world(api_client: client.ApiClient, crds: list[dict[str, Any]]) -> Iterator[Kube]:
    _install_policy_report_crds(api_client)
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    for name in (NS, PLANTED_NS, RELEASE_NS):
        core.create_namespace({"metadata": {"name": name}})
    domain = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {"name": DOMAIN},
        "spec": {"zone": "core", "enforcement": "enforce", "namespaces": [NS, PLANTED_NS, RELEASE_NS]},
    }
    custom.create_cluster_custom_object("iotsec.io", "v1alpha1", "securitydomains", domain)
    try:
        yield Kube(api_client)
    finally:
        custom.delete_cluster_custom_object("iotsec.io", "v1alpha1", "securitydomains", DOMAIN)
        for name in (NS, PLANTED_NS, RELEASE_NS):
            core.delete_namespace(name)
        try:  # the cluster report this test's scans made (no operator runs here to own it)
            report = custom.get_cluster_custom_object(GROUP, VERSION, "clusterpolicyreports", "iotsec-scan")
            if (report["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "iotsec":
                custom.delete_cluster_custom_object(GROUP, VERSION, "clusterpolicyreports", "iotsec-scan")
        except ApiException:
            pass


def _scan(api: Kube) -> Outcome:
    return scan_and_publish(api, Platform(namespace=RELEASE_NS))


def _report(api_client: client.ApiClient, namespace: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "policyreports", "iotsec-scan"
        )
        return found
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _fails(report: dict[str, Any] | None) -> set[tuple[str, str, str, str]]:
    return {
        (r["resources"][0]["kind"], r["resources"][0]["name"], r["rule"], r.get("category", ""))
        for r in (report or {}).get("results") or []
        if r["result"] == "fail"
    }


def test_a_deployment_that_bypassed_admission_is_reported_and_clears_when_fixed(world: Kube, api_client):
    apps = client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(NS, _deployment("mqtt", NS, writable=True))
    # the controller manager makes its ReplicaSet (and Pod): the Deployment answers for them
    eventually(lambda: apps.list_namespaced_replica_set(NS).items, what="the Deployment's ReplicaSet")

    outcome = _scan(world)
    assert outcome.published is not None
    assert f"PolicyReport {NS}/iotsec-scan" in outcome.published.applied
    report = _report(api_client, NS)
    assert report is not None
    assert report["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "iotsec"
    assert _fails(report) == {("Deployment", "mqtt", "read-only-root-fs", "X1369-9.3.2-2")}
    assert report["summary"]["fail"] == 1
    kinds = {r["resources"][0]["kind"] for r in report["results"]}
    assert "Deployment" in kinds
    assert not kinds & {"ReplicaSet", "Pod"}  # answered for by the Deployment

    fixed = _deployment("mqtt", NS, writable=False)
    apps.patch_namespaced_deployment("mqtt", NS, fixed)

    def cleared() -> bool:
        _scan(world)
        found = _report(api_client, NS)
        assert _fails(found) == set(), _fails(found)
        passes = {(r["resources"][0]["kind"], r["resources"][0]["name"]) for r in found["results"]}
        return ("Deployment", "mqtt") in passes

    eventually(cleared, timeout=60, interval=1, what="the fixed Deployment passes")


def test_a_planted_report_of_our_name_is_never_overwritten_or_deleted(world: Kube, api_client):
    custom = client.CustomObjectsApi(api_client)
    client.AppsV1Api(api_client).create_namespaced_deployment(
        PLANTED_NS, _deployment("sensor", PLANTED_NS, writable=True)
    )
    planted = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PolicyReport",
        "metadata": {"name": "iotsec-scan", "namespace": PLANTED_NS, "labels": {"owner": "mallory"}},
        "summary": {"pass": 99},
        "results": [{"policy": "iotsec", "rule": "all", "result": "pass", "message": "all good, trust me"}],
    }
    if _report(api_client, PLANTED_NS) is not None:  # an earlier scan's: the attacker replaces it
        custom.delete_namespaced_custom_object(GROUP, VERSION, PLANTED_NS, "policyreports", "iotsec-scan")
    custom.create_namespaced_custom_object(GROUP, VERSION, PLANTED_NS, "policyreports", planted)
    before = _report(api_client, PLANTED_NS)
    assert before is not None

    outcome = _scan(world)
    assert outcome.published is not None
    assert f"PolicyReport {PLANTED_NS}/iotsec-scan" in outcome.published.refused
    after = _report(api_client, PLANTED_NS)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["results"] == planted["results"]
    # the finding itself is not hidden: the scan still has it (metrics, iotsec check --cluster)
    assert any(o.ref.name == "sensor" and o.failing for o in outcome.result.objects)

    client.AppsV1Api(api_client).delete_namespaced_deployment("sensor", PLANTED_NS)
    _scan(world)  # nothing checked there any more: iotsec deletes only its own reports
    assert _report(api_client, PLANTED_NS) is not None


def test_the_release_namespace_is_not_scanned(world: Kube, api_client):
    client.AppsV1Api(api_client).create_namespaced_deployment(
        RELEASE_NS, _deployment("operator", RELEASE_NS, writable=True)
    )
    outcome = _scan(world)
    assert not [o for o in outcome.result.objects if o.namespace == RELEASE_NS]
    assert outcome.result.excluded[RELEASE_NS] >= 1
    assert _report(api_client, RELEASE_NS) is None


def test_ten_megabytes_of_configmaps_do_not_break_the_scan(world: Kube, api_client):
    """A ConfigMap holds at most 1 MiB (etcd's limit): ten near that size, 10 MB in one namespace."""
    core = client.CoreV1Api(api_client)
    for index in range(10):
        body = {"metadata": {"name": f"blob-{index}"}, "data": {"blob.txt": "x" * 1_000_000}}
        core.create_namespaced_config_map(NS, body)
    started = time.monotonic()
    outcome = _scan(world)
    print(f"scan with 10 MB of ConfigMaps: {time.monotonic() - started:.2f}s, {len(outcome.result.objects)} objects")
    names = {o.ref.name for o in outcome.result.objects if o.namespace == NS and o.ref.kind == "ConfigMap"}
    assert {f"blob-{i}" for i in range(10)} <= names
    report = _report(api_client, NS)
    assert report is not None
    assert {f"blob-{i}" for i in range(10)} <= {r["resources"][0]["name"] for r in report["results"]}


def test_iotsec_check_cluster_gives_the_same_findings(world: Kube, api_client):
    client.AppsV1Api(api_client).create_namespaced_deployment(NS, _deployment("gateway", NS, writable=True))
    command = [
        str(Path(sys.executable).parent / "iotsec"),
        "check",
        "--cluster",
        "--release-namespace",
        RELEASE_NS,
    ]
    env = {**os.environ}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode in (1, 2), result.stderr  # 2 only when some kind may not be listed
    assert f"DENIED Deployment {NS}/gateway  (cluster, domain {DOMAIN})" in result.stdout
    assert "[X1369-9.3.2-2 read-only-root-fs]" in result.stdout
    assert f"{RELEASE_NS}/operator" not in result.stdout
    as_json = subprocess.run([*command, "-o", "json"], capture_output=True, text=True, env=env, timeout=120)
    assert f'"object": "Deployment {NS}/gateway"' in as_json.stdout
    bad_context = subprocess.run(
        [*command, "--context", "no-such-context"], capture_output=True, text=True, env=env, timeout=60
    )
    assert bad_context.returncode == 2
    assert "cannot read the cluster" in bad_context.stderr


def test_the_chart_installs_the_policyreport_crds_only_where_absent(world: Kube, tmp_path: Path):
    """Helm's lookup against the real API server, where the CRDs exist and belong to no release (as when Kyverno
    installed them). The chart asks for Kubernetes >= 1.27 and the testenv is 1.20: a copy without that line."""
    import shutil

    chart = tmp_path / "chart"
    shutil.copytree(ROOT / "charts/iotsec-operator", chart)
    meta = chart / "Chart.yaml"
    meta.write_text("".join(line for line in meta.read_text().splitlines(True) if not line.startswith("kubeVersion:")))
    helm = str(Path(sys.executable).parent / "helm")
    base = [helm, "template", "iotsec", str(chart), "--namespace", "iotsec-system", "--dry-run=server"]

    auto = subprocess.run(base, capture_output=True, text=True, timeout=120, check=False)
    assert auto.returncode == 0, auto.stderr
    crds = [d for d in yaml.safe_load_all(auto.stdout) if d and d["kind"] == "CustomResourceDefinition"]
    assert not [c for c in crds if c["spec"]["group"] == GROUP]
    forced = subprocess.run(
        [*base, "--set", "scan.installPolicyReportCRDs=true"], capture_output=True, text=True, timeout=120
    )
    assert forced.returncode != 0  # what auto avoids: Helm refuses to take over another owner's CRD
    assert "policyreports.wgpolicyk8s.io" in forced.stderr
