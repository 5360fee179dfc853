"""The permissions iotsec's processes need, each with its reason: the one table the chart's roles come from.

A test renders the chart and fails when it grants more or less than this table; the live tier runs the
operator with exactly these permissions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iotsec.model.rbac import policy_rule
from iotsec.model.workloads import BUILT_IN

WEBHOOK_CONFIGURATION = "iotsec"


@dataclass(frozen=True)
class Permission:
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    reason: str
    resource_names: tuple[str, ...] = ()

    def rule(self) -> dict[str, Any]:
        return policy_rule(self.api_groups, self.resources, self.verbs, self.resource_names)


RELEASE = "{release}"  # stands for the Helm release name in resource names; the chart fills it in (tpl)
CONFINED = "confined by the platform.iotsec.io webhook and, on servers >= 1.30, the chart's ValidatingAdmissionPolicy"
READ = ("get", "list", "watch")


def _scanned_resources() -> dict[str, tuple[str, ...]]:
    """Group -> resources the background scan lists: the pod-spec table's and the objects admission checks."""
    found: dict[str, list[str]] = {}
    for carrier in BUILT_IN:
        found.setdefault(carrier.group, []).append(carrier.resource)
    for group, resources in SCANNED_OBJECTS.items():
        found.setdefault(group, []).extend(resources)
    return {group: tuple(sorted(set(resources))) for group, resources in found.items()}


SCANNED_OBJECTS = {
    "": ("services", "persistentvolumeclaims", "configmaps"),
    "networking.k8s.io": ("ingresses", "networkpolicies"),
    "rbac.authorization.k8s.io": ("rolebindings", "clusterrolebindings", "clusterroles"),
    "storage.k8s.io": ("storageclasses",),
}
SCANNED_RESOURCES = _scanned_resources()
WRITE = ("get", "list", "create", "patch", "delete")

OPERATOR: tuple[Permission, ...] = (
    Permission(
        ("iotsec.io",),
        ("securitydomains", "tenantisolations", "backuppolicies", "auditpolicies"),
        ("get", "list", "watch", "patch"),
        "watch the custom resources; patch for kopf's finalizer and progress annotations (a spec change by the "
        f"operator is refused: {CONFINED})",
    ),
    Permission(
        ("iotsec.io",),
        ("securitydomains/status", "tenantisolations/status", "backuppolicies/status", "auditpolicies/status"),
        ("patch",),
        "write status conditions",
    ),
    Permission(
        ("apiextensions.k8s.io",),
        ("customresourcedefinitions",),
        ("list", "watch"),
        "kopf discovers the custom resources it serves",
    ),
    Permission(
        ("",),
        ("namespaces",),
        ("get", "list", "watch", "create", "patch", "delete"),
        "domain membership and tenant labels; tenant namespaces are created; Shred deletes those a tenant made. "
        f"Never a reserved namespace, only iotsec's labels, delete only what a tenant made: {CONFINED}",
    ),
    Permission(("", "events.k8s.io"), ("events",), ("create", "patch"), "events on the custom resources"),
    Permission(
        ("",),
        ("configmaps", "serviceaccounts", "resourcequotas", "limitranges", "persistentvolumeclaims", "pods"),
        ("list", "watch"),
        "read only: prune finds its children by label across namespaces; backup pods' termination messages; "
        "writes come from the namespace grant below",
    ),
    Permission(
        ("rbac.authorization.k8s.io",),
        ("roles", "rolebindings"),
        ("list", "watch"),
        "read only: prune finds the tenant classes' Roles and bindings by label across namespaces",
    ),
    Permission(
        ("networking.k8s.io",),
        ("networkpolicies",),
        READ,
        "read only: the SecurityDomain policies are watched for deletion and found for pruning",
    ),
    Permission(("batch",), ("cronjobs", "jobs"), READ, "read only: outcomes of the backup Jobs the CronJobs start"),
    Permission(
        ("rbac.authorization.k8s.io",),
        ("rolebindings",),
        ("create",),
        "the first write in a namespace iotsec manages creates the operator's grant there (a RoleBinding to "
        "<release>-operator-namespace); every other write comes through that grant. Only in managed namespaces, "
        f"never a reserved one: {CONFINED}",
    ),
    Permission(
        ("rbac.authorization.k8s.io",),
        ("clusterroles",),
        ("bind",),
        "bind exactly the ClusterRoles the chart ships: the operator's namespace grant and the built-in tenant "
        "classes (which carry rules the operator does not hold). No escalate anywhere: a custom class Role can "
        "grant only what the operator itself holds in that namespace",
        (
            f"{RELEASE}-operator-namespace",
            f"{RELEASE}-tenant-admin",
            f"{RELEASE}-tenant-operator",
            f"{RELEASE}-tenant-viewer",
        ),
    ),
    Permission(
        ("storage.k8s.io",),
        ("storageclasses",),
        ("get", "list", "watch", "create", "patch", "delete"),
        "per-tenant encrypted StorageClasses",
    ),
    *(
        Permission(
            (group,),
            resources,
            ("list",),
            "read only, for the background scan (iotsec.admission.scan): every kind admission judges is listed "
            "cluster-wide and judged again, periodically and when a domain changes",
        )
        for group, resources in sorted(SCANNED_RESOURCES.items())
    ),
    Permission(
        ("wgpolicyk8s.io",),
        ("policyreports", "clusterpolicyreports"),
        ("list",),
        "the background scan finds its own reports (and leaves others' alone)",
    ),
    Permission(
        ("wgpolicyk8s.io",),
        ("policyreports", "clusterpolicyreports"),
        ("get", "create", "patch", "delete"),
        "the background scan's findings, written by server-side apply (a create by apply is authorized with the "
        "name, so create too is limited to it): only reports named iotsec-scan, and of those only the ones "
        "labelled as iotsec's are ever changed or deleted",
        ("iotsec-scan",),
    ),
)

# Only when the operator keeps the webhook's certificates (certificates.provider: operator); with cert-manager the
# operator cannot touch any webhook configuration at all.
OPERATOR_WEBHOOK_CA: tuple[Permission, ...] = (
    Permission(
        ("admissionregistration.k8s.io",),
        ("validatingwebhookconfigurations",),
        ("get", "patch"),
        "inject the CA bundle into iotsec's own configuration only, and add the webhook for SecurityDomains' "
        "workloadKinds to it (domainkinds.iotsec.io)",
        (WEBHOOK_CONFIGURATION,),
    ),
    Permission(
        ("admissionregistration.k8s.io",),
        ("validatingwebhookconfigurations",),
        ("list", "watch"),
        "watch iotsec's configuration to inject the CA bundle within seconds of its creation (list and watch "
        "cannot be limited by name; read only)",
    ),
)

# The operator's rights inside each namespace it manages (tenant namespaces, domain members, BackupPolicy
# namespaces): a ClusterRole the operator binds there with a RoleBinding, never cluster-wide.
OPERATOR_NAMESPACED: tuple[Permission, ...] = (
    Permission(
        ("",),
        ("secrets",),
        ("get", "create", "patch", "delete"),
        "application keys and backup passwords by name only: never list",
    ),
    Permission(
        ("",),
        ("configmaps", "serviceaccounts", "resourcequotas", "limitranges"),
        WRITE,
        "tenant bounds, application identities, device trust bundles, backup runner configuration; pruned",
    ),
    Permission(
        ("rbac.authorization.k8s.io",),
        ("roles", "rolebindings"),
        WRITE,
        "tenant user and application classes; pruned when removed",
    ),
    Permission(
        ("networking.k8s.io",),
        ("networkpolicies",),
        WRITE,
        "the SecurityDomain policies: applied, pruned",
    ),
    Permission(
        ("batch",),
        ("cronjobs", "jobs"),
        WRITE,
        "backup, verify and restore-drill schedules, pruned when disabled; each policy's one-off repository init Job",
    ),
    Permission(
        ("",),
        ("persistentvolumeclaims",),
        ("get", "list", "create", "patch"),
        "claims a BackupPolicy selects; never deleted",
    ),
    Permission(
        ("", "apps", "batch", "networking.k8s.io"),
        (
            "pods",
            "pods/log",
            "services",
            "endpoints",
            "events",
            "deployments",
            "statefulsets",
            "daemonsets",
            "replicasets",
            "jobs",
        ),
        READ,
        "read only, so custom and application class Roles may delegate reading workloads (RBAC lets a Role "
        "grant only what its creator holds; iotsec has no escalate)",
    ),
)

# The operator in its own (the release) namespace only, where the admission webhook runs: key material and device
# registries, nothing that runs, routes or binds (no Deployments, Services, NetworkPolicies, Roles, bindings or
# claims): a stolen operator token can neither start a pod as the webhook's ServiceAccount nor take the webhook down.
OPERATOR_NAMESPACE: tuple[Permission, ...] = (
    Permission(
        ("",),
        ("secrets",),
        ("get", "create", "patch", "delete"),
        "platform keys out of tenants' reach: device CAs, volume keys, webhook TLS, by name only: never list",
    ),
    Permission(
        ("",),
        ("configmaps",),
        WRITE,
        "the tenants' device registries",
    ),
    Permission(
        ("coordination.k8s.io",),
        ("leases",),
        ("get", "update"),
        "leader election among the operator's replicas: their one Lease, by name only",
        (f"{RELEASE}-operator",),
    ),
    Permission(
        ("coordination.k8s.io",),
        ("leases",),
        ("create",),
        "leader election: the first replica creates the Lease (RBAC cannot limit create by name)",
    ),
)

# The operator in the audit namespace (<release>-audit) only: the audit sinks, one set per AuditPolicy.
OPERATOR_AUDIT_NAMESPACE: tuple[Permission, ...] = (
    Permission(
        ("apps",),
        ("deployments",),
        ("get", "list", "create", "patch", "delete"),
        "one audit sink Deployment per AuditPolicy; pruned when the policy no longer wants it",
    ),
    Permission(
        ("",),
        ("services",),
        ("get", "list", "create", "patch", "delete"),
        "the audit sink's Service the API server's audit webhook posts to; pruned like the Deployment",
    ),
    Permission(
        ("",),
        ("secrets",),
        ("get", "create", "patch", "delete"),
        "the audit sinks' signing keys, serving certificates and API server credentials, by name only: never list",
    ),
    Permission(
        ("",),
        ("configmaps",),
        WRITE,
        "audit policy and canary ConfigMaps; pruned like the Deployment",
    ),
    Permission(
        ("rbac.authorization.k8s.io",),
        ("roles", "rolebindings"),
        WRITE,
        "each audit sink's grant to patch its own canary ConfigMap (by resourceName)",
    ),
    Permission(
        ("networking.k8s.io",),
        ("networkpolicies",),
        WRITE,
        "each audit sink's NetworkPolicy; pruned like the Deployment",
    ),
    Permission(
        ("",),
        ("persistentvolumeclaims",),
        ("get", "list", "create", "patch"),
        "the audit store claim: created and resized, never deleted (the trail outlives its AuditPolicy)",
    ),
    Permission(
        ("batch",),
        ("cronjobs", "jobs"),
        WRITE,
        "the BackupPolicy of the audit store (X1369-9.6.4-3): its schedules and its repository init Job",
    ),
    Permission(
        ("",),
        ("serviceaccounts",),
        WRITE,
        "the audit store BackupPolicy's runner account (no token, no rights)",
    ),
)


# The webhook lists each kind once, then watches it (servers.webhook.cluster): no get, nothing written.
WEBHOOK: tuple[Permission, ...] = (
    Permission(
        ("iotsec.io",),
        ("securitydomains", "tenantisolations", "auditpolicies", "backuppolicies"),
        ("list", "watch"),
        "the domains, tenants' data classes and trusted admin groups decisions depend on; where iotsec manages "
        "(tenant, domain and BackupPolicy namespaces), for the operator's fence",
    ),
    Permission(("",), ("namespaces",), ("list", "watch"), "which domain each namespace belongs to"),
    Permission(("storage.k8s.io",), ("storageclasses",), ("list", "watch"), "which StorageClasses are encrypted"),
    Permission(
        ("",),
        ("configmaps",),
        ("list", "watch"),
        "which ConfigMap keys hold a literal secret, for pods taking their environment from them (key names kept, "
        "never values)",
    ),
    Permission(
        ("rbac.authorization.k8s.io",),
        ("clusterroles",),
        ("list", "watch"),
        "which ClusterRoles escalate, for the trusted-admin-binding rule",
    ),
)


# The audit sink (`iotsec audit serve`, one Deployment per AuditPolicy in the audit namespace): a ClusterRole for
# its cluster-scoped AuditPolicy and the events about it. Nothing namespace-wide anywhere: its one namespaced
# right, get and patch on its own canary ConfigMap by name, is a Role the operator creates per AuditPolicy
# (desired.audit), and its signing key is a Secret volume the operator mounts read-only.
AUDIT_SINK: tuple[Permission, ...] = (
    Permission(
        ("iotsec.io",),
        ("auditpolicies",),
        ("get",),
        "the sink reads its AuditPolicy each tick: storage limits, retention, canary timing, anomaly rules",
    ),
    Permission(
        ("iotsec.io",),
        ("backuppolicies",),
        ("get",),
        "the referenced BackupPolicy's last success: only backed-up segments fall to retention",
    ),
    Permission(
        ("iotsec.io",),
        ("auditpolicies/status",),
        ("patch",),
        "store figures, anomaly hits and the AuditPipelineBroken and Storage* conditions",
    ),
    Permission(
        ("", "events.k8s.io"),
        ("events",),
        ("create", "patch"),
        "Warning events for anomalies, a broken pipeline and a filling store",
    ),
)


def cluster_role_rules(permissions: tuple[Permission, ...], release: str = "iotsec") -> list[dict[str, Any]]:
    """The rules as the chart renders them for a release of that name."""
    rules = [p.rule() for p in permissions]
    for rule in rules:
        if "resourceNames" in rule:
            rule["resourceNames"] = [n.replace(RELEASE, release) for n in rule["resourceNames"]]
    return rules


def tenant_class_rules() -> dict[str, list[dict[str, Any]]]:
    """The built-in tenant user classes the chart ships as ClusterRoles (<release>-tenant-<privilege>)."""
    from iotsec.build.tenant import privilege_rules

    return {privilege: privilege_rules(privilege) for privilege in ("admin", "operator", "viewer")}


def rule_files() -> dict[str, str]:
    """The chart's files/ folder: every generated rules file by name."""
    files = {
        "operator-rules.yaml": rules_file(OPERATOR),
        "operator-webhook-ca-rules.yaml": rules_file(OPERATOR_WEBHOOK_CA),
        "operator-namespaced-rules.yaml": rules_file(OPERATOR_NAMESPACED),
        "operator-namespace-rules.yaml": rules_file(OPERATOR_NAMESPACE),
        "operator-audit-namespace-rules.yaml": rules_file(OPERATOR_AUDIT_NAMESPACE),
        "webhook-rules.yaml": rules_file(WEBHOOK),
        "audit-sink-rules.yaml": rules_file(AUDIT_SINK),
    }
    for privilege, rules in tenant_class_rules().items():
        files[f"tenant-{privilege}-rules.yaml"] = _plain_rules_file(rules, f"tenant class {privilege}")
    return files


def rules_file(permissions: tuple[Permission, ...]) -> str:
    """The rules as YAML with each reason as a comment, for the chart's files/ folder."""
    lines = ["# Generated by `iotsec rbac --write`; the table lives in operator/iotsec/build/rbac.py."]
    for permission in permissions:
        lines.append(f"# {permission.reason}")
        lines.append(f"- apiGroups: {_flow(permission.api_groups)}")
        lines.append(f"  resources: {_flow(permission.resources)}")
        lines.append(f"  verbs: {_flow(permission.verbs)}")
        if permission.resource_names:
            names = tuple(n.replace(RELEASE, "{{ .Release.Name }}") for n in permission.resource_names)
            lines.append(f"  resourceNames: {_flow(names)}")
    return "\n".join(lines) + "\n"


def _plain_rules_file(rules: list[dict[str, Any]], what: str) -> str:
    lines = [f"# Generated by `iotsec rbac --write` from iotsec.build.tenant.privilege_rules: {what}."]
    for rule in rules:
        lines.append(f"- apiGroups: {_flow(tuple(rule['apiGroups']))}")
        lines.append(f"  resources: {_flow(tuple(rule['resources']))}")
        lines.append(f"  verbs: {_flow(tuple(rule['verbs']))}")
    return "\n".join(lines) + "\n"


def _flow(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


READ_VERBS = frozenset({"get", "list", "watch"})
TABLES: tuple[tuple[str, str, tuple[Permission, ...]], ...] = (
    ("operator", "cluster", OPERATOR),
    ("operator", "cluster, when it keeps the webhook certificates", OPERATOR_WEBHOOK_CA),
    ("operator", "each namespace iotsec manages (its own RoleBinding)", OPERATOR_NAMESPACED),
    ("operator", "release namespace", OPERATOR_NAMESPACE),
    ("operator", "audit namespace", OPERATOR_AUDIT_NAMESPACE),
    ("webhook", "cluster", WEBHOOK),
    ("audit sink", "cluster", AUDIT_SINK),
)


def _confinement(permission: Permission, scope: str) -> str:
    if permission.resource_names:
        return "only " + ", ".join(f"`{n.replace(RELEASE, '<release>')}`" for n in permission.resource_names)
    if "confined by" in permission.reason:
        return "the operator fence (webhook `platform.iotsec.io`; ValidatingAdmissionPolicy on >= 1.30)"
    if set(permission.verbs) <= READ_VERBS:
        return "read only"
    if all(r.endswith("/status") for r in permission.resources):
        return "the status subresource only"
    if scope != "cluster":
        return scope
    return "—"


def markdown_table() -> str:
    """The README's RBAC table: every rule of every iotsec identity, why it is needed and what confines it."""
    lines = [
        "| identity | where | API groups | resources | verbs | why | confined by |",
        "|---|---|---|---|---|---|---|",
    ]
    for identity, scope, permissions in TABLES:
        for p in permissions:
            groups = ", ".join(f"`{g or 'core'}`" for g in p.api_groups)
            reason = p.reason.split(" (a spec change")[0].split(": confined by")[0].split(". Never a reserved")[0]
            lines.append(
                f"| {identity} | {scope} | {groups} | {', '.join(p.resources)} | {', '.join(p.verbs)} | "
                f"{reason.replace('|', '/')} | {_confinement(p, scope)} |"
            )
    return "\n".join(lines) + "\n"
