"""kopf wiring for SecurityDomain: parse → plan → apply → prune → status.

Reconciliation is level-triggered: every trigger (create, update, resume, the resync timer, a namespace
appearing or changing labels, a managed NetworkPolicy being deleted) recomputes the whole desired state of the
domain from the cluster as it is, so running it twice or after a restart changes nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import kopf
from pydantic import ValidationError

from iotsec.api.common import API_VERSION, GROUP, VERSION
from iotsec.api.crd import structural_schema
from iotsec.api.securitydomain import SecurityDomainStatus
from iotsec.api.tenantisolation import TenantIsolationSpec
from iotsec.api.validation import InvalidResourceError, parse_resource
from iotsec.build import securitydomain as builder
from iotsec.build import tenant as tenant_builder
from iotsec.controllers import metrics
from iotsec.controllers.reconciler import (
    Logger,
    api_failed,
    level_triggered,
    live_resource,
    owner_lost,
    reads_since,
    reconcile_soon,
    reject,
    resource_lock,
    routed,
    write_status,
)
from iotsec.controllers.runtime import config, kube, network
from iotsec.k8s.kube import ApiError, Kube, Owner, read_only_list
from iotsec.model import conditions
from iotsec.model.labels import CONTROLS, DOMAIN_LABEL, OWNER_KIND, OWNER_NAME, PSA_BEFORE
from iotsec.model.time import parse_rfc3339

KIND = builder.KIND
PLURAL = "securitydomains"
NETPOL = ("networking.k8s.io/v1", "NetworkPolicy")
# A namespace or policy event reconciles its domains this long after, once for every event in between: a tenant
# creating three namespaces and the labels that follow cost each domain one reconcile, not six (issue 18)
EVENT_DELAY_SECONDS = 1.0


@dataclass
class Applied:
    changed: list[str]
    pruned: list[str]
    labelled: list[str]
    unlabelled: list[str]

    @property
    def anything(self) -> bool:
        return bool(self.changed or self.pruned or self.labelled or self.unlabelled)

    def summary(self) -> str:
        parts = [
            f"{len(self.changed)} policies applied" if self.changed else "",
            f"{len(self.pruned)} pruned ({', '.join(self.pruned[:5])})" if self.pruned else "",
            f"joined: {', '.join(self.labelled)}" if self.labelled else "",
            f"left: {', '.join(self.unlabelled)}" if self.unlabelled else "",
        ]
        return "; ".join(part for part in parts if part)


# ---------------------------------------------------------------- triggers


@kopf.on.delete(GROUP, VERSION, PLURAL)
def on_delete(name: str, **_: Any) -> None:
    """Remove everything the domain wrote; deleting a domain never touches the namespaces themselves."""
    api = kube()
    with resource_lock(KIND, name):
        api.prune(*NETPOL, KIND, name, keep=())
        _unlabel(api, name, keep=set())
    metrics.forget(KIND, name)


@kopf.on.event("", "v1", "namespaces")
async def on_namespace(type: str | None, name: str, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> None:
    """A namespace appeared, changed labels or went away: reconcile the domains it concerns. When that fails, its
    version is forgotten: kopf does not retry event handlers, and the next listing routes it again."""
    if _news(type, name, body.get("metadata") or {}):
        try:
            await routed(namespace_changed, type or "MODIFIED", name, dict(labels), dict(body))
        except Exception:
            _namespace_versions.pop(name, None)
            raise


# namespace -> the resourceVersion of its last event. kopf hands over a listing as events of type None: at start-up
# (the resume handlers cover those), and again whenever a watch ends with 410 Gone (the API server was away, or
# its history compacted). A namespace created or relabelled while the watch was down appears only there; it was
# dropped with the rest, and stayed outside its domain's policies until the domain's resync.
_namespace_versions: dict[str, str | None] = {}
_watching_since: list[float] = [0.0]  # when this operator began to watch (epoch seconds)
_following: list[bool] = [False]  # a typed namespace event has come: kopf's start-up listing was handed over
CLOCK_SKEW_SECONDS = 300  # the API server's clock (creationTimestamp) against the operator's, allowed for


@kopf.on.startup(id="namespace-versions")
def _begin_watching(**_: Any) -> None:
    _namespace_versions.clear()
    _watching_since[0], _following[0] = time.time(), False


def _news(type_: str | None, name: str, meta: Mapping[str, Any]) -> bool:
    """Whether a namespace event may change what the domains plan: every typed event; from a listing, a namespace
    whose version is not the one its last event carried, and one not seen before unless it may belong to the
    start-up listing. That listing comes before any typed event and holds only namespaces created before the
    operator began to watch; to allow for the two clocks, one created less than CLOCK_SKEW_SECONDS before counts
    as new too (which costs a reconcile at most)."""
    version = meta.get("resourceVersion")
    if type_ is not None:
        _following[0] = True
        if type_ == "DELETED":
            _namespace_versions.pop(name, None)
        else:
            _namespace_versions[name] = version
        return True
    known, _namespace_versions[name] = _namespace_versions.get(name), version
    if known is not None:
        return known != version
    if _following[0]:
        return True
    try:
        created = parse_rfc3339(str(meta.get("creationTimestamp")), "creationTimestamp").timestamp()
    except ValueError:
        return True  # the API server always sets it; without it, a reconcile too many is the safe side
    return created >= _watching_since[0] - CLOCK_SKEW_SECONDS


def namespace_changed(type_: str, name: str, labels: dict[str, str], body: dict[str, Any]) -> None:
    if type_ == "DELETED":
        kube().forgotten("v1", "Namespace", name, deleted=body)
        echo = _own_writes.pop(name, None)
    else:
        kube().observed(body)  # the plans list namespaces from the watch cache: it must hold this one
        echo = _own_writes.get(name)
    for domain in _domains_concerned(name, labels):
        if type_ != "DELETED" and echo == (domain, (body.get("metadata") or {}).get("resourceVersion")):
            continue  # the event of the domain's own labels: the reconcile that wrote them planned with them
        reconcile_soon(KIND, domain, partial(reconcile, domain), EVENT_DELAY_SECONDS)


# namespace -> (domain, resourceVersion) of the last labels and annotations a domain's reconcile wrote on it, so the
# watch event of that write does not ask the same domain for another reconcile: a cold start of 1,000 tenants spent
# a third of its domain reconciles on these echoes (issue 18). Another domain the change concerns is still asked.
_own_writes: dict[str, tuple[str, str | None]] = {}


@kopf.on.event(*NETPOL[0].split("/"), "networkpolicies", labels={OWNER_KIND: KIND})
async def on_policy_deleted(type: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> None:
    """A policy iotsec maintains was deleted by someone: put it back now rather than at the next resync. The watch
    cache tells the same (`owner_lost`); this watch is kopf's own, there also without the cache."""
    if type == "DELETED" and labels.get(OWNER_NAME):
        await routed(policy_deleted, dict(body))


def policy_deleted(body: dict[str, Any]) -> None:
    meta = body.get("metadata") or {}
    kube().forgotten(*NETPOL, meta.get("name", ""), meta.get("namespace"), deleted=body)
    owner_lost(*NETPOL, body)  # asks the domain, once, unless iotsec deleted it or only the labels are iotsec's


def _domains_concerned(namespace: str, labels: Mapping[str, str]) -> set[str]:
    concerned = {labels[DOMAIN_LABEL]} if labels.get(DOMAIN_LABEL) else set()
    info = {namespace: builder.NamespaceInfo(namespace, dict(labels))}
    for domain in _valid_domains(read_only_list(kube(), API_VERSION, KIND)):
        if builder.claimed_namespaces(domain, info)[0] or namespace in (domain.spec.namespaces or ()):
            concerned.add(domain.name)
    return concerned


# ---------------------------------------------------------------- reconcile


def reconcile(name: str, logger: Logger | None = None, seen: dict[str, Any] | None = None) -> None:
    api = kube()
    with live_resource(api, KIND, name, logger=logger, seen=seen) as (body, outcome):
        if body is None:
            return
        try:
            domain = _domain(body)
        except InvalidResourceError as exc:
            outcome.invalid()
            reject(api, KIND, body, exc)
        try:
            plan = _plan(api, domain)
            applied = _apply(api, body, plan)
        except ApiError as exc:
            _write_status(api, body, None, failure=exc)
            api_failed(exc)
        ready, status_changed = _write_status(api, body, plan)
        _announce(body, plan, applied, status_changed)
        metrics.MANAGED_OBJECTS.labels(KIND, name, "NetworkPolicy").set(len(plan.policies))
        metrics.RESOURCE_READY.labels(KIND, name).set(1 if ready else 0)
        outcome.did(
            f"{len(plan.policies)} NetworkPolicies in {len(plan.members)} namespaces",
            applied.summary(),
            f"Ready={ready}",
        )
        outcome.succeeded()


_parsed: dict[tuple[str, int], builder.Domain | InvalidResourceError] = {}


def _domain(body: dict[str, Any]) -> builder.Domain:
    """The domain of a body, parsed once per spec generation; raises InvalidResourceError."""
    meta = body["metadata"]
    key = (meta.get("uid", meta["name"]), meta.get("generation", 0))
    if key not in _parsed:
        if len(_parsed) > 4096:
            _parsed.clear()
        try:
            resource = parse_resource(body)
            _parsed[key] = builder.Domain(resource.name, resource.spec, meta.get("creationTimestamp", ""))
        except InvalidResourceError as exc:
            _parsed[key] = exc
    result = _parsed[key]
    if isinstance(result, InvalidResourceError):
        raise result
    return result


def _valid_domains(bodies: list[dict[str, Any]]) -> list[builder.Domain]:
    domains = []
    for body in bodies:
        try:
            domains.append(_domain(body))
        except InvalidResourceError:
            continue  # an invalid domain claims nothing; it reports its own problems
    return domains


# the last cluster-wide analysis: when it began to read (time.monotonic), the cache's change counts it read at
_planned: list[tuple[float, tuple[int, ...] | None, builder.Analysis]] = []
_analysing = threading.Lock()  # one analysis at a time: those who wait for it use it when it is recent enough


def _plan(api: Kube, domain: builder.Domain) -> builder.DomainPlan:
    """The domain's plan, from the cluster-wide analysis of domains, namespaces and tenants (reading those is most
    of a domain's reconcile: 0.2 s at 1,000 tenants x 200 domains). An analysis serves every reconcile while none
    of the three kinds changed in the watch cache, and every reconcile whose reads_since() it began after: during
    a cold start they change all the time, and each of the domains' reconciles analysed the cluster anew, a
    quarter of the operator's CPU (issue 18). It never serves a reconcile asked for after it began reading."""
    floor = reads_since()
    stamp = _inputs_stamp(api)  # read before the lists: an analysis is never older than its stamp says
    with _analysing:
        if _planned:
            began, planned_stamp, analysis = _planned[0]
            if began >= floor or (stamp is not None and planned_stamp == stamp):
                return builder.plan_from(domain, analysis)
        began, stamp = time.monotonic(), _inputs_stamp(api)
        analysis = _fresh_analysis(api)
        _planned[:] = [(began, stamp, analysis)]
    return builder.plan_from(domain, analysis)


def _inputs_stamp(api: Kube) -> tuple[int, ...] | None:
    changes = getattr(getattr(api, "cache", None), "changes", None)
    if changes is None:
        return None
    kinds = ((API_VERSION, KIND), ("v1", "Namespace"), (API_VERSION, tenant_builder.KIND))
    stamp = tuple(changes(api_version, kind) for api_version, kind in kinds)
    return None if None in stamp else stamp  # type: ignore[return-value]


def _fresh_analysis(api: Kube) -> builder.Analysis:
    domains = _valid_domains(read_only_list(api, API_VERSION, KIND))
    live = [ns for ns in read_only_list(api, "v1", "Namespace") if not ns["metadata"].get("deletionTimestamp")]
    labels = _with_tenant_labels(api, {ns["metadata"]["name"]: ns["metadata"].get("labels") or {} for ns in live})
    namespaces = [
        builder.NamespaceInfo(
            ns["metadata"]["name"], labels[ns["metadata"]["name"]], ns["metadata"].get("annotations") or {}
        )
        for ns in live
    ]
    return _analysis(domains, namespaces)


_analysed: list[tuple[tuple[Any, ...], builder.Analysis]] = []  # the last cluster-wide analysis and its inputs


def _analysis(domains: list[builder.Domain], namespaces: list[builder.NamespaceInfo]) -> builder.Analysis:
    """The cluster-wide analysis (who owns each namespace, reachability), shared by every domain's reconcile while
    its inputs are the same: each domain of 200 computed it anew, and a cold start spent its time there (issue 18).
    Domains are the parsed objects kept per generation (the analysis holds them, so their ids stay theirs)."""
    settings = network()
    key = (
        tuple(id(d) for d in domains),
        tuple((ns.name, tuple(ns.labels.items()), tuple(ns.annotations.items())) for ns in namespaces),
        settings,
    )
    if _analysed and _analysed[0][0] == key:
        return _analysed[0][1]
    analysis = builder.analyse(domains, namespaces, settings)
    _analysed[:] = [(key, analysis)]
    return analysis


def _with_tenant_labels(api: Kube, labels: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Namespace labels as they are once every TenantIsolation has labelled its namespaces, as render plans them:
    a domain planned before a tenant's reconcile would otherwise open the tenant's namespaces domain-wide for a
    moment (to the other tenants of the domain) and wall them off only after."""
    labels = dict(labels)
    try:
        tenants = read_only_list(api, API_VERSION, tenant_builder.KIND)
    except ApiError as exc:
        if exc.status != 404:
            raise
        return labels  # TenantIsolation not served (its CRD not installed): no tenant labels anything
    for body in sorted(tenants, key=lambda b: b["metadata"]["name"]):
        spec = _tenant_spec(body)
        if spec is None:
            continue  # an invalid tenant labels nothing; it reports its own problems
        for ns, extra in tenant_builder.tenant_namespace_labels(spec, labels, config().platform).items():
            if ns in labels:
                labels[ns] = {**labels[ns], **extra}
    return labels


_tenant_specs: dict[str, tuple[str, TenantIsolationSpec | None]] = {}  # uid -> (version or spec text, spec)


def _tenant_spec(body: dict[str, Any]) -> TenantIsolationSpec | None:
    """A tenant's spec, validated once per content (every domain reconcile reads every tenant); None: invalid.
    One entry per tenant, its latest version's."""
    meta = body["metadata"]
    # a version names one content of one object; a body without one (a test's) is known by its spec's text
    version = meta.get("resourceVersion") if meta.get("uid") else None
    uid, seen = meta.get("uid") or meta["name"], version or repr(body.get("spec"))
    known = _tenant_specs.get(uid)
    if known is not None and known[0] == seen:
        return known[1]
    try:
        spec: TenantIsolationSpec | None = TenantIsolationSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        spec = None
    if len(_tenant_specs) > 16384:
        _tenant_specs.clear()
    _tenant_specs[uid] = (seen, spec)
    return spec


def _apply(api: Kube, body: dict[str, Any], plan: builder.DomainPlan) -> Applied:
    owner = Owner.of(body)
    labelled = []
    for ns in dict.fromkeys([*plan.namespace_records, *plan.namespace_labels]):
        wanted = plan.namespace_labels.get(ns)
        record = plan.namespace_records.get(ns)
        # Pod Security modes the enforcement no longer asks for come off (None removes)
        labels = None if wanted is None else {**dict.fromkeys(builder.PSA_LABELS), **wanted}
        annotations = None if record is None else dict(record)  # with the labels: what it had is never lost
        patch = api.patch_metadata("v1", "Namespace", ns, labels=labels, annotations=annotations)
        if patch.written is not None and patch.alone:  # with someone else's change in it, its event is news
            _own_writes[ns] = (plan.domain, patch.written["metadata"].get("resourceVersion"))
        if "labels" in patch.fields:
            labelled.append(ns)
    before = {
        (p["metadata"]["namespace"], p["metadata"]["name"]): p["metadata"]["resourceVersion"]
        for p in api.list(*NETPOL, label_selector=f"{OWNER_KIND}={KIND},{OWNER_NAME}={plan.domain}")
    }
    changed = []
    for policy in plan.policies:
        key = (policy["metadata"]["namespace"], policy["metadata"]["name"])
        if api.apply(policy, owner)["metadata"]["resourceVersion"] != before.get(key):
            changed.append("/".join(key))
    keep = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in plan.policies}
    pruned = [f"{ns}/{n}" for ns, n in api.prune(*NETPOL, KIND, plan.domain, keep)]
    metrics.OBJECTS_PRUNED.labels("NetworkPolicy").inc(len(pruned))
    unlabelled = _unlabel(api, plan.domain, keep=set(plan.members))
    return Applied(changed, pruned, labelled, unlabelled)


def _unlabel(api: Kube, domain: str, keep: set[str]) -> list[str]:
    """Take the domain's labels off namespaces that are no longer its members, and give them back the Pod Security
    labels they had before they joined; the record goes only once they are back."""
    removed = []
    for ns in api.list("v1", "Namespace", label_selector=f"{DOMAIN_LABEL}={domain}"):
        name = ns["metadata"]["name"]
        if name in keep:
            continue
        if api.patch_labels("v1", "Namespace", name, builder.leaving_labels(ns["metadata"].get("annotations") or {})):
            removed.append(name)
        api.annotate("v1", "Namespace", name, {PSA_BEFORE: None})
    return removed


# ---------------------------------------------------------------- status and events


def _write_status(
    api: Kube, body: dict[str, Any], plan: builder.DomainPlan | None, failure: ApiError | None = None
) -> tuple[bool, bool]:
    """Write the status; return (ready, whether the status changed)."""
    generation = body["metadata"].get("generation")
    if plan is None:
        reason = "ApiUnavailable" if failure and failure.transient else "ApplyFailed"
        ready = conditions.condition("Ready", False, reason, str(failure), generation)
        try:
            return False, write_status(api, KIND, body, [ready])
        except ApiError:
            return False, False  # the API is failing; the error that brought us here is what gets reported
    ready_status, found, fields = domain_status(plan, generation)
    return ready_status, write_status(api, KIND, body, found, fields)


def domain_status(
    plan: builder.DomainPlan, generation: int | None
) -> tuple[bool, list[dict[str, Any]], dict[str, Any]]:
    """What the status says of a plan: (ready, the conditions found, the other status fields)."""
    ready_status, reason, message = _readiness(plan)
    found = [
        conditions.condition("Ready", ready_status, reason, message, generation, _controls(plan)),
        conditions.condition(
            "Conflict",
            bool(plan.conflicts),
            "NamespaceClaimedTwice" if plan.conflicts else "NoConflict",
            "; ".join(plan.conflicts) or "no member namespace is claimed by another domain",
            generation,
        ),
    ]
    fields = {
        "observedGeneration": generation,
        "memberNamespaces": plan.members,
        "namespaceCount": len(plan.members),
        "policyCount": len(plan.policies),
        "reachability": [edge.manifest() for edge in plan.reachability],
        "conflicts": plan.conflicts,
        "halfOpenRules": plan.half_open,
    }
    return ready_status, found, _fitted(_STATUS_SCHEMA, fields)


_STATUS_SCHEMA = structural_schema(SecurityDomainStatus, keep_defaults=False)


def _fitted(schema: dict[str, Any], value: Any) -> Any:
    """`value` within the schema's maxLength and maxItems: the API server refuses the whole status otherwise. Long
    notes (many ports, long names) are clipped with an ellipsis; the Ready message (32 KiB) keeps them whole."""
    if isinstance(value, str) and len(value) > schema.get("maxLength", len(value)):
        return value[: schema["maxLength"] - 1] + "…"
    if isinstance(value, list):
        return [_fitted(schema.get("items", {}), item) for item in value[: schema.get("maxItems", len(value))]]
    if isinstance(value, dict) and "properties" in schema:
        return {key: _fitted(schema["properties"].get(key, {}), item) for key, item in value.items()}
    return value


def _readiness(plan: builder.DomainPlan) -> tuple[bool, str, str]:
    lost = [c for c in plan.conflicts if "this domain keeps it" not in c]
    if lost:
        return False, "Conflict", "; ".join(lost)
    if plan.reserved_namespaces:
        return False, "ReservedNamespace", f"never isolated by a domain: {', '.join(plan.reserved_namespaces)}"
    if plan.missing_peers:
        names = ", ".join(plan.missing_peers)
        return False, "PeerDomainMissing", f"rules name SecurityDomains that do not exist yet: {names}"
    if plan.missing_namespaces:
        missing = ", ".join(plan.missing_namespaces)
        return False, "NamespaceMissing", f"member namespaces that do not exist yet: {missing}"
    notes = [*plan.dropped_rules, *plan.half_open]
    summary = f"{len(plan.policies)} NetworkPolicies in {len(plan.members)} namespaces"
    return True, "Reconciled", summary + (f"; note: {'; '.join(notes)}" if notes else "")


def _controls(plan: builder.DomainPlan) -> list[str]:
    found = {c for p in plan.policies for c in p["metadata"]["annotations"][CONTROLS].split(",")}
    return sorted(found | {"X1369-9.4.1-1"})


def _announce(body: dict[str, Any], plan: builder.DomainPlan, applied: Applied, status_changed: bool) -> None:
    """Events for what changed; warnings only when the status changes, so a resync does not repeat them."""
    if applied.anything:
        kopf.event(body, type="Normal", reason="Reconciled", message=applied.summary())
    if not status_changed:
        return
    for problem in [*plan.conflicts, *(f"missing peer domain {p}" for p in plan.missing_peers)]:
        kopf.warn(body, reason="Conflict" if "claimed" in problem else "PeerDomainMissing", message=problem)


level_triggered(KIND, PLURAL, reconcile)
