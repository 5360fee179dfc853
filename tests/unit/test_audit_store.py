"""The audit store and verify: chain, seals, tampering located, full disk, retention, export (X1369-9.6.4-2/-4/-5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from iotsec.audittrail import chain
from iotsec.audittrail.store import AuditStore, StoreFullError, export_bundle, mark_exported
from iotsec.audittrail.verify import verify

KEY = Ed25519PrivateKey.generate()


class Clock:
    def __init__(self) -> None:
        self.moment = datetime(2026, 11, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


def event(n: int, verb: str = "create") -> dict:
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "auditID": f"id-{n}",
        "stage": "ResponseComplete",
        "verb": verb,
        "user": {"username": "alice", "groups": ["platform:sre"]},
        "objectRef": {"resource": "configmaps", "namespace": "default", "name": f"cm-{n}"},
        "responseStatus": {"code": 201},
    }


def filled(root: Path, clock: Clock | None = None, batches: int = 3, per_batch: int = 10, **kwargs) -> AuditStore:
    """A store with `batches` sealed segments of `per_batch` records each."""
    clock = clock or Clock()
    store = AuditStore(root, KEY, limit_bytes=10 * 2**20, clock=clock, **kwargs)
    for b in range(batches):
        store.append([event(b * per_batch + i) for i in range(per_batch)])
        clock.advance(hours=1)
        store.seal()
    return store


def segment(root: Path, number: int) -> Path:
    return chain.segment_files(root)[number - 1]


def test_records_chain_across_segments_and_each_segment_is_sealed(tmp_path):
    store = filled(tmp_path)
    report = verify(tmp_path, KEY.public_key())
    assert report.ok, report.broken
    assert (report.records, report.segments, report.sealed) == (30, 3, 3)
    assert report.head == store.head
    seals = store.sealed_segments()
    assert [(s["firstSeq"], s["lastSeq"]) for s in seals] == [(1, 10), (11, 20), (21, 30)]
    assert seals[1]["prevHead"] == seals[0]["head"]
    assert all(s["keyID"] == chain.key_id(KEY.public_key()) for s in seals)


def test_an_open_segment_is_chain_checked_and_reported_unsealed(tmp_path):
    store = filled(tmp_path, batches=1)
    store.append([event(100)])
    report = verify(tmp_path, KEY.public_key())
    assert report.ok
    assert report.records == 11
    assert report.sealed == 1
    assert any("open (not sealed yet)" in note for note in report.notes)


def test_a_restarted_store_continues_the_chain(tmp_path):
    clock = Clock()
    store = filled(tmp_path, clock)
    store.append([event(31)])
    again = AuditStore(tmp_path, KEY, limit_bytes=10 * 2**20, clock=clock)
    assert (again.head, again.next_seq, again.records) == (store.head, 32, 31)
    again.append([event(32)])
    assert verify(tmp_path, KEY.public_key()).records == 32


def test_a_half_written_record_from_a_crash_is_cut_on_restart(tmp_path):
    store = filled(tmp_path, batches=1)
    store.append([event(11), event(12)])
    open_segment = segment(tmp_path, 2)
    with open_segment.open("ab") as handle:
        handle.write(b'deadbeef {"seq": 13, "pre')
    again = AuditStore(tmp_path, KEY, limit_bytes=10 * 2**20)
    assert again.next_seq == 13
    again.append([event(13)])
    assert verify(tmp_path, KEY.public_key()).ok


def test_segments_are_sealed_by_size_and_by_age(tmp_path):
    clock = Clock()
    store = AuditStore(tmp_path, KEY, limit_bytes=10 * 2**20, segment_bytes=4096, clock=clock)
    for n in range(40):
        store.append([event(n)])
    sizes = [p.stat().st_size for p in chain.segment_files(tmp_path)]
    assert len(store.sealed_segments()) == len(sizes) - 1 >= 3
    assert all(4096 <= size < 4096 + 1000 for size in sizes[:-1])  # sealed at the first batch past the size
    by_age = AuditStore(
        tmp_path / "age", KEY, limit_bytes=10 * 2**20, segment_max_age=timedelta(minutes=5), clock=clock
    )
    by_age.append([event(1)])
    assert by_age.seal_if_due() is None
    clock.advance(minutes=6)
    assert by_age.seal_if_due()["records"] == 1


# ---------------------------------------------------------------- tampering, each detected and located


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_an_edited_byte_is_located_at_its_record(tmp_path):
    filled(tmp_path)
    seg = segment(tmp_path, 2)
    lines = _lines(seg)
    lines[3] = lines[3].replace(b'"alice"', b'"mallo"')
    seg.write_bytes(b"".join(lines))
    broken = verify(tmp_path, KEY.public_key()).broken
    assert (broken.segment, broken.seq, broken.line) == (seg.name, 14, 4)
    assert "edited" in broken.what


def test_a_record_rewritten_with_a_fresh_hash_is_caught_by_its_successor(tmp_path):
    filled(tmp_path)
    seg = segment(tmp_path, 1)
    lines = _lines(seg)
    record = json.loads(chain.split_line(lines[4])[1])
    record["event"]["verb"] = "get"
    body = chain.canonical(record)
    lines[4] = chain.digest(body).encode() + b" " + body + b"\n"
    seg.write_bytes(b"".join(lines))
    broken = verify(tmp_path, KEY.public_key()).broken
    assert (broken.seq, broken.line) == (6, 6)
    assert "seq 5 was rewritten" in broken.what


def test_a_deleted_record_is_located(tmp_path):
    filled(tmp_path)
    seg = segment(tmp_path, 3)
    lines = _lines(seg)
    del lines[2]
    seg.write_bytes(b"".join(lines))
    broken = verify(tmp_path, KEY.public_key()).broken
    assert (broken.segment, broken.seq, broken.line) == (seg.name, 23, 3)
    assert "holds seq 24 where seq 23 belongs" in broken.what


def test_reordered_records_are_located(tmp_path):
    filled(tmp_path)
    seg = segment(tmp_path, 1)
    lines = _lines(seg)
    lines[6], lines[7] = lines[7], lines[6]
    seg.write_bytes(b"".join(lines))
    broken = verify(tmp_path, KEY.public_key()).broken
    assert (broken.seq, broken.line) == (7, 7)
    assert "reordered" in broken.what


def test_a_truncated_segment_is_located(tmp_path):
    filled(tmp_path)
    seg = segment(tmp_path, 2)
    seg.write_bytes(b"".join(_lines(seg)[:7]))
    broken = verify(tmp_path, KEY.public_key()).broken
    assert broken.segment == seg.name
    assert "seq 11..20 (10 records), the file holds 7 (up to seq 17): truncated, seq 18.. are missing" in broken.what


def test_a_segment_cut_mid_record_is_located(tmp_path):
    filled(tmp_path)
    seg = segment(tmp_path, 2)
    checkpoint = _lines(seg)[-1]
    seg.write_bytes(seg.read_bytes()[: -len(checkpoint) - 40])
    broken = verify(tmp_path, KEY.public_key()).broken
    assert (broken.seq, broken.line) == (20, 10)
    assert "truncated mid-record" in broken.what


def test_a_segment_replaced_and_resigned_with_another_key_is_detected(tmp_path):
    filled(tmp_path)
    forger = Ed25519PrivateKey.generate()
    fake_root = tmp_path / "forged"
    forged = AuditStore(fake_root, forger, limit_bytes=2**20)
    forged.append([event(n, verb="get") for n in range(10)])
    forged.seal()
    victim = segment(tmp_path, 1)
    victim.write_bytes(segment(fake_root, 1).read_bytes())
    chain.seal_path(victim).write_bytes(chain.seal_path(segment(fake_root, 1)).read_bytes())
    broken = verify(tmp_path, KEY.public_key()).broken
    assert broken.segment == victim.name
    assert f"signed by key {chain.key_id(forger.public_key())}, not the store key" in broken.what


def test_a_deleted_segment_is_detected(tmp_path):
    filled(tmp_path)
    seg = segment(tmp_path, 2)
    chain.seal_path(seg).unlink()
    seg.unlink()
    broken = verify(tmp_path, KEY.public_key()).broken
    assert broken.segment == segment(tmp_path, 2).name
    assert "starts at seq 21, expected 11: records 11..20 are missing" in broken.what


def test_an_edited_seal_is_detected(tmp_path):
    filled(tmp_path)
    path = chain.seal_path(segment(tmp_path, 1))
    sealed = json.loads(path.read_text())
    sealed["lastTime"] = "2030-01-01T00:00:00.000000Z"
    path.write_text(json.dumps(sealed))
    assert "seal was edited" in verify(tmp_path, KEY.public_key()).broken.what


def test_verify_says_which_key_it_trusted(tmp_path):
    filled(tmp_path, batches=1)
    assert verify(tmp_path).key_source == "signing.pub in the folder"
    assert verify(tmp_path, KEY.public_key()).key_source == "given by the caller"
    other = verify(tmp_path, Ed25519PrivateKey.generate().public_key())
    assert not other.ok
    assert "not the store key" in other.broken.what


# ---------------------------------------------------------------- never lost when storage fills


def test_a_batch_past_the_limit_is_refused_whole_and_nothing_accepted_is_lost(tmp_path):
    store = AuditStore(tmp_path, KEY, limit_bytes=80 * 1024, reserve_bytes=4096)
    accepted, refusals = 0, []
    for b in range(200):
        try:
            store.append([event(b * 5 + i) for i in range(5)])
            accepted += 5
        except StoreFullError as exc:
            refusals.append(str(exc))
    assert refusals
    assert all("does not fit" in message for message in refusals)
    assert accepted > 0
    used = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert used <= 80 * 1024
    report = verify(tmp_path, KEY.public_key())
    assert report.ok
    assert report.records == accepted == store.records


def test_the_disk_refusing_a_write_midway_rolls_back_to_whole_records(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse the write (EFBIG) part-way, as a full disk would (ENOSPC)."""
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from iotsec.audittrail.store import AuditStore, StoreFullError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        store = AuditStore(Path({str(tmp_path)!r}), Ed25519PrivateKey.generate(), limit_bytes=1 << 30)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        accepted = 0
        for b in range(100):
            try:
                store.append([{{"n": b, "pad": "x" * 700}} for _ in range(3)])
                accepted += 3
            except StoreFullError as exc:
                print("refused", exc, file=sys.stderr)
                break
        print(accepted)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    accepted = int(done.stdout.strip())
    assert "the volume refused the write" in done.stderr
    seg = chain.segment_files(tmp_path)[0]
    assert seg.read_bytes().endswith(b"\n")
    report = verify(tmp_path)
    assert report.ok
    assert report.records == accepted > 0


def test_a_real_small_filesystem_fills_without_losing_accepted_records(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the RLIMIT test covers the path")
    try:
        store = AuditStore(mount, KEY, limit_bytes=1 << 30, reserve_bytes=8192)
        accepted = _append_until_full(store)
        assert store.capacity() <= 256 * 1024
        report = verify(mount, KEY.public_key())
        assert report.ok
        assert report.records == accepted > 100
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _append_until_full(store: AuditStore) -> int:
    for n in range(100_000):
        try:
            store.append([event(n)])
        except StoreFullError:
            return n
    raise AssertionError("the store never filled")


# ---------------------------------------------------------------- retention and export


def test_retention_never_deletes_an_unexported_segment(tmp_path):
    clock = Clock()
    store = filled(tmp_path, clock, batches=4)
    clock.advance(days=500)
    assert store.apply_retention(timedelta(days=400), backed_up_before=None) == []
    mark_exported(tmp_path, [segment(tmp_path, 2).name])
    assert store.apply_retention(timedelta(days=400), backed_up_before=None) == []  # segment 1 blocks the prefix
    mark_exported(tmp_path, [segment(tmp_path, 1).name])
    deleted = store.apply_retention(timedelta(days=400), backed_up_before=None)
    assert len(deleted) == 2
    assert len(chain.segment_files(tmp_path)) == 2
    report = verify(tmp_path, KEY.public_key())
    assert report.ok
    assert report.records == 20
    assert report.first_seq == 21
    assert any("deleted by retention" in note for note in report.notes)


def test_retention_deletes_backed_up_segments_only_past_the_retention(tmp_path):
    clock = Clock()
    store = filled(tmp_path, clock, batches=4)
    backup_time = clock() - timedelta(hours=1, minutes=30)  # segments 1 and 2 were sealed before it
    first_two = [segment(tmp_path, 1).name, segment(tmp_path, 2).name]
    assert store.apply_retention(timedelta(days=400), backed_up_before=backup_time) == []
    clock.advance(days=401)
    assert store.apply_retention(timedelta(days=400), backed_up_before=backup_time) == first_two
    assert verify(tmp_path, KEY.public_key()).ok


def test_deleting_the_oldest_segment_without_retention_is_detected(tmp_path):
    filled(tmp_path)
    seg = segment(tmp_path, 1)
    chain.seal_path(seg).unlink()
    seg.unlink()
    broken = verify(tmp_path, KEY.public_key()).broken
    assert "expected 1: records 1..10 are missing" in broken.what


def test_a_forged_tombstone_is_detected(tmp_path):
    clock = Clock()
    store = filled(tmp_path, clock)
    clock.advance(days=500)
    mark_exported(tmp_path, [segment(tmp_path, 1).name])
    store.apply_retention(timedelta(days=400), None)
    tombstone = tmp_path / chain.TOMBSTONE
    data = json.loads(tombstone.read_text())
    data["lastSeq"] = 20
    tombstone.write_text(json.dumps(data))
    assert "tombstone signature" in verify(tmp_path, KEY.public_key()).broken.what


def test_an_export_bundle_verifies_on_its_own_and_marks_segments_exported(tmp_path):
    clock = Clock()
    store = filled(tmp_path / "store", clock, batches=4)
    seals = store.sealed_segments()
    since = chain.parse_time(seals[1]["firstTime"])
    until = chain.parse_time(seals[2]["lastTime"])
    out = tmp_path / "bundle"
    names = export_bundle(tmp_path / "store", out, since, until)
    assert names == [seals[1]["segment"], seals[2]["segment"]]
    report = verify(out, KEY.public_key(), bundle=True)
    assert report.ok
    assert report.records == 20
    assert report.first_seq == 11
    assert store.exported() == set(names)
    assert "starts at seq 11, expected 1" in verify(out, KEY.public_key()).broken.what  # not a store


def test_a_bundle_missing_a_listed_segment_is_detected(tmp_path):
    clock = Clock()
    filled(tmp_path / "store", clock, batches=4)
    out = tmp_path / "bundle"
    names = export_bundle(tmp_path / "store", out, None, None)
    os.remove(out / chain.SEGMENTS / names[-1])
    os.remove(out / chain.SEGMENTS / chain.seal_path(Path(names[-1])).name)
    broken = verify(out, KEY.public_key(), bundle=True).broken
    assert broken.segment == chain.BUNDLE
    assert f"missing ['{names[-1]}']" in broken.what


def test_a_bundle_file_dropped_into_a_store_does_not_hide_deleted_segments(tmp_path):
    filled(tmp_path)
    first = segment(tmp_path, 1)
    chain.seal_path(first).unlink()
    first.unlink()
    (tmp_path / chain.BUNDLE).write_text("{}")
    assert "starts at seq 11, expected 1" in verify(tmp_path, KEY.public_key()).broken.what


def test_cutting_off_the_newest_records_is_caught_against_the_published_head(tmp_path):
    store = filled(tmp_path)
    store.append([event(30), event(31)])
    published = (store.next_seq - 1, store.head)  # what the sink wrote into the AuditPolicy status
    newest = segment(tmp_path, 3)
    chain.seal_path(newest).unlink()
    newest.unlink()
    segment(tmp_path, 3).unlink()  # the open segment too: the chain now ends cleanly at seq 20
    assert verify(tmp_path, KEY.public_key()).ok  # a chain alone cannot see its tail cut off
    broken = verify(tmp_path, KEY.public_key(), expect=published).broken
    assert "the chain ends at seq 20 but seq 32 was published: records 21..32 were cut off" in broken.what


def test_an_open_segment_rewritten_without_its_checkpoints_is_cut_and_caught_against_the_published_head(tmp_path):
    """One batch rewritten and its checkpoint dropped looks like a write a crash cut short: the store cuts it (it
    never signs it), and what was cut off shows against the published head."""
    store = filled(tmp_path, batches=1)
    store.append([event(n) for n in range(10, 15)])
    published = (store.next_seq - 1, store.head)
    open_segment = segment(tmp_path, 2)
    lines, prev = [], store.sealed_segments()[0]["head"]
    for seq in range(11, 16):
        line, prev = chain.record_line(seq, prev, "2026-11-01T00:00:00.000000Z", "apiserver", event(seq, verb="get"))
        lines.append(line)
    open_segment.write_bytes(b"".join(lines))
    restarted = AuditStore(tmp_path, KEY, limit_bytes=2**20)
    assert restarted.seal() is None
    assert restarted.next_seq == 11
    assert verify(tmp_path, KEY.public_key()).ok
    broken = verify(tmp_path, KEY.public_key(), expect=published).broken
    assert "the chain ends at seq 10 but seq 15 was published: records 11..15 were cut off" in broken.what


def test_a_retention_run_interrupted_after_its_tombstone_is_finished_on_restart(tmp_path):
    clock = Clock()
    filled(tmp_path, clock, batches=3)
    clock.advance(days=500)
    mark_exported(tmp_path, [segment(tmp_path, 1).name, segment(tmp_path, 2).name])
    doomed = [segment(tmp_path, 1), segment(tmp_path, 2)]
    kept = {p: p.read_bytes() for p in doomed + [chain.seal_path(p) for p in doomed]}
    AuditStore(tmp_path, KEY, limit_bytes=2**20, clock=clock).apply_retention(timedelta(days=400), None)
    for path, data in kept.items():  # as if the crash came before the deletions
        path.write_bytes(data)
    assert verify(tmp_path, KEY.public_key()).ok
    again = AuditStore(tmp_path, KEY, limit_bytes=2**20, clock=clock)
    assert [p.name for p in chain.segment_files(tmp_path)] == [segment(tmp_path, 1).name]
    assert again.records == 10


def test_retention_stops_at_a_seal_it_cannot_trust(tmp_path):
    clock = Clock()
    store = filled(tmp_path, clock, batches=3)
    clock.advance(days=500)
    mark_exported(tmp_path, [p.name for p in chain.segment_files(tmp_path)])
    path = chain.seal_path(segment(tmp_path, 2))
    forged = json.loads(path.read_text())
    forged["lastSeq"] = 30
    path.write_text(json.dumps(forged))
    first = segment(tmp_path, 1).name
    assert store.apply_retention(timedelta(days=400), None) == [first]


def test_export_marks_nothing_when_the_copy_does_not_verify(tmp_path):
    clock = Clock()
    filled(tmp_path / "store", clock, batches=2)
    seg = segment(tmp_path / "store", 2)
    seg.write_bytes(seg.read_bytes().replace(b"alice", b"mallo", 1))
    with pytest.raises(ValueError, match="does not verify"):
        export_bundle(tmp_path / "store", tmp_path / "bundle", None, None)
    assert AuditStore(tmp_path / "store", KEY, limit_bytes=2**20).exported() == set()


def test_a_record_with_fields_of_the_wrong_type_is_a_break_not_a_crash(tmp_path):
    filled(tmp_path, batches=1)
    seg = segment(tmp_path, 1)
    lines = _lines(seg)
    body = chain.canonical({"seq": 1, "prev": 5, "time": "x", "source": "apiserver", "event": {}})
    lines[0] = chain.digest(body).encode() + b" " + body + b"\n"
    seg.write_bytes(b"".join(lines))
    broken = verify(tmp_path, KEY.public_key()).broken
    assert (broken.seq, broken.line) == (1, 1)
    assert "not a record" in broken.what
