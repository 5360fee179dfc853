"""What the backup runner says when something is wrong: each fault once, with its reason, its target named once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from iotsec.servers.backupjob.operations import Runner
from iotsec.servers.backupjob.restic import ResticError, Retention, Target
from tests.backup.test_runner import PASSWORD, WRONG, initialised_repository, make_runner, make_tree  # noqa: F401
from tests.backup.test_sftp import job, job_env, keygen, run, secret_files, sshd  # noqa: F401

OPERATOR = Path(__file__).resolve().parents[2] / "operator"
RESTIC = shutil.which("restic")
needs_restic = pytest.mark.skipif(RESTIC is None, reason="needs the restic binary")


def copy_of(repository: Path, folder: Path) -> str:
    shutil.copytree(repository, folder)
    return str(folder)


def without_dac_override(tmp_path: Path) -> list[str]:
    """A command prefix under which a mode-000 folder is unreadable, as it is to the Job's non-root user: nothing
    for a non-root user; for root, setpriv drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from what it runs."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv to drop root's capabilities")
    prefix = [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]
    probe = tmp_path / "probe"
    probe.mkdir()
    probe.chmod(0)
    if subprocess.run([*prefix, "ls", str(probe)], capture_output=True, check=False).returncode == 0:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here")
    return prefix


# -- an unreadable source folder ---------------------------------------------------------------------------------


@needs_restic
def test_an_unreadable_source_folder_is_reported_once_with_its_reason(
    tmp_path: Path,
    initialised_repository: Path,  # noqa: F811
) -> None:
    """The whole Job (runner and restic) runs without root's override, as the Job's user does; restic 0.14 reports
    the folder twice (scan, archival), each time with the reason ``{}``."""
    prefix = without_dac_override(tmp_path)
    source = tmp_path / "src"
    make_tree(source)
    locked = source / "locked"
    locked.mkdir()
    (locked / "inside").write_text("cannot be listed")
    locked.chmod(0)
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "paths": [str(source)],
                "targets": [{"name": "primary", "repository": copy_of(initialised_repository, tmp_path / "repo")}],
                "tags": ["iotsec-test"],
                "cacheDir": str(tmp_path / "cache"),
            }
        )
    )
    result = tmp_path / "result.json"
    env = dict(os.environ, RESTIC_PASSWORD=PASSWORD, PYTHONPATH=str(OPERATOR))
    argv = [sys.executable, "-m", "iotsec.servers.backupjob.runner", "backup", "--config", str(config)]

    done = subprocess.run(
        [*prefix, *argv, "--result", str(result)], env=env, capture_output=True, text=True, timeout=120, check=False
    )

    assert done.returncode == 1, done.stderr
    [error] = json.loads(result.read_text())["errors"]
    assert error.count(str(locked)) == 1, error
    assert f"{locked}: Permission denied" in error
    assert "{}" not in error
    assert "could not read 1 source path:" in error
    assert "discarded" in error


# -- the target's name, once -------------------------------------------------------------------------------------


@needs_restic
def test_init_errors_carry_the_target_name_exactly_once(
    tmp_path: Path,
    initialised_repository: Path,  # noqa: F811
) -> None:
    existing = Target("vault", copy_of(initialised_repository, tmp_path / "repo"))
    wrong_password = make_runner(tmp_path, password=WRONG).init_targets([existing])

    [error] = wrong_password.errors
    assert error.startswith("vault: repository exists but exit code 1:"), error
    assert error.count("vault") == 1, error
    assert wrong_password.targets[0]["error"] == error.removeprefix("vault: ")

    (tmp_path / "a-file").write_text("not a folder")
    offsite = Target("far", str(tmp_path / "a-file" / "repo"), "offsite")
    unwritable = make_runner(tmp_path).init_targets([existing, offsite])

    [error] = unwritable.errors
    assert error.startswith(f"far: cannot initialise {offsite.repository}: exit code 1:"), error
    assert error.count("far:") == 1, error


def test_an_sftp_host_key_error_names_its_target_once(sshd, tmp_path, job_env):  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    (data / "file").write_text("x")
    key, known_hosts = secret_files(sshd, tmp_path / "secret", host_key=keygen(tmp_path / "impostor"))
    config = job(
        tmp_path, f"sftp://{sshd['user']}@127.0.0.1:{sshd['port']}/{tmp_path / 'repo'}", key, known_hosts, data
    )

    for operation in ("init", "backup"):
        code, result, _ = run(operation, config, tmp_path)

        assert code == 1
        [error] = result["errors"]
        assert error.startswith("vault: "), error
        assert error.count("vault") == 1, error  # the target of job(): "vault"
        assert "the sftp server's host key is not in (or does not match) the known_hosts" in error


# -- a missing restic binary -------------------------------------------------------------------------------------


def test_a_missing_restic_binary_is_one_line_naming_it_and_the_path_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folders = f"{tmp_path / 'bin'}{os.pathsep}{tmp_path / 'sbin'}"
    monkeypatch.setenv("PATH", folders)
    runner = Runner(PASSWORD, restic="restic-not-installed", timeout=30)
    primary = Target("primary", str(tmp_path / "repo"))
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("data")
    expected = f"restic binary 'restic-not-installed' not found in PATH={folders}"

    results = [
        runner.init_targets([primary]),
        runner.backup([str(source)], [primary], Retention(keep_last=1)),
        runner.verify([primary]),
        runner.restore(primary, str(tmp_path / "restored")),
        runner.drill(primary, str(tmp_path / "scratch")),
    ]

    for result in results:
        assert not result.succeeded
        assert result.errors == [expected], result.operation
    with pytest.raises(ResticError) as raised:
        runner.init(primary)
    assert str(raised.value) == f"cannot initialise {primary.repository}: {expected}"
    assert "did not finish" not in str(raised.value)


def test_a_missing_restic_at_a_path_names_that_path(tmp_path: Path) -> None:
    absent = tmp_path / "opt" / "restic"
    runner = Runner(PASSWORD, restic=str(absent), timeout=30)

    result = runner.verify([Target("primary", str(tmp_path / "repo"))])

    assert result.errors == [f"restic binary {absent} not found (no executable file there)"]
