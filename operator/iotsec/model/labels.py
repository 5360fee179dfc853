"""The labels and annotations iotsec reads and writes, each spelled once: every `iotsec.io/` key of the pure core
and every one that two modules share (a key only one controller knows stays beside it).

Every object iotsec writes carries the owner labels and the controls annotation, so it can be traced and pruned.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MANAGED_BY = "app.kubernetes.io/managed-by"
OWNER_KIND = "iotsec.io/owner-kind"
OWNER_NAME = "iotsec.io/owner-name"
CONTROLS = "iotsec.io/controls"
MANAGER = "iotsec"

# --- namespaces and pods: where a workload sits --------------------------------------------------------------------
DOMAIN_LABEL = "iotsec.io/domain"
ZONE_LABEL = "iotsec.io/zone"
LEVEL_LABEL = "iotsec.io/security-level"
TENANT_LABEL = "iotsec.io/tenant"
DOMAIN_CLAIM_LABEL = "iotsec.io/security-domain"  # a SecurityDomain's namespaceSelector may select on it
CREATED_BY = "iotsec.io/created-by"  # on namespaces the operator created (never adopted ones): the tenant's name
APP_ID_LABEL = "iotsec.io/app-id"
PSA_BEFORE = "iotsec.io/psa-before"  # on a domain member namespace: JSON of the Pod Security labels it had before

# --- storage, keys and backups ---------------------------------------------------------------------------------------
ENCRYPTED_LABEL = "iotsec.io/encrypted"  # on a StorageClass whose volumes are encrypted
DATA_CLASS = "iotsec.io/data-class"  # label (or annotation) of a PersistentVolumeClaim
KEY_PURPOSE_LABEL = "iotsec.io/key-purpose"
REPLACE_UNREADABLE = "iotsec.io/replace-unreadable"  # a person allows iotsec to replace an unreadable key Secret
BACKUP_JOB_LABEL = "iotsec.io/backup-job"  # backup | verify | drill
RESTORED_FROM_LABEL = "iotsec.io/restored-from"
CRL_REQUESTED = "iotsec.io/crl-requested"  # on a TenantIsolation, set by `iotsec device revoke`: re-sign the CRLs now

# --- other annotations -----------------------------------------------------------------------------------------------
DESCRIPTION = "iotsec.io/description"
RATE_LIMIT = "iotsec.io/rate-limit"  # an Ingress's rate limit, for controllers without an annotation of their own
AUDIT_POLICY_DIGEST = "iotsec.io/audit-policy-sha256"
WRITTEN_BY = "iotsec.io/written-by"


def owner_labels(owner_kind: str, owner_name: str) -> dict[str, str]:
    return {MANAGED_BY: MANAGER, OWNER_KIND: owner_kind, OWNER_NAME: owner_name}


def owner_selector(owner_kind: str, owner_name: str) -> str:
    """A label selector string matching exactly the objects one owner wrote."""
    return ",".join(f"{k}={v}" for k, v in owner_labels(owner_kind, owner_name).items())


def owned_metadata(
    name: str,
    namespace: str | None,
    *,
    owner_kind: str,
    owner_name: str,
    controls: Iterable[str],
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = {**owner_labels(owner_kind, owner_name), **(labels or {})}
    metadata["annotations"] = {CONTROLS: ",".join(sorted(set(controls))), **(annotations or {})}
    return metadata


def restricted_container_security() -> dict[str, Any]:
    """A container securityContext that passes the Pod Security `restricted` level (a fresh dict each call)."""
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
