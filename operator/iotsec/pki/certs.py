"""TLS material of the validating admission webhook: a private CA and a serving certificate (pure).

Everything here is a function of its arguments: times are passed in, nothing reads files, sockets or the cluster.
Keys are EC P-256, signatures ECDSA with SHA-256.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iotsec.model import secretdata
from iotsec.model.pem import certificate_pem, private_key_pem, spki_der
from iotsec.model.time import rfc3339, utc

CLOCK_SKEW = timedelta(minutes=5)
"""How far notBefore is backdated, so a peer whose clock is slightly behind still accepts a fresh certificate."""

CA_COMMON_NAME = "iotsec-webhook-ca"
"""Subject CN of the CA that `ensure_webhook_tls` creates."""

_CN_MAX = 64  # RFC 5280 ub-common-name
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address

SignatureHash = hashes.SHA256 | hashes.SHA384
"""The digests iotsec signs certificates and CRLs with."""

KEY_CA_CERT = "ca.crt"
KEY_CA_KEY = "ca.key"
KEY_PREVIOUS_CA_CERT = "previous-ca.crt"
KEY_TLS_CERT = "tls.crt"
KEY_TLS_KEY = "tls.key"
KEY_CA_BUNDLE = "ca-bundle.crt"


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its unencrypted PKCS#8 PEM private key."""

    cert_pem: str
    key_pem: str = field(repr=False)


# --- helpers (load_cert, issued_by, within_validity, is_ca are shared with the device CA) ----------------------------


def load_cert(cert_pem: str) -> x509.Certificate:
    """The first certificate of a PEM text; ValueError if there is none."""
    return x509.load_pem_x509_certificate(cert_pem.encode("ascii"))


def _load_key(key_pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(key_pem.encode("ascii"), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"expected an EC private key, got {type(key).__name__}")
    return key


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_matches(pair: KeyPair) -> bool:
    return spki_der(load_cert(pair.cert_pem).public_key()) == spki_der(_load_key(pair.key_pem).public_key())


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer` signed `cert` (and names itself its issuer); a bad or foreign signature is just False."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def within_validity(cert: x509.Certificate, now: datetime) -> bool:
    """Whether `now` (aware) lies between notBefore and notAfter, both included."""
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def is_ca(cert: x509.Certificate) -> bool:
    """Whether the certificate's basicConstraints say it is a CA (no extension: not a CA)."""
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _names(dns_names: Sequence[str], ip_addresses: Sequence[str]) -> tuple[list[str], list[_IP]]:
    """Validated, de-duplicated (order kept) DNS names and IP addresses."""
    if isinstance(dns_names, str) or isinstance(ip_addresses, str):
        raise TypeError("dns_names and ip_addresses must be sequences of strings, not a single string")
    dns = list(dict.fromkeys(name.strip().lower() for name in dns_names))
    if any(not name for name in dns):
        raise ValueError("empty DNS name")
    ips = list(dict.fromkeys(ipaddress.ip_address(ip.strip()) for ip in ip_addresses))
    if not dns and not ips:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    return dns, ips


def _sans(cert: x509.Certificate) -> tuple[set[str], set[_IP]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    # an IPAddress general name holds a network only in name constraints, never in a SAN
    ips = {ip for ip in san.get_values_for_type(x509.IPAddress) if isinstance(ip, _IP)}
    return {n.lower() for n in san.get_values_for_type(x509.DNSName)}, ips


def _check_renew_before(what: str, validity: timedelta, renew_before: timedelta) -> None:
    if renew_before <= timedelta(0) or renew_before >= validity:
        raise ValueError(
            f"{what}: renew_before ({renew_before}) must be positive and shorter than validity ({validity})"
        )


# --- issuing ---------------------------------------------------------------------------------------------------------


def self_signed_ca(
    subject: x509.Name,
    key: Any,
    now: datetime,
    validity: timedelta,
    signature_hash: SignatureHash,
    digital_signature: bool,
) -> x509.Certificate:
    """A self-signed CA certificate that signs leaves and CRLs only (path length 0), shared by every iotsec CA."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, signature_hash)
    )


def new_ca(common_name: str, now: datetime, validity: timedelta = timedelta(days=3650)) -> KeyPair:
    """A self-signed CA that can sign leaf certificates only (path length 0)."""
    now = utc(now)
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = self_signed_ca(name, key, now, validity, hashes.SHA256(), digital_signature=True)
    return KeyPair(cert_pem=certificate_pem(cert), key_pem=private_key_pem(key))


def new_serving_cert(
    ca: KeyPair,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    now: datetime,
    validity: timedelta = timedelta(days=365),
) -> KeyPair:
    """A TLS server certificate for the given names, signed by `ca`; it never outlives the CA."""
    dns, ips = _names(dns_names, ip_addresses)
    common_name = dns[0] if dns else str(ips[0])
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ip) for ip in ips]
    return _leaf(ca, common_name, sans, ExtendedKeyUsageOID.SERVER_AUTH, now, validity)


def new_client_cert(ca: KeyPair, common_name: str, now: datetime, validity: timedelta = timedelta(days=365)) -> KeyPair:
    """A TLS client certificate (clientAuth) for `common_name`, signed by `ca`; it never outlives the CA."""
    return _leaf(ca, common_name, [], ExtendedKeyUsageOID.CLIENT_AUTH, now, validity)


def _leaf(
    ca: KeyPair,
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    now: datetime,
    validity: timedelta,
) -> KeyPair:
    now = utc(now)
    ca_cert = load_cert(ca.cert_pem)
    ca_key = _load_key(ca.key_pem)
    key = _new_key()
    # A subject must not carry an over-long CN; an empty subject is allowed when the SAN is critical (RFC 5280 4.2.1.6).
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if len(common_name) <= _CN_MAX else [])
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - CLOCK_SKEW, ca_cert.not_valid_before_utc))
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=len(subject) == 0)
    cert = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,  # RFC 8813: not for EC keys
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert_pem=certificate_pem(cert), key_pem=private_key_pem(key))


# --- inspecting ------------------------------------------------------------------------------------------------------


def not_after(cert_pem: str) -> datetime:
    """The certificate's notAfter, timezone-aware UTC."""
    return load_cert(cert_pem).not_valid_after_utc


def fingerprint(cert_pem: str) -> str:
    """SHA-256 of the DER encoding, lowercase hex without colons."""
    return load_cert(cert_pem).fingerprint(hashes.SHA256()).hex()


def needs_rotation(cert_pem: str, now: datetime, renew_before: timedelta) -> bool:
    """True once `now` is within `renew_before` of the certificate's notAfter (or past it)."""
    return utc(now) >= not_after(cert_pem) - renew_before


def certs_in_bundle(bundle_pem: str) -> list[str]:
    """The certificates of a PEM bundle, each re-encoded as its own PEM string (empty bundle: empty list)."""
    if "-----BEGIN CERTIFICATE-----" not in bundle_pem:
        if bundle_pem.strip():
            raise ValueError("not a PEM certificate bundle")
        return []
    return [certificate_pem(cert) for cert in x509.load_pem_x509_certificates(bundle_pem.encode("ascii"))]


def ca_bundle(*cert_pems: str) -> str:
    """The distinct certificates of the arguments (each a certificate or a bundle), in order, newline-terminated."""
    seen: set[str] = set()
    out: list[str] = []
    for pem in cert_pems:
        for cert in certs_in_bundle(pem):
            digest = fingerprint(cert)
            if digest not in seen:
                seen.add(digest)
                out.append(cert if cert.endswith("\n") else cert + "\n")
    return "".join(out)


def verify_chain(leaf_pem: str, bundle_pem: str, now: datetime) -> bool:
    """True if the leaf is valid at `now` and directly signed by a CA of the bundle that is valid at `now` too."""
    now = utc(now)
    leaf = load_cert(leaf_pem)
    if not within_validity(leaf, now):
        return False
    for ca_pem in certs_in_bundle(bundle_pem):
        ca = load_cert(ca_pem)
        if is_ca(ca) and within_validity(ca, now) and issued_by(leaf, ca):
            return True
    return False


# --- the webhook's Secret --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookTLS:
    """What the operator keeps in the webhook's Secret."""

    ca: KeyPair
    previous_ca_cert_pem: str | None
    serving: KeyPair

    def bundle(self) -> str:
        """The CA bundle clients trust: the current CA, then the previous one during a rotation overlap."""
        return ca_bundle(self.ca.cert_pem, *([self.previous_ca_cert_pem] if self.previous_ca_cert_pem else []))

    def to_secret_data(self) -> dict[str, str]:
        """Secret `stringData`-style values (the caller base64-encodes them for `data`)."""
        data = {KEY_CA_CERT: self.ca.cert_pem, KEY_CA_KEY: self.ca.key_pem}
        if self.previous_ca_cert_pem:
            data[KEY_PREVIOUS_CA_CERT] = self.previous_ca_cert_pem
        data[KEY_TLS_CERT] = self.serving.cert_pem
        data[KEY_TLS_KEY] = self.serving.key_pem
        data[KEY_CA_BUNDLE] = self.bundle()
        return data

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str]) -> WebhookTLS:
        """Inverse of `to_secret_data` (the bundle is derived, so it is not read); ValueError names a bad key."""
        what = "webhook TLS"
        has_previous = secretdata.optional(data, KEY_PREVIOUS_CA_CERT, what) is not None
        return cls(
            ca=KeyPair(cert_pem=_secret_cert(data, KEY_CA_CERT, what), key_pem=_secret_key(data, KEY_CA_KEY, what)),
            previous_ca_cert_pem=_secret_cert(data, KEY_PREVIOUS_CA_CERT, what) if has_previous else None,
            serving=KeyPair(
                cert_pem=_secret_cert(data, KEY_TLS_CERT, what), key_pem=_secret_key(data, KEY_TLS_KEY, what)
            ),
        )


def _secret_cert(data: Mapping[str, str], key: str, what: str) -> str:
    value = secretdata.required(data, key, what)
    try:
        load_cert(value)
    except (ValueError, UnicodeError) as e:
        raise ValueError(f"{what} secret data key {key!r} is not a PEM certificate: {e}") from e
    return value


def _secret_key(data: Mapping[str, str], key: str, what: str) -> str:
    value = secretdata.required(data, key, what)
    try:
        _load_key(value)
    except (ValueError, TypeError, UnicodeError) as e:
        raise ValueError(f"{what} secret data key {key!r} is not an unencrypted PEM EC private key: {e}") from e
    return value


def ensure_webhook_tls(
    current: WebhookTLS | None,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    now: datetime,
    ca_validity: timedelta = timedelta(days=3650),
    ca_renew_before: timedelta = timedelta(days=365),
    serving_validity: timedelta = timedelta(days=365),
    serving_renew_before: timedelta = timedelta(days=30),
) -> tuple[WebhookTLS, list[str]]:
    """The desired webhook TLS material and why it differs from `current` (no reasons: `current` itself is returned).

    Level-triggered: a CA close to expiry is replaced and the old one stays in the bundle until it expires; a serving
    certificate close to expiry, with other names, or not signed by the current CA is reissued from the current CA.
    """
    now = utc(now)
    _check_renew_before("CA", ca_validity, ca_renew_before)
    _check_renew_before("serving certificate", serving_validity, serving_renew_before)
    if serving_renew_before >= ca_renew_before:
        # otherwise a serving certificate capped by the CA's notAfter would be reissued on every call
        raise ValueError(
            f"serving_renew_before ({serving_renew_before}) must be shorter than ca_renew_before ({ca_renew_before})"
        )
    dns, ips = _names(dns_names, ip_addresses)

    def serve(ca: KeyPair) -> KeyPair:
        return new_serving_cert(ca, dns, [str(ip) for ip in ips], now, serving_validity)

    if current is None:
        ca = new_ca(CA_COMMON_NAME, now, ca_validity)
        return WebhookTLS(ca=ca, previous_ca_cert_pem=None, serving=serve(ca)), ["created CA and serving certificate"]

    reasons: list[str] = []
    ca, previous, serving = current.ca, current.previous_ca_cert_pem, current.serving

    if previous is not None and now > not_after(previous):
        reasons.append(f"dropped previous CA from the bundle: it expired at {rfc3339(not_after(previous))}")
        previous = None

    ca_problem = None
    if needs_rotation(ca.cert_pem, now, ca_renew_before):
        ca_problem = f"CA expires at {rfc3339(not_after(ca.cert_pem))}, within {ca_renew_before}"
    elif not _key_matches(ca):
        ca_problem = "CA private key does not match the CA certificate"
    if ca_problem is not None:
        old = ca.cert_pem
        ca = new_ca(CA_COMMON_NAME, now, ca_validity)
        if previous is not None:
            reasons.append("replaced the previous CA in the bundle with the outgoing one")
        if now <= not_after(old):
            previous = old
            reasons.append(f"rotated CA ({ca_problem}); the old CA stays in the bundle until it expires")
        else:
            previous = None
            reasons.append(f"rotated CA ({ca_problem}); the old CA has expired and is not kept")
        serving = serve(ca)
        reasons.append("issued a serving certificate from the new CA")
        return WebhookTLS(ca=ca, previous_ca_cert_pem=previous, serving=serving), reasons

    leaf = load_cert(serving.cert_pem)
    serving_problem = None
    if needs_rotation(serving.cert_pem, now, serving_renew_before):
        serving_problem = f"it expires at {rfc3339(leaf.not_valid_after_utc)}, within {serving_renew_before}"
    elif _sans(leaf) != (set(dns), set(ips)):
        have_dns, have_ips = _sans(leaf)
        have = sorted(have_dns) + sorted(str(ip) for ip in have_ips)
        want = sorted(dns) + sorted(str(ip) for ip in ips)
        serving_problem = f"its names {have} differ from the requested {want}"
    elif not issued_by(leaf, load_cert(ca.cert_pem)):
        serving_problem = "it is not signed by the current CA"
    elif leaf.not_valid_before_utc > now:
        serving_problem = f"it is not valid before {rfc3339(leaf.not_valid_before_utc)}"
    elif not _key_matches(serving):
        serving_problem = "its private key does not match the certificate"
    if serving_problem is not None:
        serving = serve(ca)
        reasons.append(f"reissued the serving certificate: {serving_problem}")

    if not reasons:
        return current, []
    return dataclasses.replace(current, previous_ca_cert_pem=previous, serving=serving), reasons


# --- a client identity (the API server calling the audit sink) ------------------------------------------------------

KEY_CLIENT_CERT = "client.crt"
KEY_CLIENT_KEY = "client.key"


@dataclass(frozen=True)
class ClientAuth:
    """A client CA (whose certificate the server trusts) and one client certificate it issued."""

    ca: KeyPair
    client: KeyPair

    def to_secret_data(self) -> dict[str, str]:
        return {
            KEY_CA_CERT: self.ca.cert_pem,
            KEY_CA_KEY: self.ca.key_pem,
            KEY_CLIENT_CERT: self.client.cert_pem,
            KEY_CLIENT_KEY: self.client.key_pem,
        }

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str]) -> ClientAuth:
        what = "audit client credentials"
        return cls(
            ca=KeyPair(cert_pem=_secret_cert(data, KEY_CA_CERT, what), key_pem=_secret_key(data, KEY_CA_KEY, what)),
            client=KeyPair(
                cert_pem=_secret_cert(data, KEY_CLIENT_CERT, what), key_pem=_secret_key(data, KEY_CLIENT_KEY, what)
            ),
        )


def ensure_client_auth(
    current: ClientAuth | None,
    common_name: str,
    now: datetime,
    ca_validity: timedelta = timedelta(days=3650),
    ca_renew_before: timedelta = timedelta(days=365),
    client_validity: timedelta = timedelta(days=365),
    client_renew_before: timedelta = timedelta(days=30),
) -> tuple[ClientAuth, list[str]]:
    """The client CA and certificate to keep, and why they differ from `current` (no reasons: unchanged).

    A new client CA also means a new client certificate; a client certificate close to expiry, or not issued by
    the current CA, is reissued from it."""
    now = utc(now)
    if current is None or needs_rotation(current.ca.cert_pem, now, ca_renew_before):
        ca = new_ca(f"{common_name}-client-ca", now, ca_validity)
        why = "created client CA and certificate" if current is None else "client CA close to expiry: replaced"
        return ClientAuth(ca, new_client_cert(ca, common_name, now, client_validity)), [why]
    if needs_rotation(current.client.cert_pem, now, client_renew_before) or not verify_chain(
        current.client.cert_pem, current.ca.cert_pem, now
    ):
        return ClientAuth(current.ca, new_client_cert(current.ca, common_name, now, client_validity)), [
            "client certificate close to expiry or not from the current CA: reissued"
        ]
    return current, []
