"""Every pod spec an object carries, found through the workload-kind table (iotsec.model.workloads) by API group
and kind, each with the real JSON path to it.

Argo Workflows run one pod per template with `container`, `script` or `containerSet`; no PodSpec is written out in
the object. Such a pod is assembled as Argo's controller assembles it: the template's containers (`container` and
`script` are named `main`, as Argo names them), `initContainers`, `sidecars` and `containerSet.containers`; the
workflow's `hostNetwork`; `securityContext`, `serviceAccountName` and `automountServiceAccountToken` from the
template where it sets them, else from the workflow; the workflow's and the template's `volumes`; labels and
annotations from the workflow's `podMetadata` and the template's `metadata`. Findings on the assembled pod are
moved back to the field they come from (`spec.templates[2].container.securityContext.privileged`,
`spec.hostNetwork`). Not read: `podSpecPatch` (a strategic-merge patch in a string, often with `{{...}}`
parameters) and `templateDefaults`; both can add to the pod what this does not see.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from iotsec.admission.model import Finding
from iotsec.admission.workloads import PodSpec
from iotsec.model.workloads import ARGO, WorkloadKindLike, find_carrier, object_key, parse_path

ASSEMBLED = "@pod"  # the path of an assembled pod spec; relocate() replaces it with the real paths
_RUNS_A_POD = ("container", "script", "containerSet")


@dataclass
class AssembledPodSpec(PodSpec):
    """A pod spec put together from several places of the object; `where` maps its top-level fields (and list
    items such as `containers[0]`) to their real paths, `fallback` is the path of anything else."""

    where: dict[str, str] = field(default_factory=dict)
    fallback: str = ""


def pod_specs(obj: dict[str, Any], extra: Iterable[WorkloadKindLike] = ()) -> list[PodSpec]:
    """The pod specs `obj` carries, by its API group and kind (built-in table first, then `extra`); [] for kinds
    that carry none, or a kind of the same name in another group."""
    group, kind = object_key(obj)
    carrier = find_carrier(group, kind, extra)
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


def _strings(metadata: dict[str, Any], key: str) -> dict[str, str]:
    value = metadata.get(key)
    return value if isinstance(value, dict) else {}


def _workflow_pods(workflow: dict[str, Any], path: str) -> list[PodSpec]:
    templates = workflow.get("templates")
    if not isinstance(templates, list):
        return []
    return [
        _template_pod(workflow, path, template, f"{path}.templates[{index}]")
        for index, template in enumerate(templates)
        if isinstance(template, dict) and any(key in template for key in _RUNS_A_POD)
    ]


def _template_pod(workflow: dict[str, Any], wf_path: str, template: dict[str, Any], t_path: str) -> PodSpec:
    spec: dict[str, Any] = {}
    where: dict[str, str] = {}
    if "hostNetwork" in workflow:
        spec["hostNetwork"], where["hostNetwork"] = workflow["hostNetwork"], f"{wf_path}.hostNetwork"
    for key in ("securityContext", "serviceAccountName", "automountServiceAccountToken"):
        source, source_path = (template, t_path) if key in template else (workflow, wf_path)
        if key in source:
            spec[key] = source[key]
        where[key] = f"{source_path}.{key}"  # unset: the fix belongs on the workflow, for every template
    _gather(spec, where, "volumes", [(workflow, wf_path, "volumes"), (template, t_path, "volumes")])
    _gather(spec, where, "initContainers", [(template, t_path, "initContainers")])
    main = [(f"{t_path}.{key}", _named_main(template[key])) for key in ("container", "script") if key in template]
    containers = [(p, c) for p, c in main] + _items(template, t_path, "sidecars")
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
    if isinstance(container, dict) and "name" not in container:
        return {"name": "main", **container}  # Argo names the container of a container/script template `main`
    return container


def _items(node: dict[str, Any], path: str, key: str) -> list[tuple[str, Any]]:
    value = node.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"{path}.{key} must be a list, got {type(value).__name__}")
    return [(f"{path}.{key}[{index}]", item) for index, item in enumerate(value)]


def _gather(
    spec: dict[str, Any], where: dict[str, str], key: str, sources: list[tuple[dict[str, Any], str, str]]
) -> None:
    items = [item for node, path, name in sources for item in _items(node, path, name)]
    if items:
        spec[key] = [item for _, item in items]
        where.update({f"{key}[{index}]": path for index, (path, _) in enumerate(items)})


def relocate(pod: PodSpec, findings: list[Finding]) -> list[Finding]:
    """Findings on `pod` with paths into the object itself (only assembled pod specs need it)."""
    if not isinstance(pod, AssembledPodSpec):
        return findings
    return [dataclasses.replace(f, path=_real(pod, f.path)) for f in findings]


def _real(pod: AssembledPodSpec, path: str) -> str:
    if path != ASSEMBLED and not path.startswith(ASSEMBLED + "."):
        return path  # metadata.labels[...] and the like
    head, _, tail = path[len(ASSEMBLED) + 1 :].partition(".")
    base = pod.where.get(head) or (f"{pod.fallback}.{head}" if head else pod.fallback)
    return f"{base}.{tail}" if tail else base
