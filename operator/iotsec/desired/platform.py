"""Where the platform's own things live: the release namespace and the names of the ClusterRoles the chart ships.

Pure settings passed to the builders (the operator fills them from `runtime.Config`; `iotsec render` uses the
defaults, which match a release named `iotsec` in `iotsec-system`).
"""

from __future__ import annotations

from dataclasses import dataclass

RESERVED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "default")
"""Namespaces iotsec never adopts, labels, deletes or writes into (besides the release namespace)."""


@dataclass(frozen=True)
class Platform:
    namespace: str = "iotsec-system"  # the release namespace: platform keys (device CAs, volume keys) live here
    prefix: str = "iotsec"  # the release name: the chart's ClusterRoles are named <prefix>-<role>
    operator_service_account: str = "iotsec-operator"

    def cluster_role(self, role: str) -> str:
        """A ClusterRole the chart ships, e.g. `tenant-admin` → `iotsec-tenant-admin`."""
        return f"{self.prefix}-{role}"

    @property
    def operator_user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.operator_service_account}"

    def reserved(self, namespace: str) -> bool:
        """System namespaces and the release namespace: never a tenant's, never adopted or shredded."""
        return namespace in RESERVED_NAMESPACES or namespace == self.namespace


def device_ca_secret_name(tenant_id: str) -> str:
    """The tenant's device CA Secret, in the release namespace (tenants cannot read it)."""
    return f"iotsec-device-ca-{tenant_id}"


def volume_key_secret_name(tenant_id: str) -> str:
    """The tenant's volume encryption key Secret, in the release namespace."""
    return f"iotsec-volume-key-{tenant_id}"


def device_registry_name(tenant_id: str) -> str:
    """The tenant's registry of issued and revoked device certificates (a ConfigMap in the release namespace)."""
    return f"iotsec-device-registry-{tenant_id}"
