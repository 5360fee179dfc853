"""Read the cluster into a conformance Inventory, through the one API adapter (k8s.kube.Kube.list).

Secrets are kept as metadata only (their data and stringData are dropped on reading, only the key names stay, as
`dataKeys`); ConfigMaps likewise keep their key names, never values, except the public device trust bundle iotsec
writes (CA certificates and CRL) and its device registries (serials and device ids). A kind the report may not
list (403) or the API server does not serve (404: a CRD not installed) goes into `unavailable` with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from iotsec.build.tenant import DEVICE_TRUST
from iotsec.conformance.model import Inventory
from iotsec.k8s.kube import ApiError, Kube
from iotsec.model.labels import MANAGED_BY, MANAGER

log = logging.getLogger(__name__)

KINDS: tuple[tuple[str, str], ...] = (
    ("iotsec.io/v1alpha1", "SecurityDomain"),
    ("iotsec.io/v1alpha1", "TenantIsolation"),
    ("iotsec.io/v1alpha1", "BackupPolicy"),
    ("iotsec.io/v1alpha1", "AuditPolicy"),
    ("v1", "Namespace"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("storage.k8s.io/v1", "StorageClass"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "Service"),
    ("networking.k8s.io/v1", "Ingress"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "ServiceAccount"),
    ("v1", "ResourceQuota"),
    ("v1", "LimitRange"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("v1", "Pod"),
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
    ("wgpolicyk8s.io/v1alpha2", "PolicyReport"),
    ("wgpolicyk8s.io/v1alpha2", "ClusterPolicyReport"),
    ("aquasecurity.github.io/v1alpha1", "VulnerabilityReport"),
    ("aquasecurity.github.io/v1alpha1", "ConfigAuditReport"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
)
VALUES_DROPPED = ("Secret", "ConfigMap")
PUBLIC_TRUST_KEYS = ("ca-bundle.crt", "crl.pem")  # of the ConfigMap DEVICE_TRUST: certificates and a CRL
REGISTRY_PREFIX = "iotsec-device-registry-"  # iotsec.model.platform.device_registry_name
REGISTRY_KEYS = ("issued", "revoked", "details")  # serials, device ids, expiries, issuer fingerprints
OLDER_VERSIONS = {("batch/v1", "CronJob"): "batch/v1beta1"}  # Kubernetes before 1.21 serves CronJob as v1beta1
CRD_GROUPS = ("iotsec.io", "wgpolicyk8s.io", "aquasecurity.github.io", "monitoring.coreos.com")


def group_kind(api_version: str, kind: str) -> str:
    return f"{api_version.rsplit('/', 1)[0] if '/' in api_version else ''}/{kind}"


def gather(kube: Kube, now: datetime, source: str = "", kinds: Iterable[tuple[str, str]] = KINDS) -> Inventory:
    """Every object of `kinds` the report reads; ApiError other than 403/404 (the cluster unreachable) propagates."""
    inventory = Inventory("cluster", now, source=source)
    for api_version, kind in kinds:
        try:
            found = _list(kube, api_version, kind)
        except ApiError as exc:
            if exc.status not in (403, 404):
                raise
            inventory.unavailable[group_kind(api_version, kind)] = _why(api_version, exc)
            continue
        inventory.objects += [without_values(obj) for obj in found]
    log.info("inventory: %d objects, %d kinds unavailable", len(inventory.objects), len(inventory.unavailable))
    return inventory


def _list(kube: Kube, api_version: str, kind: str) -> list[dict[str, Any]]:
    try:
        return kube.list(api_version, kind)
    except ApiError as exc:
        older = OLDER_VERSIONS.get((api_version, kind))
        if exc.status != 404 or older is None:
            raise
        return kube.list(older, kind)


def _why(api_version: str, exc: ApiError) -> str:
    if exc.status == 403:
        return f"forbidden: {exc}"
    crd = any(api_version.startswith(f"{group}/") for group in CRD_GROUPS)
    return "CRD not installed" if crd else f"not served by this API server ({api_version})"


def without_values(obj: dict[str, Any]) -> dict[str, Any]:
    """A Secret or ConfigMap with its values dropped (key names kept as dataKeys); other objects unchanged, but
    without metadata.managedFields (bulk nobody judges)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    if obj.get("kind") not in VALUES_DROPPED:
        return {**obj, "metadata": meta}
    keys = sorted({*(obj.get("data") or {}), *(obj.get("stringData") or {}), *(obj.get("binaryData") or {})})
    kept = {k: v for k, v in obj.items() if k not in ("data", "stringData", "binaryData", "metadata")}
    public = _public_data(obj, meta)
    return {**kept, "metadata": meta, "dataKeys": keys, **({"data": public} if public else {})}


def _public_data(obj: dict[str, Any], meta: dict[str, Any]) -> dict[str, str]:
    """The device trust bundle iotsec writes holds public material only (CA certificates, the signed CRL): the
    device-CA probe reads CA expiry and CRL freshness from it. The device registry holds serials, device ids and
    expiries (no key material): the device-identity probe counts them. Nothing else keeps a value."""
    ours = (meta.get("labels") or {}).get(MANAGED_BY) == MANAGER
    name = str(meta.get("name", ""))
    if obj.get("kind") != "ConfigMap" or not ours:
        return {}
    kept = PUBLIC_TRUST_KEYS if name == DEVICE_TRUST else REGISTRY_KEYS if name.startswith(REGISTRY_PREFIX) else ()
    data = obj.get("data") or {}
    return {k: str(data[k]) for k in kept if k in data}


def connect(context: str | None = None) -> tuple[Kube, str]:
    """A Kube for the kubeconfig's `context` (or the current one / in-cluster), and the API server's URL."""
    from iotsec.k8s.kube import default_api_client

    api_client = default_api_client(context)
    return Kube(api_client), str(api_client.configuration.host)
