"""The Job's CONFIG.json and password, read without restic: every bad value is one ConfigError naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from iotsec.servers.backupjob.config import ConfigError, JobConfig, load_config, read_password
from iotsec.servers.backupjob.restic import Retention, Target

PRIMARY = {"name": "primary", "repository": "/repo/primary"}
OFFSITE = {"name": "offsite", "repository": "/repo/offsite", "role": "offsite"}


def write(tmp_path: Path, **config: Any) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_camel_case_keys_are_read_and_the_rest_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        paths=["/data/a"],
        targets=[PRIMARY, {**OFFSITE, "env": {"AWS_SECRET_ACCESS_KEY": "s3cr3t"}}],
        retention={"keepLast": 2, "keep_daily": 7},
        snapshotTags=["pvc=a"],
        expectData=False,
        timeout=90,
        cacheDir="/cache",
    )
    config = load_config(path, "backup")
    assert config == JobConfig(
        targets=[
            Target("primary", "/repo/primary"),
            Target("offsite", "/repo/offsite", "offsite", {"AWS_SECRET_ACCESS_KEY": "s3cr3t"}),
        ],
        paths=["/data/a"],
        retention=Retention(keep_last=2, keep_daily=7),
        snapshot_tags=["pvc=a"],
        expect_data=False,
        timeout=90.0,
        cache_dir="/cache",
    )


def test_command_line_overrides_win_and_absent_ones_do_not(tmp_path: Path) -> None:
    path = write(tmp_path, targets=[PRIMARY, OFFSITE], destination="/from/config", snapshot="abc123")
    config = load_config(path, "restore", {"destination": "/from/cli", "snapshot": None, "target": "offsite"})
    assert (config.destination, config.snapshot, config.target) == ("/from/cli", "abc123", "offsite")


def test_restore_and_drill_read_from_the_primary_unless_told(tmp_path: Path) -> None:
    path = write(tmp_path, targets=[OFFSITE, PRIMARY], destination="/restore")
    assert load_config(path, "restore").target == "primary"
    drill = load_config(write(tmp_path, targets=[PRIMARY], destination="/scratch"), "drill")
    assert (drill.target, drill.scratch, drill.destination) == ("primary", None, "/scratch")


TARGETS = [PRIMARY]


@pytest.mark.parametrize(
    ("config", "operation", "message"),
    [
        ({"targets": []}, "verify", "targets must be a non-empty list"),
        ({"targets": ["primary"]}, "verify", "targets[0] must be an object"),
        ({"targets": [{**PRIMARY, "password": "x"}]}, "verify", "targets[0]: unknown key(s) password"),
        ({"targets": [{**PRIMARY, "env": {"KEY": 1}}]}, "verify", "targets[0].env must map names to strings"),
        ({"targets": [{"repository": "/r"}]}, "verify", "targets[0].name must be a non-empty string"),
        ({"targets": [{"name": "a", "repository": ""}]}, "verify", "targets[0].repository must be a non-empty string"),
        ({"targets": [{**PRIMARY, "role": "mirror"}]}, "verify", "role must be primary or offsite, not 'mirror'"),
        ({"targets": [PRIMARY, PRIMARY]}, "verify", "target names must be unique"),
        ({"targets": [PRIMARY, PRIMARY], "paths": ["/d"]}, "backup", "target names must be unique: primary"),
        ({"targets": [OFFSITE], "paths": ["/d"]}, "init", "exactly one target must have role primary, found 0"),
        ({"targets": TARGETS, "paths": "/data"}, "backup", "paths must be a list of non-empty strings"),
        ({"targets": TARGETS, "tags": ["a", ""]}, "verify", "tags must be a list of non-empty strings"),
        ({"targets": TARGETS, "preHook": "pg_dump"}, "verify", "pre_hook must be a list of non-empty strings"),
        ({"targets": TARGETS, "host": ""}, "verify", "host must be a non-empty string"),
        ({"targets": TARGETS, "restic": 7}, "verify", "restic must be a non-empty string"),
        ({"targets": TARGETS, "expectData": "yes"}, "verify", "expect_data must be true or false"),
        ({"targets": TARGETS, "timeout": 0}, "verify", "timeout must be a positive number of seconds"),
        ({"targets": TARGETS, "timeout": True}, "verify", "timeout must be a positive number of seconds"),
        ({"targets": TARGETS, "timeout": float("nan")}, "verify", "timeout must be a positive number of seconds"),
        ({"targets": TARGETS, "timeout": float("inf")}, "verify", "timeout must be a positive number of seconds"),
        ({"targets": TARGETS, "retention": [7]}, "verify", "retention must be an object"),
        ({"targets": TARGETS, "retention": {"keepLast": -1}}, "verify", "retention keep_last must be a non-negative"),
        ({"targets": TARGETS, "retention": {"keepDialy": 7}}, "verify", "retention: unknown key(s) keep_dialy"),
        ({"targets": TARGETS, "schedule": "@daily"}, "verify", "unknown key(s) schedule; known: cache_dir"),
        ({"targets": TARGETS}, "backup", "backup needs paths"),
        ({"targets": TARGETS, "readDataSubset": "0%"}, "verify", "read_data_subset 0% must be above 0%"),
        ({"targets": TARGETS, "readDataSubset": "3/2"}, "verify", "read_data_subset 3/2 needs 1 <= n <= t"),
        ({"targets": TARGETS}, "restore", "restore needs a destination folder"),
        ({"targets": TARGETS}, "drill", "drill needs a scratch folder"),
        ({"targets": [PRIMARY, {**PRIMARY, "name": "b"}], "scratch": "/s"}, "drill", "name the target to restore"),
        ({"targets": TARGETS, "scratch": "/s", "target": "b"}, "drill", "'b' is not one of the targets (primary)"),
    ],
)
def test_each_bad_value_is_one_config_error_that_names_it(
    tmp_path: Path, config: dict, operation: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, **config), operation)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("{not json", "is not valid JSON"), ("[1]", "must hold a JSON object")],
)
def test_an_unreadable_file_is_a_config_error(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(str(path), "verify")


def test_the_password_comes_from_a_file_stripped_or_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESTIC_PASSWORD", "from-the-environment")
    secret = tmp_path / "password"
    secret.write_text("  from-the-file\n")
    assert read_password(str(secret)) == "from-the-file"
    assert read_password(None) == "from-the-environment"


def test_a_missing_or_empty_password_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESTIC_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="set RESTIC_PASSWORD or pass --password-file"):
        read_password(None)
    with pytest.raises(ConfigError, match="cannot read the password file"):
        read_password(str(tmp_path / "absent"))
    (tmp_path / "blank").write_text("\n")
    with pytest.raises(ConfigError, match="no repository password"):
        read_password(str(tmp_path / "blank"))
