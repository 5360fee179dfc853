"""The admission rules: stable ids, the X.1369 control each serves, severity and the Pod Security level."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["critical", "high", "medium", "low"]
Level = Literal["baseline", "restricted"]


@dataclass(frozen=True)
class Rule:
    id: str
    control: str
    severity: Severity
    title: str
    pss: Level | None = None  # the Pod Security Standard level that requires it; None: an iotsec rule


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        # Pod Security Standards, baseline
        Rule("no-host-namespaces", "X1369-9.3.1-4", "high", "no hostNetwork, hostPID or hostIPC", "baseline"),
        Rule("no-privileged", "X1369-9.4.3-1", "critical", "no privileged containers", "baseline"),
        Rule("no-host-path", "X1369-9.3.1-4", "high", "no hostPath volumes", "baseline"),
        Rule("no-host-ports", "X1369-9.3.1-4", "medium", "no hostPort", "baseline"),
        Rule("no-host-process", "X1369-9.3.1-4", "high", "no Windows HostProcess containers", "baseline"),
        Rule("apparmor-profile", "X1369-9.4.3-1", "medium", "AppArmor not unconfined", "baseline"),
        Rule("selinux-options", "X1369-9.4.3-1", "medium", "no custom SELinux user, role or type", "baseline"),
        Rule("proc-mount", "X1369-9.3.1-4", "medium", "default /proc mount only", "baseline"),
        Rule("safe-sysctls", "X1369-9.3.1-4", "medium", "only namespaced safe sysctls", "baseline"),
        # Pod Security Standards, restricted (capabilities and seccomp are checked at both levels)
        Rule(
            "drop-capabilities",
            "X1369-9.4.3-1",
            "high",
            "drop ALL capabilities, add at most NET_BIND_SERVICE",
            "baseline",
        ),
        Rule("seccomp-profile", "X1369-9.4.3-1", "high", "seccomp RuntimeDefault or Localhost", "baseline"),
        Rule(
            "volume-types",
            "X1369-9.3.1-4",
            "medium",
            "only configMap, csi, downwardAPI, emptyDir, ephemeral, "
            "persistentVolumeClaim, projected and secret volumes",
            "restricted",
        ),
        Rule("no-privilege-escalation", "X1369-9.4.3-1", "high", "allowPrivilegeEscalation: false", "restricted"),
        Rule("run-as-non-root", "X1369-9.4.3-1", "high", "run as a non-root user", "restricted"),
        # iotsec: X.1369 beyond Pod Security
        Rule(
            "image-pinned",
            "X1369-9.3.2-1",
            "high",
            "images pinned as the domain's imagePinning asks: digest, full version, or any tag but latest",
        ),
        Rule("allowed-registry", "X1369-9.3.2-1", "high", "images from the domain's registries"),
        Rule("read-only-root-fs", "X1369-9.3.2-2", "medium", "read-only root filesystem"),
        Rule("allowed-ports", "X1369-9.3.2-3", "medium", "only the domain's container ports"),
        Rule("resource-limits", "X1369-9.1.4-4", "medium", "CPU and memory limits on every container"),
        Rule("no-literal-secrets", "X1369-9.1.1.2-3", "critical", "secrets from Secrets, never literals"),
        Rule("no-weak-algorithms", "X1369-9.1.1.2-3", "high", "no MD5, SHA-1, DES or RC4"),
        Rule("no-default-token", "X1369-9.1.1.2-2", "medium", "no default service account token"),
        Rule("security-level", "X1369-9.4.1-2", "low", "security level declared by the domain"),
        Rule(
            "exposure-zone",
            "X1369-9.4.1-4",
            "high",
            "NodePort, LoadBalancer and Ingress only in access and interface zones",
        ),
        Rule("ingress-tls", "X1369-9.2.2-1", "high", "Ingress terminates TLS for every host"),
        Rule("ingress-tls-management", "X1369-9.3.1-2", "high", "management endpoints over HTTPS only"),
        Rule("ingress-rate-limit", "X1369-9.5.3-1", "medium", "interface-zone Ingress is rate limited"),
        Rule("encrypted-storage", "X1369-9.2.4-1", "high", "confidential and secret data on encrypted storage"),
        Rule("data-class", "X1369-9.2.4-1", "medium", "only the data classes the tenant declares"),
        Rule("no-keys-in-configmap", "X1369-9.2.4-2", "critical", "private keys only in Secrets"),
        Rule(
            "trusted-admin-binding",
            "X1369-9.6.3-1",
            "critical",
            "cluster-admin and escalating roles only for trusted groups",
        ),
        Rule(
            "operator-confinement",
            "X1369-9.6.3-1",
            "critical",
            "iotsec's own identity writes only where iotsec manages, never beyond its grant",
        ),
        Rule(
            "managed-object-integrity",
            "X1369-9.1.1.3-3",
            "high",
            "the ConfigMaps iotsec writes (device trust bundles and CRLs, runner and audit configuration) change "
            "only through iotsec",
        ),
        Rule(
            "pod-spec-patch",
            "X1369-9.4.3-1",
            "high",
            "an Argo podSpecPatch is a readable JSON/YAML object, so what it adds to the pod can be judged",
        ),
        Rule("domain-membership", "X1369-9.4.1-1", "high", "every workload namespace belongs to a SecurityDomain"),
        Rule(
            "network-policy-scope",
            "X1369-9.4.1-3",
            "high",
            "NetworkPolicies allow nothing beyond the flows of the namespace's SecurityDomain",
        ),
    )
}
