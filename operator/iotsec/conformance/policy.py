"""Probes read from configuration and observed objects: the desired state the operator writes (NetworkPolicies,
tenant RBAC, quotas), Pod Security labels, zones and exposure, and the background scan's findings (PolicyReports)
with the exceptions that waive them.

Each probe answers the controls `ANSWERS` names for it; `assess` collects `PROBES`.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from iotsec.admission.rules import RULES
from iotsec.api.securitydomain import EXPOSABLE_ZONES, PolicyException
from iotsec.build.securitydomain import Domain, namespace_labels, psa_labels
from iotsec.conformance.inventory import View, policy_reports, view
from iotsec.conformance.model import (
    CLUSTER,
    Assessment,
    Evidence,
    Inventory,
    ObjectRef,
    Probe,
    Scope,
    Verdict,
)
from iotsec.model.labels import CONTROLS, ENCRYPTED_LABEL, OWNER_KIND, OWNER_NAME, TENANT_LABEL
from iotsec.model.names import storage_class_name
from iotsec.model.platform import Platform
from iotsec.model.time import rfc3339

OFFLINE = "planned (offline)"
SHOWN = 10  # objects named in one piece of evidence; the rest are counted
JUDGED_OWNERS = ("SecurityDomain", "TenantIsolation")
NOT_JUDGED_KINDS = ("Secret", "ConfigMap")  # keys and bundles: conformance.runtime
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet")
ADMISSION_CONTROLS = tuple(sorted({rule.control for rule in RULES.values()}))
WEBHOOK = "workloads.iotsec.io"  # the hook of build/webhook.py that judges namespaced objects

C_MEMBERSHIP, C_SEGMENT, C_MUTUAL, C_BOUNDARY = "X1369-9.4.1-1", "X1369-9.4.1-2", "X1369-9.4.1-3", "X1369-9.4.1-4"
C_ISOLATION, C_LEGITIMACY = "X1369-9.2.1-1", "X1369-9.5.1-1"
C_HOST_ACCESS, C_CONTAINERS = "X1369-9.3.1-4", "X1369-9.4.3-1"
C_STORAGE, C_TENANT_RBAC = "X1369-9.2.4-1", "X1369-9.2.3-1"
INVALID_CONTROL = {
    "SecurityDomain": C_MEMBERSHIP,
    "TenantIsolation": C_ISOLATION,
    "BackupPolicy": "X1369-9.2-1",
    "AuditPolicy": "X1369-9.6.4-1",
}


def _ago(when: str | None, now: datetime) -> str:
    return f" at {when}" if when else f" at {rfc3339(now)}"


def _refs(objs: Iterable[ObjectRef]) -> tuple[ObjectRef, ...]:
    return tuple(objs)[:SHOWN]


def _counted(titles: list[str]) -> str:
    more = f" and {len(titles) - SHOWN} more" if len(titles) > SHOWN else ""
    return ", ".join(titles[:SHOWN]) + more


def controls_of(obj: Mapping[str, Any]) -> list[str]:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return [c for c in str(annotations.get(CONTROLS, "")).split(",") if c]


# ---------------------------------------------------------------- desired state


def applied(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """Whether `live` is `desired` as the operator applies it (k8s.kube.already_applied's rule, which this pure
    layer may not import): every field but metadata equal, desired labels and annotations present and equal."""
    for key, value in desired.items():
        if key not in ("metadata", "status") and live.get(key) != value:
            return False
    wanted, found = desired.get("metadata") or {}, live.get("metadata") or {}
    for part in ("labels", "annotations"):
        have = found.get(part) or {}
        if any(have.get(k) != v for k, v in (wanted.get(part) or {}).items()):
            return False
    return True


def _desired_state(inventory: Inventory) -> Iterator[Assessment]:
    """Every object the operator writes for SecurityDomains and TenantIsolations (NetworkPolicies, Roles,
    RoleBindings, ServiceAccounts, quotas, LimitRanges, StorageClasses) present and equal to its desired state,
    judged for the controls the object itself names (its iotsec.io/controls annotation); a NetworkPolicy also
    evidences 9.5.1-1 (peers checked between service systems)."""
    made = view(inventory)
    buckets: dict[tuple[Scope, str], list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for obj in _judged(made.desired):
        state, found = _state(made, obj)
        for control in _controls_judged(obj):
            buckets[(_owner_scope(made, obj), control)].append((state, found or obj))
    if not made.offline:
        for stale in _stale(made):
            for control in _controls_judged(stale):
                buckets[(_owner_scope(made, stale), control)].append(("stale", stale))
    for (scope, control), states in sorted(buckets.items(), key=lambda i: (i[0][1], i[0][0].kind, i[0][0].name)):
        yield _desired_assessment(made, scope, control, states)


def _judged(objects: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for obj in objects:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if labels.get(OWNER_KIND) in JUDGED_OWNERS and obj.get("kind") not in NOT_JUDGED_KINDS:
            yield obj


def _controls_judged(obj: Mapping[str, Any]) -> list[str]:
    extra = [C_LEGITIMACY] if obj.get("kind") == "NetworkPolicy" else []
    return sorted({*controls_of(obj), *extra})


def _state(made: View, desired: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    meta = desired.get("metadata") or {}
    found = made.lookup(str(desired.get("kind")), meta.get("namespace"), str(meta.get("name")))
    if found is None:
        return ("unreadable" if _unreadable(made, desired) else "missing"), None
    return ("present" if applied(desired, found) else "drifted"), found


def _unreadable(made: View, obj: Mapping[str, Any]) -> bool:
    api_version = str(obj.get("apiVersion", ""))
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    return f"{group}/{obj.get('kind')}" in made.inventory.unavailable


def _stale(made: View) -> Iterator[dict[str, Any]]:
    """NetworkPolicies a SecurityDomain wrote that its desired state no longer has (they may open more)."""
    wanted = {(o["metadata"].get("namespace"), o["metadata"]["name"]) for o in made.desired}
    for obj in made.objects_of("NetworkPolicy", "networking.k8s.io"):
        meta = obj.get("metadata") or {}
        owned = (meta.get("labels") or {}).get(OWNER_KIND) == "SecurityDomain"
        live_namespace = meta.get("namespace") in made.namespaces  # not one being deleted
        if owned and live_namespace and (meta.get("namespace"), meta.get("name")) not in wanted:
            yield obj


def _owner_scope(made: View, obj: Mapping[str, Any]) -> Scope:
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    if obj.get("kind") == "NetworkPolicy" and meta.get("namespace"):
        return made.namespace_scope(str(meta["namespace"]))
    if labels.get(OWNER_KIND) == "TenantIsolation":
        owner = str(labels.get(OWNER_NAME, ""))
        tenant = next((r for r in made.of_kind("TenantIsolation") if r.name == owner), None)
        return made.tenant_scope(tenant) if tenant else Scope("tenant", owner, None, owner)
    return CLUSTER


WHAT_WRONG = {
    "missing": "missing",
    "drifted": "differs from the desired state",
    "stale": "is no longer desired (left over, may open more)",
    "unreadable": "could not be read",
}


def _desired_assessment(made: View, scope: Scope, control: str, states: list[tuple[str, dict[str, Any]]]) -> Assessment:
    mechanism = "desired state (operator's builders) vs " + ("plan" if made.offline else "observed objects")
    wrong = [(s, o) for s, o in states if s in ("missing", "drifted", "stale")]
    unreadable = [o for s, o in states if s == "unreadable"]
    good = [o for s, o in states if s == "present"]
    evidence = [
        Evidence(f"{_title(o)} {WHAT_WRONG[s]}", (made.ref(o) if s != "missing" else _planned_ref(o),))
        for s, o in wrong[:SHOWN]
    ]
    if good:
        kinds = sorted({str(o.get("kind")) for o in good})
        how = "planned" if made.offline else "present and equal to the desired state"
        text = f"{len(good)} {'/'.join(kinds)} objects {how}"
        evidence.append(Evidence(text + _ago(None, made.inventory.now), _refs(made.ref(o) for o in good)))
    if wrong:
        names = _counted([f"{_title(o)} ({s})" for s, o in wrong])
        return Assessment(
            control,
            scope,
            Verdict.NOT_MET,
            f"{len(wrong)} of {len(states)} objects the operator writes are not in place: {names}",
            tuple(evidence),
            "let the operator reconcile (see its logs and the owner's status); remove what it no longer wants",
            mechanism,
        )
    if unreadable:
        return Assessment(
            control,
            scope,
            Verdict.PARTIAL,
            f"{len(unreadable)} objects could not be read to compare with the desired state",
            tuple(evidence),
            "grant the report list access to " + ", ".join(sorted({str(o.get("kind")) for o in unreadable})),
            mechanism,
        )
    summary = (
        f"{OFFLINE}: the operator applies {len(good)} objects"
        if made.offline
        else (f"all {len(good)} objects the operator writes are present and equal to the desired state")
    )
    return Assessment(control, scope, Verdict.MET, summary, tuple(evidence), "", mechanism)


def _title(obj: Mapping[str, Any]) -> str:
    return ObjectRef.of(obj).title


def _planned_ref(obj: Mapping[str, Any]) -> ObjectRef:
    return ObjectRef.of(obj, planned=True)


# ---------------------------------------------------------------- Pod Security labels


def _pod_security_labels(inventory: Inventory) -> Iterator[Assessment]:
    """Every member namespace carries the Pod Security Admission labels its domain asks for (the SecurityDomain
    controller writes them: enforce, warn and audit at the domain's level), so the API server's own Pod Security
    admission backs iotsec's checks of host access (9.3.1-4) and container isolation (9.4.3-1)."""
    made = view(inventory)
    domains = {r.name: r for r in made.of_kind("SecurityDomain")}
    for namespace, domain_name in sorted(made.members.items()):
        resource = domains.get(domain_name)
        if resource is None:
            continue
        wanted = psa_labels(namespace_labels(Domain(resource.name, resource.spec)))  # type: ignore[arg-type]
        obj = made.namespaces.get(namespace, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        have = psa_labels((obj.get("metadata") or {}).get("labels") or {})
        for control in (C_HOST_ACCESS, C_CONTAINERS):
            yield _psa_assessment(made, control, namespace, resource.spec, wanted, have, obj)


def _psa_assessment(
    made: View, control: str, namespace: str, spec: Any, wanted: dict[str, str], have: dict[str, str], obj: Any
) -> Assessment:
    scope = made.namespace_scope(namespace)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(have.items())) or "none"
    ref = ObjectRef("v1", "Namespace", namespace, planned=made.offline)
    evidence = (Evidence(f"Pod Security labels of namespace {namespace}: {shown}", (ref,)),)
    mechanism = "Pod Security Admission labels (SecurityDomain reconcile)"
    wrong = sorted(k for k, v in wanted.items() if have.get(k) != v)
    if wrong:
        expected = ", ".join(f"{k}={wanted[k]}" for k in wrong)
        return Assessment(
            control,
            scope,
            Verdict.NOT_MET,
            f"Pod Security labels missing or different: {expected}",
            evidence,
            "let the SecurityDomain controller relabel the namespace (it reconciles on label changes)",
            mechanism,
        )
    where = f"{OFFLINE}: " if made.offline else ""
    if spec.enforcement != "enforce":
        return Assessment(
            control,
            scope,
            Verdict.PARTIAL,
            f"{where}domain {scope.domain} is in {spec.enforcement} mode: violations are admitted",
            evidence,
            "set enforcement: enforce once the workloads conform",
            mechanism,
        )
    if spec.pod_security != "restricted":
        return Assessment(
            control,
            scope,
            Verdict.PARTIAL,
            f"{where}Pod Security level {spec.pod_security}, not restricted",
            evidence,
            "set podSecurity: restricted (privileged and baseline allow root, capabilities or host access)",
            mechanism,
        )
    return Assessment(
        control,
        scope,
        Verdict.MET,
        f"{where}Pod Security restricted, enforced by the API server and iotsec",
        evidence,
        "",
        mechanism,
    )


# ---------------------------------------------------------------- zones and exposure


def zones(inventory: Inventory) -> Iterator[Assessment]:
    """9.4.1-1: every domain declares its zone and has members, every namespace with workloads is in a domain;
    9.4.1-4: NodePort/LoadBalancer Services and Ingresses only in access and interface zones. Invalid custom
    resources are reported here (not-met for the control their kind serves)."""
    made = view(inventory)
    yield from _invalid(made)
    domains = made.of_kind("SecurityDomain")
    if not domains:
        yield Assessment(
            C_MEMBERSHIP,
            CLUSTER,
            Verdict.NOT_MET,
            "no valid SecurityDomain: no zone is declared",
            (),
            "declare the platform's zones as SecurityDomains",
            "SecurityDomain",
        )
    members: dict[str, list[str]] = defaultdict(list)
    for namespace, domain in made.members.items():
        members[domain].append(namespace)
    exposed = _exposure(made)
    for resource in domains:
        scope = Scope("domain", resource.name, resource.name)
        ref = made.ref(resource.body)
        names = sorted(members.get(resource.name, []))
        zone = resource.spec.zone  # type: ignore[attr-defined]
        if names:
            yield Assessment(
                C_MEMBERSHIP,
                scope,
                Verdict.MET,
                f"zone {zone}, {len(names)} member namespaces: {_counted(names)}",
                (Evidence(f"SecurityDomain {resource.name} declares zone {zone}", (ref,)),),
                "",
                "SecurityDomain",
            )
        else:
            yield Assessment(
                C_MEMBERSHIP,
                scope,
                Verdict.PARTIAL,
                f"zone {zone} declared, but no member namespace exists",
                (Evidence(f"SecurityDomain {resource.name} selects no existing namespace", (ref,)),),
                "create the namespaces it names or fix its namespaceSelector",
                "SecurityDomain",
            )
        found = [o for ns in names for o in exposed.get(ns, [])]
        yield _boundary(made, scope, zone, ref, found)
    yield from _outside_domains(made)


def _invalid(made: View) -> Iterator[Assessment]:
    for bad in made.invalid:
        kind = bad.ref.kind
        control = INVALID_CONTROL.get(kind)
        if control is None:
            continue
        scope = {
            "SecurityDomain": Scope("domain", bad.ref.name, bad.ref.name),
            "TenantIsolation": Scope("tenant", bad.ref.name, None, bad.ref.name),
        }.get(kind, CLUSTER)
        problems = "; ".join(str(p) for p in bad.problems[:3])
        yield Assessment(
            control,
            scope,
            Verdict.NOT_MET,
            f"{bad.ref.title} is invalid, so nothing of it is applied: {problems}",
            (Evidence(f"{bad.ref.title}: {problems}", (bad.ref,)),),
            "fix it (iotsec validate)",
            f"{kind} validation",
        )


def _exposure(made: View) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for obj in [*made.observed("Service", ""), *made.observed("Ingress", "networking.k8s.io")]:
        spec = obj.get("spec") or {}
        if obj.get("kind") == "Service" and spec.get("type") not in ("NodePort", "LoadBalancer"):
            continue
        namespace = (obj.get("metadata") or {}).get("namespace")
        if namespace:
            found[namespace].append(obj)
    return found


def _boundary(made: View, scope: Scope, zone: str, ref: ObjectRef, found: list[dict[str, Any]]) -> Assessment:
    mechanism = "zone types (SecurityDomain) and Services/Ingresses found"
    titles = [_title(o) for o in found]
    refs = _refs(made.ref(o) for o in found)
    if found and zone not in EXPOSABLE_ZONES:
        return Assessment(
            C_BOUNDARY,
            scope,
            Verdict.NOT_MET,
            f"{len(found)} exposed objects in the {zone} zone: {_counted(titles)}",
            (Evidence("NodePort/LoadBalancer Services and Ingresses outside access and interface zones", refs),),
            "expose only from access or interface zones (move the object or the namespace)",
            mechanism,
        )
    text = f"exposure through {_counted(titles)}" if found else "no NodePort/LoadBalancer Service or Ingress"
    return Assessment(
        C_BOUNDARY,
        scope,
        Verdict.MET,
        f"{zone} zone: {text}",
        (Evidence(f"zone {zone}: {text}", (ref, *refs)),),
        "",
        mechanism,
    )


def _outside_domains(made: View) -> Iterator[Assessment]:
    reserved = set(Platform().reserved_namespaces)
    loose: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for kind in WORKLOAD_KINDS:
        for obj in made.objects_of(kind):
            meta = obj.get("metadata") or {}
            namespace = meta.get("namespace")
            if not namespace or namespace in reserved or namespace in made.members or meta.get("ownerReferences"):
                continue
            loose[namespace].append(obj)
    for namespace, objs in sorted(loose.items()):
        yield Assessment(
            C_MEMBERSHIP,
            made.namespace_scope(namespace),
            Verdict.NOT_MET,
            f"namespace {namespace} runs {len(objs)} workloads in no SecurityDomain: no zone, no default deny",
            (
                Evidence(
                    f"workloads outside every domain: {_counted([_title(o) for o in objs])}",
                    _refs(made.ref(o) for o in objs),
                ),
            ),
            "add the namespace to a SecurityDomain (namespaces or namespaceSelector)",
            "domain membership",
        )


# ---------------------------------------------------------------- background scan and exceptions


def _background_scan(inventory: Inventory) -> Iterator[Assessment]:
    """The findings of iotsec's background scan (PolicyReport / ClusterPolicyReport results, one per rule and
    object) for every admission rule's control, per namespace: fail -> not met, warn -> partial, skip (an
    exception) -> partial naming the exception, only passes -> met. Active and expired exceptions of every domain
    are evidence beside them; live, the webhook's registration (missing, failurePolicy Ignore) at cluster scope."""
    made = view(inventory)
    reports = policy_reports(made)
    if not reports:
        why = made.inventory.unavailable.get("wgpolicyk8s.io/PolicyReport", "no iotsec PolicyReport found")
        for control in ADMISSION_CONTROLS:
            yield Assessment(
                control,
                CLUSTER,
                Verdict.PARTIAL,
                f"no background-scan results ({why}): existing objects unchecked",
                (),
                "run the background scan (it publishes PolicyReports iotsec-scan per namespace)",
                "background scan",
            )
    for (namespace, control), bucket in sorted(_results(reports).items(), key=lambda i: (i[0][1], i[0][0] or "")):
        scope = made.namespace_scope(namespace) if namespace else CLUSTER
        yield _scan_assessment(made, scope, control, bucket)
    yield from _exceptions(made)
    if not made.offline:
        yield from _webhook(made)


Result = tuple[dict[str, Any], dict[str, Any]]  # (report, result)


@dataclass
class _Passes:
    """A scope's passing results, shared by every admission control there (an object passes them all); what the
    verdicts need of them is computed once per scope, not once per control."""

    results: list[Result] = field(default_factory=list)
    _facts: tuple[int, tuple[ObjectRef, ...], int | None] | None = None

    def facts(self, made: View) -> tuple[int, tuple[ObjectRef, ...], int | None]:
        """(objects checked, the first SHOWN of their refs, the latest scan time in epoch seconds)."""
        if self._facts is None:
            objects = {t for _, r in self.results for t in _resource_titles(r)}
            refs = tuple(itertools.islice((ref for _, r in self.results for ref in _resource_refs(made, r)), SHOWN))
            self._facts = (len(objects), refs, _latest(self.results))
        return self._facts


@dataclass
class _Bucket:
    findings: list[Result] = field(default_factory=list)  # the control's own fail/warn/skip results, in order
    passes: _Passes = field(default_factory=_Passes)


def _results(reports: list[dict[str, Any]]) -> dict[tuple[str | None, str], _Bucket]:
    """(namespace or None, control) -> results; an object's passes (and findings of rules that answer no
    admission control) count as passes for every admission control."""
    by_scope: dict[tuple[str | None, str], _Bucket] = {}
    passes: dict[str | None, _Passes] = {}
    for report in reports:
        namespace = (report.get("metadata") or {}).get("namespace") if report.get("kind") == "PolicyReport" else None
        shared = passes.setdefault(namespace, _Passes())
        for result in report.get("results") or ():
            if not isinstance(result, dict) or result.get("policy", "iotsec") != "iotsec":
                continue
            control = (result.get("properties") or {}).get("control") or result.get("category")
            if result.get("result") == "error" and control not in ADMISSION_CONTROLS:
                # An object the engine could not judge may break any rule: it fails every admission control there.
                # Other errors (the report's cap saying how many results it left out) are neither pass nor fail.
                for every in ADMISSION_CONTROLS if result.get("rule") == "malformed" else ():
                    by_scope.setdefault((namespace, every), _Bucket(passes=shared)).findings.append((report, result))
                continue
            if result.get("result") == "pass" or control not in ADMISSION_CONTROLS:
                shared.results.append((report, result))
            else:
                by_scope.setdefault((namespace, control), _Bucket(passes=shared)).findings.append((report, result))
    for namespace, shared in passes.items():
        if shared.results:
            for control in ADMISSION_CONTROLS:
                by_scope.setdefault((namespace, control), _Bucket(passes=shared))
    return by_scope


def _scan_assessment(made: View, scope: Scope, control: str, bucket: _Bucket) -> Assessment:
    mechanism = "background scan (PolicyReport)" + (f", {OFFLINE}" if made.offline else "")
    results = bucket.findings
    fails = [r for r in results if r[1].get("result") in ("fail", "error")]
    warns = [r for r in results if r[1].get("result") == "warn"]
    skips = [r for r in results if r[1].get("result") == "skip"]
    evidence = [_finding(made, report, result) for report, result in [*fails, *warns, *skips][:SHOWN]]
    checked, refs, passed_at = bucket.passes.facts(made) if bucket.passes.results else (0, (), None)
    when = _scanned_at(max((t for t in (_latest(results), passed_at) if t is not None), default=None))
    if fails:
        failing = _counted(sorted({t for _, r in fails for t in _resource_titles(r)}))
        return Assessment(
            control,
            scope,
            Verdict.NOT_MET,
            f"{len(fails)} violations in an enforce-mode domain: {failing}",
            tuple(evidence),
            "fix the objects (iotsec check shows how) or approve an expiring exception",
            mechanism,
        )
    if warns or skips:
        parts = [f"{len(warns)} findings admitted (warn/audit mode)" if warns else ""]
        parts.append(f"{len(skips)} waived by exceptions ({', '.join(_exception_names(skips))})" if skips else "")
        return Assessment(
            control,
            scope,
            Verdict.PARTIAL,
            "; ".join(p for p in parts if p),
            tuple(evidence),
            "fix the objects, then enforce the domain or let the exceptions expire",
            mechanism,
        )
    return Assessment(
        control,
        scope,
        Verdict.MET,
        f"{checked} objects checked{when}, no finding",
        (Evidence(f"background scan{when}: no finding for this control", refs),),
        "",
        mechanism,
    )


def _finding(made: View, report: dict[str, Any], result: dict[str, Any]) -> Evidence:
    props = result.get("properties") or {}
    text = f"{result.get('result')}: rule {result.get('rule')}: {result.get('message', '')}".strip()
    if props.get("exception"):
        text += (
            f" (exception {props['exception']}, approved by {props.get('approver', '?')}: "
            f"{props.get('justification', '')})"
        )
    refs = (*_resource_refs(made, result), made.ref(report))
    return Evidence(text, refs, _timestamp(result))


def _resource_refs(made: View, result: Mapping[str, Any]) -> list[ObjectRef]:
    return [
        ObjectRef(
            str(r.get("apiVersion", "")),
            str(r.get("kind", "")),
            str(r.get("name", "")),
            r.get("namespace"),
            made.offline,
        )
        for r in result.get("resources") or ()
        if isinstance(r, dict)
    ]


def _resource_titles(result: Mapping[str, Any]) -> list[str]:
    return [
        ObjectRef(
            str(r.get("apiVersion", "")), str(r.get("kind", "")), str(r.get("name", "")), r.get("namespace")
        ).title
        for r in result.get("resources") or ()
        if isinstance(r, dict)
    ]


def _exception_names(skips: list[Result]) -> list[str]:
    return sorted({str((r.get("properties") or {}).get("exception", "?")) for _, r in skips})


def _seconds(result: Mapping[str, Any]) -> int | None:
    stamp = result.get("timestamp")
    if isinstance(stamp, dict) and isinstance(stamp.get("seconds"), int):
        return int(stamp["seconds"])
    return None


def _timestamp(result: Mapping[str, Any]) -> str | None:
    seconds = _seconds(result)
    return rfc3339(datetime.fromtimestamp(seconds, UTC)) if seconds is not None else None


def _latest(results: list[Result]) -> int | None:
    return max((t for _, r in results if (t := _seconds(r)) is not None), default=None)


def _scanned_at(latest: int | None) -> str:
    return f" (scanned {rfc3339(datetime.fromtimestamp(latest, UTC))})" if latest is not None else ""


def _exceptions(made: View) -> Iterator[Assessment]:
    """Each waiver of every domain: active -> partial for its rule's control where it applies; expired -> evidence
    (not applicable: the rule applies again) so the report shows the history an auditor asks for."""
    now = made.inventory.now
    for resource in made.of_kind("SecurityDomain"):
        for exception in resource.spec.exceptions or ():  # type: ignore[attr-defined]
            yield from _exception_assessments(made, resource.name, resource.body, exception, now)


def _exception_assessments(
    made: View, domain: str, body: dict[str, Any], exception: PolicyException, now: datetime
) -> Iterator[Assessment]:
    controls = (
        ADMISSION_CONTROLS
        if exception.rule == "*"
        else (RULES[exception.rule].control,)
        if exception.rule in RULES
        else ()
    )
    target = exception.target
    what = f"{target.kind or 'any kind'} {target.namespace}/{target.name or '*'}"
    active = exception.expires > now
    text = (
        f"exception for rule {exception.rule} on {what}: {'active until' if active else 'expired on'} "
        f"{rfc3339(exception.expires)}, approved by {exception.approver}"
        f"{f', ticket {exception.ticket}' if exception.ticket else ''}: {exception.justification}"
    )
    evidence = (Evidence(text, (made.ref(body),), rfc3339(exception.expires)),)
    scope = made.namespace_scope(target.namespace)
    for control in controls:
        if active:
            yield Assessment(
                control,
                scope,
                Verdict.PARTIAL,
                f"rule {exception.rule} waived on {what} until {rfc3339(exception.expires)}",
                evidence,
                "fix the object so the exception can go",
                "SecurityDomain exceptions",
            )
        else:
            yield Assessment(
                control,
                scope,
                Verdict.NOT_APPLICABLE,
                f"exception for rule {exception.rule} on {what} expired: the rule applies again",
                evidence,
                "",
                "SecurityDomain exceptions",
            )


def _webhook(made: View) -> Iterator[Assessment]:
    mechanism = "ValidatingWebhookConfiguration"
    if "admissionregistration.k8s.io/ValidatingWebhookConfiguration" in made.inventory.unavailable:
        return
    for config in made.objects_of("ValidatingWebhookConfiguration"):
        hook = next((h for h in config.get("webhooks") or () if h.get("name") == WEBHOOK), None)
        if hook is None:
            continue
        ref = made.ref(config)
        policy = hook.get("failurePolicy", "Fail")
        text = f"webhook {WEBHOOK} registered in {ref.name}, failurePolicy {policy}"
        verdict, missing = (
            (Verdict.MET, "")
            if policy == "Fail"
            else (Verdict.PARTIAL, "set failurePolicy Fail: with Ignore an outage of the webhook admits anything")
        )
        for control in ADMISSION_CONTROLS:
            yield Assessment(control, CLUSTER, verdict, text, (Evidence(text, (ref,)),), missing, mechanism)
        return
    for control in ADMISSION_CONTROLS:
        yield Assessment(
            control,
            CLUSTER,
            Verdict.PARTIAL,
            f"webhook {WEBHOOK} is not registered: nothing is checked on admission",
            (),
            "install the chart's ValidatingWebhookConfiguration (the operator keeps its CA bundle)",
            mechanism,
        )


# ---------------------------------------------------------------- tenants


def tenants(inventory: Inventory) -> Iterator[Assessment]:
    """Per TenantIsolation: 9.2.4-1, its confidential data on an encrypted StorageClass that exists; 9.2.3-1, no
    RoleBinding in its namespaces gives another tenant's ServiceAccounts access."""
    made = view(inventory)
    for resource in made.of_kind("TenantIsolation"):
        scope = made.tenant_scope(resource)
        yield _tenant_storage(made, scope, resource.spec, made.ref(resource.body))
        yield _cross_tenant(made, scope, resource.spec)


def _tenant_storage(made: View, scope: Scope, spec: Any, ref: ObjectRef) -> Assessment:
    mechanism = "TenantIsolation storage and StorageClasses"
    storage = spec.storage
    if storage is None:
        return Assessment(
            C_STORAGE,
            scope,
            Verdict.PARTIAL,
            "the tenant declares no data classes: its data is not classified",
            (Evidence("TenantIsolation has no storage section", (ref,)),),
            "declare storage.dataClasses and an encrypted StorageClass",
            mechanism,
        )
    name = storage_class_name(spec.tenant_id) if storage.provisioner else storage.storage_class_name
    found = next((o for o in made.observed("StorageClass") if (o.get("metadata") or {}).get("name") == name), None)
    classes = ", ".join(storage.data_classes)
    if found is None:
        return Assessment(
            C_STORAGE,
            scope,
            Verdict.NOT_MET,
            f"StorageClass {name} for data classes {classes} not found",
            (Evidence(f"no StorageClass {name}", (ref,)),),
            "create the encrypted StorageClass",
            mechanism,
        )
    encrypted = ((found.get("metadata") or {}).get("labels") or {}).get(ENCRYPTED_LABEL) == "true"
    sc_ref = made.ref(found)
    if not encrypted:
        return Assessment(
            C_STORAGE,
            scope,
            Verdict.NOT_MET,
            f"StorageClass {name} is not labelled {ENCRYPTED_LABEL}=true",
            (Evidence(f"StorageClass {name} carries no encryption promise", (ref, sc_ref)),),
            f"use an encrypting driver and label the class {ENCRYPTED_LABEL}=true",
            mechanism,
        )
    where = f"{OFFLINE}: " if made.offline else ""
    return Assessment(
        C_STORAGE,
        scope,
        Verdict.MET,
        f"{where}data classes {classes} on encrypted StorageClass {name}",
        (Evidence(f"StorageClass {name} labelled {ENCRYPTED_LABEL}=true", (ref, sc_ref)),),
        "",
        mechanism,
    )


def _cross_tenant(made: View, scope: Scope, spec: Any) -> Assessment:
    mechanism = "RoleBindings in the tenant's namespaces"
    own = set(spec.namespaces)
    tenant_ns = {
        ns for ns, obj in made.namespaces.items() if ((obj.get("metadata") or {}).get("labels") or {}).get(TENANT_LABEL)
    }
    tenant_ns |= set(made.tenant_of)
    bindings = [
        o
        for o in made.observed("RoleBinding", "rbac.authorization.k8s.io")
        if (o.get("metadata") or {}).get("namespace") in own
    ]
    foreign = [
        b
        for b in bindings
        if any(
            s.get("kind") == "ServiceAccount" and s.get("namespace") in tenant_ns - own for s in b.get("subjects") or ()
        )
    ]
    if foreign:
        return Assessment(
            C_TENANT_RBAC,
            scope,
            Verdict.NOT_MET,
            f"{len(foreign)} RoleBindings give other tenants' ServiceAccounts access: "
            + _counted([_title(b) for b in foreign]),
            (Evidence("cross-tenant RoleBindings", _refs(made.ref(b) for b in foreign)),),
            "remove the bindings: a tenant's data is for its own identities only",
            mechanism,
        )
    if "rbac.authorization.k8s.io/RoleBinding" in made.inventory.unavailable:
        return Assessment(
            C_TENANT_RBAC,
            scope,
            Verdict.PARTIAL,
            "RoleBindings could not be read",
            (),
            "grant the report list access to RoleBindings",
            mechanism,
        )
    where = f"{OFFLINE}: " if made.offline else ""
    return Assessment(
        C_TENANT_RBAC,
        scope,
        Verdict.MET,
        f"{where}{len(bindings)} RoleBindings in {len(own)} namespaces, none to another tenant's identities",
        (Evidence("RoleBindings of the tenant's namespaces", _refs(made.ref(b) for b in bindings)),),
        "",
        mechanism,
    )


# ---------------------------------------------------------------- controls one mechanism also answers

ALIASES: dict[str, tuple[str, ...]] = {
    "X1369-9.2.2-1": ("X1369-9.2.2-2", "X1369-9.1.5.3-1"),  # TLS gives integrity too; credentials in transit
    "X1369-9.1.1.2-3": ("X1369-9.1.5.3-1",),  # no literal secrets: credentials only in Secrets
    "X1369-9.2.4-2": ("X1369-9.1.5.3-1",),  # keys never in ConfigMaps
    "X1369-9.3.1-4": ("X1369-9.6.3-2",),  # host resource access by policy: the catalog says "as 9.3.1-4"
    "X1369-9.1.1.2-1": ("X1369-9.1.5.1-1",),  # per-app identity (as 9.1.1.2)
    "X1369-9.1.1.2-5": ("X1369-9.1.5.4-1",),  # per-app Roles
    "X1369-9.1.3.2-1": ("X1369-9.1.5.4-1",),  # quotas
    "X1369-9.5.3-1": ("X1369-9.1.3.3-1",),  # rate limits on exposed Ingress
    "X1369-9.3.2-3": ("X1369-9.3.3-2",),  # unneeded middleware interfaces: only declared ports open
}
PART_ONLY: dict[str, str] = {
    "X1369-9.1.3.3-1": "suspending users on abnormal behaviour (anomaly rules on audit events) is not judged here",
    "X1369-9.3.3-2": "interfaces a middleware serves on a declared port (admin consoles, debug endpoints) are neither "
    "disabled nor detected",
}
"""Aliased controls the mechanism meets only in part: a met there reads partial."""


def with_aliases(assessments: Iterable[Assessment]) -> Iterator[Assessment]:
    """Each assessment, and a copy for every control the same mechanism answers (ALIASES), saying so."""
    for a in assessments:
        yield a
        for alias in ALIASES.get(a.control, ()):
            verdict, missing = a.verdict, a.missing
            if alias in PART_ONLY and verdict is Verdict.MET:
                verdict, missing = Verdict.PARTIAL, PART_ONLY[alias]
            yield replace(a, control=alias, verdict=verdict, missing=missing, summary=f"(as {a.control}) {a.summary}")


def desired_state(inventory: Inventory) -> Iterator[Assessment]:
    return with_aliases(_desired_state(inventory))


desired_state.__doc__ = _desired_state.__doc__


def pod_security_labels(inventory: Inventory) -> Iterator[Assessment]:
    return with_aliases(_pod_security_labels(inventory))


pod_security_labels.__doc__ = _pod_security_labels.__doc__


def background_scan(inventory: Inventory) -> Iterator[Assessment]:
    return with_aliases(_background_scan(inventory))


background_scan.__doc__ = _background_scan.__doc__


def _aliased(controls: Iterable[str]) -> tuple[str, ...]:
    found = list(controls)
    return tuple(dict.fromkeys([*found, *(alias for c in found for alias in ALIASES.get(c, ()))]))


PROBES: tuple[Probe, ...] = (desired_state, pod_security_labels, zones, background_scan, tenants)

ANSWERS: dict[Probe, tuple[str, ...]] = {
    desired_state: _aliased(
        (
            C_SEGMENT,
            C_MUTUAL,
            C_ISOLATION,
            C_LEGITIMACY,
            "X1369-9.5.2-1",
            "X1369-9.5.2-2",
            "X1369-9.3.2-3",
            "X1369-9.1.4-1",
            C_BOUNDARY,
            "X1369-9.1.2-1",
            "X1369-9.1.2-2",
            "X1369-9.1.1.2-1",
            "X1369-9.1.1.2-2",
            "X1369-9.1.1.2-5",
            "X1369-9.1.3.2-1",
            "X1369-9.1.4-4",
            C_STORAGE,
            "X1369-9.1.1.1-1",
            "X1369-9.2.4-6",
        )
    ),
    pod_security_labels: _aliased((C_HOST_ACCESS, C_CONTAINERS)),
    zones: (C_MEMBERSHIP, C_BOUNDARY),
    background_scan: _aliased(ADMISSION_CONTROLS),
    tenants: (C_STORAGE, C_TENANT_RBAC),
}
