"""AuditPolicy → the rendered audit Policy, the pipeline canary, the audit store and iotsec's sink that writes it.

Pure: no API calls. Everything lives in the audit namespace (an AuditPolicy is cluster-scoped), the chart's
`<release>-audit`: apart from the release namespace, so the operator needs no Deployment, Service or
NetworkPolicy rights where the admission webhook runs, and the sink pods pass iotsec's own admission:

* ConfigMap `iotsec-audit-policy-<name>`: the API server's audit Policy
  (`iotsec.build.apiserver_audit.policy_configmap`; installing it on the control-plane nodes is described there);
* ConfigMap `iotsec-audit-canary-<name>`: the pipeline canary. The sink writes `data.nonce` every canary interval
  (field manager `iotsec-audit-sink`) and must see the write arrive as an audit event before the deadline, or it
  reports AuditPipelineBroken. The operator's desired object carries no `data` at all, so its server-side apply
  owns only the metadata and never resets the nonce the sink wrote;
* PersistentVolumeClaim `iotsec-audit-store-<name>`: the hash-chained, signed store (X1369-9.6.4-2, -4). The
  reconciler applies it without an owner reference and never prunes it: deleting the AuditPolicy must not take
  the audit trail with it (delete the claim by hand once its segments are exported);
* Role and RoleBinding `iotsec-audit-sink-canary-<name>`: the one namespaced right the sink has, get and patch
  on its own canary ConfigMap (`resourceNames`), bound to the chart's sink ServiceAccount and pruned with the
  policy. The chart's sink ClusterRole holds the rest (its AuditPolicy and status, BackupPolicies, events); the
  sink can read no Secret and write no other ConfigMap of the audit namespace;
* Deployment and Service `iotsec-audit-sink-<name>`: one sink replica (strategy Recreate: one writer per store)
  serving `POST /audit` over TLS on 8443 (Service port 443) and metrics on 9090, under the restricted Pod
  Security Standard, as the chart's sink ServiceAccount, its signing key mounted read-only;
* NetworkPolicy `iotsec-audit-sink-<name>`: ingress to 8443 from anywhere (the API server is outside the pod
  network), to 9090 from the audit namespace only; egress to the API server and cluster DNS; nothing else.

Credentials (`credential_secret`), kept by the reconciler unless the user provides them (a Secret without
iotsec's owner labels, e.g. from cert-manager, is never touched):

* `iotsec-audit-sink-tls-<name>` (`tls.crt`, `tls.key`, `ca.crt`, `ca-bundle.crt`): the sink's serving
  certificate for the Service's DNS names and its ClusterIP (a control plane that cannot resolve cluster DNS
  posts to `https://<clusterIP>/audit`), renewed 30 days before expiry; the sink reloads it without a restart;
* `iotsec-audit-client-<name>`: with `authentication: clientCertificate`, the client CA (`ca.crt`, `ca.key`, the
  sink's `--client-ca`) and the API server's client certificate (`client.crt`, `client.key`); with `bearerToken`,
  `token`. `iotsec audit policy --from-cluster <name> --webhook-kubeconfig` writes the API server's kubeconfig
  from them.

The signing key `iotsec-audit-signing-<name>` (`ed25519.key`, the store's Ed25519 segment-signing key) is created
by the reconciler, never by the sink: created once (create, never apply: an existing Secret is never overwritten),
with iotsec's owner labels and without an owner reference, so deleting the AuditPolicy keeps it with the store. A
key Secret that exists but does not hold a readable Ed25519 key is reported (Ready=False, reason KeyUnreadable)
and replaced only once a person annotates it `iotsec.io/replace-unreadable: "true"`. The sink reads the mounted
file with `--signing-key-readonly`: it never makes a key of its own.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from iotsec.api.auditpolicy import AuditPolicySpec
from iotsec.api.common import NamespacedObjectRef
from iotsec.api.durations import parse_duration
from iotsec.audittrail.chain import private_key_from_pem
from iotsec.build.apiserver_audit import policy_configmap
from iotsec.build.securitydomain import NetworkSettings
from iotsec.model import conditions, keysecrets, secretdata
from iotsec.model.labels import (
    LEVEL_LABEL,
    OWNER_KIND,
    OWNER_NAME,
    WRITTEN_BY,
    owned_metadata,
    restricted_container_security,
)
from iotsec.model.names import CANARY_ROLE_PREFIX
from iotsec.model.time import parse_rfc3339

KIND = "AuditPolicy"
COMPONENT = "app.kubernetes.io/component"
SINK_COMPONENT = "audit-sink"
SINK_FIELD_MANAGER = "iotsec-audit-sink"
DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253

STORE_MOUNT = "/var/lib/iotsec-audit"
TLS_MOUNT = "/etc/iotsec/audit-tls"
CLIENT_CA_MOUNT = "/etc/iotsec/audit-client-ca"
TOKEN_MOUNT = "/etc/iotsec/audit-token"
SIGNING_MOUNT = "/etc/iotsec/audit-signing"
SIGNING_KEY_FIELD = "ed25519.key"
SINK_PORT = 8443
METRICS_PORT = 9090
SERVICE_PORT = 443
API_SERVER_PORTS = (443, 6443)
SINK_UID = 10001

C_ADMIN_ACTIVITY = "X1369-9.6.4-1"
C_NOT_LOST = "X1369-9.6.4-2"
C_BACKED_UP = "X1369-9.6.4-3"
C_PROTECTED = "X1369-9.6.4-4"
C_RETENTION = "X1369-9.6.4-5"
C_TLS = "X1369-9.6.4-6"
C_MONITORING = "X1369-9.6.4-7"

# Conditions the sink writes into the AuditPolicy status; the operator keeps them and derives Ready from them.
PIPELINE_BROKEN = "AuditPipelineBroken"
STORAGE_NEARLY_FULL = "StorageNearlyFull"
STORAGE_FULL = "StorageFull"
CHAIN_INTACT = "ChainIntact"
APPLIED = "Applied"
SIGNING_KEY = "SigningKeyReadable"
BACKED_UP = "BackedUp"
READY = "Ready"


# --- names ------------------------------------------------------------------------------------------------------


def bounded_name(prefix: str, name: str, limit: int = DNS_SUBDOMAIN_MAX) -> str:
    """`prefix + name`, made to fit `limit`. With the DNS-label limit (63) dots become dashes as well, since
    Services and pod hostnames are labels. Whenever the result is not the plain concatenation, it ends in 8 hex
    digits of the full name's SHA-256, so two policies never share an object name."""
    full = f"{prefix}{name}"
    shaped = full.replace(".", "-") if limit <= DNS_LABEL_MAX else full
    if shaped == full and len(full) <= limit:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{shaped[: limit - len(digest) - 1].rstrip('-.')}-{digest}"


def canary_name(name: str) -> str:
    return bounded_name("iotsec-audit-canary-", name)


def store_claim_name(name: str) -> str:
    return bounded_name("iotsec-audit-store-", name)


def sink_name(name: str) -> str:
    """The Deployment, Service and NetworkPolicy name: a DNS label (Service names and pod hostnames are)."""
    return bounded_name("iotsec-audit-sink-", name, DNS_LABEL_MAX)


def tls_secret_name(name: str) -> str:
    return bounded_name("iotsec-audit-sink-tls-", name)


def client_secret_name(name: str) -> str:
    return bounded_name("iotsec-audit-client-", name)


def credential_secret(name: str, secret_name: str, namespace: str, data: Mapping[str, str]) -> dict[str, Any]:
    """A Secret of sink credentials the operator keeps (serving TLS, the API server's client identity or token).
    The owner labels mark it as the operator's: a Secret without them was provided by the user and is left alone."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(name, secret_name, namespace, [C_TLS, C_PROTECTED]),
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in sorted(data.items())},
    }


def service_dns_names(name: str, namespace: str) -> list[str]:
    service = sink_name(name)
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def signing_secret_name(name: str) -> str:
    return bounded_name("iotsec-audit-signing-", name)


def canary_role_name(name: str) -> str:
    return bounded_name(CANARY_ROLE_PREFIX, name)


def signing_key_secret(name: str, namespace: str, pem: bytes) -> dict[str, Any]:
    """The signing key Secret the reconciler creates once (no owner reference: it outlives the policy)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(
            name, signing_secret_name(name), namespace, [C_PROTECTED], labels={COMPONENT: "audit-signing-key"}
        ),
        "data": {SIGNING_KEY_FIELD: base64.b64encode(pem).decode()},
    }


def signing_key(secret: Mapping[str, Any], where: str) -> Ed25519PrivateKey:
    """The Ed25519 key in a signing key Secret; KeyUnreadableError saying why when there is none to read."""
    try:
        pem = secretdata.required(secretdata.decode(secret), SIGNING_KEY_FIELD, where)
    except (ValueError, UnicodeError) as exc:
        raise keysecrets.KeyUnreadableError(f"{where}: {exc}") from None
    try:
        return private_key_from_pem(pem.encode(), f"{where} key {SIGNING_KEY_FIELD}")
    except (ValueError, TypeError, UnicodeError) as exc:
        raise keysecrets.KeyUnreadableError(f"{where} key {SIGNING_KEY_FIELD}: {exc}") from None


def sink_selector(name: str) -> dict[str, str]:
    """The sink pods' identifying labels (Deployment selector, Service selector, NetworkPolicy podSelector)."""
    return {OWNER_KIND: KIND, OWNER_NAME: name, COMPONENT: SINK_COMPONENT}


# --- the objects ------------------------------------------------------------------------------------------------


def desired_objects(
    name: str,
    spec: AuditPolicySpec,
    *,
    namespace: str,
    image: str,
    operator_users: Sequence[str],
    sink_service_account: str,
    network: NetworkSettings | None = None,
    image_pull_policy: str = "IfNotPresent",
) -> list[dict[str, Any]]:
    """Every object one AuditPolicy needs, in apply order (the Deployment last), all in `namespace`.

    Raises ValueError when the policy cannot be rendered (a rule kube-apiserver would refuse, or a name longer
    than 63 characters, which cannot be the value of the owner label every object carries)."""
    if len(name) > DNS_LABEL_MAX:
        raise ValueError(
            f"AuditPolicy name {name!r} is {len(name)} characters long; at most {DNS_LABEL_MAX} fit the "
            f"{OWNER_NAME} label its objects carry"
        )
    if not image:
        raise ValueError("the sink needs an image reference")
    network = network or NetworkSettings()
    policy = policy_configmap(
        name, spec, namespace=namespace, operator_users=operator_users, canary=(namespace, canary_name(name))
    )
    return [
        policy,
        _canary(name, namespace),
        _store_claim(name, spec, namespace),
        _service(name, namespace),
        _network_policy(name, namespace, network),
        _canary_role(name, namespace),
        _canary_role_binding(name, namespace, sink_service_account),
        _deployment(name, spec, namespace, image, image_pull_policy, sink_service_account),
    ]


def _meta(name: str, object_name: str, namespace: str, controls: Iterable[str], **extra: Any) -> dict[str, Any]:
    return owned_metadata(object_name, namespace, owner_kind=KIND, owner_name=name, controls=controls, **extra)


def _canary(name: str, namespace: str) -> dict[str, Any]:
    """No `data`: the sink owns data.nonce (see the module docstring)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(
            name,
            canary_name(name),
            namespace,
            [C_NOT_LOST],
            labels={COMPONENT: "audit-canary"},
            annotations={WRITTEN_BY: SINK_FIELD_MANAGER},
        ),
    }


def _canary_role(name: str, namespace: str) -> dict[str, Any]:
    """The sink's only right in the audit namespace: its own canary ConfigMap, by name."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(name, canary_role_name(name), namespace, [C_NOT_LOST], labels={COMPONENT: SINK_COMPONENT}),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [canary_name(name)],
                "verbs": ["get", "patch"],
            }
        ],
    }


def _canary_role_binding(name: str, namespace: str, service_account: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(name, canary_role_name(name), namespace, [C_NOT_LOST], labels={COMPONENT: SINK_COMPONENT}),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": canary_role_name(name)},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }


def _store_claim(name: str, spec: AuditPolicySpec, namespace: str) -> dict[str, Any]:
    storage = spec.sink.storage
    claim: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class_name:
        claim["storageClassName"] = storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(
            name,
            store_claim_name(name),
            namespace,
            [C_NOT_LOST, C_PROTECTED, C_BACKED_UP],
            labels={COMPONENT: "audit-store"},
        ),
        "spec": claim,
    }


def _service(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, sink_name(name), namespace, [C_TLS], labels={COMPONENT: SINK_COMPONENT}),
        "spec": {
            "type": "ClusterIP",
            "selector": sink_selector(name),
            "ports": [
                {"name": "https", "port": SERVICE_PORT, "targetPort": "https", "protocol": "TCP"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def _network_policy(name: str, namespace: str, network: NetworkSettings) -> dict[str, Any]:
    dns_ports = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(name, sink_name(name), namespace, [C_TLS, C_PROTECTED], labels={COMPONENT: SINK_COMPONENT}),
        "spec": {
            "podSelector": {"matchLabels": sink_selector(name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                # the API server calls from the node network: no pod or namespace selector can name it
                {"ports": [{"port": SINK_PORT, "protocol": "TCP"}]},
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}],
                    "ports": [{"port": METRICS_PORT, "protocol": "TCP"}],
                },
            ],
            "egress": [
                # status, canary and events: the API server's addresses are cluster-specific
                {"ports": [{"port": port, "protocol": "TCP"} for port in API_SERVER_PORTS]},
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": network.dns_namespace}
                            },
                            "podSelector": {"matchLabels": dict(network.dns_pod_labels)},
                        }
                    ],
                    "ports": dns_ports,
                },
            ],
        },
    }


def sink_args(name: str, spec: AuditPolicySpec, namespace: str) -> list[str]:
    """The sink container's arguments (the image's entrypoint is `iotsec`)."""
    args = [
        "audit",
        "serve",
        "--audit-policy",
        name,
        "--namespace",
        namespace,
        "--store",
        STORE_MOUNT,
        "--signing-key",
        f"{SIGNING_MOUNT}/{SIGNING_KEY_FIELD}",
        "--signing-key-readonly",
        "--tls-cert",
        f"{TLS_MOUNT}/tls.crt",
        "--tls-key",
        f"{TLS_MOUNT}/tls.key",
    ]
    if spec.sink.authentication == "clientCertificate":
        args += ["--client-ca", f"{CLIENT_CA_MOUNT}/ca.crt"]
    else:
        args += ["--token-file", f"{TOKEN_MOUNT}/token"]
    return [*args, "--port", str(SINK_PORT), "--metrics-port", str(METRICS_PORT)]


def _deployment(
    name: str, spec: AuditPolicySpec, namespace: str, image: str, pull_policy: str, service_account: str
) -> dict[str, Any]:
    client_ca = spec.sink.authentication == "clientCertificate"
    client_key, client_mount = ("ca.crt", CLIENT_CA_MOUNT) if client_ca else ("token", TOKEN_MOUNT)
    read_only = 0o440  # root:fsGroup, readable by the sink's group only
    volumes = [
        {"name": "store", "persistentVolumeClaim": {"claimName": store_claim_name(name)}},
        {
            "name": "tls",
            "secret": {
                "secretName": tls_secret_name(name),
                "defaultMode": read_only,
                "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}],
            },
        },
        {
            "name": "client",
            "secret": {
                "secretName": client_secret_name(name),
                "defaultMode": read_only,
                "items": [{"key": client_key, "path": client_key}],
            },
        },
        {
            "name": "signing-key",
            "secret": {
                "secretName": signing_secret_name(name),
                "defaultMode": read_only,
                "items": [{"key": SIGNING_KEY_FIELD, "path": SIGNING_KEY_FIELD}],
            },
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi", "medium": "Memory"}},
    ]
    mounts = [
        {"name": "store", "mountPath": STORE_MOUNT},
        {"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True},
        {"name": "client", "mountPath": client_mount, "readOnly": True},
        {"name": "signing-key", "mountPath": SIGNING_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    probe = {"scheme": "HTTPS", "port": "https"}
    container = {
        "name": "sink",
        "image": image,
        "imagePullPolicy": pull_policy,
        "args": sink_args(name, spec, namespace),
        "ports": [
            {"name": "https", "containerPort": SINK_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "readinessProbe": {"httpGet": {"path": "/readyz", **probe}, "periodSeconds": 5, "timeoutSeconds": 5},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "securityContext": restricted_container_security(),
        "volumeMounts": mounts,
    }
    labels = {**sink_selector(name), LEVEL_LABEL: "standard"}
    controls = [C_ADMIN_ACTIVITY, C_NOT_LOST, C_PROTECTED, C_RETENTION, C_TLS, C_MONITORING]
    pod = {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": True,  # it reads its AuditPolicy and writes status, canary and events
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,  # finish the batch being written and fsync
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SINK_UID,
            "runAsGroup": SINK_UID,
            "fsGroup": SINK_UID,  # the store volume is writable by the sink
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, sink_name(name), namespace, controls, labels={COMPONENT: SINK_COMPONENT}),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # one writer per store: never two pods on the volume
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": sink_selector(name)},
            "template": {
                "metadata": {"labels": {**_meta(name, "", namespace, controls)["labels"], **labels}},
                "spec": pod,
            },
        },
    }


# --- status -----------------------------------------------------------------------------------------------------


def ready_condition(found: Sequence[Mapping[str, Any]] | None, generation: int | None) -> dict[str, Any]:
    """Ready from the other conditions: True (Recording) only when the objects are applied, the sink has reported,
    the pipeline delivers and the store takes writes. Otherwise False with the first reason that fails:
    ChainBroken (the sink's own verification found tampering), KeyUnreadable (the signing key Secret holds no
    readable key: the sink cannot sign), the Applied reason (InvalidSpec, ApplyFailed), AuditPipelineBroken,
    StorageFull, then AwaitingSink while the sink has not reported at all."""
    controls = [C_ADMIN_ACTIVITY, C_NOT_LOST]
    applied = conditions.find(found, APPLIED)
    key = conditions.find(found, SIGNING_KEY)
    broken = conditions.find(found, PIPELINE_BROKEN)
    full = conditions.find(found, STORAGE_FULL)
    intact = conditions.find(found, CHAIN_INTACT)
    if intact is not None and intact.get("status") == "False":
        return conditions.condition(READY, False, "ChainBroken", intact.get("message", ""), generation, [C_PROTECTED])
    if key is not None and key.get("status") == "False":
        reason = key.get("reason") or keysecrets.REASON
        return conditions.condition(READY, False, reason, key.get("message", ""), generation, [C_PROTECTED])
    if applied is None or applied.get("status") != "True":
        reason = (applied or {}).get("reason") or "NotApplied"
        message = (applied or {}).get("message") or "the sink's objects have not been applied yet"
        return conditions.condition(READY, False, reason, message, generation, controls)
    for failing in (broken, full):
        if failing is not None and failing.get("status") == "True":
            return conditions.condition(READY, False, failing["type"], failing.get("message", ""), generation, controls)
    if broken is None:
        return conditions.condition(
            READY, False, "AwaitingSink", "no report from the audit sink yet", generation, controls
        )
    return conditions.condition(
        READY, True, "Recording", "the audit pipeline delivers and the store takes writes", generation, controls
    )


SILENCE_MARGIN = timedelta(minutes=3)  # the sink's status cadence (1 min) plus slack


def silent_sink(body: Mapping[str, Any], spec: AuditPolicySpec, now: datetime) -> dict[str, Any] | None:
    """AuditPipelineBroken=True (SinkSilent) when the sink has reported before but its last canary is older
    than interval + deadline + margin: a dead sink cannot say so itself. None while it is on time."""
    status = body.get("status") or {}
    seen = status.get("lastCanarySeen")
    if not seen:
        return None
    limit = parse_duration(spec.sink.canary.interval) + parse_duration(spec.sink.canary.deadline) + SILENCE_MARGIN
    age = now - parse_rfc3339(seen, "lastCanarySeen")
    if age <= limit:
        return None
    message = (
        f"the audit sink last reported a canary {int(age.total_seconds())}s ago (limit {int(limit.total_seconds())}s):"
        f" it is down or cannot reach the API server"
    )
    generation = body.get("metadata", {}).get("generation")
    return conditions.condition(PIPELINE_BROKEN, True, "SinkSilent", message, generation, [C_NOT_LOST])


def backup_ref(spec: AuditPolicySpec, namespace: str) -> tuple[str, str] | None:
    """(namespace, name) of the BackupPolicy the spec names; a reference without a namespace means the audit
    namespace, where the store lives. That policy should select the claim `store_claim_name(name)`; the reconciler
    checks only that it exists, not what it selects."""
    ref: NamespacedObjectRef | None = spec.backup_policy_ref
    if ref is None:
        return None
    return (ref.namespace or namespace, ref.name)


def backed_up_condition(
    ref: tuple[str, str], policy: Mapping[str, Any] | None, claim: str, generation: int | None
) -> dict[str, Any]:
    """BackedUp: the referenced BackupPolicy exists and names the store claim (or selects claims by label)."""
    where = f"BackupPolicy {ref[0]}/{ref[1]}"
    if policy is None:
        status, reason, message = (
            False,
            "BackupPolicyMissing",
            f"{where} does not exist: the audit store is not backed up",
        )
    elif claim in ((policy.get("spec") or {}).get("pvcNames") or []):
        status, reason, message = True, "BackupPolicyFound", f"{where} backs up the store claim {claim}"
    elif (policy.get("spec") or {}).get("pvcSelector"):
        status, reason = True, "BackupPolicyFound"
        message = f"{where} selects claims by label: make sure it matches the store claim {claim}"
    else:
        status, reason = False, "StoreNotSelected"
        message = f"{where} does not name the store claim {claim} in pvcNames: the audit store is not backed up"
    return conditions.condition(BACKED_UP, status, reason, message, generation, [C_BACKED_UP])
