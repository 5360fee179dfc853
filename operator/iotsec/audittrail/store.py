"""The audit store: records appended to segment files in a hash chain, each closed segment signed.

Never loses what it accepted and never drops silently (X1369-9.6.4-2): a batch is written and fsynced before
`append` returns, a batch that would pass the limit is refused whole with `StoreFullError` (the sink answers 503
and the API server keeps it in its buffer and retries), and a write the disk refuses midway is rolled back
to the last whole record. Retention deletes only sealed segments that were exported or backed up, and leaves
a signed tombstone so verification knows where the remaining chain starts (X1369-9.6.4-5).

Each batch is followed, in the same write and fsync, by a checkpoint signed with the store's key, so records
of the open segment are protected before it is sealed: at start (and before sealing) the open segment must end
at a valid checkpoint. Records after the last one were never acknowledged and are cut off; records that
disagree with a checkpoint, or corrupt ones it covers, were written without the key: the file is set aside in
`quarantine/` (never deleted), the checkpoint-verified prefix continues in a new segment, and verify reports
the break until someone removes the quarantined file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from iotsec.audittrail import chain
from iotsec.audittrail.scan import FORMAT, FORMAT_FILE, Entry, Fault, Scan, lines, marked, scan_segment

log = logging.getLogger(__name__)
LEGACY = "written before checkpoints existed: sealed as found when the store was opened with checkpoints"
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class StoreFullError(Exception):
    """A batch was refused because it would pass the store's limit; nothing of it was written."""


@dataclass(frozen=True)
class Appended:
    records: int
    first_seq: int
    last_seq: int
    head: str


@dataclass(frozen=True)
class Usage:
    bytes_used: int
    bytes_limit: int
    records: int
    segments: int
    head: str
    last_sealed: dict[str, Any] | None
    head_seq: int = 0

    @property
    def percent(self) -> float:
        return round(min(100.0, 100.0 * self.bytes_used / self.bytes_limit), 2) if self.bytes_limit else 0.0


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Open:
    """The segment being written: what its seal will say, kept up to date so sealing reads nothing back."""

    path: Path
    started: datetime
    start_seq: int = 1
    start_prev: str = chain.GENESIS
    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    records: int = 0
    checkpoints: int = 0
    first_seq: int = 0
    prev_head: str = chain.GENESIS
    first_time: str = ""
    last_time: str = ""

    def add(self, payload: bytes, records: int, first_seq: int, moment: str, checkpoints: int = 1) -> None:
        if not self.records:
            self.first_seq, self.prev_head, self.first_time = first_seq, self.start_prev, moment
        self.digest.update(payload)
        self.size += len(payload)
        self.records += records
        self.checkpoints += checkpoints
        self.last_time = moment


def _fsync_dir(folder: Path) -> None:
    """Make a new or renamed file's directory entry durable, not only its bytes."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class AuditStore:
    """One directory of segments. Not thread-safe: the sink serialises calls."""

    def __init__(
        self,
        root: Path,
        key: Ed25519PrivateKey,
        *,
        limit_bytes: int,
        segment_bytes: int = 64 * 2**20,
        segment_max_age: timedelta = timedelta(hours=1),
        reserve_bytes: int = 64 * 1024,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.root = root
        self._key = key
        self.limit_bytes = limit_bytes
        self.segment_bytes = segment_bytes
        self.segment_max_age = segment_max_age
        self.reserve_bytes = reserve_bytes
        self._clock = clock
        self._key_id = chain.key_id(key.public_key())
        self.on_quarantine: Callable[[str], None] | None = None  # told what was set aside, while running too
        self.quarantined: str | None = None  # the last segment set aside, and why
        (root / chain.SEGMENTS).mkdir(parents=True, exist_ok=True)
        self._write_public_key()
        self._marked = marked(root)  # read before recovery: it decides whether a checkpoint-less segment is legacy
        self._recover()
        if not self._marked:
            self._write_format()

    @property
    def public_key(self) -> Any:
        return self._key.public_key()

    # ------------------------------------------------------------------ state
    def _write_public_key(self) -> None:
        pem = chain.public_pem(self._key.public_key())
        path = self.root / chain.PUBLIC_KEY
        if not path.exists() or path.read_bytes() != pem:
            path.write_bytes(pem)

    def _write_format(self) -> None:
        """From now on every batch gets a checkpoint: say so, durably, before the first one is written."""
        body = {"format": FORMAT, "writtenAt": chain.timestamp(self._clock()), "keyID": self._key_id}
        encoded = json.dumps(chain.sign(body, self._key), indent=1, sort_keys=True).encode()
        _durable_write(self.root / FORMAT_FILE, encoded)
        self._marked = True
        self.bytes_used += len(encoded)

    def _recover(self) -> None:
        """Find the head and the open segment; cut a record half-written by a crash; finish a retention run a
        crash interrupted (its tombstone was written, some of its segments not yet deleted)."""
        for leftover in self.root.rglob("*.tmp"):
            leftover.unlink()
        self.records = 0
        self.head, self.next_seq = chain.GENESIS, 1
        self.last_sealed: dict[str, Any] | None = None
        tombstone = chain.read_json(self.root / chain.TOMBSTONE)
        if tombstone:
            self.head, self.next_seq = tombstone["head"], tombstone["lastSeq"] + 1
            self._delete_covered(tombstone["lastSeq"])
        self._recount()
        self.segment_count = len(chain.segment_files(self.root))
        for segment in chain.segment_files(self.root):
            sealed = chain.read_json(chain.seal_path(segment))
            if sealed:
                self.head, self.next_seq = sealed["head"], sealed["lastSeq"] + 1
                self.records += sealed["records"]
                self.last_sealed = sealed
        self._open: _Open | None = None
        files = chain.segment_files(self.root)
        if files and not chain.seal_path(files[-1]).exists():
            self._resume(files[-1], self.next_seq, self.head, legacy_allowed=True)

    def _recount(self) -> None:
        self.bytes_used = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def _delete_covered(self, last_seq: int) -> None:
        for segment in chain.segment_files(self.root):
            sealed = chain.read_json(chain.seal_path(segment))
            if sealed and sealed.get("lastSeq", last_seq + 1) <= last_seq:
                log.info("audit store: finishing an interrupted retention run: deleting %s", segment.name)
                segment.unlink()
                chain.seal_path(segment).unlink()

    def _resume(self, path: Path, start_seq: int, start_prev: str, *, legacy_allowed: bool) -> None:
        """Take the open segment as the store left it: keep what checkpoints cover, cut a never-acknowledged
        tail, set aside a forged or corrupt file; a segment from before checkpoints is sealed as unverified."""
        data = path.read_bytes()
        found = scan_segment(data, path.name, start_seq, start_prev, self.public_key)
        self.head, self.next_seq, self._open = start_prev, start_seq, None
        if legacy_allowed and not found.checkpoint_lines and not self._upgraded():
            self._close_legacy(path, data, found)
            return
        fault = found.fault if found.fault_acknowledged else found.tail_fault()
        if fault is not None:
            self._set_aside(path, data, found, fault, found.covered)
            return
        self._cut(path, data, found.covered_bytes, found, "after the last checkpoint: a batch never acknowledged")
        self._open = self._opened(
            path, data[: found.covered_bytes], found.entries[: found.covered], found, found.checkpoints
        )

    def _upgraded(self) -> bool:
        """Whether this store was written with checkpoints before: then an open segment without any is forged."""
        sealed = self.last_sealed or {}
        seen = "checkpoints" in sealed or "unverified" in sealed or bool(chain.quarantined_files(self.root))
        return seen or self._marked

    def _cut(self, path: Path, data: bytes, keep: int, found: Scan, why: str) -> None:
        if keep == len(data):
            return
        where = (
            next((e.line for e in found.entries if e.end > keep), None) or (found.fault or found.torn or Fault("")).line
        )
        log.warning("audit store: %s: cutting %d bytes from line %s on, %s", path, len(data) - keep, where, why)
        with path.open("r+b") as handle:
            handle.truncate(keep)
            os.fsync(handle.fileno())
        self.bytes_used -= len(data) - keep

    def _opened(self, path: Path, kept: bytes, entries: list[Entry], found: Scan, checkpoints: int) -> _Open:
        """The open-segment state of a file holding `kept`: the records `entries` and `checkpoints`."""
        segment = _Open(path, self._clock(), found.start_seq, found.start_prev)
        if not entries:
            return segment
        segment.add(kept, len(entries), entries[0].seq, str(entries[0].time), checkpoints)
        segment.last_time = str(entries[-1].time)
        with contextlib.suppress(ValueError):
            segment.started = chain.parse_time(segment.first_time)  # a restart must not postpone the seal
        self.head, self.next_seq = entries[-1].hash, entries[-1].seq + 1
        self.records += len(entries)
        return segment

    def _close_legacy(self, path: Path, data: bytes, found: Scan) -> None:
        """An open segment written before checkpoints: nothing proves who wrote it, so it is sealed marked
        unverified (verify says so) and new records go to a new segment, checkpointed."""
        if found.fault is not None:
            self._set_aside(path, data, found, found.fault, len(found.entries), legacy=True)
            return
        self._cut(path, data, found.clean_bytes, found, "a half-written record")
        self._open = self._opened(path, data[: found.clean_bytes], found.entries, found, 0)
        if self._open.records:
            log.warning(
                "audit store: %s was written before checkpoints (seq %d..%d): sealed as unverified, "
                "new records go to a new segment",
                path,
                self._open.first_seq,
                self.next_seq - 1,
            )
            self._sign_seal(self._open, LEGACY)

    def _set_aside(self, path: Path, data: bytes, found: Scan, fault: Fault, keep: int, legacy: bool = False) -> None:
        """Move a forged or corrupt open segment to quarantine/ and continue the chain after its first `keep`
        records (verified by checkpoints, or for a segment from before checkpoints by the chain alone)."""
        entries = found.entries[:keep]
        target = self._next_segment_path()
        stamp = self._clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = (
            self.root / chain.QUARANTINE / f"{path.name.removesuffix(chain.RECORD_SUFFIX)}-{stamp}{chain.RECORD_SUFFIX}"
        )
        kept = b"".join(
            line for _, _, line in lines(data[: entries[-1].end] if entries else b"") if not chain.is_checkpoint(line)
        )
        if entries and not legacy:
            moment = chain.timestamp(self._clock())
            kept += chain.checkpoint_line(
                self._key, self._key_id, target.name, entries[0].seq, [e.hash for e in entries], moment
            )
        reason = {
            "segment": path.name,
            "seq": fault.seq,
            "line": fault.line,
            "what": fault.what,
            "setAsideAt": chain.timestamp(self._clock()),
            "continuedIn": target.name if entries else None,
            "keptUpToSeq": entries[-1].seq if entries else found.start_seq - 1,
        }
        aside.parent.mkdir(exist_ok=True)
        _durable_write(chain.reason_path(aside), json.dumps(reason, indent=1).encode())
        path.replace(aside)
        _fsync_dir(aside.parent)
        _fsync_dir(path.parent)
        self.segment_count -= 1
        if entries:
            _durable_write(target, kept)
            self.segment_count += 1
            self._open = self._opened(target, kept, entries, found, 0 if legacy else 1)
        self._recount()
        where = f"record seq {fault.seq} (line {fault.line})" if fault.seq is not None else f"line {fault.line}"
        self.quarantined = f"{path.name} {where}: {fault.what}"
        log.error(
            "audit store: %s %s: %s; kept seq ..%d, set the file aside as %s",
            path,
            where,
            fault.what,
            reason["keptUpToSeq"],
            aside.relative_to(self.root),
        )
        if legacy and entries:
            self._sign_seal(self._open, LEGACY)  # type: ignore[arg-type]
        if self.on_quarantine is not None:
            self.on_quarantine(self.quarantined)

    def usage(self) -> Usage:
        return Usage(
            self.bytes_used,
            self.capacity(),
            self.records,
            self.segment_count,
            self.head,
            self.last_sealed,
            self.next_seq - 1,
        )

    def capacity(self) -> int:
        """The configured limit, or less when the volume itself has less room left."""
        free = shutil.disk_usage(self.root).free
        return min(self.limit_bytes, self.bytes_used + free)

    # ------------------------------------------------------------------ writing
    def append(self, events: Sequence[Any], source: str = "apiserver") -> Appended:
        """Append events as records; all or nothing, durable when it returns."""
        if not events:
            return Appended(0, self.next_seq, self.next_seq - 1, self.head)
        self.seal_if_due()
        moment = chain.timestamp(self._clock())
        records, hashes, head, seq = [], [], self.head, self.next_seq
        for event in events:
            line, head = chain.record_line(seq, head, moment, source, event)
            records.append(line)
            hashes.append(head)
            seq += 1
        name = self._open.path.name if self._open else self._next_segment_path().name
        checkpoint = chain.checkpoint_line(self._key, self._key_id, name, self.next_seq, hashes, moment)
        payload = b"".join(records) + checkpoint
        self._ensure_room(len(payload))
        segment = self._write(payload)
        first = self.next_seq
        segment.add(payload, len(records), first, moment)
        self.head, self.next_seq = head, seq
        self.records += len(records)
        if segment.size >= self.segment_bytes:
            self._seal_after_append()
        return Appended(len(records), first, seq - 1, head)

    def _seal_after_append(self) -> None:
        """The batch is already durable: a seal that fails now is retried by housekeeping, not reported as a
        failed batch (which the API server would send again, duplicating records)."""
        try:
            self.seal()
        except OSError as exc:
            log.error("audit store: sealing %s failed (%s); retried at the next housekeeping", self._open, exc)

    def _ensure_room(self, size: int) -> None:
        needed = size + self.reserve_bytes
        capacity = self.capacity()
        if self.bytes_used + needed > capacity:
            raise StoreFullError(
                f"audit store holds {self.bytes_used} of {capacity} bytes; a batch of {size} bytes "
                f"(plus {self.reserve_bytes} reserved for seals) does not fit"
            )

    def _write(self, payload: bytes) -> _Open:
        segment = self._open or self._new_segment()
        before = segment.size
        try:
            with segment.path.open("ab") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            with segment.path.open("r+b") as handle:
                handle.truncate(before)
            if exc.errno in FULL_ERRNOS:
                raise StoreFullError(
                    f"the volume refused the write ({os.strerror(exc.errno)}); batch not stored"
                ) from exc
            raise
        self.bytes_used += len(payload)
        return segment

    def _next_segment_path(self) -> Path:
        """After the newest segment, set-aside ones included, so a number never names two different files."""
        taken = chain.segment_files(self.root) + chain.quarantined_files(self.root)
        number = max((chain.segment_number(p.name) for p in taken), default=0) + 1
        return self.root / chain.SEGMENTS / f"{number:010d}{chain.RECORD_SUFFIX}"

    def _new_segment(self) -> _Open:
        segment = self._next_segment_path()
        segment.touch()
        _fsync_dir(segment.parent)
        self._open = _Open(segment, self._clock(), self.next_seq, self.head)
        self.segment_count += 1
        return self._open

    # ------------------------------------------------------------------ sealing
    def seal_if_due(self) -> dict[str, Any] | None:
        if self._open is None or not self._open.records:
            return None
        too_big = self._open.size >= self.segment_bytes  # a seal that failed after an append
        if not too_big and self._clock() - self._open.started < self.segment_max_age:
            return None
        return self.seal()

    def seal(self) -> dict[str, Any] | None:
        """Close the open segment with a signed seal; None when there is nothing to seal.

        Signs only what the store wrote itself: a file that changed on disk since is read again like at start
        (its forged part set aside, a never-acknowledged tail cut) before anything is sealed."""
        segment = self._open
        if segment is None or not segment.records:
            return None
        if _file_digest(segment.path) != segment.digest.hexdigest():
            log.error(
                "audit store: %s changed on disk since the store wrote it; checking it before sealing", segment.path
            )
            self.records -= segment.records
            self._resume(segment.path, segment.start_seq, segment.start_prev, legacy_allowed=False)
            self._recount()
            segment = self._open
            if segment is None or not segment.records:
                return None
        return self._sign_seal(segment)

    def _sign_seal(self, segment: _Open, unverified: str | None = None) -> dict[str, Any]:
        body = {
            "segment": segment.path.name,
            "firstSeq": segment.first_seq,
            "lastSeq": segment.first_seq + segment.records - 1,
            "records": segment.records,
            "prevHead": segment.prev_head,
            "head": self.head,
            "sha256": segment.digest.hexdigest(),
            "firstTime": segment.first_time,
            "lastTime": segment.last_time,
            "sealedAt": chain.timestamp(self._clock()),
            "keyID": self._key_id,
        }
        if unverified:
            body["unverified"] = unverified
        else:
            body["checkpoints"] = segment.checkpoints
        sealed = chain.sign(body, self._key)
        path = chain.seal_path(segment.path)
        encoded = json.dumps(sealed, indent=1, sort_keys=True).encode()
        _durable_write(path, encoded)
        self.bytes_used += len(encoded)
        self._open = None
        self.last_sealed = sealed
        return sealed

    def hash_at(self, seq: int) -> str | None:
        """The recorded hash of record `seq`, reading only the segment whose seal (or open tail) holds it; None
        when no segment holds it (deleted by retention) or it cannot be read."""
        for segment in chain.segment_files(self.root):
            sealed = chain.read_json(chain.seal_path(segment))
            if sealed and not sealed.get("firstSeq", 0) <= seq <= sealed.get("lastSeq", -1):
                continue
            for line in segment.read_bytes().splitlines():
                if chain.is_checkpoint(line):
                    continue
                try:
                    recorded, body = chain.split_line(line)
                    if json.loads(body).get("seq") == seq:
                        return recorded
                except (ValueError, AttributeError):
                    return None
        return None

    # ------------------------------------------------------------------ retention
    def sealed_segments(self) -> list[dict[str, Any]]:
        seals = (chain.read_json(chain.seal_path(p)) for p in chain.segment_files(self.root))
        return [s for s in seals if s]

    def exported(self) -> set[str]:
        return exported(self.root)

    def expired(self, retention: timedelta, backed_up_before: datetime | None) -> list[dict[str, Any]]:
        """Sealed segments past retention that are safe to delete: a prefix of the chain, all exported or
        backed up. The first one that is not safe stops the prefix, so the chain never gets a hole."""
        cutoff = self._clock() - retention
        exported = self.exported()
        deletable = []
        public = self._key.public_key()
        for segment in chain.segment_files(self.root):
            sealed = chain.read_json(chain.seal_path(segment))
            if sealed is None or sealed.get("segment") != segment.name or not chain.signature_valid(sealed, public):
                break  # an open, unreadable or forged seal: nothing at or after it is deleted
            sealed_at = chain.parse_time(sealed["sealedAt"])
            safe = sealed["segment"] in exported or (backed_up_before is not None and sealed_at <= backed_up_before)
            if sealed_at > cutoff or not safe:
                break
            deletable.append(sealed)
        return deletable

    def apply_retention(self, retention: timedelta, backed_up_before: datetime | None) -> list[str]:
        deletable = self.expired(retention, backed_up_before)
        if not deletable:
            return []
        last = deletable[-1]
        tombstone = chain.sign(
            {
                "lastSeq": last["lastSeq"],
                "head": last["head"],
                "segments": [s["segment"] for s in deletable],
                "prunedAt": chain.timestamp(self._clock()),
                "keyID": chain.key_id(self._key.public_key()),
            },
            self._key,
        )
        _durable_write(self.root / chain.TOMBSTONE, json.dumps(tombstone, indent=1, sort_keys=True).encode())
        self._delete_covered(last["lastSeq"])
        self.segment_count -= len(deletable)
        self.records -= sum(s["records"] for s in deletable)
        self._recount()
        return [s["segment"] for s in deletable]


def _file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _durable_write(path: Path, data: bytes) -> None:
    """Write to a temporary name, fsync, rename, fsync the folder: the file is whole or absent after a crash."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    _fsync_dir(path.parent)


def exported(root: Path) -> set[str]:
    return set((chain.read_json(root / chain.EXPORTS) or {}).get("segments", []))


def mark_exported(root: Path, segments: Sequence[str]) -> None:
    """Record segments as exported, so retention may delete them."""
    marked = sorted(exported(root) | set(segments))
    _durable_write(root / chain.EXPORTS, json.dumps({"segments": marked}, indent=1).encode())


def export_bundle(root: Path, out: Path, since: datetime | None, until: datetime | None) -> list[str]:
    """Copy the sealed segments overlapping [since, until] with their seals and the public key into `out`; mark
    them exported (so retention may delete them) only once the copy is on disk and verifies as a bundle."""
    from iotsec.audittrail.verify import verify

    chosen = []
    for segment in chain.segment_files(root):
        sealed = chain.read_json(chain.seal_path(segment))
        if not sealed:
            continue
        if since and chain.parse_time(sealed["lastTime"]) < since:
            continue
        if until and chain.parse_time(sealed["firstTime"]) > until:
            continue
        chosen.append(segment)
    (out / chain.SEGMENTS).mkdir(parents=True, exist_ok=True)
    for segment in chosen:
        for source in (segment, chain.seal_path(segment)):
            _durable_write(out / chain.SEGMENTS / source.name, source.read_bytes())
    _durable_write(out / chain.PUBLIC_KEY, (root / chain.PUBLIC_KEY).read_bytes())
    seals = [chain.read_json(chain.seal_path(s)) or {} for s in chosen]
    segments = [s.name for s in chosen]
    manifest = {
        "exportedAt": chain.timestamp(datetime.now(UTC)),
        "firstSeq": seals[0].get("firstSeq") if seals else None,
        "lastSeq": seals[-1].get("lastSeq") if seals else None,
        "head": seals[-1].get("head") if seals else None,
        "since": chain.timestamp(since) if since else None,
        "until": chain.timestamp(until) if until else None,
        "segments": segments,
    }
    _durable_write(out / chain.BUNDLE, json.dumps(manifest, indent=1).encode())
    report = verify(out, chain.load_public_key(root / chain.PUBLIC_KEY), bundle=True)
    if not report.ok:
        raise ValueError(f"the exported bundle does not verify ({report.broken}); nothing marked exported")
    mark_exported(root, segments)
    return segments
