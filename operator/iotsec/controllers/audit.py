"""kopf wiring for AuditPolicy: parse → build (pure) → apply → prune → status.

The objects (iotsec.build.audit) live in the audit namespace (`Config.audit_namespace`, env
IOTSEC_AUDIT_NAMESPACE, the chart's `<release>-audit`), never in the release namespace: the operator holds no
Deployment, Service or NetworkPolicy rights where the webhook runs. The store claim and the signing key Secret
get no owner reference and are never pruned: deleting the AuditPolicy must not delete the audit trail or the key
that signed it. The sink reports into the same status (AuditPipelineBroken, StorageNearlyFull, StorageFull and the
store figures); the operator keeps those conditions and derives Ready from them with `ready_condition`.

The sink's image, its ServiceAccount and the usernames whose writes the policy records in full come from the
process's `Config` (`image`, the platform's sink account, `operator_users`).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

import kopf
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from iotsec.api.auditpolicy import AuditPolicySpec
from iotsec.api.common import API_VERSION, GROUP, VERSION
from iotsec.api.validation import parse_resource
from iotsec.audittrail.chain import private_pem
from iotsec.build import audit as builder
from iotsec.build.apiserver_audit import policy_configmap_name
from iotsec.controllers import metrics
from iotsec.controllers.reconciler import Logger, api_failed, level_triggered, live_resource, write_status
from iotsec.controllers.runtime import config, kube, network
from iotsec.k8s.kube import ApiError, Kube, Owner
from iotsec.model import conditions, keysecrets, secretdata
from iotsec.model.labels import OWNER_KIND, OWNER_NAME, REPLACE_UNREADABLE
from iotsec.pki import certs

log = logging.getLogger(__name__)
KIND = builder.KIND
PLURAL = "auditpolicies"
PRUNABLE = (
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
)
KEEP_UNOWNED = ("PersistentVolumeClaim",)  # the audit store outlives its policy
APPLIED_CONTROLS = [builder.C_ADMIN_ACTIVITY, builder.C_NOT_LOST, builder.C_TLS]


def _namespace() -> str:
    return (
        config().platform.audit_namespace
    )  # the sinks' own namespace, apart from the webhook in the release namespace


@kopf.on.delete(GROUP, VERSION, PLURAL)
def on_delete(name: str, body: kopf.Body, **_: Any) -> None:
    kopf.event(
        body,
        type="Normal",
        reason="Retained",
        message=f"policy deleted; the audit store claim {_namespace()}/{builder.store_claim_name(name)} is kept "
        "with every record: delete it by hand once its segments are exported",
    )
    metrics.forget(KIND, name)
    with contextlib.suppress(KeyError):
        metrics.KEY_UNREADABLE.remove(keysecrets.secret_ref(_namespace(), builder.signing_secret_name(name)))


def reconcile(name: str, logger: Logger | None = None, seen: dict[str, Any] | None = None) -> None:
    api = kube()
    with live_resource(api, KIND, name, logger=logger, seen=seen) as (body, outcome):
        if body is None:
            return
        namespace = _namespace()
        try:
            spec: AuditPolicySpec = parse_resource(body).spec  # type: ignore[assignment]
            objects = builder.desired_objects(
                name,
                spec,
                namespace=namespace,
                image=config().image,
                image_pull_policy=config().image_pull_policy,
                operator_users=config().audited_operator_users,
                sink_service_account=config().platform.sink_service_account,
                network=network(),
            )
        except ValueError as exc:  # InvalidResourceError, or a policy kube-apiserver would refuse to load
            outcome.invalid()
            _failed(api, body, "InvalidSpec", str(exc))
            raise kopf.PermanentError(f"invalid spec: {exc}") from None
        try:
            signing = _ensure_signing_key(api, body, namespace)  # before the Deployment that mounts it
            _apply(api, body, objects)
            _ensure_credentials(api, body, spec, namespace)
            ref = builder.backup_ref(spec, namespace)
            backup_policy = api.get(API_VERSION, "BackupPolicy", ref[1], ref[0]) if ref is not None else None
            policy_map = f"{namespace}/{policy_configmap_name(name)}"
            silent = builder.silent_sink(body, spec, _now())
            ready = _write_status(api, body, policy_map, ref, backup_policy, [signing, *([silent] if silent else [])])
        except ApiError as exc:
            if not exc.transient:  # a transient one is also a 409: the sink wrote the status since it was read
                _failed(api, body, "ApplyFailed", str(exc))
            api_failed(exc)
        metrics.RESOURCE_READY.labels(KIND, name).set(1 if ready else 0)
        outcome.did(f"{len(objects)} objects applied in {namespace}", f"policy {policy_map}", f"Ready={ready}")
        outcome.succeeded()


def _apply(api: Kube, body: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    name, owner = body["metadata"]["name"], Owner.of(body)  # cluster-scoped: it may own namespaced children
    for obj in objects:
        api.apply(obj, None if obj["kind"] in KEEP_UNOWNED else owner)
    for api_version, kind in PRUNABLE:
        keep = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects if o["kind"] == kind}
        pruned = api.prune(api_version, kind, KIND, name, keep, namespace=_namespace())
        if pruned:
            metrics.OBJECTS_PRUNED.labels(kind).inc(len(pruned))
    for kind in ("ConfigMap", "Deployment", "Service", "NetworkPolicy", "PersistentVolumeClaim", "Role", "RoleBinding"):
        metrics.MANAGED_OBJECTS.labels(KIND, name, kind).set(sum(1 for o in objects if o["kind"] == kind))


def _ensure_signing_key(api: Kube, body: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The store's signing key Secret: created once, never overwritten, never owned (it outlives the policy).

    Returns the SigningKeyReadable condition. A Secret that holds no readable Ed25519 key is left alone, with
    Ready=False (KeyUnreadable), a Warning event and iotsec_key_unreadable=1, until a person annotates it
    iotsec.io/replace-unreadable=true; a readable one is used as it is, whoever made it (the sinks of earlier
    releases made their own)."""
    name, generation = body["metadata"]["name"], body["metadata"].get("generation")
    secret_name = builder.signing_secret_name(name)
    ref = keysecrets.secret_ref(namespace, secret_name)
    secret = api.get("v1", "Secret", secret_name, namespace)
    if secret is not None and keysecrets.replacement_requested(secret) and not _readable_signing_key(secret, ref):
        secret = _replace_signing_key(api, body, namespace, secret, ref)
    if secret is None:
        secret = _create_signing_key(api, body, namespace)
    try:
        builder.signing_key(secret or {}, f"Secret {ref}")
    except keysecrets.KeyUnreadableError as exc:
        metrics.KEY_UNREADABLE.labels(ref).set(1)
        message = f"the signing key Secret {ref} is unusable ({exc}); {keysecrets.advice(namespace, secret_name)}"
        log.warning("AuditPolicy %s: %s", name, message)
        before = conditions.find((body.get("status") or {}).get("conditions"), builder.SIGNING_KEY) or {}
        if (before.get("status"), before.get("reason")) != ("False", keysecrets.REASON):
            kopf.warn(body, reason=keysecrets.REASON, message=message)
        return _signing_condition(False, keysecrets.REASON, message, generation)
    metrics.KEY_UNREADABLE.labels(ref).set(0)
    return _signing_condition(True, "Readable", f"the signing key in Secret {ref} is readable", generation)


def _readable_signing_key(secret: dict[str, Any], ref: str) -> bool:
    """A readable key is never replaced, annotation or not: that would end the chain's key behind its back."""
    try:
        builder.signing_key(secret, f"Secret {ref}")
    except keysecrets.KeyUnreadableError:
        return False
    log.warning("ignoring %s on %s: the key in it is readable", REPLACE_UNREADABLE, ref)
    return True


def _replace_signing_key(
    api: Kube, body: dict[str, Any], namespace: str, unreadable: dict[str, Any], ref: str
) -> dict[str, Any] | None:
    """A new key written over the unreadable Secret in one compare-and-swap (PUT at the version that was judged):
    readers never find the Secret missing, and a key someone wrote there meanwhile is never overwritten (the swap
    fails and that Secret is read and judged instead)."""
    made = builder.signing_key_secret(body["metadata"]["name"], namespace, private_pem(Ed25519PrivateKey.generate()))
    made["metadata"]["resourceVersion"] = unreadable["metadata"].get("resourceVersion")
    if api.replace(made) is None:
        return api.get("v1", "Secret", unreadable["metadata"]["name"], namespace)
    kopf.warn(
        body,
        reason="SigningKeyReplaced",
        message=f"replaced the unreadable signing key {ref} as its {REPLACE_UNREADABLE} annotation "
        "asks: segments sealed before verify only with the previous public key",
    )
    made["metadata"].pop("resourceVersion")
    return made


def _create_signing_key(api: Kube, body: dict[str, Any], namespace: str) -> dict[str, Any] | None:
    """A new key in a new Secret; the one someone else made meanwhile if there is one (create never overwrites)."""
    name, secret_name = body["metadata"]["name"], builder.signing_secret_name(body["metadata"]["name"])
    made = builder.signing_key_secret(name, namespace, private_pem(Ed25519PrivateKey.generate()))
    if api.create(made):
        kopf.event(body, type="Normal", reason="SigningKeyCreated", message=f"created the signing key {secret_name}")
        return made
    return api.get("v1", "Secret", secret_name, namespace)


def _signing_condition(readable: bool, reason: str, message: str, generation: int | None) -> dict[str, Any]:
    return conditions.condition(builder.SIGNING_KEY, readable, reason, message, generation, [builder.C_PROTECTED])


def _ensure_credentials(api: Kube, body: dict[str, Any], spec: AuditPolicySpec, namespace: str) -> None:
    """The sink's serving certificate and the API server's client identity (or token), unless the user provides
    them: a Secret without iotsec's owner labels is theirs (cert-manager, say) and is never touched."""
    name, now = body["metadata"]["name"], _now()
    secret_name = builder.tls_secret_name(name)
    existing = api.get("v1", "Secret", secret_name, namespace)
    if _ours_or_absent(existing, name):
        service = api.get("v1", "Service", builder.sink_name(name), namespace) or {}
        cluster_ip = (service.get("spec") or {}).get("clusterIP")
        ips = [cluster_ip] if cluster_ip and cluster_ip != "None" else []
        current = _decoded(existing, certs.WebhookTLS.from_secret_data)
        desired, reasons = certs.ensure_webhook_tls(current, builder.service_dns_names(name, namespace), ips, now)
        if reasons:
            data = desired.to_secret_data()
            api.apply(builder.credential_secret(name, secret_name, namespace, data), Owner.of(body))
            kopf.event(body, type="Normal", reason="SinkCertificate", message="; ".join(reasons))
    client_name = builder.client_secret_name(name)
    existing = api.get("v1", "Secret", client_name, namespace)
    if not _ours_or_absent(existing, name):
        return
    data, reasons = _client_credentials(existing, spec.sink.authentication, now)
    if reasons:
        api.apply(builder.credential_secret(name, client_name, namespace, data), Owner.of(body))
        if existing is None:
            kopf.event(body, type="Normal", reason="SinkClientCredentials", message="; ".join(reasons))
        else:
            kopf.warn(
                body,
                reason="SinkClientCredentials",
                message=f"{'; '.join(reasons)}: give the API server the new webhook kubeconfig "
                f"(iotsec audit policy --from-cluster {name} --webhook-kubeconfig)",
            )


def _client_credentials(
    existing: dict[str, Any] | None, authentication: str, now: datetime
) -> tuple[dict[str, str], list[str]]:
    if authentication == "clientCertificate":
        current = _decoded(existing, certs.ClientAuth.from_secret_data)
        desired, reasons = certs.ensure_client_auth(current, "kube-apiserver", now)
        return desired.to_secret_data(), reasons
    token = _secret_strings(existing).get("token", "")
    if len(token) >= 32:
        return {"token": token}, []
    return {"token": secrets.token_urlsafe(32)}, ["created the bearer token the API server presents"]


def _ours_or_absent(secret: dict[str, Any] | None, name: str) -> bool:
    labels = ((secret or {}).get("metadata") or {}).get("labels") or {}
    return secret is None or (labels.get(OWNER_KIND) == KIND and labels.get(OWNER_NAME) == name)


def _secret_strings(secret: dict[str, Any] | None) -> dict[str, str]:
    try:
        return secretdata.decode(secret)
    except (ValueError, UnicodeError):
        return {}


def _decoded(secret: dict[str, Any] | None, parse: Any) -> Any:
    """The credentials in an operator-kept Secret, or None: a damaged one is replaced, never trusted."""
    data = _secret_strings(secret)
    if not data:
        return None
    try:
        return parse(data)
    except ValueError as exc:
        log.warning("audit sink credentials unusable, issuing new ones: %s", exc)
        return None


def _write_status(
    api: Kube,
    body: dict[str, Any],
    policy_map: str,
    ref: tuple[str, str] | None,
    backup_policy: dict[str, Any] | None,
    extra: list[dict[str, Any]] | None = None,
) -> bool:
    generation = body["metadata"].get("generation")
    previous = list((body.get("status") or {}).get("conditions") or [])
    entries = [
        conditions.condition(
            builder.APPLIED, True, "Applied", _applied_message(policy_map), generation, APPLIED_CONTROLS
        )
    ]
    if ref is not None:
        claim = builder.store_claim_name(body["metadata"]["name"])
        backed_up = builder.backed_up_condition(ref, backup_policy, claim, generation)
        entries.append(backed_up)
        before = conditions.find(previous, builder.BACKED_UP) or {}
        if backed_up["status"] == "False" and (before.get("status"), before.get("reason")) != (
            "False",
            backed_up["reason"],
        ):
            kopf.warn(body, reason="BackupPolicyMissing", message=backed_up["message"])
    else:
        previous = [c for c in previous if c.get("type") != builder.BACKED_UP]
    entries.extend(extra or [])
    ready = _status(api, body, previous, entries, {"policyConfigMap": policy_map})
    return ready["status"] == "True"


def _now() -> datetime:
    return datetime.now(UTC)


def _applied_message(policy_map: str) -> str:
    return f"policy ConfigMap {policy_map}, canary and its grant, store claim and sink applied"


def _failed(api: Kube, body: dict[str, Any], reason: str, message: str) -> None:
    """Applied=False (and so Ready=False) with the reason, and a Warning event."""
    generation = body["metadata"].get("generation")
    entry = conditions.condition(builder.APPLIED, False, reason, message, generation, APPLIED_CONTROLS)
    _status(api, body, list((body.get("status") or {}).get("conditions") or []), [entry], {})
    kopf.warn(body, reason=reason, message=message)


def _status(
    api: Kube,
    body: dict[str, Any],
    previous: list[dict[str, Any]],
    entries: list[dict[str, Any]],
    fields: dict[str, Any],
) -> dict[str, Any]:
    """Merge `entries` and Ready into the status (the sink's conditions stay); write only what changed."""
    generation = body["metadata"].get("generation")
    ready = builder.ready_condition(conditions.merge_conditions(previous, entries), generation)
    fields = {"observedGeneration": generation, **fields}
    # guarded: the sink writes the same conditions list, so a concurrent write of its fails this one with 409
    write_status(api, KIND, body, [*entries, ready], fields, previous=previous, guarded=True)
    return ready


level_triggered(KIND, PLURAL, reconcile)
