import hashlib
import ipaddress
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.pki.certs import (
    KeyPair,
    WebhookTLS,
    ca_bundle,
    certs_in_bundle,
    ensure_webhook_tls,
    fingerprint,
    needs_rotation,
    new_ca,
    new_serving_cert,
    not_after,
    verify_chain,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DNS = ["iotsec-webhook.iotsec-system.svc", "iotsec-webhook.iotsec-system.svc.cluster.local", "localhost"]
IPS = ["127.0.0.1", "::1"]


def load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def ext(cert: x509.Certificate, kind):
    return cert.extensions.get_extension_for_class(kind)


def is_ca(cert: x509.Certificate) -> bool:
    return ext(cert, x509.BasicConstraints).value.ca


def assert_ec_p256_sha256(cert: x509.Certificate) -> None:
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


def reissue_ca(ca: KeyPair, not_before: datetime, not_after_: datetime) -> str:
    """The same CA (subject and key) with another validity window."""
    cert = load(ca.cert_pem)
    key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.subject)
        .public_key(cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after_)
    )
    for extension in cert.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


# --- the CA ----------------------------------------------------------------------------------------------------------


def test_ca_is_a_self_signed_p256_sha256_ca():
    ca = new_ca("iotsec test CA", NOW)
    cert = load(ca.cert_pem)
    assert_ec_p256_sha256(cert)
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "iotsec test CA"
    cert.verify_directly_issued_by(cert)

    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is True
    assert bc.value.path_length == 0

    ku = ext(cert, x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    assert ku.value.digital_signature
    assert not ku.value.key_encipherment

    ski = ext(cert, x509.SubjectKeyIdentifier)
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())


def test_ca_validity_window_is_backdated_for_clock_skew():
    cert = load(new_ca("ca", NOW, validity=timedelta(days=10)).cert_pem)
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(days=10)


def test_private_key_is_unencrypted_pkcs8_matching_the_certificate():
    ca = new_ca("ca", NOW)
    assert ca.key_pem.startswith("-----BEGIN PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.DER, spki) == load(
        ca.cert_pem
    ).public_key().public_bytes(serialization.Encoding.DER, spki)


def test_naive_now_is_rejected():
    with pytest.raises(ValueError, match="timezone-aware"):
        new_ca("ca", datetime(2026, 1, 1))


def test_non_utc_now_is_normalised():
    cert = load(new_ca("ca", NOW.astimezone(timezone(timedelta(hours=2)))).cert_pem)
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)


# --- the serving certificate -----------------------------------------------------------------------------------------


@pytest.fixture
def ca() -> KeyPair:
    return new_ca("iotsec webhook CA", NOW)


def test_serving_cert_extensions(ca):
    serving = new_serving_cert(ca, DNS, IPS, NOW)
    cert, ca_cert = load(serving.cert_pem), load(ca.cert_pem)
    assert_ec_p256_sha256(cert)
    assert cert.issuer == ca_cert.subject
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == DNS[0]

    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == DNS
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(ip) for ip in IPS]

    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is False

    ku = ext(cert, x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not ku.value.key_encipherment, "RFC 8813: keyEncipherment is not for EC keys"
    assert not ku.value.key_cert_sign

    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(ca_cert, x509.SubjectKeyIdentifier).value.digest
    cert.verify_directly_issued_by(ca_cert)


def test_serving_cert_passes_an_rfc5280_path_validator(ca):
    serving = load(new_serving_cert(ca, DNS, IPS, NOW).cert_pem)
    store = Store([load(ca.cert_pem)])
    for subject in (DNSName("localhost"), DNSName(DNS[1]), IPAddress(ipaddress.ip_address("::1"))):
        chain = PolicyBuilder().store(store).time(NOW).build_server_verifier(subject).verify(serving, [])
        assert chain[-1] == load(ca.cert_pem)


def test_serving_cert_common_name_falls_back_to_first_ip(ca):
    cert = load(new_serving_cert(ca, [], ["10.0.0.7", "10.0.0.8"], NOW).cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "10.0.0.7"
    assert ext(cert, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == []


def test_serving_cert_with_a_name_too_long_for_a_common_name(ca):
    name = "a" * 60 + ".iotsec-system.svc"
    cert = load(new_serving_cert(ca, [name], [], NOW).cert_pem)
    assert len(cert.subject) == 0
    san = ext(cert, x509.SubjectAlternativeName)
    assert san.critical  # RFC 5280: an empty subject requires a critical SAN
    assert san.value.get_values_for_type(x509.DNSName) == [name]


def test_serving_cert_never_outlives_its_ca():
    short_ca = new_ca("ca", NOW, validity=timedelta(days=100))
    serving = new_serving_cert(short_ca, ["localhost"], [], NOW, validity=timedelta(days=365))
    assert not_after(serving.cert_pem) == not_after(short_ca.cert_pem)
    serving = new_serving_cert(short_ca, ["localhost"], [], NOW, validity=timedelta(days=10))
    assert not_after(serving.cert_pem) == NOW + timedelta(days=10)


def test_serving_cert_names_are_deduplicated(ca):
    cert = load(new_serving_cert(ca, ["localhost", "localhost"], ["127.0.0.1", "127.0.0.1"], NOW).cert_pem)
    san = ext(cert, x509.SubjectAlternativeName).value
    assert len(san) == 2


@pytest.mark.parametrize(
    ("dns", "ips", "error"),
    [
        ([], [], ValueError),
        (["localhost"], ["not-an-ip"], ValueError),
        ("localhost", [], TypeError),
        ([""], [], ValueError),
    ],
)
def test_serving_cert_rejects_bad_names(ca, dns, ips, error):
    with pytest.raises(error):
        new_serving_cert(ca, dns, ips, NOW)


# --- inspection ------------------------------------------------------------------------------------------------------


def test_not_after_and_fingerprint(ca):
    end = not_after(ca.cert_pem)
    assert end.tzinfo is not None
    assert end.utcoffset() == timedelta(0)
    assert end == NOW + timedelta(days=3650)

    digest = fingerprint(ca.cert_pem)
    assert digest == hashlib.sha256(load(ca.cert_pem).public_bytes(serialization.Encoding.DER)).hexdigest()
    assert len(digest) == 64
    assert digest == digest.lower()
    assert ":" not in digest


def test_needs_rotation_boundaries(ca):
    threshold = not_after(ca.cert_pem) - timedelta(days=30)
    assert not needs_rotation(ca.cert_pem, NOW, timedelta(days=30))
    assert not needs_rotation(ca.cert_pem, threshold - timedelta(seconds=1), timedelta(days=30))
    assert needs_rotation(ca.cert_pem, threshold, timedelta(days=30))
    assert needs_rotation(ca.cert_pem, threshold + timedelta(seconds=1), timedelta(days=30))
    assert needs_rotation(ca.cert_pem, not_after(ca.cert_pem) + timedelta(days=1), timedelta(days=30))


def test_ca_bundle_dedupes_keeps_order_and_expired_certs():
    a = new_ca("a", NOW)
    b = new_ca("b", NOW)
    expired = new_ca("expired", NOW - timedelta(days=20), validity=timedelta(days=10))
    bundle = ca_bundle(b.cert_pem, a.cert_pem, b.cert_pem, expired.cert_pem, a.cert_pem)
    assert [fingerprint(c) for c in certs_in_bundle(bundle)] == [fingerprint(x.cert_pem) for x in (b, a, expired)]
    assert bundle.endswith("-----END CERTIFICATE-----\n")
    assert bundle.count("-----BEGIN CERTIFICATE-----") == 3
    assert ca_bundle(bundle, a.cert_pem) == bundle  # bundles may be passed in, too
    assert ca_bundle() == ""


def test_ca_bundle_adds_missing_trailing_newline(ca):
    assert ca_bundle(ca.cert_pem.rstrip("\n")) == ca.cert_pem


def test_certs_in_bundle(ca):
    other = new_ca("other", NOW)
    assert certs_in_bundle(ca.cert_pem + other.cert_pem) == [ca.cert_pem, other.cert_pem]
    assert certs_in_bundle("") == []
    assert certs_in_bundle("\n") == []
    with pytest.raises(ValueError, match="PEM"):
        certs_in_bundle("garbage")


# --- verify_chain ----------------------------------------------------------------------------------------------------


def test_verify_chain(ca):
    serving = new_serving_cert(ca, ["localhost"], ["127.0.0.1"], NOW)
    other = new_ca("iotsec webhook CA", NOW)  # same subject, different key
    assert verify_chain(serving.cert_pem, ca.cert_pem, NOW)
    assert not verify_chain(serving.cert_pem, other.cert_pem, NOW)
    assert verify_chain(serving.cert_pem, ca_bundle(other.cert_pem, ca.cert_pem), NOW)
    assert not verify_chain(serving.cert_pem, "", NOW)


def test_verify_chain_outside_the_validity_window(ca):
    serving = new_serving_cert(ca, ["localhost"], [], NOW)
    assert verify_chain(serving.cert_pem, ca.cert_pem, NOW + timedelta(days=365))
    assert not verify_chain(serving.cert_pem, ca.cert_pem, NOW + timedelta(days=365, seconds=1))
    assert not verify_chain(serving.cert_pem, ca.cert_pem, NOW + timedelta(days=365 + 1))
    assert verify_chain(serving.cert_pem, ca.cert_pem, NOW - timedelta(minutes=5))
    assert not verify_chain(serving.cert_pem, ca.cert_pem, NOW - timedelta(hours=1))


def test_verify_chain_requires_the_ca_itself_to_be_valid(ca):
    serving = new_serving_cert(ca, ["localhost"], [], NOW)
    expired_copy = reissue_ca(ca, NOW - timedelta(days=20), NOW - timedelta(days=1))
    assert load(serving.cert_pem).verify_directly_issued_by(load(expired_copy)) is None  # the signature is fine
    assert not verify_chain(serving.cert_pem, expired_copy, NOW)


def test_verify_chain_ignores_non_ca_certificates(ca):
    leaf = new_serving_cert(ca, ["leaf"], [], NOW)
    signed_by_leaf = new_serving_cert(leaf, ["other"], [], NOW)
    assert not verify_chain(signed_by_leaf.cert_pem, leaf.cert_pem, NOW)


# --- the Secret ------------------------------------------------------------------------------------------------------


def rotated(now: datetime = NOW) -> WebhookTLS:
    """TLS material right after a CA rotation: a previous CA is in the bundle."""
    tls, _ = ensure_webhook_tls(None, DNS, IPS, now - timedelta(days=3300))
    tls, reasons = ensure_webhook_tls(tls, DNS, IPS, now)
    assert tls.previous_ca_cert_pem is not None, reasons
    return tls


@pytest.mark.parametrize("with_previous", [False, True])
def test_secret_data_round_trips(with_previous):
    tls = rotated() if with_previous else ensure_webhook_tls(None, DNS, IPS, NOW)[0]
    data = tls.to_secret_data()
    expected = {"ca.crt", "ca.key", "tls.crt", "tls.key", "ca-bundle.crt"} | (
        {"previous-ca.crt"} if with_previous else set()
    )
    assert set(data) == expected
    assert all(isinstance(v, str) for v in data.values())
    assert data["ca-bundle.crt"] == tls.bundle()
    assert len(certs_in_bundle(data["ca-bundle.crt"])) == (2 if with_previous else 1)
    assert WebhookTLS.from_secret_data(data) == tls


@pytest.mark.parametrize("key", ["ca.crt", "ca.key", "tls.crt", "tls.key"])
def test_from_secret_data_names_a_missing_key(key):
    data = ensure_webhook_tls(None, DNS, IPS, NOW)[0].to_secret_data()
    del data[key]
    with pytest.raises(ValueError, match=f"missing key '{key}'"):
        WebhookTLS.from_secret_data(data)


@pytest.mark.parametrize("key", ["ca.crt", "ca.key", "tls.crt", "tls.key", "previous-ca.crt"])
def test_from_secret_data_names_an_invalid_key(key):
    data = ensure_webhook_tls(None, DNS, IPS, NOW)[0].to_secret_data()
    data[key] = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    with pytest.raises(ValueError, match=f"key '{key}' is not"):
        WebhookTLS.from_secret_data(data)


def test_from_secret_data_ignores_a_blank_previous_ca_and_the_derived_bundle():
    tls = ensure_webhook_tls(None, DNS, IPS, NOW)[0]
    data = tls.to_secret_data() | {"previous-ca.crt": "", "ca-bundle.crt": "stale"}
    assert WebhookTLS.from_secret_data(data) == tls


# --- ensure_webhook_tls ----------------------------------------------------------------------------------------------


def test_ensure_creates_everything():
    tls, reasons = ensure_webhook_tls(None, DNS, IPS, NOW)
    assert reasons == ["created CA and serving certificate"]
    assert tls.previous_ca_cert_pem is None
    assert is_ca(load(tls.ca.cert_pem))
    assert verify_chain(tls.serving.cert_pem, tls.bundle(), NOW)
    assert not_after(tls.ca.cert_pem) == NOW + timedelta(days=3650)
    assert not_after(tls.serving.cert_pem) == NOW + timedelta(days=365)


@pytest.mark.parametrize("later", [timedelta(0), timedelta(days=1), timedelta(days=334)])
def test_ensure_is_idempotent(later):
    tls, _ = ensure_webhook_tls(None, DNS, IPS, NOW)
    again, reasons = ensure_webhook_tls(tls, DNS, IPS, NOW + later)
    assert reasons == []
    assert again is tls


def test_ensure_name_comparison_is_order_and_case_insensitive():
    tls, _ = ensure_webhook_tls(None, DNS, IPS, NOW)
    again, reasons = ensure_webhook_tls(tls, [n.upper() for n in reversed(DNS)], ["0:0::1", "127.0.0.1"], NOW)
    assert reasons == []
    assert again is tls


def test_ensure_rotates_the_serving_cert_29_days_before_expiry():
    tls, _ = ensure_webhook_tls(None, DNS, IPS, NOW)
    now = not_after(tls.serving.cert_pem) - timedelta(days=29)
    new, reasons = ensure_webhook_tls(tls, DNS, IPS, now)
    assert len(reasons) == 1
    assert "serving certificate" in reasons[0]
    assert new.ca == tls.ca
    assert new.previous_ca_cert_pem is None
    assert new.serving != tls.serving
    assert not_after(new.serving.cert_pem) == now + timedelta(days=365)
    assert verify_chain(new.serving.cert_pem, new.bundle(), now)
    assert verify_chain(tls.serving.cert_pem, new.bundle(), now)  # pods still serving the old cert keep working
    assert ensure_webhook_tls(new, DNS, IPS, now) == (new, [])


def test_ensure_keeps_the_serving_cert_31_days_before_expiry():
    tls, _ = ensure_webhook_tls(None, DNS, IPS, NOW)
    assert ensure_webhook_tls(tls, DNS, IPS, not_after(tls.serving.cert_pem) - timedelta(days=31)) == (tls, [])


def test_ensure_rotates_the_ca_with_an_overlap():
    tls, _ = ensure_webhook_tls(None, DNS, IPS, NOW)
    now = not_after(tls.ca.cert_pem) - timedelta(days=364)
    # keep the serving cert fresh up to the rotation, as the operator would have
    tls = WebhookTLS(tls.ca, None, new_serving_cert(tls.ca, DNS, IPS, now - timedelta(days=1)))

    new, reasons = ensure_webhook_tls(tls, DNS, IPS, now)
    assert any("rotated CA" in r for r in reasons)
    assert new.ca != tls.ca
    assert new.previous_ca_cert_pem == tls.ca.cert_pem
    assert [fingerprint(c) for c in certs_in_bundle(new.bundle())] == [
        fingerprint(new.ca.cert_pem),
        fingerprint(tls.ca.cert_pem),
    ]
    assert verify_chain(new.serving.cert_pem, new.ca.cert_pem, now)
    assert verify_chain(new.serving.cert_pem, new.bundle(), now)
    # the old serving cert (a pod that has not reloaded yet) verifies against the new bundle
    assert verify_chain(tls.serving.cert_pem, new.bundle(), now)
    # a client that only knows the old CA verifies the old serving cert but not the new one
    assert verify_chain(tls.serving.cert_pem, tls.ca.cert_pem, now)
    assert not verify_chain(new.serving.cert_pem, tls.ca.cert_pem, now)
    assert ensure_webhook_tls(new, DNS, IPS, now) == (new, [])


def test_ensure_drops_an_expired_previous_ca():
    tls, _ = ensure_webhook_tls(None, DNS, IPS, NOW)
    short_lived = new_ca("old", NOW - timedelta(days=20), validity=timedelta(days=10))
    tls = WebhookTLS(tls.ca, short_lived.cert_pem, tls.serving)
    new, reasons = ensure_webhook_tls(tls, DNS, IPS, NOW)
    assert len(reasons) == 1
    assert "previous CA" in reasons[0]
    assert "expired" in reasons[0]
    assert new.previous_ca_cert_pem is None
    assert new.ca is tls.ca
    assert new.serving is tls.serving
    assert certs_in_bundle(new.bundle()) == [tls.ca.cert_pem]
    assert "previous-ca.crt" not in new.to_secret_data()


def test_ensure_drops_the_previous_ca_once_it_expires_after_a_rotation():
    tls = rotated()
    later = not_after(tls.previous_ca_cert_pem) + timedelta(seconds=1)
    new, reasons = ensure_webhook_tls(tls, DNS, IPS, later)
    assert any("previous CA" in r for r in reasons)
    assert new.previous_ca_cert_pem is None
    assert new.ca == tls.ca
    assert verify_chain(new.serving.cert_pem, new.bundle(), later)


@pytest.mark.parametrize(
    ("dns", "ips"),
    [
        ([*DNS, "extra.example"], IPS),
        (DNS[:1], IPS),
        (DNS, ["127.0.0.1"]),
        (DNS, [*IPS, "10.1.2.3"]),
    ],
)
def test_ensure_reissues_when_names_change(dns, ips):
    tls, _ = ensure_webhook_tls(None, DNS, IPS, NOW)
    new, reasons = ensure_webhook_tls(tls, dns, ips, NOW)
    assert len(reasons) == 1
    assert "names" in reasons[0]
    assert new.ca == tls.ca
    san = ext(load(new.serving.cert_pem), x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == set(dns)
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address(ip) for ip in ips}
    assert ensure_webhook_tls(new, dns, ips, NOW) == (new, [])


def test_ensure_reissues_a_serving_cert_from_another_ca():
    tls, _ = ensure_webhook_tls(None, DNS, IPS, NOW)
    foreign = new_serving_cert(new_ca("someone else", NOW), DNS, IPS, NOW)
    new, reasons = ensure_webhook_tls(WebhookTLS(tls.ca, None, foreign), DNS, IPS, NOW)
    assert reasons == ["reissued the serving certificate: it is not signed by the current CA"]
    assert verify_chain(new.serving.cert_pem, tls.ca.cert_pem, NOW)


def test_ensure_reissues_a_serving_cert_whose_key_does_not_match():
    tls, _ = ensure_webhook_tls(None, DNS, IPS, NOW)
    other = new_serving_cert(tls.ca, DNS, IPS, NOW)
    broken = WebhookTLS(tls.ca, None, KeyPair(tls.serving.cert_pem, other.key_pem))
    new, reasons = ensure_webhook_tls(broken, DNS, IPS, NOW)
    assert len(reasons) == 1
    assert "private key" in reasons[0]
    assert new.serving not in (tls.serving, broken.serving)


def test_ensure_rotates_a_ca_whose_key_does_not_match():
    tls, _ = ensure_webhook_tls(None, DNS, IPS, NOW)
    broken = WebhookTLS(KeyPair(tls.ca.cert_pem, new_ca("x", NOW).key_pem), None, tls.serving)
    new, reasons = ensure_webhook_tls(broken, DNS, IPS, NOW)
    assert any("private key" in r for r in reasons)
    assert new.previous_ca_cert_pem == tls.ca.cert_pem
    assert verify_chain(new.serving.cert_pem, new.bundle(), NOW)
    assert verify_chain(tls.serving.cert_pem, new.bundle(), NOW)


def test_ensure_rotates_an_expired_ca_without_keeping_it():
    tls, _ = ensure_webhook_tls(None, DNS, IPS, NOW)
    later = not_after(tls.ca.cert_pem) + timedelta(days=1)
    new, reasons = ensure_webhook_tls(tls, DNS, IPS, later)
    assert any("not kept" in r for r in reasons)
    assert new.previous_ca_cert_pem is None
    assert verify_chain(new.serving.cert_pem, new.bundle(), later)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"serving_renew_before": timedelta(days=365)},
        {"ca_renew_before": timedelta(days=3650)},
        {"serving_renew_before": timedelta(0)},
        {"serving_renew_before": timedelta(days=400), "serving_validity": timedelta(days=800)},
    ],
)
def test_ensure_rejects_renewal_windows_that_would_never_settle(kwargs):
    with pytest.raises(ValueError, match="renew_before"):
        ensure_webhook_tls(None, DNS, IPS, NOW, **kwargs)


@settings(max_examples=20, deadline=None)
@given(steps=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=25))
def test_ensure_over_time_always_serves_a_verifiable_cert(steps):
    """Reconciling at arbitrary intervals: always settled, verifiable, and the outgoing cert stays trusted."""
    now = NOW
    tls, _ = ensure_webhook_tls(None, DNS, IPS, now)
    for days in steps:
        now += timedelta(days=days)
        new, _ = ensure_webhook_tls(tls, DNS, IPS, now)
        assert ensure_webhook_tls(new, DNS, IPS, now) == (new, [])
        assert verify_chain(new.serving.cert_pem, new.bundle(), now)
        if verify_chain(tls.serving.cert_pem, tls.bundle(), now):
            assert verify_chain(tls.serving.cert_pem, new.bundle(), now)
        assert not needs_rotation(new.serving.cert_pem, now, timedelta(days=30))
        tls = new


# --- a real TLS handshake --------------------------------------------------------------------------------------------


def handshake(tmp_path, serving: KeyPair, cafile_pem: str, server_hostname: str) -> bytes:
    (tmp_path / "tls.crt").write_text(serving.cert_pem)
    (tmp_path / "tls.key").write_text(serving.key_pem)
    (tmp_path / "ca-bundle.crt").write_text(cafile_pem)

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname, no default CAs
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # Python >= 3.13 defaults to this
    client_ctx.load_verify_locations(cafile=tmp_path / "ca-bundle.crt")

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    server_errors: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except (OSError, ssl.SSLError) as e:
            server_errors.append(e)
        finally:
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            return tls.recv(2)
    finally:
        thread.join(10)
        assert not thread.is_alive()


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
def test_tls_handshake_with_the_ca_bundle(tmp_path, server_hostname):
    tls, _ = ensure_webhook_tls(None, ["localhost"], ["127.0.0.1"], datetime.now(UTC))
    assert handshake(tmp_path, tls.serving, tls.bundle(), server_hostname) == b"ok"


def test_tls_handshake_fails_with_another_ca(tmp_path):
    now = datetime.now(UTC)
    tls, _ = ensure_webhook_tls(None, ["localhost"], ["127.0.0.1"], now)
    other = new_ca("iotsec-webhook-ca", now)  # even the same subject name does not help
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tmp_path, tls.serving, other.cert_pem, "localhost")


def test_tls_handshake_fails_for_a_name_not_in_the_cert(tmp_path):
    tls, _ = ensure_webhook_tls(None, ["localhost"], ["127.0.0.1"], datetime.now(UTC))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tmp_path, tls.serving, tls.bundle(), "127.0.0.2")


def test_tls_handshake_during_a_ca_rotation_overlap(tmp_path):
    """After a CA rotation, a pod still serving the old cert is trusted by clients given the new bundle."""
    now = datetime.now(UTC)
    windows = {
        "ca_validity": timedelta(days=30),
        "ca_renew_before": timedelta(days=20),
        "serving_validity": timedelta(days=10),
        "serving_renew_before": timedelta(days=1),
    }
    old_ca = new_ca("iotsec-webhook-ca", now - timedelta(days=15), validity=timedelta(days=30))
    old = WebhookTLS(old_ca, None, new_serving_cert(old_ca, ["localhost"], ["127.0.0.1"], now, timedelta(days=10)))
    new, reasons = ensure_webhook_tls(old, ["localhost"], ["127.0.0.1"], now, **windows)
    assert any("rotated CA" in r for r in reasons)
    assert handshake(tmp_path, old.serving, new.bundle(), "localhost") == b"ok"
    assert handshake(tmp_path, new.serving, new.bundle(), "localhost") == b"ok"
