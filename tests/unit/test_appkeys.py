import base64
import dataclasses
import hashlib
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.pki.appkeys import ALGORITHMS, KeyRing, check_key, ensure_key_ring, new_key

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ROTATION = timedelta(days=90)
OVERLAP = timedelta(days=7)
SECOND = timedelta(seconds=1)


def ensure(ring, now, algorithm="hmac-sha256", request=None, rotation=ROTATION, overlap=OVERLAP):
    return ensure_key_ring(ring, algorithm, rotation, overlap, now, rotation_request=request)


def created(algorithm="hmac-sha256", now=NOW) -> KeyRing:
    ring, _ = ensure(None, now, algorithm)
    return ring


def rotated(algorithm="hmac-sha256") -> KeyRing:
    """A ring in its overlap: rotated on schedule at NOW + ROTATION, the old key kept as previous."""
    ring, _ = ensure(created(algorithm), NOW + ROTATION, algorithm)
    assert ring.previous is not None
    return ring


def secrets_of(ring: KeyRing) -> list[str]:
    return [key.secret for key in (ring.current, ring.previous) if key is not None]


def assert_no_material(ring: KeyRing, reasons: list[str]) -> None:
    for secret in secrets_of(ring):
        assert secret not in repr(ring)
        assert secret not in str(ring)
        for reason in reasons:
            assert secret not in reason


# --- keys ------------------------------------------------------------------------------------------------------------


def test_hmac_key_is_32_random_bytes_without_public_part():
    key = new_key("hmac-sha256", NOW)
    raw = base64.b64decode(key.secret, validate=True)
    assert len(raw) == 32
    assert key.public is None
    assert key.algorithm == "hmac-sha256"
    assert key.created == NOW
    assert key.created.tzinfo is not None
    assert key.key_id == "k-" + hashlib.sha256(hashlib.sha256(raw).digest()).hexdigest()[:16]
    check_key(key)


def test_ed25519_key_pems_load_match_and_signatures_verify():
    key = new_key("ed25519", NOW)
    assert key.secret.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    assert key.public is not None
    assert key.public.startswith("-----BEGIN PUBLIC KEY-----")  # SubjectPublicKeyInfo
    private = serialization.load_pem_private_key(key.secret.encode(), password=None)
    public = serialization.load_pem_public_key(key.public.encode())
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    assert isinstance(public, ed25519.Ed25519PublicKey)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw == private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key.key_id == "k-" + hashlib.sha256(raw).hexdigest()[:16]

    message = b"telemetry from device 42"
    signature = private.sign(message)
    public.verify(signature, message)
    with pytest.raises(InvalidSignature):
        public.verify(signature, message + b"!")
    check_key(key)


def test_new_key_is_utc_and_needs_an_aware_time():
    key = new_key("ed25519", datetime(2026, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))))
    assert key.created == NOW
    assert key.created.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="timezone-aware"):
        new_key("ed25519", datetime(2026, 1, 1))


@pytest.mark.parametrize("algorithm", ["md5", "hmac-sha1", "HMAC-SHA256", "rsa", ""])
def test_unknown_algorithm_is_named(algorithm):
    with pytest.raises(ValueError, match=f"unknown key algorithm '{algorithm}'"):
        new_key(algorithm, NOW)
    with pytest.raises(ValueError, match=f"unknown key algorithm '{algorithm}'"):
        ensure(None, NOW, algorithm)


def test_keys_are_unique():
    keys = [new_key(algorithm, NOW) for algorithm in ALGORITHMS for _ in range(100)]
    assert len(keys) == 200
    assert len({key.secret for key in keys}) == 200
    assert len({key.key_id for key in keys}) == 200
    assert len({key.public for key in keys if key.public is not None}) == 100


def test_check_key_rejects_tampered_keys():
    hmac, other_hmac = new_key("hmac-sha256", NOW), new_key("hmac-sha256", NOW)
    ed, other_ed = new_key("ed25519", NOW), new_key("ed25519", NOW)
    with pytest.raises(ValueError, match="key id"):
        check_key(dataclasses.replace(hmac, secret=other_hmac.secret))
    with pytest.raises(ValueError, match="32"):
        check_key(dataclasses.replace(hmac, secret=base64.b64encode(b"short").decode()))
    with pytest.raises(ValueError, match="public key does not match"):
        check_key(dataclasses.replace(ed, public=other_ed.public))
    with pytest.raises(ValueError, match="key id"):
        check_key(dataclasses.replace(ed, secret=other_ed.secret, public=other_ed.public))
    with pytest.raises(ValueError, match="public key goes with ed25519 keys only"):
        dataclasses.replace(ed, public=None)


# --- repr and reasons ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_repr_shows_only_algorithm_id_and_time(algorithm):
    ring = rotated(algorithm)
    text = repr(ring.current)
    assert text == f"AppKey(algorithm={algorithm!r}, key_id={ring.current.key_id!r}, created={ring.current.created!r})"
    assert ring.current.key_id in repr(ring)
    assert ring.previous is not None
    assert ring.previous.key_id in repr(ring)
    assert_no_material(ring, [])
    if ring.current.public is not None:
        assert ring.current.public not in repr(ring)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_no_key_material_in_any_reason(algorithm):
    first, reasons = ensure(None, NOW, algorithm)
    assert_no_material(first, reasons)
    second, reasons = ensure(first, NOW + ROTATION, algorithm)
    assert_no_material(first, reasons)
    assert_no_material(second, reasons)
    third, reasons = ensure(second, NOW + ROTATION + SECOND, algorithm, request="compromised-1")
    assert_no_material(second, reasons)
    assert_no_material(third, reasons)
    other = "ed25519" if algorithm == "hmac-sha256" else "hmac-sha256"
    fourth, reasons = ensure(third, NOW + ROTATION + 2 * SECOND, other)
    assert_no_material(third, reasons)
    assert_no_material(fourth, reasons)
    fifth, reasons = ensure(fourth, NOW + ROTATION + OVERLAP + 2 * SECOND, other)
    assert_no_material(fourth, reasons)
    assert fifth.previous is None


# --- ensure_key_ring -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_creates_a_ring(algorithm):
    ring, reasons = ensure(None, NOW, algorithm)
    assert reasons == [f"created {algorithm} key {ring.current.key_id}"]
    assert ring.current.algorithm == algorithm
    assert ring.current.created == NOW
    assert ring.previous is None
    assert ring.previous_retires is None
    assert ring.rotation_request is None
    assert ring.age(NOW + SECOND) == SECOND
    assert ring.next_rotation(ROTATION) == NOW + ROTATION
    check_key(ring.current)


def test_creation_records_a_rotation_request_without_rotating_again():
    ring, _ = ensure(None, NOW, request="token-1")
    assert ring.rotation_request == "token-1"
    again, reasons = ensure(ring, NOW, request="token-1")
    assert again is ring
    assert reasons == []


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_idempotent(algorithm):
    ring = created(algorithm)
    for now in (NOW, NOW + timedelta(days=1), NOW + ROTATION - SECOND):
        again, reasons = ensure(ring, now, algorithm)
        assert again is ring
        assert reasons == []
    overlapping = rotated(algorithm)
    again, reasons = ensure(overlapping, NOW + ROTATION + OVERLAP - SECOND, algorithm)
    assert again is overlapping
    assert reasons == []


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_rotates_exactly_when_due(algorithm):
    ring = created(algorithm)
    same, reasons = ensure(ring, NOW + ROTATION - SECOND, algorithm)
    assert same is ring
    assert reasons == []

    due = NOW + ROTATION
    new, reasons = ensure(ring, due, algorithm)
    assert new.current.key_id != ring.current.key_id
    assert new.current.secret != ring.current.secret
    assert new.current.created == due
    assert new.current.algorithm == algorithm
    assert new.previous == ring.current
    assert new.previous_retires == due + OVERLAP
    assert len(reasons) == 1
    assert new.current.key_id in reasons[0]
    assert ring.current.key_id in reasons[0]
    check_key(new.current)

    again, reasons = ensure(new, due, algorithm)
    assert again is new
    assert reasons == []


def test_previous_is_kept_until_it_retires():
    ring = rotated()
    assert ring.previous is not None
    retires = NOW + ROTATION + OVERLAP
    assert ring.previous_retires == retires

    kept, reasons = ensure(ring, retires - SECOND)
    assert kept is ring
    assert reasons == []

    for now in (retires, retires + timedelta(days=3)):
        dropped, reasons = ensure(ring, now)
        assert reasons == [f"previous key {ring.previous.key_id} retired"]
        assert dropped.previous is None
        assert dropped.previous_retires is None
        assert dropped.current == ring.current
        again, reasons = ensure(dropped, now)
        assert again is dropped
        assert reasons == []


def test_previous_retirement_is_brought_within_a_shorter_overlap():
    ring = rotated()
    now = NOW + ROTATION + timedelta(days=1)
    shorter, reasons = ensure(ring, now, overlap=timedelta(days=2))
    assert shorter.previous == ring.previous
    assert shorter.previous_retires == now + timedelta(days=2)
    assert len(reasons) == 1
    assert ring.previous is not None
    assert ring.previous.key_id in reasons[0]
    again, reasons = ensure(shorter, now, overlap=timedelta(days=2))
    assert again is shorter
    assert reasons == []


def test_overlap_shorter_than_rotation_means_the_previous_retires_before_the_next_rotation():
    rotation, overlap = timedelta(days=10), timedelta(days=10) - SECOND
    first, _ = ensure(None, NOW, rotation=rotation, overlap=overlap)
    second, _ = ensure(first, NOW + rotation, rotation=rotation, overlap=overlap)
    third, reasons = ensure(second, NOW + 2 * rotation, rotation=rotation, overlap=overlap)
    assert third.previous == second.current
    assert third.previous_retires == NOW + 2 * rotation + overlap
    assert reasons[0] == f"previous key {first.current.key_id} retired"
    assert len(reasons) == 2


def test_algorithm_change_during_an_overlap_retires_the_older_key_early():
    ring = rotated("hmac-sha256")
    assert ring.previous is not None
    now = NOW + ROTATION + timedelta(days=1)
    new, reasons = ensure(ring, now, "ed25519")
    assert new.previous == ring.current
    assert new.previous_retires == now + OVERLAP
    assert reasons[0] == f"previous key {ring.previous.key_id} retired early to make room for key {ring.current.key_id}"
    assert len(reasons) == 2


def test_zero_overlap_keeps_no_previous():
    ring, _ = ensure(None, NOW, overlap=timedelta(0))
    new, reasons = ensure(ring, NOW + ROTATION, overlap=timedelta(0))
    assert new.previous is None
    assert new.previous_retires is None
    assert new.current.key_id != ring.current.key_id
    assert len(reasons) == 1
    again, reasons = ensure(new, NOW + ROTATION, overlap=timedelta(0))
    assert again is new


@pytest.mark.parametrize("ring_factory", [created, rotated])
def test_manual_rotation_request_revokes_at_once(ring_factory):
    ring = ring_factory()
    now = NOW + ROTATION + timedelta(days=1)
    new, reasons = ensure(ring, now, request="incident-2026-001")
    assert new.rotation_request == "incident-2026-001"
    assert new.current.created == now
    assert new.current.key_id not in {ring.current.key_id, ring.previous and ring.previous.key_id}
    assert new.previous is None  # a possibly compromised key must not stay valid
    assert new.previous_retires is None
    assert len(reasons) == 1
    assert "revoked" in reasons[0]
    assert ring.current.key_id in reasons[0]
    if ring.previous is not None:
        assert ring.previous.key_id in reasons[0]

    for later in (now, now + SECOND, now + timedelta(days=1)):
        again, reasons = ensure(new, later, request="incident-2026-001")
        assert again is new
        assert reasons == []
    # the token disappearing from the spec does nothing either
    again, reasons = ensure(new, now + SECOND)
    assert again is new
    assert reasons == []
    # a new token rotates again
    newer, reasons = ensure(new, now + 2 * SECOND, request="incident-2026-002")
    assert newer.current.key_id != new.current.key_id
    assert newer.rotation_request == "incident-2026-002"


def test_algorithm_change_rotates_and_keeps_the_old_key_for_the_overlap():
    ring = created("hmac-sha256")
    now = NOW + timedelta(days=1)
    new, reasons = ensure(ring, now, "ed25519")
    assert new.current.algorithm == "ed25519"
    assert new.current.created == now
    assert new.previous == ring.current
    assert new.previous_retires == now + OVERLAP
    assert len(reasons) == 1
    assert "hmac-sha256" in reasons[0]
    assert "ed25519" in reasons[0]
    check_key(new.current)
    again, reasons = ensure(new, now, "ed25519")
    assert again is new
    assert reasons == []
    # the mixed-algorithm ring survives the Secret round trip
    assert KeyRing.from_secret_data(new.to_secret_data()) == new


@pytest.mark.parametrize(
    ("rotation", "overlap"),
    [
        (timedelta(days=7), timedelta(days=7)),
        (timedelta(days=7), timedelta(days=8)),
        (timedelta(days=7), -SECOND),
        (timedelta(0), timedelta(0)),
    ],
)
def test_bad_rotation_or_overlap_raises(rotation, overlap):
    with pytest.raises(ValueError, match=r"rotation|overlap"):
        ensure(None, NOW, rotation=rotation, overlap=overlap)
    with pytest.raises(ValueError, match=r"rotation|overlap"):
        ensure(created(), NOW, rotation=rotation, overlap=overlap)


def test_naive_now_raises():
    with pytest.raises(ValueError, match="timezone-aware"):
        ensure(None, datetime(2026, 1, 1))


# --- the Secret ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_secret_data_round_trip_without_previous(algorithm):
    ring = created(algorithm)
    data = ring.to_secret_data()
    assert data["algorithm"] == algorithm
    assert data["key-id"] == ring.current.key_id
    assert data["created"] == "2026-01-01T00:00:00Z"
    assert data["key"] == ring.current.secret
    assert ("public.pem" in data) == (algorithm == "ed25519")
    assert not any(key.startswith("previous-") for key in data)
    assert "rotation-request" not in data
    assert all(isinstance(value, str) for value in data.values())
    assert KeyRing.from_secret_data(data) == ring


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_secret_data_round_trip_with_previous(algorithm):
    ring = dataclasses.replace(rotated(algorithm), rotation_request="token-7")
    assert ring.previous is not None
    data = ring.to_secret_data()
    assert data["previous-key-id"] == ring.previous.key_id
    assert data["previous-key"] == ring.previous.secret
    assert data["previous-retires"] == "2026-04-08T00:00:00Z"
    assert ("previous-public.pem" in data) == (algorithm == "ed25519")
    assert data["rotation-request"] == "token-7"
    assert KeyRing.from_secret_data(data) == ring


def test_secret_data_round_trip_keeps_sub_second_times():
    now = NOW + timedelta(microseconds=123456)
    ring = created("ed25519", now)
    assert ring.to_secret_data()["created"] == "2026-01-01T00:00:00.123456Z"
    assert KeyRing.from_secret_data(ring.to_secret_data()) == ring


@pytest.mark.parametrize(
    ("algorithm", "missing"),
    [
        ("hmac-sha256", "algorithm"),
        ("hmac-sha256", "key-id"),
        ("hmac-sha256", "created"),
        ("hmac-sha256", "key"),
        ("ed25519", "public.pem"),
        ("ed25519", "previous-key"),
        ("ed25519", "previous-public.pem"),
        ("hmac-sha256", "previous-key-id"),
        ("hmac-sha256", "previous-retires"),
    ],
)
def test_secret_data_missing_key_is_named(algorithm, missing):
    data = rotated(algorithm).to_secret_data()
    del data[missing]
    with pytest.raises(ValueError, match=re.escape(f"missing key '{missing}'")):
        KeyRing.from_secret_data(data)
    data[missing] = "  "  # blank counts as missing
    with pytest.raises(ValueError, match=re.escape(f"missing key '{missing}'")):
        KeyRing.from_secret_data(data)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_secret_data_mismatched_key_id_is_named(algorithm):
    ring = rotated(algorithm)
    data = ring.to_secret_data()
    data["key-id"] = new_key(algorithm, NOW).key_id
    with pytest.raises(ValueError, match=r"'key-id'.*does not match the key material"):
        KeyRing.from_secret_data(data)
    data = ring.to_secret_data()
    data["previous-key-id"] = "k-0000000000000000"
    with pytest.raises(ValueError, match=r"'previous-key-id'.*does not match the key material"):
        KeyRing.from_secret_data(data)


def test_secret_data_mismatched_public_key_is_named():
    ring = rotated("ed25519")
    other = new_key("ed25519", NOW)
    data = ring.to_secret_data()
    data["public.pem"] = other.public
    with pytest.raises(ValueError, match=re.escape("'public.pem' does not match the private key in 'key'")):
        KeyRing.from_secret_data(data)
    data = ring.to_secret_data()
    data["previous-public.pem"] = other.public
    with pytest.raises(
        ValueError, match=re.escape("'previous-public.pem' does not match the private key in 'previous-key'")
    ):
        KeyRing.from_secret_data(data)
    # a swapped key with its own public key still fails on the key id
    data = ring.to_secret_data()
    data["key"], data["public.pem"] = other.secret, other.public
    with pytest.raises(ValueError, match="'key-id'"):
        KeyRing.from_secret_data(data)


def test_secret_data_invalid_values_are_named_without_quoting_material():
    hmac_data = created("hmac-sha256").to_secret_data()
    ed_data = created("ed25519").to_secret_data()
    cases = [
        (hmac_data | {"algorithm": "hmac-md5"}, "'algorithm' is 'hmac-md5'"),
        (hmac_data | {"key": "not base64!"}, "'key' is not base64"),
        (hmac_data | {"key": base64.b64encode(bytes(16)).decode()}, "'key' decodes to 16 bytes, expected 32"),
        (hmac_data | {"public.pem": ed_data["public.pem"]}, "'public.pem' is unexpected"),
        (hmac_data | {"created": "yesterday"}, "'created' 'yesterday' is not an RFC 3339 time"),
        (hmac_data | {"created": "2026-01-01T00:00:00"}, "'created' '2026-01-01T00:00:00' has no time zone"),
        (ed_data | {"key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}, "'key' is not an"),
        (ed_data | {"public.pem": "garbage"}, "'public.pem' is not a PEM public key"),
        (ed_data | {"algorithm": "hmac-sha256"}, "'public.pem' is unexpected"),
        (hmac_data | {"algorithm": "ed25519", "public.pem": ed_data["public.pem"]}, "'key' is not an"),
    ]
    for data, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)) as info:
            KeyRing.from_secret_data(data)
        assert hmac_data["key"] not in str(info.value)
        assert ed_data["key"] not in str(info.value)


def test_secret_data_previous_equal_to_current_is_rejected():
    ring = created("ed25519")
    data = ring.to_secret_data()
    data |= {
        "previous-algorithm": data["algorithm"],
        "previous-key-id": data["key-id"],
        "previous-created": data["created"],
        "previous-key": data["key"],
        "previous-public.pem": data["public.pem"],
        "previous-retires": "2026-01-08T00:00:00Z",
    }
    with pytest.raises(ValueError, match="'previous-key-id' equals 'key-id'"):
        KeyRing.from_secret_data(data)


def test_key_ring_requires_previous_and_retirement_together():
    ring = rotated()
    with pytest.raises(ValueError, match="together"):
        dataclasses.replace(ring, previous_retires=None)
    with pytest.raises(ValueError, match="together"):
        dataclasses.replace(ring, previous=None)
    with pytest.raises(ValueError, match="never reused"):
        dataclasses.replace(ring, previous=ring.current)


# --- invariants over time --------------------------------------------------------------------------------------------


STEP = st.tuples(
    # seconds forward, or to a boundary: exactly when the current key is due / the previous key retires, or 1s before
    st.one_of(
        st.integers(min_value=0, max_value=40 * 86400), st.sampled_from(["due", "due-1s", "retire", "retire-1s"])
    ),
    st.sampled_from(ALGORITHMS + ALGORITHMS[:1] * 4),  # mostly keep the same algorithm
    st.one_of(st.none(), st.none(), st.none(), st.sampled_from(["r1", "r2", "r3"])),  # occasional manual requests
)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(STEP, min_size=1, max_size=25),
    rotation_days=st.integers(min_value=1, max_value=30),
    overlap_hours=st.integers(min_value=0, max_value=24 * 30),
)
def test_invariants_over_time(steps, rotation_days, overlap_hours):
    rotation = timedelta(days=rotation_days)
    overlap = min(timedelta(hours=overlap_hours), rotation - SECOND)
    now = NOW
    ring: KeyRing | None = None
    seen: set[str] = set()
    secrets_seen: set[str] = set()
    token = None  # the last honoured rotation request
    for forward, algorithm, request in steps:
        if isinstance(forward, int):
            now += timedelta(seconds=forward)
        elif ring is not None:
            boundary = ring.next_rotation(rotation) if forward.startswith("due") else ring.previous_retires
            if boundary is not None:
                now = max(now, boundary - SECOND if forward.endswith("-1s") else boundary)
        before = ring
        ring, reasons = ensure_key_ring(ring, algorithm, rotation, overlap, now, rotation_request=request)

        assert (ring is before) == (not reasons)
        if request is not None:
            token = request
        assert ring.rotation_request == token
        check_key(ring.current)
        assert ring.current.algorithm == algorithm
        assert ring.current.created <= now < ring.current.created + rotation
        if ring.current.key_id not in seen:  # a new key: never seen before, material never reused
            assert ring.current.secret not in secrets_seen
            seen.add(ring.current.key_id)
            secrets_seen.add(ring.current.secret)
        else:
            assert before is not None
            assert ring.current == before.current
        if ring.previous is not None:
            assert ring.previous_retires is not None
            assert now < ring.previous_retires <= now + overlap
            assert ring.previous.key_id != ring.current.key_id
            assert before is not None
            assert ring.previous in (before.current, before.previous)
            check_key(ring.previous)
        if request is not None and (before is None or before.rotation_request != request):
            assert ring.rotation_request == request
            assert ring.previous is None
        assert_no_material(ring, reasons)
        if before is not None:
            assert_no_material(before, reasons)

        # the result is a fixed point, and survives the Secret round trip
        again, more = ensure_key_ring(ring, algorithm, rotation, overlap, now, rotation_request=request)
        assert again is ring
        assert more == []
        ring = KeyRing.from_secret_data(ring.to_secret_data())
        assert ring == again
