"""`iotsec report`: offline over the examples, formats, filters, --fail-on exit codes, usage errors; the live
inventory's reading rules (values of Secrets and ConfigMaps never kept, unreadable kinds listed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from iotsec.cli.main import main
from iotsec.k8s.kube import ApiError
from iotsec.services import inventory as live_inventory

ROOT = Path(__file__).resolve().parents[2]
PLATFORM, WORKLOADS = str(ROOT / "examples/platform"), str(ROOT / "examples/workloads")
NOW = ["--now", "2026-12-03T00:00:00Z"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def example_json(tmp_path_factory) -> dict:
    target = tmp_path_factory.mktemp("report") / "report.json"
    assert main(["report", PLATFORM, WORKLOADS, *NOW, "-o", "json", "--output-file", str(target)]) == 0
    return json.loads(target.read_text())


def verdicts(document: dict) -> dict[str, str]:
    return {c["id"]: c["verdict"] for c in document["controls"]}


def test_offline_report_over_the_examples_finds_the_nonconforming_workloads(example_json):
    found = verdicts(example_json)
    assert found["X1369-9.4.3-1"] == "not-met"  # privileged, root, capabilities in examples/workloads
    assert found["X1369-9.4.1-4"] == "not-met"  # the NodePort in the core zone, the admin console's Ingress
    assert found["X1369-9.4.1-1"] == "not-met"  # the scratch namespace is in no domain
    assert found["X1369-9.4.1-2"] == "met"  # default deny planned for every member
    assert found["X1369-9.4.2-1"] == "out-of-scope"
    control = next(c for c in example_json["controls"] if c["id"] == "X1369-9.4.3-1")
    failing = [a for a in control["assessments"] if a["verdict"] == "not-met"]
    objects = {(o["kind"], o.get("namespace"), o["name"]) for a in failing for e in a["evidence"] for o in e["objects"]}
    assert ("Deployment", "iot-gateway", "modbus-bridge") in objects  # privileged-container.yaml
    assert ("PolicyReport", "iot-gateway", "iotsec-scan") in objects  # the finding's own report, planned


def test_the_platform_alone_has_no_violation(capsys):
    code, out, _ = run(capsys, PLATFORM, *NOW, "-o", "json")  # no --fail-on: exit 0 whatever the verdicts
    assert code == 0
    assert "not-met" not in {verdicts(json.loads(out))[c] for c in ("X1369-9.4.3-1", "X1369-9.4.1-2")}


@pytest.mark.parametrize(("level", "code"), [("not-met", 1), ("partial", 1)])
def test_fail_on_with_violations(capsys, level, code):
    assert run(capsys, PLATFORM, WORKLOADS, *NOW, "-o", "json", "--fail-on", level)[0] == code


def test_fail_on_distinguishes_partial_from_not_met(capsys, monkeypatch):
    # the configuration probes alone over the platform: partial controls (no probe yet), none not met
    from iotsec.conformance import assess, policy

    monkeypatch.setattr(assess, "default_probes", lambda: policy.PROBES)
    code, out, _ = run(capsys, PLATFORM, *NOW, "-o", "json", "--fail-on", "not-met")
    found = set(verdicts(json.loads(out)).values())
    assert "not-met" not in found
    assert "partial" in found
    assert code == 0
    assert run(capsys, PLATFORM, *NOW, "-o", "json", "--fail-on", "partial")[0] == 1
    assert run(capsys, PLATFORM, *NOW, "-o", "json")[0] == 0


def test_filters_limit_the_view(capsys, example_json):
    code, out, _ = run(capsys, PLATFORM, WORKLOADS, *NOW, "-o", "json", "--namespace", "iot-gateway")
    assert code == 0
    document = json.loads(out)
    assert document["filters"] == {"namespace": "iot-gateway"}
    for control in document["controls"]:
        for a in control["assessments"]:
            assert a["scope"]["kind"] == "cluster" or a["scope"]["name"] == "iot-gateway"
    # the scratch namespace's missing domain is not iot-gateway's problem
    assert verdicts(document)["X1369-9.4.1-1"] != "not-met"
    tenant = json.loads(run(capsys, PLATFORM, *NOW, "-o", "json", "--tenant", "acme-utilities")[1])
    assert {a["scope"]["tenant"] for c in tenant["controls"] for a in c["assessments"]} <= {None, "acme-utilities"}


@pytest.mark.parametrize("output", ["text", "markdown", "html"])
def test_every_format_writes_something(capsys, output, tmp_path):
    target = tmp_path / f"report.{output}"
    code, _, _ = run(capsys, PLATFORM, *NOW, "-o", output, "--output-file", str(target))
    assert code == 0
    assert "X1369-9.4.1-2" in target.read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "give manifest paths, or --cluster"),
        ((PLATFORM, "--cluster"), "not both"),
        ((PLATFORM, "--context", "x"), "--context needs --cluster"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err


def test_documents_that_are_no_objects_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    code, out, err = run(capsys, str(bad))
    assert code == 2
    assert out == ""
    assert "no Kubernetes objects" in err


def test_an_unreachable_cluster_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch):
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: t}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, out, err = run(capsys, "--cluster")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("iotsec report: cannot read the cluster")


class FakeKube:
    def __init__(self, objects, errors):
        self.objects, self.errors = objects, errors

    def list(self, api_version, kind, namespace=None, label_selector=None):
        if kind in self.errors:
            raise ApiError(f"list {kind}: nope", self.errors[kind])
        return [o for o in self.objects if o["kind"] == kind]


def test_the_live_inventory_never_keeps_values_and_lists_what_it_cannot_read():
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "k", "namespace": "a", "managedFields": [{}]},
        "data": {"tls.key": "c2VjcmV0"},
        "stringData": {"token": "s3cr3t"},
    }
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"crl.pem": "x"}}
    kube = FakeKube([secret, config_map], {"VulnerabilityReport": 404, "ClusterRole": 403})
    found = live_inventory.gather(kube, datetime(2026, 12, 3, tzinfo=UTC), "https://x")  # type: ignore[arg-type]
    kept = next(o for o in found.objects if o["kind"] == "Secret")
    assert "c2VjcmV0" not in json.dumps(found.objects)
    assert "s3cr3t" not in json.dumps(found.objects)
    assert kept["dataKeys"] == ["tls.key", "token"]
    assert "managedFields" not in kept["metadata"]
    assert next(o for o in found.objects if o["kind"] == "ConfigMap")["dataKeys"] == ["crl.pem"]
    assert found.unavailable["aquasecurity.github.io/VulnerabilityReport"] == "CRD not installed"
    assert found.unavailable["rbac.authorization.k8s.io/ClusterRole"].startswith("forbidden")


def test_other_api_errors_propagate():
    with pytest.raises(ApiError):
        live_inventory.gather(FakeKube([], {"Namespace": 500}), datetime(2026, 12, 3, tzinfo=UTC))  # type: ignore[arg-type]


def test_cronjobs_of_an_older_server_are_read_and_built_in_kinds_are_not_called_crds():
    class OldServer(FakeKube):
        def list(self, api_version, kind, namespace=None, label_selector=None):
            if (api_version, kind) in (("batch/v1", "CronJob"), ("v1", "Pod")):
                raise ApiError(f"{kind} not served", 404)
            return super().list(api_version, kind)

    cronjob = {"apiVersion": "batch/v1beta1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "a"}}
    found = live_inventory.gather(OldServer([cronjob], {}), datetime(2026, 12, 3, tzinfo=UTC))  # type: ignore[arg-type]
    assert [o["metadata"]["name"] for o in found.objects if o["kind"] == "CronJob"] == ["c"]
    assert "batch/CronJob" not in found.unavailable
    assert found.unavailable["/Pod"] == "not served by this API server (v1)"


def test_only_iotsecs_public_device_trust_bundle_keeps_values():
    def trust(labels, data):
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "iotsec-device-trust", "labels": labels},
            "data": data,
        }

    ours = trust({"app.kubernetes.io/managed-by": "iotsec"}, {"ca-bundle.crt": "CERT", "crl.pem": "CRL", "x": "y"})
    assert live_inventory.without_values(ours)["data"] == {"ca-bundle.crt": "CERT", "crl.pem": "CRL"}
    assert "data" not in live_inventory.without_values(trust({}, {"ca-bundle.crt": "CERT"}))
    secret = {**ours, "kind": "Secret"}
    assert "data" not in live_inventory.without_values(secret)


def test_the_device_registry_keeps_its_serials_and_monitoring_kinds_are_listed_or_unavailable():
    registry = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "iotsec-device-registry-acme", "labels": {"app.kubernetes.io/managed-by": "iotsec"}},
        "data": {"issued": '{"11": "dev-1"}', "revoked": "{}", "other": "x"},
    }
    assert live_inventory.without_values(registry)["data"] == {"issued": '{"11": "dev-1"}', "revoked": "{}"}
    assert "data" not in live_inventory.without_values({**registry, "metadata": {"name": registry["metadata"]["name"]}})
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": "r"}}
    found = live_inventory.gather(FakeKube([rule], {"ServiceMonitor": 404}), datetime(2026, 12, 3, tzinfo=UTC))  # type: ignore[arg-type]
    assert [o["metadata"]["name"] for o in found.objects if o["kind"] == "PrometheusRule"] == ["r"]
    assert found.unavailable["monitoring.coreos.com/ServiceMonitor"] == "CRD not installed"
