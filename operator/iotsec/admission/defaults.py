"""What the API server fills in before admission webhooks see an object, for `iotsec check` (pure, copying).

The webhook judges objects as stored, defaults applied; `iotsec check` reads them as written. Only the defaults a
rule can see are applied (kube's pkg/apis/core/v1/defaults.go):

- a container port without `protocol` gets TCP (SetDefaults_ContainerPort, every pod spec);
- with `hostNetwork: true`, a container or init container port without `hostPort` gets `hostPort = containerPort`
  (defaultHostNetworkPorts). Since Kubernetes 1.28 only in Pods (SetDefaults_Pod); before, in every pod template
  too (SetDefaults_PodSpec; since 1.28 behind the DefaultHostNetworkHostPortsInPodTemplates gate, off);
- before 1.24 a pod spec's `os` is dropped: the field is unknown before 1.23 and behind the IdentifyPodOS gate (off
  by default) in 1.23, so the API server prunes it and the pod is judged as a Linux pod;
- a namespaced object without `metadata.namespace` is created in the request's namespace (`-n`, Helm's
  `--namespace`, kubectl's context: "default" unless given); a cluster-scoped one never gets one.
"""

from __future__ import annotations

import copy
from typing import Any

from iotsec.api.terms import NAMESPACED_KINDS
from iotsec.model.workloads import BUILT_IN, POD_SPEC_PATHS

DEFAULT_NAMESPACE = "default"  # what kubectl and helm use without -n and without a context namespace
CURRENT_MINOR = 99  # "a current server" for the version switch below
TEMPLATE_HOST_PORTS_UNTIL = 28  # from this minor version on, pod templates keep hostPort unset
POD_OS_FROM = 24  # IdentifyPodOS on by default (beta); before, the API server drops spec.os

# Cluster-scoped kinds of Kubernetes itself (every other kind, custom ones included, is taken as namespaced).
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "APIService",
        "CertificateSigningRequest",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterTrustBundle",
        "ComponentStatus",
        "CSIDriver",
        "CSINode",
        "CustomResourceDefinition",
        "DeviceClass",
        "FlowSchema",
        "IngressClass",
        "IPAddress",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PodSecurityPolicy",
        "PriorityClass",
        "PriorityLevelConfiguration",
        "RuntimeClass",
        "SelfSubjectAccessReview",
        "SelfSubjectReview",
        "SelfSubjectRulesReview",
        "ServiceCIDR",
        "StorageClass",
        "SubjectAccessReview",
        "TokenReview",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
        "VolumeAttributesClass",
    }
    | {kind for kind, namespaced in NAMESPACED_KINDS.items() if not namespaced}
)


# Workload kinds of the pod-spec table that are cluster-scoped (Argo's ClusterWorkflowTemplate)
CLUSTER_SCOPED_WORKLOADS = frozenset(c.kind for c in BUILT_IN if not c.namespaced)


def is_namespaced(kind: str) -> bool:
    return kind not in CLUSTER_SCOPED_KINDS and kind not in CLUSTER_SCOPED_WORKLOADS


def apply_api_defaults(
    obj: dict[str, Any], namespace: str = DEFAULT_NAMESPACE, server_minor: int = CURRENT_MINOR
) -> dict[str, Any]:
    """A copy of `obj` as the API server of version 1.`server_minor` stores it when created in `namespace`;
    `obj` itself is returned when nothing changes."""
    kind = obj.get("kind")
    metadata = obj.get("metadata") or {}
    result = obj
    if isinstance(kind, str) and is_namespaced(kind) and isinstance(metadata, dict) and not metadata.get("namespace"):
        result = {**obj, "metadata": {**metadata, "namespace": namespace}}
    steps = _pod_spec_steps(obj)
    spec = _at(result, steps) if steps else None
    if steps and spec is not None and "os" in spec and server_minor < POD_OS_FROM:
        result = {**result, steps[0]: copy.deepcopy(result.get(steps[0]))}
        spec = _at(result, steps) or {}
        spec.pop("os", None)
    if steps and spec is not None and _needs_port_defaults(spec):
        result = {**result, steps[0]: copy.deepcopy(result.get(steps[0]))}
        host_ports = spec.get("hostNetwork") is True and (kind == "Pod" or server_minor < TEMPLATE_HOST_PORTS_UNTIL)
        _default_ports(_at(result, steps) or {}, host_ports)
    return result


def _pod_spec_steps(obj: dict[str, Any]) -> tuple[str, ...] | None:
    """Where a built-in kind keeps its pod spec; None for other kinds (custom resources get no core defaults)."""
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    group = api_version.rpartition("/")[0] if isinstance(api_version, str) else ""
    if not isinstance(kind, str) or group not in _BUILT_IN_GROUPS:
        return None
    return POD_SPEC_PATHS.get(kind)


_BUILT_IN_GROUPS = ("", "apps", "batch", "extensions")


def _at(obj: dict[str, Any], steps: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = obj
    for step in steps:
        node = node.get(step) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _ports(spec: dict[str, Any], groups: tuple[str, ...]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for group in groups:
        containers = spec.get(group)
        for container in containers if isinstance(containers, list) else ():
            ports = container.get("ports") if isinstance(container, dict) else None
            if isinstance(ports, list):
                found.extend(port for port in ports if isinstance(port, dict))
    return found


_ALL_CONTAINERS = ("initContainers", "containers", "ephemeralContainers")
_HOST_PORT_CONTAINERS = ("initContainers", "containers")  # defaultHostNetworkPorts leaves ephemeral ones


def _needs_port_defaults(spec: dict[str, Any]) -> bool:
    ports = _ports(spec, _ALL_CONTAINERS)
    return any("protocol" not in p for p in ports) or (
        spec.get("hostNetwork") is True and any(not p.get("hostPort") for p in _ports(spec, _HOST_PORT_CONTAINERS))
    )


def _default_ports(spec: dict[str, Any], host_ports: bool) -> None:
    for port in _ports(spec, _ALL_CONTAINERS):
        port.setdefault("protocol", "TCP")
    if host_ports:
        for port in _ports(spec, _HOST_PORT_CONTAINERS):
            if not port.get("hostPort") and isinstance(port.get("containerPort"), int):
                port["hostPort"] = port["containerPort"]
