"""The admission webhook's cluster reads the CLI needs: the CA bundle of the webhook TLS Secret the operator keeps."""

from __future__ import annotations

from iotsec.build.webhook import secret_ca_bundle
from iotsec.k8s.kube import ApiError, Kube
from iotsec.model import secretdata


def ca_bundle_from_secret(kube: Kube, namespace: str, name: str) -> str:
    """The PEM CA bundle in Secret NAMESPACE/NAME (`ca-bundle.crt`, else `ca.crt`); ValueError saying why when the
    Secret cannot be read, does not exist or holds no valid bundle."""
    try:
        secret = kube.get("v1", "Secret", name, namespace)
    except ApiError as exc:
        raise ValueError(str(exc)) from None
    if secret is None:
        raise ValueError(f"no Secret {namespace}/{name}")
    return secret_ca_bundle(secretdata.decode(secret), f"Secret {namespace}/{name}")
