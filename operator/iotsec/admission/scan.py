"""The background scan, pure: the objects that already exist, judged as the webhook would admit them now.

`scan(objects, now)` takes what a cluster holds (or what files hold, for `iotsec report` offline) and judges every
object of a kind the webhook judges with the same engine and context `iotsec check` uses
(`snapshot_from_objects`, `operator_policies`, `judge_document`), and the webhook's exclusions: kube-system,
kube-public,
kube-node-lease, the platform's release namespace and the chart's `webhook.excludedNamespaces`. Only namespaces
that belong to a SecurityDomain (and iotsec's audit namespace, which the webhook holds to restricted) are scanned,
with the cluster-scoped objects (ClusterRoleBindings): a namespace in no domain is the membership check's concern,
not a finding per object. Kubernetes' own RBAC defaults (bindings labelled kubernetes.io/bootstrapping=rbac-defaults
that bind only system identities) are left out: the API server keeps them, and its controllers need escalating
roles.

Objects are read as stored (a live object has the API server's defaults and its namespace already).

One answer per object that a person wrote: an object whose controller ownerReference points to an object of the
scan (a Deployment's ReplicaSet, the Pods of a ReplicaSet, Job, StatefulSet or DaemonSet, a CronJob's Job) is not
reported separately when it breaks no rule its owner does not already break, or when it is scaled to zero (the old
ReplicaSets a Deployment keeps for rollbacks); the owner answers for it. A child that breaks more than its owner and
runs (a Pod written with a forged ownerReference, the old ReplicaSet of a rollout still under way) is reported
itself: ownerReferences are written by clients, and must not hide a finding. An owner's waiver answers only for its
children's waivers, never for their violations: the real children of a waived object are waived themselves (the
exception's lineage), so a child that breaks the waived rule unwaived is not one of them.

An exception (a SecurityDomain's waiver) that applies to a finding turns it into a waiver with the exception's
name (`<domain>/exceptions[i]`), justification and approver: reported as skipped, never as passed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from iotsec.admission.context import Context, Snapshot
from iotsec.admission.defaults import DEFAULT_NAMESPACE, apply_api_defaults
from iotsec.admission.exceptions import exception_for
from iotsec.admission.model import Decision, Violation, grouped_lines
from iotsec.admission.rules import RULES
from iotsec.admission.snapshot import CONTEXT_KINDS, Report, judge_document, operator_policies, snapshot_from_objects
from iotsec.api.validation import Resource, is_iotsec, parse_resource
from iotsec.model.manifests import Document, clip
from iotsec.model.names import ALWAYS_EXCLUDED
from iotsec.model.platform import Platform
from iotsec.model.workloads import BUILT_IN, CHECKED_OBJECT_KINDS, canonical, group_of

MESSAGE_LIMIT = 1024  # one result's message: the grouped lines of one rule on one object

_VERSIONS = {
    "": ("v1",),
    "apps": ("v1",),
    "batch": ("v1", "v1beta1"),  # CronJob is batch/v1beta1 before Kubernetes 1.21
    "networking.k8s.io": ("v1",),
    "rbac.authorization.k8s.io": ("v1",),
    "argoproj.io": ("v1alpha1",),
    "serving.knative.dev": ("v1",),
    "apps.kruise.io": ("v1alpha1", "v1beta1"),
    "keda.sh": ("v1alpha1",),
}
SCANNED_KINDS: tuple[tuple[tuple[str, ...], str], ...] = tuple(
    (tuple(f"{group}/{v}" if group else v for v in _VERSIONS[group]), kind)
    for group, kind in (
        *(c.key for c in BUILT_IN),
        *sorted(CHECKED_OBJECT_KINDS),
    )
)
"""((apiVersions to try, newest first), kind) of every kind the scan judges: the pod-spec table and the objects
admission checks (Services, Ingresses, ConfigMaps, PVCs, NetworkPolicies, RoleBindings, ClusterRoleBindings)."""


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    name: str
    namespace: str | None = None
    uid: str | None = None

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            str(obj.get("apiVersion") or ""),
            str(obj.get("kind") or ""),
            str(meta.get("name") or meta.get("generateName") or ""),
            meta.get("namespace") or None,
            meta.get("uid") or None,
        )

    @property
    def title(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass(frozen=True)
class RuleFinding:
    """The violations of one rule on one object: its control, severity and grouped denial lines."""

    rule: str
    control: str
    severity: str
    message: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Waiver:
    """A finding an exception waives: which exception, why, who approved it, until when."""

    rule: str
    control: str
    severity: str
    exception: str  # <domain>/exceptions[i]
    justification: str
    approver: str
    expires: str
    ticket: str | None = None


@dataclass(frozen=True)
class ScannedObject:
    ref: ObjectRef
    namespace: str | None
    domain: str | None
    mode: str  # enforce, warn or audit
    violations: tuple[RuleFinding, ...] = ()
    waivers: tuple[Waiver, ...] = ()
    decision: Decision | None = field(default=None, compare=False, repr=False)

    @property
    def failing(self) -> bool:
        """Violations the webhook would deny now (enforce mode)."""
        return bool(self.violations) and self.mode == "enforce"


@dataclass
class ScanResult:
    now: datetime
    objects: list[ScannedObject] = field(default_factory=list)
    excluded: Counter[str] = field(default_factory=Counter)  # namespace -> objects the webhook never sees there
    outside_domains: Counter[str] = field(default_factory=Counter)  # namespace in no domain -> objects not scanned
    not_checked: Counter[str] = field(default_factory=Counter)  # kind -> objects the webhook does not judge
    answered_by_owner: int = 0  # children whose owner answers for them
    invalid: list[tuple[ObjectRef, str]] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return sum(len(o.violations) for o in self.objects)

    @property
    def namespaces(self) -> list[str]:
        """The namespaces with checked objects (each gets a PolicyReport)."""
        return sorted({o.namespace for o in self.objects if o.namespace})


def scan(
    objects: Iterable[dict[str, Any]],
    now: datetime,
    platform: Platform | None = None,
    unassigned: str = "enforce",
    excluded_namespaces: Sequence[str] = (),
    assume_named_namespaces_exist: bool = False,
    parse: Callable[[dict[str, Any]], Resource] = parse_resource,
) -> ScanResult:
    """Judge every object of a scanned kind in the namespaces of SecurityDomains (and the cluster-scoped ones), in
    the context the other objects give (custom resources, Namespaces, StorageClasses, ClusterRoles, ConfigMaps).
    `parse`: how custom resources are parsed (the operator's scan: `parse_spec`, remembered across passes)."""
    platform = platform or Platform()
    everything = [o for o in objects if isinstance(o, dict) and isinstance(o.get("metadata"), dict)]
    context = [o for o in everything if is_iotsec(o) or o.get("kind") in CONTEXT_KINDS]
    snapshot = snapshot_from_objects(context, unassigned, assume_named_namespaces_exist, platform=platform, parse=parse)
    candidates = [o for o in everything if not is_iotsec(o) and o.get("kind") not in ("Namespace",)]
    own = operator_policies(context, parse) if any(o.get("kind") == "NetworkPolicy" for o in candidates) else {}
    result = ScanResult(now)
    excluded = {*ALWAYS_EXCLUDED, platform.namespace, *excluded_namespaces}
    judged: dict[tuple[str, ...], ScannedObject] = {}
    for obj in candidates:
        namespace = obj["metadata"].get("namespace")
        if namespace in excluded:
            result.excluded[namespace] += 1
            continue
        if _kubernetes_bootstrap(obj):
            result.not_checked[f"{obj['kind']} {KUBERNETES_BOOTSTRAP}"] += 1
            continue
        if namespace and snapshot.domain_of(namespace).name is None:
            result.outside_domains[namespace] += 1
            continue
        scanned = _scan_one(obj, snapshot, now, own, result)
        if scanned is not None:
            judged[_identity(obj)] = scanned
    result.objects = _owners_answer(judged, candidates, result)
    return result


KUBERNETES_BOOTSTRAP = "(Kubernetes' own RBAC defaults)"
BOOTSTRAP_LABEL = ("kubernetes.io/bootstrapping", "rbac-defaults")


def _kubernetes_bootstrap(obj: Mapping[str, Any]) -> bool:
    """A binding the API server itself keeps (its controllers' escalating roles): labelled as RBAC defaults and
    binding only system identities (system: users and groups, kube-system ServiceAccounts). The label alone would
    let anyone hide a binding; these subjects can only be used from inside kube-system, which is excluded anyway."""
    if obj.get("kind") not in ("ClusterRoleBinding", "RoleBinding"):
        return False
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if labels.get(BOOTSTRAP_LABEL[0]) != BOOTSTRAP_LABEL[1]:
        return False
    subjects = obj.get("subjects") or []
    return isinstance(subjects, list) and all(_system_subject(s) for s in subjects)


def _system_subject(subject: Any) -> bool:
    if not isinstance(subject, Mapping):
        return False
    name = str(subject.get("name") or "")
    if subject.get("kind") == "ServiceAccount":
        return subject.get("namespace") == "kube-system"
    return name.startswith("system:")


def scan_manifests(
    objects: Iterable[dict[str, Any]],
    now: datetime,
    namespace: str = DEFAULT_NAMESPACE,
    platform: Platform | None = None,
    unassigned: str = "enforce",
) -> ScanResult:
    """The scan over manifests as written (`iotsec report` offline): each object as the API server would store it
    when created in `namespace` (as `iotsec check -n`), and the namespaces a domain names taken to exist."""
    stored = [
        apply_api_defaults(o, namespace) for o in objects if isinstance(o, dict) and isinstance(o.get("kind"), str)
    ]
    return scan(stored, now, platform, unassigned, assume_named_namespaces_exist=True)


def _scan_one(
    obj: dict[str, Any], snapshot: Snapshot, now: datetime, own: Mapping[tuple[str, str], Any], result: ScanResult
) -> ScannedObject | None:
    """One object judged through `iotsec check`'s own `judge_document` (exclusions, the operator's planned policies)."""
    report = Report()
    judge_document(Document("<cluster>", 0, obj), obj, snapshot, now, report, own)
    result.not_checked.update({k: v for k, v in report.not_checked.items() if k not in CONTEXT_KINDS})
    result.excluded.update(report.excluded)
    ref = ObjectRef.of(obj)
    for _doc, problems in report.invalid:
        result.invalid.append((ref, "; ".join(clip(p.message, 200) for p in problems)))
    if not report.checked:
        return None
    checked = report.checked[0]
    decision = checked.decision
    ctx = snapshot.context(checked.namespace, now)
    return ScannedObject(
        ref,
        checked.namespace,
        checked.domain,
        decision.mode,
        _rule_findings(decision),
        _waivers(obj, decision, ctx),
        decision,
    )


def _rule_findings(decision: Decision) -> tuple[RuleFinding, ...]:
    by_rule: dict[str, list[Violation]] = {}
    for violation in decision.violations:
        by_rule.setdefault(violation.rule, []).append(violation)
    found = []
    for rule, members in sorted(by_rule.items()):
        lines = [line.text for line in grouped_lines(members, decision.names)]
        paths = tuple(dict.fromkeys(v.path for v in members))
        message = clip("; ".join(lines), MESSAGE_LIMIT)
        found.append(RuleFinding(rule, members[0].control, members[0].severity, message, paths))
    return tuple(found)


def _waivers(obj: dict[str, Any], decision: Decision, ctx: Context) -> tuple[Waiver, ...]:
    """The exceptions the decision used, found again for their justification and place in the domain."""
    waivers = []
    for use in decision.exceptions_used:
        exception = exception_for(use.rule, obj, ctx)
        if exception is None:  # the user-dependent lineage case; the use itself still says who approved it
            continue
        index = ctx.domain.exceptions.index(exception)
        rule = RULES[use.rule]
        waivers.append(
            Waiver(
                use.rule,
                rule.control,
                rule.severity,
                f"{use.domain}/exceptions[{index}]",
                exception.justification,
                exception.approver,
                use.expires,
                exception.ticket,
            )
        )
    return tuple(waivers)


def _identity(obj: Mapping[str, Any]) -> tuple[str, ...]:
    meta = obj.get("metadata") or {}
    group, kind = canonical(group_of(obj.get("apiVersion")), str(obj.get("kind") or ""))
    return (str(group or ""), kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _owner_identity(obj: Mapping[str, Any]) -> tuple[str, ...] | None:
    meta = obj.get("metadata") or {}
    refs = meta.get("ownerReferences")
    for ref in refs if isinstance(refs, list) else ():  # as written offline, anything
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            group, kind = canonical(group_of(ref.get("apiVersion")), str(ref.get("kind") or ""))
            return (str(group or ""), kind, str(meta.get("namespace") or ""), str(ref.get("name") or ""))
    return None


def _owners_answer(
    judged: dict[tuple[str, ...], ScannedObject], candidates: list[dict[str, Any]], result: ScanResult
) -> list[ScannedObject]:
    """The judged objects less the children whose owner (judged too) already breaks every rule they break."""
    kept = []
    by_identity = {_identity(o): o for o in candidates}
    for identity, scanned in judged.items():
        owner = _owner_identity(by_identity[identity])
        if (
            owner is not None
            and owner in judged
            and (_idle(by_identity[identity]) or _answered_for(scanned, judged[owner]))
        ):
            result.answered_by_owner += 1
            continue
        kept.append(scanned)
    return kept


def _idle(obj: Mapping[str, Any]) -> bool:
    """A controller's child scaled to zero (an old ReplicaSet a Deployment keeps for rollbacks): it runs nothing."""
    spec = obj.get("spec")
    return isinstance(spec, Mapping) and spec.get("replicas") == 0


def _answered_for(child: ScannedObject, owner: ScannedObject) -> bool:
    """Whether the owner's findings say all the child's: each violation the owner's too (a waiver there would turn
    the child's failure into a skip), each waiver the owner's violation or waiver."""
    violated = {f.rule for f in owner.violations}
    return {f.rule for f in child.violations} <= violated and {w.rule for w in child.waivers} <= violated | {
        w.rule for w in owner.waivers
    }
