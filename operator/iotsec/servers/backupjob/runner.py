"""The program BackupPolicy Jobs run: restic backups, off-site copies, retention, integrity checks and restore drills.

X.1369 asks for regular backups with a restore mechanism (§9.2), integrity detection (9.2.4-3), clean-up
(9.2.4-5), a remote copy (9.6.6-1), fast restore (9.6.6-2) and drills (9.6.1-2). The commonest complaint about
backup tools is an empty or partial backup reported as success, so the outcome rules here are strict: a Result
succeeds only if every step succeeded on every target, and a backup also fails when

- restic exits non-zero (exit code 3: some source files could not be read, the snapshot is incomplete);
- ``expect_data`` is set and the snapshot processed 0 files or 0 bytes;
- a source path does not exist (restic 0.14 itself only warns and exits 0 when some, not all, paths are missing);
- a pre/post hook fails, or any target (primary or off-site) fails.

An empty or incomplete snapshot is forgotten again at once so that it can neither become "latest" for a restore
nor push a good snapshot out of the retention window; retention runs only after a fully successful backup.

Secrets: the password reaches restic only through ``RESTIC_PASSWORD``/``RESTIC_FROM_PASSWORD`` and repository
locations through ``RESTIC_REPOSITORY``/``RESTIC_FROM_REPOSITORY`` (a rest: URL may embed credentials), so neither
appears on a command line; errors and log lines are redacted. Hooks run without any restic secret in their
environment. Repositories are never created implicitly: a missing repository is an error (it may well be an
unmounted volume), ``init`` creates them.

CLI: ``python -m iotsec.servers.backupjob.runner init|backup|verify|restore|drill --config CONFIG.json
--result RESULT.json``
(password from ``RESTIC_PASSWORD`` or ``--password-file``); exit 0 on success, 1 on a failed result, 2 on bad config.
Only the standard library is used, so the Job image needs Python and restic and nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from time import monotonic
from typing import Any

log = logging.getLogger("iotsec.servers.backupjob")

ROLES = ("primary", "offsite")
OPERATIONS = ("init", "backup", "verify", "restore", "drill")
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
MESSAGE_LIMIT = 4096  # bytes of a container's termination message the kubelet keeps
RESTIC_INCOMPLETE = 3  # restic backup: snapshot created, but some source files could not be read
SUBSET = re.compile(r"^([0-9]{1,3}(\.[0-9]+)?%|[0-9]+/[0-9]+)$")  # the BackupPolicy CRD's pattern
GROUP_BY = "paths,tags"  # not host: a Job's host name is its pod name, different on every run
_SECRET_ENV = frozenset(
    f"RESTIC_{side}{name}"
    for side in ("", "FROM_")
    for name in ("PASSWORD", "PASSWORD_FILE", "PASSWORD_COMMAND", "REPOSITORY", "REPOSITORY_FILE", "KEY_HINT")
)
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_MAX_ITEMS = 10
_FILE_KINDS = (
    (stat.S_ISREG, "file"),
    (stat.S_ISDIR, "dir"),
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISCHR, "chardev"),
    (stat.S_ISBLK, "dev"),
    (stat.S_ISSOCK, "socket"),
)


class ResticError(RuntimeError):
    """A restic command failed; the message is redacted."""


@dataclass(frozen=True)
class Target:
    """A restic repository: the primary (backed up to) or an off-site copy."""

    name: str
    repository: str
    role: str = "primary"
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # extra environment, e.g. credentials

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a target needs a name")
        if not self.repository:
            raise ValueError(f"target {self.name!r} needs a repository")
        if self.role not in ROLES:
            raise ValueError(f"target {self.name!r}: role must be primary or offsite, not {self.role!r}")


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


@dataclass
class Result:
    """The machine-readable outcome of one operation, written as JSON for the operator."""

    operation: str
    succeeded: bool
    started: str
    finished: str
    duration_seconds: float
    targets: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    restore_seconds: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def to_message(self, limit: int = MESSAGE_LIMIT) -> str:
        """Compact JSON of at most ``limit`` bytes: the kubelet cuts a termination message at 4096 bytes, and a
        cut message is no longer JSON. Long errors are shortened first, then per-target details dropped."""
        body = asdict(self)
        text = json.dumps(body, separators=(",", ":"))
        if len(text.encode()) <= limit:
            return text
        errors = [_shorten(error, 300) for error in self.errors[:5]]
        if len(self.errors) > 5:
            errors.append(f"... and {len(self.errors) - 5} more error(s)")
        body["errors"] = errors
        text = json.dumps(body, separators=(",", ":"))
        if len(text.encode()) <= limit:
            return text
        body["targets"] = [{"name": t.get("name"), "snapshot_id": t.get("snapshot_id")} for t in self.targets]
        body["errors"] = [_shorten(error, 120) for error in errors]
        text = json.dumps(body, separators=(",", ":"))
        while len(text.encode()) > limit and body["errors"]:
            body["errors"].pop()
            text = json.dumps(body, separators=(",", ":"))
        return text


def _shorten(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


@dataclass
class _Done:
    """A finished restic (or hook) process; returncode None when it could not run or timed out."""

    argv: list[str]
    returncode: int | None
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def reason(self) -> str:
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        detail = "; ".join(lines[-5:]) or "no error output"
        status = "did not finish" if self.returncode is None else f"exit code {self.returncode}"
        return f"{status}: {detail}"


class _Outcome:
    """Collects per-target entries and errors while an operation runs."""

    def __init__(self, operation: str, redact: Any) -> None:
        self.operation = operation
        self.started = datetime.now(UTC)
        self._clock = monotonic()
        self._redact = redact
        self.entries: dict[str, dict] = {}
        self.errors: list[str] = []
        self.restore_seconds: float | None = None

    def entry(self, name: str) -> dict:
        return self.entries.setdefault(
            name, {"name": name, "snapshot_id": None, "files": None, "bytes": None, "snapshots": None, "error": None}
        )

    def fail(self, message: str, target: str | None = None) -> None:
        message = self._redact(message)
        if target is None:
            self.errors.append(message)
            return
        self.errors.append(f"{target}: {message}")
        entry = self.entry(target)
        entry["error"] = message if entry["error"] is None else f"{entry['error']}; {message}"

    def result(self) -> Result:
        finished = datetime.now(UTC)
        return Result(
            operation=self.operation,
            succeeded=not self.errors,
            started=_rfc3339(self.started),
            finished=_rfc3339(finished),
            duration_seconds=round(monotonic() - self._clock, 3),
            targets=list(self.entries.values()),
            errors=list(self.errors),
            restore_seconds=self.restore_seconds,
        )


class Runner:
    """Runs restic for one BackupPolicy; every public method returns a Result and never raises on restic errors."""

    def __init__(
        self,
        password: str,
        restic: str = "restic",
        timeout: float = 3600,
        tags: Sequence[str] = (),
        *,
        host: str | None = None,
        cache_dir: str | None = None,
        snapshot_tags: Sequence[str] = (),
    ) -> None:
        """``tags`` select this policy's snapshots (listing, retention); ``snapshot_tags`` are only recorded on new
        snapshots, as they may change from run to run (the claims a selector matches) without orphaning old ones."""
        if not password:
            raise ValueError("the repository password is empty")
        if isinstance(tags, str) or isinstance(snapshot_tags, str):
            raise TypeError("tags must be a sequence of strings, not a string")
        for tag in (*tags, *snapshot_tags):
            if not tag or "," in tag or tag != tag.strip():
                raise ValueError(f"invalid tag {tag!r}: tags are non-empty, without commas or outer blanks")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._password = password
        self.restic = restic
        self.timeout = timeout
        self.tags = tuple(tags)
        self.snapshot_tags = tuple(snapshot_tags)
        self.host = host
        self.cache_dir = cache_dir
        self._secrets: set[str] = {password}

    # -- operations ----------------------------------------------------------------------------------------------

    def init(self, target: Target, chunker_from: Target | None = None) -> None:
        """Create the repository unless `restic cat config` shows it exists; off-site copies share the chunker
        parameters of ``chunker_from`` (the primary) so that `restic copy` keeps deduplicating."""
        self._remember(target, chunker_from)
        done = self._restic(target, "cat", "config")
        if done.ok:
            return
        if "wrong password" in done.stderr:
            raise ResticError(self._redact(f"{target.name}: repository exists but {done.reason()}"))
        args = ["init"] + (["--copy-chunker-params"] if chunker_from is not None else [])
        done = self._restic(target, *args, source=chunker_from)
        if not done.ok:
            raise ResticError(self._redact(f"{target.name}: cannot initialise {target.repository}: {done.reason()}"))
        log.info("initialised repository of target %s", target.name)

    def init_targets(self, targets: Sequence[Target]) -> Result:
        """`init` for every target: the primary first, then the off-site copies with its chunker parameters."""
        out = _Outcome("init", self._redact)
        try:
            primary, offsites = _split_targets(targets)
        except ValueError as exc:
            out.fail(str(exc))
            return out.result()
        for target in (primary, *offsites):
            out.entry(target.name)
            try:
                self.init(target, None if target is primary else primary)
            except ResticError as exc:
                out.fail(str(exc), target.name)
                if target is primary:
                    break
        return out.result()

    def backup(
        self,
        paths: Sequence[str],
        targets: Sequence[Target],
        retention: Retention,
        expect_data: bool = True,
        pre_hook: Sequence[str] | None = None,
        post_hook: Sequence[str] | None = None,
        time: datetime | str | None = None,
    ) -> Result:
        """Back up ``paths`` to the primary, copy the snapshot to every off-site target, then apply retention.

        ``time`` overrides the snapshot time (restic --time; a naive datetime or string is local time)."""
        out = _Outcome("backup", self._redact)
        try:
            primary, offsites = _split_targets(targets)
        except ValueError as exc:
            out.fail(str(exc))
            return out.result()
        self._remember(*targets)
        for target in (primary, *offsites):
            out.entry(target.name)
        if isinstance(paths, str):
            paths = [paths]
        sources = [os.path.abspath(path) for path in paths]
        if not sources:
            out.fail("no source paths to back up")
        for source in sources:
            if not os.path.exists(source):
                out.fail(f"source path {source} does not exist")
        if out.errors:
            return out.result()

        snapshot_id = None
        if pre_hook is None or self._hook("pre-hook", pre_hook, out):
            snapshot_id = self._backup_primary(primary, sources, expect_data, time, out)
        if post_hook is not None:  # also after a failed pre-hook: it may have frozen half of the application
            self._hook("post-hook", post_hook, out)
        if snapshot_id is None:
            return out.result()

        # every restic command costs ~0.5 s of key derivation, so listings are reused: the primary is listed when
        # the copy needs the snapshot's tree or no retention runs; otherwise `forget --json` reports what is kept
        remaining: dict[str, list[dict] | None] = {}
        snapshot = None
        if offsites or not retention.flags():
            remaining[primary.name] = self._snapshots(primary, out)
            snapshot = self._confirm(primary, snapshot_id, remaining[primary.name], out)
            if snapshot is None:
                return out.result()
            for offsite in offsites:
                remaining[offsite.name] = self._copy(primary, offsite, snapshot, out)
        if out.errors:
            log.warning("the backup had errors, so retention is applied to no target")
        elif retention.flags():
            for target in (primary, *offsites):
                remaining[target.name] = self._forget(target, retention, out)
        if snapshot is None:
            listing = remaining.get(primary.name)
            if listing is None or not _find(listing, snapshot_id):
                listing = remaining[primary.name] = self._snapshots(primary, out)
            self._confirm(primary, snapshot_id, listing, out)
        for name, listing in remaining.items():
            if listing is not None:
                out.entry(name)["snapshots"] = len(listing)
        return out.result()

    def verify(self, targets: Sequence[Target], read_data_subset: str = "5%") -> Result:
        """`restic check --read-data-subset` on every target; a repository without snapshots also fails."""
        out = _Outcome("verify", self._redact)
        problem = _subset_problem(read_data_subset)
        if problem:
            out.fail(problem)
            return out.result()
        if not targets:
            out.fail("no targets to verify")
        self._remember(*targets)
        for target in targets:
            entry = out.entry(target.name)
            # The listing runs beside the check (lock-free, read-only): each restic process spends ~0.5 s deriving
            # the key, which otherwise doubles the time of a small verify.
            with ThreadPoolExecutor(max_workers=1) as pool:
                listed = pool.submit(self._snapshots, target, out, lock=False)
                done = self._restic(target, "check", f"--read-data-subset={read_data_subset}")
                listing = listed.result()
            if listing is None:
                continue
            entry["snapshots"] = len(listing)
            if not listing:
                out.fail("the repository holds no snapshots of this policy: nothing to verify", target.name)
                continue
            newest = _newest(listing)
            entry["snapshot_id"] = newest.get("id")
            if not done.ok:
                out.fail(f"integrity check failed, {done.reason()}", target.name)
            else:
                log.info("target %s: check of %s of the data found no errors", target.name, read_data_subset)
        return out.result()

    def restore(self, target: Target, destination: str, snapshot: str = "latest", include: str | None = None) -> Result:
        """Restore ``snapshot`` (default: the newest of this policy) into ``destination`` with restic --verify,
        then check every file of the snapshot is there with its size. As restic 0.14 does, a snapshot of /data/x
        lands in DESTINATION/data/x; files already in ``destination`` are overwritten, other files are kept.
        ``include`` (e.g. /data/x) restores only that path and its parent folders."""
        out = _Outcome("restore", self._redact)
        self._remember(target)
        self._restore(target, destination, snapshot, exact=False, out=out, include=include)
        return out.result()

    def drill(self, target: Target, scratch: str, keep: bool = False) -> Result:
        """A restore test: restore the newest snapshot into a fresh folder under ``scratch``, verify restic's
        content hashes (--verify) and that the restored tree is exactly the snapshot's file list with its sizes,
        and record restore_seconds (the measured recovery time). The folder is removed unless ``keep``."""
        out = _Outcome("drill", self._redact)
        self._remember(target)
        try:
            os.makedirs(scratch, exist_ok=True)
            work = tempfile.mkdtemp(prefix="iotsec-drill-", dir=scratch)
        except OSError as exc:
            out.entry(target.name)
            out.fail(f"cannot create a folder in scratch {scratch}: {exc.strerror}", target.name)
            return out.result()
        try:
            self._restore(target, work, "latest", exact=True, out=out)
        finally:
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
        return out.result()

    # -- steps ---------------------------------------------------------------------------------------------------

    def _backup_primary(
        self, primary: Target, sources: list[str], expect_data: bool, when: datetime | str | None, out: _Outcome
    ) -> str | None:
        entry = out.entry(primary.name)
        args = ["backup", "--json", "--quiet"]
        for tag in (*self.tags, *self.snapshot_tags):
            args += ["--tag", tag]
        if self.host:
            args += ["--host", self.host]
        if when is not None:
            args += ["--time", _restic_time(when)]
        done = self._restic(primary, *args, *sources)
        summary, unread = _backup_messages(done)
        if summary is not None:
            entry["snapshot_id"] = summary.get("snapshot_id")
            entry["files"] = summary.get("total_files_processed")
            entry["bytes"] = summary.get("total_bytes_processed")
        if done.returncode == RESTIC_INCOMPLETE:
            listed = "; ".join(unread[:_MAX_ITEMS]) + (
                f" and {len(unread) - _MAX_ITEMS} more" if len(unread) > _MAX_ITEMS else ""
            )
            count = len(unread) or "some"
            problem = f"backup incomplete: restic could not read {count} source file(s): {listed or done.reason()}"
        elif not done.ok:
            problem = f"backup failed, {done.reason()}"
        elif summary is None or not summary.get("snapshot_id"):
            problem = "restic reported no snapshot (no summary in its output)"
        elif expect_data and not (entry["files"] and entry["bytes"]):
            problem = (
                f"backup is empty: {entry['files'] or 0} files and {entry['bytes'] or 0} bytes processed in "
                f"{', '.join(sources)}; an empty backup is not reported as success (expect_data=false allows it)"
            )
        else:
            problem = None
        if problem is not None:
            if summary is not None and summary.get("snapshot_id"):
                problem += self._discard(primary, summary["snapshot_id"])
                entry["snapshot_id"] = None
            out.fail(problem, primary.name)
            return None
        log.info(
            "target %s: snapshot %s of %s: %s files, %s bytes",
            primary.name,
            summary["snapshot_id"],
            ", ".join(sources),
            entry["files"],
            entry["bytes"],
        )
        return summary["snapshot_id"]

    def _confirm(self, primary: Target, snapshot_id: str, listing: list[dict] | None, out: _Outcome) -> dict | None:
        """The new snapshot as listed by the repository (not just as reported by `restic backup`)."""
        if listing is None:
            return None
        snapshot = _find(listing, snapshot_id)
        if snapshot is None:
            out.fail(f"snapshot {snapshot_id} is not in the repository after the backup", primary.name)
            return None
        out.entry(primary.name)["snapshot_id"] = snapshot["id"]
        return snapshot

    def _forget(self, target: Target, retention: Retention, out: _Outcome) -> list[dict] | None:
        """Apply retention to this policy's snapshots; returns the snapshots kept (None if unknown)."""
        args = ["forget", "--json", "--prune", "--group-by", GROUP_BY, *self._tag_filter(), *retention.flags()]
        done = self._restic(target, *args)
        if not done.ok:
            out.fail(f"retention (restic forget --prune) failed, {done.reason()}", target.name)
            return None
        for line in done.stdout.splitlines():  # the JSON groups, then prune's plain-text report
            if line.startswith("["):
                try:
                    groups = json.loads(line) or []
                    return [snap for group in groups for snap in group.get("keep") or []]
                except (json.JSONDecodeError, AttributeError):
                    break
        return self._snapshots(target, out)

    def _discard(self, target: Target, snapshot_id: str) -> str:
        """Forget a rejected snapshot so that it is neither "latest" nor counted by retention."""
        done = self._restic(target, "forget", snapshot_id)
        if done.ok:
            return f" (snapshot {snapshot_id} was discarded)"
        return f" (and discarding snapshot {snapshot_id} failed, {done.reason()})"

    def _copy(self, primary: Target, offsite: Target, snapshot: dict, out: _Outcome) -> list[dict] | None:
        entry = out.entry(offsite.name)
        done = self._restic(offsite, "copy", snapshot["id"], source=primary)
        if not done.ok:
            out.fail(f"off-site copy failed, {done.reason()}", offsite.name)
            return None
        listing = self._snapshots(offsite, out)
        if listing is None:
            return None
        copied = next((snap for snap in listing if snapshot["id"] in (snap.get("original"), snap.get("id"))), None)
        if copied is None:
            out.fail(f"snapshot {snapshot['id'][:8]} is not in the off-site repository after the copy", offsite.name)
            return None
        if copied.get("tree") != snapshot.get("tree"):
            out.fail(
                f"the off-site copy {copied['id'][:8]} has a different tree than the primary snapshot", offsite.name
            )
            return None
        primary_entry = out.entry(primary.name)
        entry.update(snapshot_id=copied["id"], files=primary_entry["files"], bytes=primary_entry["bytes"])
        entry["snapshots"] = len(listing)
        log.info("target %s: copied snapshot %s as %s", offsite.name, snapshot["id"][:8], copied["id"][:8])
        return listing

    def _restore(
        self, target: Target, destination: str, snapshot: str, *, exact: bool, out: _Outcome, include: str | None = None
    ) -> None:
        entry = out.entry(target.name)
        listed = self._ls(target, snapshot, out)
        if listed is None:
            return
        chosen, nodes = listed
        if include:
            nodes = _within(nodes, include)
            if not any(path == include.rstrip("/") for path in nodes):
                out.fail(f"snapshot {chosen['id'][:8]} holds no {include}", target.name)
                return
        entry["snapshot_id"] = chosen["id"]
        entry["files"] = sum(1 for node in nodes.values() if node.get("type") == "file")
        entry["bytes"] = sum(node.get("size", 0) for node in nodes.values() if node.get("type") == "file")
        try:
            os.makedirs(destination, exist_ok=True)
        except OSError as exc:
            out.fail(f"cannot create destination {destination}: {exc.strerror}", target.name)
            return
        clock = monotonic()
        only = ["--include", include] if include else []
        done = self._restic(target, "restore", chosen["id"], "--target", destination, "--verify", *only)
        out.restore_seconds = max(round(monotonic() - clock, 3), 0.001)
        if not done.ok:
            out.fail(f"restore of {chosen['id'][:8]} failed, {done.reason()}", target.name)
            return
        problems = _compare(nodes, destination, exact=exact)
        if problems:
            more = f" and {len(problems) - _MAX_ITEMS} more" if len(problems) > _MAX_ITEMS else ""
            out.fail(
                f"restored files differ from snapshot {chosen['id'][:8]}: {'; '.join(problems[:_MAX_ITEMS])}{more}",
                target.name,
            )
            return
        log.info(
            "target %s: restored snapshot %s (%s files, %s bytes) into %s in %.3f s",
            target.name,
            chosen["id"][:8],
            entry["files"],
            entry["bytes"],
            destination,
            out.restore_seconds,
        )

    def _snapshots(self, target: Target, out: _Outcome, lock: bool = True) -> list[dict] | None:
        """This policy's snapshots (its tags, and its host if set)."""
        args = ["snapshots", "--json", *([] if lock else ["--no-lock"]), *self._tag_filter()]
        if self.host:
            args += ["--host", self.host]
        done = self._restic(target, *args)
        if not done.ok:
            out.fail(f"cannot list snapshots, {done.reason()}", target.name)
            return None
        try:
            listing = json.loads(done.stdout or "null") or []
        except json.JSONDecodeError:
            out.fail("restic snapshots printed no JSON", target.name)
            return None
        return [snap for snap in listing if isinstance(snap, dict)]

    def _ls(self, target: Target, snapshot: str, out: _Outcome) -> tuple[dict, dict[str, dict]] | None:
        """The snapshot ("latest": the newest of this policy) and its entries by path."""
        args = ["ls", "--json", snapshot]
        if snapshot == "latest":
            args += self._tag_filter() + (["--host", self.host] if self.host else [])
        done = self._restic(target, *args)
        if not done.ok:
            out.fail(f"cannot list snapshot {snapshot} of this policy, {done.reason()}", target.name)
            return None
        chosen, nodes = None, {}
        for line in done.stdout.splitlines():
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
        if chosen is None or not chosen.get("id"):
            out.fail(f"restic ls printed no snapshot for {snapshot}", target.name)
            return None
        return chosen, nodes

    def _hook(self, label: str, argv: Sequence[str], out: _Outcome) -> bool:
        if isinstance(argv, str) or not argv or not all(isinstance(arg, str) for arg in argv):
            out.fail(f"{label} must be a non-empty argument list, not {argv!r}")
            return False
        env = {key: value for key, value in os.environ.items() if key not in _SECRET_ENV}
        log.info("running %s: %s", label, self._redact(shlex.join(argv)))
        try:
            proc = self._spawn(list(argv), env)
        except subprocess.TimeoutExpired:
            out.fail(f"{label} {argv[0]} did not finish within {self.timeout:g} s")
            return False
        except OSError as exc:
            out.fail(f"{label} {argv[0]} could not run: {exc.strerror}")
            return False
        if proc.returncode != 0:
            out.fail(f"{label} {argv[0]} failed, {_Done(list(argv), proc.returncode, '', proc.stderr).reason()}")
            return False
        return True

    # -- restic plumbing -----------------------------------------------------------------------------------------

    def _restic(self, target: Target, *args: str, source: Target | None = None) -> _Done:
        argv = [self.restic, *(["--cache-dir", self.cache_dir] if self.cache_dir else []), *args]
        env = {key: value for key, value in os.environ.items() if key not in _SECRET_ENV}
        if source is not None:
            env.update(source.env)
            env["RESTIC_FROM_REPOSITORY"] = source.repository
            env["RESTIC_FROM_PASSWORD"] = self._password
        env.update(target.env)
        env["RESTIC_REPOSITORY"] = target.repository
        env["RESTIC_PASSWORD"] = self._password
        log.debug("target %s: %s", target.name, self._redact(shlex.join(argv)))
        try:
            proc = self._spawn(argv, env)
        except subprocess.TimeoutExpired:
            return _Done(argv, None, "", f"restic {args[0]} did not finish within {self.timeout:g} s")
        except OSError as exc:
            return _Done(argv, None, "", f"cannot run {self.restic}: {exc.strerror}")
        return _Done(argv, proc.returncode, proc.stdout, self._redact(proc.stderr))

    def _spawn(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """Run to completion without a terminal or stdin, within the timeout; raises TimeoutExpired or OSError."""
        return subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=self.timeout,
            check=False,
        )

    def _tag_filter(self) -> list[str]:
        return ["--tag", ",".join(self.tags)] if self.tags else []

    def _remember(self, *targets: Target | None) -> None:
        for target in targets:
            if target is not None:
                self._secrets.update(value for value in target.env.values() if len(value) >= 4)

    def _redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return _URL_USERINFO.sub("***@", text)


# -- helpers -----------------------------------------------------------------------------------------------------


def _split_targets(targets: Sequence[Target]) -> tuple[Target, list[Target]]:
    names = [target.name for target in targets]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"target names must be unique: {', '.join(duplicates)}")
    primaries = [target for target in targets if target.role == "primary"]
    if len(primaries) != 1:
        raise ValueError(f"exactly one target must have role primary, found {len(primaries)}")
    return primaries[0], [target for target in targets if target.role == "offsite"]


def _backup_messages(done: _Done) -> tuple[dict | None, list[str]]:
    """The summary of `restic backup --json` and the files it could not read."""
    summary, unread = None, []
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
            error = message.get("error")
            if isinstance(error, dict) and isinstance(error.get("Err"), int):
                detail = os.strerror(error["Err"])
            else:
                detail = str(error)
            unread.append(f"{message.get('item', '?')}: {detail}")
    return summary, unread


def _within(nodes: Mapping[str, dict], include: str) -> dict[str, dict]:
    """The entries `restic restore --include PATH` writes: PATH, everything under it, and its parent folders."""
    include = "/" + include.strip("/")
    parents = {include.rsplit("/", depth)[0] or "/" for depth in range(1, include.count("/"))}
    return {
        path: node
        for path, node in nodes.items()
        if path == include or path.startswith(include + "/") or path in parents
    }


def _compare(nodes: Mapping[str, dict], root: str, *, exact: bool) -> list[str]:
    """Differences between a snapshot's file list and a restored tree (type and size of every entry)."""
    problems = []
    for path, node in nodes.items():
        if node.get("type") == "socket":  # restic does not restore sockets
            continue
        local = os.path.join(root, path.lstrip("/"))
        try:
            info = os.lstat(local)
        except OSError:
            problems.append(f"{path} is missing")
            continue
        kind = _kind(info.st_mode)
        if kind != node.get("type"):
            problems.append(f"{path} is a {kind}, the snapshot has a {node.get('type')}")
        elif kind == "file" and info.st_size != node.get("size", 0):
            problems.append(f"{path} has {info.st_size} bytes, the snapshot {node.get('size', 0)}")
    if exact:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = "/" + os.path.relpath(os.path.join(folder, name), root)
                if path not in nodes:
                    problems.append(f"{path} is not in the snapshot")
    return problems


def _kind(mode: int) -> str:
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "unknown")


def _subset_problem(subset: str) -> str | None:
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


def _find(listing: Sequence[dict], snapshot_id: str) -> dict | None:
    return next((snap for snap in listing if snap.get("id", "").startswith(snapshot_id)), None)


def _newest(listing: Sequence[dict]) -> dict:
    return max(listing, key=lambda snap: _parse_time(snap.get("time", "")))


def _parse_time(value: str) -> datetime:
    """restic's RFC 3339 times carry nanoseconds, which datetime does not parse."""
    value = re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def _restic_time(value: datetime | str) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone()  # restic reads --time as local time
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return value


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- command line ------------------------------------------------------------------------------------------------


class ConfigError(ValueError):
    """The Job's configuration or password is unusable (exit code 2)."""


@dataclass
class _Config:
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


_CONFIG_KEYS = {item.name for item in fields(_Config)}
_RETENTION_KEYS = {item.name for item in fields(Retention)}


def _snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def _load_config(path: str, operation: str, overrides: dict[str, str] | None = None) -> _Config:
    """Read CONFIG.json; ``overrides`` (from the command line) win over its keys."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    data = {_snake(key): value for key, value in raw.items()}
    data.update({key: value for key, value in (overrides or {}).items() if value is not None})
    unknown = sorted(set(data) - _CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_CONFIG_KEYS))}")

    def strings(key: str, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise ConfigError(f"{key} must be a list of non-empty strings")
        return value

    def text(key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key} must be a non-empty string")
        return value

    if not isinstance(data.get("targets"), list) or not data["targets"]:
        raise ConfigError("targets must be a non-empty list of {name, repository, role}")
    targets = []
    for index, item in enumerate(data["targets"]):
        if not isinstance(item, dict):
            raise ConfigError(f"targets[{index}] must be an object")
        item = {_snake(key): value for key, value in item.items()}
        extra = sorted(set(item) - {"name", "repository", "role", "env"})
        if extra:
            raise ConfigError(f"targets[{index}]: unknown key(s) {', '.join(extra)}")
        env = item.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise ConfigError(f"targets[{index}].env must map names to strings")
        try:
            targets.append(
                Target(
                    name=text(f"targets[{index}].name", item.get("name")),
                    repository=text(f"targets[{index}].repository", item.get("repository")),
                    role=item.get("role", "primary"),
                    env=env,
                )
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    config = _Config(targets=targets)
    if operation in ("init", "backup"):
        try:
            _split_targets(targets)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    names = [target.name for target in targets]
    if len(set(names)) != len(names):
        raise ConfigError("target names must be unique")

    if "paths" in data:
        config.paths = strings("paths", data["paths"])
    if "tags" in data:
        config.tags = strings("tags", data["tags"])
    if "snapshot_tags" in data:
        config.snapshot_tags = strings("snapshot_tags", data["snapshot_tags"])
    for key in ("pre_hook", "post_hook"):
        if data.get(key) is not None:
            setattr(config, key, strings(key, data[key]))
    for key in (
        "host",
        "destination",
        "scratch",
        "snapshot",
        "target",
        "include",
        "cache_dir",
        "restic",
        "read_data_subset",
    ):
        if data.get(key) is not None:
            setattr(config, key, text(key, data[key]))
    if "expect_data" in data:
        if not isinstance(data["expect_data"], bool):
            raise ConfigError("expect_data must be true or false")
        config.expect_data = data["expect_data"]
    if "timeout" in data:
        timeout = data["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError("timeout must be a positive number of seconds")
        config.timeout = float(timeout)
    if data.get("retention") is not None:
        if not isinstance(data["retention"], dict):
            raise ConfigError("retention must be an object like {keep_daily: 7}")
        retention = {_snake(key): value for key, value in data["retention"].items()}
        extra = sorted(set(retention) - _RETENTION_KEYS)
        if extra:
            raise ConfigError(
                f"retention: unknown key(s) {', '.join(extra)}; known: {', '.join(sorted(_RETENTION_KEYS))}"
            )
        try:
            config.retention = Retention(**retention)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    if operation == "backup" and not config.paths:
        raise ConfigError("backup needs paths: the folders to back up")
    if operation == "verify":
        problem = _subset_problem(config.read_data_subset)
        if problem:
            raise ConfigError(problem)
    if operation == "restore" and not config.destination:
        raise ConfigError("restore needs a destination folder")
    if operation == "drill" and not (config.scratch or config.destination):
        raise ConfigError("drill needs a scratch folder")
    if operation in ("restore", "drill"):
        if config.target is None:
            primaries = [target.name for target in targets if target.role == "primary"]
            if len(primaries) != 1:
                raise ConfigError("name the target to restore from (target) or give exactly one primary")
            config.target = primaries[0]
        elif config.target not in names:
            raise ConfigError(f"target {config.target!r} is not one of the targets ({', '.join(names)})")
    return config


def _read_password(password_file: str | None) -> str:
    if password_file:
        try:
            with open(password_file, encoding="utf-8") as handle:
                password = handle.read().strip()  # as restic's --password-file does
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read the password file {password_file}: {getattr(exc, 'strerror', exc)}"
            ) from None
    else:
        password = os.environ.get("RESTIC_PASSWORD", "")
    if not password:
        raise ConfigError("no repository password: set RESTIC_PASSWORD or pass --password-file")
    return password


def _run(operation: str, config: _Config, runner: Runner) -> Result:
    targets = {target.name: target for target in config.targets}
    if operation == "init":
        return runner.init_targets(config.targets)
    if operation == "backup":
        return runner.backup(
            config.paths,
            config.targets,
            config.retention,
            expect_data=config.expect_data,
            pre_hook=config.pre_hook,
            post_hook=config.post_hook,
        )
    if operation == "verify":
        return runner.verify(config.targets, config.read_data_subset)
    assert config.target is not None
    if operation == "restore":
        assert config.destination is not None
        return runner.restore(targets[config.target], config.destination, config.snapshot, config.include)
    scratch = config.scratch or config.destination
    assert scratch is not None
    return runner.drill(targets[config.target], scratch)


def _write(path: str | None, text: str) -> None:
    """Replace ``path`` atomically, or write it in place when it is a file the kubelet mounted
    (/dev/termination-log: its folder is not ours and a bind-mounted file cannot be renamed over)."""
    if not path:
        return
    if os.path.isfile(path) and not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        _write_in_place(path, text)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, encoding="utf-8") as handle:
        handle.write(text + "\n")
    try:
        os.replace(handle.name, path)
    except OSError:  # EBUSY: a bind mount
        os.unlink(handle.name)
        _write_in_place(path, text)


def _write_in_place(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m iotsec.servers.backupjob.runner",
        description="Run one restic operation of a BackupPolicy and write its result as JSON.",
    )
    parser.add_argument("operation", choices=OPERATIONS)
    parser.add_argument("--config", required=True, metavar="CONFIG.json", help="paths, targets, retention, ...")
    parser.add_argument("--result", metavar="RESULT.json", help="where to write the result (also printed)")
    parser.add_argument("--password-file", metavar="FILE", help="repository password (default: $RESTIC_PASSWORD)")
    parser.add_argument("--snapshot", help="restore: the snapshot id (default: the config's, else latest)")
    parser.add_argument("--destination", metavar="DIR", help="restore: the folder to restore into")
    parser.add_argument("--include", metavar="PATH", help="restore: only this path of the snapshot, e.g. /data/CLAIM")
    parser.add_argument("--target", help="restore/drill: the target to read from (default: the primary)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every restic command")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code in (0, None) else EXIT_CONFIG
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")

    started = datetime.now(UTC)
    try:
        overrides = {
            "snapshot": args.snapshot,
            "destination": args.destination,
            "target": args.target,
            "include": args.include,
        }
        config = _load_config(args.config, args.operation, overrides)
        password = _read_password(args.password_file)
        try:
            runner = Runner(
                password,
                restic=config.restic,
                timeout=config.timeout,
                tags=config.tags,
                snapshot_tags=config.snapshot_tags,
                host=config.host,
                cache_dir=config.cache_dir,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
    except ConfigError as exc:
        message = f"bad config: {exc}"
        print(f"iotsec backup: {message}", file=sys.stderr)
        stamp = _rfc3339(started)
        failed = Result(args.operation, False, stamp, _rfc3339(datetime.now(UTC)), 0.0, [], [message])
        with contextlib.suppress(OSError):
            _write(args.result, failed.to_message())
        return EXIT_CONFIG

    result = _run(args.operation, config, runner)
    try:
        _write(args.result, result.to_message())
    except OSError as exc:
        result.succeeded = False
        result.errors.append(f"cannot write the result to {args.result}: {exc.strerror}")
    print(result.to_json())
    for error in result.errors:
        log.error("%s", error)
    return EXIT_OK if result.succeeded else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
