"""Device identities of a tenant: its device CA, device certificates, verification and revocation (pure).

X.1369 asks for a unique device id bound to manufacturer, type and model, a unique key per device bound to that id,
device authentication, no weak keys or hashes, privileges by device class and revocation. Here:

- each tenant has a device CA (`new_device_ca`, kept and rotated by `ensure_device_ca`); CAs sign with SHA-256, or
  SHA-384 for P-384; keys are EC P-256/P-384 or RSA 3072/4096 bits;
- `issue_device_certificate` makes a fresh key per call and a certificate whose subject names the device id
  (CN and serialNumber), manufacturer (O), device class (OU), tenant (OU ``tenant=<id>``) and model (title), with the
  device class's key usages (the certificate profile) and a ``urn:iotsec:<tenant>:device:<id>`` SAN URI;
- `verify_device` authenticates a device certificate against the tenant's CA bundle and, optionally, CRLs;
- `build_crl` / `revoked_serials` write and read revocation lists; `trust_bundle` publishes the CA bundle with one
  CRL per CA in it (an outgoing CA keeps its key, and signs its CRL, until it expires);
- `Registry` records issued certificates and revocations.

Everything is a function of its arguments: times are passed in, nothing reads files, sockets or the cluster.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iotsec.model import secretdata
from iotsec.model.pem import certificate_pem, crl_pem, private_key_pem, spki_der
from iotsec.model.time import parse_rfc3339, rfc3339, utc
from iotsec.pki.certs import (
    CLOCK_SKEW,
    KEY_CA_BUNDLE,
    KEY_CA_CERT,
    KEY_CA_KEY,
    KEY_PREVIOUS_CA_CERT,
    KeyPair,
    SignatureHash,
    ca_bundle,
    certs_in_bundle,
    fingerprint,
    is_ca,
    issued_by,
    load_cert,
    needs_rotation,
    not_after,
    self_signed_ca,
    within_validity,
)

CA_ALGORITHMS = ("ecdsa-p256", "ecdsa-p384", "rsa-3072", "rsa-4096")
"""Key algorithms of a device CA (`DeviceCA.key_algorithm`)."""

DEVICE_ALGORITHMS = ("ecdsa-p256", "ed25519", "rsa-3072", "rsa-4096")
"""Key algorithms of a device (`DeviceClass.key_algorithm`)."""

CA_COMMON_NAME_PREFIX = "iotsec device CA "
"""A tenant's device CA has the subject CN ``iotsec device CA <tenant id>``."""

DEVICE_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
TENANT_ID_PATTERN = re.compile(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?")  # TenantIsolationSpec.tenant_id

_NAME_MAX = 64  # RFC 5280 upper bounds of CN, O, OU, title and serialNumber
_TENANT_OU_PREFIX = "tenant="

_KEY_USAGES = {
    "digitalSignature": "digital_signature",
    "keyEncipherment": "key_encipherment",
    "keyAgreement": "key_agreement",
    "dataEncipherment": "data_encipherment",
}
_EXTENDED_KEY_USAGES = {"clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH, "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH}
# Key usages a key type must not carry: RFC 8813 (keyEncipherment/dataEncipherment are not for id-ecPublicKey),
# RFC 8410 (Ed25519 keys only sign), RSA keys cannot do key agreement.
_FORBIDDEN_KEY_USAGES = {
    "ecdsa": {"keyEncipherment", "dataEncipherment"},
    "ed25519": {"keyEncipherment", "keyAgreement", "dataEncipherment"},
    "rsa": {"keyAgreement"},
}
# RFC 5280 4.2.1.12: key usages consistent with each extended key usage.
_EKU_NEEDS_ONE_OF = {
    "clientAuth": {"digitalSignature", "keyAgreement"},
    "serverAuth": {"digitalSignature", "keyEncipherment", "keyAgreement"},
}

_CRL_BLOCK = re.compile(r"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)
_KEY_BLOCK = re.compile(r"-----BEGIN ((?:[A-Z]+ )?)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.DOTALL)

KEY_PREVIOUS_CA_KEY = "previous-ca.key"
"""The device CA Secret's key holding the outgoing CAs' private keys, kept to sign their CRLs until they expire."""

_CAKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_DeviceKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

DEVICE_CA = "device CA"  # how errors about its Secret name it


# --- private helpers -------------------------------------------------------------------------------------------------


def _new_key(algorithm: str, allowed: tuple[str, ...], what: str) -> _DeviceKey:
    if algorithm not in allowed:
        raise ValueError(f"unsupported {what} key algorithm {algorithm!r} (supported: {', '.join(allowed)})")
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=int(algorithm.removeprefix("rsa-")))


def _algorithm_of(key: object) -> str | None:
    """The API name of a (public or private) key's algorithm, None for anything this module does not issue."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384"}.get(key.curve.name)
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"rsa-{key.key_size}" if key.key_size in (3072, 4096) else None
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "ed25519"
    return None


def _family(algorithm: str) -> str:
    return "ecdsa" if algorithm.startswith("ecdsa-") else "rsa" if algorithm.startswith("rsa-") else algorithm


def _signature_hash(ca_key: _CAKey) -> SignatureHash:
    if isinstance(ca_key, ec.EllipticCurvePrivateKey) and ca_key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _load_ca_key(key_pem: str) -> _CAKey:
    try:
        key = serialization.load_pem_private_key(key_pem.encode("ascii"), password=None)
    except (TypeError, UnsupportedAlgorithm) as e:  # TypeError: encrypted key
        raise ValueError(f"not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) or _algorithm_of(key) not in CA_ALGORITHMS:
        raise ValueError(f"not a device CA key ({', '.join(CA_ALGORITHMS)})")
    return key


def _ca_key_matches(ca: KeyPair) -> bool:
    return spki_der(load_cert(ca.cert_pem).public_key()) == spki_der(_load_ca_key(ca.key_pem).public_key())


def _check_tenant_id(tenant_id: str) -> None:
    if not isinstance(tenant_id, str) or not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise ValueError(
            f"invalid tenant id {tenant_id!r}: 1-40 lowercase letters, digits and '-', starting and ending alphanumeric"
        )


def _check_device_id(device_id: str) -> None:
    if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise ValueError(f"invalid device id {device_id!r}: 1-64 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'")


def _check_name_part(what: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > _NAME_MAX:
        raise ValueError(f"{what} must be a non-blank string of at most {_NAME_MAX} characters, got {value!r}")


def _check_positive(what: str, delta: timedelta) -> None:
    if delta <= timedelta(0):
        raise ValueError(f"{what} must be positive, got {delta}")


def _ca_subject(tenant_id: str, organization: str | None) -> x509.Name:
    attributes = []
    if organization is not None:
        _check_name_part("organization", organization)
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attributes += [
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _TENANT_OU_PREFIX + tenant_id),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, tenant_id),
        x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME_PREFIX + tenant_id),
    ]
    return x509.Name(attributes)


def _serial_number_attribute(device_id: str) -> x509.NameAttribute[str]:
    """The subject serialNumber: PrintableString as X.520 defines it, which lacks '_'.

    cryptography writes a serialNumber as PrintableString whatever its characters, and then cannot read back a
    certificate whose serialNumber holds '_' (allowed in device ids); such an id is written as UTF8String instead.
    """
    if "_" in device_id:
        return x509.NameAttribute(NameOID.SERIAL_NUMBER, device_id, _type=_ASN1Type.UTF8String)
    return x509.NameAttribute(NameOID.SERIAL_NUMBER, device_id)


def _tenant_of(name: x509.Name) -> str | None:
    for attribute in name.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME):
        value = attribute.value
        if isinstance(value, str) and value.startswith(_TENANT_OU_PREFIX):
            return value.removeprefix(_TENANT_OU_PREFIX)
    return None


def _can_sign_certs(ca: x509.Certificate) -> bool:
    if not is_ca(ca):
        return False
    try:
        return ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        return True


def _crl_can_be_signed_by(ca: x509.Certificate) -> bool:
    try:
        return ca.extensions.get_extension_for_class(x509.KeyUsage).value.crl_sign
    except x509.ExtensionNotFound:
        return True


def _load_crls(crl_pem: str) -> list[x509.CertificateRevocationList]:
    blocks = _CRL_BLOCK.findall(crl_pem)
    if not blocks:
        raise ValueError("not a PEM X.509 CRL")
    return [x509.load_pem_x509_crl(block.encode("ascii")) for block in blocks]


def _aki(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]


def _signing_ca(ca: KeyPair, now: datetime) -> tuple[x509.Certificate, _CAKey]:
    """The CA certificate and key, checked to be a usable CA at `now` whose key matches its certificate."""
    ca_cert = load_cert(ca.cert_pem)
    ca_key = _load_ca_key(ca.key_pem)
    if spki_der(ca_cert.public_key()) != spki_der(ca_key.public_key()):
        raise ValueError("the CA private key does not match the CA certificate")
    if not _can_sign_certs(ca_cert):
        raise ValueError("the CA certificate is not a CA that may sign certificates")
    if not within_validity(ca_cert, now):
        raise ValueError(
            f"the CA certificate is not valid at {rfc3339(now)} "
            f"({rfc3339(ca_cert.not_valid_before_utc)} to {rfc3339(ca_cert.not_valid_after_utc)})"
        )
    return ca_cert, ca_key


# --- the device CA ---------------------------------------------------------------------------------------------------


def new_device_ca(
    tenant_id: str, algorithm: str, validity: timedelta, now: datetime, organization: str | None = None
) -> KeyPair:
    """A tenant's self-signed device CA that signs device certificates and CRLs only (path length 0)."""
    now = utc(now)
    _check_tenant_id(tenant_id)
    _check_positive("CA validity", validity)
    subject = _ca_subject(tenant_id, organization)
    key = cast(_CAKey, _new_key(algorithm, CA_ALGORITHMS, "device CA"))  # CA_ALGORITHMS are EC and RSA only
    cert = self_signed_ca(subject, key, now, validity, _signature_hash(key), digital_signature=False)
    return KeyPair(cert_pem=certificate_pem(cert), key_pem=private_key_pem(key))


@dataclass(frozen=True)
class DeviceCAState:
    """What the operator keeps in a tenant's device CA Secret.

    `previous_ca_cert_pem` holds the outgoing CA certificates (a PEM bundle, usually one) that are still valid, so
    devices holding certificates from them keep verifying against `bundle()` until those CAs expire.
    `previous_ca_key_pem` holds their private keys (a PEM bundle, matched to the certificates by public key): an
    outgoing CA must keep signing its own CRL until it expires, or revocations of its devices are lost and brokers
    that check CRLs reject all of its devices. Secrets written before iotsec kept these keys have none: `crl_gaps`
    names the CAs that therefore have no CRL.
    """

    ca: KeyPair = field(repr=False)  # never put the private key into a repr (or a log line)
    previous_ca_cert_pem: str | None
    previous_ca_key_pem: str | None = field(default=None, repr=False)

    def bundle(self) -> str:
        """The CAs a device certificate may chain to: the current one, then the previous ones."""
        return ca_bundle(self.ca.cert_pem, *([self.previous_ca_cert_pem] if self.previous_ca_cert_pem else []))

    def cas(self) -> list[tuple[str, str | None]]:
        """Each CA of `bundle()`, current first, with its private key PEM (None: the key was not kept)."""
        keys = _keys_by_spki(self.previous_ca_key_pem or "")
        keys[spki_der(load_cert(self.ca.cert_pem).public_key())] = self.ca.key_pem
        return [(pem, keys.get(spki_der(load_cert(pem).public_key()))) for pem in certs_in_bundle(self.bundle())]

    def crl_gaps(self) -> list[str]:
        """Why a CA of the bundle has no CRL: its key was discarded by an iotsec that did not keep outgoing CA keys.

        Until such a CA expires, brokers that check CRLs reject every device it issued, `verify_device` with CRLs
        does too, and its devices cannot be revoked; re-issue them from the current CA.
        """
        return [
            f"the outgoing device CA {fingerprint(pem)[:16]} (valid until {rfc3339(not_after(pem))}) has no private "
            "key in the Secret (written by an older iotsec): no CRL can be signed for it, so brokers that check CRLs "
            "reject its devices and revocations of them are not published; re-issue its devices from the current CA"
            for pem, key in self.cas()
            if key is None
        ]

    def to_secret_data(self) -> dict[str, str]:
        """Secret `stringData`-style values (the caller base64-encodes them for `data`)."""
        data = {KEY_CA_CERT: self.ca.cert_pem, KEY_CA_KEY: self.ca.key_pem}
        if self.previous_ca_cert_pem:
            data[KEY_PREVIOUS_CA_CERT] = self.previous_ca_cert_pem
        if self.previous_ca_key_pem:
            data[KEY_PREVIOUS_CA_KEY] = self.previous_ca_key_pem
        data[KEY_CA_BUNDLE] = self.bundle()
        return data

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str]) -> DeviceCAState:
        """Inverse of `to_secret_data` (the bundle is derived, so it is not read); ValueError names a bad key.

        Data without `previous-ca.key` (as older iotsec wrote it) is read: its outgoing CAs have no key.
        """
        cert_pem = secretdata.required(data, KEY_CA_CERT, DEVICE_CA)
        try:
            cert = load_cert(cert_pem)
        except (ValueError, UnicodeError) as e:
            raise ValueError(f"device CA secret data key {KEY_CA_CERT!r} is not a PEM certificate: {e}") from e
        if not _can_sign_certs(cert):
            raise ValueError(f"device CA secret data key {KEY_CA_CERT!r} is not a CA certificate")
        key_pem = secretdata.required(data, KEY_CA_KEY, DEVICE_CA)
        try:
            key = _load_ca_key(key_pem)
        except (ValueError, UnicodeError) as e:
            raise ValueError(f"device CA secret data key {KEY_CA_KEY!r} is not a device CA private key: {e}") from e
        if spki_der(key.public_key()) != spki_der(cert.public_key()):
            raise ValueError(
                f"device CA secret data key {KEY_CA_KEY!r} does not match the certificate in {KEY_CA_CERT!r}"
            )
        previous = secretdata.optional(data, KEY_PREVIOUS_CA_CERT, DEVICE_CA)
        previous_certs: list[str] = []
        if previous is not None:
            try:
                previous_certs = certs_in_bundle(previous)
                if not previous_certs:
                    raise ValueError("no certificate in it")
            except (ValueError, UnicodeError) as e:
                raise ValueError(
                    f"device CA secret data key {KEY_PREVIOUS_CA_CERT!r} is not a PEM certificate bundle: {e}"
                ) from e
        previous_keys = secretdata.optional(data, KEY_PREVIOUS_CA_KEY, DEVICE_CA)
        if previous_keys is not None:
            _check_previous_keys(previous_keys, previous_certs)
        return cls(
            ca=KeyPair(cert_pem=cert_pem, key_pem=key_pem),
            previous_ca_cert_pem=previous,
            previous_ca_key_pem=previous_keys,
        )


def _keys_by_spki(keys_pem: str) -> dict[bytes, str]:
    """The private keys of a PEM bundle, by the DER SubjectPublicKeyInfo of their public keys."""
    out: dict[bytes, str] = {}
    for match in _KEY_BLOCK.finditer(keys_pem):
        block = match.group(0) + "\n"
        out[spki_der(_load_ca_key(block).public_key())] = block
    return out


def _check_previous_keys(keys_pem: str, previous_certs: list[str]) -> None:
    what = f"device CA secret data key {KEY_PREVIOUS_CA_KEY!r}"
    try:
        keys = _keys_by_spki(keys_pem)
    except (ValueError, UnicodeError) as e:
        raise ValueError(f"{what} is not a bundle of device CA private keys: {e}") from e
    if not keys:
        raise ValueError(f"{what} holds no PEM private key")
    known = {spki_der(load_cert(pem).public_key()) for pem in previous_certs}
    if strays := len(keys.keys() - known):
        raise ValueError(f"{what}: {strays} key(s) match no certificate in {KEY_PREVIOUS_CA_CERT!r}")


def _previous(kept: Sequence[tuple[str, str | None]]) -> dict[str, str | None]:
    """The `previous_ca_*` fields of a DeviceCAState holding the outgoing CAs `kept` (certificate, key or None)."""
    keys = [key if key.endswith("\n") else key + "\n" for _, key in kept if key is not None]
    return {
        "previous_ca_cert_pem": ca_bundle(*(cert for cert, _ in kept)) if kept else None,
        "previous_ca_key_pem": "".join(keys) or None,
    }


def ensure_device_ca(
    current: DeviceCAState | None,
    tenant_id: str,
    algorithm: str,
    validity: timedelta,
    rotate_before: timedelta,
    now: datetime,
    organization: str | None = None,
) -> tuple[DeviceCAState, list[str]]:
    """The desired device CA and why it differs from `current` (no reasons: `current` itself is returned).

    Level-triggered: the CA is created when missing and replaced once `now >= notAfter - rotate_before`, when its
    algorithm or subject (tenant, organization) differs from the spec, or when its key does not match. A replaced CA
    that has not expired joins the previous CAs, which stay in the bundle until each expires, so certificates it
    issued keep verifying; expired previous CAs are dropped.
    """
    now = utc(now)
    _check_tenant_id(tenant_id)
    if algorithm not in CA_ALGORITHMS:
        raise ValueError(f"unsupported device CA key algorithm {algorithm!r} (supported: {', '.join(CA_ALGORITHMS)})")
    if rotate_before <= timedelta(0) or rotate_before >= validity:
        raise ValueError(f"rotate_before ({rotate_before}) must be positive and shorter than validity ({validity})")
    subject = _ca_subject(tenant_id, organization)

    def create() -> KeyPair:
        return new_device_ca(tenant_id, algorithm, validity, now, organization)

    if current is None:
        return DeviceCAState(ca=create(), previous_ca_cert_pem=None), [f"created the {algorithm} device CA"]

    reasons: list[str] = []
    kept: list[tuple[str, str | None]] = []
    for previous_pem, previous_key in current.cas()[1:]:
        if now > not_after(previous_pem):
            reasons.append(f"dropped a previous CA from the bundle: it expired at {rfc3339(not_after(previous_pem))}")
        else:
            kept.append((previous_pem, previous_key))

    ca_cert = load_cert(current.ca.cert_pem)
    have_algorithm = _algorithm_of(ca_cert.public_key())
    key_matches = _key_matches_quietly(current.ca)
    problem = None
    if needs_rotation(current.ca.cert_pem, now, rotate_before):
        problem = f"it expires at {rfc3339(ca_cert.not_valid_after_utc)}, within {rotate_before}"
    elif have_algorithm != algorithm:
        problem = f"its key algorithm {have_algorithm or 'unsupported'} differs from the requested {algorithm}"
    elif ca_cert.subject != subject:
        problem = f"its subject {ca_cert.subject.rfc4514_string()!r} differs from {subject.rfc4514_string()!r}"
    elif ca_cert.not_valid_before_utc > now:
        problem = f"it is not valid before {rfc3339(ca_cert.not_valid_before_utc)}"
    elif not key_matches:
        problem = "its private key does not match the certificate"

    ca = current.ca
    if problem is not None:
        if now <= ca_cert.not_valid_after_utc:
            # its key stays too (when it is its key): only that key can sign the CRL of the devices it issued
            kept.insert(0, (current.ca.cert_pem, current.ca.key_pem if key_matches else None))
            reasons.append(
                f"rotated the device CA ({problem}); the old CA stays in the bundle, its key signing its CRL, "
                "until it expires"
            )
        else:
            reasons.append(f"rotated the device CA ({problem}); the old CA has expired and is not kept")
        ca = create()

    if not reasons:
        return current, []
    return dataclasses.replace(current, ca=ca, **_previous(kept)), reasons


def _key_matches_quietly(ca: KeyPair) -> bool:
    try:
        return _ca_key_matches(ca)
    except (ValueError, UnicodeError):
        return False


# --- device certificates ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceCertificate:
    """A device's certificate and its new, unencrypted PKCS#8 PEM private key (to hand to that device only)."""

    cert_pem: str
    key_pem: str = field(repr=False)
    serial: int
    device_id: str
    not_after: datetime


def device_urn(tenant_id: str, device_id: str) -> str:
    """The SAN URI of a device certificate."""
    return f"urn:iotsec:{tenant_id}:device:{device_id}"


def _key_usage(
    names: Sequence[str], extended: Sequence[str], key_algorithm: str
) -> tuple[x509.KeyUsage, list[x509.ObjectIdentifier]]:
    if isinstance(names, str) or isinstance(extended, str):
        raise TypeError("key_usage and extended_key_usage must be sequences of strings, not a single string")
    usages = set(names)
    ekus = list(dict.fromkeys(extended))
    if not usages:
        raise ValueError("key_usage must name at least one key usage")
    if not ekus:
        raise ValueError("extended_key_usage must name at least one extended key usage")
    if unknown := sorted(usages - _KEY_USAGES.keys()):
        raise ValueError(f"unknown key usage {', '.join(unknown)} (known: {', '.join(_KEY_USAGES)})")
    if unknown := sorted(set(ekus) - _EXTENDED_KEY_USAGES.keys()):
        raise ValueError(f"unknown extended key usage {', '.join(unknown)} (known: {', '.join(_EXTENDED_KEY_USAGES)})")
    if forbidden := sorted(usages & _FORBIDDEN_KEY_USAGES[_family(key_algorithm)]):
        raise ValueError(f"key usage {', '.join(forbidden)} is not allowed for {key_algorithm} keys")
    for eku in ekus:
        if not usages & _EKU_NEEDS_ONE_OF[eku]:
            raise ValueError(f"{eku} needs one of the key usages {', '.join(sorted(_EKU_NEEDS_ONE_OF[eku]))}")
    flags = {attribute: name in usages for name, attribute in _KEY_USAGES.items()}
    key_usage = x509.KeyUsage(
        content_commitment=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False, **flags
    )
    return key_usage, [_EXTENDED_KEY_USAGES[eku] for eku in ekus]


def issue_device_certificate(
    ca: KeyPair,
    tenant_id: str,
    device_id: str,
    device_class: str,
    manufacturer: str,
    model: str,
    key_algorithm: str,
    validity: timedelta,
    key_usage: Sequence[str],
    extended_key_usage: Sequence[str],
    now: datetime,
) -> DeviceCertificate:
    """A certificate for a new key of `device_id`, with the device class's profile, signed by the tenant's CA.

    The certificate never outlives the CA. ValueError for an invalid id or name part, a key algorithm or key usage that
    is not allowed, or a CA that is not this tenant's, not valid at `now` or whose key does not match.
    """
    now = utc(now)
    _check_tenant_id(tenant_id)
    _check_device_id(device_id)
    _check_name_part("device_class", device_class)
    _check_name_part("manufacturer", manufacturer)
    _check_name_part("model", model)
    _check_positive("device certificate validity", validity)
    if key_algorithm not in DEVICE_ALGORITHMS:
        raise ValueError(
            f"unsupported device key algorithm {key_algorithm!r} (supported: {', '.join(DEVICE_ALGORITHMS)})"
        )
    usage, ekus = _key_usage(key_usage, extended_key_usage, key_algorithm)
    ca_cert, ca_key = _signing_ca(ca, now)
    if _tenant_of(ca_cert.subject) != tenant_id:
        raise ValueError(f"the CA {ca_cert.subject.rfc4514_string()!r} is not the device CA of tenant {tenant_id!r}")

    key = _new_key(key_algorithm, DEVICE_ALGORITHMS, "device")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, manufacturer),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, device_class),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _TENANT_OU_PREFIX + tenant_id),
            x509.NameAttribute(NameOID.TITLE, model),
            _serial_number_attribute(device_id),
            x509.NameAttribute(NameOID.COMMON_NAME, device_id),
        ]
    )
    serial = x509.random_serial_number()  # 159 random bits
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(max(now - CLOCK_SKEW, ca_cert.not_valid_before_utc))
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(device_urn(tenant_id, device_id))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_aki(ca_cert), critical=False)
        .sign(ca_key, _signature_hash(ca_key))
    )
    return DeviceCertificate(
        cert_pem=certificate_pem(cert),
        key_pem=private_key_pem(key),
        serial=serial,
        device_id=device_id,
        not_after=cert.not_valid_after_utc,
    )


def device_id_of(cert_pem: str) -> str:
    """The device id (subject CN) of a device certificate; ValueError when it has none."""
    names = load_cert(cert_pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise ValueError("the certificate has no single subject common name")
    return names[0].value


# --- authentication and revocation -----------------------------------------------------------------------------------


def verify_device(cert_pem: str, bundle_pem: str, now: datetime, crl_pem: str | None = None) -> bool:
    """True if the device certificate is valid at `now`, not a CA, directly signed by a CA of the bundle that is valid
    at `now`, and - when `crl_pem` is given (one or more PEM CRLs) - that CA has a CRL in it that is current at `now`
    and no CRL of that CA revokes the certificate.

    This is what `openssl verify -crl_check_all` decides: CRLs signed by another key (another CA of the same name
    included) are ignored, so a missing or expired CRL of the issuing CA fails, and a revocation stays a revocation
    whatever CRL is current. `crl_pem=None` skips revocation checks. Malformed PEM raises ValueError.
    """
    now = utc(now)
    leaf = load_cert(cert_pem)
    crls = _load_crls(crl_pem) if crl_pem is not None and crl_pem.strip() else []
    if not within_validity(leaf, now) or is_ca(leaf):
        return False
    ca = _issuing_ca(leaf, bundle_pem, now)
    if ca is None:
        return False
    if crl_pem is None:
        return True
    own = [crl for crl in crls if crl.issuer == ca.subject and _crl_can_be_signed_by(ca) and _crl_signed_by(crl, ca)]
    if not any(_crl_current(crl, now) for crl in own):
        return False
    return all(crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is None for crl in own)


def _issuing_ca(leaf: x509.Certificate, bundle_pem: str, now: datetime) -> x509.Certificate | None:
    for ca_pem in certs_in_bundle(bundle_pem):
        ca = load_cert(ca_pem)
        if _can_sign_certs(ca) and within_validity(ca, now) and issued_by(leaf, ca):
            return ca
    return None


def _crl_current(crl: x509.CertificateRevocationList, now: datetime) -> bool:
    """Issued at or before `now` and not yet at its nextUpdate (OpenSSL treats nextUpdate itself as expired)."""
    next_update = crl.next_update_utc
    return crl.last_update_utc <= now and (next_update is None or now < next_update)


def _crl_signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, InvalidSignature):
        return False


def build_crl(
    ca: KeyPair,
    revoked: Mapping[int, datetime],
    now: datetime,
    next_update: timedelta = timedelta(days=7),
    crl_number: int = 1,
) -> str:
    """A PEM CRL signed by `ca` listing the revoked serials (serial -> revocation time), with a CRL number."""
    now = utc(now)
    _check_positive("next_update", next_update)
    if not 0 <= crl_number < 2**159:
        raise ValueError(f"crl_number must be a non-negative integer below 2**159, got {crl_number}")
    ca_cert = load_cert(ca.cert_pem)
    ca_key = _load_ca_key(ca.key_pem)
    if spki_der(ca_cert.public_key()) != spki_der(ca_key.public_key()):
        raise ValueError("the CA private key does not match the CA certificate")
    if not _crl_can_be_signed_by(ca_cert) or not is_ca(ca_cert):
        raise ValueError("the CA certificate may not sign CRLs")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + next_update)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(_aki(ca_cert), critical=False)
    )
    for serial in sorted(revoked):
        if not isinstance(serial, int) or serial <= 0:
            raise ValueError(f"a revoked serial number must be a positive integer, got {serial!r}")
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(utc(revoked[serial])).build()
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca_key, _signature_hash(ca_key))
    return crl_pem(crl)


def revoked_serials(crl_pem: str) -> set[int]:
    """The serial numbers revoked by the CRL(s) of `crl_pem` (signatures are not checked here)."""
    return {entry.serial_number for crl in _load_crls(crl_pem) for entry in crl}


# ---------------------------------------------------------------- the registry of issued and revoked certificates


CRL_REFRESH = timedelta(days=1)
CRL_VALIDITY = timedelta(days=7)


@dataclass(frozen=True)
class Issued:
    """What the registry knows about one issued certificate besides its device id (absent in older registries)."""

    not_after: datetime
    issuer: str  # SHA-256 fingerprint of the issuing CA certificate (lowercase hex)


@dataclass(frozen=True)
class DeviceEntry:
    """One row of `Registry.entries`: an issued certificate and whether (since when) it is revoked."""

    device_id: str | None  # None: revoked by serial, never recorded as issued
    serial: int
    not_after: datetime | None
    issuer: str | None
    revoked: datetime | None


@dataclass(frozen=True)
class Registry:
    """Issued device certificates (serial → device id, and `details`) and revocations (serial → when).

    Kept in a ConfigMap (serials are not secrets) under the keys `issued`, `revoked` and `details`; `issued` and
    `revoked` keep the format older iotsec wrote and read, `details` is optional.
    """

    issued: Mapping[int, str]
    revoked: Mapping[int, datetime]
    details: Mapping[int, Issued] = field(default_factory=dict)

    @classmethod
    def from_config_map_data(cls, data: Mapping[str, str] | None) -> Registry:
        data = data or {}
        issued = {int(k): v for k, v in json.loads(data.get("issued", "{}")).items()}
        revoked_at = json.loads(data.get("revoked", "{}"))
        revoked = {int(k): utc(parse_rfc3339(v, "revocation time")) for k, v in revoked_at.items()}
        details = {
            int(k): Issued(not_after=utc(parse_rfc3339(v["notAfter"], "notAfter")), issuer=v["issuer"])
            for k, v in json.loads(data.get("details", "{}")).items()
        }
        return cls(issued, revoked, details)

    def to_config_map_data(self) -> dict[str, str]:
        data = {
            "issued": json.dumps({str(k): v for k, v in sorted(self.issued.items())}, indent=1),
            "revoked": json.dumps({str(k): v.isoformat() for k, v in sorted(self.revoked.items())}, indent=1),
        }
        if self.details:
            data["details"] = json.dumps(
                {
                    str(k): {"notAfter": v.not_after.isoformat(), "issuer": v.issuer}
                    for k, v in sorted(self.details.items())
                },
                indent=1,
            )
        return data

    def with_issued(self, serial: int, device_id: str, details: Issued | None = None) -> Registry:
        more = {serial: details} if details is not None else {}
        return Registry({**self.issued, serial: device_id}, self.revoked, {**self.details, **more})

    def with_revoked(self, serials: Iterable[int], now: datetime) -> Registry:
        revoked = {**self.revoked, **{s: now for s in serials if s not in self.revoked}}
        return Registry(self.issued, revoked, self.details)

    def serials_of(self, device_id: str) -> list[int]:
        return sorted(serial for serial, device in self.issued.items() if device == device_id)

    def entries(self) -> list[DeviceEntry]:
        """Every issued or revoked serial, by device id then serial."""
        rows = []
        for serial in self.issued.keys() | self.revoked.keys():
            details = self.details.get(serial)
            rows.append(
                DeviceEntry(
                    device_id=self.issued.get(serial),
                    serial=serial,
                    not_after=details.not_after if details else None,
                    issuer=details.issuer if details else None,
                    revoked=self.revoked.get(serial),
                )
            )
        return sorted(rows, key=lambda row: (row.device_id or "", row.serial))


def issued_details(certificate: DeviceCertificate, ca_cert_pem: str) -> Issued:
    """The registry details of a certificate just issued by the CA `ca_cert_pem`."""
    return Issued(not_after=certificate.not_after, issuer=fingerprint(ca_cert_pem))


def trust_bundle(state: DeviceCAState, registry: Registry, current_crl: str | None, now: datetime) -> dict[str, str]:
    """What brokers and ingresses mount: the CA bundle and, in `crl.pem`, one CRL per CA of the bundle.

    Each CRL is signed by its own CA and lists every revoked serial of the registry (serials are random, so one of
    another CA's devices revokes nothing here); `openssl verify -crl_check_all` and brokers checking CRLs need the
    CRL of the CA that issued a device. A CA whose key was not kept (see `DeviceCAState.crl_gaps`) gets none.

    A CRL never shrinks: the serials of the published CRLs of the same CA (`current_crl`, only those whose signature
    verifies against that CA) stay listed whatever the registry says, so a registry that was deleted, or restored from
    an older copy, cannot un-revoke a device. A serial leaves only once the registry knows its certificate expired.

    A CRL of `current_crl` is kept while it lists exactly the revocations and is more than `CRL_REFRESH` from its
    nextUpdate, so a periodic reconcile leaves the ConfigMap (and its resourceVersion) alone. New CRLs are dated
    `CLOCK_SKEW` back, so a broker whose clock is slightly behind does not find them "not yet valid".
    """
    now = utc(now)
    found = _crl_blocks(current_crl)
    blocks = []
    for cert_pem, key_pem in state.cas():
        if key_pem is None:
            continue
        ca_cert = load_cert(cert_pem)
        own = [(block, crl) for block, crl in found if _crl_issued_by(crl, ca_cert)]
        revoked = {**_still_revoked(_revocations(crl for _, crl in own), registry, now), **registry.revoked}
        block = next((block for block, crl in own if _crl_still_good(crl, set(revoked), now)), None)
        if block is None:
            number = max([_crl_number(crl) + 1 for _, crl in own] + [int(now.timestamp())])
            ca = KeyPair(cert_pem=cert_pem, key_pem=key_pem)
            block = build_crl(ca, revoked, now - CLOCK_SKEW, CRL_VALIDITY, number).strip()
        blocks.append(block)
    return {"ca-bundle.crt": state.bundle(), "crl.pem": "\n".join(blocks) + "\n"}


def published_revocations(state: DeviceCAState, crl_pem: str | None) -> dict[int, datetime]:
    """Serial -> revocation time listed by the CRLs of `crl_pem` that a CA of `state.bundle()` signed (any other
    CRL, a forged one included, adds nothing)."""
    cas = [load_cert(pem) for pem in certs_in_bundle(state.bundle())]
    signed = (crl for _, crl in _crl_blocks(crl_pem) if any(_crl_issued_by(crl, ca) for ca in cas))
    return _revocations(signed)


def with_published(registry: Registry, published: Mapping[int, datetime], now: datetime) -> Registry:
    """`registry` with the revocations of published CRLs (`published_revocations`) it lacks, except those of
    certificates it knows to have expired: what every CRL of the tenant must list."""
    carried = _still_revoked({s: t for s, t in published.items() if s not in registry.revoked}, registry, utc(now))
    if not carried:
        return registry
    return Registry(registry.issued, {**registry.revoked, **carried}, registry.details)


def _crl_issued_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    return crl.issuer == ca.subject and _crl_signed_by(crl, ca)


def _revocations(crls: Iterable[x509.CertificateRevocationList]) -> dict[int, datetime]:
    """Serial -> earliest revocation time over the CRLs."""
    out: dict[int, datetime] = {}
    for crl in crls:
        for entry in crl:
            when = entry.revocation_date_utc
            out[entry.serial_number] = min(when, out.get(entry.serial_number, when))
    return out


def _still_revoked(revoked: Mapping[int, datetime], registry: Registry, now: datetime) -> dict[int, datetime]:
    """The revocations whose certificate the registry does not know to have expired (unknown: kept)."""
    return {
        serial: when
        for serial, when in revoked.items()
        if serial not in registry.details or registry.details[serial].not_after >= now
    }


def _crl_blocks(crl_pem: str | None) -> list[tuple[str, x509.CertificateRevocationList]]:
    """The readable CRLs of a PEM text, each with its PEM block (unreadable blocks are skipped: they get replaced)."""
    out = []
    for block in _CRL_BLOCK.findall(crl_pem or ""):
        try:
            out.append((block, x509.load_pem_x509_crl(block.encode("ascii"))))
        except (ValueError, UnicodeError):
            continue
    return out


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def _crl_still_good(crl: x509.CertificateRevocationList, wanted: set[int], now: datetime) -> bool:
    next_update = crl.next_update_utc
    return (
        {entry.serial_number for entry in crl} == wanted
        and crl.last_update_utc <= now
        and next_update is not None
        and next_update - now > CRL_REFRESH
    )
