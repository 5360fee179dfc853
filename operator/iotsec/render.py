"""`iotsec render`: what the operator would apply for a set of custom resources, without a cluster."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from iotsec.api.validation import InvalidResourceError, Problem, is_iotsec, parse_resource
from iotsec.desired import securitydomain as sd
from iotsec.manifests import Document


@dataclass
class Rendered:
    objects: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    invalid: list[tuple[Document, list[Problem]]] = field(default_factory=list)
    plans: list[sd.DomainPlan] = field(default_factory=list)
    edges: list[sd.Edge] = field(default_factory=list)


def render(documents: Iterable[Document]) -> Rendered:
    """Objects for every valid custom resource; Namespace objects in the input feed namespace selectors."""
    result = Rendered()
    domains, namespace_docs, pending = [], {}, set()
    for doc in documents:
        obj = doc.obj
        if isinstance(obj, dict) and obj.get("apiVersion") == "v1" and obj.get("kind") == "Namespace":
            namespace_docs[obj["metadata"]["name"]] = obj["metadata"].get("labels") or {}
        elif is_iotsec(obj):
            try:
                resource = parse_resource(obj)
            except InvalidResourceError as exc:
                result.invalid.append((doc, exc.problems))
                continue
            if resource.kind == sd.KIND:
                created = obj["metadata"].get("creationTimestamp", "")
                domains.append(sd.Domain(resource.name, resource.spec, created))  # type: ignore[arg-type]
            else:
                pending.add(resource.kind)
    domains.sort(key=lambda d: d.name)
    namespaces = _namespaces(domains, namespace_docs, result.notes)
    for plan in sd.plan_domains(domains, namespaces):
        result.plans.append(plan)
        result.objects += [_namespace_patch(ns, labels) for ns, labels in plan.namespace_labels.items()]
        result.objects += plan.policies
        result.notes += _plan_notes(plan)
    result.edges = sd.reachability(domains)[0]
    result.notes += [f"{kind}: not rendered yet (its reconciler arrives in a later issue)" for kind in sorted(pending)]
    return result


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
