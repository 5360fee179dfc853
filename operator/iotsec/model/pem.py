"""How iotsec encodes keys and certificates: one spelling for the PKI and the audit trail (pure).

Private keys are unencrypted PKCS#8 PEM, public keys SubjectPublicKeyInfo (PEM, or DER to compare two keys),
certificates and CRLs PEM; text is ASCII, as PEM always is.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes


def private_key_pem(key: PrivateKeyTypes) -> str:
    """Unencrypted PKCS#8 PEM: whoever holds the text holds the key, so it goes into Secrets and 0600 files only."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def public_key_pem(key: PublicKeyTypes) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def spki_der(key: PublicKeyTypes) -> bytes:
    """The DER SubjectPublicKeyInfo: equal for two keys exactly when they are the same public key."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    """The 32 bytes of an Ed25519 public key, which key ids are derived from."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def certificate_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def crl_pem(crl: x509.CertificateRevocationList) -> str:
    return crl.public_bytes(serialization.Encoding.PEM).decode("ascii")
