"""Verify an audit store or an exported bundle: every record's hash, every link, every seal (X1369-9.6.4-4).

The first break is reported precisely: which segment, which record (seq and line), and what differs. The
trusted public key should come from the caller (`--public-key`); the copy inside the folder only proves the
folder is consistent with itself, and the report says which of the two was used.

Checkpoints are checked in every segment, the open one included: a record that differs from the checkpoint
signed after its batch is a break (named by seq and line), records after the last checkpoint of the open
segment are a note (a batch still being written, or cut short by a crash: the store cuts them at its next
start) unless they cannot be one batch. A segment the store set aside in `quarantine/` is a break until it is
removed. Segments written before checkpoints existed are listed as unverified, not broken; in a store whose
signed format marker says it was written with checkpoints, an open segment without any is a forgery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from iotsec.audittrail import chain
from iotsec.audittrail.scan import FORMAT_FILE, Fault, Scan, marked, scan_segment


@dataclass(frozen=True)
class Break:
    segment: str
    what: str
    seq: int | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.segment
        if self.seq is not None:
            where += f" record seq {self.seq}"
        if self.line is not None:
            where += f" (line {self.line})"
        return f"{where}: {self.what}"


@dataclass
class Report:
    key_id: str
    key_source: str
    records: int = 0
    segments: int = 0
    sealed: int = 0
    head: str = chain.GENESIS
    first_seq: int | None = None
    broken: Break | None = None
    notes: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)  # segments written before checkpoints existed

    @property
    def ok(self) -> bool:
        return self.broken is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "keyID": self.key_id,
            "keySource": self.key_source,
            "records": self.records,
            "segments": self.segments,
            "sealed": self.sealed,
            "firstSeq": self.first_seq,
            "head": self.head,
            "break": str(self.broken) if self.broken else None,
            "notes": self.notes,
            "unverified": self.unverified,
        }


def published_head_differs(last_seq: int, hash_at_seq: str | None, seq: int, head: str) -> str | None:
    """What is wrong when a chain ending at `last_seq`, whose record `seq` hashes to `hash_at_seq` (None: not
    held any more, e.g. retention), does not reach the (seq, head) published outside the store; None if it does."""
    if last_seq < seq:
        return (
            f"the chain ends at seq {last_seq} but seq {seq} was published: records {last_seq + 1}..{seq} were cut off"
        )
    if hash_at_seq is not None and hash_at_seq != head:
        return f"seq {seq} hashes to {hash_at_seq[:16]}…, {head[:16]}… was published"
    return None


class _BrokenError(Exception):
    def __init__(self, found: Break) -> None:
        self.found = found


def verify(
    root: Path,
    public_key: Ed25519PublicKey | None = None,
    sealed_only: bool = False,
    *,
    bundle: bool = False,
    expect: tuple[int, str] | None = None,
) -> Report:
    """Check the folder from its anchor to its head; stops at the first break.

    A store starts at seq 1 or at its signed retention tombstone; only with `bundle` may it start at its first
    seal's range (an export), and then the bundle's manifest must list exactly the segments found. A chain
    cannot tell on its own that its newest records were cut off: `expect` = (seq, head hash) published
    elsewhere (the AuditPolicy status) closes that gap. `sealed_only` skips a trailing open segment (the sink
    verifying itself while it writes).
    """
    if public_key is None:
        public_key, source = chain.load_public_key(root / chain.PUBLIC_KEY), f"{chain.PUBLIC_KEY} in the folder"
    else:
        source = "given by the caller"
    walk = _Walk(root, public_key, Report(chain.key_id(public_key), source), sealed_only, bundle, expect)
    try:
        walk.run()
    except _BrokenError as broken:
        walk.report.broken = broken.found
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:  # a field of the wrong shape
        walk.report.broken = Break(walk.current, f"cannot be read as audit chain data ({type(exc).__name__}: {exc})")
    return walk.report


class _Walk:
    def __init__(
        self,
        root: Path,
        key: Ed25519PublicKey,
        report: Report,
        sealed_only: bool = False,
        bundle: bool = False,
        expect: tuple[int, str] | None = None,
    ) -> None:
        self.root, self.key, self.report, self.sealed_only = root, key, report, sealed_only
        self.bundle, self.expect = bundle, expect
        self.prev, self.seq = chain.GENESIS, 1
        self.current = root.name
        self.covered = 0  # the seq a retention tombstone covers (its segments may survive an interrupted run)
        self.expected_hash: str | None = None
        # written with checkpoints at some point: an open segment without any is then forged
        self.upgraded = bool(chain.quarantined_files(root)) or marked(root)

    def run(self) -> None:
        files = chain.segment_files(self.root)
        self._anchor(files)
        files = [f for f in files if not self._covered(f)]
        for index, segment in enumerate(files):
            self.current = segment.name
            sealed = chain.read_json(chain.seal_path(segment))
            if sealed is None and index < len(files) - 1:
                raise _BrokenError(Break(segment.name, "no seal, but later segments exist: its seal was removed"))
            if sealed is None and self.sealed_only:
                self.report.notes.append(f"{segment.name} is open: skipped")
                break
            self._segment(segment, sealed)
        if not files:
            self.report.notes.append("no segments")
        self._check_format()
        self._check_quarantine()
        if self.bundle:
            self._check_manifest(files)
        if self.expect is not None:
            self._check_expected()

    def _check_format(self) -> None:
        """A format marker that is there must be the store's: a forged one could only add checks, a damaged one
        means someone wrote in the folder."""
        if not marked(self.root):
            return
        written = chain.read_json(self.root / FORMAT_FILE)
        if written is None:
            raise _BrokenError(Break(FORMAT_FILE, "the store's format marker is not readable: it was edited"))
        if not chain.signature_valid(written, self.key):
            claimed = written.get("keyID", "?")
            what = (
                f"the format marker is signed by key {claimed}, not the store key {self.report.key_id}"
                if claimed != self.report.key_id
                else "the format marker's signature does not verify: it was edited"
            )
            raise _BrokenError(Break(FORMAT_FILE, what))

    def _covered(self, segment: Path) -> bool:
        sealed = chain.read_json(chain.seal_path(segment))
        if self.covered and sealed and isinstance(sealed.get("lastSeq"), int) and sealed["lastSeq"] <= self.covered:
            self.report.notes.append(f"{segment.name} is covered by the retention tombstone (deletion unfinished)")
            return True
        return False

    def _check_manifest(self, files: list[Path]) -> None:
        manifest = chain.read_json(self.root / chain.BUNDLE)
        if manifest is None:
            raise _BrokenError(Break(chain.BUNDLE, "missing or unreadable: this is not an exported bundle"))
        listed, found = list(manifest.get("segments") or []), [f.name for f in files]
        if listed != found:
            missing = sorted(set(listed) - set(found))
            raise _BrokenError(Break(chain.BUNDLE, f"lists {listed}, the bundle holds {found}: missing {missing}"))
        if files and (manifest.get("lastSeq"), manifest.get("head")) != (self.seq - 1, self.prev):
            raise _BrokenError(
                Break(chain.BUNDLE, f"says it ends at seq {manifest.get('lastSeq')}, the chain ends at {self.seq - 1}")
            )
        self.report.notes.append("bundle.json is not signed: compare its range with the export you asked for")

    def _check_expected(self) -> None:
        seq, head = self.expect  # type: ignore[misc]
        differs = published_head_differs(self.seq - 1, self.expected_hash, seq, head)
        if differs:
            raise _BrokenError(Break(self.current, differs))

    def _anchor(self, files: list[Path]) -> None:
        """Where the chain starts: genesis, a retention tombstone, or the first seal of an export."""
        tombstone = chain.read_json(self.root / chain.TOMBSTONE)
        if tombstone is not None:
            if not chain.signature_valid(tombstone, self.key):
                raise _BrokenError(Break(chain.TOMBSTONE, "retention tombstone signature does not verify"))
            self.prev, self.seq = tombstone["head"], tombstone["lastSeq"] + 1
            self.covered = tombstone["lastSeq"]
            self.report.notes.append(f"records up to seq {tombstone['lastSeq']} were deleted by retention")
        first = chain.read_json(chain.seal_path(files[0])) if files and tombstone is None else None
        if first and self.bundle:
            if not chain.signature_valid(first, self.key):
                raise _BrokenError(Break(files[0].name, self._bad_signature(first)))
            self.prev, self.seq = first["prevHead"], first["firstSeq"]
            self.report.notes.append(f"exported bundle starting at seq {first['firstSeq']}")
        self.report.first_seq = self.seq

    def _check_quarantine(self) -> None:
        for aside in chain.quarantined_files(self.root):
            reason = chain.read_json(chain.reason_path(aside)) or {}
            where = f"{chain.QUARANTINE}/{aside.name}"
            what = reason.get("what", "no reason file")
            raise _BrokenError(
                Break(
                    str(reason.get("segment", where)),
                    f"{what} (set aside by the sink as {where} at {reason.get('setAsideAt', '?')}; "
                    f"the chain was kept up to seq {reason.get('keptUpToSeq', '?')}; remove the file once examined)",
                    reason.get("seq") if isinstance(reason.get("seq"), int) else None,
                    reason.get("line") if isinstance(reason.get("line"), int) else None,
                )
            )

    def _segment(self, segment: Path, sealed: dict[str, Any] | None) -> None:
        name = segment.name
        self.report.segments += 1
        if sealed is not None:
            self._check_seal_start(name, sealed)
        data = segment.read_bytes()
        start_seq = self.seq
        found = scan_segment(data, name, self.seq, self.prev, self.key)
        self._take(found)
        legacy = self._legacy(sealed, found)
        if found.fault is not None and (sealed is not None or legacy or found.fault_acknowledged):
            raise _BrokenError(_break(name, found.fault))
        if found.torn is not None and (sealed is not None or legacy):
            raise _BrokenError(_break(name, found.torn))
        if sealed is None:
            self._open_segment(name, found, legacy)
            return
        self._check_seal_end(name, sealed, data, len(found.entries), start_seq)
        self._check_sealed_checkpoints(name, sealed, found)
        self.report.sealed += 1
        self.upgraded = self.upgraded or "checkpoints" in sealed or "unverified" in sealed

    def _legacy(self, sealed: dict[str, Any] | None, found: Scan) -> bool:
        """Written before checkpoints: a seal that does not count them, or an open segment of a store that
        never had any (the store seals it as unverified at its next start)."""
        if sealed is not None:
            return "checkpoints" not in sealed
        return not found.checkpoint_lines and not self.upgraded

    def _take(self, found: Scan) -> None:
        if self.expect is not None:
            self.expected_hash = next((e.hash for e in found.entries if e.seq == self.expect[0]), self.expected_hash)
        if found.entries:
            self.prev, self.seq = found.entries[-1].hash, found.entries[-1].seq + 1
            self.report.records += len(found.entries)
            self.report.head = self.prev

    def _open_segment(self, name: str, found: Scan, legacy: bool) -> None:
        if legacy:
            if found.entries:
                self.report.unverified.append(
                    f"{name} seq {found.entries[0].seq}..{found.entries[-1].seq}: open segment written before "
                    "checkpoints; no signature covers it (the store seals it as unverified at its next start)"
                )
            self.report.notes.append(f"{name} is open (not sealed yet): chain checked, no signature")
            return
        fault = found.tail_fault()
        if fault is not None:
            raise _BrokenError(_break(name, fault))
        tail = found.tail
        rest = found.fault or found.torn
        first = tail[0] if tail else rest
        if first is not None:
            self.report.notes.append(
                f"{name}: line {first.line} on (seq {first.seq}..) follows the last checkpoint: a batch being written "
                "or cut short by a crash, never acknowledged; the store cuts it at its next start"
                + (f" ({rest.what} at line {rest.line})" if rest else "")
            )
        self.report.notes.append(
            f"{name} is open (not sealed yet): chain and {found.checkpoints} checkpoints checked, "
            f"seq ..{found.entries[found.covered - 1].seq if found.covered else self.seq - 1} signed"
        )

    def _check_sealed_checkpoints(self, name: str, sealed: dict[str, Any], found: Scan) -> None:
        if "unverified" in sealed:
            first, last = sealed["firstSeq"], sealed["lastSeq"]
            self.report.unverified.append(f"{name} seq {first}..{last}: {sealed['unverified']}")
            return
        if "checkpoints" not in sealed:
            return  # sealed before checkpoints existed: the seal alone covers it
        tail = found.tail
        if tail:
            raise _BrokenError(
                Break(
                    name, f"seq {tail[0].seq}..{tail[-1].seq} are covered by no checkpoint", tail[0].seq, tail[0].line
                )
            )
        if found.checkpoints != sealed["checkpoints"]:
            raise _BrokenError(
                Break(name, f"the seal counts {sealed['checkpoints']} checkpoints, the file holds {found.checkpoints}")
            )

    def _check_seal_start(self, name: str, sealed: dict[str, Any]) -> None:
        if sealed.get("segment") != name:
            raise _BrokenError(Break(name, f"seal belongs to segment {sealed.get('segment')!r}: seals were swapped"))
        if not chain.signature_valid(sealed, self.key):
            raise _BrokenError(Break(name, self._bad_signature(sealed)))
        if sealed["firstSeq"] != self.seq:
            missing = f"records {self.seq}..{sealed['firstSeq'] - 1}" if sealed["firstSeq"] > self.seq else "records"
            raise _BrokenError(
                Break(name, f"starts at seq {sealed['firstSeq']}, expected {self.seq}: {missing} are missing or reused")
            )
        if sealed["prevHead"] != self.prev:
            raise _BrokenError(
                Break(
                    name, f"seal links to head {sealed['prevHead'][:16]}…, the chain so far ends at {self.prev[:16]}…"
                )
            )

    def _bad_signature(self, sealed: dict[str, Any]) -> str:
        claimed = sealed.get("keyID", "?")
        if claimed != self.report.key_id:
            return f"seal is signed by key {claimed}, not the store key {self.report.key_id}: segment was replaced"
        return f"seal signature does not verify with key {self.report.key_id}: seal was edited"

    def _check_seal_end(self, name: str, sealed: dict[str, Any], data: bytes, count: int, start: int) -> None:
        if count != sealed["records"]:
            last = start + count - 1
            raise _BrokenError(
                Break(
                    name,
                    f"seal covers seq {sealed['firstSeq']}..{sealed['lastSeq']} ({sealed['records']} records), "
                    f"the file holds {count} (up to seq {last}): truncated, seq {last + 1}.. are missing",
                )
            )
        if sealed["head"] != self.prev:
            raise _BrokenError(Break(name, "last record's hash differs from the sealed head", self.seq - 1, count))
        if chain.digest(data) != sealed["sha256"]:
            raise _BrokenError(Break(name, "file digest differs from the seal (bytes outside the records changed)"))


def _break(name: str, fault: Fault) -> Break:
    return Break(name, fault.what, fault.seq, fault.line)
