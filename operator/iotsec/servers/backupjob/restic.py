"""Running the restic binary: its repositories, its environment, secret-free output and its JSON.

Secrets: the password reaches restic only through ``RESTIC_PASSWORD``/``RESTIC_FROM_PASSWORD`` and repository
locations through ``RESTIC_REPOSITORY``/``RESTIC_FROM_REPOSITORY`` (a rest: URL may embed credentials), so neither
appears on a command line; its error output is redacted before anyone sees it. Other processes (hooks) get an
environment without any restic secret.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from iotsec.servers.backupjob.sftp import HOST_KEY_FAILED, SFTP_START_FAILED, is_sftp, parse_sftp, ssh_argv

log = logging.getLogger(__package__)

ROLES = ("primary", "offsite")
RESTIC_INCOMPLETE = 3  # restic backup: snapshot created, but some source files could not be read
SUBSET = re.compile(r"^([0-9]{1,3}(\.[0-9]+)?%|[0-9]+/[0-9]+)$")  # the BackupPolicy CRD's pattern
SECRET_ENV = frozenset(
    f"RESTIC_{side}{name}"
    for side in ("", "FROM_")
    for name in ("PASSWORD", "PASSWORD_FILE", "PASSWORD_COMMAND", "REPOSITORY", "REPOSITORY_FILE", "KEY_HINT")
)
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


class ResticError(RuntimeError):
    """A restic command failed; the message is redacted."""


@dataclass(frozen=True)
class Target:
    """A restic repository: the primary (backed up to) or an off-site copy."""

    name: str
    repository: str
    role: str = "primary"
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # extra environment, e.g. credentials
    ssh_key_file: str | None = None  # sftp: the mounted private key (the Secret's ssh-privatekey)
    known_hosts_file: str | None = None  # sftp: the mounted known_hosts, the only host keys trusted

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a target needs a name")
        if not self.repository:
            raise ValueError(f"target {self.name!r} needs a repository")
        if self.role not in ROLES:
            raise ValueError(f"target {self.name!r}: role must be primary or offsite, not {self.role!r}")
        if is_sftp(self.repository):
            try:  # a missing key or known_hosts is config.py's error, naming the Secret's keys
                parse_sftp(self.repository)
                if self.ssh_key_file and self.known_hosts_file:
                    self.options()
            except ValueError as exc:
                raise ValueError(f"target {self.name!r}: {exc}") from None

    @property
    def sftp(self) -> bool:
        return is_sftp(self.repository)

    def options(self) -> list[str]:
        """restic's global options for this repository: for sftp, the ssh command (restic splits it on blanks)."""
        return ["-o", "sftp.command=" + " ".join(self.ssh_argv())] if self.sftp else []

    def ssh_argv(self) -> list[str]:
        """The ssh client of an sftp target; ValueError if it has no key or known_hosts."""
        if not self.ssh_key_file or not self.known_hosts_file:
            raise ValueError("an sftp target needs ssh_key_file and known_hosts_file")
        return ssh_argv(parse_sftp(self.repository), self.ssh_key_file, self.known_hosts_file)


def split_targets(targets: Sequence[Target]) -> tuple[Target, list[Target]]:
    """The one primary and the off-site copies; ValueError for duplicate names or not exactly one primary."""
    names = [target.name for target in targets]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"target names must be unique: {', '.join(duplicates)}")
    primaries = [target for target in targets if target.role == "primary"]
    if len(primaries) != 1:
        raise ValueError(f"exactly one target must have role primary, found {len(primaries)}")
    return primaries[0], [target for target in targets if target.role == "offsite"]


@dataclass(frozen=True)
class Retention:
    """How many snapshots `restic forget --prune` keeps; all zero keeps everything (no forget runs)."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"retention {item.name} must be a non-negative integer, not {value!r}")

    def flags(self) -> list[str]:
        return [
            f"--{item.name.replace('_', '-')}={getattr(self, item.name)}"
            for item in fields(self)
            if getattr(self, item.name)
        ]


def subset_problem(subset: str) -> str | None:
    """Why ``subset`` is not a `restic check --read-data-subset` value (5%, 1/10), or None."""
    if not isinstance(subset, str) or not SUBSET.match(subset):
        return f"read_data_subset {subset!r} is neither a percentage like 5% nor n/t like 1/10"
    if subset.endswith("%"):
        if not 0 < float(subset[:-1]) <= 100:
            return f"read_data_subset {subset} must be above 0% and at most 100%"
    else:
        part, total = (int(number) for number in subset.split("/"))
        if not 1 <= part <= total:
            return f"read_data_subset {subset} needs 1 <= n <= t"
    return None


# -- processes ---------------------------------------------------------------------------------------------------


@dataclass
class Completed:
    """A finished restic (or hook) process; returncode None when it could not run or timed out."""

    argv: list[str]
    returncode: int | None
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def reason(self) -> str:
        """Why it failed, on one line: the exit code and the last lines of its error output; for a process that did
        not run or did not finish, the account ``Restic.run`` wrote in its place (not found, timed out)."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        detail = "; ".join(lines[-5:]) or "no error output"
        return detail if self.returncode is None else f"exit code {self.returncode}: {detail}"


def environment_without_secrets() -> dict[str, str]:
    """This process's environment less every variable that names a repository or its password."""
    return {key: value for key, value in os.environ.items() if key not in SECRET_ENV}


def binary_not_found(binary: str, path: str) -> str | None:
    """Why ``binary`` cannot be found as a child process with PATH=``path`` looks it up, or None if it can."""
    if shutil.which(binary, path=path) is not None:
        return None
    if os.path.dirname(binary):  # a path: PATH plays no part
        return f"restic binary {binary} not found (no executable file there)"
    return f"restic binary {binary!r} not found in PATH={path}"


def spawn(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run to completion without a terminal or stdin, within the timeout; raises TimeoutExpired or OSError."""
    return subprocess.run(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )


class Restic:
    """The restic binary with one repository password; remembers every secret it is given so as to redact it."""

    def __init__(self, password: str, binary: str = "restic", timeout: float = 3600, cache_dir: str | None = None):
        self._password = password
        self.binary = binary
        self.timeout = timeout
        self.cache_dir = cache_dir
        self._secrets: set[str] = {password}

    def missing(self) -> str | None:
        """Why the restic binary cannot be found (naming it and the PATH searched), or None if it can."""
        return binary_not_found(self.binary, environment_without_secrets().get("PATH", os.defpath))

    def remember(self, *targets: Target | None) -> None:
        """Redact the values of these targets' extra environment (credentials) from now on."""
        for target in targets:
            if target is not None:
                self._secrets.update(value for value in target.env.values() if len(value) >= 4)

    def redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return _URL_USERINFO.sub("***@", text)

    def run(self, target: Target, *args: str, source: Target | None = None) -> Completed:
        """`restic ARGS` on ``target`` (``source``: the repository `restic copy` or `init` reads from)."""
        # restic 0.14 has one set of -o options for both repositories of a copy: the sftp one's (config.py refuses
        # a copy between two sftp targets)
        options = target.options() or (source.options() if source is not None else [])
        argv = [self.binary, *(["--cache-dir", self.cache_dir] if self.cache_dir else []), *options, *args]
        env = environment_without_secrets()
        if source is not None:
            env.update(source.env)
            env["RESTIC_FROM_REPOSITORY"] = source.repository
            env["RESTIC_FROM_PASSWORD"] = self._password
        env.update(target.env)
        env["RESTIC_REPOSITORY"] = target.repository
        env["RESTIC_PASSWORD"] = self._password
        log.debug("target %s: %s", target.name, self.redact(shlex.join(argv)))
        try:
            proc = spawn(argv, env, self.timeout)
        except subprocess.TimeoutExpired:
            return Completed(argv, None, "", f"restic {args[0]} did not finish within {self.timeout:g} s")
        except OSError as exc:
            missing = binary_not_found(self.binary, env.get("PATH", os.defpath))
            return Completed(argv, None, "", missing or f"cannot run {self.binary}: {exc.strerror}")
        stderr = self.redact(proc.stderr)
        if proc.returncode != 0:
            stderr += self._sftp_diagnosis(stderr, target, source)
        return Completed(argv, proc.returncode, proc.stdout, stderr)

    def _sftp_diagnosis(self, stderr: str, target: Target, source: Target | None) -> str:
        """Why ssh failed, as a last line: restic may exit before it has passed on ssh's own error output, so when
        it says the sftp session did not start, the same ssh command runs once more alone (stdin closed). The
        error lands on ``target``, whose name is its prefix: only a source's sftp server is named here."""
        sftp = next((t for t in (target, source) if t is not None and t.sftp), None)
        if sftp is None or (HOST_KEY_FAILED not in stderr and SFTP_START_FAILED not in stderr):
            return ""
        server = "the sftp server" if sftp is target else f"the sftp server of {sftp.name}"
        if HOST_KEY_FAILED not in stderr:
            try:
                probe = spawn(sftp.ssh_argv(), environment_without_secrets(), min(self.timeout, 60)).stderr
            except (subprocess.TimeoutExpired, OSError) as exc:
                return f"\nssh to {server} did not finish: {exc}"
            if HOST_KEY_FAILED not in probe:
                lines = [line.strip() for line in self.redact(probe).splitlines() if line.strip()]
                return f"\nssh to {server}: {'; '.join(lines[-2:]) or 'no error output'}"
        secret = "the target's Secret" if sftp is target else f"the Secret of {sftp.name}"
        return (
            f"\n{server}'s host key is not in (or does not match) the known_hosts of {secret}: "
            f"{HOST_KEY_FAILED.lower()}, the connection was closed before logging in"
        )


# -- restic's JSON -----------------------------------------------------------------------------------------------


def backup_messages(done: Completed) -> tuple[dict | None, list[str]]:
    """The summary of `restic backup --json` and, once per path, what it could not read and why.

    restic reports a path it cannot read once while scanning and again while archiving."""
    summary: dict | None = None
    reasons: dict[str, str | None] = {}
    for line in (done.stdout + "\n" + done.stderr).splitlines():
        if not line.startswith("{"):
            continue
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if message.get("message_type") == "summary":
            summary = message
        elif message.get("message_type") == "error":
            item = str(message.get("item") or "?")
            reasons[item] = reasons.get(item) or _error_detail(message.get("error"))
    return summary, [f"{item}: {reason or _reason_here(item)}" for item, reason in reasons.items()]


def _error_detail(error: object) -> str | None:
    """The reason in one of restic's JSON errors; None for the ``{}`` restic 0.14 writes for a wrapped Go error."""
    if isinstance(error, dict):
        if isinstance(error.get("Err"), int):
            return os.strerror(error["Err"])
        if isinstance(error.get("message"), str) and error["message"]:  # later restic versions
            return error["message"]
        return None
    return str(error) if error else None


def _reason_here(item: str) -> str:
    """Why ``item`` cannot be read, as this process finds out (it runs as the same user as restic): restic 0.14
    gives no reason for a folder it cannot open. Only folders and regular files are opened (never a device)."""
    try:
        mode = os.lstat(item).st_mode
        if stat.S_ISDIR(mode):
            with os.scandir(item):
                pass
        elif stat.S_ISREG(mode):
            os.close(os.open(item, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as exc:
        return exc.strerror or str(exc)
    return "restic gave no reason"


def forget_kept(stdout: str) -> list[dict] | None:
    """The snapshots `restic forget --json` kept; None if its output holds no JSON groups."""
    for line in stdout.splitlines():  # the JSON groups, then prune's plain-text report
        if line.startswith("["):
            try:
                groups = json.loads(line) or []
                return [snap for group in groups for snap in group.get("keep") or []]
            except (json.JSONDecodeError, AttributeError):
                break
    return None


def snapshot_list(stdout: str) -> list[dict]:
    """The snapshots of `restic snapshots --json`; ValueError (a JSONDecodeError) if it printed no JSON."""
    listing = json.loads(stdout or "null") or []
    return [snap for snap in listing if isinstance(snap, dict)]


def ls_entries(stdout: str) -> tuple[dict | None, dict[str, dict]]:
    """The snapshot `restic ls --json` lists (None if none) and its entries by path."""
    chosen, nodes = None, {}
    for line in stdout.splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(item, dict):
            continue
        if item.get("struct_type") == "snapshot" and chosen is None:
            chosen = item
        elif item.get("struct_type") == "node" and item.get("path"):
            nodes[item["path"]] = item
    return chosen, nodes
