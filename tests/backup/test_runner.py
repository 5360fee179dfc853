"""The backup runner against the real restic binary, on real files and local repositories in tmp_path."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from iotsec.servers.backupjob.operations import Runner
from iotsec.servers.backupjob.restic import Retention, Target
from iotsec.servers.backupjob.result import Result
from iotsec.servers.backupjob.runner import main

RESTIC = shutil.which("restic")
pytestmark = pytest.mark.skipif(RESTIC is None, reason="needs the restic binary")

PASSWORD = "Tr0ub4dor-and-3-horses"
WRONG = "n0t-the-Right-one-42"
TAG = "iotsec-test"


# -- helpers -----------------------------------------------------------------------------------------------------


def make_runner(tmp_path: Path, password: str = PASSWORD, **options: Any) -> Runner:
    options.setdefault("tags", (TAG,))
    return Runner(password, cache_dir=str(tmp_path / "cache"), timeout=120, **options)


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    return make_runner(tmp_path)


@pytest.fixture(scope="session")
def initialised_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `restic init` per session (it calibrates its key derivation for ~1.5 s); tests get copies."""
    repository = tmp_path_factory.mktemp("template") / "repo"
    done = restic(Target("template", str(repository)), "init")
    assert done.returncode == 0, done.stderr
    weaken_key(repository, PASSWORD)
    return repository


def weaken_key(repository: Path, password: str) -> None:
    """Re-wrap the repository's master key with scrypt N=1024 (restic calibrates ~0.5 s, paid by every command).

    Test speed only: the repository stays a real restic repository; the format is restic's design document
    (scrypt -> AES-256 key, Poly1305-AES k and r; data = nonce || AES-CTR ciphertext || MAC). On any surprise the
    calibrated key stays and the tests are merely slower."""
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        from cryptography.hazmat.primitives.poly1305 import Poly1305

        [key_file] = (repository / "keys").iterdir()
        key = json.loads(key_file.read_text())

        def derive(salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes, bytes]:
            derived = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=1 << 30, dklen=64)
            return derived[:32], derived[32:48], derived[48:]

        def mac_key(k: bytes, r: bytes, nonce: bytes) -> bytes:
            return r + Cipher(algorithms.AES(k), modes.ECB()).encryptor().update(nonce)

        data = base64.b64decode(key["data"])
        encryption, k, r = derive(base64.b64decode(key["salt"]), key["N"], key["r"], key["p"])
        nonce, ciphertext, tag = data[:16], data[16:-16], data[-16:]
        Poly1305.verify_tag(mac_key(k, r, nonce), ciphertext, tag)
        master = Cipher(algorithms.AES(encryption), modes.CTR(nonce)).decryptor().update(ciphertext)

        salt, nonce = os.urandom(64), os.urandom(16)
        encryption, k, r = derive(salt, 1024, 8, 1)
        ciphertext = Cipher(algorithms.AES(encryption), modes.CTR(nonce)).encryptor().update(master)
        tag = Poly1305.generate_tag(mac_key(k, r, nonce), ciphertext)
        key.update(
            N=1024,
            r=8,
            p=1,
            salt=base64.b64encode(salt).decode(),
            data=base64.b64encode(nonce + ciphertext + tag).decode(),
        )
        content = json.dumps(key).encode()
        (repository / "keys" / hashlib.sha256(content).hexdigest()).write_bytes(content)
        key_file.unlink()
    except Exception:
        return


@pytest.fixture
def primary(tmp_path: Path, initialised_repository: Path) -> Target:
    shutil.copytree(initialised_repository, tmp_path / "repo-primary")
    return Target("primary", str(tmp_path / "repo-primary"))


def restored(destination: Path, source: Path) -> Path:
    """restic restores a snapshot of /a/b into DESTINATION/a/b."""
    return destination / str(source).lstrip("/")


def make_tree(root: Path) -> None:
    """Nested folders, a binary file spanning several chunks, an empty file and symlinks."""
    (root / "docs" / "deep" / "er").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha\n" * 100)
    (root / "docs" / "deep" / "er" / "b.txt").write_text("bravo")
    (root / "blob.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (root / "empty").write_bytes(b"")
    (root / "link").symlink_to("docs/a.txt")
    (root / "dangling").symlink_to("nowhere")


def snapshot_of(root: Path) -> dict[str, tuple]:
    """Every entry under root: files with their bytes, symlinks with their target, folders."""
    seen: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                seen[rel] = ("symlink", os.readlink(path))
            elif path.is_dir():
                seen[rel] = ("dir",)
            else:
                seen[rel] = ("file", path.read_bytes())
    return seen


def restic(
    target: Target, *args: str, password: str = PASSWORD, cache: Path | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ, RESTIC_REPOSITORY=target.repository, RESTIC_PASSWORD=password)
    argv = [RESTIC, *(["--cache-dir", str(cache)] if cache else ["--no-cache"]), *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=120)


def snapshots(target: Target) -> list[dict]:
    done = restic(target, "snapshots", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) or []


def corrupt_a_pack(target: Target) -> None:
    """Flip 64 bytes in the middle of the largest pack file of the repository."""
    packs = sorted(
        (path for path in Path(target.repository, "data").rglob("*") if path.is_file()), key=lambda p: p.stat().st_size
    )
    pack = packs[-1]
    pack.chmod(0o600)
    data = bytearray(pack.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(byte ^ 0xFF for byte in data[middle : middle + 64])
    pack.write_bytes(bytes(data))


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert WRONG not in text


# -- backup and restore ------------------------------------------------------------------------------------------


def test_backup_then_restore_after_damage_gives_back_every_byte(
    tmp_path: Path, runner: Runner, primary: Target
) -> None:
    source = tmp_path / "src"
    make_tree(source)
    original = snapshot_of(source)

    result = runner.backup([str(source)], [primary], Retention(keep_last=3))

    assert result.succeeded, result.errors
    assert result.operation == "backup"
    assert result.errors == []
    [entry] = result.targets
    assert entry["name"] == "primary"
    assert entry["error"] is None
    assert len(entry["snapshot_id"]) == 64
    assert entry["files"] == 4  # a.txt, b.txt, blob.bin, empty
    assert entry["bytes"] == 600 + 5 + 3 * 1024 * 1024
    assert entry["snapshots"] == 1
    [listed] = snapshots(primary)
    assert listed["id"] == entry["snapshot_id"]
    assert listed["tags"] == [TAG]

    (source / "docs" / "a.txt").unlink()
    shutil.rmtree(source / "docs" / "deep")
    with (source / "blob.bin").open("r+b") as blob:
        blob.seek(1000)
        blob.write(b"\0" * 4096)
    (source / "empty").write_text("no longer empty")

    result = runner.restore(primary, str(tmp_path / "restored"))

    assert result.succeeded, result.errors
    assert result.restore_seconds is not None
    assert result.restore_seconds > 0
    assert result.targets[0]["snapshot_id"] == entry["snapshot_id"]
    assert (result.targets[0]["files"], result.targets[0]["bytes"]) == (entry["files"], entry["bytes"])
    assert snapshot_of(restored(tmp_path / "restored", source)) == original


def test_result_is_json_with_the_documented_fields(tmp_path: Path, runner: Runner, primary: Target) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("data")

    result = runner.backup([str(source)], [primary], Retention(keep_last=1))

    parsed = json.loads(result.to_json())
    assert set(parsed) == {
        "operation",
        "succeeded",
        "started",
        "finished",
        "duration_seconds",
        "targets",
        "errors",
        "restore_seconds",
    }
    assert set(parsed["targets"][0]) == {"name", "snapshot_id", "files", "bytes", "snapshots", "error"}
    started = datetime.fromisoformat(parsed["started"])
    finished = datetime.fromisoformat(parsed["finished"])
    assert parsed["started"].endswith("Z")
    assert started.tzinfo is not None
    assert started <= finished
    assert parsed["duration_seconds"] >= 0
    assert Result(**parsed).to_json() == result.to_json()


def test_retention_keeps_exactly_what_the_rules_say(
    tmp_path: Path, runner: Runner, primary: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "UTC")  # restic reads --time as local time and buckets days in it
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("payload")
    earlier = [  # this policy's snapshots, made by plain restic in parallel to keep the test quick
        "2023-11-05 10:00:00",  # November
        "2023-12-20 10:00:00",  # December, ISO week 51
        "2024-01-01 10:00:00",  # Monday of ISO week 1
        "2024-01-03 20:00:00",  # newest of week 1
        "2024-01-08 12:00:00",  # week 2
        "2024-01-10 12:00:00",  # newest of week 2
        "2024-01-15 08:00:00",  # week 3, same day as the final backup
    ]
    commands = [("backup", "--tag", TAG, "--time", when, str(source)) for when in earlier]
    commands.append(("backup", "--time", "2023-10-01 10:00:00", str(source)))  # another tool's: untagged
    with ThreadPoolExecutor(max_workers=4) as pool:
        for done in pool.map(lambda args: restic(primary, *args), commands):
            assert done.returncode == 0, done.stderr

    final = runner.backup(
        [str(source)],
        [primary],
        Retention(keep_daily=2, keep_weekly=3, keep_monthly=2),
        time=datetime(2024, 1, 15, 9, 0, tzinfo=UTC),
    )

    assert final.succeeded, final.errors
    assert final.targets[0]["snapshots"] == 4
    kept = sorted((datetime.fromisoformat(snap["time"]), tuple(snap.get("tags") or ())) for snap in snapshots(primary))
    assert kept == [
        (datetime(2023, 10, 1, 10, tzinfo=UTC), ()),  # not this policy's snapshot: untouched
        (datetime(2023, 12, 20, 10, tzinfo=UTC), (TAG,)),  # monthly: December
        (datetime(2024, 1, 3, 20, tzinfo=UTC), (TAG,)),  # weekly: week 1
        (datetime(2024, 1, 10, 12, tzinfo=UTC), (TAG,)),  # daily and weekly: 10 January, week 2
        (datetime(2024, 1, 15, 9, tzinfo=UTC), (TAG,)),  # daily, weekly, monthly: the newest
    ]


# -- strict outcome rules ----------------------------------------------------------------------------------------


def test_empty_backup_fails_is_discarded_and_retention_spares_the_good_one(
    tmp_path: Path, runner: Runner, primary: Target
) -> None:
    source = tmp_path / "src"
    make_tree(source)
    good = runner.backup([str(source)], [primary], Retention(keep_last=1))
    assert good.succeeded, good.errors
    shutil.rmtree(source)
    source.mkdir()  # the volume is now empty, e.g. it was not mounted

    empty = runner.backup([str(source)], [primary], Retention(keep_last=1))

    assert not empty.succeeded
    [error] = empty.errors
    assert "empty" in error
    assert "0 files" in error
    assert empty.targets[0]["snapshot_id"] is None
    assert empty.targets[0]["error"]
    assert [snap["id"] for snap in snapshots(primary)] == [good.targets[0]["snapshot_id"]]

    (source / "zero").write_bytes(b"")  # one file of 0 bytes is no data either
    assert not runner.backup([str(source)], [primary], Retention(keep_last=1)).succeeded
    allowed = runner.backup([str(source)], [primary], Retention(), expect_data=False)
    assert allowed.succeeded, allowed.errors
    assert len(snapshots(primary)) == 2


def test_missing_source_path_fails_without_a_snapshot(tmp_path: Path, runner: Runner, primary: Target) -> None:
    source = tmp_path / "src"
    make_tree(source)
    missing = tmp_path / "not-mounted"

    result = runner.backup([str(source), str(missing)], [primary], Retention(keep_last=1))

    assert not result.succeeded
    assert any(str(missing) in error and "does not exist" in error for error in result.errors)
    assert snapshots(primary) == []


@pytest.fixture
def restic_without_dac_override(tmp_path: Path) -> str:
    """The real restic, unable to read a mode-000 file even as root (setpriv drops CAP_DAC_*)."""
    if os.geteuid() != 0:
        return str(RESTIC)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv to drop root's capabilities")
    wrapper = tmp_path / "restic-no-dac"
    wrapper.write_text(
        f'#!/bin/sh\nexec {setpriv} --inh-caps=-all --bounding-set=-dac_override,-dac_read_search {RESTIC} "$@"\n'
    )
    wrapper.chmod(0o755)
    probe = tmp_path / "probe"
    probe.write_text("x")
    probe.chmod(0)
    if (
        subprocess.run(
            [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "cat", str(probe)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    ):
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here")
    return str(wrapper)


def test_unreadable_file_exit_code_3_is_a_failed_partial_backup(
    tmp_path: Path, primary: Target, restic_without_dac_override: str
) -> None:
    runner = make_runner(tmp_path, restic=restic_without_dac_override)
    source = tmp_path / "src"
    make_tree(source)
    secret = source / "docs" / "locked.db"
    secret.write_text("cannot be read")
    secret.chmod(0)

    result = runner.backup([str(source)], [primary], Retention(keep_last=1))

    assert not result.succeeded
    [error] = result.errors
    assert "incomplete" in error
    assert str(secret) in error
    assert "Permission denied" in error
    assert "discarded" in error
    assert snapshots(primary) == []  # the partial snapshot can never be restored as "latest"


@pytest.mark.parametrize("state", ["absent", "not initialised"])
def test_missing_repository_fails_and_is_not_created(tmp_path: Path, runner: Runner, state: str) -> None:
    repository = tmp_path / "repo"
    if state == "not initialised":
        repository.mkdir()
    source = tmp_path / "src"
    make_tree(source)

    result = runner.backup([str(source)], [Target("primary", str(repository))], Retention(keep_last=1))

    assert not result.succeeded
    assert result.targets[0]["error"]
    assert "primary" in result.errors[0]
    assert "config" in result.errors[0]  # restic: unable to open config file
    assert repository.exists() == (state == "not initialised")
    assert not (repository / "config").exists()


def test_wrong_password_fails_without_revealing_either_password(
    tmp_path: Path, primary: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    source = tmp_path / "src"
    make_tree(source)
    runner = make_runner(tmp_path, password=WRONG)

    results = [
        runner.backup([str(source)], [primary], Retention(keep_last=1)),
        runner.verify([primary], "100%"),
        runner.restore(primary, str(tmp_path / "restored")),
        runner.drill(primary, str(tmp_path / "scratch")),
    ]

    for result in results:
        assert not result.succeeded, result.operation
        assert any("wrong password" in error for error in result.errors), result.errors
        assert_no_secret(result.to_json())
    assert_no_secret(caplog.text)
    assert "restic" in caplog.text  # the commands were logged, just without secrets


# -- off-site copy -----------------------------------------------------------------------------------------------


def test_offsite_copy_holds_the_same_snapshot_and_restores_identical_bytes(
    tmp_path: Path, primary: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    argv_log = tmp_path / "argv.log"
    wrapper = tmp_path / "restic-argv"  # the real restic, recording its command lines
    wrapper.write_text(
        f'#!/bin/sh\necho "$@" >> {argv_log}\n[ -n "$RESTIC_PASSWORD" ] || exit 99\nexec {RESTIC} "$@"\n'
    )
    wrapper.chmod(0o755)
    runner = make_runner(tmp_path, restic=str(wrapper))
    offsite = Target("offsite", str(tmp_path / "repo-offsite"), "offsite")
    runner.init(offsite, chunker_from=primary)
    weaken_key(Path(offsite.repository), PASSWORD)
    runner.init(offsite, chunker_from=primary)  # idempotent
    source = tmp_path / "src"
    make_tree(source)
    original = snapshot_of(source)

    result = runner.backup([str(source)], [primary, offsite], Retention(keep_last=2))

    assert result.succeeded, result.errors
    first, second = result.targets
    assert (first["name"], second["name"]) == ("primary", "offsite")
    assert second["snapshot_id"]
    assert second["snapshot_id"] != first["snapshot_id"]
    assert (second["files"], second["bytes"], second["snapshots"]) == (first["files"], first["bytes"], 1)
    [on_primary] = snapshots(primary)
    [on_offsite] = snapshots(offsite)
    assert on_offsite["original"] == on_primary["id"]
    for key in ("tree", "paths", "time", "tags"):
        assert on_offsite[key] == on_primary[key]
    configs = [json.loads(restic(target, "cat", "config").stdout) for target in (primary, offsite)]
    assert configs[0]["chunker_polynomial"] == configs[1]["chunker_polynomial"]

    shutil.rmtree(primary.repository)  # the site burned down
    result = runner.restore(offsite, str(tmp_path / "restored"))

    assert result.succeeded, result.errors
    assert snapshot_of(restored(tmp_path / "restored", source)) == original
    commands = argv_log.read_text()
    assert "copy" in commands
    assert "--copy-chunker-params" in commands
    assert_no_secret(commands, caplog.text, result.to_json())


def test_failing_offsite_fails_the_backup_but_keeps_the_primary_snapshot(
    tmp_path: Path, runner: Runner, primary: Target
) -> None:
    offsite = Target("offsite", str(tmp_path / "never-initialised"), "offsite")
    source = tmp_path / "src"
    make_tree(source)

    result = runner.backup([str(source)], [primary, offsite], Retention(keep_last=1))

    assert not result.succeeded
    first, second = result.targets
    assert first["error"] is None
    assert first["snapshot_id"]
    assert second["error"]
    assert second["snapshot_id"] is None
    assert [error.split(":")[0] for error in result.errors] == ["offsite"]
    assert len(snapshots(primary)) == 1


def test_targets_need_exactly_one_primary(tmp_path: Path, runner: Runner) -> None:
    source = tmp_path / "src"
    make_tree(source)
    offsite = Target("offsite", str(tmp_path / "repo"), "offsite")

    result = runner.backup([str(source)], [offsite], Retention(keep_last=1))

    assert not result.succeeded
    assert "exactly one target" in result.errors[0]
    with pytest.raises(ValueError, match="role"):
        Target("x", str(tmp_path), "secondary")


# -- hooks -------------------------------------------------------------------------------------------------------


def hook(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_hooks_run_around_the_backup_without_restic_secrets(
    tmp_path: Path, runner: Runner, primary: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESTIC_PASSWORD", PASSWORD)  # as in the Job: it must not reach the hooks
    source = tmp_path / "src"
    source.mkdir()
    dump, marker = source / "dump.sql", tmp_path / "post-hook-ran"
    pre = hook(
        "import os, sys\n"
        "sys.exit(3) if any(k.startswith('RESTIC_') for k in os.environ) else None\n"
        f"open({str(dump)!r}, 'w').write('INSERT INTO t VALUES (1);')"
    )
    post = hook(f"open({str(marker)!r}, 'w').write('ok')")

    result = runner.backup([str(source)], [primary], Retention(keep_last=3), pre_hook=pre, post_hook=post)

    assert result.succeeded, result.errors
    assert marker.exists()
    assert (result.targets[0]["files"], result.targets[0]["bytes"]) == (1, len("INSERT INTO t VALUES (1);"))  # the dump

    marker.unlink()
    failing_pre = runner.backup(
        [str(source)],
        [primary],
        Retention(keep_last=3),
        pre_hook=hook("import sys; sys.exit('dump failed')"),
        post_hook=post,
    )
    assert not failing_pre.succeeded
    assert "pre-hook" in failing_pre.errors[0]
    assert "dump failed" in failing_pre.errors[0]
    assert marker.exists()  # the post-hook still thaws what the pre-hook may have frozen
    assert len(snapshots(primary)) == 1  # no backup without its pre-hook

    failing_post = runner.backup(
        [str(source)], [primary], Retention(keep_last=3), post_hook=hook("raise SystemExit(1)")
    )
    assert not failing_post.succeeded
    assert "post-hook" in failing_post.errors[0]


# -- verification and drills -------------------------------------------------------------------------------------


def test_verify_passes_on_a_good_repository_and_fails_after_a_pack_is_corrupted(
    tmp_path: Path, runner: Runner, primary: Target
) -> None:
    source = tmp_path / "src"
    make_tree(source)
    assert runner.backup([str(source)], [primary], Retention(keep_last=1)).succeeded

    good = runner.verify([primary], "100%")
    assert good.succeeded, good.errors
    assert good.operation == "verify"
    assert good.targets[0]["snapshots"] == 1

    corrupt_a_pack(primary)
    bad = runner.verify([primary], "100%")

    assert not bad.succeeded
    assert "integrity check failed" in bad.errors[0]
    assert "does not match" in bad.errors[0]
    drill = runner.drill(primary, str(tmp_path / "scratch"))
    assert not drill.succeeded
    assert drill.targets[0]["error"]


def test_verify_rejects_an_empty_repository_and_a_bad_subset(tmp_path: Path, runner: Runner, primary: Target) -> None:
    empty = runner.verify([primary], "100%")
    assert not empty.succeeded
    assert "no snapshots" in empty.errors[0]

    for subset in ("150%", "0%", "11/10", "half"):
        result = runner.verify([primary], subset)
        assert not result.succeeded
        assert "read_data_subset" in result.errors[0]


def test_drill_restores_into_scratch_and_measures_the_restore(tmp_path: Path, runner: Runner, primary: Target) -> None:
    source = tmp_path / "src"
    make_tree(source)
    backup = runner.backup([str(source)], [primary], Retention(keep_last=1))
    scratch = tmp_path / "scratch"

    drill = runner.drill(primary, str(scratch))

    assert drill.succeeded, drill.errors
    assert drill.operation == "drill"
    assert drill.restore_seconds is not None
    assert drill.restore_seconds > 0
    [entry] = drill.targets
    assert entry["snapshot_id"] == backup.targets[0]["snapshot_id"]
    assert (entry["files"], entry["bytes"]) == (backup.targets[0]["files"], backup.targets[0]["bytes"])
    assert list(scratch.iterdir()) == []  # the scratch volume is left empty

    kept = runner.drill(primary, str(scratch), keep=True)
    assert kept.succeeded
    [folder] = scratch.iterdir()
    assert snapshot_of(restored(folder, source)) == snapshot_of(source)


# -- command line ------------------------------------------------------------------------------------------------


def write_config(path: Path, **config: Any) -> str:
    path.write_text(json.dumps(config))
    return str(path)


def test_cli_runs_init_backup_verify_and_drill_and_writes_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("RESTIC_PASSWORD", PASSWORD)
    source = tmp_path / "src"
    make_tree(source)
    config = write_config(
        tmp_path / "config.json",
        paths=[str(source)],
        targets=[{"name": "primary", "repository": str(tmp_path / "repo")}],
        retention={"keepDaily": 7, "keep_weekly": 4},
        tags=["policy-a"],
        readDataSubset="1/1",
        scratch=str(tmp_path / "scratch"),
        cacheDir=str(tmp_path / "cache"),
    )
    results = tmp_path / "out"

    for operation in ("init", "backup", "verify"):
        assert main([operation, "--config", config, "--result", str(results / f"{operation}.json")]) == 0
        if operation == "init":
            weaken_key(tmp_path / "repo", PASSWORD)
        written = json.loads((results / f"{operation}.json").read_text())
        assert written["operation"] == operation
        assert written["succeeded"] is True
    assert [entry["snapshots"] for entry in written["targets"]] == [1]
    printed = capsys.readouterr().out
    assert '"operation": "verify"' in printed

    monkeypatch.delenv("RESTIC_PASSWORD")
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    drill = [
        "drill",
        "--config",
        config,
        "--result",
        str(results / "drill.json"),
        "--password-file",
        str(password_file),
    ]
    assert main(drill) == 0
    written = json.loads((results / "drill.json").read_text())
    assert written["restore_seconds"] > 0
    assert written["targets"][0]["files"] == 4

    shutil.rmtree(source)
    source.mkdir()
    failed = [
        "backup",
        "--config",
        config,
        "--result",
        str(results / "failed.json"),
        "--password-file",
        str(password_file),
    ]
    assert main(failed) == 1
    written = json.loads((results / "failed.json").read_text())
    assert written["succeeded"] is False
    assert "empty" in written["errors"][0]
    assert_no_secret(capsys.readouterr().out, *(path.read_text() for path in results.iterdir()))


@pytest.mark.parametrize(
    ("content", "operation", "message"),
    [
        (None, "backup", "cannot read"),
        ("{not json", "backup", "not valid JSON"),
        ([1, 2], "backup", "JSON object"),
        ({"paths": ["/x"]}, "backup", "targets"),
        (
            {"paths": ["/x"], "targets": [{"name": "a", "repository": "/r"}], "retention": {"keepDialy": 7}},
            "backup",
            "keep_dialy",
        ),
        (
            {"paths": ["/x"], "targets": [{"name": "a", "repository": "/r"}], "schedule": "@daily"},
            "backup",
            "unknown key",
        ),
        (
            {"paths": ["/x"], "targets": [{"name": "a", "repository": "/r"}, {"name": "b", "repository": "/s"}]},
            "backup",
            "exactly one",
        ),
        ({"paths": ["/x"], "targets": [{"name": "a", "repository": "/r", "role": "mirror"}]}, "backup", "role"),
        ({"targets": [{"name": "a", "repository": "/r"}]}, "backup", "needs paths"),
        ({"targets": [{"name": "a", "repository": "/r"}], "readDataSubset": "200%"}, "verify", "read_data_subset"),
        ({"targets": [{"name": "a", "repository": "/r"}]}, "restore", "destination"),
        ({"targets": [{"name": "a", "repository": "/r"}], "scratch": "/s", "target": "b"}, "drill", "'b'"),
        ({"targets": [{"name": "a", "repository": "/r"}], "tags": ["a,b"], "scratch": "/s"}, "drill", "tag"),
    ],
)
def test_cli_bad_config_exits_2_with_a_clear_message(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    content: Any,
    operation: str,
    message: str,
) -> None:
    monkeypatch.setenv("RESTIC_PASSWORD", PASSWORD)
    config = tmp_path / "config.json"
    if isinstance(content, str):
        config.write_text(content)
    elif content is not None:
        config.write_text(json.dumps(content))
    result = tmp_path / "result.json"

    assert main([operation, "--config", str(config), "--result", str(result)]) == 2

    err = capsys.readouterr().err
    assert "bad config" in err
    assert message in err
    written = json.loads(result.read_text())
    assert written["succeeded"] is False
    assert message in written["errors"][0]


def test_cli_without_a_password_or_with_a_bad_operation_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("RESTIC_PASSWORD", raising=False)
    config = write_config(tmp_path / "c.json", targets=[{"name": "a", "repository": "/r"}])

    assert main(["verify", "--config", config]) == 2
    assert "RESTIC_PASSWORD" in capsys.readouterr().err
    assert main(["verify", "--config", config, "--password-file", str(tmp_path / "absent")]) == 2
    assert main(["explode", "--config", config]) == 2


# -- the result as a termination message ---------------------------------------------------------------------------


def test_a_result_with_many_long_errors_still_fits_a_termination_message_as_json():
    errors = [f"target t{i}: cannot reach s3:bucket/{'x' * 900}" for i in range(40)]
    targets = [
        {"name": f"t{i}", "snapshot_id": f"{i:08x}", "files": 10, "bytes": 1, "error": "y" * 500} for i in range(30)
    ]
    result = Result("backup", False, "2026-11-27T02:00:00Z", "2026-11-27T02:01:00Z", 60.0, targets, errors)
    message = result.to_message()
    assert len(message.encode()) <= 4096
    parsed = json.loads(message)
    assert parsed["succeeded"] is False
    assert parsed["operation"] == "backup"
    assert parsed["errors"], "some errors must survive"
    assert parsed["errors"][0].startswith("target t0: cannot reach")
    assert [t["snapshot_id"] for t in parsed["targets"]] == [f"{i:08x}" for i in range(30)]


def test_a_small_result_is_written_whole():
    result = Result("verify", True, "a", "b", 1.5, [{"name": "primary", "error": None}], [], None)
    assert json.loads(result.to_message()) == json.loads(result.to_json())


def test_the_result_is_written_in_place_where_a_file_cannot_be_renamed_over(tmp_path, monkeypatch):
    from iotsec.servers.backupjob import result as module

    mounted = tmp_path / "termination-log"
    mounted.write_text("")

    def busy(source, destination):
        raise OSError(16, "Device or resource busy")

    monkeypatch.setattr(module.os, "replace", busy)
    module.write_result(str(mounted), '{"succeeded":true}')
    assert json.loads(mounted.read_text()) == {"succeeded": True}
    assert [p.name for p in tmp_path.iterdir()] == ["termination-log"]
