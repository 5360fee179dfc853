"""kopf wiring for TenantIsolation: parse → plan → apply (key material filled here) → prune → status.

Namespaces and Secrets holding keys get no owner reference and are never pruned: deleting a tenant, or an
application from its spec, must not take data or keys with it. Only `deletionPolicy: Shred` destroys them,
on purpose, when the tenant is deleted, and then only the namespaces the operator itself created.

Keys are never replaced behind anyone's back: a key Secret that exists but cannot be read, or is not iotsec's
for this tenant, is left as it is and reported (Ready=False, KeyUnreadable) until a person names it in the
`iotsec.io/replace-unreadable-keys` annotation.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import kopf

from iotsec.api.common import API_VERSION, GROUP, VERSION
from iotsec.api.durations import parse_duration
from iotsec.api.tenantisolation import TenantIsolationSpec
from iotsec.build import tenant as builder
from iotsec.controllers import metrics
from iotsec.controllers.reconciler import (
    Logger,
    Reconciliation,
    api_failed,
    level_triggered,
    live_resource,
    parsed_spec,
    resource_lock,
    routed,
    write_status,
)
from iotsec.controllers.runtime import config, kube
from iotsec.k8s.kube import ApiError, Kube, Owner, cached_presence, read_only_list
from iotsec.model import conditions, secretdata
from iotsec.model.labels import (
    CREATED_BY,
    CRL_REQUESTED,
    KEY_PURPOSE_LABEL,
    MANAGED_BY,
    MANAGER,
    OWNER_KIND,
    OWNER_NAME,
    TENANT_LABEL,
    owner_selector,
)
from iotsec.model.platform import (
    Platform,
    device_ca_secret_name,
    device_registry_name,
    volume_key_secret_name,
)
from iotsec.model.time import rfc3339
from iotsec.pki import appkeys, devices
from iotsec.pki.certs import not_after

KIND = builder.KIND
PLURAL = "tenantisolations"
ROTATE_ANNOTATION = "iotsec.io/rotate-keys"  # any new value rotates every application key at once
REPLACE_ANNOTATION = "iotsec.io/replace-unreadable-keys"  # <namespace>/<name>,...: a person allows a replacement
CREATED_ANNOTATION = CREATED_BY
DEVICES_ISSUED_ANNOTATION = "iotsec.io/devices-issued"  # on the device CA Secret once its registry holds records
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
# Namespaces first, keys before the trust bundles made from them, Roles before their bindings: the API server
# checks a binding's Role against the rights of its creator, who has no bind on tenant Roles (no escalate either).
APPLY_ORDER = {"Namespace": 0, "Secret": 1, "Role": 2}
IMMUTABLE = {  # fields the API server refuses to change: the object is deleted and created again instead
    "RoleBinding": ("roleRef",),
    "StorageClass": ("provisioner", "parameters", "reclaimPolicy", "volumeBindingMode"),
}
VOLUME_KEY_FIELDS = ("CRYPTO_KEY_VALUE", "encryptionPassphrase")


def _ref(location: tuple[str, str]) -> str:
    return f"{location[0]}/{location[1]}"


# ---------------------------------------------------------------- delete


@kopf.on.delete(GROUP, VERSION, PLURAL)
def on_delete(name: str, body: kopf.Body, **_: Any) -> None:
    api = kube()
    with resource_lock(KIND, name):
        _delete(api, name, dict(body))


def _delete(api: Kube, name: str, body: dict[str, Any]) -> None:
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    registry = status.get("deviceRegistry", "")
    keep = [tuple(registry.split("/", 1))] if "/" in registry else []  # device records outlive the tenant object
    for api_version, kind in PRUNABLE:
        api.prune(api_version, kind, KIND, name, keep=keep)
    if spec.get("deletionPolicy") != "Shred":
        namespaces = ", ".join(spec.get("namespaces") or ())
        kopf.event(
            body,
            type="Normal",
            reason="Retained",
            message=f"tenant deleted; namespaces {namespaces}, their volumes and keys are kept",
        )
        metrics.forget(KIND, name)
        return
    platform, tenant_id = config().platform, spec.get("tenantID", "")
    created = [
        ns
        for ns in status.get("createdNamespaces") or ()
        if not platform.reserved(ns) and _tenant_of(api, ns) in (tenant_id, _GONE)  # gone: by an earlier pass
    ]
    for namespace in created:
        api.delete("v1", "Namespace", namespace)
    remaining = [ns for ns in created if api.get("v1", "Namespace", ns) is not None]
    if remaining:
        raise kopf.TemporaryError(f"shredding: waiting for namespaces {', '.join(remaining)} to go", delay=5)
    keys = [
        ref
        for ref, kind in _shreddable_keys(spec, status, created, platform)
        if _delete_if_ours(api, kind, ref, name, tenant_id)
    ]
    kopf.warn(
        body,
        reason="Shredded",
        message="tenant deleted with deletionPolicy Shred: "
        f"namespaces created for it deleted ({', '.join(created) or 'none'}) with every key in them; "
        f"keys destroyed: {', '.join(keys) or 'none'}; adopted namespaces kept; "
        "retained volumes are unreadable without their keys",
    )
    metrics.forget(KIND, name)


def _shreddable_keys(
    spec: dict[str, Any], status: dict[str, Any], created: list[str], platform: Platform
) -> list[tuple[str, str]]:
    """(namespace/name, kind) of the tenant's keys outside the namespaces Shred deletes."""
    tenant_id = spec.get("tenantID", "")
    keys = [
        (f"{app['namespace']}/{builder.key_secret_name(app['name'])}", "Secret")
        for app in spec.get("applications") or ()
        if app.get("namespace") not in created and not platform.reserved(app.get("namespace", ""))
    ]
    home = platform.namespace
    recorded = {
        "Secret:ca": status.get("deviceCASecret") or _ref((home, device_ca_secret_name(tenant_id))),
        "Secret:volume": status.get("volumeKeySecret") or _ref((home, volume_key_secret_name(tenant_id))),
        "ConfigMap:registry": status.get("deviceRegistry") or _ref((home, device_registry_name(tenant_id))),
    }
    keys += [(ref, what.split(":")[0]) for what, ref in recorded.items() if "/" in ref]
    return keys


def _delete_if_ours(api: Kube, kind: str, ref: str, owner: str, tenant_id: str) -> bool:
    namespace, name = ref.split("/", 1)
    found = api.get("v1", kind, name, namespace)
    if found is None or not _ours(found, owner, tenant_id):
        return False
    return api.delete("v1", kind, name, namespace)


def _owned(obj: dict[str, Any], owner: str) -> bool:
    """Written by iotsec for this TenantIsolation: its owner labels."""
    labels = obj["metadata"].get("labels") or {}
    return labels.get(MANAGED_BY) == MANAGER and labels.get(OWNER_KIND) == KIND and labels.get(OWNER_NAME) == owner


def _ours(obj: dict[str, Any], owner: str, tenant_id: str) -> bool:
    """Written by iotsec for this tenant: its owner labels, or (the device registry the CLI writes) its tenant."""
    labels = obj["metadata"].get("labels") or {}
    by_tenant = labels.get(MANAGED_BY) == MANAGER and labels.get(TENANT_LABEL) == tenant_id
    return _owned(obj, owner) or (OWNER_KIND not in labels and by_tenant)


_GONE = "<gone>"


def _tenant_of(api: Kube, namespace: str) -> str | None:
    """The namespace's tenant label; `_GONE` when the namespace does not exist."""
    found = api.get("v1", "Namespace", namespace)
    if found is None:
        return _GONE
    return (found.get("metadata", {}).get("labels") or {}).get(TENANT_LABEL)


# ---------------------------------------------------------------- reconcile


def reconcile(name: str, logger: Logger | None = None, seen: dict[str, Any] | None = None) -> None:
    api = kube()
    with live_resource(api, KIND, name, logger=logger, seen=seen) as (body, outcome):
        if body is None:
            return
        spec: TenantIsolationSpec = parsed_spec(api, KIND, body, outcome)
        try:
            ready = _reconcile(api, body, spec, outcome)
        except ApiError as exc:
            reason = "ApiUnavailable" if exc.transient else "ApplyFailed"
            generation = body["metadata"].get("generation")
            write_status(api, KIND, body, [conditions.condition("Ready", False, reason, str(exc), generation)])
            api_failed(exc)
        metrics.RESOURCE_READY.labels(KIND, name).set(1 if ready else 0)
        outcome.succeeded()


@dataclass
class _Run:
    """One reconciliation: what it needs to fill key Secrets, and what it learns while doing so."""

    api: Kube
    body: dict[str, Any]
    spec: TenantIsolationSpec
    now: datetime
    request: str | None
    replaceable: set[str]
    applications: list[dict[str, Any]] = field(default_factory=list)
    device_ca: devices.DeviceCAState | None = None
    rotated: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    consumed: list[str] = field(default_factory=list)  # entries of the replace annotation honoured this time
    created: list[str] = field(default_factory=list)
    ca_annotations: dict[str, str] = field(default_factory=dict)  # of the device CA Secret as read
    registry_missing: str | None = None  # why the device registry counts as lost
    registry: devices.Registry | None = None  # with the published revocations, once read
    bundles: dict[str | None, dict[str, Any] | None] | None = None  # trust bundle ConfigMaps by namespace, once read
    fresh_ca: bool = False  # the device CA Secret was created by this reconcile: it has issued nothing yet


def _reconcile(api: Kube, body: dict[str, Any], spec: TenantIsolationSpec, outcome: Reconciliation) -> bool:
    name = body["metadata"]["name"]
    annotations = body["metadata"].get("annotations") or {}
    status = body.get("status") or {}
    existing = _existing_namespaces(api, {*spec.namespaces, *(status.get("namespaces") or ())})
    labels = {ns: obj["metadata"].get("labels") or {} for ns, obj in existing.items()}
    plan = builder.plan_tenant(name, spec, labels, config().platform, key_namespace=_recorded_home(status))
    run = _Run(
        api,
        body,
        spec,
        datetime.now(UTC),
        annotations.get(ROTATE_ANNOTATION),
        {item.strip() for item in annotations.get(REPLACE_ANNOTATION, "").split(",") if item.strip()},
        created=list(status.get("createdNamespaces") or ()),
    )
    if not status.get("deviceCASecret", "").count("/") or not status.get("deviceRegistry"):
        _migrate_legacy(run, plan, status, set(existing))
    owner = Owner.of(body)
    ordered = sorted(plan.objects, key=lambda o: APPLY_ORDER.get(o["kind"], len(APPLY_ORDER)))
    for obj in ordered:  # namespaces first, keys before the trust bundles made from them
        if obj["kind"] == "Namespace":
            _apply_namespace(run, obj, obj["metadata"]["name"] in existing)
        elif obj["kind"] == "Secret":
            _apply_key_secret(run, obj)
        elif obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == builder.DEVICE_TRUST:
            if run.device_ca is not None:  # without a readable CA the published bundle stays as it is
                api.apply(_with_trust(run, obj, plan), owner)
        else:
            _apply_replacing_immutable(api, obj, None if obj["kind"] in KEEP_UNOWNED else owner)
    for api_version, kind in PRUNABLE:
        api.prune(api_version, kind, KIND, name, keep=plan.keep)
    _report_keys(run)
    domain_missing = api.get(API_VERSION, "SecurityDomain", spec.security_domain) is None
    ready = _write_status(run, plan, domain_missing)
    outcome.did(
        f"{len(plan.namespaces)} namespaces, {len(run.applications)} applications",
        f"rotated: {'; '.join(run.rotated)}" if run.rotated else "",
        f"unreadable: {'; '.join(run.unreadable)}" if run.unreadable else "",
        f"Ready={ready}",
    )
    return ready


def _existing_namespaces(api: Kube, names: set[str]) -> dict[str, dict[str, Any]]:
    """Those of `names` that exist, by name: looked up in the watch cache one by one when it follows namespaces (a
    comprehension over all 3,600 namespaces made 1,000 tenants' cold start quadratic, issue 18), else one list."""
    current = getattr(getattr(api, "cache", None), "current", None)
    if current is not None:
        found: dict[str, dict[str, Any]] = {}
        for name in names:
            followed, namespace = current("v1", "Namespace", name, None, {})
            if not followed:
                break
            if namespace is not None:
                found[name] = namespace
        else:
            return found
    return {
        ns["metadata"]["name"]: ns for ns in read_only_list(api, "v1", "Namespace") if ns["metadata"]["name"] in names
    }


def _recorded_home(status: dict[str, Any]) -> str | None:
    """The namespace the platform keys were recorded in at creation: kept, whatever the release namespace is now."""
    for key in ("deviceCASecret", "volumeKeySecret"):
        recorded = status.get(key) or ""
        if "/" in recorded:
            return recorded.split("/", 1)[0]
    return None


def _apply_namespace(run: _Run, obj: dict[str, Any], existed: bool) -> None:
    """Status is the record of what was created; the annotation says so to whoever looks at the namespace."""
    namespace, name = obj["metadata"]["name"], run.body["metadata"]["name"]
    created = not existed or namespace in run.created
    if created:
        annotations = {**obj["metadata"].get("annotations", {}), CREATED_ANNOTATION: name}
        obj = {**obj, "metadata": {**obj["metadata"], "annotations": annotations}}
    run.api.apply(obj)
    if created and namespace not in run.created:
        # recorded at once: a namespace adopted later must never look created, nor a created one adopted
        run.created.append(namespace)
        run.api.patch_status(API_VERSION, KIND, name, {"createdNamespaces": run.created})


def _apply_replacing_immutable(api: Kube, obj: dict[str, Any], owner: Owner | None) -> None:
    fields = IMMUTABLE.get(obj["kind"])
    if fields:
        meta = obj["metadata"]
        if _known_absent(api, obj):  # a new tenant's bindings: nothing to compare, no read (issue 18)
            try:
                api.apply(obj, owner)
                return
            except ApiError as exc:
                if exc.status != 422:  # someone else's object of that name, another roleRef: compare, replace
                    raise
        current = api.get(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
        if current is not None and any(current.get(f) != obj.get(f) for f in fields if f in obj):
            api.delete(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
    api.apply(obj, owner)


def _known_absent(api: Kube, obj: dict[str, Any]) -> bool:
    """Whether the watch cache follows objects such as `obj` (kind and labels) and holds none of its name."""
    return cached_presence(getattr(api, "cache", None), obj) is False


# ---------------------------------------------------------------- keys


def _apply_key_secret(run: _Run, obj: dict[str, Any]) -> None:
    """Fill a key Secret with real material, generated here and kept across rotations; never overwrite an
    unreadable or foreign one unless a person asked for it by name."""
    metadata = obj["metadata"]
    ref = _ref((metadata["namespace"], metadata["name"]))
    purpose = metadata["labels"][KEY_PURPOSE_LABEL]
    if not _recorded(run, metadata["name"], purpose) and _created_new(run, obj, purpose):
        return
    existing = run.api.get("v1", "Secret", metadata["name"], metadata["namespace"])
    if purpose == "device-ca" and existing is not None:
        run.ca_annotations = dict(existing["metadata"].get("annotations") or {})
    data, problem = _readable(run, existing, purpose)
    if problem is not None:
        if ref not in run.replaceable:
            run.unreadable.append(f"Secret {ref} {problem}")
            if purpose == "app-key":
                run.applications.append(_app_status_unknown(run, metadata["name"]))
            return
        run.replaced.append(f"Secret {ref} ({problem})")
        run.consumed.append(ref)
        data = {}
    new_data = _key_material(run, obj, purpose, data)
    if existing is None or problem is not None or new_data != data:
        run.api.apply(_key_secret(obj, new_data))  # no owner reference: keys outlive the tenant object unless shredded


def _key_material(run: _Run, obj: dict[str, Any], purpose: str, data: dict[str, str]) -> dict[str, str]:
    """The key Secret's data: `data` kept, rotated or (when empty) made, and what that means noted in `run`."""
    if purpose == "app-key":
        return _app_key(run, obj["metadata"]["name"], data)
    if purpose == "device-ca":
        return _device_ca(run, data)
    if not data:
        run.rotated.append(f"volume key {_ref((obj['metadata']['namespace'], obj['metadata']['name']))} created")
    return data or _volume_key()


def _key_secret(obj: dict[str, Any], data: dict[str, str]) -> dict[str, Any]:
    secret = {key: value for key, value in obj.items() if key != "stringData"}
    secret["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())}
    return secret


def _recorded(run: _Run, secret_name: str, purpose: str) -> bool:
    """Whether the tenant's status knows of this key from an earlier reconcile (then it is read before use)."""
    status = run.body.get("status") or {}
    if purpose == "app-key":
        return any(app.get("keySecret") == secret_name for app in status.get("applications") or ())
    if purpose == "device-ca":
        return bool(status.get("deviceCANotAfter"))
    return bool(status.get("volumeKeySecret"))


def _created_new(run: _Run, obj: dict[str, Any], purpose: str) -> bool:
    """A key the status does not know yet (a new tenant's, a new application's) is made and created without a read
    first (issue 18): a create never overwrites. False when a Secret of that name exists after all (409): nothing
    of this attempt is kept, and the caller reads and judges the one there."""
    kept = (len(run.applications), len(run.rotated), run.device_ca)
    secret = _key_secret(obj, _key_material(run, obj, purpose, {}))
    if run.api.create(secret):  # no owner reference, as above
        run.fresh_ca = run.fresh_ca or purpose == "device-ca"
        return True
    del run.applications[kept[0] :], run.rotated[kept[1] :]
    run.device_ca = kept[2]
    return False


def _readable(run: _Run, existing: dict[str, Any] | None, purpose: str) -> tuple[dict[str, str], str | None]:
    """The Secret's data and, when it must not be used, why (never quoting its content)."""
    if existing is None:
        return {}, None
    if not _owned(existing, run.body["metadata"]["name"]):
        return {}, f"is not iotsec's key of TenantIsolation {run.body['metadata']['name']} (its labels say otherwise)"
    try:
        data = secretdata.decode(existing)
    except (ValueError, UnicodeError):
        return {}, "holds data that is not base64-encoded UTF-8"
    if not data:
        return {}, "holds no data"
    try:
        _parse(purpose, data)
    except ValueError as exc:
        return {}, f"cannot be read: {exc}"
    return data, None


def _parse(purpose: str, data: dict[str, str]) -> None:
    if purpose == "app-key":
        appkeys.KeyRing.from_secret_data(data)
    elif purpose == "device-ca":
        devices.DeviceCAState.from_secret_data(data)
    else:
        missing = [key for key in VOLUME_KEY_FIELDS if not (data.get(key) or "").strip()]
        if missing:
            raise ValueError(f"volume key secret data is missing key {missing[0]!r}")
        if len({data[key] for key in VOLUME_KEY_FIELDS}) != 1:
            raise ValueError(f"volume key secret data keys {' and '.join(VOLUME_KEY_FIELDS)} differ")


def _app_key(run: _Run, secret_name: str, data: dict[str, str]) -> dict[str, str]:
    app = next(a for a in run.spec.applications or () if builder.key_secret_name(a.name) == secret_name)
    ring, reasons = appkeys.ensure_key_ring(
        appkeys.KeyRing.from_secret_data(data) if data else None,
        app.key_algorithm,
        parse_duration(app.key_rotation),
        parse_duration(app.key_overlap),
        run.now,
        run.request,
    )
    run.applications.append(_application_status(app, run.spec, ring))
    run.rotated += [f"{app.name}: {r}" for r in reasons]
    return ring.to_secret_data() if reasons or not data else data


def _device_ca(run: _Run, data: dict[str, str]) -> dict[str, str]:
    settings = run.spec.device_ca
    state, reasons = devices.ensure_device_ca(
        devices.DeviceCAState.from_secret_data(data) if data else None,
        run.spec.tenant_id,
        settings.key_algorithm,
        parse_duration(settings.validity),
        parse_duration(settings.rotate_before),
        run.now,
        settings.organization,
    )
    run.device_ca = state
    run.rotated += [f"device CA: {r}" for r in reasons]
    return state.to_secret_data() if reasons or not data else data


def _with_trust(run: _Run, obj: dict[str, Any], plan: builder.TenantPlan) -> dict[str, Any]:
    """The trust bundle ConfigMap with the CA bundle and a CRL of the registry's revocations, and of every published
    CRL of the tenant's CAs: a lost or older registry, or a namespace new to the tenant, drops no revocation."""
    assert run.device_ca is not None
    current = _published_bundle(run, obj["metadata"]["namespace"])
    crl = ((current or {}).get("data") or {}).get("crl.pem")
    return {**obj, "data": devices.trust_bundle(run.device_ca, _registry(run, plan), crl, run.now)}


def _published_bundle(run: _Run, namespace: str) -> dict[str, Any] | None:
    """The trust bundle ConfigMap in `namespace` as it is. All of the tenant's are found by one list per reconcile
    (which the watch cache answers) instead of a read each; one the list misses where the status says the tenant
    already worked (its labels removed, say) is read by name, so that no published revocation is overlooked."""
    if run.bundles is None:
        selector = owner_selector(KIND, run.body["metadata"]["name"])
        found = run.api.list("v1", "ConfigMap", label_selector=selector)
        run.bundles = {
            o["metadata"].get("namespace"): o for o in found if o["metadata"]["name"] == builder.DEVICE_TRUST
        }
    if namespace not in run.bundles and namespace in ((run.body.get("status") or {}).get("namespaces") or ()):
        run.bundles[namespace] = run.api.get("v1", "ConfigMap", builder.DEVICE_TRUST, namespace)
    return run.bundles.get(namespace)


def _registry(run: _Run, plan: builder.TenantPlan) -> devices.Registry:
    """The device registry merged with the revocations of every published CRL (read once per reconciliation)."""
    if run.registry is not None:
        return run.registry
    assert run.device_ca is not None
    published = _published_revocations(run, plan)
    home, registry_name = plan.device_registry
    registry_map = None if _no_registry_yet(run, plan) else run.api.get("v1", "ConfigMap", registry_name, home)
    if registry_map is None:
        registry = _registry_gone(run, plan, published)
    else:
        registry = devices.Registry.from_config_map_data(registry_map.get("data"))
        if registry.issued or registry.revoked:
            _mark_devices_issued(run, plan)
    run.registry = devices.with_published(registry, published, run.now)
    return run.registry


def _published_revocations(run: _Run, plan: builder.TenantPlan) -> dict[int, datetime]:
    """Serial -> revocation time over the trust bundles published in the tenant's namespaces (signed CRLs only)."""
    assert run.device_ca is not None
    found: dict[int, datetime] = {}
    for obj in plan.objects:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == builder.DEVICE_TRUST:
            current = _published_bundle(run, obj["metadata"]["namespace"])
            crl = ((current or {}).get("data") or {}).get("crl.pem")
            for serial, when in devices.published_revocations(run.device_ca, crl).items():
                found[serial] = min(when, found.get(serial, when))
    return found


def _no_registry_yet(run: _Run, plan: builder.TenantPlan) -> bool:
    """A CA created by this reconcile has issued no device, and the watch cache (which follows iotsec's ConfigMaps)
    holds no registry of the tenant: nothing to read (issue 18). Otherwise the registry is read from the API server,
    never from the cache: the CLI writes it, and a revocation must reach the next CRL."""
    return run.fresh_ca and _known_absent(run.api, _registry_object(run, plan, devices.Registry({}, {})))


def _mark_devices_issued(run: _Run, plan: builder.TenantPlan) -> None:
    """Note on the device CA Secret that its registry holds records: from then on a missing registry is a loss."""
    namespace, name = plan.device_ca
    if run.ca_annotations.get(DEVICES_ISSUED_ANNOTATION) != "true":
        run.api.annotate("v1", "Secret", name, {DEVICES_ISSUED_ANNOTATION: "true"}, namespace)
        run.ca_annotations[DEVICES_ISSUED_ANNOTATION] = "true"


def _registry_gone(run: _Run, plan: builder.TenantPlan, published: dict[int, datetime]) -> devices.Registry:
    """No registry ConfigMap: nothing issued yet, or it was lost (deleted, or a restore without it).

    Lost when the CA Secret says devices were issued or a published CRL of the tenant's CAs revokes any: reported,
    and the revocations of the published CRLs are written into a new registry so that none is dropped later.
    """
    if not published and run.ca_annotations.get(DEVICES_ISSUED_ANNOTATION) != "true":
        return devices.Registry({}, {})
    registry = devices.Registry({}, published)
    recreated = bool(published) and run.api.create(_registry_object(run, plan, registry))
    run.registry_missing = (
        f"the device registry ConfigMap {_ref(plan.device_registry)} is missing although the device CA issued "
        "certificates: the records of issued devices are lost; "
        + (
            f"recreated with the {len(published)} revocations of the published CRLs"
            if recreated
            else "the published CRLs keep their revocations"
        )
        + "; restore it from a backup if there is one"
    )
    return registry


def _registry_object(run: _Run, plan: builder.TenantPlan, registry: devices.Registry) -> dict[str, Any]:
    """A registry ConfigMap as `iotsec device` writes it (no owner reference: device records outlive the tenant)."""
    namespace, name = plan.device_registry
    labels = {MANAGED_BY: MANAGER, TENANT_LABEL: run.spec.tenant_id}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": registry.to_config_map_data(),
    }


def _volume_key() -> dict[str, str]:
    """A random 256-bit passphrase under the names Longhorn and Ceph-CSI read (README: storage)."""
    passphrase = secrets.token_urlsafe(32)
    return {"CRYPTO_KEY_VALUE": passphrase, "CRYPTO_KEY_PROVIDER": "secret", "encryptionPassphrase": passphrase}


def _report_keys(run: _Run) -> None:
    body = run.body
    if run.rotated:
        kopf.event(body, type="Normal", reason="KeysRotated", message="; ".join(run.rotated))
    if run.unreadable:
        kopf.warn(
            body,
            reason="KeyUnreadable",
            message="; ".join(run.unreadable) + f" - left as it is; to replace it, list it in {REPLACE_ANNOTATION}",
        )
    if run.replaced:
        kopf.warn(
            body, reason="KeyReplaced", message="replaced on request: " + "; ".join(run.replaced) + " (new key issued)"
        )
        # a permission is used once: a key damaged again later is reported again, not silently replaced again
        left = sorted(run.replaceable - set(run.consumed))
        run.api.annotate(API_VERSION, KIND, body["metadata"]["name"], {REPLACE_ANNOTATION: ",".join(left) or None})


def _application_status(app: Any, spec: TenantIsolationSpec, ring: appkeys.KeyRing) -> dict[str, Any]:
    return {
        "name": app.name,
        "appID": builder.app_id(spec.tenant_id, app.name),
        "serviceAccount": app.name,
        "keySecret": builder.key_secret_name(app.name),
        "keyCreated": rfc3339(ring.current.created),
        "nextRotation": rfc3339(ring.next_rotation(parse_duration(app.key_rotation))),
    }


def _app_status_unknown(run: _Run, secret_name: str) -> dict[str, Any]:
    app = next(a for a in run.spec.applications or () if builder.key_secret_name(a.name) == secret_name)
    return {
        "name": app.name,
        "appID": builder.app_id(run.spec.tenant_id, app.name),
        "serviceAccount": app.name,
        "keySecret": secret_name,
    }


# ---------------------------------------------------------------- migration from the tenant's first namespace


def _migrate_legacy(run: _Run, plan: builder.TenantPlan, status: dict[str, Any], existing: set[str]) -> None:
    """Move the device CA, volume key and registry from where older iotsec kept them to the release namespace.

    Copied, never regenerated; the old object is deleted once the copy is in place. The old volume key is kept:
    volumes provisioned earlier name it in their PersistentVolume, which cannot be changed.
    """
    previous = list(status.get("namespaces") or ())[:1]
    candidates = list(dict.fromkeys(previous + list(run.spec.namespaces)))
    # a namespace that does not exist holds nothing to move (a new tenant's): not asked about, nor granted in
    candidates = [ns for ns in candidates if ns in existing and not config().platform.reserved(ns)]
    moves = [("Secret", builder.LEGACY_DEVICE_CA_SECRET, plan.device_ca, True)]
    if plan.volume_key is not None:
        moves.append(("Secret", builder.LEGACY_VOLUME_KEY_SECRET, plan.volume_key, False))
    moves.append(("ConfigMap", builder.LEGACY_DEVICE_REGISTRY, plan.device_registry, True))
    strays: list[str] = []
    for kind, old_name, new, delete_old in moves:
        found = [
            old
            for old in (run.api.get("v1", kind, old_name, namespace) for namespace in candidates)
            if old is not None and _ours(old, run.body["metadata"]["name"], run.spec.tenant_id)
        ]
        if found:  # the first candidate was the home at the last reconcile: the one in use
            _move(run, kind, found[0], new, delete_old)
        strays += [f"{kind} {old['metadata']['namespace']}/{old_name}" for old in found[1:]]
    if strays:
        kopf.warn(
            run.body,
            reason="StrayKey",
            message=f"older copies left where an older release kept them: {', '.join(strays)}; not in use, kept "
            "because devices may still hold certificates they issued: delete them once none does",
        )


def _move(run: _Run, kind: str, old: dict[str, Any], new: tuple[str, str], delete_old: bool) -> None:
    old_meta = old["metadata"]
    old_ref, new_ref = _ref((old_meta["namespace"], old_meta["name"])), _ref(new)
    current = run.api.get("v1", kind, new[1], new[0])
    if current is None:
        labels = {
            k: v
            for k, v in (old_meta.get("labels") or {}).items()
            if k.startswith(("iotsec.io/", "app.kubernetes.io/"))
        }
        labels[TENANT_LABEL] = run.spec.tenant_id
        copy = {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {"name": new[1], "namespace": new[0], "labels": labels},
            "data": old.get("data") or {},
        }
        if kind == "Secret":
            copy["type"] = old.get("type", "Opaque")
        run.api.apply(copy)
    elif (current.get("data") or {}) != (old.get("data") or {}):
        return  # both exist and differ: nothing is deleted; the new home is used
    if delete_old:
        run.api.delete("v1", kind, old_meta["name"], old_meta["namespace"])
        message = f"{kind} {old_ref} moved to {new_ref} (copied, not regenerated; the old one deleted)"
    else:
        message = (
            f"{kind} {old_ref} copied to {new_ref} (not regenerated); the old one is kept because volumes "
            "provisioned earlier name it: delete it once none does"
        )
    kopf.event(run.body, type="Normal", reason="KeyMigrated", message=message)


# ---------------------------------------------------------------- status


def _write_status(run: _Run, plan: builder.TenantPlan, domain_missing: bool) -> bool:
    body, spec = run.body, run.spec
    generation = body["metadata"].get("generation")
    if run.unreadable:
        ready = (False, "KeyUnreadable", "; ".join(run.unreadable + plan.conflicts))
    elif plan.conflicts:
        ready = (False, "Conflict", "; ".join(plan.conflicts))
    elif run.registry_missing:
        ready = (False, "RegistryMissing", run.registry_missing)
    elif domain_missing:
        ready = (False, "DomainMissing", f"SecurityDomain {spec.security_domain} does not exist (yet)")
    else:
        ready = (True, "Reconciled", f"{len(plan.namespaces)} namespaces, {len(run.applications)} applications")
    if run.rotated:
        keys = ("Rotated", "; ".join(run.rotated))
    else:
        keys = ("KeysCurrent", f"{len(run.applications)} keys within period")
    found = [
        conditions.condition("Ready", ready[0], ready[1], ready[2], generation, ["X1369-9.2.1-1"]),
        conditions.condition("KeysRotated", True, keys[0], keys[1], generation, ["X1369-9.1.1.2-4"]),
    ]
    fields = {
        "observedGeneration": generation,
        "namespaces": plan.namespaces,
        "createdNamespaces": run.created,
        "applications": sorted(run.applications, key=lambda a: a["name"]),
        "deviceCASecret": _ref(plan.device_ca),
        "deviceCANotAfter": rfc3339(not_after(run.device_ca.ca.cert_pem)) if run.device_ca else None,
        "volumeKeySecret": _ref(plan.volume_key) if plan.volume_key else None,
        "deviceRegistry": _ref(plan.device_registry),
        "storageClass": plan.storage_class,
    }
    previous = body.get("status") or {}
    if fields["deviceCANotAfter"] is None:
        fields["deviceCANotAfter"] = previous.get("deviceCANotAfter")
    write_status(run.api, KIND, body, found, {k: v for k, v in fields.items() if v is not None})
    if plan.conflicts:
        kopf.warn(body, reason="Conflict", message="; ".join(plan.conflicts))
    if run.registry_missing:
        kopf.warn(body, reason="RegistryMissing", message=run.registry_missing)
    return ready[0]


level_triggered(KIND, PLURAL, reconcile)


# kopf leaves every annotation under its storage prefix (iotsec.io/, also that of these requests) out of the diff its
# create/update handlers react to, so a request alone would wait for the resync timer. A watch-event handler sees
# every change of the object instead; it reconciles when a request annotation took a value not handled yet.
REQUEST_ANNOTATIONS = (CRL_REQUESTED, ROTATE_ANNOTATION, REPLACE_ANNOTATION)
_requests_seen: dict[str, tuple[str | None, ...]] = {}


@kopf.on.event(GROUP, VERSION, PLURAL, id="requests")
async def on_request(name: str, body: kopf.Body, type: str | None, **_: Any) -> None:
    """Judged on the event loop (every event of every tenant comes here, thousands in a cold start: none waits for
    a handler thread); a request is served on the event-routing threads."""
    if type == "DELETED":
        _requests_seen.pop(name, None)
        return
    annotations = body.get("metadata", {}).get("annotations") or {}
    requests = tuple(annotations.get(key) for key in REQUEST_ANNOTATIONS)
    first_sight, previous = name not in _requests_seen, _requests_seen.get(name)
    _requests_seen[name] = requests
    if not first_sight and requests != previous:  # at first sight the resume or create handler reconciles
        await routed(partial(reconcile, name, seen=dict(body)))
