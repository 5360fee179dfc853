"""`iotsec rules` (and `iotsec check --list-rules`): each admission rule, its control, level, severity, kinds."""

from __future__ import annotations

from typing import Any

from iotsec.admission.rules import RULES, Rule
from iotsec.cli.common import EXIT_OK, OUTPUT_FORMATS, print_json
from iotsec.model.workloads import BUILT_IN

POD_CARRIERS = tuple(dict.fromkeys(c.kind for c in BUILT_IN))

POD_KINDS = "pod kinds"  # Pods and every kind with a pod template (the engine's table, workload CRDs included)
SERVICE_KINDS = ("Service", "Ingress")
# What each rule judges; a rule missing here is listed with kinds "-" (and a unit test fails).
KINDS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        (
            "no-host-namespaces",
            "no-privileged",
            "no-host-path",
            "no-host-ports",
            "no-host-process",
            "apparmor-profile",
            "selinux-options",
            "proc-mount",
            "safe-sysctls",
            "drop-capabilities",
            "seccomp-profile",
            "volume-types",
            "no-privilege-escalation",
            "run-as-non-root",
            "image-pinned",
            "allowed-registry",
            "read-only-root-fs",
            "allowed-ports",
            "resource-limits",
            "no-weak-algorithms",
            "no-default-token",
            "security-level",
        ),
        (POD_KINDS,),
    ),
    "no-literal-secrets": (POD_KINDS, "ConfigMap"),
    "exposure-zone": SERVICE_KINDS,
    "ingress-tls": ("Ingress",),
    "ingress-tls-management": ("Ingress",),
    "ingress-rate-limit": ("Ingress",),
    "encrypted-storage": ("PersistentVolumeClaim", "StatefulSet"),
    "data-class": ("PersistentVolumeClaim", "StatefulSet"),
    "no-keys-in-configmap": ("ConfigMap",),
    "trusted-admin-binding": ("RoleBinding", "ClusterRoleBinding"),
    "operator-confinement": ("requests of iotsec's own service account",),
    "managed-object-integrity": ("ConfigMap",),
    "domain-membership": (POD_KINDS, "Service", "Ingress", "PersistentVolumeClaim", "NetworkPolicy"),
    "network-policy-scope": ("NetworkPolicy",),
    "pod-spec-patch": ("Workflow", "CronWorkflow", "WorkflowTemplate", "ClusterWorkflowTemplate"),
}


def register(sub: Any) -> None:
    rules = sub.add_parser("rules", help="list the admission rules: id, control, level, severity, kinds")
    rules.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="text")
    rules.set_defaults(handler=lambda args: print_rules(args.output))


def level(rule: Rule) -> str:
    return f"pss-{rule.pss}" if rule.pss else "iotsec"


def kinds(rule: Rule) -> list[str]:
    """The kinds `rule` judges, "pod kinds" spelled out."""
    found: list[str] = []
    for kind in KINDS.get(rule.id, ("-",)):
        found.extend(POD_CARRIERS if kind == POD_KINDS else (kind,))
    return list(dict.fromkeys(found))


def print_rules(output: str) -> int:
    if output == "json":
        print_json([_rule_json(rule) for rule in RULES.values()])
        return EXIT_OK
    print(f"{'RULE':<26} {'CONTROL':<17} {'LEVEL':<15} {'SEVERITY':<9} KINDS")
    for rule in RULES.values():
        judged = ", ".join(KINDS.get(rule.id, ("-",)))
        print(f"{rule.id:<26} {rule.control:<17} {level(rule):<15} {rule.severity:<9} {judged}")
    carriers = ", ".join(f"{c.kind} ({c.group or 'core'})" for c in BUILT_IN)
    print(f"{len(RULES)} rules; pod kinds: {carriers}; more through webhook.workloadKinds and spec.workloadKinds")
    return EXIT_OK


def _rule_json(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "control": rule.control,
        "level": level(rule),
        "severity": rule.severity,
        "title": rule.title,
        "kinds": kinds(rule),
    }
