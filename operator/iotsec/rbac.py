"""The permissions iotsec's processes need, each with its reason: the one table the chart's roles come from.

A test renders the chart and fails when it grants more or less than this table; the live tier runs the
operator with exactly these permissions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WEBHOOK_CONFIGURATION = "iotsec"


@dataclass(frozen=True)
class Permission:
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    reason: str
    resource_names: tuple[str, ...] = ()

    def rule(self) -> dict[str, Any]:
        rule: dict[str, Any] = {
            "apiGroups": list(self.api_groups),
            "resources": list(self.resources),
            "verbs": list(self.verbs),
        }
        if self.resource_names:
            rule["resourceNames"] = list(self.resource_names)
        return rule


OPERATOR: tuple[Permission, ...] = (
    Permission(
        ("iotsec.io",),
        ("securitydomains", "tenantisolations", "backuppolicies", "auditpolicies"),
        ("get", "list", "watch", "patch"),
        "watch the custom resources; patch for kopf's finalizer and progress annotations",
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
        "domain membership and labels; tenant namespaces are created or adopted; Shred deletes them",
    ),
    Permission(
        ("networking.k8s.io",),
        ("networkpolicies",),
        ("get", "list", "watch", "create", "patch", "delete"),
        "the SecurityDomain policies: applied, watched for deletion, pruned",
    ),
    Permission(("", "events.k8s.io"), ("events",), ("create", "patch"), "events on the custom resources"),
    Permission(
        ("",),
        ("resourcequotas", "limitranges", "serviceaccounts", "configmaps"),
        ("get", "list", "create", "patch", "delete"),
        "tenant bounds, application identities, device trust bundles and registry; pruned when removed",
    ),
    Permission(
        ("",),
        ("secrets",),
        ("get", "create", "patch", "delete"),
        "key material (application keys, device CA, volume keys, webhook TLS) by name only: never list",
    ),
    Permission(
        ("rbac.authorization.k8s.io",),
        ("roles", "rolebindings"),
        ("get", "list", "create", "patch", "delete"),
        "tenant user and application classes",
    ),
    Permission(
        ("rbac.authorization.k8s.io",),
        ("roles",),
        ("escalate", "bind"),
        "class Roles carry rules the operator itself does not hold; the API schema refuses escalate, bind, "
        "impersonate and * inside them, so no tenant can be given RBAC-editing rights",
    ),
    Permission(
        ("storage.k8s.io",),
        ("storageclasses",),
        ("get", "list", "create", "patch", "delete"),
        "per-tenant encrypted StorageClasses",
    ),
    Permission(
        ("batch",),
        ("cronjobs",),
        ("get", "list", "create", "patch", "delete"),
        "backup, verify and restore-drill schedules; pruned when disabled",
    ),
    Permission(
        ("batch",),
        ("jobs",),
        ("get", "list", "watch"),
        "outcomes of the backup Jobs the CronJobs start (the operator never runs them itself)",
    ),
    Permission(
        ("",),
        ("pods",),
        ("list",),
        "the runner's result in a backup pod's termination message",
    ),
    Permission(
        ("",),
        ("persistentvolumeclaims",),
        ("get", "list", "create", "patch"),
        "claims a BackupPolicy selects; the audit store claim is created and resized, never deleted: the audit "
        "trail outlives its AuditPolicy",
    ),
    Permission(
        ("admissionregistration.k8s.io",),
        ("validatingwebhookconfigurations",),
        ("get", "patch"),
        "inject the CA bundle into iotsec's own configuration only",
        (WEBHOOK_CONFIGURATION,),
    ),
)

# The operator in its own (the release) namespace only: the audit sinks it runs there.
OPERATOR_NAMESPACE: tuple[Permission, ...] = (
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
)

WEBHOOK: tuple[Permission, ...] = (
    Permission(
        ("iotsec.io",),
        ("securitydomains", "tenantisolations", "auditpolicies"),
        ("list",),
        "the domains, tenants' data classes and trusted admin groups decisions depend on",
    ),
    Permission(("",), ("namespaces",), ("list",), "which domain each namespace belongs to"),
    Permission(("storage.k8s.io",), ("storageclasses",), ("list",), "which StorageClasses are encrypted"),
    Permission(
        ("rbac.authorization.k8s.io",),
        ("clusterroles",),
        ("list",),
        "which ClusterRoles escalate, for the trusted-admin-binding rule",
    ),
)


# The audit sink (`iotsec audit serve`, one Deployment per AuditPolicy in the release namespace): a ClusterRole for
# its cluster-scoped AuditPolicy and the events about it, a Role in the release namespace for the rest.
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

AUDIT_SINK_NAMESPACE: tuple[Permission, ...] = (
    Permission(
        ("",),
        ("configmaps",),
        ("get", "patch"),
        "write the nonce of the pipeline canary ConfigMap the operator created (server-side apply)",
    ),
    Permission(
        ("",),
        ("secrets",),
        ("get", "create", "patch"),
        "the sink's segment-signing key: created once (server-side apply), read at start, by name only: never list",
    ),
)


def cluster_role_rules(permissions: tuple[Permission, ...]) -> list[dict[str, Any]]:
    return [p.rule() for p in permissions]


def rules_file(permissions: tuple[Permission, ...]) -> str:
    """The rules as YAML with each reason as a comment, for the chart's files/ folder."""
    lines = ["# Generated by `iotsec rbac --write`; the table lives in operator/iotsec/rbac.py."]
    for permission in permissions:
        lines.append(f"# {permission.reason}")
        lines.append(f"- apiGroups: {_flow(permission.api_groups)}")
        lines.append(f"  resources: {_flow(permission.resources)}")
        lines.append(f"  verbs: {_flow(permission.verbs)}")
        if permission.resource_names:
            lines.append(f"  resourceNames: {_flow(permission.resource_names)}")
    return "\n".join(lines) + "\n"


def _flow(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"
