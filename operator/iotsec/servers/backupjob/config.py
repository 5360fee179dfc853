"""The Job's configuration: CONFIG.json (written by the operator into a ConfigMap) and the repository password.

Keys may be snake_case or camelCase. Anything unusable is a ConfigError naming the key and what it must be, raised
before restic runs (the runner exits 2 with it).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

from iotsec.servers.backupjob.restic import Retention, Target, split_targets, subset_problem
from iotsec.servers.backupjob.sftp import SECRET_KEYS as SFTP_SECRET_KEYS


class ConfigError(ValueError):
    """The Job's configuration or password is unusable (exit code 2)."""


@dataclass
class JobConfig:
    """CONFIG.json: what to back up where (targets, paths, retention) and how each operation runs."""

    targets: list[Target]
    paths: list[str] = field(default_factory=list)
    retention: Retention = field(default_factory=Retention)
    tags: list[str] = field(default_factory=list)
    snapshot_tags: list[str] = field(default_factory=list)
    host: str | None = None
    expect_data: bool = True
    pre_hook: list[str] | None = None
    post_hook: list[str] | None = None
    read_data_subset: str = "5%"
    destination: str | None = None
    scratch: str | None = None
    snapshot: str = "latest"
    include: str | None = None
    target: str | None = None
    timeout: float = 3600
    cache_dir: str | None = None
    restic: str = "restic"


CONFIG_KEYS = frozenset(item.name for item in fields(JobConfig))
RETENTION_KEYS = frozenset(item.name for item in fields(Retention))
_TARGET_KEYS = frozenset({"name", "repository", "role", "env", "ssh_key_file", "known_hosts_file"})
_TEXT_KEYS = (
    "host",
    "destination",
    "scratch",
    "snapshot",
    "target",
    "include",
    "cache_dir",
    "restic",
    "read_data_subset",
)


def load_config(path: str, operation: str, overrides: dict[str, str | None] | None = None) -> JobConfig:
    """Read CONFIG.json for ``operation``; ``overrides`` (from the command line; None: not given) win over its keys."""
    data = {_snake(key): value for key, value in _read_object(path).items()}
    data.update({key: value for key, value in (overrides or {}).items() if value is not None})
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(CONFIG_KEYS))}")
    targets = _targets(data.get("targets"))
    config = JobConfig(targets=targets)
    if operation in ("init", "backup"):
        try:
            split_targets(targets)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        _check_sftp_copies(targets)
    names = [target.name for target in targets]
    if len(set(names)) != len(names):
        raise ConfigError("target names must be unique")
    _apply_options(config, data)
    _check_for_operation(config, operation)
    return config


def read_password(password_file: str | None) -> str:
    """The repository password from ``password_file`` (stripped, as restic's --password-file) or $RESTIC_PASSWORD."""
    if password_file:
        try:
            with open(password_file, encoding="utf-8") as handle:
                password = handle.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read the password file {password_file}: {getattr(exc, 'strerror', exc)}"
            ) from None
    else:
        password = os.environ.get("RESTIC_PASSWORD", "")
    if not password:
        raise ConfigError("no repository password: set RESTIC_PASSWORD or pass --password-file")
    return password


def _snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def _read_object(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return raw


def _strings(key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{key} must be a list of non-empty strings")
    return value


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string")
    return value


def _targets(value: Any) -> list[Target]:
    if not isinstance(value, list) or not value:
        raise ConfigError("targets must be a non-empty list of {name, repository, role}")
    return [_target(index, item) for index, item in enumerate(value)]


def _target(index: int, item: Any) -> Target:
    if not isinstance(item, dict):
        raise ConfigError(f"targets[{index}] must be an object")
    item = {_snake(key): value for key, value in item.items()}
    extra = sorted(set(item) - _TARGET_KEYS)
    if extra:
        raise ConfigError(f"targets[{index}]: unknown key(s) {', '.join(extra)}")
    env = item.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ConfigError(f"targets[{index}].env must map names to strings")
    try:
        return Target(
            name=_text(f"targets[{index}].name", item.get("name")),
            repository=_text(f"targets[{index}].repository", item.get("repository")),
            role=item.get("role", "primary"),
            env=env,
            ssh_key_file=_optional_text(f"targets[{index}].ssh_key_file", item.get("ssh_key_file")),
            known_hosts_file=_optional_text(f"targets[{index}].known_hosts_file", item.get("known_hosts_file")),
        )
    except ValueError as exc:  # includes a ConfigError from _text: its message is the same
        raise ConfigError(str(exc)) from None


def _optional_text(key: str, value: Any) -> str | None:
    return None if value is None else _text(key, value)


def _check_sftp(targets: list[Target]) -> None:
    """Each sftp target's key and known_hosts are readable files (mounted from its credentials Secret)."""
    for target in targets:
        if not target.sftp:
            continue
        for label, path in (("ssh-privatekey", target.ssh_key_file), ("known_hosts", target.known_hosts_file)):
            if not path or not os.path.isfile(path) or not os.access(path, os.R_OK):
                raise ConfigError(
                    f"target {target.name!r} is an sftp repository: its credentials Secret must hold the keys "
                    f"{' and '.join(SFTP_SECRET_KEYS)} (missing or unreadable: {label}"
                    + (f" at {path}" if path else "")
                    + ")"
                )


def _check_sftp_copies(targets: list[Target]) -> None:
    """restic 0.14 takes one sftp.command per run, so it cannot copy between two sftp repositories."""
    primary, offsites = split_targets(targets)
    both = [target.name for target in offsites if target.sftp and primary.sftp]
    if both:
        raise ConfigError(
            f"the primary {primary.name!r} and the off-site target(s) {', '.join(both)} are all sftp: restic "
            "copies between two sftp repositories with a single ssh command; make one of them non-sftp"
        )


def _apply_options(config: JobConfig, data: dict[str, Any]) -> None:
    for key in ("paths", "tags", "snapshot_tags"):
        if key in data:
            setattr(config, key, _strings(key, data[key]))
    for key in ("pre_hook", "post_hook"):
        if data.get(key) is not None:
            setattr(config, key, _strings(key, data[key]))
    for key in _TEXT_KEYS:
        if data.get(key) is not None:
            setattr(config, key, _text(key, data[key]))
    if "expect_data" in data:
        if not isinstance(data["expect_data"], bool):
            raise ConfigError("expect_data must be true or false")
        config.expect_data = data["expect_data"]
    if "timeout" in data:
        timeout = data["timeout"]
        # json reads NaN and Infinity, which would pass `> 0` and then crash every restic run (subprocess rounds them)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
            raise ConfigError("timeout must be a positive number of seconds")
        config.timeout = float(timeout)
    if data.get("retention") is not None:
        config.retention = _retention(data["retention"])


def _retention(value: Any) -> Retention:
    if not isinstance(value, dict):
        raise ConfigError("retention must be an object like {keep_daily: 7}")
    retention = {_snake(key): count for key, count in value.items()}
    extra = sorted(set(retention) - RETENTION_KEYS)
    if extra:
        raise ConfigError(f"retention: unknown key(s) {', '.join(extra)}; known: {', '.join(sorted(RETENTION_KEYS))}")
    try:
        return Retention(**retention)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_for_operation(config: JobConfig, operation: str) -> None:
    """What ``operation`` needs beyond valid keys: paths to back up, a subset to read, a place to restore to."""
    if operation == "backup" and not config.paths:
        raise ConfigError("backup needs paths: the folders to back up")
    if operation == "verify":
        problem = subset_problem(config.read_data_subset)
        if problem:
            raise ConfigError(problem)
    if operation == "restore" and not config.destination:
        raise ConfigError("restore needs a destination folder")
    if operation == "drill" and not (config.scratch or config.destination):
        raise ConfigError("drill needs a scratch folder")
    if operation not in ("restore", "drill"):
        _check_sftp(config.targets)
    if operation in ("restore", "drill"):
        names = [target.name for target in config.targets]
        if config.target is None:
            primaries = [target.name for target in config.targets if target.role == "primary"]
            if len(primaries) != 1:
                raise ConfigError("name the target to restore from (target) or give exactly one primary")
            config.target = primaries[0]
        elif config.target not in names:
            raise ConfigError(f"target {config.target!r} is not one of the targets ({', '.join(names)})")
        _check_sftp([target for target in config.targets if target.name == config.target])
