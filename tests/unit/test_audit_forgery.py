"""Records of the open segment are protected before the seal: signed checkpoints per batch (X1369-9.6.4-4).

An adversary with write access to the store volume but not the signing key rewrites the open segment with
recomputed hashes; the store must refuse to seal it, set it aside and continue from the last verified record,
and verify must name the first forged record. A corrupt open segment must not stop the sink."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import REGISTRY

from iotsec.audittrail import chain
from iotsec.audittrail.anomaly import AnomalyDetector
from iotsec.audittrail.scan import FORMAT, FORMAT_FILE
from iotsec.audittrail.store import AuditStore, export_bundle, mark_exported
from iotsec.audittrail.verify import verify
from iotsec.cli import main as cli
from iotsec.cli.audit import _verify_text
from iotsec.servers.auditsink.server import Sink
from tests.unit.test_audit_store import Clock, event

KEY = Ed25519PrivateKey.generate()
LIMIT = 10 * 2**20


def open_store(root: Path, clock: Clock | None = None) -> AuditStore:
    return AuditStore(root, KEY, limit_bytes=LIMIT, clock=clock or Clock())


def with_open_batches(root: Path, clock: Clock) -> AuditStore:
    """One sealed segment of seq 1..4, then an open one with three batches: seq 5..7, 8..10, 11..13."""
    store = open_store(root, clock)
    store.append([event(n) for n in range(1, 5)])
    store.seal()
    for first in (5, 8, 11):
        clock.advance(seconds=1)
        store.append([event(n) for n in range(first, first + 3)])
    return store


def open_segment(root: Path) -> Path:
    return chain.segment_files(root)[-1]


def rewrite_from(path: Path, seq: int, verb: str = "delete") -> None:
    """The forgery: change record `seq` and recompute every hash after it; checkpoint lines stay as they are."""
    out, prev = [], None
    for line in path.read_bytes().splitlines(keepends=True):
        if line.startswith(b"checkpoint "):
            out.append(line)
            continue
        record = json.loads(chain.split_line(line)[1])
        if record["seq"] == seq:
            record["event"]["verb"] = verb
        if prev is not None:
            record["prev"] = prev
        if record["seq"] >= seq:
            new, prev = chain.record_line(
                record["seq"], record["prev"], record["time"], record["source"], record["event"]
            )
            out.append(new)
        else:
            out.append(line)
    path.write_bytes(b"".join(out))


def sealed_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in chain.segment_files(root) if chain.seal_path(p).exists())


# ---------------------------------------------------------------------------------------------- the forgery


def test_a_rewritten_open_segment_is_named_by_verify_without_extra_flags(tmp_path):
    store = with_open_batches(tmp_path, Clock())
    forged = open_segment(tmp_path)
    rewrite_from(forged, 9)
    report = verify(tmp_path, KEY.public_key())
    assert not report.ok
    # line 4 is the first batch's checkpoint
    assert (report.broken.segment, report.broken.seq, report.broken.line) == (forged.name, 9, 6)
    assert "differs from the record the checkpoint at line 8 signed" in report.broken.what
    assert store.head != report.head


def test_a_sealed_segment_rewritten_with_recomputed_hashes_is_named_at_the_record_by_its_checkpoint(tmp_path):
    with_open_batches(tmp_path, Clock())
    sealed = chain.segment_files(tmp_path)[0]
    rewrite_from(sealed, 3)
    broken = verify(tmp_path, KEY.public_key()).broken
    assert (broken.segment, broken.seq, broken.line) == (sealed.name, 3, 3)
    assert "differs from the record the checkpoint at line 5 signed" in broken.what


def test_a_restarted_store_never_seals_a_forgery_and_continues_from_the_last_verified_record(tmp_path, caplog):
    clock = Clock()
    store = with_open_batches(tmp_path, clock)
    verified_head = store.hash_at(7)
    forged = open_segment(tmp_path)
    rewrite_from(forged, 9)

    with caplog.at_level(logging.WARNING, logger="iotsec.audittrail.store"):
        restarted = open_store(tmp_path, clock)
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert forged.name in caplog.records[0].getMessage()
    assert "record seq 9 (line 6)" in caplog.records[0].getMessage()
    assert (restarted.next_seq, restarted.head) == (8, verified_head)
    assert restarted.quarantined.startswith(f"{forged.name} record seq 9 (line 6)")

    aside = chain.quarantined_files(tmp_path)
    assert [p.name.split("-")[0] for p in aside] == ["0000000002"]
    assert b'"verb":"delete"' in aside[0].read_bytes()  # kept for forensics
    assert [p.name for p in chain.segment_files(tmp_path)] == ["0000000001.jsonl", "0000000003.jsonl"]

    restarted.append([event(100)])
    restarted.seal()
    assert b'"verb":"delete"' not in sealed_bytes(tmp_path)  # the forged record was signed by nothing
    report = verify(tmp_path, KEY.public_key())
    assert (report.records, report.head) == (8, restarted.head)
    assert not report.ok, "verify keeps reporting the forgery while the set-aside file is there"
    assert (report.broken.segment, report.broken.seq, report.broken.line) == (forged.name, 9, 6)
    assert "set aside by the sink as quarantine/0000000002-" in report.broken.what
    assert "the chain was kept up to seq 7" in report.broken.what

    aside[0].unlink()
    chain.reason_path(aside[0]).unlink()
    assert verify(tmp_path, KEY.public_key()).ok  # examined and removed: the kept chain is whole and signed


def test_checkpoints_stripped_from_several_batches_are_a_forgery_not_a_crash(tmp_path):
    clock = Clock()
    with_open_batches(tmp_path, clock)
    forged = open_segment(tmp_path)
    rewrite_from(forged, 6)
    forged.write_bytes(b"".join(line for line in forged.read_bytes().splitlines(True) if not chain.is_checkpoint(line)))
    broken = verify(tmp_path, KEY.public_key()).broken
    assert (broken.seq, broken.line) == (5, 1)
    assert "not one batch cut short by a crash" in broken.what
    restarted = open_store(tmp_path, clock)
    assert restarted.next_seq == 5
    assert chain.quarantined_files(tmp_path)


def test_a_tampered_checkpoint_is_a_break_and_is_set_aside(tmp_path):
    clock = Clock()
    with_open_batches(tmp_path, clock)
    path = open_segment(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    checkpoint = chain.parse_checkpoint(lines[7])
    checkpoint["time"] = "2030-01-01T00:00:00.000000Z"
    lines[7] = chain.CHECKPOINT + chain.canonical(checkpoint) + b"\n"
    path.write_bytes(b"".join(lines))
    broken = verify(tmp_path, KEY.public_key()).broken
    assert (broken.segment, broken.seq, broken.line) == (path.name, None, 8)
    assert "the checkpoint at line 8 does not verify" in broken.what
    restarted = open_store(tmp_path, clock)
    assert restarted.next_seq == 8  # the first batch's checkpoint still holds
    assert chain.quarantined_files(tmp_path)


def test_a_checkpoint_signed_with_another_key_is_a_break(tmp_path):
    clock = Clock()
    with_open_batches(tmp_path, clock)
    path = open_segment(tmp_path)
    rewrite_from(path, 5)
    lines, hashes, rewritten = path.read_bytes().splitlines(keepends=True), [], []
    forger = Ed25519PrivateKey.generate()
    for line in lines:
        if chain.is_checkpoint(line):
            old = chain.parse_checkpoint(line)
            line = chain.checkpoint_line(
                forger, chain.key_id(forger.public_key()), path.name, old["firstSeq"], hashes, "t"
            )
            hashes = []
        else:
            hashes.append(chain.split_line(line)[0])
        rewritten.append(line)
    path.write_bytes(b"".join(rewritten))
    broken = verify(tmp_path, KEY.public_key()).broken
    assert f"signed by key {chain.key_id(forger.public_key())}, not the store key" in broken.what
    assert open_store(tmp_path, clock).next_seq == 5


# ---------------------------------------------------------------------------------------------- crash tails


def test_records_after_the_last_checkpoint_were_never_acknowledged_and_are_cut(tmp_path):
    clock = Clock()
    store = with_open_batches(tmp_path, clock)
    path = open_segment(tmp_path)
    head = store.head
    lines = []  # a batch whose write a crash cut before its checkpoint: the API server got no 200 for it
    prev = head
    for seq in (14, 15):
        line, prev = chain.record_line(seq, prev, "2026-11-01T00:00:09.000000Z", "apiserver", event(seq))
        lines.append(line)
    with path.open("ab") as handle:
        handle.write(b"".join(lines) + b'checkpoint {"segm')
    report = verify(tmp_path, KEY.public_key())
    assert report.ok
    assert any("follows the last checkpoint" in note and "line 13 on (seq 14..)" in note for note in report.notes)
    restarted = open_store(tmp_path, clock)
    assert (restarted.next_seq, restarted.head) == (14, head)
    assert not chain.quarantined_files(tmp_path)
    assert path.read_bytes().endswith(b"\n")
    assert chain.is_checkpoint(path.read_bytes().splitlines()[-1])
    restarted.append([event(14)])
    assert restarted.seal()["lastSeq"] == 14
    assert verify(tmp_path, KEY.public_key()).ok


def test_a_torn_checkpoint_line_cuts_its_batch(tmp_path):
    clock = Clock()
    store = with_open_batches(tmp_path, clock)
    path = open_segment(tmp_path)
    path.write_bytes(path.read_bytes()[:-30])
    assert verify(tmp_path, KEY.public_key()).ok
    assert open_store(tmp_path, clock).next_seq == 11
    assert store.next_seq == 14


def test_garbage_after_the_last_checkpoint_is_a_write_never_acknowledged_and_is_cut(tmp_path, caplog):
    """A power loss can leave zero-filled or stale blocks after the last checkpoint; no checkpoint vouches for
    them, so no caller was told they were stored."""
    clock = Clock()
    store = with_open_batches(tmp_path, clock)
    path = open_segment(tmp_path)
    with path.open("ab") as handle:
        handle.write(b"\x00" * 300 + b"\n")
    report = verify(tmp_path, KEY.public_key())
    assert report.ok
    assert any("not a record (edited or corrupted) at line 13" in note for note in report.notes)
    with caplog.at_level(logging.WARNING, logger="iotsec.audittrail.store"):
        restarted = open_store(tmp_path, clock)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "cutting 301 bytes from line 13 on" in caplog.records[0].getMessage()
    assert (restarted.next_seq, restarted.head) == (store.next_seq, store.head)
    assert not chain.quarantined_files(tmp_path)


# ---------------------------------------------------------------------------------------------- corrupt at start


def _garble(data: bytes, kind: str) -> bytes:
    """Damage the record of seq 9 (line 6 of the open segment), which the checkpoint at line 8 covers."""
    lines = data.splitlines(keepends=True)
    if kind == "bad JSON":
        lines[5] = lines[5][:70] + b"{{{" + lines[5][73:]
    elif kind == "bad hash":
        lines[5] = b"0" * 64 + lines[5][64:]
    elif kind == "truncated line in the middle":
        lines[5] = lines[5][: len(lines[5]) // 2]
    elif kind == "garbage bytes":
        lines[5] = b"\x00\xff\xfe garbage \x00" * 20 + b"\n"
    return b"".join(lines)


@pytest.mark.parametrize("kind", ["bad JSON", "bad hash", "truncated line in the middle", "garbage bytes"])
def test_a_corrupt_open_segment_logs_one_line_keeps_the_verified_prefix_and_the_sink_runs(tmp_path, caplog, kind):
    clock = Clock()
    store = with_open_batches(tmp_path, clock)
    kept_head = store.hash_at(7)
    path = open_segment(tmp_path)
    path.write_bytes(_garble(path.read_bytes(), kind))
    with caplog.at_level(logging.INFO):
        restarted = open_store(tmp_path, clock)
    store_lines = [r for r in caplog.records if r.name == "iotsec.audittrail.store"]
    assert len(store_lines) == 1, [r.getMessage() for r in store_lines]
    message = store_lines[0].getMessage()
    assert str(path) in message
    assert "seq 9 (line 6)" in message
    assert "\n" not in message
    assert store_lines[0].exc_info is None
    assert (restarted.next_seq, restarted.head) == (8, kept_head)

    sink = Sink(restarted, AnomalyDetector([], []))
    body = json.dumps({"apiVersion": "audit.k8s.io/v1", "kind": "EventList", "items": [event(50)]}).encode()
    status, answer = asyncio.run(sink.ingest(body))
    assert (status, answer["lastSeq"]) == (200, 8)
    asyncio.run(sink.verify_sealed())
    assert "seq 9 (line 6)" in sink.state.chain_break
    assert REGISTRY.get_sample_value("iotsec_audit_chain_intact") == 0


def test_a_forgery_found_while_running_is_not_sealed_and_is_reported(tmp_path):
    clock = Clock()
    store = with_open_batches(tmp_path, clock)
    told: list[str] = []
    store.on_quarantine = told.append
    rewrite_from(open_segment(tmp_path), 12)
    assert store.seal() is not None  # seals seq 5..10, which the checkpoints still vouch for
    assert store.sealed_segments()[-1]["lastSeq"] == 10
    assert b'"verb":"delete"' not in sealed_bytes(tmp_path)
    assert told
    assert "record seq 12" in told[0]
    assert store.next_seq == 11
    store.append([event(11)])
    report = verify(tmp_path, KEY.public_key(), sealed_only=True)
    assert report.broken.seq == 12


# ---------------------------------------------------------------------------------------------- stores from before


def legacy_store(root: Path, sealed: int = 1, open_records: int = 3) -> str:
    """A store as written before checkpoints: plain records, seals without a checkpoint count."""
    folder = root / chain.SEGMENTS
    folder.mkdir(parents=True)
    (root / chain.PUBLIC_KEY).write_bytes(chain.public_pem(KEY.public_key()))
    prev, seq = chain.GENESIS, 1
    for number in range(1, sealed + 2):
        data = b""
        count = 3 if number <= sealed else open_records
        first, before = seq, prev
        for _ in range(count):
            line, prev = chain.record_line(seq, prev, f"2026-10-0{number}T00:00:00.000000Z", "apiserver", event(seq))
            data += line
            seq += 1
        path = folder / f"{number:010d}.jsonl"
        path.write_bytes(data)
        if number <= sealed:
            body = {
                "segment": path.name,
                "firstSeq": first,
                "lastSeq": seq - 1,
                "records": count,
                "prevHead": before,
                "head": prev,
                "sha256": chain.digest(data),
                "firstTime": "2026-10-01T00:00:00.000000Z",
                "lastTime": "2026-10-01T00:00:00.000000Z",
                "sealedAt": "2026-10-02T00:00:00.000000Z",
                "keyID": chain.key_id(KEY.public_key()),
            }
            chain.seal_path(path).write_text(json.dumps(chain.sign(body, KEY)))
    return prev


def test_a_legacy_store_verifies_and_its_open_segment_is_listed_unverified(tmp_path):
    legacy_store(tmp_path)
    report = verify(tmp_path, KEY.public_key())
    assert report.ok
    assert report.records == 6
    assert report.unverified == [
        "0000000002.jsonl seq 4..6: open segment written before checkpoints; no signature covers it "
        "(the store seals it as unverified at its next start)"
    ]


def test_a_legacy_open_segment_is_sealed_as_unverified_and_new_records_get_checkpoints(tmp_path, caplog):
    head = legacy_store(tmp_path)
    with caplog.at_level(logging.WARNING, logger="iotsec.audittrail.store"):
        store = open_store(tmp_path)
    assert len(caplog.records) == 1
    assert "written before checkpoints (seq 4..6)" in caplog.records[0].getMessage()
    assert (store.next_seq, store.head) == (7, head)
    sealed = store.last_sealed
    assert "checkpoints" not in sealed
    assert "written before checkpoints" in sealed["unverified"]
    store.append([event(7)])
    store.seal()
    report = verify(tmp_path, KEY.public_key())
    assert report.ok, report.broken
    assert (report.records, report.sealed) == (7, 3)
    assert report.unverified == [f"0000000002.jsonl seq 4..6: {sealed['unverified']}"]
    text = _verify_text(report)
    assert "UNVERIFIED: 0000000002.jsonl seq 4..6" in text
    assert text.splitlines()[-1].startswith("OK: every hash, link and signature verifies; the UNVERIFIED records")


def test_after_the_upgrade_an_open_segment_stripped_of_checkpoints_is_not_taken_for_a_legacy_one(tmp_path):
    clock = Clock()
    legacy_store(tmp_path)
    store = open_store(tmp_path, clock)
    for first in (7, 9):
        clock.advance(seconds=1)
        store.append([event(first), event(first + 1)])
    path = open_segment(tmp_path)
    path.write_bytes(b"".join(line for line in path.read_bytes().splitlines(True) if not chain.is_checkpoint(line)))
    assert "not one batch cut short by a crash" in verify(tmp_path, KEY.public_key()).broken.what
    restarted = open_store(tmp_path, clock)
    assert restarted.next_seq == 7
    assert restarted.last_sealed["lastSeq"] == 6
    assert "unverified" in restarted.last_sealed


def test_retention_and_export_handle_checkpointed_and_unverified_segments(tmp_path):
    legacy_store(tmp_path / "store", sealed=2)
    clock = Clock()
    store = open_store(tmp_path / "store", clock)
    store.append([event(10)])
    store.seal()
    out = tmp_path / "bundle"
    names = export_bundle(tmp_path / "store", out, None, None)
    assert len(names) == 4
    bundle = verify(out, KEY.public_key(), bundle=True)
    assert bundle.ok
    assert len(bundle.unverified) == 1
    clock.advance(days=500)
    mark_exported(tmp_path / "store", names)
    assert store.apply_retention(timedelta(days=400), None) == names
    assert verify(tmp_path / "store", KEY.public_key()).ok
    assert store.hash_at(10) is None


# ---------------------------------------------------------------------------------------------- the downgrade


def strip_checkpoints(path: Path) -> None:
    path.write_bytes(b"".join(line for line in path.read_bytes().splitlines(True) if not chain.is_checkpoint(line)))


def first_segment_batches(root: Path, clock: Clock) -> Path:
    """A new store that has sealed nothing yet: its first (open) segment holds seq 1..6 in three batches."""
    store = open_store(root, clock)
    for first in (1, 3, 5):
        clock.advance(seconds=1)
        store.append([event(first), event(first + 1)])
    return open_segment(root)


def test_a_new_store_says_durably_and_signed_that_it_writes_checkpoints(tmp_path):
    open_store(tmp_path)
    marker = chain.read_json(tmp_path / FORMAT_FILE)
    assert marker["format"] == FORMAT
    assert chain.signature_valid(marker, KEY.public_key())


def test_the_first_segment_stripped_of_checkpoints_is_a_forgery_not_a_legacy_segment(tmp_path):
    clock = Clock()
    forged = first_segment_batches(tmp_path, clock)
    rewrite_from(forged, 2)
    strip_checkpoints(forged)
    report = verify(tmp_path, KEY.public_key())
    assert not report.ok
    assert not report.unverified
    assert "not one batch cut short by a crash" in report.broken.what

    restarted = open_store(tmp_path, clock)
    assert restarted.last_sealed is None, "nothing sealed, least of all as unverified legacy"
    assert restarted.next_seq == 1
    assert chain.quarantined_files(tmp_path)
    restarted.append([event(100)])
    restarted.seal()
    assert b'"verb":"delete"' not in sealed_bytes(tmp_path)
    assert "unverified" not in restarted.last_sealed


def test_one_forged_batch_in_the_first_segment_is_cut_never_sealed(tmp_path):
    clock = Clock()
    store = open_store(tmp_path, clock)
    store.append([event(1), event(2), event(3)])
    forged = open_segment(tmp_path)
    rewrite_from(forged, 1)
    strip_checkpoints(forged)
    restarted = open_store(tmp_path, clock)
    assert restarted.last_sealed is None
    assert (restarted.next_seq, restarted.head) == (1, chain.GENESIS), "never acknowledged: cut"
    assert forged.read_bytes() == b""


def test_verify_fails_on_unverified_segments_unless_legacy_is_allowed(tmp_path, capsys):
    clock = Clock()
    forged = first_segment_batches(tmp_path, clock)
    strip_checkpoints(forged)
    (tmp_path / FORMAT_FILE).unlink()  # the forger removes the marker too: now it looks like a legacy store
    assert verify(tmp_path, KEY.public_key()).unverified
    assert cli.main(["audit", "verify", str(tmp_path)]) == 1
    assert "UNVERIFIED segments" in capsys.readouterr().err
    assert cli.main(["audit", "verify", str(tmp_path), "--allow-legacy"]) == 0


def test_a_legacy_store_is_marked_once_opened_so_a_later_downgrade_is_a_forgery(tmp_path):
    legacy_store(tmp_path)
    assert not (tmp_path / FORMAT_FILE).exists()
    open_store(tmp_path)
    assert chain.signature_valid(chain.read_json(tmp_path / FORMAT_FILE), KEY.public_key())


def test_an_edited_format_marker_is_a_break(tmp_path):
    open_store(tmp_path).append([event(1)])
    marker = chain.read_json(tmp_path / FORMAT_FILE)
    marker["format"] = "none"
    (tmp_path / FORMAT_FILE).write_text(json.dumps(marker))
    broken = verify(tmp_path, KEY.public_key()).broken
    assert broken.segment == FORMAT_FILE
    assert "does not verify" in broken.what
