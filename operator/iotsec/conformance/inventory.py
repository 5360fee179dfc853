"""The inventory a report is judged from, and the views of it every probe shares.

Offline (`from_documents`) the objects are the documents given and `planned` is what the operator would write for
the custom resources among them (`iotsec render`), plus the background scan's PolicyReports over the documents.
Live, `iotsec.services.inventory` reads the objects from the API server. Either way `view(inventory)` resolves
namespaces to their SecurityDomain and tenant as the webhook does (admission.snapshot) and plans the desired
state with the operator's own builders (build.render), once per inventory.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from iotsec.admission import scan
from iotsec.admission.context import Snapshot
from iotsec.admission.snapshot import snapshot_from_objects
from iotsec.api.validation import InvalidResourceError, Problem, Resource, is_iotsec, parse_resource
from iotsec.build import policyreport, render
from iotsec.build.policyreport import NAME as SCAN_REPORT_NAME
from iotsec.conformance.model import Inventory, ObjectRef, Scope
from iotsec.model.labels import MANAGED_BY, MANAGER, TENANT_LABEL
from iotsec.model.manifests import Document, shape_problem

POLICY_REPORT_GROUP = "wgpolicyk8s.io"


def from_documents(documents: Iterable[Document], now: datetime, source: str = "") -> Inventory:
    """An offline inventory: the documents as objects, the operator's plan for them and the background scan's
    findings over them (PolicyReports, planned: what the operator's scan would publish)."""
    docs = [d for d in documents if shape_problem(d.obj) is None]
    objects = [d.obj for d in docs]
    planned = render.render([d for d in docs if is_iotsec(d.obj) or d.obj.get("kind") == "Namespace"]).objects
    reports = scan_reports(objects, now)
    return Inventory("files", now, objects, [*planned, *reports], source)


def scan_reports(objects: list[dict[str, Any]], now: datetime, as_written: bool = True) -> list[dict[str, Any]]:
    """The PolicyReports the background scan would publish for `objects`. `as_written`: manifests as in files
    (stored as the API server would store them, in the default namespace when they name none, and the namespaces
    domains name taken to exist, as `iotsec check`); else objects as read live."""
    result = scan.scan_manifests(objects, now) if as_written else scan.scan(objects, now)
    return policyreport.policy_reports(result, now)


@dataclass
class Invalid:
    obj: dict[str, Any]
    problems: list[Problem]

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef.of(self.obj)


@dataclass
class View:
    """What every probe needs of an inventory, computed once."""

    inventory: Inventory
    resources: list[Resource] = field(default_factory=list)
    invalid: list[Invalid] = field(default_factory=list)
    judged_again: list[dict[str, Any]] | None = None  # live: the scan's reports of the objects read (policy_reports)
    snapshot: Snapshot = field(default_factory=Snapshot)
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> Namespace object (as judged)
    members: dict[str, str] = field(default_factory=dict)  # namespace -> its SecurityDomain
    tenant_of: dict[str, str] = field(default_factory=dict)  # namespace -> its TenantIsolation's name
    desired: list[dict[str, Any]] = field(default_factory=list)  # what the operator would write (its builders)
    actual: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # (kind, ns, name) -> object
    planned_ids: frozenset[int] = frozenset()  # id() of the inventory's planned objects (held by it, so stable)
    _by_kind: dict[str, list[dict[str, Any]]] | None = None
    _planned_by_kind: dict[str, list[dict[str, Any]]] | None = None

    @property
    def offline(self) -> bool:
        return self.inventory.mode == "files"

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.resources if r.kind == kind]

    def namespace_scope(self, namespace: str) -> Scope:
        return Scope("namespace", namespace, self.members.get(namespace), self.tenant_of.get(namespace))

    def tenant_scope(self, resource: Resource) -> Scope:
        return Scope("tenant", resource.name, getattr(resource.spec, "security_domain", None), resource.name)

    def lookup(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.actual.get((kind, namespace or "", name))

    def objects_of(self, kind: str, group: str | None = None) -> list[dict[str, Any]]:
        """`inventory.of_kind(kind, group)` from an index built once (the inventory does not change any more)."""
        if self._by_kind is None:
            self._by_kind = _index(self.inventory.objects)
        found = self._by_kind.get(kind, [])
        return found if group is None else [o for o in found if _group(o) == group]

    def observed(self, kind: str, group: str | None = None) -> list[dict[str, Any]]:
        """Objects of `kind` as found: observed live; offline, the documents and the planned objects."""
        found = self.objects_of(kind, group)
        if self.offline:
            if self._planned_by_kind is None:
                self._planned_by_kind = _index(self.inventory.planned)
            planned = self._planned_by_kind.get(kind, [])
            found = found + [o for o in planned if group is None or _group(o) == group]
        return found

    def is_planned(self, obj: Mapping[str, Any]) -> bool:
        return self.offline and id(obj) in self.planned_ids

    def ref(self, obj: Mapping[str, Any]) -> ObjectRef:
        return ObjectRef.of(obj, planned=self.is_planned(obj))


def _index(objects: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj.get("kind"), []).append(obj)  # type: ignore[arg-type]
    return by_kind


_VIEWS: dict[int, tuple[weakref.ref[Inventory], View]] = {}


def view(inventory: Inventory) -> View:
    """The shared view of `inventory` (computed on first use; the inventory must not change afterwards)."""
    cached = _VIEWS.get(id(inventory))
    if cached is not None and cached[0]() is inventory:
        return cached[1]
    made = _build(inventory)
    _VIEWS[id(inventory)] = (weakref.ref(inventory, lambda _: _VIEWS.pop(id(inventory), None)), made)
    return made


def _build(inventory: Inventory) -> View:
    made = View(inventory)
    parsed: dict[int, Resource] = {}  # id() of each valid custom resource of the inventory -> its parse
    for obj in inventory.objects:
        if is_iotsec(obj):
            try:
                parsed[id(obj)] = resource = parse_resource(obj)
            except InvalidResourceError as exc:
                made.invalid.append(Invalid(obj, exc.problems))
                continue
            made.resources.append(resource)
    offline = inventory.mode == "files"
    namespaces = {_name(o): o for o in inventory.of_kind("Namespace", "") if not _meta(o).get("deletionTimestamp")}
    if offline:  # the labels the operator would put on them, over those written
        for patch in inventory.planned_of_kind("Namespace"):
            name = _name(patch)
            base = namespaces.get(name, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            labels = {**(_meta(base).get("labels") or {}), **(_meta(patch).get("labels") or {})}
            namespaces[name] = {**base, "metadata": {**_meta(base), "labels": labels}}
    made.namespaces = namespaces
    made.planned_ids = frozenset(id(o) for o in inventory.planned)
    context = [o for o in inventory.objects if is_iotsec(o) or o.get("kind") in ("StorageClass", "ClusterRole")]
    made.snapshot = snapshot_from_objects(
        [*context, *namespaces.values()], assume_named_namespaces_exist=offline, parse=_parsed(parsed)
    )
    made.members = _members(made, offline)
    made.desired = list(inventory.planned) if offline else _desired(made, _parsed(parsed))
    for resource in made.of_kind("TenantIsolation"):
        for namespace in getattr(resource.spec, "namespaces", ()):
            made.tenant_of.setdefault(namespace, resource.name)
    for namespace, obj in namespaces.items():
        tenant_id = (_meta(obj).get("labels") or {}).get(TENANT_LABEL)
        if tenant_id and namespace not in made.tenant_of:
            made.tenant_of[namespace] = _tenant_name(made, tenant_id)
    # Offline the plan counts as applied; a document of the same object overrides it (a drifted policy given in
    # the files reads drifted), but not a Namespace: the operator merges its labels into the one written.
    written = [o for o in inventory.objects if o.get("kind") != "Namespace"]
    actual = [*inventory.planned, *written] if offline else inventory.objects
    made.actual = {(str(o.get("kind")), _meta(o).get("namespace") or "", _name(o)): o for o in actual}
    return made


def _members(made: View, offline: bool) -> dict[str, str]:
    """namespace -> its SecurityDomain, as the webhook resolves it (offline, named namespaces count as existing)."""
    candidates = set(made.namespaces)
    if offline:
        candidates |= {ns for r in made.of_kind("SecurityDomain") for ns in getattr(r.spec, "namespaces", None) or ()}
    audit = made.snapshot.platform.audit_namespace
    owners = {ns: made.snapshot.domain_of(ns).name for ns in candidates if ns != audit}
    return {ns: domain for ns, domain in sorted(owners.items()) if domain}


def _desired(made: View, parse: Callable[[dict[str, Any]], Resource]) -> list[dict[str, Any]]:
    """Live: what the operator would write for the cluster's custom resources and namespaces (its own builders),
    in the namespaces that exist."""
    given = [o for o in made.inventory.objects if is_iotsec(o)] + list(made.namespaces.values())
    planned = render.render([Document("<cluster>", i, o) for i, o in enumerate(given)], parse=parse).objects
    return [o for o in planned if (namespace := _meta(o).get("namespace")) is None or namespace in made.namespaces]


def _parsed(parsed: Mapping[int, Resource]) -> Callable[[dict[str, Any]], Resource]:
    """parse_resource, answered from the view's own parse for the inventory's objects (CEL rules are slow)."""

    def parse(obj: dict[str, Any]) -> Resource:
        found = parsed.get(id(obj))
        return found if found is not None else parse_resource(obj)

    return parse


def _tenant_name(made: View, tenant_id: str) -> str:
    for resource in made.of_kind("TenantIsolation"):
        if getattr(resource.spec, "tenant_id", None) == tenant_id:
            return resource.name
    return tenant_id


def policy_reports(made: View) -> list[dict[str, Any]]:
    """iotsec's background-scan reports (PolicyReport and ClusterPolicyReport): offline, the scan's planned ones;
    live, the scan judged again over the objects read (`_judged_again`), so a report forged or edited by whoever may
    write PolicyReports in a namespace can hide nothing the objects show."""
    published = published_reports(made)
    if made.offline:
        return published
    if made.judged_again is None:
        made.judged_again = _judged_again(made, published)
    return made.judged_again


def published_reports(made: View) -> list[dict[str, Any]]:
    """The scan reports iotsec published (its name and label), as read: when the operator last scanned."""
    found = [*made.observed("PolicyReport", POLICY_REPORT_GROUP), *made.observed("ClusterPolicyReport")]
    return [r for r in found if _group(r) == POLICY_REPORT_GROUP and _ours(r)]


def _judged_again(made: View, published: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reports the scan makes of the objects read, with the published failures on ConfigMaps added: the
    inventory keeps no ConfigMap values (they may hold secrets), so only the operator's scan, which reads them, can
    find a password in one."""
    again = scan_reports(made.inventory.objects, made.inventory.now, as_written=False)
    failed_config_maps = {
        (_meta(r).get("namespace"), r.get("kind")): [x for x in r.get("results") or () if _on_config_map_failing(x)]
        for r in published
    }
    for report in again:
        key = (_meta(report).get("namespace"), report.get("kind"))
        kept = [x for x in report.get("results") or () if not _on_config_map(x)]
        report["results"] = kept + failed_config_maps.get(key, [])
    return again


def _on_config_map(result: Mapping[str, Any]) -> bool:
    return any(isinstance(r, dict) and r.get("kind") == "ConfigMap" for r in result.get("resources") or ())


def _on_config_map_failing(result: Mapping[str, Any]) -> bool:
    return _on_config_map(result) and result.get("result") in ("fail", "warn", "error")


def _ours(report: Mapping[str, Any]) -> bool:
    """Only iotsec's name and label: results saying policy/source iotsec are what a forger writes too."""
    labels = _meta(report).get("labels") or {}
    return _name(report) == SCAN_REPORT_NAME and isinstance(labels, dict) and labels.get(MANAGED_BY) == MANAGER


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _name(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("name", ""))


def _group(obj: Mapping[str, Any]) -> str:
    api_version = str(obj.get("apiVersion", ""))
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""
