"""Checks of pod specs, wherever they appear: Pods and every kind that carries a pod template.

Covers every control of the Kubernetes Pod Security Standards (baseline and restricted) so that a domain at
`restricted` is at least as strict as Pod Security Admission, plus iotsec's X.1369 rules for containers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from iotsec.admission.context import Context
from iotsec.admission.images import parse_image, pinned_forms, pinning_problem
from iotsec.admission.model import Finding
from iotsec.admission.secrets import literal_secret, secret_flag
from iotsec.model.labels import LEVEL_LABEL

CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
BASELINE_CAPABILITIES = frozenset(
    "AUDIT_WRITE CHOWN DAC_OVERRIDE FOWNER FSETID KILL MKNOD NET_BIND_SERVICE SETFCAP SETGID SETPCAP SETUID "
    "SYS_CHROOT".split()
)
SAFE_SYSCTLS = frozenset(
    "kernel.shm_rmid_forced net.ipv4.ip_local_port_range net.ipv4.ip_unprivileged_port_start "
    "net.ipv4.tcp_syncookies net.ipv4.ping_group_range net.ipv4.ip_local_reserved_ports "
    "net.ipv4.tcp_keepalive_time net.ipv4.tcp_fin_timeout net.ipv4.tcp_keepalive_intvl "
    "net.ipv4.tcp_keepalive_probes".split()
)
RESTRICTED_VOLUMES = frozenset(
    "configMap csi downwardAPI emptyDir ephemeral persistentVolumeClaim projected secret".split()
)
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
ALGORITHM_KEY = re.compile(r"(algorithm|hash|digest|cipher|signature|hmac|mac)", re.I)
WEAK_ALGORITHM = re.compile(r"\b(md5|sha-?1|des|3des|rc4|hmac-?md5|hmac-?sha1)\b", re.I)


@dataclass
class PodSpec:
    spec: dict[str, Any]
    path: str
    labels: dict[str, str]
    annotations: dict[str, str]
    _containers: list[tuple[str, dict[str, Any]]] | None = None
    _contexts: list[tuple[str, str, dict[str, Any]]] | None = None


def containers(pod: PodSpec) -> list[tuple[str, dict[str, Any]]]:
    """(JSON path, container) of every init, regular and ephemeral container; computed once per pod."""
    if pod._containers is None:
        found = []
        for group in CONTAINER_LISTS:
            for index, container in enumerate(_list(pod.spec, group)):
                if not isinstance(container, dict):
                    raise TypeError(f"{pod.path}.{group}[{index}] must be an object")
                found.append((f"{pod.path}.{group}[{index}]", container))
        pod._containers = found
    return pod._containers


def _list(node: dict[str, Any], key: str) -> list[Any]:
    value = node.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"{key} must be a list, got {type(value).__name__}")
    return value


def check_pod(pod: PodSpec, ctx: Context, out: list[Finding]) -> None:
    level = ctx.domain.pod_security
    if level in ("baseline", "restricted"):
        _baseline(pod, ctx, out)
    if level == "restricted":
        _restricted(pod, out)
    _iotsec(pod, ctx, out)


def windows(pod: PodSpec) -> bool:
    """Whether the pod declares itself a Windows pod (`spec.os.name: windows`, Kubernetes 1.25+).

    The Pod Security Standards (v1.25+) make three restricted controls "Linux only policy (spec.os.name !=
    windows)": Privilege Escalation, Seccomp and Capabilities (kubernetes.io/docs/concepts/security/
    pod-security-standards). The API server refuses those fields on such pods (allowPrivilegeEscalation,
    seccompProfile, capabilities "cannot be set when spec.os.name is windows"), so requiring them would deny every
    Windows pod. HostProcess, host namespaces, running as non-root and the baseline controls still apply. A pod
    without `spec.os` is judged as Linux, as Pod Security Admission does."""
    os_field = pod.spec.get("os")
    return isinstance(os_field, dict) and os_field.get("name") == "windows"


# ---------------------------------------------------------------- Pod Security Standards: baseline


def _baseline(pod: PodSpec, ctx: Context, out: list[Finding]) -> None:
    spec, path = pod.spec, pod.path
    zone = ctx.domain.zone or "without a SecurityDomain"
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            out.append(
                Finding(
                    "no-host-namespaces",
                    f"{path}.{field}",
                    f"{field} shares the node's namespaces",
                    f"remove {field} (or set it to false)",
                )
            )
    pod_sc = spec.get("securityContext") or {}
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        out.append(_host_process(f"{path}.securityContext.windowsOptions.hostProcess", "the pod"))
    for name, sc_path, sc in _contexts(pod):
        if sc.get("privileged"):
            out.append(
                Finding(
                    "no-privileged",
                    f"{sc_path}.privileged",
                    f"privileged containers are not allowed in zone {zone}",
                    "set privileged: false",
                )
            )
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(_host_process(f"{sc_path}.windowsOptions.hostProcess", name))
        if sc.get("procMount") not in (None, "Default"):
            out.append(
                Finding(
                    "proc-mount",
                    f"{sc_path}.procMount",
                    f"procMount {sc['procMount']} unmasks /proc",
                    "remove procMount or set it to Default",
                )
            )
        added = set((sc.get("capabilities") or {}).get("add") or ()) - BASELINE_CAPABILITIES
        if added:
            out.append(
                Finding(
                    "drop-capabilities",
                    f"{sc_path}.capabilities.add",
                    f"{name} adds capabilities beyond the baseline: {', '.join(sorted(added))}",
                    "remove them from capabilities.add",
                )
            )
    _selinux_apparmor_seccomp(pod, pod_sc, out)
    for index, volume in enumerate(_list(spec, "volumes")):
        if isinstance(volume, dict) and "hostPath" in volume:
            out.append(
                Finding(
                    "no-host-path",
                    f"{path}.volumes[{index}].hostPath",
                    f"hostPath volume {volume.get('name')!r} exposes the node's filesystem",
                    "use a persistentVolumeClaim, configMap, secret or emptyDir volume",
                )
            )
    for c_path, container in containers(pod):
        for index, port in enumerate(container.get("ports") or ()):
            if isinstance(port, dict) and port.get("hostPort"):
                out.append(
                    Finding(
                        "no-host-ports",
                        f"{c_path}.ports[{index}].hostPort",
                        f"hostPort {port['hostPort']} binds a node port",
                        "remove hostPort; use a Service",
                    )
                )
    for index, sysctl in enumerate(pod_sc.get("sysctls") or ()):
        if isinstance(sysctl, dict) and sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(
                Finding(
                    "safe-sysctls",
                    f"{path}.securityContext.sysctls[{index}].name",
                    f"sysctl {sysctl.get('name')} is not namespaced-safe",
                    "remove the sysctl",
                )
            )


def _host_process(path: str, who: str) -> Finding:
    return Finding(
        "no-host-process",
        path,
        f"{who} runs as a Windows HostProcess container, on the host",
        "remove windowsOptions.hostProcess (or set it to false)",
    )


def _contexts(pod: PodSpec) -> list[tuple[str, str, dict[str, Any]]]:
    """(container name, path to its securityContext, the securityContext) for every container; once per pod."""
    if pod._contexts is None:
        pod._contexts = [
            (str(container.get("name", c_path)), f"{c_path}.securityContext", container.get("securityContext") or {})
            for c_path, container in containers(pod)
        ]
    return pod._contexts


def _selinux_apparmor_seccomp(pod: PodSpec, pod_sc: dict[str, Any], out: list[Finding]) -> None:
    scopes = [(f"{pod.path}.securityContext", pod_sc)] + [(p, sc) for _, p, sc in _contexts(pod)]
    for sc_path, sc in scopes:
        selinux = sc.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES:
            out.append(
                Finding(
                    "selinux-options",
                    f"{sc_path}.seLinuxOptions.type",
                    f"SELinux type {selinux['type']} is not a container type",
                    "remove seLinuxOptions.type",
                )
            )
        for field in ("user", "role"):
            if selinux.get(field):
                out.append(
                    Finding(
                        "selinux-options",
                        f"{sc_path}.seLinuxOptions.{field}",
                        f"custom SELinux {field} {selinux[field]}",
                        f"remove seLinuxOptions.{field}",
                    )
                )
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            out.append(
                Finding(
                    "apparmor-profile",
                    f"{sc_path}.appArmorProfile.type",
                    "AppArmor is unconfined",
                    "use RuntimeDefault or Localhost",
                )
            )
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(
                Finding(
                    "seccomp-profile",
                    f"{sc_path}.seccompProfile.type",
                    "seccomp is unconfined",
                    "set seccompProfile.type: RuntimeDefault",
                )
            )
    for key, value in pod.annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and value == "unconfined":
            out.append(
                Finding(
                    "apparmor-profile", f"metadata.annotations[{key}]", "AppArmor is unconfined", "use runtime/default"
                )
            )


# ---------------------------------------------------------------- Pod Security Standards: restricted


def _restricted(pod: PodSpec, out: list[Finding]) -> None:
    spec, path = pod.spec, pod.path
    pod_sc = spec.get("securityContext") or {}
    for index, volume in enumerate(spec.get("volumes") or ()):
        kinds = set(volume) - {"name", "hostPath"} if isinstance(volume, dict) else set()  # hostPath: no-host-path
        if kinds and not kinds <= RESTRICTED_VOLUMES:
            out.append(
                Finding(
                    "volume-types",
                    f"{path}.volumes[{index}]",
                    f"volume type {', '.join(sorted(kinds - RESTRICTED_VOLUMES))} is not allowed",
                    "use configMap, secret, emptyDir, persistentVolumeClaim, projected, downwardAPI or csi",
                )
            )
    pod_non_root = pod_sc.get("runAsNonRoot")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_sc.get("runAsUser") == 0:
        out.append(
            Finding(
                "run-as-non-root",
                f"{path}.securityContext.runAsUser",
                "runs as root (UID 0)",
                "set runAsUser to a UID above 0 (e.g. 10001)",
            )
        )
    linux = not windows(pod)
    for name, sc_path, sc in _contexts(pod):
        if linux and sc.get("allowPrivilegeEscalation") is not False:
            out.append(
                Finding(
                    "no-privilege-escalation",
                    f"{sc_path}.allowPrivilegeEscalation",
                    f"{name} may gain privileges",
                    "set allowPrivilegeEscalation: false",
                )
            )
        _non_root(name, sc_path, sc, pod_non_root, out)
        if linux:
            _restricted_linux(name, sc_path, sc, pod_seccomp, out)


def _non_root(name: str, sc_path: str, sc: dict[str, Any], pod_non_root: Any, out: list[Finding]) -> None:
    """Two controls, reported together so that one round of fixes clears both (UID 0 and no runAsNonRoot)."""
    if sc.get("runAsUser") == 0:
        out.append(
            Finding(
                "run-as-non-root",
                f"{sc_path}.runAsUser",
                f"{name} runs as root (UID 0)",
                "set runAsUser to a UID above 0 (e.g. 10001)",
            )
        )
    if sc.get("runAsNonRoot", pod_non_root) is not True:
        out.append(
            Finding(
                "run-as-non-root",
                f"{sc_path}.runAsNonRoot",
                f"{name} may run as root",
                "set runAsNonRoot: true (pod or container securityContext)",
            )
        )


def _restricted_linux(name: str, sc_path: str, sc: dict[str, Any], pod_seccomp: Any, out: list[Finding]) -> None:
    """The restricted controls the Pod Security Standards apply to Linux pods only (see `windows`)."""
    capabilities = sc.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or ()):
        out.append(
            Finding(
                "drop-capabilities",
                f"{sc_path}.capabilities.drop",
                f"{name} keeps default capabilities",
                "set capabilities.drop: [ALL]",
            )
        )
    # beyond-baseline additions were reported by the baseline checks already
    extra = (set(capabilities.get("add") or ()) & BASELINE_CAPABILITIES) - {"NET_BIND_SERVICE"}
    if extra:
        out.append(
            Finding(
                "drop-capabilities",
                f"{sc_path}.capabilities.add",
                f"{name} adds {', '.join(sorted(extra))}",
                "add at most NET_BIND_SERVICE",
            )
        )
    if (sc.get("seccompProfile") or {}).get("type", pod_seccomp) not in ("RuntimeDefault", "Localhost"):
        out.append(
            Finding(
                "seccomp-profile",
                f"{sc_path}.seccompProfile",
                f"{name} runs without a seccomp profile",
                "set seccompProfile.type: RuntimeDefault (pod or container securityContext)",
            )
        )


# ---------------------------------------------------------------- iotsec


def _iotsec(pod: PodSpec, ctx: Context, out: list[Finding]) -> None:
    spec, path = pod.spec, pod.path
    if spec.get("automountServiceAccountToken") is not False and spec.get("serviceAccountName") in (
        None,
        "",
        "default",
    ):
        out.append(
            Finding(
                "no-default-token",
                f"{path}.serviceAccountName",
                "the default service account's token is mounted into every container",
                "set serviceAccountName to the application's account, or automountServiceAccountToken: false",
            )
        )
    levels = ctx.domain.security_levels
    level = pod.labels.get(LEVEL_LABEL)
    if levels is not None and level is not None and level not in levels:
        out.append(
            Finding(
                "security-level",
                f"metadata.labels[{LEVEL_LABEL}]",
                f"security level {level!r} is not declared by domain {ctx.domain.name} (pods with it reach nothing)",
                f"use one of: {', '.join(levels)}",
            )
        )
    _weak_algorithms("metadata.annotations", pod.annotations, out)
    linux = not windows(pod)
    for c_path, container in containers(pod):
        _container(c_path, container, ctx, ".ephemeralContainers[" in c_path, linux, out)


def _container(
    path: str, container: dict[str, Any], ctx: Context, ephemeral: bool, linux: bool, out: list[Finding]
) -> None:
    name = container.get("name", path)
    _image(path, container.get("image"), ctx, out)
    sc = container.get("securityContext") or {}
    # Windows has no read-only root filesystem (the API refuses the field when spec.os.name is windows)
    if linux and sc.get("readOnlyRootFilesystem") is not True:
        out.append(
            Finding(
                "read-only-root-fs",
                f"{path}.securityContext.readOnlyRootFilesystem",
                f"{name} can write to its root filesystem",
                "set readOnlyRootFilesystem: true and mount an emptyDir where it must write",
            )
        )
    if not ephemeral:
        limits = (container.get("resources") or {}).get("limits") or {}
        missing = [r for r in ("cpu", "memory") if r not in limits]
        if missing:
            out.append(
                Finding(
                    "resource-limits",
                    f"{path}.resources.limits",
                    f"{name} has no {' or '.join(missing)} limit",
                    f"set {' and '.join(f'resources.limits.{r}' for r in missing)}",
                )
            )
    allowed = ctx.domain.allowed_ports
    for index, port in enumerate(container.get("ports") or ()):
        if allowed is None or not isinstance(port, dict):
            continue
        number, protocol = port.get("containerPort"), port.get("protocol", "TCP")
        if not any(r.protocol == protocol and r.start <= (number or 0) <= r.end for r in allowed):
            out.append(
                Finding(
                    "allowed-ports",
                    f"{path}.ports[{index}].containerPort",
                    f"port {number}/{protocol} is not allowed in domain {ctx.domain.name}",
                    f"use one of {', '.join(str(r) for r in allowed)} or add it to the domain's allowedPorts",
                )
            )
    _env(path, container.get("env"), out)
    _literal_args(path, container, out)


def _image(path: str, image: Any, ctx: Context, out: list[Finding]) -> None:
    """image-pinned by the domain's imagePinning (digest, version, any) and allowed-registry, on the reference as
    the runtime normalises it (images.py); a reference no runtime can pull fails both with the reason."""
    ref = parse_image(image) if isinstance(image, str) else parse_image("")
    domain = ctx.domain
    mode = domain.image_pinning
    if ref.problem is not None:
        out.append(
            Finding(
                "image-pinned",
                f"{path}.image",
                f"image {ref.written!r} is not a valid reference: {ref.problem}",
                "write [registry/]repository[:tag][@sha256:<digest>], the repository in lowercase",
            )
        )
    else:
        problem = pinning_problem(ref, mode)
        if problem is not None:
            who = f"in domain {domain.name}" if domain.name else "outside any SecurityDomain"
            out.append(
                Finding(
                    "image-pinned",
                    f"{path}.image",
                    f"image {image!r}: {problem} (imagePinning: {mode} {who})",
                    pinned_forms(ref, mode),
                )
            )
    registries = domain.allowed_registries
    if registries is not None and not any(ref.from_registry(r) for r in registries):
        shown = image if ref.problem is None else ref.written
        source = f"comes from {ref.location}" if ref.problem is None else "names no registry a runtime could pull from"
        out.append(
            Finding(
                "allowed-registry",
                f"{path}.image",
                f"image {shown!r} {source}, not from an allowed registry",
                f"pull from {', '.join(registries)}",
            )
        )


@lru_cache(maxsize=8192)
def _algorithm_key(key: str) -> bool:
    return bool(ALGORITHM_KEY.search(key))


def _env(path: str, env: Any, out: list[Finding]) -> None:
    """Literal secrets and weak algorithms in a container's environment, in one pass."""
    if env is None:
        return
    if not isinstance(env, list):
        raise TypeError("env must be a list")
    for index, entry in enumerate(env):
        value = entry.get("value") if type(entry) is dict else None
        if type(value) is not str:
            continue  # valueFrom and malformed entries carry no literal
        name = str(entry.get("name"))
        algorithm = _algorithm_key(name)
        # under any name, a value that is a secret by itself (a vendor token, a PEM key, a JWT, a URI or JSON
        # carrying a password) is one; the name decides the rest
        if literal_secret(name, value):
            out.append(
                Finding(
                    "no-literal-secrets",
                    f"{path}.env[{index}].value",
                    f"{name} holds a literal secret",
                    "use valueFrom.secretKeyRef",
                )
            )
        if algorithm and WEAK_ALGORITHM.search(value):
            out.append(_weak(f"{path}.env[{name}]", name, value))


def _literal_args(path: str, container: dict[str, Any], out: list[Finding]) -> None:
    for field in ("command", "args"):
        for index, arg in enumerate(_list(container, field)):
            flag = secret_flag(str(arg))
            if flag is not None:
                out.append(
                    Finding(
                        "no-literal-secrets",
                        f"{path}.{field}[{index}]",
                        f"--{flag} passes a literal secret on the command line",
                        "read it from a mounted Secret file or an env var from secretKeyRef",
                    )
                )


def _weak_algorithms(path: str, values: dict[str, str], out: list[Finding]) -> None:
    for key, value in values.items():
        if _algorithm_key(key) and WEAK_ALGORITHM.search(str(value)):
            out.append(_weak(f"{path}[{key}]", key, value))


def _weak(path: str, key: str, value: Any) -> Finding:
    return Finding(
        "no-weak-algorithms",
        path,
        f"{key} names a weak algorithm ({value})",
        "use SHA-256 or better (HMAC-SHA256, Ed25519, ECDSA P-256)",
    )
