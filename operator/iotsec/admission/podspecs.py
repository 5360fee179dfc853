"""Every pod spec an object carries, found through the workload-kind table (iotsec.model.workloads) by API group
and kind, each with the real JSON path to it.

Argo Workflows run one pod per template with `container`, `script` or `containerSet`; no PodSpec is written out in
the object. Such a pod is assembled as Argo's controller assembles it: the template's containers (`container` and
`script` are named `main`, as Argo names them), `initContainers`, `sidecars` and `containerSet.containers`; the
workflow's `hostNetwork`; `securityContext`, `serviceAccountName` and `automountServiceAccountToken` from the
template where it sets them, else from the workflow; the workflow's and the template's `volumes`; labels and
annotations from the workflow's `podMetadata` and the template's `metadata`. Findings on the assembled pod are
moved back to the field they come from (`spec.templates[2].container.securityContext.privileged`,
`spec.hostNetwork`). The workflow's `templateDefaults` are merged under every template first as Argo merges them
(strategic merge on the template: the template's own fields win; sidecars, initContainers and volumes merge by name,
ports by containerPort).

`podSpecPatch` (workflow or template; a strategic-merge patch in a string, often with `{{...}}` parameters) can
add anything to the pod, also on a Workflow that only references a WorkflowTemplate. Each patch is read as a pod
spec of its own, parameters replaced by an unresolved marker (so `privileged: {{...}}` counts as set), and judged
on the fields it sets: a finding at a field the patch does not set is dropped (the template's pod answers for
those). A patch that cannot be read, is longer than 64 KiB, uses YAML aliases or strategic-merge directives
(`$patch: delete` can remove a securityContext), or writes a field name other than as Kubernetes spells it (Argo
decodes it with Go's case-insensitive encoding/json: `HostNetwork` sets hostNetwork) or a parameter where a field
name belongs, cannot be verified and is a `pod-spec-patch` finding. An explicit `null` removes a field: findings
about what is missing below it point at the null.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from iotsec.admission.model import Finding
from iotsec.admission.workloads import PodSpec
from iotsec.model.workloads import ARGO, WorkloadKindLike, find_carrier, object_key, parse_path

ASSEMBLED = "@pod"  # the path of an assembled pod spec; relocate() replaces it with the real paths
_RUNS_A_POD = ("container", "script", "containerSet")
PATCH = "podSpecPatch"
MAX_PATCH_CHARS = 64 * 1024
UNRESOLVED = "iotsec-unresolved-parameter"  # stands for a {{...}} parameter: set, to a value nobody knows yet
_PARAMETER = re.compile(r"\{\{[^{}]{0,512}\}\}")


@dataclass
class AssembledPodSpec(PodSpec):
    """A pod spec put together from several places of the object; `where` maps its top-level fields (and list
    items such as `containers[0]`) to their real paths, `fallback` is the path of anything else."""

    where: dict[str, str] = field(default_factory=dict)
    fallback: str = ""
    patches: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (podSpecPatch, its path), applied


def pod_specs(obj: dict[str, Any], extra: Iterable[WorkloadKindLike] = ()) -> list[PodSpec]:
    """The pod specs `obj` carries, by its API group and kind (built-in table first, then `extra`); [] for kinds
    that carry none, or a kind of the same name in another group."""
    return carried_pod_specs(obj, find_carrier(*object_key(obj), extra))


def carried_pod_specs(obj: dict[str, Any], carrier: WorkloadKindLike | None) -> list[PodSpec]:
    """The pod specs `obj` carries as `carrier` (its entry in the workload-kind table; None: it carries none)."""
    if carrier is None:
        return []
    argo = getattr(carrier, "shape", None) == ARGO
    found: list[PodSpec] = []
    for path in carrier.pod_spec_paths:
        for node, real, owner in _walk(obj, parse_path(path)):
            if argo:
                found.extend(_workflow_pods(node, real))
            else:
                metadata: Any = owner.get("metadata")
                metadata = metadata if isinstance(metadata, dict) else {}
                found.append(PodSpec(node, real, _strings(metadata, "labels"), _strings(metadata, "annotations")))
    return found


def _walk(
    node: Any, segments: tuple[str, ...], path: str = "", owner: Any = None
) -> Iterator[tuple[dict[str, Any], str, dict[str, Any]]]:
    """(node, its real path, the object holding it) for every dict the segments reach; missing parts: nothing."""
    if not path and segments and all("[" not in s for s in segments):
        yield from _plain_walk(node, segments)  # the built-in kinds' paths (spec.template.spec): no recursion
        return
    if not segments:
        if isinstance(node, dict):
            yield node, path, owner if isinstance(owner, dict) else {}
        return
    head, rest = segments[0], segments[1:]
    name, wildcard = (head[:-3], True) if head.endswith("[*]") else (head, False)
    if not isinstance(node, dict):
        return
    child, child_path = node.get(name), f"{path}.{name}" if path else name
    if not wildcard:
        yield from _walk(child, rest, child_path, node)
    elif isinstance(child, list):
        for index, item in enumerate(child):
            yield from _walk(item, rest, f"{child_path}[{index}]", node if not rest else item)


def _plain_walk(node: Any, segments: tuple[str, ...]) -> Iterator[tuple[dict[str, Any], str, dict[str, Any]]]:
    """_walk for a path without [*]: the one dict it reaches, if any, as _walk finds it."""
    owner: Any = None
    for name in segments:
        if not isinstance(node, dict):
            return
        owner, node = node, node.get(name)
    if isinstance(node, dict):
        yield node, ".".join(segments), owner if isinstance(owner, dict) else {}


def _strings(metadata: dict[str, Any], key: str) -> dict[str, str]:
    value = metadata.get(key)
    return value if isinstance(value, dict) else {}


def _workflow_pods(workflow: dict[str, Any], path: str) -> list[PodSpec]:
    workflow_patches, found = _patches(workflow, path)
    found += _referenced_pods(workflow, path, workflow_patches)
    templates = workflow.get("templates")
    if not isinstance(templates, list):
        return found
    defaults = workflow.get("templateDefaults")
    defaults = defaults if isinstance(defaults, dict) else {}
    for index, template in enumerate(templates):
        if not isinstance(template, dict):
            continue
        t_path = f"{path}.templates[{index}]"
        template_patches, unreadable = _patches(template, t_path)
        found += unreadable
        merged = merge_patch(defaults, template)
        if any(key in merged for key in _RUNS_A_POD):
            pod = _template_pod(workflow, path, merged, t_path, _Origins(defaults, template, path))
            found.append(_patched(pod, [*workflow_patches, *template_patches]))
    return found


@dataclass(frozen=True)
class _Origins:
    """Where a field or list item of a template merged over templateDefaults was written: on the template (it
    sets the field, or an item of the same merge key), else in templateDefaults."""

    defaults: dict[str, Any]
    template: dict[str, Any]
    wf_path: str

    def of(self, key: str, t_path: str) -> str:
        if key in self.defaults and key not in self.template:
            return f"{self.wf_path}.templateDefaults"
        return t_path

    def items(self, merged: dict[str, Any], key: str, t_path: str) -> list[tuple[str, Any]]:
        """The merged list `key`, each item with the path of the template's item of its merge key, else the
        templateDefaults' one."""
        own = _items(self.template, t_path, key)
        defaults = _items(self.defaults, f"{self.wf_path}.templateDefaults", key)
        placed = []
        for where, item in _items(merged, t_path, key):
            merge_key = MERGE_KEYS[key]
            source = next((p for p, c in own if _same(item, c, merge_key)), None)
            source = source or next((p for p, c in defaults if _same(item, c, merge_key)), None)
            placed.append((source or where, item))
        return placed


def _template_pod(
    workflow: dict[str, Any], wf_path: str, template: dict[str, Any], t_path: str, origins: _Origins
) -> AssembledPodSpec:
    spec: dict[str, Any] = {}
    where: dict[str, str] = {}
    if "hostNetwork" in workflow:
        spec["hostNetwork"], where["hostNetwork"] = workflow["hostNetwork"], f"{wf_path}.hostNetwork"
    for key in ("securityContext", "serviceAccountName", "automountServiceAccountToken"):
        source, source_path = (template, origins.of(key, t_path)) if key in template else (workflow, wf_path)
        if key in source:
            spec[key] = source[key]
        where[key] = f"{source_path}.{key}"  # unset: the fix belongs on the workflow, for every template
    _gather(
        spec, where, "volumes", [*_items(workflow, wf_path, "volumes"), *origins.items(template, "volumes", t_path)]
    )
    _gather(spec, where, "initContainers", origins.items(template, "initContainers", t_path))
    main = [
        (f"{origins.of(key, t_path)}.{key}", _named_main(template[key]))
        for key in ("container", "script")
        if key in template
    ]
    containers = [(p, c) for p, c in main] + origins.items(template, "sidecars", t_path)
    container_set = template.get("containerSet")
    if container_set is not None:
        if not isinstance(container_set, dict):
            raise TypeError(f"{t_path}.containerSet must be an object")
        containers += _items(container_set, f"{t_path}.containerSet", "containers")
    spec["containers"] = [c for _, c in containers]
    where.update({f"containers[{i}]": p for i, (p, _) in enumerate(containers)})
    labels = {**_strings(_meta(workflow.get("podMetadata")), "labels"), **_strings(_meta(template), "labels")}
    annotations = {
        **_strings(_meta(workflow.get("podMetadata")), "annotations"),
        **_strings(_meta(template), "annotations"),
    }
    return AssembledPodSpec(spec, ASSEMBLED, labels, annotations, where=where, fallback=t_path)


def _meta(node: Any) -> dict[str, Any]:
    """Argo's `podMetadata` is itself {labels, annotations}; a template carries them under `metadata`."""
    if not isinstance(node, dict):
        return {}
    inner = node.get("metadata")
    return inner if isinstance(inner, dict) else node


def _named_main(container: Any) -> Any:
    if isinstance(container, dict):
        # Argo names the container of a container/script template `main`, whatever name the template gives it
        # (mainCtr.Name = common.MainContainerName), so a podSpecPatch for `main` merges into it
        return {**container, "name": "main"}
    return container


def _items(node: dict[str, Any], path: str, key: str) -> list[tuple[str, Any]]:
    value = node.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"{path}.{key} must be a list, got {type(value).__name__}")
    return [(f"{path}.{key}[{index}]", item) for index, item in enumerate(value)]


def _gather(spec: dict[str, Any], where: dict[str, str], key: str, items: list[tuple[str, Any]]) -> None:
    if items:
        spec[key] = [item for _, item in items]
        where.update({f"{key}[{index}]": path for index, (path, _) in enumerate(items)})


@dataclass
class PatchPodSpec(AssembledPodSpec):
    """A podSpecPatch read as a pod spec: only findings at fields it sets are its own."""


def _patches(node: dict[str, Any], path: str) -> tuple[list[tuple[dict[str, Any], str]], list[PodSpec]]:
    """The node's podSpecPatch, read ([(patch, path)]), or one UnreadablePatch to report."""
    text = node.get(PATCH)
    if text is None:
        return [], []
    where = f"{path}.{PATCH}"
    try:
        return [(_read_patch(text), where)], []
    except ValueError as problem:
        return [], [UnreadablePatch(where, str(problem))]


def _patched(pod: AssembledPodSpec, patches: list[tuple[dict[str, Any], str]]) -> AssembledPodSpec:
    """The pod as Argo creates it: the workflow's podSpecPatch, then the template's, merged over it."""
    spec = pod.spec
    for patch, _ in patches:
        spec = merge_patch(spec, patch)
    where = dict(pod.where)
    for key in ("initContainers", "containers", "volumes"):
        for index, item in enumerate(spec.get(key) or ()):
            if f"{key}[{index}]" not in where or index >= len(pod.spec.get(key) or ()):
                where[f"{key}[{index}]"] = _added_by(item, key, patches) or where.get(f"{key}[{index}]", "")
    where = {k: v for k, v in where.items() if v}
    return dataclasses.replace(pod, spec=spec, where=where, patches=patches, _containers=None, _contexts=None)


def _added_by(item: Any, key: str, patches: list[tuple[dict[str, Any], str]]) -> str | None:
    """The path of an item a podSpecPatch added to the list `key` (the last patch that names it)."""
    for patch, where in reversed(patches):
        for position, candidate in enumerate(patch.get(key) or () if isinstance(patch.get(key), list) else ()):
            if _same(item, candidate, MERGE_KEYS[key]):
                return f"{where}.{key}[{position}]"
    return None


MERGE_KEYS = {
    "containers": "name",
    "sidecars": "name",  # an Argo template's, merged over templateDefaults' as Argo merges wfv1.Template
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}


def merge_patch(base: Any, patch: Any, key: str = "") -> Any:
    """A strategic-merge patch without directives (read_patch refuses those): objects merge key by key, the
    lists of a pod spec that Kubernetes merges by a key (containers by name, ...) merge item by item, anything
    else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for name, value in patch.items():
            merged[name] = merge_patch(base.get(name), value, name) if name in base else value
        return merged
    merge_key = MERGE_KEYS.get(key)
    if merge_key and isinstance(base, list) and isinstance(patch, list):
        merged_list = list(base)
        for item in patch:
            match = next(
                (i for i, old in enumerate(merged_list) if _same(old, item, merge_key)),
                None,
            )
            if match is None:
                merged_list.append(item)
            else:
                merged_list[match] = merge_patch(merged_list[match], item)
        return merged_list
    return patch


def _same(old: Any, new: Any, merge_key: str) -> bool:
    return isinstance(old, dict) and isinstance(new, dict) and merge_key in new and old.get(merge_key) == new[merge_key]


_WORKFLOW_POD_FIELDS = (
    "hostNetwork",
    "securityContext",
    "volumes",
    "serviceAccountName",
    "automountServiceAccountToken",
)


def _referenced_pods(workflow: dict[str, Any], path: str, patches: list[tuple[dict[str, Any], str]]) -> list[PodSpec]:
    """A Workflow that runs a WorkflowTemplate's templates (workflowTemplateRef) still sets their pods'
    hostNetwork, securityContext and volumes, merges its templateDefaults (container, sidecars, initContainers,
    volumes, securityContext) into them, and patches them: what it sets, judged where it is set (the templates
    themselves are judged with the WorkflowTemplate)."""
    if "workflowTemplateRef" not in workflow:
        return []
    fields = {key: workflow[key] for key in _WORKFLOW_POD_FIELDS if key in workflow}
    where = {key: f"{path}.{key}" for key in fields}
    defaults = workflow.get("templateDefaults")
    if isinstance(defaults, dict):
        _default_fields(defaults, f"{path}.templateDefaults", fields, where)
    if not fields and not patches:
        return []
    pod = PatchPodSpec(fields, ASSEMBLED, {}, {}, where=where, fallback=path)
    return [_patched(pod, patches)]


def _default_fields(defaults: dict[str, Any], d_path: str, fields: dict[str, Any], where: dict[str, str]) -> None:
    """Add what a referencing Workflow's templateDefaults put into every template's pod to `fields`."""
    for key in ("securityContext", "serviceAccountName", "automountServiceAccountToken"):
        if key in defaults:  # the template's own value wins over the workflow's
            fields[key], where[key] = defaults[key], f"{d_path}.{key}"
    items = {
        "volumes": [*_items(fields, where.get("volumes", ""), "volumes"), *_items(defaults, d_path, "volumes")],
        "initContainers": _items(defaults, d_path, "initContainers"),
        "containers": [
            *((f"{d_path}.{key}", _named_main(defaults[key])) for key in ("container", "script") if key in defaults),
            *_items(defaults, d_path, "sidecars"),
        ],
    }
    for key, placed in items.items():
        if placed:
            fields[key] = [item for _, item in placed]
            where.pop(key, None)
            where.update({f"{key}[{index}]": p for index, (p, _) in enumerate(placed)})


def _read_patch(text: Any) -> dict[str, Any]:
    if not isinstance(text, str):
        raise ValueError("it is not a string")
    if len(text) > MAX_PATCH_CHARS:
        raise ValueError(f"it is longer than {MAX_PATCH_CHARS // 1024} KiB")
    text = _PARAMETER.sub(UNRESOLVED, text)
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise ValueError("it uses YAML aliases")
        patch = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as error:
        raise ValueError(f"it is not JSON or YAML ({type(error).__name__})") from None
    if not isinstance(patch, dict):
        raise ValueError("it is not an object")
    directive = _directive(patch)
    if directive:
        raise ValueError(f"it uses the strategic-merge directive {json.dumps(directive)[:60]}")
    odd = _odd_key(patch)
    if odd is not None:
        raise ValueError(odd)
    return patch


_FIELD_NAME = re.compile(r"[a-z][A-Za-z0-9]*")
# PodSpec fields of map type (map[string]string, ResourceList): their keys are free, not field names
FREE_KEYED = frozenset(
    {
        "labels",  # ephemeral volumeClaimTemplate.metadata
        "annotations",
        "nodeSelector",
        "overhead",
        "limits",  # resources of a container, of the pod, of a volumeClaimTemplate
        "requests",
        "matchLabels",  # label selectors of affinity terms, topologySpreadConstraints, volumeClaimTemplate
        "volumeAttributes",  # csi volumes
        "options",  # flexVolume (dnsConfig.options is a list of objects: still checked)
    }
)


def _odd_key(node: Any, free: bool = False) -> str | None:
    """Why a key of the patch cannot be trusted to mean what iotsec reads, or None. Argo decodes the patched pod
    with Go's encoding/json, which matches field names case-insensitively (and folds the long s, U+017F, to s, the
    Kelvin sign to k): `HostNetwork` sets hostNetwork. A {{...}} parameter where a key belongs can expand to
    any fields."""
    if isinstance(node, list):
        return next((odd for odd in (_odd_key(item) for item in node) if odd), None)
    if not isinstance(node, dict):
        return None
    for key, value in node.items():
        if UNRESOLVED in str(key):
            return "a {{...}} parameter stands where a field name belongs"
        if not free and not (isinstance(key, str) and _FIELD_NAME.fullmatch(key)):
            return f"the field name {json.dumps(str(key))[:60]} is not written as Kubernetes spells it (lowerCamel)"
        odd = _odd_key(value, not free and key in FREE_KEYED and isinstance(value, dict))
        if odd:
            return odd
    return None


def _directive(node: Any) -> str | None:
    if isinstance(node, dict):
        for key, value in node.items():
            if str(key).startswith("$"):
                return str(key)
            found = _directive(value)
            if found:
                return found
    elif isinstance(node, list):
        return next((d for d in map(_directive, node) if d), None)
    return None


class UnreadablePatch(PodSpec):
    """A podSpecPatch iotsec cannot read: judged as one finding, never as a pod."""

    def __init__(self, where: str, problem: str):
        super().__init__({}, where, {}, {})
        self.problem = problem

    def finding(self) -> Finding:
        return Finding(
            "pod-spec-patch",
            self.path,
            f"podSpecPatch cannot be verified: {self.problem}",
            "write podSpecPatch as a JSON or YAML object without $-directives or aliases, or set the fields on "
            "the template",
        )


def patch_path(pod: PodSpec) -> str | None:
    """Where the podSpecPatch that shaped `pod` is (the last one), or a Workflow's own fields; None for others."""
    if isinstance(pod, AssembledPodSpec) and pod.patches:
        return pod.patches[-1][1]
    return pod.fallback if isinstance(pod, PatchPodSpec) else None


def relocate(pod: PodSpec, findings: list[Finding]) -> list[Finding]:
    """Findings on `pod` with paths into the object itself (only assembled pod specs need it): a value a
    podSpecPatch set is found in the patch. A Workflow's own fields (PatchPodSpec) answer only for what they set."""
    if isinstance(pod, UnreadablePatch):
        return [pod.finding()]
    if not isinstance(pod, AssembledPodSpec):
        return findings
    placed = []
    for finding in findings:
        in_patch = _in_patches(pod, finding.path)
        if isinstance(pod, PatchPodSpec) and (finding.rule in _ABSENCE_RULES or not (in_patch or _set(pod, finding))):
            continue  # the referenced WorkflowTemplate's containers answer for what is missing
        placed.append(dataclasses.replace(finding, path=in_patch or _real(pod, finding.path)))
    return placed


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_ABSENCE_RULES = ("resource-limits",)  # found at an object that exists but lacks a key


def _in_patches(pod: AssembledPodSpec, path: str) -> str | None:
    """The path in the last podSpecPatch that sets the value at `path` of the patched pod, or None."""
    if not path.startswith(ASSEMBLED + "."):
        return None
    steps = _STEP.findall(path[len(ASSEMBLED) + 1 :])
    for patch, where in reversed(pod.patches):
        found = _walk_patch(pod.spec, patch, steps)
        if found is not None:
            return f"{where}.{found}" if found else where
    return None


def _walk_patch(spec: Any, patch: Any, steps: list[tuple[str, str]]) -> str | None:
    """Follow `steps` through the patched pod and the patch together (list items matched by their merge key)."""
    parts: list[str] = []
    node, list_key = spec, ""
    for name, index in steps:
        if index:
            if not (isinstance(node, list) and isinstance(patch, list) and int(index) < len(node)):
                return None
            item, merge_key = node[int(index)], MERGE_KEYS.get(list_key, "")
            position = next((i for i, p in enumerate(patch) if merge_key and _same(item, p, merge_key)), None)
            if position is None:
                return None
            node, patch = item, patch[position]
            parts[-1] += f"[{position}]"
        else:
            if not (isinstance(node, dict) and isinstance(patch, dict) and name in patch):
                return None
            node, patch, list_key = node.get(name), patch[name], name
            parts.append(name)
            if patch is None:
                break  # an explicit null removes the field (strategic merge): what is missing below is its doing
    return ".".join(parts)


def _set(pod: PatchPodSpec, finding: Finding) -> bool:
    """Whether a Workflow's own pod fields set the value a finding is about."""
    if not finding.path.startswith(ASSEMBLED + "."):
        return False
    node: Any = pod.spec
    for name, index in _STEP.findall(finding.path[len(ASSEMBLED) + 1 :]):
        node = (
            (node[int(index)] if isinstance(node, list) and int(index) < len(node) else None)
            if index
            else (node.get(name) if isinstance(node, dict) else None)
        )
        if node is None:
            return False
    return True


def _real(pod: AssembledPodSpec, path: str) -> str:
    if path != ASSEMBLED and not path.startswith(ASSEMBLED + "."):
        return path  # metadata.labels[...] and the like
    head, _, tail = path[len(ASSEMBLED) + 1 :].partition(".")
    base = pod.where.get(head) or (f"{pod.fallback}.{head}" if head else pod.fallback)
    return f"{base}.{tail}" if tail else base
