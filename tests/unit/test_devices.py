import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.api.durations import parse_duration
from iotsec.api.tenantisolation import DeviceCA, DeviceClass
from iotsec.pki.certs import certs_in_bundle, fingerprint, new_ca, new_serving_cert, not_after
from iotsec.pki.devices import (
    DeviceCAState,
    DeviceCertificate,
    build_crl,
    device_id_of,
    ensure_device_ca,
    issue_device_certificate,
    new_device_ca,
    revoked_serials,
    verify_device,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
TENANT = "acme"


def load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def ext(cert: x509.Certificate, kind):
    return cert.extensions.get_extension_for_class(kind)


def attrs(cert: x509.Certificate, oid) -> list[str]:
    return [a.value for a in cert.subject.get_attributes_for_oid(oid)]


def spki(cert_pem: str) -> bytes:
    return (
        load(cert_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def issue(ca, device_id="meter-0001", now=NOW, tenant=TENANT, **overrides) -> DeviceCertificate:
    args = {
        "device_class": "smart-meter",
        "manufacturer": "ACME Meters",
        "model": "SM-200",
        "key_algorithm": "ecdsa-p256",
        "validity": timedelta(days=365),
        "key_usage": ["digitalSignature"],
        "extended_key_usage": ["clientAuth"],
    } | overrides
    return issue_device_certificate(ca, tenant, device_id, now=now, **args)


@pytest.fixture(scope="module")
def ca():
    return new_device_ca(TENANT, "ecdsa-p256", timedelta(days=1825), NOW, organization="ACME Utilities")


@pytest.fixture(scope="module")
def other_ca():
    return new_device_ca("globex", "ecdsa-p256", timedelta(days=1825), NOW)


# --- the device CA ---------------------------------------------------------------------------------------------------

CA_ALGORITHMS = [
    ("ecdsa-p256", ec.EllipticCurvePublicKey, 256, hashes.SHA256),
    ("ecdsa-p384", ec.EllipticCurvePublicKey, 384, hashes.SHA384),
    ("rsa-3072", rsa.RSAPublicKey, 3072, hashes.SHA256),
    ("rsa-4096", rsa.RSAPublicKey, 4096, hashes.SHA256),  # the only RSA-4096 key of the suite: it is slow
]


@pytest.mark.parametrize(("algorithm", "key_type", "size", "digest"), CA_ALGORITHMS)
def test_ca_algorithms(algorithm, key_type, size, digest):
    pair = new_device_ca(TENANT, algorithm, timedelta(days=30), NOW, organization="ACME Utilities")
    cert = load(pair.cert_pem)
    key = cert.public_key()
    assert isinstance(key, key_type)
    assert key.key_size == size
    assert isinstance(cert.signature_hash_algorithm, digest)
    cert.verify_directly_issued_by(cert)
    private = serialization.load_pem_private_key(pair.key_pem.encode(), password=None)
    assert private.public_key().public_numbers() == key.public_numbers()
    # devices get certificates signed with the same hash
    device = load(issue(pair).cert_pem)
    assert isinstance(device.signature_hash_algorithm, digest)
    device.verify_directly_issued_by(cert)


def test_ca_certificate_profile(ca):
    cert = load(ca.cert_pem)
    assert cert.subject == cert.issuer
    assert attrs(cert, NameOID.COMMON_NAME) == ["iotsec device CA acme"]
    assert attrs(cert, NameOID.ORGANIZATION_NAME) == ["ACME Utilities"]
    assert attrs(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == ["tenant=acme"]
    assert attrs(cert, NameOID.SERIAL_NUMBER) == ["acme"]

    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is True
    assert bc.value.path_length == 0
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    assert not ku.value.digital_signature
    assert not ku.value.key_encipherment
    assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())

    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(days=1825)


def test_ca_without_organization_has_no_o():
    cert = load(new_device_ca("globex", "ecdsa-p256", timedelta(days=30), NOW).cert_pem)
    assert attrs(cert, NameOID.ORGANIZATION_NAME) == []
    assert attrs(cert, NameOID.COMMON_NAME) == ["iotsec device CA globex"]


@pytest.mark.parametrize("algorithm", ["rsa-2048", "rsa-1024", "md5", "sha1", "ed25519", "ecdsa-p521", ""])
def test_unsupported_ca_algorithms_are_refused(algorithm):
    with pytest.raises(ValueError, match=f"unsupported device CA key algorithm '{algorithm}'"):
        new_device_ca(TENANT, algorithm, timedelta(days=30), NOW)


@pytest.mark.parametrize("tenant", ["", "ACME", "-acme", "acme-", "a" * 41, "ac me", "acme:1"])
def test_invalid_tenant_ids_are_refused(tenant):
    with pytest.raises(ValueError, match="invalid tenant id"):
        new_device_ca(tenant, "ecdsa-p256", timedelta(days=30), NOW)


def test_ca_needs_an_aware_time_and_a_positive_validity():
    with pytest.raises(ValueError, match="timezone-aware"):
        new_device_ca(TENANT, "ecdsa-p256", timedelta(days=30), datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="validity"):
        new_device_ca(TENANT, "ecdsa-p256", timedelta(0), NOW)


def test_api_defaults_are_accepted():
    spec, device_class = DeviceCA(), DeviceClass(name="smart-meter")
    state, _ = ensure_device_ca(
        None,
        TENANT,
        spec.key_algorithm,
        parse_duration(spec.validity),
        parse_duration(spec.rotate_before),
        NOW,
        spec.organization,
    )
    device = issue(
        state.ca,
        key_algorithm=device_class.key_algorithm,
        validity=parse_duration(device_class.validity),
        key_usage=device_class.key_usage,
        extended_key_usage=device_class.extended_key_usage,
    )
    assert verify_device(device.cert_pem, state.bundle(), NOW)


# --- device certificates ---------------------------------------------------------------------------------------------

DEVICE_ALGORITHMS = [
    ("ecdsa-p256", ec.EllipticCurvePublicKey, 256),
    ("ed25519", ed25519.Ed25519PublicKey, None),
    ("rsa-3072", rsa.RSAPublicKey, 3072),
]


@pytest.mark.parametrize(("algorithm", "key_type", "size"), DEVICE_ALGORITHMS)
def test_device_certificate(ca, algorithm, key_type, size):
    device = issue(ca, "meter-0001", key_algorithm=algorithm)
    cert, ca_cert = load(device.cert_pem), load(ca.cert_pem)

    assert verify_device(device.cert_pem, ca.cert_pem, NOW)
    assert device_id_of(device.cert_pem) == device.device_id == "meter-0001"
    assert device.serial == cert.serial_number
    assert device.not_after == cert.not_valid_after_utc == NOW + timedelta(days=365)
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.issuer == ca_cert.subject

    key = cert.public_key()
    assert isinstance(key, key_type)
    if size:
        assert key.key_size == size
    private = serialization.load_pem_private_key(device.key_pem.encode(), password=None)
    assert spki(device.cert_pem) == private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)

    # id, manufacturer, class, tenant and model in the subject
    assert attrs(cert, NameOID.COMMON_NAME) == ["meter-0001"]
    assert attrs(cert, NameOID.SERIAL_NUMBER) == ["meter-0001"]
    assert attrs(cert, NameOID.ORGANIZATION_NAME) == ["ACME Meters"]
    assert attrs(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == ["smart-meter", "tenant=acme"]
    assert attrs(cert, NameOID.TITLE) == ["SM-200"]
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:iotsec:acme:device:meter-0001"]

    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is False
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    for usage in ("key_encipherment", "key_agreement", "data_encipherment", "key_cert_sign", "crl_sign"):
        assert not getattr(ku.value, usage)
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(ca_cert, x509.SubjectKeyIdentifier).value.digest
    assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(key)


def test_device_certificate_passes_an_rfc5280_client_verifier(ca):
    device = issue(ca, "gw-7", key_algorithm="ed25519")
    verifier = PolicyBuilder().store(Store([load(ca.cert_pem)])).time(NOW + DAY).build_client_verifier()
    verified = verifier.verify(load(device.cert_pem), [])
    assert verified.chain[-1] == load(ca.cert_pem)
    assert verified.subjects == [x509.UniformResourceIdentifier("urn:iotsec:acme:device:gw-7")]


def test_device_class_profile_sets_key_usage_and_eku(ca):
    device = issue(
        ca,
        "gw-1",
        device_class="substation-gateway",
        key_algorithm="rsa-3072",
        key_usage=["digitalSignature", "keyEncipherment", "dataEncipherment", "keyEncipherment"],
        extended_key_usage=["clientAuth", "serverAuth"],
    )
    cert = load(device.cert_pem)
    ku = ext(cert, x509.KeyUsage).value
    assert ku.digital_signature
    assert ku.key_encipherment
    assert ku.data_encipherment
    assert not ku.key_agreement
    ekus = list(ext(cert, x509.ExtendedKeyUsage).value)
    assert ekus == [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    assert attrs(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == ["substation-gateway", "tenant=acme"]

    ec_agreement = load(issue(ca, "gw-2", key_usage=["digitalSignature", "keyAgreement"]).cert_pem)
    assert ext(ec_agreement, x509.KeyUsage).value.key_agreement


def test_a_fresh_key_and_serial_per_certificate(ca):
    first, second = issue(ca, "meter-0001"), issue(ca, "meter-0001")
    assert spki(first.cert_pem) != spki(second.cert_pem)
    assert first.key_pem != second.key_pem
    assert first.serial != second.serial
    assert device_id_of(first.cert_pem) == device_id_of(second.cert_pem) == "meter-0001"
    assert verify_device(first.cert_pem, ca.cert_pem, NOW)
    assert verify_device(second.cert_pem, ca.cert_pem, NOW)


def test_200_devices_get_200_distinct_serials_and_keys(ca):
    devices = [issue(ca, f"meter-{i:04d}") for i in range(200)]
    assert len({d.serial for d in devices}) == 200
    assert len({spki(d.cert_pem) for d in devices}) == 200
    assert all(0 < d.serial < 2**159 for d in devices)
    assert {device_id_of(d.cert_pem) for d in devices} == {f"meter-{i:04d}" for i in range(200)}


def test_device_certificate_never_outlives_its_ca():
    short = new_device_ca(TENANT, "ecdsa-p256", timedelta(days=100), NOW)
    capped = issue(short, validity=timedelta(days=365))
    assert capped.not_after == not_after(capped.cert_pem) == not_after(short.cert_pem)
    assert issue(short, validity=timedelta(days=10)).not_after == NOW + timedelta(days=10)


def test_issuing_refuses_an_unusable_ca(ca, other_ca):
    with pytest.raises(ValueError, match="not the device CA of tenant 'acme'"):
        issue(other_ca)
    with pytest.raises(ValueError, match="not valid at"):
        issue(ca, now=NOW + timedelta(days=1826))
    with pytest.raises(ValueError, match="does not match"):
        issue(type(ca)(cert_pem=ca.cert_pem, key_pem=other_ca.key_pem))
    webhook_ca = new_ca("iotsec-webhook-ca", NOW)  # a CA, but not a tenant's device CA
    with pytest.raises(ValueError, match="not the device CA"):
        issue(webhook_ca)


def test_certificates_and_keys_stay_out_of_reprs(ca):
    device = issue(ca)
    state = DeviceCAState(ca=ca, previous_ca_cert_pem=None)
    assert "PRIVATE KEY" not in repr(device)
    assert "PRIVATE KEY" not in repr(state)


# --- validation ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device_id", ["a", "A" * 64, "SN:00-1A.b_c", "urn:dev:42", "_"])
def test_valid_device_ids(ca, device_id):
    cert = load(issue(ca, device_id).cert_pem)
    assert attrs(cert, NameOID.COMMON_NAME) == attrs(cert, NameOID.SERIAL_NUMBER) == [device_id]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0]._type.name == "UTF8String"
    serial_type = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0]._type.name
    assert serial_type == ("UTF8String" if "_" in device_id else "PrintableString")  # X.520: PrintableString lacks _


@pytest.mark.parametrize(
    "device_id", ["", "a" * 65, "meter 1", "meter/1", "méter", "meter\n", "meter@1", "*", "a,b", "a=b", None, 42]
)
def test_invalid_device_ids_are_refused(ca, device_id):
    with pytest.raises(ValueError, match="invalid device id"):
        issue(ca, device_id)


@pytest.mark.parametrize(
    ("key_algorithm", "key_usage", "error"),
    [
        ("ecdsa-p256", ["digitalSignature", "keyEncipherment"], "keyEncipherment is not allowed for ecdsa-p256"),
        ("ecdsa-p256", ["digitalSignature", "dataEncipherment"], "dataEncipherment is not allowed for ecdsa-p256"),
        ("ed25519", ["digitalSignature", "keyEncipherment"], "keyEncipherment is not allowed for ed25519"),
        ("ed25519", ["digitalSignature", "keyAgreement"], "keyAgreement is not allowed for ed25519"),
        ("rsa-3072", ["digitalSignature", "keyAgreement"], "keyAgreement is not allowed for rsa-3072"),
        ("rsa-4096", ["keyAgreement"], "keyAgreement is not allowed for rsa-4096"),
        ("ecdsa-p256", ["digitalSignature", "nonRepudiation"], "unknown key usage nonRepudiation"),
        ("ecdsa-p256", [], "at least one key usage"),
        ("rsa-3072", ["keyEncipherment"], "clientAuth needs one of the key usages"),
    ],
)
def test_key_usage_incompatible_with_the_key_is_refused(ca, key_algorithm, key_usage, error):
    with pytest.raises(ValueError, match=error):
        issue(ca, key_algorithm=key_algorithm, key_usage=key_usage)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"key_algorithm": "rsa-2048"}, "unsupported device key algorithm 'rsa-2048'"),
        ({"key_algorithm": "ecdsa-p384"}, "unsupported device key algorithm 'ecdsa-p384'"),
        ({"key_algorithm": "md5"}, "unsupported device key algorithm 'md5'"),
        ({"extended_key_usage": ["codeSigning"]}, "unknown extended key usage codeSigning"),
        ({"extended_key_usage": []}, "at least one extended key usage"),
        ({"manufacturer": ""}, "manufacturer"),
        ({"model": "x" * 65}, "model"),
        ({"device_class": "  "}, "device_class"),
        ({"validity": timedelta(0)}, "validity"),
    ],
)
def test_other_invalid_requests_are_refused(ca, overrides, error):
    with pytest.raises(ValueError, match=error):
        issue(ca, **overrides)


def test_a_single_string_is_not_a_key_usage_list(ca):
    with pytest.raises(TypeError):
        issue(ca, key_usage="digitalSignature")


@settings(max_examples=40, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True))
def test_any_valid_device_id_round_trips(ca, device_id):
    device = issue(ca, device_id)
    assert device_id_of(device.cert_pem) == device_id
    san = ext(load(device.cert_pem), x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:iotsec:acme:device:{device_id}"]


# --- authentication --------------------------------------------------------------------------------------------------


def test_does_not_verify_against_another_tenants_ca(ca, other_ca):
    device = issue(ca)
    assert not verify_device(device.cert_pem, other_ca.cert_pem, NOW)
    # nor against a CA with the same subject but another key
    impostor = new_device_ca(TENANT, "ecdsa-p256", timedelta(days=1825), NOW, organization="ACME Utilities")
    assert load(impostor.cert_pem).subject == load(ca.cert_pem).subject
    assert not verify_device(device.cert_pem, impostor.cert_pem, NOW)
    assert verify_device(device.cert_pem, impostor.cert_pem + ca.cert_pem, NOW)
    assert not verify_device(device.cert_pem, "", NOW)


def test_verifies_only_within_the_validity_window(ca):
    device = issue(ca, validity=timedelta(days=10))
    cert = load(device.cert_pem)
    assert verify_device(device.cert_pem, ca.cert_pem, cert.not_valid_before_utc)
    assert not verify_device(device.cert_pem, ca.cert_pem, cert.not_valid_before_utc - timedelta(seconds=1))
    assert verify_device(device.cert_pem, ca.cert_pem, cert.not_valid_after_utc)
    assert not verify_device(device.cert_pem, ca.cert_pem, cert.not_valid_after_utc + timedelta(seconds=1))


def test_does_not_verify_once_the_ca_expired():
    short = new_device_ca(TENANT, "ecdsa-p256", timedelta(days=100), NOW)
    device = issue(short, validity=timedelta(days=100))
    assert verify_device(device.cert_pem, short.cert_pem, NOW + timedelta(days=100))
    assert not verify_device(device.cert_pem, short.cert_pem, NOW + timedelta(days=100, seconds=1))


def test_a_ca_certificate_is_not_a_device(ca):
    assert not verify_device(ca.cert_pem, ca.cert_pem, NOW)


# --- rotation and the Secret -----------------------------------------------------------------------------------------

WINDOWS = {"algorithm": "ecdsa-p256", "validity": timedelta(days=30), "rotate_before": timedelta(days=10)}


def ensure(current, now, **overrides):
    return ensure_device_ca(current, TENANT, now=now, **(WINDOWS | overrides))


def test_create_then_idempotent():
    state, reasons = ensure(None, NOW)
    assert reasons == ["created the ecdsa-p256 device CA"]
    assert state.previous_ca_cert_pem is None
    assert certs_in_bundle(state.bundle()) == [state.ca.cert_pem]
    for later in (NOW, NOW + DAY, NOW + timedelta(days=20) - timedelta(seconds=1)):
        again, reasons = ensure(state, later)
        assert reasons == []
        assert again is state


def test_rotation_keeps_old_devices_verifying_until_the_old_ca_expires():
    state, _ = ensure(None, NOW)
    old_device = issue(state.ca, "meter-old", validity=timedelta(days=365))
    assert old_device.not_after == NOW + timedelta(days=30)  # capped by the CA

    rotation = NOW + timedelta(days=20)  # == notAfter - rotate_before
    rotated, reasons = ensure(state, rotation)
    assert len(reasons) == 1
    assert "rotated the device CA" in reasons[0]
    assert "stays in the bundle" in reasons[0]
    assert rotated.previous_ca_cert_pem == state.ca.cert_pem
    assert fingerprint(rotated.ca.cert_pem) != fingerprint(state.ca.cert_pem)
    assert [fingerprint(c) for c in certs_in_bundle(rotated.bundle())] == [
        fingerprint(rotated.ca.cert_pem),
        fingerprint(state.ca.cert_pem),
    ]
    new_device = issue(rotated.ca, "meter-new", now=rotation)
    for moment in (rotation, rotation + timedelta(days=5)):
        assert verify_device(old_device.cert_pem, rotated.bundle(), moment)
        assert verify_device(new_device.cert_pem, rotated.bundle(), moment)
    assert not verify_device(old_device.cert_pem, rotated.ca.cert_pem, rotation)  # only thanks to the bundle
    assert ensure(rotated, rotation + DAY) == (rotated, [])

    after = NOW + timedelta(days=30, seconds=1)  # the old CA has expired
    dropped, reasons = ensure(rotated, after)
    assert len(reasons) == 1
    assert "dropped a previous CA" in reasons[0]
    assert dropped.previous_ca_cert_pem is None
    assert certs_in_bundle(dropped.bundle()) == [rotated.ca.cert_pem]
    assert dropped.ca == rotated.ca
    assert not verify_device(old_device.cert_pem, dropped.bundle(), after)
    assert verify_device(new_device.cert_pem, dropped.bundle(), after)


def test_no_rotation_one_second_before_the_rotation_time():
    state, _ = ensure(None, NOW)
    assert ensure(state, NOW + timedelta(days=20) - timedelta(seconds=1)) == (state, [])
    assert ensure(state, NOW + timedelta(days=20))[1]


def test_an_expired_ca_is_replaced_and_not_kept():
    state, _ = ensure(None, NOW)
    replaced, reasons = ensure(state, NOW + timedelta(days=31))
    assert "the old CA has expired and is not kept" in reasons[0]
    assert replaced.previous_ca_cert_pem is None


def test_algorithm_change_rotates_and_keeps_the_old_ca():
    state, _ = ensure(None, NOW)
    changed, reasons = ensure(state, NOW + DAY, algorithm="ecdsa-p384")
    assert "key algorithm ecdsa-p256 differs from the requested ecdsa-p384" in reasons[0]
    assert isinstance(load(changed.ca.cert_pem).public_key().curve, ec.SECP384R1)
    assert changed.previous_ca_cert_pem == state.ca.cert_pem
    assert ensure(changed, NOW + DAY, algorithm="ecdsa-p384") == (changed, [])


def test_organization_change_rotates():
    state, _ = ensure(None, NOW)
    changed, reasons = ensure(state, NOW + DAY, organization="ACME Utilities")
    assert "subject" in reasons[0]
    assert attrs(load(changed.ca.cert_pem), NameOID.ORGANIZATION_NAME) == ["ACME Utilities"]


def test_back_to_back_rotations_keep_every_unexpired_ca():
    """A second rotation before the first old CA expires must not strand the devices that CA issued."""
    state, _ = ensure(None, NOW)
    first = issue(state.ca, "meter-1")
    second_state, _ = ensure(state, NOW + DAY, algorithm="ecdsa-p384")
    second = issue(second_state.ca, "meter-2", now=NOW + DAY)
    third_state, reasons = ensure(second_state, NOW + 2 * DAY, algorithm="ecdsa-p256")
    assert len(certs_in_bundle(third_state.previous_ca_cert_pem)) == 2
    for device in (first, second, issue(third_state.ca, "meter-3", now=NOW + 2 * DAY)):
        assert verify_device(device.cert_pem, third_state.bundle(), NOW + 3 * DAY)
    # each old CA leaves the bundle when it expires
    later, reasons = ensure(third_state, NOW + timedelta(days=30, seconds=1), rotate_before=DAY)
    assert reasons == [
        f"dropped a previous CA from the bundle: it expired at {(NOW + timedelta(days=30)):%Y-%m-%dT%H:%M:%SZ}"
    ]
    assert certs_in_bundle(later.previous_ca_cert_pem) == [second_state.ca.cert_pem]


def test_a_mismatched_key_rotates():
    state, _ = ensure(None, NOW)
    other, _ = ensure(None, NOW)
    broken = DeviceCAState(
        ca=type(state.ca)(cert_pem=state.ca.cert_pem, key_pem=other.ca.key_pem), previous_ca_cert_pem=None
    )
    fixed, reasons = ensure(broken, NOW + DAY)
    assert "private key does not match" in reasons[0]
    assert verify_device(issue(fixed.ca, now=NOW + DAY).cert_pem, fixed.bundle(), NOW + DAY)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"algorithm": "rsa-2048"}, "unsupported device CA key algorithm 'rsa-2048'"),
        ({"rotate_before": timedelta(days=30)}, "rotate_before"),
        ({"rotate_before": timedelta(0)}, "rotate_before"),
    ],
)
def test_ensure_refuses_bad_arguments(overrides, error):
    with pytest.raises(ValueError, match=error):
        ensure(None, NOW, **overrides)


def test_secret_data_round_trip():
    state, _ = ensure(None, NOW)
    data = state.to_secret_data()
    assert set(data) == {"ca.crt", "ca.key", "ca-bundle.crt"}
    assert DeviceCAState.from_secret_data(data) == state

    rotated, _ = ensure(state, NOW + timedelta(days=20))
    data = rotated.to_secret_data()
    assert set(data) == {"ca.crt", "ca.key", "previous-ca.crt", "previous-ca.key", "ca-bundle.crt"}
    assert data["ca-bundle.crt"] == rotated.bundle()
    assert data["previous-ca.key"] == state.ca.key_pem, "the outgoing CA's key is kept to sign its CRL"
    restored = DeviceCAState.from_secret_data(data)
    assert restored == rotated
    assert ensure(restored, NOW + timedelta(days=21)) == (restored, [])


@pytest.mark.parametrize("missing", ["ca.crt", "ca.key"])
def test_secret_data_missing_key_is_named(missing):
    data = ensure(None, NOW)[0].to_secret_data()
    del data[missing]
    with pytest.raises(ValueError, match=f"missing key '{missing}'"):
        DeviceCAState.from_secret_data(data)
    data[missing] = "   "
    with pytest.raises(ValueError, match=f"missing key '{missing}'"):
        DeviceCAState.from_secret_data(data)


@pytest.mark.parametrize("key", ["ca.crt", "ca.key", "previous-ca.crt"])
def test_secret_data_invalid_value_is_named(key):
    data = ensure(None, NOW)[0].to_secret_data()
    data[key] = "not PEM"
    with pytest.raises(ValueError, match=f"key '{key}'"):
        DeviceCAState.from_secret_data(data)


def test_secret_data_key_must_match_certificate():
    data = ensure(None, NOW)[0].to_secret_data()
    data["ca.key"] = ensure(None, NOW)[0].ca.key_pem
    with pytest.raises(ValueError, match=r"'ca\.key' does not match the certificate in 'ca\.crt'"):
        DeviceCAState.from_secret_data(data)


def test_secret_data_refuses_a_non_ca_certificate(ca):
    device = issue(ca)
    with pytest.raises(ValueError, match=r"'ca\.crt' is not a CA certificate"):
        DeviceCAState.from_secret_data({"ca.crt": device.cert_pem, "ca.key": device.key_pem})


# --- revocation ------------------------------------------------------------------------------------------------------


def test_crl_lists_revoked_serials_and_verify_device_honours_it(ca):
    revoked, kept = issue(ca, "meter-lost"), issue(ca, "meter-ok")
    revoked_at = NOW + DAY
    crl_pem = build_crl(ca, {revoked.serial: revoked_at}, NOW + 2 * DAY, next_update=timedelta(days=3), crl_number=7)
    assert revoked_serials(crl_pem) == {revoked.serial}

    crl = x509.load_pem_x509_crl(crl_pem.encode())
    assert crl.is_signature_valid(load(ca.cert_pem).public_key())
    assert crl.issuer == load(ca.cert_pem).subject
    assert isinstance(crl.signature_hash_algorithm, hashes.SHA256)
    assert crl.last_update_utc == NOW + 2 * DAY
    assert crl.next_update_utc == NOW + 5 * DAY
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(load(ca.cert_pem), x509.SubjectKeyIdentifier).value.digest
    assert crl.get_revoked_certificate_by_serial_number(revoked.serial).revocation_date_utc == revoked_at

    later = NOW + 3 * DAY
    assert verify_device(revoked.cert_pem, ca.cert_pem, later)  # no CRL given
    assert not verify_device(revoked.cert_pem, ca.cert_pem, later, crl_pem)
    assert verify_device(kept.cert_pem, ca.cert_pem, later, crl_pem)
    # revocation is permanent: a CRL past its nextUpdate still revokes
    assert not verify_device(revoked.cert_pem, ca.cert_pem, NOW + 30 * DAY, crl_pem)


def test_empty_crl():
    pair = new_device_ca(TENANT, "ecdsa-p384", timedelta(days=30), NOW)
    crl_pem = build_crl(pair, {}, NOW)
    assert revoked_serials(crl_pem) == set()
    assert isinstance(x509.load_pem_x509_crl(crl_pem.encode()).signature_hash_algorithm, hashes.SHA384)
    assert verify_device(issue(pair).cert_pem, pair.cert_pem, NOW, crl_pem)


def test_a_crl_not_signed_by_the_issuing_ca_is_ignored(ca):
    device = issue(ca)
    impostor = new_device_ca(TENANT, "ecdsa-p256", timedelta(days=1825), NOW, organization="ACME Utilities")
    forged = build_crl(impostor, {device.serial: NOW}, NOW)  # same issuer name, other key
    assert revoked_serials(forged) == {device.serial}
    assert verify_device(device.cert_pem, ca.cert_pem, NOW, forged + build_crl(ca, {}, NOW))
    assert not verify_device(device.cert_pem, ca.cert_pem, NOW, forged), "the issuing CA's own CRL is missing"


def test_crls_of_several_cas_during_a_rotation():
    state, _ = ensure(None, NOW)
    old_device = issue(state.ca, "meter-old")
    rotated, _ = ensure(state, NOW + timedelta(days=20))
    new_device = issue(rotated.ca, "meter-new", now=NOW + timedelta(days=20))
    moment = NOW + timedelta(days=21)
    old_crl = build_crl(state.ca, {old_device.serial: moment}, moment)
    new_crl = build_crl(rotated.ca, {}, moment)
    both = new_crl + old_crl
    assert revoked_serials(both) == {old_device.serial}
    assert not verify_device(old_device.cert_pem, rotated.bundle(), moment, both)
    assert verify_device(new_device.cert_pem, rotated.bundle(), moment, both)
    # the old CA's CRL does not apply to the new CA's devices even if it lists the same serial
    old_listing_new = build_crl(state.ca, {new_device.serial: moment}, moment)
    assert verify_device(new_device.cert_pem, rotated.bundle(), moment, new_crl + old_listing_new)
    # ... nor does it stand in for the new CA's CRL
    assert not verify_device(new_device.cert_pem, rotated.bundle(), moment, old_listing_new)


@pytest.mark.parametrize("serial", [0, -1])
def test_build_crl_refuses_bad_serials(ca, serial):
    with pytest.raises(ValueError, match="positive integer"):
        build_crl(ca, {serial: NOW}, NOW)


def test_build_crl_refuses_a_non_ca():
    leaf = new_serving_cert(new_ca("webhook", NOW), ["localhost"], [], NOW)
    with pytest.raises(ValueError, match="may not sign CRLs"):
        build_crl(leaf, {}, NOW)


def test_revoked_serials_refuses_non_crl_input(ca):
    with pytest.raises(ValueError, match=r"not a PEM X\.509 CRL"):
        revoked_serials(ca.cert_pem)


# --- a real mutual-TLS handshake (the TLS stack checks validity against the real clock) -----------------------------


def mtls(tmp_path, device: DeviceCertificate, trusted_pem: str, crl_pem: str | None = None):
    """Connect as the device to a server that requires a client certificate from `trusted_pem`.

    Returns (what the server read from the verified peer, the server's error or None).
    """
    now = datetime.now(UTC)
    server_ca = new_ca("test server CA", now)
    serving = new_serving_cert(server_ca, ["localhost"], [], now)
    for name, pem in {
        "tls.crt": serving.cert_pem,
        "tls.key": serving.key_pem,
        "device.crt": device.cert_pem,
        "device.key": device.key_pem,
        "trusted.pem": trusted_pem + (crl_pem or ""),
    }.items():
        (tmp_path / name).write_text(pem)

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if crl_pem:
        server_ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    server_ctx.load_verify_locations(cafile=tmp_path / "trusted.pem")  # a file: cadata would skip the CRL

    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cadata=server_ca.cert_pem)
    client_ctx.load_cert_chain(tmp_path / "device.crt", tmp_path / "device.key")

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    result: dict[str, object] = {"peer": None, "error": None}

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                subject = dict(rdn[0] for rdn in tls.getpeercert()["subject"] if rdn[0][0] == "commonName")
                result["peer"] = subject["commonName"]
                tls.sendall(b"ok")
        except (OSError, ssl.SSLError) as e:
            result["error"] = e
        finally:
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.recv(2)
    except (OSError, ssl.SSLError):
        pass  # a refused client sees an alert (TLS 1.3: only after its handshake); the server's error is returned
    finally:
        thread.join(10)
        assert not thread.is_alive()
    return result["peer"], result["error"]


@pytest.mark.parametrize("key_algorithm", ["ecdsa-p256", "ed25519"])
def test_mtls_device_authentication_during_a_ca_rotation(tmp_path, key_algorithm):
    now = datetime.now(UTC)
    state, _ = ensure_device_ca(None, TENANT, "ecdsa-p256", timedelta(days=30), timedelta(days=20), now - 15 * DAY)
    old_device = issue(state.ca, "meter-old", now=now - 15 * DAY, key_algorithm=key_algorithm)
    rotated, reasons = ensure_device_ca(state, TENANT, "ecdsa-p256", timedelta(days=30), timedelta(days=20), now)
    assert "rotated the device CA" in reasons[0]
    new_device = issue(rotated.ca, "meter-new", now=now, key_algorithm=key_algorithm)
    assert mtls(tmp_path, old_device, rotated.bundle()) == ("meter-old", None)
    assert mtls(tmp_path, new_device, rotated.bundle()) == ("meter-new", None)


def test_mtls_with_the_trust_bundles_crls_during_a_ca_rotation(tmp_path):
    """A TLS server checking CRLs accepts good devices of both CAs and refuses a revoked device of the old one."""
    from iotsec.pki.devices import Registry, trust_bundle

    now = datetime.now(UTC)
    state, _ = ensure_device_ca(None, TENANT, "ecdsa-p256", timedelta(days=30), timedelta(days=20), now - 15 * DAY)
    old_good = issue(state.ca, "meter-old", now=now - 15 * DAY)
    old_lost = issue(state.ca, "meter-lost", now=now - 15 * DAY)
    rotated, _ = ensure_device_ca(state, TENANT, "ecdsa-p256", timedelta(days=30), timedelta(days=20), now)
    new_good = issue(rotated.ca, "meter-new", now=now)
    registry = Registry({}, {}).with_revoked([old_lost.serial], now)
    bundle = trust_bundle(rotated, registry, None, now)
    assert mtls(tmp_path, old_good, bundle["ca-bundle.crt"], bundle["crl.pem"]) == ("meter-old", None)
    assert mtls(tmp_path, new_good, bundle["ca-bundle.crt"], bundle["crl.pem"]) == ("meter-new", None)
    peer, error = mtls(tmp_path, old_lost, bundle["ca-bundle.crt"], bundle["crl.pem"])
    assert peer is None
    assert "revoked" in str(error)


def test_mtls_refuses_another_tenants_device(tmp_path):
    now = datetime.now(UTC)
    acme = new_device_ca(TENANT, "ecdsa-p256", timedelta(days=30), now)
    globex = new_device_ca("globex", "ecdsa-p256", timedelta(days=30), now)
    peer, error = mtls(tmp_path, issue(globex, "meter-1", now=now, tenant="globex"), acme.cert_pem)
    assert peer is None
    assert isinstance(error, ssl.SSLError)


def test_mtls_refuses_a_revoked_device(tmp_path):
    now = datetime.now(UTC)
    pair = new_device_ca(TENANT, "ecdsa-p256", timedelta(days=30), now)
    revoked, kept = issue(pair, "meter-lost", now=now), issue(pair, "meter-ok", now=now)
    crl_pem = build_crl(pair, {revoked.serial: now}, now)
    peer, error = mtls(tmp_path, revoked, pair.cert_pem, crl_pem)
    assert peer is None
    assert isinstance(error, ssl.SSLError)
    assert "revoked" in str(error)
    assert mtls(tmp_path, kept, pair.cert_pem, crl_pem) == ("meter-ok", None)


# ---------------------------------------------------------------- registry and trust bundle


def test_registry_round_trip_and_lookups():
    from iotsec.pki.devices import Registry

    now = datetime(2026, 1, 1, tzinfo=UTC)
    registry = Registry({}, {}).with_issued(11, "meter-1").with_issued(12, "meter-1").with_revoked([11], now)
    again = Registry.from_config_map_data(registry.to_config_map_data())
    assert again == registry
    assert again.serials_of("meter-1") == [11, 12]
    assert again.with_revoked([11], now + timedelta(days=1)).revoked[11] == now, "the first revocation time stays"


def test_trust_bundle_crl_is_stable_until_revocations_change():
    from iotsec.pki.devices import DeviceCAState, Registry, build_crl, revoked_serials, trust_bundle

    now = datetime.now(UTC)
    state = DeviceCAState(new_device_ca("acme", "ecdsa-p256", timedelta(days=365), now), None)
    registry = Registry({1: "a", 2: "b"}, {})
    first = trust_bundle(state, registry, None, now)
    assert first["ca-bundle.crt"] == state.bundle()
    assert revoked_serials(first["crl.pem"]) == set()
    assert trust_bundle(state, registry, first["crl.pem"], now + timedelta(hours=1)) == first, "no churn"
    revoked = trust_bundle(state, registry.with_revoked([2], now), first["crl.pem"], now + timedelta(hours=1))
    assert revoked_serials(revoked["crl.pem"]) == {2}
    stale = build_crl(state.ca, {}, now, next_update=timedelta(hours=12))
    assert trust_bundle(state, registry, stale, now)["crl.pem"] != stale, "re-signed before it expires"
