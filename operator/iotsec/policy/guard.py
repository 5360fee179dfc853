"""The fence around iotsec's own operator identity (pure): what RBAC alone cannot confine.

The operator creates a RoleBinding to its namespaced ClusterRole in each namespace it manages, labels the
namespaces of tenants and domains, and deletes the namespaces a Shred tenant created. RBAC cannot say "only in
namespaces iotsec manages", so a stolen operator token could otherwise bind itself in kube-system, relabel a
namespace into a tenant or delete one it never made. This check answers those requests for the operator's user
only; every other user is left to RBAC and the workload rules. The chart's ValidatingAdmissionPolicy says the
same for API servers ≥ 1.30 without a webhook call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from iotsec.desired.platform import Platform
from iotsec.policy.model import Finding

RULE = "operator-confinement"
IOTSEC_KINDS = ("SecurityDomain", "TenantIsolation", "BackupPolicy", "AuditPolicy")
GUARDED_KINDS = frozenset({"RoleBinding", "Namespace", *IOTSEC_KINDS})
OWN_LABEL_PREFIXES = ("iotsec.io/", "pod-security.kubernetes.io/", "app.kubernetes.io/managed-by")
TENANT_LABEL = "iotsec.io/tenant"
CREATED_BY = "iotsec.io/created-by"  # the tenant handler marks the namespaces it created (not adopted ones)


@dataclass(frozen=True)
class Managed:
    """What the webhook knows of where iotsec works: tenant namespaces, domain members, BackupPolicy namespaces."""

    tenant_of: Mapping[str, str]  # namespace -> tenant id of the TenantIsolation that lists it (first claimer)
    domain_members: frozenset[str]
    backup_namespaces: frozenset[str]

    def manages(self, namespace: str) -> bool:
        return namespace in self.tenant_of or namespace in self.domain_members or namespace in self.backup_namespaces


def confine_operator(
    user: str,
    kind: str,
    operation: str,
    namespace: str | None,
    obj: Any,
    old: Any,
    platform: Platform,
    managed: Managed,
) -> list[Finding]:
    """Findings for a request by iotsec's operator that reaches beyond what iotsec manages (empty otherwise)."""
    if user != platform.operator_user or kind not in GUARDED_KINDS:
        return []
    if kind == "RoleBinding":
        return _role_binding(namespace or "", obj if operation != "DELETE" else old, platform, managed)
    if kind == "Namespace":
        return _namespace(operation, obj, old, platform, managed)
    if operation == "UPDATE" and _spec(obj) != _spec(old):
        return [_finding("spec", f"the operator may not change the spec of {kind} objects", "edit it as a person")]
    return []


def _role_binding(namespace: str, binding: Any, platform: Platform, managed: Managed) -> list[Finding]:
    role_ref = (binding or {}).get("roleRef") or {} if isinstance(binding, dict) else {}
    if namespace == platform.namespace:
        if role_ref.get("kind") == "Role":
            return []  # its own objects in the release namespace (the audit sinks' canary grants)
        return [_finding("roleRef", f"the operator binds no ClusterRole in the release namespace {namespace}")]
    if platform.reserved(namespace):
        return [_finding("metadata.namespace", f"namespace {namespace} is reserved: iotsec never writes there")]
    if not managed.manages(namespace):
        return [
            _finding(
                "metadata.namespace",
                f"namespace {namespace} is not managed by iotsec (no TenantIsolation lists it, no SecurityDomain "
                "holds it, no BackupPolicy lives there)",
                "list the namespace in a TenantIsolation or SecurityDomain first",
            )
        ]
    return []


def _namespace(operation: str, obj: Any, old: Any, platform: Platform, managed: Managed) -> list[Finding]:
    name = _name(obj if operation != "DELETE" else old) or _name(old)
    if platform.reserved(name):
        return [_finding("metadata.name", f"namespace {name} is reserved: iotsec never labels or deletes it")]
    if operation == "DELETE":
        if TENANT_LABEL not in _labels(old) or not _annotations(old).get(CREATED_BY):
            return [_finding("metadata.annotations", f"namespace {name} was not made by an iotsec tenant")]
        return []
    if operation != "UPDATE":
        return []
    marked = _annotations(obj).get(CREATED_BY)
    if marked and marked != _annotations(old).get(CREATED_BY):  # dropping the mark only makes it undeletable
        return [_finding("metadata.annotations", f"{CREATED_BY} is set only when iotsec creates a namespace")]
    before, after = _labels(old), _labels(obj)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    foreign = sorted(k for k in changed if not k.startswith(OWN_LABEL_PREFIXES))
    if foreign:
        return [_finding("metadata.labels", f"the operator may change only iotsec's labels, not {', '.join(foreign)}")]
    tenant = after.get(TENANT_LABEL)
    if TENANT_LABEL in changed and tenant is not None and managed.tenant_of.get(name) != tenant:
        return [_finding("metadata.labels", f"no TenantIsolation of tenant {tenant} lists namespace {name}")]
    return []


def _finding(path: str, message: str, fix: str = "this is refused whoever asks for it as the operator") -> Finding:
    return Finding(RULE, path, message, fix)


def _spec(obj: Any) -> Any:
    return obj.get("spec") if isinstance(obj, dict) else None


def _name(obj: Any) -> str:
    return str(((obj or {}).get("metadata") or {}).get("name") or "") if isinstance(obj, dict) else ""


def _labels(obj: Any) -> dict[str, str]:
    return _metadata_map(obj, "labels")


def _annotations(obj: Any) -> dict[str, str]:
    return _metadata_map(obj, "annotations")


def _metadata_map(obj: Any, field: str) -> dict[str, str]:
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        return {}
    found = obj["metadata"].get(field)
    return found if isinstance(found, dict) else {}
