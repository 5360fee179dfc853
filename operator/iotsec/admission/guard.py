"""The fence around iotsec's own operator identity (pure): what RBAC alone cannot confine.

The operator creates a RoleBinding to its namespaced ClusterRole in each namespace it manages, labels the
namespaces of tenants and domains, creates tenant namespaces, StorageClasses and backup CronJobs, and deletes the
namespaces a Shred tenant created. RBAC cannot say "only in namespaces iotsec manages" or "only the labels a
domain prescribes", so a stolen operator token could otherwise bind itself in kube-system, label a namespace into
a domain and then bind there, run a CronJob as a powerful ServiceAccount, mint a token Secret or take over the
default StorageClass. This check answers those requests for the operator's user only; every other user is left
to RBAC and the workload rules. The chart's ValidatingAdmissionPolicy says the name-based part of it for API
servers >= 1.30 without a webhook call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from iotsec.admission.model import Finding
from iotsec.build.securitydomain import PSA_PREFIX, recorded_psa_labels
from iotsec.model.labels import (
    CREATED_BY,
    DOMAIN_CLAIM_LABEL,
    DOMAIN_LABEL,
    MANAGED_BY,
    MANAGER,
    OWNER_KIND,
    OWNER_NAME,
    TENANT_LABEL,
    ZONE_LABEL,
)
from iotsec.model.names import BACKUP_ACCOUNT_PREFIX as ACCOUNT_PREFIX
from iotsec.model.names import CANARY_ROLE_PREFIX
from iotsec.model.platform import Platform

RULE = "operator-confinement"
IOTSEC_KINDS = ("SecurityDomain", "TenantIsolation", "BackupPolicy", "AuditPolicy")
GUARDED_KINDS = frozenset({"RoleBinding", "Role", "Namespace", "StorageClass", "Secret", "CronJob", *IOTSEC_KINDS})
ANSWERED_KINDS = GUARDED_KINDS | {"ConfigMap"}  # what confine_operator or protect_managed may refuse
TENANT_KEYS = (TENANT_LABEL, DOMAIN_CLAIM_LABEL, OWNER_KIND, OWNER_NAME, MANAGED_BY)
DOMAIN_KEYS = (DOMAIN_LABEL, ZONE_LABEL)
PSA_KEYS = f"{PSA_PREFIX}/"
DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)
CSI_SECRET_NAMESPACE = "-secret-namespace"


def _no_domain(_namespace: str, _labels: Mapping[str, str]) -> Mapping[str, str] | None:
    return None


@dataclass(frozen=True)
class Managed:
    """What the webhook knows of where iotsec works: tenant namespaces, domain members, BackupPolicy namespaces."""

    tenant_of: Mapping[str, str]  # namespace -> tenant id of the TenantIsolation that lists it (first claimer)
    domain_members: frozenset[str]
    backup_namespaces: frozenset[str]
    claims: Mapping[str, tuple[str, str, str]] = field(default_factory=dict)  # ns -> (tenant id, domain, object)
    # The labels a domain prescribes for a namespace that carries `labels` (None: no domain would hold it)
    domain_labels: Callable[[str, Mapping[str, str]], Mapping[str, str] | None] = _no_domain

    def manages(self, namespace: str) -> bool:
        return namespace in self.tenant_of or namespace in self.domain_members or namespace in self.backup_namespaces


@dataclass(frozen=True)
class Request:
    kind: str
    operation: str
    namespace: str
    obj: Any
    old: Any

    @property
    def current(self) -> Any:
        """The object as it will be, or as it was for a DELETE."""
        return self.old if self.operation == "DELETE" else self.obj


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
    request = Request(kind, operation, namespace or "", obj, old)
    check = _CHECKS.get(kind, _custom_resource)
    return check(request, platform, managed)


# ---------------------------------------------------------------- RBAC


def _role_binding(request: Request, platform: Platform, managed: Managed) -> list[Finding]:
    binding = _dict(request.current)
    namespace = request.namespace
    if platform.own(namespace):
        return _own_namespace_binding(request, binding, platform)
    if platform.reserved(namespace):
        return [_finding("metadata.namespace", f"namespace {namespace} is reserved: iotsec never writes there")]
    if request.operation == "DELETE" and _labels(binding).get(MANAGED_BY) == MANAGER:
        return []  # pruning its own bindings, also where iotsec no longer works
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


def _own_namespace_binding(request: Request, binding: dict[str, Any], platform: Platform) -> list[Finding]:
    """In the release (and audit) namespace: only an audit sink's canary grant, to the sink's ServiceAccount."""
    role_ref = _dict(binding.get("roleRef"))
    sink = {"kind": "ServiceAccount", "name": platform.sink_service_account, "namespace": request.namespace}
    subjects = [{k: s.get(k) for k in sink} for s in binding.get("subjects") or () if isinstance(s, dict)]
    canary = role_ref.get("kind") == "Role" and str(role_ref.get("name", "")).startswith(CANARY_ROLE_PREFIX)
    if request.operation == "DELETE" or (canary and subjects == [sink]):
        return []
    return [
        _finding(
            "roleRef",
            f"in {request.namespace} the operator binds only an audit sink's canary Role to the sink's ServiceAccount",
        )
    ]


def _role(request: Request, platform: Platform, _managed: Managed) -> list[Finding]:
    """Roles in managed namespaces are bounded by RBAC (it holds no escalate); in its own namespaces only canaries."""
    if not platform.own(request.namespace) or request.operation == "DELETE":
        return []
    role = _dict(request.current)
    name = str(_dict(role.get("metadata")).get("name", ""))
    canary = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "patch"]}]
    rules = [{k: r.get(k) for k in ("apiGroups", "resources", "verbs")} for r in role.get("rules") or ()]
    named = all(r.get("resourceNames") for r in role.get("rules") or ())
    if name.startswith(CANARY_ROLE_PREFIX) and rules == canary and named:
        return []
    return [_finding("rules", f"in {request.namespace} the operator makes only canary Roles (get, patch by name)")]


# ---------------------------------------------------------------- namespaces


def _namespace(request: Request, platform: Platform, managed: Managed) -> list[Finding]:
    name = _name(request.current) or request.namespace
    if platform.reserved(name):
        return [_finding("metadata.name", f"namespace {name} is reserved: iotsec never creates, labels or deletes it")]
    if request.operation == "DELETE":
        if TENANT_LABEL not in _labels(request.old) or not _annotations(request.old).get(CREATED_BY):
            return [_finding("metadata.annotations", f"namespace {name} was not made by an iotsec tenant")]
        return []
    if request.operation == "CREATE":
        return _namespace_create(name, request.obj, managed)
    marked = _annotations(request.obj).get(CREATED_BY)
    if marked and marked != _annotations(request.old).get(CREATED_BY):  # dropping it only makes it undeletable
        return [_finding("metadata.annotations", f"{CREATED_BY} is set only when iotsec creates a namespace")]
    restorable = recorded_psa_labels(_annotations(request.old))
    return _label_changes(name, _labels(request.old), _labels(request.obj), managed, restorable)


def _namespace_create(name: str, obj: Any, managed: Managed) -> list[Finding]:
    claim = managed.claims.get(name)
    if claim is None:
        return [_finding("metadata.name", f"no TenantIsolation lists namespace {name}: iotsec does not create it")]
    marked = _annotations(obj).get(CREATED_BY)
    if marked is not None and marked != claim[2]:
        return [_finding("metadata.annotations", f"namespace {name} is listed by TenantIsolation {claim[2]}")]
    return _label_changes(name, {}, _labels(obj), managed)


def _label_changes(
    name: str,
    before: Mapping[str, str],
    after: Mapping[str, str],
    managed: Managed,
    restorable: Mapping[str, str] | None = None,
) -> list[Finding]:
    """`restorable`: the Pod Security labels the namespace had before it joined its domain (its record)."""
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    foreign = sorted(k for k in changed if k not in TENANT_KEYS + DOMAIN_KEYS and not k.startswith(PSA_KEYS))
    if foreign:
        return [_finding("metadata.labels", f"the operator may change only iotsec's labels, not {', '.join(foreign)}")]
    found = _tenant_labels(name, {k for k in changed if k in TENANT_KEYS}, after, managed)
    domain_keys = {k for k in changed if k not in TENANT_KEYS}
    return found or _domain_labels(name, domain_keys, before, after, managed, restorable or {})


def _tenant_labels(name: str, changed: set[str], after: Mapping[str, str], managed: Managed) -> list[Finding]:
    claim = managed.claims.get(name)
    wanted = {TENANT_LABEL: claim[0], DOMAIN_CLAIM_LABEL: claim[1]} if claim else {}
    for key in sorted(changed):
        if key not in after:
            continue  # removing a tenant's mark narrows nothing a domain grants
        if claim is None:
            return [_finding("metadata.labels", f"no TenantIsolation lists namespace {name}: {key} is not iotsec's")]
        if key in wanted and after[key] != wanted[key]:
            return [_finding("metadata.labels", f"{key}={after[key]}: TenantIsolation {claim[2]} says {wanted[key]}")]
    return []


def _domain_labels(
    name: str,
    changed: set[str],
    before: Mapping[str, str],
    after: Mapping[str, str],
    managed: Managed,
    restorable: Mapping[str, str],
) -> list[Finding]:
    """Domain, zone and Pod Security labels only as the domain that holds the namespace prescribes them.

    Which domain holds it is judged without the labels the operator writes itself (domain, zone, Pod Security),
    the holder kept as it was: else a selector on one of them, or a namespace claimed by two domains, would let
    the operator's own label decide membership (label, then join, then bind)."""
    if not changed:
        return []
    basis = {k: v for k, v in after.items() if k not in DOMAIN_KEYS and not k.startswith(PSA_KEYS)}
    if DOMAIN_KEYS[0] in before:
        basis[DOMAIN_KEYS[0]] = before[DOMAIN_KEYS[0]]
    prescribed = managed.domain_labels(name, basis)
    if prescribed is None:
        leaving = DOMAIN_KEYS[0] in before and DOMAIN_KEYS[0] not in after
        if all(key not in after or (leaving and restorable.get(key) == after[key]) for key in changed):
            return []  # a namespace that left its domain loses the domain's labels and gets its own Pod Security back
        return [_finding("metadata.labels", f"no SecurityDomain holds namespace {name}: its labels are not iotsec's")]
    for key in sorted(changed):
        if after.get(key) != prescribed.get(key):
            return [
                _finding(
                    "metadata.labels",
                    f"{key}={after.get(key)}: the domain holding {name} prescribes {prescribed.get(key)}",
                )
            ]
    return []


# ---------------------------------------------------------------- what else it writes


def _storage_class(request: Request, platform: Platform, _managed: Managed) -> list[Finding]:
    """Only iotsec's per-tenant encrypted classes: never the default class, keys only from the platform namespace."""
    current = _dict(request.current)
    if any(
        _labels(o).get(MANAGED_BY) != MANAGER or TENANT_LABEL not in _labels(o)
        for o in (current, *((request.old,) if request.operation == "UPDATE" else ()))
    ) or (
        request.operation == "UPDATE"
        and _labels(request.obj).get(TENANT_LABEL) != _labels(request.old).get(TENANT_LABEL)
    ):
        return [_finding("metadata.labels", "the operator writes only its own tenants' StorageClasses")]
    if request.operation == "DELETE":
        return []
    if any(_annotations(current).get(a) not in (None, "false") for a in DEFAULT_CLASS_ANNOTATIONS):
        return [_finding("metadata.annotations", "the operator never makes a default StorageClass")]
    parameters = _dict(current.get("parameters"))
    elsewhere = sorted(k for k, v in parameters.items() if k.endswith(CSI_SECRET_NAMESPACE) and v != platform.namespace)
    if elsewhere:
        return [_finding("parameters", f"{', '.join(elsewhere)}: volume keys come from {platform.namespace} only")]
    return []


def _secret(request: Request, _platform: Platform, _managed: Managed) -> list[Finding]:
    secret = _dict(request.current)
    if request.operation != "DELETE" and (
        secret.get("type") == "kubernetes.io/service-account-token"
        or "kubernetes.io/service-account.name" in _annotations(secret)
    ):
        return [_finding("type", "the operator never mints ServiceAccount tokens")]
    return []


def _cron_job(request: Request, _platform: Platform, _managed: Managed) -> list[Finding]:
    if request.operation == "DELETE":
        return []
    job = _dict(_dict(request.obj.get("spec") if isinstance(request.obj, dict) else None).get("jobTemplate"))
    pod = _dict(_dict(_dict(job.get("spec")).get("template")).get("spec"))
    account = str(pod.get("serviceAccountName") or pod.get("serviceAccount") or "")
    if not account.startswith(ACCOUNT_PREFIX) or pod.get("automountServiceAccountToken") is not False:
        return [
            _finding(
                "spec.jobTemplate.spec.template.spec.serviceAccountName",
                f"the operator's CronJobs run as their own backup ServiceAccount without a token, not {account!r}",
            )
        ]
    return []


def _custom_resource(request: Request, _platform: Platform, _managed: Managed) -> list[Finding]:
    if request.operation == "UPDATE" and _dict(request.obj).get("spec") != _dict(request.old).get("spec"):
        return [
            _finding("spec", f"the operator may not change the spec of {request.kind} objects", "edit it as a person")
        ]
    return []


_CHECKS: dict[str, Callable[[Request, Platform, Managed], list[Finding]]] = {
    "RoleBinding": _role_binding,
    "Role": _role,
    "Namespace": _namespace,
    "StorageClass": _storage_class,
    "Secret": _secret,
    "CronJob": _cron_job,
}


def _finding(path: str, message: str, fix: str = "this is refused whoever asks for it as the operator") -> Finding:
    return Finding(RULE, path, message, fix)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _name(obj: Any) -> str:
    return str(_dict(_dict(obj).get("metadata")).get("name") or "")


def _labels(obj: Any) -> dict[str, str]:
    return _dict(_dict(_dict(obj).get("metadata")).get("labels"))


def _annotations(obj: Any) -> dict[str, str]:
    return _dict(_dict(_dict(obj).get("metadata")).get("annotations"))


INTEGRITY_RULE = "managed-object-integrity"
CONTENT_FIELDS = ("data", "binaryData")
RESERVED_NAME_PREFIX = "iotsec-"


def protect_managed(
    user: str,
    groups: frozenset[str],
    kind: str,
    operation: str,
    obj: Any,
    old: Any,
    platform: Platform,
    trusted_groups: frozenset[str],
) -> list[Finding]:
    """A ConfigMap iotsec wrote (trust bundle and CRLs, backup runner and audit configuration) keeps its content
    and its owner unless iotsec, its audit sink or a trusted administrator changes it: a tenant who may edit
    ConfigMaps in its namespace must not swap the CA bundle or CRL its brokers trust, even until the next resync."""
    if kind != "ConfigMap" or user in (platform.operator_user, platform.sink_user) or groups & trusted_groups:
        return []
    if operation == "CREATE":  # delete and create again: the name or the label would pass for iotsec's
        marked = _labels(obj).get(MANAGED_BY) == MANAGER
        if marked or _name(obj).startswith(RESERVED_NAME_PREFIX):
            return [
                Finding(
                    INTEGRITY_RULE,
                    "metadata.name" if not marked else "metadata.labels",
                    f"ConfigMap {_name(obj)}: names {RESERVED_NAME_PREFIX}* and the label "
                    f"{MANAGED_BY}={MANAGER} are iotsec's, not {user}'s",
                    "choose another name; iotsec makes its own ConfigMaps",
                )
            ]
        return []
    if operation != "UPDATE" or _labels(old).get(MANAGED_BY) != MANAGER:
        return []
    changed = [f for f in CONTENT_FIELDS if _dict(obj).get(f) != _dict(old).get(f)]
    disowned = _labels(obj).get(MANAGED_BY) != MANAGER
    if not changed and not disowned:
        return []  # metadata only: finalizers, owner references, annotations of other controllers
    what = ", ".join(changed) or f"the label {MANAGED_BY}"
    return [
        Finding(
            INTEGRITY_RULE,
            changed[0] if changed else "metadata.labels",
            f"ConfigMap {_name(old)} is written by iotsec: {what} may not be changed by {user}",
            "change the iotsec custom resource that produces it (or ask a platform administrator)",
        )
    ]
