"""The record and seal formats of the audit chain, shared by the store (writes) and verify (reads).

A record is one line: `<sha256 hex of the JSON> <canonical JSON>\n`. The JSON carries `seq` (1, 2, …
across all segments), `prev` (the previous record's hash; 64 zeros for the first) and the payload. Hashing
the stored bytes, not a re-serialisation, makes verification a straight read and lets it say which record
changed: an edited record no longer matches its own hash, a rewritten one no longer matches its successor's
`prev`.

A checkpoint is one line, `checkpoint <canonical JSON>\n`, written after each accepted batch in the same write
and fsync, signed like a seal: the segment, the batch's seq range, its head hash, the first 16 hex digits of
each of its records' hashes (to name the first rewritten record, not for security: the signed head covers
the whole chain) and the time. Records no checkpoint covers were never acknowledged to the caller.

A seal is a JSON file beside a closed segment, signed with Ed25519 over its canonical JSON without the
signature: the record range, the hash before the first record, the head hash, the file's digest and times,
and the number of checkpoints in it (absent in segments sealed before checkpoints existed).
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from iotsec.model import pem
from iotsec.model.time import parse_rfc3339, rfc3339

GENESIS = "0" * 64
SEGMENTS = "segments"
RECORD_SUFFIX = ".jsonl"
SEAL_SUFFIX = ".seal.json"
PUBLIC_KEY = "signing.pub"
TOMBSTONE = "pruned.json"
BUNDLE = "bundle.json"
EXPORTS = "exports.json"
QUARANTINE = "quarantine"
CHECKPOINT = b"checkpoint "
MARK_DIGITS = 16


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_line(seq: int, prev: str, time: str, source: str, event: Any) -> tuple[bytes, str]:
    """The stored line of one record and its hash."""
    body = canonical({"seq": seq, "prev": prev, "time": time, "source": source, "event": event})
    hashed = digest(body)
    return hashed.encode() + b" " + body + b"\n", hashed


def split_line(line: bytes) -> tuple[str, bytes]:
    """(recorded hash, JSON bytes) of a stored line; ValueError when it has not that shape."""
    hashed, sep, body = line.rstrip(b"\n").partition(b" ")
    if not sep or len(hashed) != 64:
        raise ValueError("not a '<hash> <json>' record line")
    return hashed.decode("ascii", "replace"), body


def checkpoint_line(
    key: Ed25519PrivateKey, key_id_: str, segment: str, first_seq: int, hashes: list[str], time: str
) -> bytes:
    """The signed checkpoint line that follows a batch whose records hash to `hashes`."""
    body = {
        "segment": segment,
        "firstSeq": first_seq,
        "lastSeq": first_seq + len(hashes) - 1,
        "head": hashes[-1],
        "hashes": [hashed[:MARK_DIGITS] for hashed in hashes],
        "time": time,
        "keyID": key_id_,
    }
    return CHECKPOINT + canonical(sign(body, key)) + b"\n"


def is_checkpoint(line: bytes) -> bool:
    return line.startswith(CHECKPOINT)


def parse_checkpoint(line: bytes) -> dict[str, Any]:
    """The signed JSON of a checkpoint line; ValueError when it is not one."""
    value = json.loads(line[len(CHECKPOINT) :])
    if not isinstance(value, dict):
        raise ValueError("a checkpoint is a JSON object")
    return value


def timestamp(moment: datetime) -> str:
    """How the chain writes times: microseconds always (records hash these bytes, so the format is fixed)."""
    return rfc3339(moment, "microseconds")


def parse_time(text: str) -> datetime:
    return parse_rfc3339(text, "audit chain time")


def key_id(public: Ed25519PublicKey) -> str:
    return digest(pem.raw_public_key(public))[:16]


def sign(body: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    signature = base64.b64encode(key.sign(canonical(body))).decode()
    return {**body, "signature": signature}


def signature_valid(sealed: dict[str, Any], public: Ed25519PublicKey) -> bool:
    body = {k: v for k, v in sealed.items() if k != "signature"}
    try:
        public.verify(base64.b64decode(sealed.get("signature", "")), canonical(body))
    except Exception:  # InvalidSignature, or a signature that is not base64 at all
        return False
    return True


def public_pem(public: Ed25519PublicKey) -> bytes:
    return pem.public_key_pem(public).encode("ascii")


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return pem.private_key_pem(key).encode("ascii")


def private_key_from_pem(pem: bytes, where: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{where} is not an Ed25519 private key")
    return key


def load_or_create_private_key(path: Path) -> Ed25519PrivateKey:
    """The sink's signing key (PKCS#8 PEM); created with mode 0600 when the file does not exist."""
    if path.exists():
        return private_key_from_pem(path.read_bytes(), str(path))
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_bytes(private_pem(key))
    return key


def seal_path(segment: Path) -> Path:
    return segment.with_name(segment.name.removesuffix(RECORD_SUFFIX) + SEAL_SUFFIX)


def segment_files(root: Path) -> list[Path]:
    folder = root / SEGMENTS
    return sorted(folder.glob("*" + RECORD_SUFFIX)) if folder.is_dir() else []


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def quarantined_files(root: Path) -> list[Path]:
    """Segments the store set aside (forged or corrupt), kept for forensics, never deleted by the store."""
    folder = root / QUARANTINE
    return sorted(folder.glob("*" + RECORD_SUFFIX)) if folder.is_dir() else []


def reason_path(quarantined: Path) -> Path:
    return quarantined.with_name(quarantined.name.removesuffix(RECORD_SUFFIX) + ".reason.json")


def segment_number(name: str) -> int:
    """The number of a segment file name, also of a quarantined one (`0000000003-<time>.jsonl`)."""
    return int(name.removesuffix(RECORD_SUFFIX).split("-", 1)[0])
