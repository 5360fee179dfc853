"""Reading one segment: its records in chain order and the signed checkpoints that cover them.

Shared by the store (what to keep, cut off or set aside when it opens or seals its open segment) and verify
(what to report). The scan stops at the first fault, the way verify names the first break; what it read up
to there stays usable (the verified prefix).

A checkpoint is written with its batch in one write and fsync, so a crash leaves at most one batch (one
`time` and `source`) after the last checkpoint, possibly with a torn last line: those records were never
acknowledged. Anything else that no valid checkpoint covers, or that disagrees with one, was written by
someone without the key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from iotsec.audittrail import chain

FORMAT_FILE = "format.json"
"""Written (signed) by the store when it is created, or first opened by a release that writes checkpoints: from
then on an open segment without checkpoints is a forgery, never one from before checkpoints existed. Whoever can
delete it can also strip checkpoints, which is why verify fails on UNVERIFIED segments unless told otherwise."""
FORMAT = "checkpoints/1"


def marked(root: Path) -> bool:
    """Whether the store says it was written with checkpoints (any file of that name counts: it only adds checks)."""
    return (root / FORMAT_FILE).exists()


@dataclass(frozen=True)
class Fault:
    what: str
    seq: int | None = None
    line: int | None = None


class Entry(NamedTuple):  # a tuple: one per record, built fast
    """One record that parsed and chained: where it is and what its checkpoint and the store need of it."""

    seq: int
    line: int
    hash: str
    time: Any
    source: Any
    end: int  # byte offset just after its line


@dataclass
class Scan:
    name: str
    start_seq: int
    start_prev: str
    entries: list[Entry] = field(default_factory=list)
    covered: int = 0  # entries[:covered] are covered by valid checkpoints
    covered_bytes: int = 0  # offset just after the last valid checkpoint
    checkpoints: int = 0  # valid ones
    checkpoint_lines: int = 0  # every line that looks like a checkpoint, valid or not
    fault: Fault | None = None
    fault_acknowledged: bool = False  # a checkpoint is at fault, or a valid one follows the fault
    torn: Fault | None = None  # the last line has no newline

    @property
    def tail(self) -> list[Entry]:
        """Records after the last valid checkpoint."""
        return self.entries[self.covered :]

    @property
    def clean_bytes(self) -> int:
        """Offset just after the last record or checkpoint read without fault."""
        last = self.entries[-1].end if self.entries else 0
        return max(last, self.covered_bytes)

    def head_of(self, count: int) -> str:
        return self.entries[count - 1].hash if count else self.start_prev

    def tail_fault(self) -> Fault | None:
        """The records after the last checkpoint, when they cannot be one batch a crash cut short."""
        tail = self.tail
        if len({(entry.time, entry.source) for entry in tail}) <= 1:
            return None
        return Fault(
            f"seq {tail[0].seq}..{tail[-1].seq} follow the last checkpoint but were written at different times: "
            "not one batch cut short by a crash, but checkpoints removed or records added without the key",
            tail[0].seq,
            tail[0].line,
        )


def lines(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(line number from 1, end offset, line with its newline) of every line, the last one possibly unterminated."""
    start, number = 0, 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        number += 1
        yield number, end, data[start:end]
        start = end


def scan_segment(data: bytes, name: str, seq: int, prev: str, key: Ed25519PublicKey) -> Scan:
    """Read a segment whose first record must be `seq`, linking to `prev`; stop at the first fault."""
    scan = Scan(name, seq, prev)
    walk = _Walker(scan, key)
    numbered = lines(data)
    for number, end, line in numbered:
        if not line.endswith(b"\n"):
            scan.torn = Fault("last record is cut off (truncated mid-record)", walk.seq, number)
            break
        scan.fault = walk.line(number, end, line)
        if scan.fault is not None:
            scan.fault_acknowledged = chain.is_checkpoint(line) or walk.valid_checkpoint_among(numbered)
            break
    return scan


class _Walker:
    def __init__(self, scan: Scan, key: Ed25519PublicKey) -> None:
        self.scan, self.key = scan, key
        self.key_id = chain.key_id(key)
        self.seq, self.prev = scan.start_seq, scan.start_prev

    def line(self, number: int, end: int, line: bytes) -> Fault | None:
        if chain.is_checkpoint(line):
            self.scan.checkpoint_lines += 1
            fault = self._checkpoint(number, line)
            if fault is None:
                self.scan.covered, self.scan.covered_bytes = len(self.scan.entries), end
                self.scan.checkpoints += 1
            return fault
        return self._record(number, end, line)

    def valid_checkpoint_among(self, rest: Iterator[tuple[int, int, bytes]]) -> bool:
        """Whether a validly signed checkpoint of this segment follows: then what is at fault was acknowledged."""
        found = False
        for _, _, line in rest:
            if chain.is_checkpoint(line):
                self.scan.checkpoint_lines += 1
                found = found or self._signed_here(line)
        return found

    def _signed_here(self, line: bytes) -> bool:
        try:
            checkpoint = chain.parse_checkpoint(line)
        except ValueError:
            return False
        return checkpoint.get("segment") == self.scan.name and chain.signature_valid(checkpoint, self.key)

    def _record(self, number: int, end: int, line: bytes) -> Fault | None:
        try:
            recorded, body = chain.split_line(line)
            record = json.loads(body)
            seq, prev = record["seq"], record["prev"]
            if not isinstance(seq, int) or not isinstance(prev, str):
                raise TypeError("seq and prev have the wrong types")
        except (ValueError, KeyError, TypeError, AttributeError):
            return Fault("not a record (edited or corrupted)", self.seq, number)
        if seq != self.seq:
            return Fault(
                f"holds seq {seq} where seq {self.seq} belongs: records were deleted, inserted or reordered",
                self.seq,
                number,
            )
        if chain.digest(body) != recorded:
            return Fault("content does not match its recorded hash: the record was edited", seq, number)
        if prev != self.prev:
            return Fault(
                f"prev {prev[:16]}… differs from the hash of seq {seq - 1} ({self.prev[:16]}…): "
                f"seq {seq - 1} was rewritten",
                seq,
                number,
            )
        self.scan.entries.append(Entry(seq, number, recorded, record.get("time"), record.get("source"), end))
        self.prev, self.seq = recorded, seq + 1
        return None

    def _checkpoint(self, number: int, line: bytes) -> Fault | None:
        where = f"the checkpoint at line {number}"
        try:
            checkpoint = chain.parse_checkpoint(line)
        except ValueError:
            return Fault(f"{where} is not readable (edited or corrupted)", None, number)
        if not chain.signature_valid(checkpoint, self.key):
            claimed = checkpoint.get("keyID", "?")
            if claimed != self.key_id:
                return Fault(f"{where} is signed by key {claimed}, not the store key {self.key_id}", None, number)
            return Fault(f"{where} does not verify with key {self.key_id}: it was edited or forged", None, number)
        if checkpoint.get("segment") != self.scan.name:
            return Fault(f"{where} belongs to segment {checkpoint.get('segment')!r}: it was copied", None, number)
        try:
            return self._covers(where, number, checkpoint)
        except (KeyError, TypeError, AttributeError) as exc:
            return Fault(f"{where} has fields of the wrong shape ({type(exc).__name__})", None, number)

    def _covers(self, where: str, number: int, checkpoint: dict[str, Any]) -> Fault | None:
        """Whether the records since the previous checkpoint are exactly the ones it signed."""
        pending = self.scan.entries[self.scan.covered :]
        signed = checkpoint["hashes"]
        for index, entry in enumerate(pending):
            if index >= len(signed) or entry.hash[: chain.MARK_DIGITS] != signed[index]:
                return Fault(
                    f"differs from the record {where} signed: rewritten, inserted or reordered without the key",
                    entry.seq,
                    entry.line,
                )
        if not pending:
            return Fault(
                f"{where} follows no records of its own: a checkpoint line was repeated or moved", None, number
            )
        if len(signed) > len(pending):
            missing = len(signed) - len(pending)
            return Fault(f"{where} signs {len(signed)} records, {missing} of them are missing before it", None, number)
        first, last = pending[0], pending[-1]
        if (checkpoint["firstSeq"], checkpoint["lastSeq"], checkpoint["head"]) != (first.seq, last.seq, last.hash):
            return Fault(
                f"{where} signs seq {checkpoint['firstSeq']}..{checkpoint['lastSeq']} and another head", None, number
            )
        return None
