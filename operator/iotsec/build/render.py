"""`iotsec render`: what the operator would apply for a set of custom resources, without a cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from iotsec.api.validation import InvalidResourceError, Problem, Resource, is_iotsec, parse_resource
from iotsec.build import audit, backup, tenant
from iotsec.build import securitydomain as sd
from iotsec.model.manifests import Document
from iotsec.model.platform import Image, Platform
from iotsec.pki import certs


@dataclass
class Rendered:
    objects: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    invalid: list[tuple[Document, list[Problem]]] = field(default_factory=list)
    plans: list[sd.DomainPlan] = field(default_factory=list)
    edges: list[sd.Edge] = field(default_factory=list)


PLATFORM = Platform()  # a release named iotsec in iotsec-system, its sinks in iotsec-audit (the chart's defaults)


def render(documents: Iterable[Document], parse: Callable[[dict[str, Any]], Resource] = parse_resource) -> Rendered:
    """Objects for every valid custom resource; Namespace objects in the input feed namespace selectors. `parse`:
    parse_resource, or a caller's cache of it (the report has parsed the same objects already)."""
    result = Rendered()
    domains, namespace_docs, pending = [], {}, set()
    tenants: list[tuple[str, Any]] = []
    backups: list[tuple[str, str, Any]] = []
    audits: list[tuple[str, Any]] = []
    for doc in documents:
        obj = doc.obj
        if isinstance(obj, dict) and obj.get("apiVersion") == "v1" and obj.get("kind") == "Namespace":
            namespace_docs[obj["metadata"]["name"]] = obj["metadata"].get("labels") or {}
        elif is_iotsec(obj):
            try:
                resource = parse(obj)
            except InvalidResourceError as exc:
                result.invalid.append((doc, exc.problems))
                continue
            if resource.kind == sd.KIND:
                created = obj["metadata"].get("creationTimestamp", "")
                domains.append(sd.Domain(resource.name, resource.spec, created))  # type: ignore[arg-type]
            elif resource.kind == tenant.KIND:
                tenants.append((resource.name, resource.spec))
            elif resource.kind == backup.KIND:
                backups.append((resource.name, resource.namespace or "default", resource.spec))
            elif resource.kind == audit.KIND:
                audits.append((resource.name, resource.spec))
            else:
                pending.add(resource.kind)
    domains.sort(key=lambda d: d.name)
    # As in the cluster: tenants label their namespaces first (tenant, domain claim), and domains are planned on
    # those labels, so a tenant's namespaces get its tenant-scoped policies here exactly as the operator applies them.
    tenant_plans = [(name, tenant.plan_tenant(name, spec, namespace_docs)) for name, spec in sorted(tenants)]
    for _, tenant_plan in tenant_plans:
        for obj in tenant_plan.objects:
            if obj["kind"] == "Namespace":
                labels = obj["metadata"].get("labels") or {}
                namespace_docs[obj["metadata"]["name"]] = {**namespace_docs.get(obj["metadata"]["name"], {}), **labels}
    namespaces = _namespaces(domains, namespace_docs, result.notes)
    for plan in sd.plan_domains(domains, namespaces):
        result.plans.append(plan)
        result.objects += [_namespace_patch(ns, labels) for ns, labels in plan.namespace_labels.items()]
        result.objects += plan.policies
        result.notes += _plan_notes(plan)
    result.edges = sd.reachability(domains)[0]
    for name, tenant_plan in tenant_plans:
        result.objects += tenant_plan.objects
        result.notes += [f"TenantIsolation {name}: {c}" for c in tenant_plan.conflicts]
    for name, namespace, spec in sorted(backups, key=lambda b: (b[1], b[0])):
        result.objects += backup.plan_backup(name, namespace, spec, spec.pvc_names or ()).objects
        if spec.pvc_selector:
            result.notes.append(
                f"BackupPolicy {namespace}/{name}: pvcSelector resolves against the cluster's claims;"
                " only pvcNames are rendered"
            )
    for name, spec in sorted(audits, key=lambda a: a[0]):
        result.objects += audit.desired_objects(
            name,
            spec,
            namespace=PLATFORM.audit_namespace,
            image=Image().reference,
            operator_users=[PLATFORM.operator_user],
            sink_service_account=PLATFORM.sink_service_account,
        )
        result.objects += audit_secrets(name, PLATFORM.audit_namespace, spec.sink.authentication)
        result.notes.append(f"AuditPolicy {name}: rendered for the audit namespace {PLATFORM.audit_namespace}")
    if tenants or backups or audits:
        result.notes.append("Secrets are rendered with placeholders: key material is generated by the operator only")
    result.notes += [f"{kind}: not rendered (no builder for this kind)" for kind in sorted(pending)]
    return result


SINK_TLS_KEYS = (certs.KEY_CA_CERT, certs.KEY_CA_KEY, certs.KEY_TLS_CERT, certs.KEY_TLS_KEY, certs.KEY_CA_BUNDLE)
CLIENT_KEYS = {
    "clientCertificate": (certs.KEY_CA_CERT, certs.KEY_CA_KEY, certs.KEY_CLIENT_CERT, certs.KEY_CLIENT_KEY),
    "bearerToken": ("token",),
}


def audit_secrets(name: str, namespace: str, authentication: str) -> list[dict[str, Any]]:
    """The Secrets the operator issues for an AuditPolicy's sink (serving TLS, the API server's client identity,
    the store's signing key), under their data keys, each with the placeholder: never key material."""
    made = [
        audit.credential_secret(name, audit.tls_secret_name(name), namespace, {}),
        audit.credential_secret(name, audit.client_secret_name(name), namespace, {}),
        audit.signing_key_secret(name, namespace, b""),
    ]
    keys = (SINK_TLS_KEYS, CLIENT_KEYS[authentication], (audit.SIGNING_KEY_FIELD,))
    for secret, names in zip(made, keys, strict=True):
        del secret["data"]
        secret["stringData"] = dict.fromkeys(names, tenant.PLACEHOLDER)
    return made


def _namespaces(domains: list[sd.Domain], given: dict[str, dict[str, str]], notes: list[str]) -> list[sd.NamespaceInfo]:
    named = {ns for d in domains for ns in d.spec.namespaces or ()}
    assumed = sorted(named - given.keys())
    if assumed:
        notes.append(f"assuming these named namespaces exist (no Namespace object given): {', '.join(assumed)}")
    if any(d.spec.namespace_selector for d in domains) and not given:
        notes.append("namespaceSelector matches only Namespace objects in the input; none were given")
    return [sd.NamespaceInfo(name, labels) for name, labels in given.items()] + [
        sd.NamespaceInfo(name) for name in assumed
    ]


def _namespace_patch(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _plan_notes(plan: sd.DomainPlan) -> list[str]:
    prefix = f"SecurityDomain {plan.domain}:"
    notes = [f"{prefix} {c}" for c in plan.conflicts]
    notes += [f"{prefix} peer domain {p} is not among the inputs" for p in plan.missing_peers]
    notes += [f"{prefix} reserved namespace {ns} left alone" for ns in plan.reserved_namespaces]
    notes += [f"{prefix} rule dropped: {d}" for d in plan.dropped_rules]
    notes += [f"{prefix} half-open: {h}" for h in plan.half_open]
    return notes


def summary(result: Rendered) -> str:
    """A human summary: members per domain and the effective reachability matrix."""
    lines = ["Security domains:"]
    for plan in result.plans:
        lines.append(f"  {plan.domain:<20} {len(plan.policies):>3} policies  members: {', '.join(plan.members) or '-'}")
    lines.append("Reachability (source -> target: ports; both sides' rules must agree):")
    width = max((len(e.source) for e in result.edges), default=10)
    for edge in result.edges:
        lines.append(f"  {edge.source:<{width}} -> {edge.target}: {', '.join(edge.ports) or 'all ports'}")
    return "\n".join(lines) + "\n"
