"""The typed settings of every iotsec process: read once, every bad value named, documented from one table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from iotsec.cli import main as cli
from iotsec.model.config import SETTINGS, Config, ConfigError, settings_table
from tests.conftest import ROOT


def test_every_setting_is_read_from_its_variable():
    env = {
        "IOTSEC_RESYNC_SECONDS": "5",
        "IOTSEC_METRICS_PORT": "0",
        "IOTSEC_DNS_POD_LABELS": "app=coredns, tier=dns",
        "IOTSEC_WEBHOOK_EXTRA_IPS": "127.0.0.1, ::1",
        "IOTSEC_NAMESPACE_GRANTS": "false",
        "IOTSEC_OPERATOR_USERS": "alice,bob",
        "IOTSEC_RELEASE": "edge",
        "IOTSEC_IMAGE_PULL_POLICY": "Never",
    }
    config = Config.from_env(env)
    assert config.resync_seconds == 5.0
    assert config.metrics_port == 0
    assert config.dns_pod_labels == {"app": "coredns", "tier": "dns"}
    assert config.webhook_extra_ips == ("127.0.0.1", "::1")
    assert config.namespace_grants is False
    assert config.audited_operator_users == ["alice", "bob"]
    assert config.platform.audit_namespace == "edge-audit"
    assert config.job_image.pull_policy == "Never"


def test_blank_means_the_default_and_every_field_has_a_variable():
    assert Config.from_env({s.env: " " for s in SETTINGS}) == Config()
    fields = set(Config.__dataclass_fields__)
    assert {s.field for s in SETTINGS} == fields, "a Config field without an IOTSEC_* variable, or the reverse"


def test_every_bad_value_is_named_at_once():
    env = {
        "IOTSEC_RESYNC_SECONDS": "soon",
        "IOTSEC_RETRY_SECONDS": "-1",
        "IOTSEC_METRICS_PORT": "70000",
        "IOTSEC_NAMESPACE_GRANTS": "maybe",
        "IOTSEC_IMAGE_PULL_POLICY": "always",
        "IOTSEC_WEBHOOK_NAMESPACE": "Not_A_Name",
        "IOTSEC_DNS_POD_LABELS": "=x",
    }
    with pytest.raises(ConfigError) as caught:
        Config.from_env(env)
    problems = caught.value.problems
    assert len(problems) == len(env), problems
    assert "IOTSEC_RESYNC_SECONDS='soon': must be a number" in problems
    assert "IOTSEC_RETRY_SECONDS='-1': must be a positive number of seconds" in problems
    assert any(p.startswith("IOTSEC_METRICS_PORT='70000': must be a port") for p in problems)
    assert "IOTSEC_NAMESPACE_GRANTS='maybe': must be true or false" in problems
    assert "IOTSEC_IMAGE_PULL_POLICY='always': must be one of Always, IfNotPresent, Never" in problems


@pytest.mark.parametrize("value", ["nan", "inf", "0"])
def test_an_interval_is_a_finite_positive_number(value):
    with pytest.raises(ConfigError, match="must be a positive number of seconds"):
        Config.from_env({"IOTSEC_RESYNC_SECONDS": value})


def test_a_huge_value_is_shown_bounded():
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"IOTSEC_METRICS_PORT": "9" * 10_000_000})
    assert len(str(caught.value)) < 300


def test_unknown_variables_are_found_not_fatal():
    env = {"IOTSEC_RESYNC_SECOND": "5", "IOTSEC_RELEASE": "x", "HOME": "/root"}
    assert Config.from_env(env).unknown(env) == ["IOTSEC_RESYNC_SECOND"]


def test_iotsec_run_refuses_bad_settings_before_starting(monkeypatch, capsys):
    monkeypatch.setenv("IOTSEC_RESYNC_SECONDS", "0")
    monkeypatch.setenv("IOTSEC_METRICS_PORT", "x")
    assert cli.main(["run"]) == 2
    err = capsys.readouterr().err
    assert "IOTSEC_RESYNC_SECONDS='0': must be a positive number of seconds" in err
    assert "IOTSEC_METRICS_PORT='x': must be a number" in err
    assert "kopf" not in sys.modules or err, "nothing started"


def test_no_module_reads_the_environment_on_import():
    """Importing every module with a poisoned environment must neither fail nor pick the values up."""
    probe = (
        "import pkgutil, importlib, iotsec\n"
        "for m in pkgutil.walk_packages(iotsec.__path__, 'iotsec.'):\n"
        "    if m.name != 'iotsec.__main__': importlib.import_module(m.name)\n"
        "from iotsec.controllers import runtime\n"
        "print(runtime.config().resync_seconds)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "IOTSEC_RESYNC_SECONDS": "not-a-number", "PYTHONPATH": str(ROOT / "operator")}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "60.0"


def test_the_readme_settings_table_is_the_table():
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- settings-table:start -->\n", "<!-- settings-table:end -->"
    shown = readme.split(start, 1)[1].split(end, 1)[0]
    assert shown == settings_table(), (
        "regenerate: python -c 'from iotsec.model.config import settings_table; print(settings_table(), end=\"\")'"
    )
