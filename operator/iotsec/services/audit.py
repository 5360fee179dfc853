"""The audit trail's cluster reads the CLI needs: what the operator made for an AuditPolicy (its rendered policy,
the sink's address, CA and the API server's client credentials), the policy itself, its published chain head and
the sink's signing key.

Everything goes through the `Kube` it is given; nothing here prints. A lookup that finds nothing usable raises
`AuditLookupError` (a ValueError) saying what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from iotsec.api.auditpolicy import AuditPolicySpec
from iotsec.api.common import API_VERSION
from iotsec.api.validation import InvalidResourceError, parse_resource
from iotsec.audittrail import chain
from iotsec.build import audit as builder
from iotsec.build.apiserver_audit import POLICY_KEY, policy_configmap_name
from iotsec.model import secretdata
from iotsec.model.keysecrets import KeyUnreadableError

if TYPE_CHECKING:  # the API client loads only for the commands that reach the cluster
    from iotsec.k8s.kube import Kube


class AuditLookupError(ValueError):
    """What the operator should have made for an AuditPolicy is not there (or not usable); the message says what."""


class SinkCredentials(TypedDict):
    """What kube-apiserver needs to reach a sink: `iotsec.build.apiserver_audit.webhook_kubeconfig`'s arguments."""

    server: str
    ca_pem: bytes
    client_cert_pem: bytes | None
    client_key_pem: bytes | None
    token: str | None


def rendered_policy(kube: Kube, name: str, namespace: str) -> str:
    """The audit Policy YAML the operator rendered for AuditPolicy NAME (its policy ConfigMap in `namespace`)."""
    config_map_name = policy_configmap_name(name)
    config_map = kube.get("v1", "ConfigMap", config_map_name, namespace)
    if config_map is None:
        raise AuditLookupError(f"no ConfigMap {namespace}/{config_map_name}")
    text: str = config_map["data"][POLICY_KEY]
    return text


def sink_credentials(kube: Kube, name: str, namespace: str, server: str | None = None) -> SinkCredentials:
    """What the API server needs to reach AuditPolicy NAME's sink, from the Secrets and Service the operator keeps;
    `server` (the sink's URL) defaults to its Service's cluster IP."""

    def secret(secret_name: str) -> dict[str, str]:
        found = kube.get("v1", "Secret", secret_name, namespace)
        if found is None:
            raise AuditLookupError(
                f"no Secret {namespace}/{secret_name}: is the operator running, and the policy applied?"
            )
        return secretdata.decode(found)

    if server is None:
        service = kube.get("v1", "Service", builder.sink_name(name), namespace) or {}
        cluster_ip = (service.get("spec") or {}).get("clusterIP")
        if not cluster_ip:
            raise AuditLookupError(f"no Service {namespace}/{builder.sink_name(name)} with a cluster IP; pass --server")
        server = f"https://{cluster_ip}:{builder.SERVICE_PORT}/audit"
    tls, client = secret(builder.tls_secret_name(name)), secret(builder.client_secret_name(name))
    bundle = tls.get("ca-bundle.crt") or tls.get("ca.crt")
    if not bundle:
        raise AuditLookupError(
            f"Secret {namespace}/{builder.tls_secret_name(name)} holds no CA (ca-bundle.crt or ca.crt)"
        )
    return {
        "server": server,
        "ca_pem": bundle.encode(),
        "client_cert_pem": client["client.crt"].encode() if "client.crt" in client else None,
        "client_key_pem": client["client.key"].encode() if "client.key" in client else None,
        "token": client.get("token"),
    }


def policy_spec(kube: Kube, name: str) -> tuple[AuditPolicySpec, int | None]:
    """AuditPolicy NAME's spec and the generation it was read at."""
    body = kube.get(API_VERSION, "AuditPolicy", name)
    if body is None:
        raise AuditLookupError(f"AuditPolicy {name} not found")
    try:
        spec: AuditPolicySpec = parse_resource(body).spec  # type: ignore[assignment]
    except InvalidResourceError as exc:
        raise AuditLookupError(f"AuditPolicy {name} is invalid: {exc}") from None
    return spec, body["metadata"].get("generation")


def published_head(kube: Kube, name: str) -> tuple[int, str] | None:
    """The chain head AuditPolicy NAME's status publishes (status.chainHeadSeq, status.chainHead); None before any."""
    status = (kube.get(API_VERSION, "AuditPolicy", name) or {}).get("status") or {}
    seq, head = status.get("chainHeadSeq"), status.get("chainHead")
    if isinstance(seq, int) and seq > 0 and isinstance(head, str):
        return seq, head
    return None


def signing_key_from_secret(kube: Kube, namespace: str, name: str) -> Ed25519PrivateKey:
    """The store's signing key from the Secret the operator created (for a sink run with API access to it).

    Read only: a missing or unreadable Secret is a KeyUnreadableError, never a reason to make a key of its own."""
    where = f"Secret {namespace}/{name}"
    secret = kube.get("v1", "Secret", name, namespace)
    if secret is None:
        raise KeyUnreadableError(f"{where} does not exist: the operator creates it for the AuditPolicy")
    return builder.signing_key(secret, where)


def signing_key(
    kube: Kube | None,
    namespace: str,
    *,
    secret: str | None = None,
    key_file: Path | None = None,
    readonly: bool = False,
) -> Ed25519PrivateKey:
    """The store's signing key: read from Secret `secret` in `namespace` (through `kube`) or from `key_file`; only a
    file may be created, and only when it is missing and not `readonly` (local and development runs).

    OSError or ValueError saying why there is no key to use."""
    if secret:
        if kube is None:
            raise ValueError("--signing-key-secret needs --audit-policy (it reads the Secret through the API)")
        return signing_key_from_secret(kube, namespace, secret)
    if key_file is None:
        raise ValueError("name a signing key Secret or file")
    if readonly:
        return chain.private_key_from_pem(key_file.read_bytes(), str(key_file))
    return chain.load_or_create_private_key(key_file)
