"""`iotsec check`: the admission engine over manifest files, with the context taken from the same files."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from iotsec.api.validation import InvalidResourceError, Problem, is_iotsec, parse_resource
from iotsec.desired.securitydomain import Domain
from iotsec.manifests import Document
from iotsec.policy.context import Snapshot, trusted_groups_from
from iotsec.policy.engine import decide
from iotsec.policy.model import Decision

ENCRYPTED_LABEL = "iotsec.io/encrypted"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
ESCALATING_VERBS = frozenset({"escalate", "bind", "impersonate", "*"})


@dataclass(frozen=True)
class Checked:
    document: Document
    namespace: str | None
    domain: str | None
    decision: Decision


@dataclass
class Report:
    checked: list[Checked] = field(default_factory=list)
    invalid: list[tuple[Document, list[Problem]]] = field(default_factory=list)
    context_objects: int = 0

    @property
    def violations(self) -> int:
        return sum(len(c.decision.violations) for c in self.checked)


def check(documents: Iterable[Document], now: datetime, unassigned: str = "enforce") -> Report:
    """Check every workload object; iotsec custom resources, Namespaces and StorageClasses form the context."""
    report = Report()
    workloads, domains, audit_specs = [], [], []
    namespaces: dict[str, dict[str, str]] = {}
    encrypted, default_class, escalating = set(), None, {"cluster-admin"}
    for doc in documents:
        obj = doc.obj
        if not isinstance(obj, dict):
            continue
        kind = obj.get("kind")
        if is_iotsec(obj):
            report.context_objects += 1
            try:
                resource = parse_resource(obj)
            except InvalidResourceError as exc:
                report.invalid.append((doc, exc.problems))
                continue
            if resource.kind == "SecurityDomain":
                domains.append(Domain(resource.name, resource.spec, _created(obj)))  # type: ignore[arg-type]
            elif resource.kind == "AuditPolicy":
                audit_specs.append(resource.spec)
            elif resource.kind == "TenantIsolation":
                encrypted |= _tenant_storage_classes(resource.spec)
        elif kind == "Namespace":
            namespaces[obj["metadata"]["name"]] = obj["metadata"].get("labels") or {}
        elif kind == "StorageClass":
            meta = obj.get("metadata") or {}
            if (meta.get("labels") or {}).get(ENCRYPTED_LABEL) == "true":
                encrypted.add(meta["name"])
            if (meta.get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true":
                default_class = meta["name"]
        else:
            if kind == "ClusterRole" and _escalates(obj):
                escalating.add(obj["metadata"]["name"])
            workloads.append(doc)
    snapshot = Snapshot(
        domains=domains,
        namespaces=namespaces,
        trusted_groups=trusted_groups_from(audit_specs),
        encrypted_storage_classes=frozenset(encrypted),
        default_storage_class=default_class,
        escalating_cluster_roles=frozenset(escalating),
        unassigned_enforcement=unassigned,
        assume_named_namespaces_exist=True,
    )
    for doc in workloads:
        namespace = (doc.obj.get("metadata") or {}).get("namespace")
        context = snapshot.context(namespace, now)
        report.checked.append(Checked(doc, namespace, context.domain.name, decide(doc.obj, context)))
    return report


def _created(obj: dict[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("creationTimestamp", "")


def _tenant_storage_classes(spec: Any) -> set[str]:
    """The shared encrypted StorageClass a tenant names (its own class arrives with the tenant reconciler)."""
    storage = getattr(spec, "storage", None)
    return {storage.storage_class_name} if storage and storage.storage_class_name else set()


def _escalates(role: dict[str, Any]) -> bool:
    rules = [rule for rule in role.get("rules") or () if isinstance(rule, dict)]
    return any(ESCALATING_VERBS & set(rule.get("verbs") or ()) for rule in rules)
