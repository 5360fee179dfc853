"""`iotsec backup` reads the configuration the operator writes into the ConfigMap and drives real restic."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from iotsec.api.backuppolicy import BackupPolicySpec
from iotsec.build.backup import runner_config
from iotsec.cli import main as cli

RESTIC = shutil.which("restic")
pytestmark = pytest.mark.skipif(RESTIC is None, reason="needs the restic binary")
PASSWORD = "c0rrect-h0rse-battery-staple"


def operator_config(tmp_path: Path) -> dict:
    """The operator's config.json for a two-target policy, with the pod's mount points moved into tmp_path."""
    spec = BackupPolicySpec.model_validate(
        {
            "schedule": "0 2 * * *",
            "pvcNames": ["sensor-data"],
            "retention": {"keepLast": 2},
            "targets": [
                {"name": "primary", "role": "primary", "repository": "/backups/primary", "claimName": "repo-1"},
                {"name": "offsite", "role": "offsite", "repository": "/backups/offsite", "claimName": "repo-2"},
            ],
            "verification": {"schedule": "0 4 * * 0", "readDataSubset": "100%"},
        }
    )
    config = runner_config("telemetry", "iot-fleet", spec, ["sensor-data"])
    assert config["paths"] == ["/data/sensor-data"]
    config["paths"] = [str(tmp_path / "data" / "sensor-data")]
    for target in config["targets"]:  # where the Jobs mount the repositories' claims
        target["repository"] = str(tmp_path / target["name"])
    config["destination"] = str(tmp_path / "scratch")
    return config


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("RESTIC_PASSWORD", PASSWORD)
    monkeypatch.setenv("RESTIC_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data" / "sensor-data"
    (data / "2026" / "11").mkdir(parents=True)
    for day in range(1, 6):
        (data / "2026" / "11" / f"{day:02}.csv").write_text("".join(f"{day},{i},{i * 0.5}\n" for i in range(500)))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(operator_config(tmp_path)))
    return config, data


def contents(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file (byte comparison; restic restores mtimes, so stat says nothing)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.rglob("*")
        if path.is_file()
    }


def snapshots(repository: Path) -> list[dict]:
    done = subprocess.run(
        [RESTIC, "-r", str(repository), "snapshots", "--json", "--no-lock"], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_a_run_never_creates_a_repository_a_missing_one_fails_it(setup, tmp_path, capsys):
    config, _ = setup
    result = tmp_path / "result.json"
    assert cli.main(["backup", "run", "--config", str(config), "--result", str(result)]) == 1
    outcome = json.loads(result.read_text())
    assert outcome["succeeded"] is False
    assert any("primary" in error for error in outcome["errors"]), outcome["errors"]
    assert not (tmp_path / "primary").exists()
    assert not (tmp_path / "offsite").exists()
    printed = capsys.readouterr().out.strip()
    assert json.loads(printed)["operation"] == "backup", "one JSON document, the backup's"


def test_init_creates_both_repositories_then_run_backs_up_and_copies_off_site(setup, tmp_path):
    config, data = setup
    result = tmp_path / "result.json"
    assert cli.main(["backup", "init", "--config", str(config), "--result", str(result)]) == 0
    assert json.loads(result.read_text())["succeeded"] is True
    assert cli.main(["backup", "run", "--config", str(config), "--result", str(result)]) == 0
    outcome = json.loads(result.read_text())
    assert outcome["succeeded"] is True, outcome
    for repository in ("primary", "offsite"):
        [snapshot] = snapshots(tmp_path / repository)
        assert snapshot["hostname"] == "telemetry"
        assert sorted(snapshot["tags"]) == ["namespace=iot-fleet", "policy=telemetry", "pvc=sensor-data"]
        assert snapshot["paths"] == [str(data)]

    # A second run finds the repositories and adds one snapshot each.
    assert cli.main(["backup", "run", "--config", str(config), "--result", str(result)]) == 0
    assert len(snapshots(tmp_path / "primary")) == 2
    assert len(snapshots(tmp_path / "offsite")) == 2


def test_verify_then_restore_gives_back_the_same_files(setup, tmp_path):
    config, data = setup
    assert cli.main(["backup", "init", "--config", str(config)]) == 0
    assert cli.main(["backup", "run", "--config", str(config)]) == 0
    result = tmp_path / "verify.json"
    assert cli.main(["backup", "verify", "--config", str(config), "--result", str(result)]) == 0
    assert json.loads(result.read_text())["succeeded"] is True

    restored = tmp_path / "restored"
    assert cli.main(["backup", "restore", "--config", str(config), "--destination", str(restored)]) == 0
    copy = restored / data.relative_to("/")
    assert contents(copy) == contents(data)
    assert len(contents(data)) == 5


def test_a_wrong_password_fails_and_says_so_without_the_password(setup, tmp_path, monkeypatch, capsys):
    config, _ = setup
    assert cli.main(["backup", "init", "--config", str(config)]) == 0
    assert cli.main(["backup", "run", "--config", str(config)]) == 0
    monkeypatch.setenv("RESTIC_PASSWORD", "not-the-password-at-all")
    result = tmp_path / "result.json"
    assert cli.main(["backup", "run", "--config", str(config), "--result", str(result)]) == 1
    outcome = json.loads(result.read_text())
    assert outcome["succeeded"] is False
    assert any("password" in error for error in outcome["errors"]), outcome["errors"]
    output = capsys.readouterr()
    assert "not-the-password-at-all" not in output.out + output.err + result.read_text()


def test_a_config_with_an_unknown_key_is_refused_before_restic_runs(setup, tmp_path):
    config, _ = setup
    body = json.loads(config.read_text())
    body["retension"] = {"keep_last": 1}
    config.write_text(json.dumps(body))
    result = tmp_path / "result.json"
    assert cli.main(["backup", "run", "--config", str(config), "--result", str(result)]) == 2
    assert "unknown key(s) retension" in json.loads(result.read_text())["errors"][0]
    assert not (tmp_path / "primary").exists()


def test_one_claim_restores_to_the_root_of_the_volume_mounted_where_the_job_mounts_it(setup, tmp_path):
    """The restore Job's layout: an empty folder as destination, the claim mounted at DEST/<source path>."""
    config, data = setup
    other = tmp_path / "data" / "gateway-state"
    other.mkdir()
    (other / "sessions.db").write_bytes(b"\x00" * 4096)
    body = json.loads(config.read_text())
    body["paths"].append(str(other))
    config.write_text(json.dumps(body))
    assert cli.main(["backup", "init", "--config", str(config)]) == 0
    assert cli.main(["backup", "run", "--config", str(config)]) == 0

    destination = tmp_path / "restore-root"
    claim = destination / data.relative_to("/")  # what the kubelet mounts there
    claim.mkdir(parents=True)
    result = tmp_path / "result.json"
    argv = ["--config", str(config), "--destination", str(destination), "--include", str(data), "--result", str(result)]
    assert cli.main(["backup", "restore", *argv]) == 0, result.read_text()
    assert contents(claim) == contents(data)
    assert not (destination / other.relative_to("/")).exists(), "another claim's files were restored"

    missing = tmp_path / "data" / "no-such-claim"
    assert cli.main(["backup", "restore", *argv[:4], "--include", str(missing), "--result", str(result)]) == 1
    assert f"holds no {missing}" in json.loads(result.read_text())["errors"][0]
