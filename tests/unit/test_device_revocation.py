"""Revocation through a device CA rotation, checked against the real `openssl verify -crl_check_all`.

A broker that checks CRLs (mosquitto `crlfile`, nginx `ssl_crl`, OpenSSL's X509_V_FLAG_CRL_CHECK_ALL) needs a
current CRL from the CA that issued a device, and ignores CRLs of another key even under the same CA name. The
trust bundle must therefore carry one CRL per CA, and `verify_device` must decide as OpenSSL does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from iotsec.pki.certs import CLOCK_SKEW, certs_in_bundle, fingerprint
from iotsec.pki.devices import (
    DeviceCAState,
    DeviceCertificate,
    Issued,
    Registry,
    ensure_device_ca,
    issue_device_certificate,
    published_revocations,
    revoked_serials,
    trust_bundle,
    verify_device,
    with_published,
)

OPENSSL = shutil.which("openssl")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
TENANT = "acme"
VALIDITY, ROTATE_BEFORE = timedelta(days=30), timedelta(days=10)  # rotation at NOW + 20d, old CA expires NOW + 30d


def test_openssl_is_on_the_machine():
    assert OPENSSL, "these tests compare with the real openssl binary; install it rather than skip them"


def openssl_accepts(tmp_path: Path, cert_pem: str, bundle: dict[str, str], at: datetime) -> tuple[bool, str]:
    """`openssl verify -crl_check_all` of a device certificate against a trust bundle, at `at`."""
    (tmp_path / "ca.pem").write_text(bundle["ca-bundle.crt"])
    (tmp_path / "crl.pem").write_text(bundle["crl.pem"])
    (tmp_path / "leaf.pem").write_text(cert_pem)
    run = subprocess.run(
        [
            OPENSSL or "openssl",
            "verify",
            "-crl_check_all",
            "-CAfile",
            str(tmp_path / "ca.pem"),
            "-CRLfile",
            str(tmp_path / "crl.pem"),
            "-attime",
            str(int(at.timestamp())),
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return run.returncode == 0, run.stdout + run.stderr


def crls_of(pem: bytes) -> list[x509.CertificateRevocationList]:
    blocks = re.findall(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", pem, re.DOTALL)
    return [x509.load_pem_x509_crl(block) for block in blocks]


def ensure(state: DeviceCAState | None, now: datetime, algorithm: str) -> tuple[DeviceCAState, list[str]]:
    return ensure_device_ca(state, TENANT, algorithm, VALIDITY, ROTATE_BEFORE, now)


def issue(state: DeviceCAState, device_id: str, now: datetime, validity: timedelta = 365 * DAY) -> DeviceCertificate:
    return issue_device_certificate(
        state.ca,
        TENANT,
        device_id,
        "smart-meter",
        "ACME Meters",
        "SM-200",
        "ecdsa-p256",
        validity,
        ["digitalSignature"],
        ["clientAuth"],
        now,
    )


def check(tmp_path: Path, devices: dict[str, DeviceCertificate], bundle: dict[str, str], at: datetime) -> dict:
    """Each device's verdict, asserting that verify_device and openssl agree on it."""
    verdicts = {}
    for name, device in devices.items():
        ours = verify_device(device.cert_pem, bundle["ca-bundle.crt"], at, bundle["crl.pem"])
        theirs, output = openssl_accepts(tmp_path, device.cert_pem, bundle, at)
        assert ours == theirs, f"{name} at {at}: verify_device says {ours}, openssl says {theirs}: {output}"
        verdicts[name] = ours
    return verdicts


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "rsa-3072"])
def test_revocation_agrees_with_openssl_through_a_whole_rotation(tmp_path, algorithm):
    registry = Registry({}, {})
    devices: dict[str, DeviceCertificate] = {}

    # before the rotation: one CA
    old, _ = ensure(None, NOW, algorithm)
    for name, validity in (("old-good", 365 * DAY), ("old-revoked", 365 * DAY), ("old-expired", 2 * DAY)):
        devices[name] = issue(old, name, NOW, validity)
    devices["old-revoked-later"] = issue(old, "old-revoked-later", NOW)
    registry = registry.with_revoked([devices["old-revoked"].serial], NOW + DAY)
    at = NOW + 5 * DAY
    bundle = trust_bundle(old, registry, None, at)
    assert check(tmp_path, devices, bundle, at) == {
        "old-good": True,
        "old-revoked": False,
        "old-expired": False,
        "old-revoked-later": True,
    }

    # the overlap: both CAs in the bundle, revocations of devices of either CA
    rotated, reasons = ensure(old, NOW + 20 * DAY, algorithm)
    assert "rotated the device CA" in reasons[0]
    for name, validity in (("new-good", 365 * DAY), ("new-revoked", 365 * DAY), ("new-expired", DAY)):
        devices[name] = issue(rotated, name, NOW + 20 * DAY, validity)
    registry = registry.with_revoked(
        [devices["new-revoked"].serial, devices["old-revoked-later"].serial], NOW + 22 * DAY
    )
    at = NOW + 25 * DAY
    bundle = trust_bundle(rotated, registry, bundle["crl.pem"], at)
    assert check(tmp_path, devices, bundle, at) == {
        "old-good": True,
        "old-revoked": False,
        "old-expired": False,
        "old-revoked-later": False,
        "new-good": True,
        "new-revoked": False,
        "new-expired": False,
    }
    assert len(crls_of(bundle["crl.pem"].encode())) == 2, "one CRL per CA of the bundle"

    # the old CA has expired: it, its key and its CRL are gone; its devices no longer verify
    at = NOW + 31 * DAY
    after, reasons = ensure(rotated, at, algorithm)
    assert any("dropped a previous CA" in reason for reason in reasons)
    assert after.previous_ca_cert_pem is None
    assert after.previous_ca_key_pem is None
    bundle = trust_bundle(after, registry, bundle["crl.pem"], at)
    assert len(crls_of(bundle["crl.pem"].encode())) == 1
    assert check(tmp_path, devices, bundle, at) == {
        "old-good": False,
        "old-revoked": False,
        "old-expired": False,
        "old-revoked-later": False,
        "new-good": True,
        "new-revoked": False,
        "new-expired": False,
    }


def test_each_crl_is_signed_by_its_own_ca_and_lists_every_revocation():
    old, _ = ensure(None, NOW, "ecdsa-p256")
    rotated, _ = ensure(old, NOW + 20 * DAY, "ecdsa-p256")
    registry = Registry({}, {}).with_revoked([11, 12], NOW + 21 * DAY)
    bundle = trust_bundle(rotated, registry, None, NOW + 21 * DAY)
    crls = crls_of(bundle["crl.pem"].encode())
    cas = [x509.load_pem_x509_certificate(pem.encode()) for pem in certs_in_bundle(bundle["ca-bundle.crt"])]
    assert len(crls) == len(cas) == 2
    for crl, ca in zip(crls, cas, strict=True):
        assert crl.is_signature_valid(ca.public_key())
        assert {entry.serial_number for entry in crl} == {11, 12}
    assert revoked_serials(bundle["crl.pem"]) == {11, 12}


def test_the_outgoing_ca_key_is_kept_until_that_ca_expires():
    old, _ = ensure(None, NOW, "ecdsa-p256")
    rotated, _ = ensure(old, NOW + 20 * DAY, "ecdsa-p256")
    assert rotated.previous_ca_key_pem == old.ca.key_pem
    assert rotated.cas() == [(rotated.ca.cert_pem, rotated.ca.key_pem), (old.ca.cert_pem, old.ca.key_pem)]
    assert old.ca.key_pem not in repr(rotated)
    restored = DeviceCAState.from_secret_data(rotated.to_secret_data())
    assert restored == rotated
    assert ensure(restored, NOW + 30 * DAY, "ecdsa-p256") == (restored, []), "kept up to the old CA's notAfter"
    expired, _ = ensure(restored, NOW + 30 * DAY + timedelta(seconds=1), "ecdsa-p256")
    assert expired.previous_ca_key_pem is None
    assert "previous-ca.key" not in expired.to_secret_data()


def test_back_to_back_rotations_keep_each_key_with_its_ca():
    first, _ = ensure(None, NOW, "ecdsa-p256")
    second, _ = ensure(first, NOW + DAY, "ecdsa-p384")  # an algorithm change rotates at once
    third, _ = ensure(second, NOW + 2 * DAY, "ecdsa-p256")
    assert third.cas() == [
        (third.ca.cert_pem, third.ca.key_pem),
        (second.ca.cert_pem, second.ca.key_pem),
        (first.ca.cert_pem, first.ca.key_pem),
    ]
    assert DeviceCAState.from_secret_data(third.to_secret_data()) == third


def legacy_secret_data(rotated: DeviceCAState) -> dict[str, str]:
    """What an iotsec that discarded the outgoing CA's key wrote after a rotation."""
    data = rotated.to_secret_data()
    del data["previous-ca.key"]
    return data


def test_a_previous_ca_without_a_key_is_read_and_named_as_having_no_crl(tmp_path):
    old, _ = ensure(None, NOW, "ecdsa-p256")
    rotated, _ = ensure(old, NOW + 20 * DAY, "ecdsa-p256")
    legacy = DeviceCAState.from_secret_data(legacy_secret_data(rotated))
    assert legacy.previous_ca_cert_pem == rotated.previous_ca_cert_pem
    assert legacy.cas() == [(rotated.ca.cert_pem, rotated.ca.key_pem), (old.ca.cert_pem, None)]
    assert rotated.crl_gaps() == []
    [gap] = legacy.crl_gaps()
    assert fingerprint(old.ca.cert_pem)[:16] in gap
    assert "no CRL can be signed" in gap

    at = NOW + 21 * DAY
    bundle = trust_bundle(legacy, Registry({}, {}), None, at)
    assert bundle["ca-bundle.crt"] == rotated.bundle(), "its devices still verify where CRLs are not checked"
    assert len(crls_of(bundle["crl.pem"].encode())) == 1
    devices = {"old": issue(old, "old", NOW), "new": issue(rotated, "new", NOW + 20 * DAY)}
    assert check(tmp_path, devices, bundle, at) == {"old": False, "new": True}
    assert "unable to get certificate CRL" in openssl_accepts(tmp_path, devices["old"].cert_pem, bundle, at)[1]
    assert verify_device(devices["old"].cert_pem, bundle["ca-bundle.crt"], at)  # without CRLs: chain only

    # the rotation after that one keeps the new outgoing CA's key; the keyless one stays keyless
    again, _ = ensure(legacy, NOW + 22 * DAY, "ecdsa-p384")
    assert again.cas()[1:] == [(rotated.ca.cert_pem, rotated.ca.key_pem), (old.ca.cert_pem, None)]


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda data, stray: data | {"previous-ca.key": "not PEM"}, "'previous-ca.key' holds no PEM private key"),
        (lambda data, stray: data | {"previous-ca.key": stray}, "match no certificate in 'previous-ca.crt'"),
    ],
)
def test_previous_keys_that_do_not_belong_are_refused(mutate, error):
    old, _ = ensure(None, NOW, "ecdsa-p256")
    rotated, _ = ensure(old, NOW + 20 * DAY, "ecdsa-p256")
    stray = ensure(None, NOW, "ecdsa-p256")[0].ca.key_pem
    with pytest.raises(ValueError, match=error):
        DeviceCAState.from_secret_data(mutate(rotated.to_secret_data(), stray))


def test_crls_are_resigned_only_when_revocations_change_or_the_next_update_nears():
    old, _ = ensure(None, NOW, "ecdsa-p256")
    rotated, _ = ensure(old, NOW + 20 * DAY, "ecdsa-p256")
    registry = Registry({}, {}).with_revoked([5], NOW + 20 * DAY)
    at = NOW + 20 * DAY
    first = trust_bundle(rotated, registry, None, at)
    for later in (at + timedelta(hours=1), at + 5 * DAY):
        assert trust_bundle(rotated, registry, first["crl.pem"], later) == first, "a periodic reconcile writes nothing"

    changed = trust_bundle(rotated, registry.with_revoked([6], at), first["crl.pem"], at + timedelta(hours=1))
    before = crls_of(first["crl.pem"].encode())
    after = crls_of(changed["crl.pem"].encode())
    for old_crl, new_crl in zip(before, after, strict=True):
        assert {e.serial_number for e in new_crl} == {5, 6}
        assert number(new_crl) > number(old_crl), "each CA's CRL number increases"

    near_expiry = trust_bundle(rotated, registry, first["crl.pem"], at + 6 * DAY + timedelta(hours=1))
    assert near_expiry["crl.pem"] != first["crl.pem"]
    for crl in crls_of(near_expiry["crl.pem"].encode()):
        assert crl.next_update_utc > at + 12 * DAY


def number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_a_fresh_crl_is_accepted_by_a_broker_whose_clock_is_behind(tmp_path):
    state, _ = ensure(None, NOW, "ecdsa-p256")
    device = issue(state, "meter", NOW)
    at = NOW + DAY
    bundle = trust_bundle(state, Registry({}, {}), None, at)
    behind = at - CLOCK_SKEW + timedelta(seconds=30)
    assert check(tmp_path, {"meter": device}, bundle, behind) == {"meter": True}


def test_an_expired_crl_fails_like_openssl(tmp_path):
    state, _ = ensure(None, NOW, "ecdsa-p256")
    device = issue(state, "meter", NOW)
    bundle = trust_bundle(state, Registry({}, {}), None, NOW)
    assert check(tmp_path, {"meter": device}, bundle, NOW + 6 * DAY) == {"meter": True}
    assert check(tmp_path, {"meter": device}, bundle, NOW + 8 * DAY) == {"meter": False}


def test_given_crls_without_the_issuing_cas_fail(tmp_path):
    old, _ = ensure(None, NOW, "ecdsa-p256")
    rotated, _ = ensure(old, NOW + 20 * DAY, "ecdsa-p256")
    device = issue(old, "old", NOW)
    at = NOW + 21 * DAY
    only_new = trust_bundle(DeviceCAState(rotated.ca, rotated.previous_ca_cert_pem), Registry({}, {}), None, at)
    assert check(tmp_path, {"old": device}, only_new, at) == {"old": False}
    assert not verify_device(device.cert_pem, rotated.bundle(), at, "")
    assert verify_device(device.cert_pem, rotated.bundle(), at)  # no CRLs given: no revocation check


def test_a_lost_registry_does_not_un_revoke_a_device(tmp_path):
    """Registry deleted (or restored without the revocation): the published CRL's revocation stays, openssl agrees."""
    state, _ = ensure(None, NOW, "ecdsa-p256")
    device = issue(state, "meter-1", NOW)
    at = NOW + DAY
    published = trust_bundle(state, Registry({}, {}).with_revoked([device.serial], NOW), None, at)
    assert check(tmp_path, {"meter-1": device}, published, at) == {"meter-1": False}

    for later in (at + timedelta(hours=1), at + 6 * DAY + timedelta(hours=1)):  # kept as is, then re-signed
        bundle = trust_bundle(state, Registry({}, {}), published["crl.pem"], later)
        assert revoked_serials(bundle["crl.pem"]) == {device.serial}
        assert check(tmp_path, {"meter-1": device}, bundle, later) == {"meter-1": False}


def test_a_crl_signed_by_another_key_adds_no_revocation():
    state, _ = ensure(None, NOW, "ecdsa-p256")
    stranger, _ = ensure(None, NOW, "ecdsa-p256")  # same tenant, same CA name, another key
    forged = trust_bundle(stranger, Registry({}, {}).with_revoked([77], NOW), None, NOW)
    bundle = trust_bundle(state, Registry({}, {}), forged["crl.pem"], NOW)
    assert revoked_serials(bundle["crl.pem"]) == set()
    assert published_revocations(state, forged["crl.pem"]) == {}


def test_a_carried_revocation_leaves_the_crl_once_its_certificate_expired():
    state, _ = ensure(None, NOW, "ecdsa-p256")
    device = issue(state, "meter-1", NOW, validity=2 * DAY)
    published = trust_bundle(state, Registry({}, {}).with_revoked([device.serial], NOW), None, NOW)
    known = Registry({}, {}, {device.serial: Issued(not_after=device.not_after, issuer=fingerprint(state.ca.cert_pem))})
    assert revoked_serials(trust_bundle(state, known, published["crl.pem"], NOW + DAY)["crl.pem"]) == {device.serial}
    assert revoked_serials(trust_bundle(state, known, published["crl.pem"], NOW + 3 * DAY)["crl.pem"]) == set()


def test_published_revocations_join_the_registry_except_expired_ones():
    state, _ = ensure(None, NOW, "ecdsa-p256")
    short = issue(state, "meter-1", NOW, validity=2 * DAY)
    details = {short.serial: Issued(not_after=short.not_after, issuer=fingerprint(state.ca.cert_pem))}
    registry = Registry({short.serial: "meter-1"}, {}, details)
    published = {short.serial: NOW, 42: NOW}
    assert set(with_published(registry, published, NOW + DAY).revoked) == {short.serial, 42}
    assert set(with_published(registry, published, NOW + 3 * DAY).revoked) == {42}
    assert with_published(registry, {}, NOW) is registry
