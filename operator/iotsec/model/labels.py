"""Labels and annotations every object written by iotsec carries, so it can be traced and pruned."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MANAGED_BY = "app.kubernetes.io/managed-by"
OWNER_KIND = "iotsec.io/owner-kind"
OWNER_NAME = "iotsec.io/owner-name"
CONTROLS = "iotsec.io/controls"
MANAGER = "iotsec"


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
