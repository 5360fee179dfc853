"""Which kinds carry pod specs, matched with their API group, and where in each object the pod specs sit.

One table serves the admission engine (it reads pod specs from these kinds), the webhook (it answers for them) and
the ValidatingWebhookConfiguration (it registers their resources). The chart's values (`webhook.workloadKinds`,
passed to the webhook as IOTSEC_WORKLOAD_KINDS) and a SecurityDomain's `spec.workloadKinds` add kinds; they cannot
redefine a built-in one.

Paths are dotted keys; `name[*]` walks every item of the list `name` (`spec.templates[*].podSpec`). Each path
leads to a core/v1 PodSpec, except for Argo Workflows (shape "argo"), whose paths lead to a WorkflowSpec: see
`iotsec.admission.podspecs`.

Sources the paths were checked against (fetched 2026-12; field names as the projects' CRDs and API references
define them):
- Argo Rollouts: Rollout `spec.template` is a PodTemplateSpec (argoproj/argo-rollouts manifests/install.yaml,
  CRD rollouts.argoproj.io; argo-rollouts docs "features/specification"). A Rollout with `spec.workloadRef`
  instead refers to a Deployment, which is checked itself.
- Knative Serving (serving.knative.dev/v1, knative/serving config/core/300-resources/*.yaml, CRDs labelled
  duck.knative.dev/podspecable): Service and Configuration `spec.template` is a RevisionTemplateSpec whose `spec`
  is a RevisionSpec, which inlines PodSpec; a Revision's own `spec` is that RevisionSpec.
- OpenKruise (apps.kruise.io; CloneSet v1alpha1, Advanced StatefulSet v1alpha1 and v1beta1, Advanced DaemonSet
  v1alpha1, BroadcastJob v1alpha1): `spec.template` is a PodTemplateSpec, as in apps/v1 (openkruise/kruise
  apis/apps). AdvancedCronJob nests a CloneSet or BroadcastJob template: `spec.template.broadcastJobTemplate
  .spec.template.spec` and `spec.template.jobTemplate.spec.template.spec`.
- KEDA ScaledJob (keda.sh/v1alpha1): `spec.jobTargetRef` is a batch/v1 JobSpec, its pod spec at
  `spec.jobTargetRef.template.spec` (keda.sh/docs/latest/reference/scaledjob-spec).
- Argo Workflows (argoproj.io/v1alpha1): Workflow, WorkflowTemplate and ClusterWorkflowTemplate `spec`, and
  CronWorkflow `spec.workflowSpec`, are WorkflowSpecs; each template with `container`, `script` or
  `containerSet` runs a pod (io.argoproj.workflow.v1alpha1.Template, WorkflowSpec in the Argo Workflows API
  reference and argo-workflows-client models).
- Flux (source, kustomize, helm, notification, image controllers) embeds no pod spec in any of its kinds: nothing
  to map.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

POD = "pod"  # each path leads to a core/v1 PodSpec
ARGO = "argo"  # each path leads to an Argo WorkflowSpec (its templates run the pods)

_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[\*\])?$")
_GROUP = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$")
_KIND = re.compile(r"^[A-Z][A-Za-z0-9]{0,62}$")
_RESOURCE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MAX_PATHS = 16


class WorkloadKindLike(Protocol):
    """What the engine needs of a kind: a PodCarrier, or a SecurityDomain's WorkloadKind (same field names)."""

    @property
    def group(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def resource(self) -> str: ...
    @property
    def pod_spec_paths(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class PodCarrier:
    """A kind (with its API group) that carries pod specs, the resource the webhook registers, and the paths."""

    group: str
    kind: str
    resource: str
    pod_spec_paths: tuple[str, ...]
    shape: str = POD
    namespaced: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.kind)


def _c(group: str, kind: str, resource: str, *paths: str, shape: str = POD, namespaced: bool = True) -> PodCarrier:
    return PodCarrier(group, kind, resource, paths, shape, namespaced)


_TEMPLATE = "spec.template.spec"
BUILT_IN: tuple[PodCarrier, ...] = (
    _c("", "Pod", "pods", "spec"),
    _c("", "ReplicationController", "replicationcontrollers", _TEMPLATE),
    _c("apps", "Deployment", "deployments", _TEMPLATE),
    _c("apps", "StatefulSet", "statefulsets", _TEMPLATE),
    _c("apps", "DaemonSet", "daemonsets", _TEMPLATE),
    _c("apps", "ReplicaSet", "replicasets", _TEMPLATE),
    _c("batch", "Job", "jobs", _TEMPLATE),
    _c("batch", "CronJob", "cronjobs", "spec.jobTemplate.spec.template.spec"),
    _c("argoproj.io", "Rollout", "rollouts", _TEMPLATE),
    _c("argoproj.io", "Workflow", "workflows", "spec", shape=ARGO),
    _c("argoproj.io", "CronWorkflow", "cronworkflows", "spec.workflowSpec", shape=ARGO),
    _c("argoproj.io", "WorkflowTemplate", "workflowtemplates", "spec", shape=ARGO),
    _c("argoproj.io", "ClusterWorkflowTemplate", "clusterworkflowtemplates", "spec", shape=ARGO, namespaced=False),
    _c("serving.knative.dev", "Service", "services", _TEMPLATE),
    _c("serving.knative.dev", "Configuration", "configurations", _TEMPLATE),
    _c("serving.knative.dev", "Revision", "revisions", "spec"),
    _c("apps.kruise.io", "CloneSet", "clonesets", _TEMPLATE),
    _c("apps.kruise.io", "StatefulSet", "statefulsets", _TEMPLATE),
    _c("apps.kruise.io", "DaemonSet", "daemonsets", _TEMPLATE),
    _c("apps.kruise.io", "BroadcastJob", "broadcastjobs", _TEMPLATE),
    _c(
        "apps.kruise.io",
        "AdvancedCronJob",
        "advancedcronjobs",
        "spec.template.broadcastJobTemplate.spec.template.spec",
        "spec.template.jobTemplate.spec.template.spec",
    ),
    _c("keda.sh", "ScaledJob", "scaledjobs", "spec.jobTargetRef.template.spec"),
)
BUILT_IN_KINDS: Mapping[tuple[str, str], PodCarrier] = {c.key: c for c in BUILT_IN}

# Groups the API server serves the same kinds under (older manifests). The webhook never sees them: with
# matchPolicy Equivalent the API server converts such requests to the registered group first.
EQUIVALENT_GROUPS: Mapping[tuple[str, str], str] = {
    ("extensions", "Deployment"): "apps",
    ("extensions", "DaemonSet"): "apps",
    ("extensions", "ReplicaSet"): "apps",
    ("extensions", "Ingress"): "networking.k8s.io",
    ("extensions", "NetworkPolicy"): "networking.k8s.io",
}

# Kinds without pod specs that admission checks (iotsec.admission.resources), with their groups.
CHECKED_OBJECT_KINDS: frozenset[tuple[str, str]] = frozenset(
    {
        ("", "Service"),
        ("", "PersistentVolumeClaim"),
        ("", "ConfigMap"),
        ("networking.k8s.io", "Ingress"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    }
)

CHECKED_OBJECT_NAMES = frozenset(kind for _, kind in CHECKED_OBJECT_KINDS)

# Where Kubernetes' own kinds keep their pod spec: the objects the API server itself defaults (admission.defaults).
POD_SPEC_PATHS = {
    c.kind: tuple(c.pod_spec_paths[0].split("."))
    for c in BUILT_IN
    if c.group in ("", "apps", "batch") and c.shape == POD
}


def group_of(api_version: Any) -> str | None:
    """The API group of an apiVersion (`apps/v1` → apps, `v1` → the core group ""); None when it is missing."""
    if not isinstance(api_version, str) or not api_version:
        return None
    group, slash, _ = api_version.rpartition("/")
    return group if slash else ""


def object_key(obj: Mapping[str, Any]) -> tuple[str | None, str]:
    """(group, kind) of a manifest object; group None when it has no apiVersion."""
    kind = obj.get("kind")
    return group_of(obj.get("apiVersion")), kind if isinstance(kind, str) else ""


def canonical(group: str | None, kind: str) -> tuple[str | None, str]:
    return (EQUIVALENT_GROUPS.get((group or "", kind), group), kind) if group is not None else (None, kind)


def find_carrier(group: str | None, kind: str, extra: Iterable[WorkloadKindLike] = ()) -> WorkloadKindLike | None:
    """The table entry for a kind of a group, built-in first, then `extra`. An object without apiVersion (group
    None: no real API object, only a hand-written manifest) is taken as the built-in kind of that name."""
    group, kind = canonical(group, kind)
    if group is None:
        return next((c for c in BUILT_IN if c.kind == kind and c.group in ("", "apps", "batch")), None)
    found = BUILT_IN_KINDS.get((group, kind))
    if found is not None:
        return found
    return next((c for c in extra if c.group == group and c.kind == kind), None)


def checks_object(group: str | None, kind: str) -> bool:
    """Whether admission checks this kind of object for itself (not for a pod spec)."""
    group, kind = canonical(group, kind)
    if group is None:
        return any(k == kind for _, k in CHECKED_OBJECT_KINDS)
    return (group, kind) in CHECKED_OBJECT_KINDS


@lru_cache(maxsize=256)  # every object of a kind walks the same few paths
def parse_path(path: str) -> tuple[str, ...]:
    """The segments of a pod-spec path; ValueError saying what is wrong with it."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"pod-spec path {path!r} must be a non-empty string")
    segments = tuple(path.split("."))
    bad = [s for s in segments if not _SEGMENT.match(s)]
    if bad:
        raise ValueError(
            f"pod-spec path {path!r}: segment {bad[0]!r} is not a field name (letters, digits, _), optionally "
            "followed by [*] to walk a list; e.g. spec.template.spec or spec.templates[*].podSpec"
        )
    return segments


def carrier_from(entry: Any, where: str) -> PodCarrier:
    """A PodCarrier from a `{group, kind, resource, podSpecPaths}` mapping; ValueError naming `where` and the
    field otherwise."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: must be an object with group, kind, resource and podSpecPaths")
    unknown = sorted(set(entry) - {"group", "kind", "resource", "podSpecPaths"})
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r} (fields: group, kind, resource, podSpecPaths)")
    group, kind, resource = entry.get("group", ""), entry.get("kind"), entry.get("resource")
    if not isinstance(group, str) or not _GROUP.match(group) or len(group) > 253:
        raise ValueError(f"{where}.group: {group!r} is not an API group (e.g. apps.example.com, '' for core)")
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ValueError(f"{where}.kind: {kind!r} is not a kind (CamelCase, e.g. Rollout)")
    if not isinstance(resource, str) or not _RESOURCE.match(resource):
        raise ValueError(f"{where}.resource: {resource!r} is not a plural resource name (e.g. rollouts)")
    paths = entry.get("podSpecPaths")
    if not isinstance(paths, list) or not paths or len(paths) > MAX_PATHS:
        raise ValueError(f"{where}.podSpecPaths: must be a list of 1-{MAX_PATHS} paths, got {paths!r}")
    for index, path in enumerate(paths):
        try:
            parse_path(path)
        except ValueError as exc:
            raise ValueError(f"{where}.podSpecPaths[{index}]: {exc}") from None
    if (group, kind) in BUILT_IN_KINDS or (group, kind) in EQUIVALENT_GROUPS or (group, kind) in CHECKED_OBJECT_KINDS:
        raise ValueError(f"{where}: {kind} of group {group or 'core'!r} is built in; it cannot be redefined")
    return PodCarrier(group, kind, resource, tuple(paths))


def parse_workload_kinds(text: str) -> tuple[PodCarrier, ...]:
    """The kinds a JSON list of `{group, kind, resource, podSpecPaths}` adds (IOTSEC_WORKLOAD_KINDS)."""
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"must be a JSON list of {{group, kind, resource, podSpecPaths}}: {exc}") from None
    if not isinstance(entries, list):
        raise ValueError("must be a JSON list of {group, kind, resource, podSpecPaths}")
    carriers = tuple(carrier_from(entry, f"[{index}]") for index, entry in enumerate(entries))
    seen: set[tuple[str, str]] = set()
    for index, carrier in enumerate(carriers):
        if carrier.key in seen:
            raise ValueError(f"[{index}]: {carrier.kind} of group {carrier.group!r} is listed twice")
        seen.add(carrier.key)
    return carriers


def carriers_of(kinds: Iterable[WorkloadKindLike]) -> tuple[PodCarrier, ...]:
    """PodCarriers for a SecurityDomain's WorkloadKinds (validated by the CRD schema and the model already)."""
    return tuple(
        c if isinstance(c, PodCarrier) else PodCarrier(c.group, c.kind, c.resource, tuple(c.pod_spec_paths))
        for c in kinds
    )
