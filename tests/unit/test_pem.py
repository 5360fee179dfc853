"""model.pem: the one encoding of keys and certificates that the PKI and the audit trail share."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from iotsec.audittrail import chain
from iotsec.model import pem
from iotsec.pki import certs

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "iotsec"


def test_private_key_pem_is_unencrypted_pkcs8_that_loads_back() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    text = pem.private_key_pem(key)
    assert text.startswith("-----BEGIN PRIVATE KEY-----\n")
    loaded = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    assert pem.spki_der(loaded.public_key()) == pem.spki_der(key.public_key())


def test_public_key_pem_is_subject_public_key_info() -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    text = pem.public_key_pem(key)
    assert text.startswith("-----BEGIN PUBLIC KEY-----\n")
    loaded = serialization.load_pem_public_key(text.encode("ascii"))
    assert isinstance(loaded, ed25519.Ed25519PublicKey)
    assert pem.raw_public_key(loaded) == pem.raw_public_key(key)
    assert len(pem.raw_public_key(key)) == 32


def test_spki_der_tells_keys_apart() -> None:
    one, other = (ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(2))
    assert pem.spki_der(one) != pem.spki_der(other)


def test_certificate_pem_round_trips_through_certs() -> None:
    ca = certs.new_ca("test-ca", datetime(2026, 12, 3, tzinfo=UTC))
    assert pem.certificate_pem(certs.load_cert(ca.cert_pem)) == ca.cert_pem


def test_the_audit_chain_writes_its_keys_in_the_same_encoding() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    assert chain.private_pem(key) == pem.private_key_pem(key).encode("ascii")
    assert chain.public_pem(key.public_key()) == pem.public_key_pem(key.public_key()).encode("ascii")


def test_no_module_imports_another_modules_private_name() -> None:
    """A helper two modules need is public API where it lives (certs.load_cert), not a borrowed `_name`."""
    borrowed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("iotsec"):
                borrowed += [
                    f"{path.relative_to(PACKAGE)}: {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert borrowed == []
