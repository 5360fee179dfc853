"""Which SecurityDomain exception waives a finding on an object: the excepted object itself, and what its
controllers create from it (Deployment → ReplicaSet → Pod, CronJob → Job → Pod, Knative Service → Configuration →
Revision → Deployment → ...), every kind matched with its API group.

A child is recognised by its controller ownerReference: of a kind the target's controllers create (directly or
further down), named after the target (`mqtt`, `mqtt-5d8f9`, `mqtt-5d8f9-x2x4z`, `db-0`). ownerReferences are
written by the client, so inheritance is trusted only from service accounts and system identities (the
controllers), or where no identity is known (`iotsec check`): a person who writes a Pod claiming a ReplicaSet
parent gets no waiver for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from iotsec.admission.context import Context
from iotsec.model.workloads import BUILT_IN, CHECKED_OBJECT_KINDS, canonical, group_of, object_key

if TYPE_CHECKING:
    from iotsec.api.securitydomain import PolicyException

Key = tuple[str, str]  # (API group, kind)
POD: Key = ("", "Pod")
REPLICA_SET: Key = ("apps", "ReplicaSet")
JOB: Key = ("batch", "Job")
KNATIVE = "serving.knative.dev"
KRUISE = "apps.kruise.io"
# What each kind's controller creates and owns (its controller ownerReference points back)
CHILDREN: dict[Key, tuple[Key, ...]] = {
    ("apps", "Deployment"): (REPLICA_SET,),
    REPLICA_SET: (POD,),
    ("apps", "StatefulSet"): (POD,),
    ("apps", "DaemonSet"): (POD,),
    ("", "ReplicationController"): (POD,),
    JOB: (POD,),
    ("batch", "CronJob"): (JOB,),
    ("argoproj.io", "Rollout"): (REPLICA_SET,),
    ("argoproj.io", "Workflow"): (POD,),
    ("argoproj.io", "CronWorkflow"): (("argoproj.io", "Workflow"),),
    (KNATIVE, "Service"): ((KNATIVE, "Configuration"),),
    (KNATIVE, "Configuration"): ((KNATIVE, "Revision"),),
    (KNATIVE, "Revision"): (("apps", "Deployment"),),
    (KRUISE, "CloneSet"): (POD,),
    (KRUISE, "StatefulSet"): (POD,),
    (KRUISE, "DaemonSet"): (POD,),
    (KRUISE, "BroadcastJob"): (POD,),
    (KRUISE, "AdvancedCronJob"): (JOB, (KRUISE, "BroadcastJob")),
    ("keda.sh", "ScaledJob"): (JOB,),
}
# The group a kind named without apiGroup means: Kubernetes' own first (Service is core, not Knative's)
_PREFERRED = ("", "apps", "batch", "networking.k8s.io", "rbac.authorization.k8s.io")
_KNOWN: tuple[Key, ...] = tuple(
    sorted(
        {*CHILDREN, *(c.key for c in BUILT_IN), *CHECKED_OBJECT_KINDS},
        key=lambda k: (k[0] not in _PREFERRED, _PREFERRED.index(k[0]) if k[0] in _PREFERRED else 0, k[0]),
    )
)


def exception_for(rule: str, obj: dict[str, Any], ctx: Context) -> PolicyException | None:
    """The domain's first live exception of `rule` (or *) that targets `obj`, or None."""
    metadata = obj.get("metadata") or {}
    for exception in ctx.domain.exceptions:
        target = exception.target
        if exception.rule not in (rule, "*") or exception.expires <= ctx.now:
            continue
        if target.namespace == metadata.get("namespace") and targets(exception, obj, ctx.user):
            return exception
    return None


def targets(exception: PolicyException, obj: Mapping[str, Any], user: str = "") -> bool:
    """Whether the exception's kind (with its group) and name select `obj`, or `obj` descends from what they
    select."""
    target = exception.target
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name") or metadata.get("generateName") or "")
    wanted = target_key(target.kind, target.api_group)
    if _same_kind(wanted, _key(obj)) and target.name in (None, name):
        return True
    if target.name is None or wanted is None or not _controllers_may_claim(user):
        return False
    owner = _controller(metadata)
    if owner is None or (not name.startswith(f"{target.name}-") and name != target.name):
        return False
    owner_key, owner_name = owner
    lineage = set(_descendants(wanted)) | {wanted}
    named = owner_name == target.name or owner_name.startswith(f"{target.name}-")
    return named and owner_key in lineage and _key(obj) in CHILDREN.get(owner_key, ())


def target_key(kind: str | None, api_group: str | None) -> Key | None:
    """(group, kind) an exception target means; None for any kind. Without apiGroup, the group Kubernetes or the
    workload table knows that kind by (Kubernetes' own first); an unknown kind keeps group None (any group)."""
    if kind is None:
        return None
    if api_group is not None:
        return (api_group, kind)
    return next((k for k in _KNOWN if k[1] == kind), ("*", kind))


def _same_kind(wanted: Key | None, found: Key) -> bool:
    return wanted is None or (wanted[1] == found[1] and wanted[0] in ("*", found[0]))


def _key(obj: Mapping[str, Any]) -> Key:
    group, kind = canonical(*object_key(obj))
    if group is None:  # no apiVersion (a hand-written manifest): the kind Kubernetes or the table knows by name
        return next((k for k in _KNOWN if k[1] == kind), ("", kind))
    return (group, kind)


def _controller(metadata: Mapping[str, Any]) -> tuple[Key, str] | None:
    """(group, kind) and name of the object's controller ownerReference."""
    for ref in metadata.get("ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            kind, group = str(ref.get("kind") or ""), group_of(ref.get("apiVersion"))
            key = canonical(group, kind) if group is not None else (None, kind)
            resolved = key if key[0] is not None else next((k for k in _KNOWN if k[1] == kind), ("", kind))
            return (str(resolved[0]), kind), str(ref.get("name") or "")
    return None


def _descendants(key: Key) -> Iterator[Key]:
    seen: set[Key] = set()
    stack = list(CHILDREN.get(key, ()))
    while stack:
        child = stack.pop()
        if child not in seen:
            seen.add(child)
            yield child
            stack.extend(CHILDREN.get(child, ()))


def _controllers_may_claim(user: str) -> bool:
    """Controllers create children: service accounts and system identities; "" is no identity (iotsec check)."""
    return user == "" or user.startswith("system:")
