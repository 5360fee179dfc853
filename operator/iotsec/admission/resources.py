"""Checks of objects other than pods: exposure, TLS, rate limits, storage, bindings, key material."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from iotsec.admission.configmaps import config_map_secrets
from iotsec.admission.context import Context
from iotsec.admission.model import Finding
from iotsec.admission.netpol import check_network_policy
from iotsec.api.terms import EXPOSABLE_ZONES
from iotsec.model.labels import DATA_CLASS, RATE_LIMIT
from iotsec.model.workloads import canonical, object_key

ENCRYPTED_CLASSES = ("confidential", "secret")
RATE_LIMIT_ANNOTATIONS = frozenset(
    {
        RATE_LIMIT,
        "nginx.ingress.kubernetes.io/limit-rps",
        "nginx.ingress.kubernetes.io/limit-rpm",
        "nginx.ingress.kubernetes.io/limit-connections",
        "haproxy.org/rate-limit-requests",
        "haproxy-ingress.github.io/limit-rps",
        "konghq.com/plugins",
    }
)
PRIVATE_KEY_MARKER = "PRIVATE KEY-----"


# The groups of each kind checked here: a kind of the same name in another group is another thing (a
# serving.knative.dev Service carries pods, it exposes nothing the way a core Service does). OpenKruise's Advanced
# StatefulSet claims volumes as the apps one does.
OBJECT_GROUPS: dict[str, tuple[str, ...]] = {
    "Service": ("",),
    "Ingress": ("networking.k8s.io",),
    "PersistentVolumeClaim": ("",),
    "StatefulSet": ("apps", "apps.kruise.io"),
    "RoleBinding": ("rbac.authorization.k8s.io",),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io",),
    "ConfigMap": ("",),
    "NetworkPolicy": ("networking.k8s.io",),
}


def check_object(obj: dict[str, Any], ctx: Context, out: list[Finding]) -> None:
    group, kind = canonical(*object_key(obj))
    if group is not None and group not in OBJECT_GROUPS.get(kind, ()):
        return  # group None: a hand-written manifest without apiVersion, taken as the built-in kind
    if kind == "Service":
        _service(obj, ctx, out)
    elif kind == "Ingress":
        _ingress(obj, ctx, out)
    elif kind == "PersistentVolumeClaim":
        _claim(obj, "", ctx, out)
    elif kind == "StatefulSet":
        for index, template in enumerate((obj.get("spec") or {}).get("volumeClaimTemplates") or ()):
            _claim(template, f"spec.volumeClaimTemplates[{index}].", ctx, out)
    elif kind in ("RoleBinding", "ClusterRoleBinding"):
        _binding(obj, ctx, out)
    elif kind == "ConfigMap":
        _config_map(obj, out)
    elif kind == "NetworkPolicy":
        check_network_policy(obj, ctx, out)


def _zone(ctx: Context) -> str:
    return ctx.domain.zone or "none (the namespace is in no SecurityDomain)"


def _service(obj: dict[str, Any], ctx: Context, out: list[Finding]) -> None:
    kind = (obj.get("spec") or {}).get("type", "ClusterIP")
    if kind in ("NodePort", "LoadBalancer") and ctx.domain.zone not in EXPOSABLE_ZONES:
        out.append(
            Finding(
                "exposure-zone",
                "spec.type",
                f"a {kind} Service exposes zone {_zone(ctx)}",
                "use type ClusterIP, or move the workload to an access or interface SecurityDomain",
            )
        )


def _ingress(obj: dict[str, Any], ctx: Context, out: list[Finding]) -> None:
    spec = obj.get("spec") or {}
    if ctx.domain.zone not in EXPOSABLE_ZONES:
        out.append(
            Finding(
                "exposure-zone",
                "spec",
                f"an Ingress exposes zone {_zone(ctx)}",
                "expose it through an access or interface SecurityDomain instead",
            )
        )
    hosts = {rule.get("host", "*") for rule in spec.get("rules") or () if isinstance(rule, dict)}
    covered = {h for tls in spec.get("tls") or () if isinstance(tls, dict) for h in tls.get("hosts") or ()}
    uncovered = sorted(hosts - covered) if spec.get("tls") else sorted(hosts) or ["*"]
    if uncovered:
        rule = "ingress-tls-management" if ctx.domain.zone == "management" else "ingress-tls"
        out.append(
            Finding(
                rule,
                "spec.tls",
                f"plain HTTP for {', '.join(uncovered)}",
                "add spec.tls with a certificate Secret covering every host",
            )
        )
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if ctx.domain.zone == "interface" and not RATE_LIMIT_ANNOTATIONS & annotations.keys():
        out.append(
            Finding(
                "ingress-rate-limit",
                "metadata.annotations",
                "an interface-zone Ingress without rate limits",
                f"add e.g. nginx.ingress.kubernetes.io/limit-rps (or {RATE_LIMIT} for other controllers)",
            )
        )


def _claim(claim: dict[str, Any], prefix: str, ctx: Context, out: list[Finding]) -> None:
    metadata = claim.get("metadata") or {}
    labelled = (metadata.get("labels") or {}).get(DATA_CLASS) or (metadata.get("annotations") or {}).get(DATA_CLASS)
    tenant = ctx.tenant
    data_class = labelled or (tenant.default_data_class if tenant else None)
    if tenant and data_class and data_class not in tenant.data_classes:
        out.append(
            Finding(
                "data-class",
                f"{prefix}metadata.labels[{DATA_CLASS}]",
                f"data class {data_class} is not one of tenant {tenant.tenant}'s ({', '.join(tenant.data_classes)})",
                f"label the claim {DATA_CLASS} with one of {', '.join(tenant.data_classes)}",
            )
        )
    if data_class not in ENCRYPTED_CLASSES:
        return
    named = (claim.get("spec") or {}).get("storageClassName")
    storage_class = named or ctx.default_storage_class
    if storage_class not in ctx.encrypted_storage_classes:
        what = f"StorageClass {storage_class}" if storage_class else "the default StorageClass"
        out.append(
            Finding(
                "encrypted-storage",
                f"{prefix}spec.storageClassName",
                f"{data_class} data on {what}, which is not marked encrypted (iotsec.io/encrypted=true)",
                f"use an encrypted StorageClass ({', '.join(sorted(ctx.encrypted_storage_classes)) or 'none known'})",
            )
        )


def _decoded(value: Any) -> str | None:
    """A binaryData value as text (it is base64 in the manifest, so a PEM marker is not visible as such)."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=False).decode("latin-1")
    except (binascii.Error, ValueError):
        return None


def _known(names: frozenset[str]) -> str:
    return ", ".join(sorted(names)) or "none known"


def _binding(obj: dict[str, Any], ctx: Context, out: list[Finding]) -> None:
    role = obj.get("roleRef") or {}
    if role.get("kind") != "ClusterRole" or role.get("name") not in ctx.escalating_cluster_roles:
        return
    for index, subject in enumerate(obj.get("subjects") or ()):
        if not isinstance(subject, dict):
            continue
        trusted = subject.get("kind") == "Group" and subject.get("name") in ctx.trusted_groups
        own = subject.get("kind") == "ServiceAccount" and (
            (role.get("name"), subject.get("namespace"), subject.get("name")) in ctx.own_grants
        )
        if not trusted and not own:
            out.append(
                Finding(
                    "trusted-admin-binding",
                    f"subjects[{index}]",
                    f"{subject.get('kind')} {subject.get('name')} would get {role.get('name')}",
                    f"bind only trusted groups ({', '.join(sorted(ctx.trusted_groups))}) or use a narrower role",
                )
            )


def _config_map(obj: dict[str, Any], out: list[Finding]) -> None:
    for field in ("data", "binaryData"):
        for key, value in (obj.get(field) or {}).items():
            text = _decoded(value) if field == "binaryData" else value
            if isinstance(text, str) and PRIVATE_KEY_MARKER in text:
                out.append(
                    Finding(
                        "no-keys-in-configmap",
                        f"{field}[{key}]",
                        "a private key in a ConfigMap",
                        "move it into a Secret with restricted RBAC",
                    )
                )
    config_map_secrets(obj, out)
