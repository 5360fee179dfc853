"""The iotsec CLI as a user runs it: exit codes and what it prints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from iotsec.cli.main import main
from tests.conftest import EXAMPLES, ROOT


def test_validate_examples_exits_zero(capsys):
    assert main(["validate", str(EXAMPLES)]) == 0
    out = capsys.readouterr().out
    assert "0 invalid" in out
    assert "ok      SecurityDomain device-gateway" in out


BROKEN = {
    "wrong-enum.yaml": """
apiVersion: iotsec.io/v1alpha1
kind: SecurityDomain
metadata: {name: dmz}
spec: {zone: dmz, namespaces: [web]}
""",
    "bad-cron.yaml": """
apiVersion: iotsec.io/v1alpha1
kind: BackupPolicy
metadata: {name: nightly, namespace: data}
spec:
  schedule: "0 2 * *"
  pvcNames: [db]
  targets: [{name: main, repository: "s3:bucket/x"}]
""",
    "cidr-typo.yaml": """
apiVersion: iotsec.io/v1alpha1
kind: SecurityDomain
metadata: {name: api}
spec:
  zone: interface
  namespaces: [api]
  allow: [{name: partners, from: [{cidr: 203.0.113.0/33}], ports: [{port: 443}]}]
""",
}


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        (
            "wrong-enum.yaml",
            "spec.zone: must be one of: access, core, management, interface, support (got 'dmz')",
        ),
        ("bad-cron.yaml", "spec.schedule: '0 2 * *' is not a cron schedule: 5 fields"),
        ("cidr-typo.yaml", "spec.allow[0].from[0].cidr: '203.0.113.0/33' is not a valid cidr"),
    ],
)
def test_broken_example_exits_non_zero_with_path_and_reason(tmp_path, capsys, filename, expected):
    (tmp_path / filename).write_text(BROKEN[filename])
    assert main(["validate", str(tmp_path / filename)]) == 1
    out = capsys.readouterr().out
    assert expected in out
    assert "1 invalid" in out


def test_validate_json_output_and_skipped_objects(tmp_path, capsys):
    (tmp_path / "mixed.yaml").write_text(BROKEN["wrong-enum.yaml"] + "---\napiVersion: v1\nkind: ConfigMap\n")
    assert main(["validate", "-o", "json", str(tmp_path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert len(report) == 1
    assert report[0]["object"] == "SecurityDomain dmz"
    assert report[0]["problems"][0].startswith("spec.zone: must be one of")


def test_validate_reports_yaml_syntax_errors_with_line(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("apiVersion: iotsec.io/v1alpha1\nkind: [unclosed\n")
    assert main(["validate", str(tmp_path / "bad.yaml")]) == 2
    assert f"{tmp_path / 'bad.yaml'}:3:1: invalid YAML" in capsys.readouterr().err


def test_validate_missing_path(capsys):
    assert main(["validate", "/nonexistent/x.yaml"]) == 2
    assert "/nonexistent/x.yaml: no such file or directory" in capsys.readouterr().err


def test_validate_flattens_lists(tmp_path, capsys):
    doc = yaml.safe_load(BROKEN["wrong-enum.yaml"])
    (tmp_path / "list.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [doc, doc]}))
    assert main(["validate", str(tmp_path)]) == 1
    assert "2 iotsec resources: 0 valid, 2 invalid" in capsys.readouterr().out


def test_crds_prints_four_documents(capsys):
    assert main(["crds"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["spec"]["names"]["kind"] for d in docs] == [
        "SecurityDomain",
        "TenantIsolation",
        "BackupPolicy",
        "AuditPolicy",
    ]


def test_report_without_input_says_what_it_needs(capsys):
    assert main(["report"]) == 2
    err = capsys.readouterr().err
    assert "give manifest paths, or --cluster" in err
    assert "Traceback" not in err


def test_controls_lists_the_catalog(capsys):
    assert main(["controls", "--coverage", "out-of-scope", "-o", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["coverage"] for r in rows} == {"out-of-scope"}
    assert "X1369-9.4.2-1" in {r["id"] for r in rows}


def test_console_script_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "iotsec", "validate", str(EXAMPLES)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_prints_valid_kubernetes_objects_deterministically(capsys):
    assert main(["render", str(EXAMPLES / "platform")]) == 0
    first = capsys.readouterr()
    assert main(["render", str(EXAMPLES / "platform")]) == 0
    assert capsys.readouterr().out == first.out, "byte-identical on every run"
    docs = list(yaml.safe_load_all(first.out))
    kinds = {d["kind"] for d in docs}
    assert kinds == {
        "Namespace",
        "NetworkPolicy",
        "ResourceQuota",
        "LimitRange",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "StorageClass",
        "CronJob",
        "Job",  # each BackupPolicy's repository init Job
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
    }
    import kubernetes_validate

    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    assert "AuditPolicy platform-audit: rendered for the audit namespace iotsec-audit" in first.err
    assert "not rendered yet" not in first.err
    assert "Secrets are rendered with placeholders" in first.err


def test_render_resolves_selectors_from_namespace_objects(capsys):
    assert main(["render", "--summary", str(EXAMPLES / "platform")]) == 0
    out = capsys.readouterr().out
    assert "members: acme-analytics, acme-meters, globex-telematics, iot-ingest, iot-processing" in out
    assert "device-gateway          -> ingestion: 9092/TCP" in out


def test_render_refuses_invalid_input(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text(BROKEN["cidr-typo.yaml"])
    assert main(["render", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "spec.allow[0].from[0].cidr" in captured.err


@pytest.mark.parametrize("value", ["garbage", "2026-13-01T00:00:00Z", "x" * 100_000])
def test_check_refuses_a_bad_now_as_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["check", "--now", value, str(EXAMPLES / "workloads")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--now" in err
    assert "is not an RFC 3339 time" in err
    assert "Traceback" not in err
    assert len(err) < 2000, "a huge value is quoted bounded"
