"""The five operations of a BackupPolicy Job over one Runner: init, backup, verify, restore and drill.

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
Repositories are never created implicitly: a missing repository is an error (it may well be an unmounted volume),
``init`` creates them. Hooks run without any restic secret in their environment.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from time import monotonic

from iotsec.model.time import parse_rfc3339
from iotsec.servers.backupjob.restic import (
    RESTIC_INCOMPLETE,
    Completed,
    Restic,
    ResticError,
    Retention,
    Target,
    backup_messages,
    environment_without_secrets,
    forget_kept,
    ls_entries,
    snapshot_list,
    spawn,
    split_targets,
    subset_problem,
)
from iotsec.servers.backupjob.result import OperationOutcome, Result
from iotsec.servers.backupjob.sftp import HOST_KEY_FAILED

log = logging.getLogger(__package__)

GROUP_BY = "paths,tags"  # not host: a Job's host name is its pod name, different on every run
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
        self.restic = Restic(password, restic, timeout, cache_dir)
        self.tags = tuple(tags)
        self.snapshot_tags = tuple(snapshot_tags)
        self.host = host

    def _outcome(self, operation: str) -> OperationOutcome:
        """A new outcome; it has failed already, with one line, if the restic binary cannot be found."""
        out = OperationOutcome(operation, self.restic.redact)
        missing = self.restic.missing()
        if missing is not None:
            out.fail(missing)
        return out

    # -- operations ----------------------------------------------------------------------------------------------

    def init(self, target: Target, chunker_from: Target | None = None) -> None:
        """Create the repository unless `restic cat config` shows it exists; off-site copies share the chunker
        parameters of ``chunker_from`` (the primary) so that `restic copy` keeps deduplicating. A ResticError's
        message does not name the target: whoever reports it does, once."""
        self.restic.remember(target, chunker_from)
        done = self.restic.run(target, "cat", "config")
        if done.ok:
            return
        if "wrong password" in done.stderr:
            raise ResticError(self.restic.redact(f"repository exists but {done.reason()}"))
        if HOST_KEY_FAILED in done.stderr:  # never initialise anything on a server that is not the one we know
            raise ResticError(self.restic.redact(done.reason()))
        args = ["init"] + (["--copy-chunker-params"] if chunker_from is not None else [])
        done = self.restic.run(target, *args, source=chunker_from)
        if not done.ok:
            raise ResticError(self.restic.redact(f"cannot initialise {target.repository}: {done.reason()}"))
        log.info("initialised repository of target %s", target.name)

    def init_targets(self, targets: Sequence[Target]) -> Result:
        """`init` for every target: the primary first, then the off-site copies with its chunker parameters."""
        out = self._outcome("init")
        if out.errors:
            return out.result()
        try:
            primary, offsites = split_targets(targets)
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
        out = self._outcome("backup")
        if out.errors:
            return out.result()
        try:
            primary, offsites = split_targets(targets)
        except ValueError as exc:
            out.fail(str(exc))
            return out.result()
        self.restic.remember(*targets)
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
        out = self._outcome("verify")
        if out.errors:
            return out.result()
        problem = subset_problem(read_data_subset)
        if problem:
            out.fail(problem)
            return out.result()
        if not targets:
            out.fail("no targets to verify")
        self.restic.remember(*targets)
        for target in targets:
            entry = out.entry(target.name)
            # The listing runs beside the check (lock-free, read-only): each restic process spends ~0.5 s deriving
            # the key, which otherwise doubles the time of a small verify.
            with ThreadPoolExecutor(max_workers=1) as pool:
                listed = pool.submit(self._snapshots, target, out, lock=False)
                done = self.restic.run(target, "check", f"--read-data-subset={read_data_subset}")
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
        out = self._outcome("restore")
        if out.errors:
            return out.result()
        self.restic.remember(target)
        self._restore(target, destination, snapshot, exact=False, out=out, include=include)
        return out.result()

    def drill(self, target: Target, scratch: str, keep: bool = False) -> Result:
        """A restore test: restore the newest snapshot into a fresh folder under ``scratch``, verify restic's
        content hashes (--verify) and that the restored tree is exactly the snapshot's file list with its sizes,
        and record restore_seconds (the measured recovery time). The folder is removed unless ``keep``."""
        out = self._outcome("drill")
        if out.errors:
            return out.result()
        self.restic.remember(target)
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

    # -- backup steps --------------------------------------------------------------------------------------------

    def _backup_primary(
        self, primary: Target, sources: list[str], expect_data: bool, when: datetime | str | None, out: OperationOutcome
    ) -> str | None:
        entry = out.entry(primary.name)
        args = ["backup", "--json", "--quiet"]
        for tag in (*self.tags, *self.snapshot_tags):
            args += ["--tag", tag]
        if self.host:
            args += ["--host", self.host]
        if when is not None:
            args += ["--time", _restic_time(when)]
        done = self.restic.run(primary, *args, *sources)
        summary, unread = backup_messages(done)
        if summary is not None:
            entry["snapshot_id"] = summary.get("snapshot_id")
            entry["files"] = summary.get("total_files_processed")
            entry["bytes"] = summary.get("total_bytes_processed")
        if done.returncode == RESTIC_INCOMPLETE:
            listed = "; ".join(unread[:_MAX_ITEMS]) + (
                f" and {len(unread) - _MAX_ITEMS} more" if len(unread) > _MAX_ITEMS else ""
            )
            count = f"{len(unread)} source path{'s' if len(unread) > 1 else ''}" if unread else "some source files"
            problem = f"backup incomplete: restic could not read {count}: {listed or done.reason()}"
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

    def _confirm(
        self, primary: Target, snapshot_id: str, listing: list[dict] | None, out: OperationOutcome
    ) -> dict | None:
        """The new snapshot as listed by the repository (not just as reported by `restic backup`)."""
        if listing is None:
            return None
        snapshot = _find(listing, snapshot_id)
        if snapshot is None:
            out.fail(f"snapshot {snapshot_id} is not in the repository after the backup", primary.name)
            return None
        out.entry(primary.name)["snapshot_id"] = snapshot["id"]
        return snapshot

    def _forget(self, target: Target, retention: Retention, out: OperationOutcome) -> list[dict] | None:
        """Apply retention to this policy's snapshots; returns the snapshots kept (None if unknown)."""
        args = ["forget", "--json", "--prune", "--group-by", GROUP_BY, *self._tag_filter(), *retention.flags()]
        done = self.restic.run(target, *args)
        if not done.ok:
            out.fail(f"retention (restic forget --prune) failed, {done.reason()}", target.name)
            return None
        kept = forget_kept(done.stdout)
        return kept if kept is not None else self._snapshots(target, out)

    def _discard(self, target: Target, snapshot_id: str) -> str:
        """Forget a rejected snapshot so that it is neither "latest" nor counted by retention."""
        done = self.restic.run(target, "forget", snapshot_id)
        if done.ok:
            return f" (snapshot {snapshot_id} was discarded)"
        return f" (and discarding snapshot {snapshot_id} failed, {done.reason()})"

    def _copy(self, primary: Target, offsite: Target, snapshot: dict, out: OperationOutcome) -> list[dict] | None:
        entry = out.entry(offsite.name)
        done = self.restic.run(offsite, "copy", snapshot["id"], source=primary)
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

    def _hook(self, label: str, argv: Sequence[str], out: OperationOutcome) -> bool:
        if isinstance(argv, str) or not argv or not all(isinstance(arg, str) for arg in argv):
            out.fail(f"{label} must be a non-empty argument list, not {argv!r}")
            return False
        log.info("running %s: %s", label, self.restic.redact(shlex.join(argv)))
        try:
            proc = spawn(list(argv), environment_without_secrets(), self.restic.timeout)
        except subprocess.TimeoutExpired:
            out.fail(f"{label} {argv[0]} did not finish within {self.restic.timeout:g} s")
            return False
        except OSError as exc:
            out.fail(f"{label} {argv[0]} could not run: {exc.strerror}")
            return False
        if proc.returncode != 0:
            out.fail(f"{label} {argv[0]} failed, {Completed(list(argv), proc.returncode, '', proc.stderr).reason()}")
            return False
        return True

    # -- restore steps -------------------------------------------------------------------------------------------

    def _restore(
        self,
        target: Target,
        destination: str,
        snapshot: str,
        *,
        exact: bool,
        out: OperationOutcome,
        include: str | None = None,
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
        done = self.restic.run(target, "restore", chosen["id"], "--target", destination, "--verify", *only)
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

    def _ls(self, target: Target, snapshot: str, out: OperationOutcome) -> tuple[dict, dict[str, dict]] | None:
        """The snapshot ("latest": the newest of this policy) and its entries by path."""
        args = ["ls", "--json", snapshot]
        if snapshot == "latest":
            args += self._tag_filter() + (["--host", self.host] if self.host else [])
        done = self.restic.run(target, *args)
        if not done.ok:
            out.fail(f"cannot list snapshot {snapshot} of this policy, {done.reason()}", target.name)
            return None
        chosen, nodes = ls_entries(done.stdout)
        if chosen is None or not chosen.get("id"):
            out.fail(f"restic ls printed no snapshot for {snapshot}", target.name)
            return None
        return chosen, nodes

    # -- this policy's snapshots ---------------------------------------------------------------------------------

    def _snapshots(self, target: Target, out: OperationOutcome, lock: bool = True) -> list[dict] | None:
        """This policy's snapshots (its tags, and its host if set)."""
        args = ["snapshots", "--json", *([] if lock else ["--no-lock"]), *self._tag_filter()]
        if self.host:
            args += ["--host", self.host]
        done = self.restic.run(target, *args)
        if not done.ok:
            out.fail(f"cannot list snapshots, {done.reason()}", target.name)
            return None
        try:
            return snapshot_list(done.stdout)
        except ValueError:
            out.fail("restic snapshots printed no JSON", target.name)
            return None

    def _tag_filter(self) -> list[str]:
        return ["--tag", ",".join(self.tags)] if self.tags else []


# -- helpers -----------------------------------------------------------------------------------------------------


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


def _find(listing: Sequence[dict], snapshot_id: str) -> dict | None:
    return next((snap for snap in listing if snap.get("id", "").startswith(snapshot_id)), None)


def _newest(listing: Sequence[dict]) -> dict:
    return max(listing, key=_taken)


def _taken(snapshot: dict) -> datetime:
    """When restic took ``snapshot``; the earliest time if its stamp is unreadable, so it is never the newest."""
    try:
        return parse_rfc3339(snapshot.get("time", ""))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def _restic_time(value: datetime | str) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone()  # restic reads --time as local time
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return value
