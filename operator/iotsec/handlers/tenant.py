"""kopf wiring for TenantIsolation: parse → plan → apply (key material filled here) → prune → status.

Namespaces and Secrets holding keys get no owner reference and are never pruned: deleting a tenant, or an
application from its spec, must not take data or keys with it. Only `deletionPolicy: Shred` destroys them,
on purpose, when the tenant is deleted.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from iotsec import appkeys, conditions, devices, metrics, secretdata
from iotsec.api.common import API_VERSION, GROUP, VERSION
from iotsec.api.durations import parse_duration
from iotsec.api.tenantisolation import TenantIsolationSpec
from iotsec.api.validation import InvalidResourceError, parse_resource
from iotsec.certs import not_after
from iotsec.desired import tenant as builder
from iotsec.handlers.wiring import level_triggered, live_resource
from iotsec.kube import ApiError, Kube, Owner
from iotsec.runtime import CONFIG, kube

KIND = builder.KIND
PLURAL = "tenantisolations"
ROTATE_ANNOTATION = "iotsec.io/rotate-keys"  # any new value rotates every application key at once
PRUNABLE = (
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("v1", "ServiceAccount"),
    ("v1", "ResourceQuota"),
    ("v1", "LimitRange"),
    ("v1", "ConfigMap"),
    ("storage.k8s.io/v1", "StorageClass"),
)
KEEP_UNOWNED = ("Namespace", "Secret")


@kopf.on.delete(GROUP, VERSION, PLURAL)
def on_delete(name: str, body: kopf.Body, **_: Any) -> None:
    api = kube()
    spec = body.get("spec") or {}
    namespaces = list(spec.get("namespaces") or ())
    for api_version, kind in PRUNABLE:
        api.prune(api_version, kind, KIND, name, keep=())
    if spec.get("deletionPolicy") != "Shred":
        kopf.event(
            body,
            type="Normal",
            reason="Retained",
            message=f"tenant deleted; namespaces {', '.join(namespaces)}, their volumes and keys are kept",
        )
        metrics.forget(KIND, name)
        return
    owned = [ns for ns in namespaces if _tenant_of(api, ns) == spec.get("tenantID")]
    for namespace in owned:
        api.delete("v1", "Namespace", namespace)
    remaining = [ns for ns in owned if api.get("v1", "Namespace", ns) is not None]
    if remaining:
        raise kopf.TemporaryError(f"shredding: waiting for namespaces {', '.join(remaining)} to go", delay=5)
    kopf.warn(
        body,
        reason="Shredded",
        message=f"tenant deleted with deletionPolicy Shred: namespaces {', '.join(owned)} and every key in "
        "them destroyed; retained volumes are unreadable without their keys",
    )
    metrics.forget(KIND, name)


def _tenant_of(api: Kube, namespace: str) -> str | None:
    found = api.get("v1", "Namespace", namespace)
    return ((found or {}).get("metadata", {}).get("labels") or {}).get(builder.TENANT_LABEL)


# ---------------------------------------------------------------- reconcile


def reconcile(name: str) -> None:
    api = kube()
    with live_resource(api, KIND, name) as (body, outcome):
        if body is None:
            return
        try:
            spec: TenantIsolationSpec = parse_resource(body).spec  # type: ignore[assignment]
        except InvalidResourceError as exc:
            outcome.invalid()
            _reject(api, body, exc)
        try:
            ready = _reconcile(api, body, spec)
        except ApiError as exc:
            _status(
                api,
                body,
                [
                    conditions.condition(
                        "Ready",
                        False,
                        "ApiUnavailable" if exc.transient else "ApplyFailed",
                        str(exc),
                        body["metadata"].get("generation"),
                    )
                ],
                {},
            )
            if exc.transient:
                raise kopf.TemporaryError(str(exc), delay=exc.retry_after or CONFIG.retry_seconds) from None
            raise kopf.PermanentError(str(exc)) from None
        metrics.RESOURCE_READY.labels(KIND, name).set(1 if ready else 0)
        outcome.succeeded()


def _reconcile(api: Kube, body: dict[str, Any], spec: TenantIsolationSpec) -> bool:
    name, now = body["metadata"]["name"], datetime.now(UTC)
    labels = {ns["metadata"]["name"]: ns["metadata"].get("labels") or {} for ns in api.list("v1", "Namespace")}
    plan = builder.plan_tenant(name, spec, labels)
    owner = Owner.of(body)
    rotation_request = (body["metadata"].get("annotations") or {}).get(ROTATE_ANNOTATION)
    rotated: list[str] = []
    applications: list[dict[str, Any]] = []
    keys = _Keys(spec, now, rotation_request, applications)
    ordered = sorted(plan.objects, key=lambda o: {"Namespace": 0, "Secret": 1}.get(o["kind"], 2))
    for obj in ordered:  # namespaces first, keys before the trust bundles made from them
        if obj["kind"] == "Secret":
            rotated += _apply_key_secret(api, obj, keys)
        elif obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == builder.DEVICE_TRUST:
            api.apply(_with_trust(api, obj, keys, plan), owner)
        else:
            api.apply(obj, None if obj["kind"] in KEEP_UNOWNED else owner)
    keep = {(o["metadata"].get("namespace"), o["metadata"]["name"]) for o in plan.objects}
    for api_version, kind in PRUNABLE:
        api.prune(api_version, kind, KIND, name, keep=keep)
    if rotated:
        kopf.event(body, type="Normal", reason="KeysRotated", message="; ".join(rotated))
    domain_missing = api.get(API_VERSION, "SecurityDomain", spec.security_domain) is None
    return _write_status(api, body, spec, plan, applications, rotated, domain_missing, keys.device_ca)


@dataclass
class _Keys:
    """What one reconciliation needs to fill key Secrets, and what it learns while doing so."""

    spec: TenantIsolationSpec
    now: datetime
    request: str | None
    applications: list[dict[str, Any]]
    device_ca: devices.DeviceCAState | None = None


def _apply_key_secret(api: Kube, obj: dict[str, Any], keys: _Keys) -> list[str]:
    """Fill a key Secret with real material, generated here and kept across rotations; return what changed."""
    metadata = obj["metadata"]
    existing = api.get("v1", "Secret", metadata["name"], metadata["namespace"])
    data = secretdata.decode(existing)
    purpose = metadata["labels"].get("iotsec.io/key-purpose")
    if purpose == "app-key":
        new_data, reasons = _app_key(keys, metadata["name"], data)
    elif purpose == "device-ca":
        new_data, reasons = _device_ca(keys, data)
    else:
        new_data, reasons = data or _volume_key(), [] if data else ["volume key created"]
    if existing is None or new_data != data:
        secret = {key: value for key, value in obj.items() if key != "stringData"}
        secret["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in sorted(new_data.items())}
        api.apply(secret)  # no owner reference: keys outlive the tenant object unless it is shredded
    return reasons


def _app_key(keys: _Keys, secret_name: str, data: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    app = next(a for a in keys.spec.applications or () if builder.key_secret_name(a.name) == secret_name)
    ring, reasons = appkeys.ensure_key_ring(
        _ring(data),
        app.key_algorithm,
        parse_duration(app.key_rotation),
        parse_duration(app.key_overlap),
        keys.now,
        keys.request,
    )
    keys.applications.append(_application_status(app, keys.spec, ring))
    return (ring.to_secret_data() if reasons or not data else data), [f"{app.name}: {r}" for r in reasons]


def _device_ca(keys: _Keys, data: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    settings = keys.spec.device_ca
    try:
        current = devices.DeviceCAState.from_secret_data(data) if data else None
    except ValueError:
        current = None  # damaged: issue a new CA rather than trust it
    state, reasons = devices.ensure_device_ca(
        current,
        keys.spec.tenant_id,
        settings.key_algorithm,
        parse_duration(settings.validity),
        parse_duration(settings.rotate_before),
        keys.now,
        settings.organization,
    )
    keys.device_ca = state
    return (state.to_secret_data() if reasons or not data else data), [f"device CA: {r}" for r in reasons]


def _with_trust(api: Kube, obj: dict[str, Any], keys: _Keys, plan: builder.TenantPlan) -> dict[str, Any]:
    """The trust bundle ConfigMap with the CA bundle and a CRL of the registry's revocations."""
    if keys.device_ca is None:
        return obj
    home = plan.namespaces[0]
    registry_map = api.get("v1", "ConfigMap", devices.REGISTRY, home)
    registry = devices.Registry.from_config_map_data((registry_map or {}).get("data"))
    current = api.get("v1", "ConfigMap", builder.DEVICE_TRUST, obj["metadata"]["namespace"])
    crl = ((current or {}).get("data") or {}).get("crl.pem")
    return {**obj, "data": devices.trust_bundle(keys.device_ca, registry, crl, keys.now)}


def _ring(data: dict[str, str]) -> appkeys.KeyRing | None:
    if not data:
        return None
    try:
        return appkeys.KeyRing.from_secret_data(data)
    except ValueError:
        return None  # damaged or foreign content: issue a fresh key rather than trust it


def _volume_key() -> dict[str, str]:
    """A random 256-bit passphrase under the names Longhorn and Ceph-CSI read (README: storage)."""
    passphrase = secrets.token_urlsafe(32)
    return {"CRYPTO_KEY_VALUE": passphrase, "CRYPTO_KEY_PROVIDER": "secret", "encryptionPassphrase": passphrase}


def _application_status(app: Any, spec: TenantIsolationSpec, ring: appkeys.KeyRing) -> dict[str, Any]:
    return {
        "name": app.name,
        "appID": builder.app_id(spec.tenant_id, app.name),
        "serviceAccount": app.name,
        "keySecret": builder.key_secret_name(app.name),
        "keyCreated": _stamp(ring.current.created),
        "nextRotation": _stamp(ring.next_rotation(parse_duration(app.key_rotation))),
    }


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------- status


def _write_status(
    api: Kube,
    body: dict[str, Any],
    spec: TenantIsolationSpec,
    plan: builder.TenantPlan,
    applications: list[dict[str, Any]],
    rotated: list[str],
    domain_missing: bool,
    device_ca: devices.DeviceCAState | None,
) -> bool:
    generation = body["metadata"].get("generation")
    if plan.conflicts:
        ready = (False, "Conflict", "; ".join(plan.conflicts))
    elif domain_missing:
        ready = (False, "DomainMissing", f"SecurityDomain {spec.security_domain} does not exist (yet)")
    else:
        ready = (True, "Reconciled", f"{len(plan.namespaces)} namespaces, {len(applications)} applications")
    keys = ("Rotated", "; ".join(rotated)) if rotated else ("KeysCurrent", f"{len(applications)} keys within period")
    found = [
        conditions.condition("Ready", ready[0], ready[1], ready[2], generation, ["X1369-9.2.1-1"]),
        conditions.condition("KeysRotated", True, keys[0], keys[1], generation, ["X1369-9.1.1.2-4"]),
    ]
    fields = {
        "observedGeneration": generation,
        "namespaces": plan.namespaces,
        "applications": sorted(applications, key=lambda a: a["name"]),
        "deviceCASecret": builder.DEVICE_CA_SECRET if plan.namespaces else None,
        "deviceCANotAfter": _stamp(not_after(device_ca.ca.cert_pem)) if device_ca else None,
        "storageClass": plan.storage_class,
    }
    _status(api, body, found, {k: v for k, v in fields.items() if v is not None})
    if plan.conflicts:
        kopf.warn(body, reason="Conflict", message="; ".join(plan.conflicts))
    return ready[0]


def _status(api: Kube, body: dict[str, Any], found: list[dict[str, Any]], fields: dict[str, Any]) -> None:
    previous = (body.get("status") or {}).get("conditions")
    status = {**fields, "conditions": conditions.merge_conditions(previous, found)}
    if all((body.get("status") or {}).get(k) == v for k, v in status.items()):
        return
    api.patch_status(API_VERSION, KIND, body["metadata"]["name"], status)


def _reject(api: Kube, body: dict[str, Any], exc: InvalidResourceError) -> None:
    message = "; ".join(str(p) for p in exc.problems)
    ready = conditions.condition("Ready", False, "InvalidSpec", message, body["metadata"].get("generation"))
    _status(api, body, [ready], {"observedGeneration": body["metadata"].get("generation")})
    kopf.warn(body, reason="InvalidSpec", message=message)
    raise kopf.PermanentError(f"invalid spec: {message}")


level_triggered(PLURAL, reconcile)
