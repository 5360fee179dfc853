"""Per-application keys (X.1369: a unique key per application, created, distributed, stored and rotated) (pure).

Everything here is a function of its arguments: times are passed in, nothing reads files, sockets or the cluster.
Algorithms are HMAC-SHA-256 (a 256-bit random secret) and Ed25519; no MD5 or SHA-1 anywhere.
Key material never appears in a repr, an error message or a reason: only key ids, which are safe to show.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from iotsec.model import pem, secretdata
from iotsec.model.time import parse_rfc3339, rfc3339, utc

HMAC_SHA256 = "hmac-sha256"
ED25519 = "ed25519"
ALGORITHMS = (HMAC_SHA256, ED25519)

HMAC_KEY_BYTES = 32
"""Size of an HMAC-SHA-256 secret: the hash's output size (RFC 2104 section 3)."""

KEY_ALGORITHM = "algorithm"
KEY_KEY_ID = "key-id"
KEY_CREATED = "created"
KEY_SECRET = "key"
KEY_PUBLIC = "public.pem"
KEY_PREVIOUS_ALGORITHM = "previous-algorithm"
KEY_PREVIOUS_KEY_ID = "previous-key-id"
KEY_PREVIOUS_CREATED = "previous-created"
KEY_PREVIOUS_SECRET = "previous-key"
KEY_PREVIOUS_PUBLIC = "previous-public.pem"
KEY_PREVIOUS_RETIRES = "previous-retires"
KEY_ROTATION_REQUEST = "rotation-request"


APP_KEY = "application key"  # how errors about its Secret name it


# --- private helpers -------------------------------------------------------------------------------------------------


def _stamp(moment: datetime) -> str:
    """How key times are written: sub-second precision kept, so that a round trip is exact."""
    return rfc3339(moment, "auto")


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown key algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")


def _key_id(public_material: bytes) -> str:
    return "k-" + hashlib.sha256(public_material).hexdigest()[:16]


def _hmac_bytes(secret: str) -> bytes:
    """The raw HMAC secret; the error never quotes the value."""
    try:
        raw = base64.b64decode(secret.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeError):
        raise ValueError("is not base64") from None
    if len(raw) != HMAC_KEY_BYTES:
        raise ValueError(f"decodes to {len(raw)} bytes, expected {HMAC_KEY_BYTES}")
    return raw


def _ed25519_private(secret: str) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(secret.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeError):
        raise ValueError("is not an unencrypted PEM private key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"is a {type(key).__name__}, not an Ed25519 private key")
    return key


def _ed25519_public(public: str) -> ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(public.encode("ascii"))
    except (ValueError, TypeError, UnicodeError):
        raise ValueError("is not a PEM public key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError(f"is a {type(key).__name__}, not an Ed25519 public key")
    return key


# --- keys ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppKey:
    """One application key. Its repr shows the algorithm, key id and creation time only."""

    algorithm: str
    key_id: str
    """`k-` and the first 16 hex digits of SHA-256 over the public material; unique and safe to show."""
    created: datetime
    """Timezone-aware UTC."""
    secret: str = field(repr=False)
    """hmac-sha256: base64 of 32 random bytes; ed25519: unencrypted PKCS#8 PEM private key."""
    public: str | None = field(repr=False)
    """ed25519: SubjectPublicKeyInfo PEM public key; hmac-sha256: None."""

    def __post_init__(self) -> None:
        _check_algorithm(self.algorithm)
        utc(self.created, "created")
        if (self.public is None) != (self.algorithm == HMAC_SHA256):
            raise ValueError(f"{self.algorithm} key {self.key_id}: a public key goes with ed25519 keys only")


def new_key(algorithm: str, now: datetime) -> AppKey:
    """Fresh key material from the operating system's CSPRNG, never derived from anything else."""
    _check_algorithm(algorithm)
    now = utc(now)
    if algorithm == HMAC_SHA256:
        raw = secrets.token_bytes(HMAC_KEY_BYTES)
        return AppKey(
            algorithm=algorithm,
            key_id=_key_id(hashlib.sha256(raw).digest()),
            created=now,
            secret=base64.b64encode(raw).decode("ascii"),
            public=None,
        )
    private = ed25519.Ed25519PrivateKey.generate()
    public = private.public_key()
    return AppKey(
        algorithm=algorithm,
        key_id=_key_id(pem.raw_public_key(public)),
        created=now,
        secret=pem.private_key_pem(private),
        public=pem.public_key_pem(public),
    )


class _InvalidKeyError(ValueError):
    """A problem with one part of a key (`part`: secret, public, pair or key_id); the message never quotes material."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(message)
        self.part = part


def _validate(key: AppKey) -> None:
    if key.algorithm == HMAC_SHA256:
        try:
            raw = _hmac_bytes(key.secret)
        except ValueError as e:
            raise _InvalidKeyError("secret", str(e)) from None
        expected = _key_id(hashlib.sha256(raw).digest())
    else:
        try:
            private = _ed25519_private(key.secret)
        except ValueError as e:
            raise _InvalidKeyError("secret", str(e)) from None
        try:
            public = pem.raw_public_key(_ed25519_public(key.public or ""))
        except ValueError as e:
            raise _InvalidKeyError("public", str(e)) from None
        if public != pem.raw_public_key(private.public_key()):
            raise _InvalidKeyError("pair", "does not match the private key")
        expected = _key_id(public)
    if key.key_id != expected:
        raise _InvalidKeyError("key_id", f"is {key.key_id!r}, which does not match the key material ({expected})")


def check_key(key: AppKey) -> None:
    """ValueError unless the material is well-formed for its algorithm and matches `public` and `key_id`.

    The message names the problem, never the material.
    """
    try:
        _validate(key)
    except _InvalidKeyError as e:
        part = {"secret": "the secret", "public": "the public key", "pair": "the public key", "key_id": "the key id"}
        raise ValueError(f"{key.algorithm} key {key.key_id}: {part[e.part]} {e}") from None


# --- the application's Secret ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRing:
    """What the operator keeps in an application's Secret: the current key and, during an overlap, the previous one."""

    current: AppKey
    previous: AppKey | None
    previous_retires: datetime | None
    """When the previous key stops being valid (end of the overlap); set exactly when `previous` is."""
    rotation_request: str | None
    """The last manual rotation request token that was honoured."""

    def __post_init__(self) -> None:
        if (self.previous is None) != (self.previous_retires is None):
            raise ValueError("previous and previous_retires must be set together")
        if self.previous_retires is not None:
            utc(self.previous_retires, "previous_retires")
        if self.previous is not None and self.previous.key_id == self.current.key_id:
            raise ValueError(f"previous key {self.previous.key_id} is the current key: key material is never reused")

    def to_secret_data(self) -> dict[str, str]:
        """Secret `stringData`-style values (the caller base64-encodes them for `data`)."""
        data = _key_data(self.current, KEY_ALGORITHM, KEY_KEY_ID, KEY_CREATED, KEY_SECRET, KEY_PUBLIC)
        if self.previous is not None and self.previous_retires is not None:
            data |= _key_data(
                self.previous,
                KEY_PREVIOUS_ALGORITHM,
                KEY_PREVIOUS_KEY_ID,
                KEY_PREVIOUS_CREATED,
                KEY_PREVIOUS_SECRET,
                KEY_PREVIOUS_PUBLIC,
            )
            data[KEY_PREVIOUS_RETIRES] = _stamp(self.previous_retires)
        if self.rotation_request is not None:
            data[KEY_ROTATION_REQUEST] = self.rotation_request
        return data

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str]) -> KeyRing:
        """Inverse of `to_secret_data`; ValueError names a missing or invalid key (never the material)."""
        current = _read_key(data, KEY_ALGORITHM, KEY_KEY_ID, KEY_CREATED, KEY_SECRET, KEY_PUBLIC)
        previous, retires = None, None
        previous_keys = (
            KEY_PREVIOUS_ALGORITHM,
            KEY_PREVIOUS_KEY_ID,
            KEY_PREVIOUS_CREATED,
            KEY_PREVIOUS_SECRET,
            KEY_PREVIOUS_PUBLIC,
            KEY_PREVIOUS_RETIRES,
        )
        if any(secretdata.optional(data, key, APP_KEY) is not None for key in previous_keys):
            previous = _read_key(data, *previous_keys[:5])
            retires = _time(data, KEY_PREVIOUS_RETIRES)
            if previous.key_id == current.key_id:
                raise ValueError(f"application key secret data: {KEY_PREVIOUS_KEY_ID!r} equals {KEY_KEY_ID!r}")
        return cls(
            current=current,
            previous=previous,
            previous_retires=retires,
            rotation_request=secretdata.optional(data, KEY_ROTATION_REQUEST, APP_KEY),
        )

    def age(self, now: datetime) -> timedelta:
        """How long the current key has been in use."""
        return utc(now) - self.current.created

    def next_rotation(self, rotation: timedelta) -> datetime:
        """When the current key is due for scheduled rotation."""
        return self.current.created + rotation


def _key_data(key: AppKey, algorithm: str, key_id: str, created: str, secret: str, public: str) -> dict[str, str]:
    data = {algorithm: key.algorithm, key_id: key.key_id, created: _stamp(key.created), secret: key.secret}
    if key.public is not None:
        data[public] = key.public
    return data


def _time(data: Mapping[str, str], key: str) -> datetime:
    value = secretdata.required(data, key, APP_KEY)
    return utc(parse_rfc3339(value, f"application key secret data key {key!r}"))


def _read_key(
    data: Mapping[str, str], algorithm_key: str, id_key: str, created_key: str, secret_key: str, public_key: str
) -> AppKey:
    where = "application key secret data key"
    algorithm = secretdata.required(data, algorithm_key, APP_KEY)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{where} {algorithm_key!r} is {algorithm!r}, expected one of {', '.join(ALGORITHMS)}")
    key_id = secretdata.required(data, id_key, APP_KEY)
    created = _time(data, created_key)
    secret = secretdata.required(data, secret_key, APP_KEY)
    public = secretdata.optional(data, public_key, APP_KEY)
    if algorithm == HMAC_SHA256 and public is not None:
        raise ValueError(f"{where} {public_key!r} is unexpected: {algorithm} keys have no public key")
    if algorithm == ED25519 and public is None:
        raise ValueError(f"application key secret data is missing key {public_key!r}")
    key = AppKey(algorithm=algorithm, key_id=key_id, created=created, secret=secret, public=public)
    try:
        _validate(key)
    except _InvalidKeyError as e:
        if e.part == "pair":
            raise ValueError(f"{where} {public_key!r} {e} in {secret_key!r}") from None
        part = {"secret": secret_key, "public": public_key, "key_id": id_key}[e.part]
        raise ValueError(f"{where} {part!r} {e}") from None
    return key


# --- reconciling -----------------------------------------------------------------------------------------------------


def ensure_key_ring(
    current: KeyRing | None,
    algorithm: str,
    rotation: timedelta,
    overlap: timedelta,
    now: datetime,
    rotation_request: str | None = None,
) -> tuple[KeyRing, list[str]]:
    """The desired key ring and why it differs from `current` (no reasons: `current` itself is returned).

    Level-triggered, and its result is a fixed point for the same arguments:
    - no ring: a new key;
    - a new `rotation_request` token (suspected compromise): a new key at once, and the old keys are revoked at once;
    - another algorithm, or the current key `rotation` old: a new key, the old one stays valid for `overlap`;
    - the previous key at or past its retirement time: dropped (a retirement later than now + overlap is brought in).
    """
    _check_algorithm(algorithm)
    now = utc(now)
    if rotation <= timedelta(0):
        raise ValueError(f"rotation ({rotation}) must be positive")
    if overlap < timedelta(0) or overlap >= rotation:
        raise ValueError(f"overlap ({overlap}) must not be negative and must be shorter than rotation ({rotation})")

    if current is None:
        key = new_key(algorithm, now)
        ring = KeyRing(current=key, previous=None, previous_retires=None, rotation_request=rotation_request)
        return ring, [f"created {algorithm} key {key.key_id}"]

    reasons: list[str] = []
    previous, retires = current.previous, current.previous_retires
    if previous is not None and retires is not None:
        if retires > now + overlap:
            retires = now + overlap
            reasons.append(f"previous key {previous.key_id} now retires at {_stamp(retires)}, within the overlap")
        if now >= retires:
            reasons.append(f"previous key {previous.key_id} retired")
            previous, retires = None, None

    old = current.current
    if rotation_request is not None and rotation_request != current.rotation_request:
        key = new_key(algorithm, now)
        revoked = old.key_id + (f" and previous key {previous.key_id}" if previous is not None else "")
        reasons.append(
            f"rotated to {algorithm} key {key.key_id} on rotation request {rotation_request!r} (suspected compromise):"
            f" key {revoked} revoked at once"
        )
        return KeyRing(current=key, previous=None, previous_retires=None, rotation_request=rotation_request), reasons

    why = None
    if old.algorithm != algorithm:
        why = f"the algorithm changed from {old.algorithm} to {algorithm}"
    elif now >= old.created + rotation:
        why = f"key {old.key_id} was created at {_stamp(old.created)}, {rotation} or more ago"
    if why is not None:
        key = new_key(algorithm, now)
        if previous is not None:
            reasons.append(f"previous key {previous.key_id} retired early to make room for key {old.key_id}")
        if overlap > timedelta(0):
            previous, retires = old, now + overlap
            kept = f"key {old.key_id} stays valid until {_stamp(retires)}"
        else:
            previous, retires = None, None
            kept = f"key {old.key_id} retired at once (no overlap)"
        reasons.append(f"rotated to {algorithm} key {key.key_id} ({why}); {kept}")
        ring = KeyRing(
            current=key, previous=previous, previous_retires=retires, rotation_request=current.rotation_request
        )
        return ring, reasons

    if not reasons:
        return current, []
    return KeyRing(old, previous, retires, current.rotation_request), reasons
