"""`iotsec check`: the admission engine over manifest files, with the context taken from the same files."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from iotsec.admission.configmaps import summarise
from iotsec.admission.context import ConfigMapSummary, Snapshot, TenantStorage, trusted_groups_from
from iotsec.admission.defaults import CURRENT_MINOR, DEFAULT_NAMESPACE, apply_api_defaults
from iotsec.admission.engine import MalformedObjectError, decide, judges
from iotsec.admission.model import Decision
from iotsec.api.problems import InvalidResourceError, Problem, Resource, is_iotsec
from iotsec.api.terms import ESCALATING_VERBS
from iotsec.build.securitydomain import Domain
from iotsec.model.labels import ENCRYPTED_LABEL
from iotsec.model.manifests import Document, clip, shape_problem
from iotsec.model.names import ALWAYS_EXCLUDED, storage_class_name
from iotsec.model.platform import Platform

DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


def parse_resource(obj: dict[str, Any]) -> Resource:
    """api.validation.parse_resource, imported when the first custom resource arrives: a file of workloads is judged
    without pydantic, the API models, CEL or jsonschema (issue 18)."""
    from iotsec.api.validation import parse_resource as parse

    return parse(obj)


@dataclass(frozen=True)
class Checked:
    document: Document  # as written (the decision is on the object as the API server stores it)
    namespace: str | None  # judged in: the object's own, or the one it is created in
    domain: str | None
    decision: Decision

    @property
    def title(self) -> str:
        """`Kind namespace/name` with the namespace judged in."""
        metadata = self.document.obj.get("metadata") or {}
        stored = {**self.document.obj, "metadata": {**metadata, "namespace": self.namespace}}
        return replace(self.document, obj=stored).title


@dataclass
class Report:
    checked: list[Checked] = field(default_factory=list)
    invalid: list[tuple[Document, list[Problem]]] = field(default_factory=list)
    context_objects: int = 0
    not_checked: Counter[str] = field(default_factory=Counter)  # kind -> objects the webhook does not judge
    excluded: Counter[str] = field(default_factory=Counter)  # namespace -> objects the webhook never sees there

    @property
    def violations(self) -> int:
        return sum(len(c.decision.violations) for c in self.checked)

    @property
    def denied(self) -> int:
        return sum(1 for c in self.checked if not c.decision.allowed)


def check(
    documents: Iterable[Document],
    now: datetime,
    unassigned: str = "enforce",
    namespace: str = DEFAULT_NAMESPACE,
    server_minor: int = CURRENT_MINOR,
) -> Report:
    """Judge every object of a kind the webhook judges, as the API server of version 1.`server_minor` would
    store it when created in `namespace` (apply_api_defaults); iotsec custom resources, Namespaces,
    StorageClasses, ClusterRoles and ConfigMaps form the context. An object that is no Kubernetes object, or too
    malformed to judge, is reported invalid; the others are still judged."""
    report = Report()
    context_objects, candidates = [], []
    for original in documents:
        problem = shape_problem(original.obj)
        if problem is not None:
            report.invalid.append((original, [Problem("", problem)]))
            continue
        stored = apply_api_defaults(original.obj, namespace, server_minor)
        if is_iotsec(stored) or stored["kind"] in CONTEXT_KINDS:
            report.context_objects += 1
            problems = _context_problems(stored)
            if problems:
                report.invalid.append((original, problems))
                continue
            context_objects.append(stored)
        if not is_iotsec(stored):
            candidates.append((original, stored))
    snapshot = snapshot_from_objects(context_objects, unassigned, assume_named_namespaces_exist=True)
    own = operator_policies(context_objects) if any(s["kind"] == "NetworkPolicy" for _, s in candidates) else {}
    for doc, stored in candidates:
        judge_document(doc, stored, snapshot, now, report, own)
    return report


def operator_policies(
    context_objects: list[dict[str, Any]], parse: Callable[[dict[str, Any]], Resource] = parse_resource
) -> dict[tuple[str, str], Any]:
    """(namespace, name) -> spec of every NetworkPolicy the operator plans for the custom resources given: the
    webhook admits those from the operator's identity (a BackupPolicy's egress is wider than its domain), so
    `iotsec render ... | iotsec check ...` judges them as written by the operator, and nothing else is."""
    from iotsec.build.render import render  # the whole planner, only when NetworkPolicies are checked

    iotsec = [Document("<context>", index, obj) for index, obj in enumerate(context_objects) if is_iotsec(obj)]
    planned = render(iotsec, parse)
    return {
        (obj["metadata"].get("namespace", ""), obj["metadata"]["name"]): obj.get("spec")
        for obj in planned.objects
        if obj.get("kind") == "NetworkPolicy"
    }


def judge_document(
    doc: Document,
    stored: dict[str, Any],
    snapshot: Snapshot,
    now: datetime,
    report: Report,
    operator_policies: Mapping[tuple[str, str], Any],
) -> None:
    """Decide on one object as stored (`doc` as written) as the webhook would, or count its kind as not checked
    (context kinds aside)."""
    metadata = stored.get("metadata") or {}
    target = metadata.get("namespace")
    if target in (*ALWAYS_EXCLUDED, snapshot.platform.namespace):
        report.excluded[target] += 1  # the webhook's namespaceSelector leaves these namespaces out
        return
    key = (str(target or ""), str(metadata.get("name")))
    planned = stored["kind"] == "NetworkPolicy" and key in operator_policies
    user = snapshot.platform.operator_user if planned and operator_policies[key] == stored.get("spec") else ""
    context = snapshot.context(target, now, user=user)
    if not judges(stored, context):
        if stored["kind"] not in CONTEXT_KINDS:
            report.not_checked[stored["kind"]] += 1
        return
    try:
        decision = decide(stored, context)
    except MalformedObjectError as exc:
        report.invalid.append((doc, [Problem("", clip(exc))]))
        return
    report.checked.append(Checked(doc, target, context.domain.name, decision))


def _context_problems(obj: dict[str, Any]) -> list[Problem]:
    if is_iotsec(obj):
        try:
            parse_resource(obj)
        except InvalidResourceError as exc:
            return exc.problems
        return []
    if not isinstance((obj.get("metadata") or {}).get("name"), str):
        return [Problem("metadata.name", f"a {obj['kind']} needs a name")]
    return []


# The kinds the policy context is built from, as read from the API server (the webhook's watches, the background
# scan's lists): (apiVersion, kind), the first served version of each kind.
CONTEXT_SOURCES: tuple[tuple[str, str], ...] = (
    ("iotsec.io/v1alpha1", "SecurityDomain"),
    ("iotsec.io/v1alpha1", "AuditPolicy"),
    ("iotsec.io/v1alpha1", "TenantIsolation"),
    ("iotsec.io/v1alpha1", "BackupPolicy"),
    ("v1", "Namespace"),
    ("storage.k8s.io/v1", "StorageClass"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
)


CONTEXT_KINDS = ("Namespace", "StorageClass", "ClusterRole", "ConfigMap")  # a ConfigMap is also checked itself


def snapshot_from_objects(
    objects: Iterable[dict[str, Any]],
    unassigned: str = "enforce",
    assume_named_namespaces_exist: bool = False,
    platform: Platform | None = None,
    parse: Callable[[dict[str, Any]], Resource] = parse_resource,
    config_maps: Mapping[tuple[str, str], ConfigMapSummary] | None = None,
) -> Snapshot:
    """The policy context from SecurityDomains, AuditPolicies, TenantIsolations, Namespaces, StorageClasses,
    ClusterRoles and ConfigMaps, whether they come from files (iotsec check) or from the API server (the webhook).
    `parse` validates a custom resource (the webhook passes one that remembers unchanged objects); `config_maps`,
    when given, are the ConfigMaps' summaries kept elsewhere (the webhook's watch), else they are summarised here."""
    domains, audit_specs = [], []
    leaving: set[str] = set()
    namespaces: dict[str, dict[str, str]] = {}
    encrypted, default_class, escalating = set(), None, {"cluster-admin"}
    tenants: dict[str, TenantStorage] = {}
    tenant_claims: dict[str, tuple[str, str, str]] = {}
    backup_namespaces: set[str] = set()
    summaries: dict[tuple[str, str], ConfigMapSummary] = {}
    for obj in objects:
        kind, meta = obj.get("kind"), obj.get("metadata") or {}
        if is_iotsec(obj):
            try:
                resource = parse(obj)
            except InvalidResourceError:
                continue  # an invalid custom resource contributes nothing; it reports its own problems
            if resource.kind == "SecurityDomain":
                domains.append(Domain(resource.name, resource.spec, _created(obj)))  # type: ignore[arg-type]
                if meta.get("deletionTimestamp"):
                    leaving.add(resource.name)
            elif resource.kind == "AuditPolicy":
                audit_specs.append(resource.spec)
            elif resource.kind == "TenantIsolation":
                encrypted |= _tenant_storage_classes(resource.spec)
                tenants.update({ns: t for ns, t in _tenant_storage(resource.spec).items() if ns not in tenants})
                spec = resource.spec
                for namespace in spec.namespaces:  # type: ignore[attr-defined]
                    claim = (spec.tenant_id, spec.security_domain, resource.name)  # type: ignore[attr-defined]
                    tenant_claims.setdefault(namespace, claim)
            elif resource.kind == "BackupPolicy" and meta.get("namespace"):
                backup_namespaces.add(meta["namespace"])
        elif kind == "Namespace" and not meta.get("deletionTimestamp"):
            namespaces[meta["name"]] = meta.get("labels") or {}
        elif kind == "StorageClass":
            if (meta.get("labels") or {}).get(ENCRYPTED_LABEL) == "true":
                encrypted.add(meta["name"])
            if (meta.get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true":
                default_class = meta["name"]
        elif kind == "ClusterRole" and _escalates(obj):
            escalating.add(meta["name"])
        elif kind == "ConfigMap" and config_maps is None:
            summaries.update(_config_map_summary(obj))
    return Snapshot(
        domains=domains,
        leaving_domains=frozenset(leaving),
        namespaces=namespaces,
        trusted_groups=trusted_groups_from(audit_specs),
        encrypted_storage_classes=frozenset(encrypted),
        default_storage_class=default_class,
        escalating_cluster_roles=frozenset(escalating),
        unassigned_enforcement=unassigned,
        assume_named_namespaces_exist=assume_named_namespaces_exist,
        tenants=tenants,
        tenant_claims=tenant_claims,
        backup_namespaces=frozenset(backup_namespaces),
        platform=platform or Platform(),
        config_maps=summaries if config_maps is None else config_maps,
    )


def _created(obj: dict[str, Any]) -> str:
    metadata: dict[str, Any] = obj.get("metadata") or {}
    created: str = metadata.get("creationTimestamp", "")
    return created


def _tenant_storage(spec: Any) -> dict[str, TenantStorage]:
    """Each tenant namespace's data classes (a tenant without a storage section declares none: anything goes)."""
    storage = getattr(spec, "storage", None)
    if storage is None:
        return {}
    policy = TenantStorage(spec.tenant_id, tuple(storage.data_classes), storage.default_data_class)
    return dict.fromkeys(spec.namespaces, policy)


def _tenant_storage_classes(spec: Any) -> set[str]:
    """The shared encrypted StorageClass a tenant names (its own class arrives with the tenant reconciler)."""
    storage = getattr(spec, "storage", None)
    if storage is None:
        return set()
    if storage.provisioner:
        return {storage_class_name(spec.tenant_id)}  # the per-tenant class the reconciler creates
    return {storage.storage_class_name} if storage.storage_class_name else set()


def _escalates(role: dict[str, Any]) -> bool:
    rules = [rule for rule in role.get("rules") or () if isinstance(rule, dict)]
    return any(set(ESCALATING_VERBS) & set(rule.get("verbs") or ()) for rule in rules)


def _config_map_summary(obj: dict[str, Any]) -> dict[tuple[str, str], ConfigMapSummary]:
    """{(namespace or "", name): summary} of a ConfigMap; nothing for one too malformed to summarise (its own
    check reports it)."""
    meta = obj.get("metadata") or {}
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        return {}
    try:
        summary = summarise(obj)
    except (AttributeError, TypeError, ValueError):
        return {}
    return {(str(meta.get("namespace") or ""), meta["name"]): summary}
