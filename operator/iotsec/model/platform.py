"""Where the platform's own things live: the release namespace and the names of the ClusterRoles the chart ships.

Pure settings passed to the builders (the operator fills them from `model.config.Config`; `iotsec render` uses the
defaults, which match a release named `iotsec` in `iotsec-system`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iotsec.model.labels import CONTROLS, owner_labels

RESERVED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "default")
"""Namespaces iotsec never adopts, labels, deletes or writes into (besides the release and audit namespaces)."""


@dataclass(frozen=True)
class Image:
    """The image of the pods iotsec creates (audit sinks, backup and restore Jobs): the chart gives its own."""

    reference: str = "registry.example.com/iotsec/iotsec:0.1.0"
    pull_policy: str = "IfNotPresent"


@dataclass(frozen=True)
class Platform:
    namespace: str = "iotsec-system"  # the release namespace: platform keys (device CAs, volume keys) live here
    prefix: str = "iotsec"  # the release name: the chart's ClusterRoles are named <prefix>-<role>
    operator_service_account: str = "iotsec-operator"
    audit_namespace: str = ""  # the audit sinks' namespace; empty: <prefix>-audit, as the chart's default
    # the chart's webhook.workloadKinds (PodCarriers, iotsec.model.workloads): kinds admission checks everywhere
    workload_kinds: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if not self.audit_namespace:
            object.__setattr__(self, "audit_namespace", f"{self.prefix}-audit")

    def cluster_role(self, role: str) -> str:
        """A ClusterRole the chart ships, e.g. `tenant-admin` → `iotsec-tenant-admin`."""
        return f"{self.prefix}-{role}"

    @property
    def sink_service_account(self) -> str:
        """The chart's audit sink ServiceAccount."""
        return self.cluster_role("audit-sink")

    @property
    def sink_user(self) -> str:
        """The audit sinks' username (they patch their canary ConfigMaps)."""
        return f"system:serviceaccount:{self.audit_namespace}:{self.sink_service_account}"

    def own(self, namespace: str) -> bool:
        """iotsec's own namespaces (release and audit): the chart's Roles cover them, tenants never reach them."""
        return namespace in (self.namespace, self.audit_namespace)

    @property
    def own_grants(self) -> frozenset[tuple[str, str, str]]:
        """(ClusterRole, namespace, ServiceAccount) bindings the installation itself consists of: binding them
        again widens nothing, and refusing them refused `helm upgrade` of the chart."""
        return frozenset({(self.cluster_role("operator"), self.namespace, self.operator_service_account)})

    @property
    def operator_user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.operator_service_account}"

    @property
    def reserved_namespaces(self) -> tuple[str, ...]:
        """System namespaces, the release and the audit namespace: never a tenant's, never adopted or shredded."""
        return (*RESERVED_NAMESPACES, self.namespace, self.audit_namespace)

    def reserved(self, namespace: str) -> bool:
        return namespace in self.reserved_namespaces

    @property
    def grant_name(self) -> str:
        """The operator's RoleBinding in each namespace it manages (see `operator_grant`)."""
        return self.cluster_role("operator")


GRANT_OWNER_KIND = "Platform"


def operator_grant(platform: Platform, namespace: str) -> dict[str, Any]:
    """The RoleBinding that gives iotsec's operator its rights inside one namespace it manages."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": platform.grant_name,
            "namespace": namespace,
            "labels": owner_labels(GRANT_OWNER_KIND, platform.prefix),
            "annotations": {CONTROLS: "X1369-9.6.3-1"},
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": platform.cluster_role("operator-namespace"),
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": platform.operator_service_account, "namespace": platform.namespace}
        ],
    }


def stale_grants(grants: list[dict[str, Any]], manages: Callable[[str], bool], platform: Platform) -> list[str]:
    """Namespaces holding the operator's grant where iotsec no longer works: the grant is withdrawn there."""
    ours = owner_labels(GRANT_OWNER_KIND, platform.prefix)

    def is_grant(binding: dict[str, Any]) -> bool:
        meta = binding["metadata"]
        labels = meta.get("labels") or {}
        return meta.get("name") == platform.grant_name and all(labels.get(k) == v for k, v in ours.items())

    return sorted(g["metadata"]["namespace"] for g in grants if is_grant(g) and not manages(g["metadata"]["namespace"]))


def device_ca_secret_name(tenant_id: str) -> str:
    """The tenant's device CA Secret, in the release namespace (tenants cannot read it)."""
    return f"iotsec-device-ca-{tenant_id}"


def volume_key_secret_name(tenant_id: str) -> str:
    """The tenant's volume encryption key Secret, in the release namespace."""
    return f"iotsec-volume-key-{tenant_id}"


def device_registry_name(tenant_id: str) -> str:
    """The tenant's registry of issued and revoked device certificates (a ConfigMap in the release namespace)."""
    return f"iotsec-device-registry-{tenant_id}"
