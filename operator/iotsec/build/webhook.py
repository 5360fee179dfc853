"""The ValidatingWebhookConfiguration iotsec ships (not kopf's auto-managed one: that one waits 30 s and has no
namespace selector) and the webhook's TLS Secret."""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from iotsec.model.labels import MANAGED_BY, MANAGER
from iotsec.model.names import ALWAYS_EXCLUDED
from iotsec.model.platform import Platform
from iotsec.model.workloads import BUILT_IN, PodCarrier
from iotsec.pki import certs

NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server itself: a tenant cannot forge it
# Resources checked for themselves (admission/resources.py), by group; the kinds with pod specs come from the table.
OBJECT_RESOURCES: dict[str, list[str]] = {
    "": ["pods/ephemeralcontainers", "services", "persistentvolumeclaims", "configmaps"],
    "networking.k8s.io": ["ingresses", "networkpolicies"],
    "rbac.authorization.k8s.io": ["rolebindings"],
}


def _resources(namespaced: bool) -> dict[str, list[str]]:
    """Group → resources the workloads hook registers: exactly the workload-kind table's, plus OBJECT_RESOURCES."""
    resources: dict[str, list[str]] = {}
    for carrier in BUILT_IN:
        if carrier.namespaced == namespaced:
            resources.setdefault(carrier.group, []).append(carrier.resource)
    if namespaced:
        for group, names in OBJECT_RESOURCES.items():
            resources.setdefault(group, []).extend(names)
    return resources


RESOURCES = _resources(namespaced=True)
CLUSTER_RESOURCES = _resources(namespaced=False)  # Argo's ClusterWorkflowTemplate


def workload_rules(extra: Sequence[PodCarrier] = ()) -> list[dict[str, Any]]:
    """The workloads hook's rules: the built-in table's resources by group, then one rule per added kind (the chart
    renders the same: its `webhook.workloadKinds` entries in their order)."""
    rules = [_rule(group, resources, "Namespaced") for group, resources in RESOURCES.items()]
    rules += [_rule(group, resources, "Cluster") for group, resources in CLUSTER_RESOURCES.items()]
    return rules + [_rule(c.group, [c.resource], "Namespaced") for c in extra]


def _rule(group: str, resources: list[str], scope: str) -> dict[str, Any]:
    return {
        "apiGroups": [group],
        "apiVersions": ["*"],
        "resources": resources,
        "operations": ["CREATE", "UPDATE"],
        "scope": scope,
    }


def client_config(
    url: str | None = None, service: tuple[str, str, int] | None = None, ca_bundle: str = ""
) -> dict[str, Any]:
    config: dict[str, Any] = (
        {"url": url}
        if url
        else {"service": {"namespace": service[0], "name": service[1], "port": service[2], "path": "/validate"}}
        if service
        else {}
    )
    if not config:
        raise ValueError("give the webhook's url or its service")
    if ca_bundle:
        config["caBundle"] = base64.b64encode(ca_bundle.encode()).decode()
    return config


def validating_webhook_configuration(
    name: str,
    config: dict[str, Any],
    operator_namespace: str,
    excluded_namespaces: Sequence[str] = (),
    timeout_seconds: int = 5,
    operator_user: str | None = None,
    server_minor: int | None = None,
    workload_kinds: Sequence[PodCarrier] = (),
) -> dict[str, Any]:
    """Namespaced workloads fail closed (failurePolicy Fail); cluster-scoped bindings fail open so that an
    outage of the webhook cannot lock administrators out of RBAC repairs.

    The operator's fence fails closed where the API server can send it the operator's requests only
    (`matchConditions`, 1.28 and later; `server_minor` None means a current server): an outage then stops the
    operator, never an administrator, and a stolen operator token gains nothing by breaking the webhook. Older
    servers get it failing open."""
    if not 1 <= timeout_seconds <= 5:
        raise ValueError("timeoutSeconds must be 1-5: admission sits in every deploy's path")
    excluded = sorted({*ALWAYS_EXCLUDED, operator_namespace, *excluded_namespaces})
    rules = workload_rules(workload_kinds)
    common = {
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": timeout_seconds,
        "matchPolicy": "Equivalent",
        "clientConfig": config,
    }
    fence = {**_fence_failure(operator_user or Platform(operator_namespace).operator_user, server_minor), **common}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {
            "name": name,
            "labels": {MANAGED_BY: MANAGER, "app.kubernetes.io/name": name},
        },
        "webhooks": [
            {
                "name": "workloads.iotsec.io",
                "rules": rules,
                "failurePolicy": "Fail",
                "namespaceSelector": {
                    "matchExpressions": [{"key": NAME_LABEL, "operator": "NotIn", "values": excluded}]
                },
                **common,
            },
            {
                "name": "bindings.iotsec.io",
                "rules": [
                    {
                        "apiGroups": ["rbac.authorization.k8s.io"],
                        "apiVersions": ["*"],
                        "resources": ["clusterrolebindings"],
                        "operations": ["CREATE", "UPDATE"],
                        "scope": "Cluster",
                    }
                ],
                "failurePolicy": "Ignore",
                **common,
            },
            {
                # The operator's own fence (iotsec.admission.guard), every namespace, kube-system included: closed
                # for the operator alone where matchConditions exist, open elsewhere (_fence_failure).
                "name": "platform.iotsec.io",
                "rules": PLATFORM_RULES,
                **fence,
            },
            {
                # Secrets apart, without the release namespace: there the operator writes the webhook's own
                # serving certificate, which must not wait for the webhook it lets start (fail closed from 1.28).
                "name": "secrets.platform.iotsec.io",
                "rules": SECRET_RULES,
                "namespaceSelector": {
                    "matchExpressions": [{"key": NAME_LABEL, "operator": "NotIn", "values": [operator_namespace]}]
                },
                **fence,
            },
        ],
    }


SECRET_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [""],
        "apiVersions": ["*"],
        "resources": ["secrets"],
        "operations": ["CREATE", "UPDATE"],
        "scope": "Namespaced",
    }
]
MATCH_CONDITIONS_MINOR = 28  # admissionregistration.k8s.io/v1 matchConditions are GA from Kubernetes 1.28


def _fence_failure(operator_user: str, server_minor: int | None) -> dict[str, Any]:
    if server_minor is not None and server_minor < MATCH_CONDITIONS_MINOR:
        return {"failurePolicy": "Ignore"}
    condition = {"name": "operator-only", "expression": f"request.userInfo.username == {operator_user!r}"}
    return {"failurePolicy": "Fail", "matchConditions": [condition]}


PLATFORM_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "apiVersions": ["*"],
        "resources": ["rolebindings", "roles"],
        "operations": ["CREATE", "UPDATE", "DELETE"],
        "scope": "Namespaced",
    },
    {
        "apiGroups": [""],
        "apiVersions": ["*"],
        "resources": ["namespaces"],
        "operations": ["CREATE", "UPDATE", "DELETE"],
        "scope": "Cluster",
    },
    {
        "apiGroups": ["batch"],
        "apiVersions": ["*"],
        "resources": ["cronjobs"],
        "operations": ["CREATE", "UPDATE"],
        "scope": "Namespaced",
    },
    {
        "apiGroups": ["storage.k8s.io"],
        "apiVersions": ["*"],
        "resources": ["storageclasses"],
        "operations": ["CREATE", "UPDATE", "DELETE"],
        "scope": "Cluster",
    },
    {
        "apiGroups": ["iotsec.io"],
        "apiVersions": ["*"],
        "resources": ["securitydomains", "tenantisolations", "backuppolicies", "auditpolicies"],
        "operations": ["UPDATE"],
        "scope": "*",
    },
]


def ca_bundle_patch(
    name: str, webhook_names: Sequence[str], ca_bundle: str, added: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The partial object iotsec server-side applies to inject the CA bundle, owning only that field of the
    chart's webhooks, and the whole of the webhooks it adds itself (`added`, e.g. domain_kinds_webhook)."""
    encoded = base64.b64encode(ca_bundle.encode()).decode()
    own = [{**hook, "clientConfig": {**hook["clientConfig"], "caBundle": encoded}} for hook in added]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{"name": webhook, "clientConfig": {"caBundle": encoded}} for webhook in webhook_names] + own,
    }


WORKLOADS_HOOK = "workloads.iotsec.io"
DOMAIN_KINDS_HOOK = "domainkinds.iotsec.io"
_COPIED = (
    "clientConfig",
    "namespaceSelector",
    "objectSelector",
    "failurePolicy",
    "sideEffects",
    "admissionReviewVersions",
)


def domain_kinds_webhook(workloads_hook: Mapping[str, Any], kinds: Iterable[tuple[str, str]]) -> dict[str, Any] | None:
    """The webhook the operator adds to iotsec's configuration for the SecurityDomains' workloadKinds: the
    (group, resource) pairs the workloads hook does not register already (the table's, the chart's values'), with
    that hook's client, namespace selector and failure policy; None when nothing is left to register. The webhook
    checks such a kind only in the namespaces of a domain that lists it."""
    registered = {
        (g, r) for rule in workloads_hook.get("rules") or () for g in rule["apiGroups"] for r in rule["resources"]
    }
    wanted = sorted(set(kinds) - registered)
    if not wanted:
        return None
    copied = {key: copy.deepcopy(workloads_hook[key]) for key in _COPIED if key in workloads_hook}
    copied["clientConfig"] = {k: v for k, v in copied.get("clientConfig", {}).items() if k != "caBundle"}
    for key in ("timeoutSeconds", "matchPolicy"):
        if key in workloads_hook:
            copied[key] = workloads_hook[key]
    return {"name": DOMAIN_KINDS_HOOK, "rules": [_rule(g, [r], "Namespaced") for g, r in wanted], **copied}


def validated_ca_bundle(pem: str, where: str) -> str:
    """`pem` when it is a bundle of one or more PEM certificates; ValueError naming `where` otherwise: an empty or
    garbled caBundle would make the API server refuse every call to the webhook."""
    try:
        found = certs.certs_in_bundle(pem)
    except ValueError as exc:
        raise ValueError(f"{where}: not a PEM CA bundle ({exc})") from None
    if not found:
        raise ValueError(f"{where}: holds no certificate")
    return pem


def secret_ca_bundle(data: Mapping[str, str], where: str) -> str:
    """The CA bundle in a webhook TLS Secret's decoded data: `ca-bundle.crt` (with the previous CA during a
    rotation), else `ca.crt` (a cert-manager Secret)."""
    pem = data.get(certs.KEY_CA_BUNDLE) or data.get(certs.KEY_CA_CERT)
    if not pem:
        raise ValueError(f"{where} holds no CA ({certs.KEY_CA_BUNDLE} or {certs.KEY_CA_CERT})")
    return validated_ca_bundle(pem, where)


def tls_secret(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY: MANAGER, "app.kubernetes.io/component": "webhook"},
        },
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in sorted(data.items())},
    }
