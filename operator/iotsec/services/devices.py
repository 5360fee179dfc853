"""`iotsec device issue|revoke|list`: device certificates from the tenant's CA, recorded for revocation.

The tenant's device CA Secret and its device registry (a ConfigMap) live in the release namespace, named by
`iotsec.model.platform`: where the TenantIsolation's status records them (`deviceCASecret`, `deviceRegistry`,
which the operator keeps even if the release namespace changes), else in `--namespace` (default iotsec-system);
an explicit `--namespace` wins. The CLI reads the CA (it needs get on that Secret), issues a certificate and key
bound to the device id, records the serial in the registry, and writes the files locally. It never prints key
material. Revocations go into the registry; the operator re-signs the CRLs in every tenant namespace's trust
bundle (this command asks it to do so at once).

Registry writes are optimistic: read with its resourceVersion, change, write with that resourceVersion as a
precondition (a plain create when there is none yet), and on 409 read again and redo the change, so concurrent
issues and revocations never drop one another.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from iotsec.api.common import API_VERSION
from iotsec.api.durations import parse_duration
from iotsec.api.tenantisolation import TenantIsolationSpec
from iotsec.api.validation import parse_resource
from iotsec.k8s.kube import ApiError, Kube
from iotsec.model import secretdata
from iotsec.model.labels import CRL_REQUESTED, MANAGED_BY, MANAGER, TENANT_LABEL
from iotsec.model.platform import Platform, device_ca_secret_name, device_registry_name
from iotsec.model.time import now, rfc3339
from iotsec.pki import devices

RELEASE_NAMESPACE = Platform().namespace
WRITE_ATTEMPTS = 40  # each conflict means another writer succeeded: 40 covers many concurrent callers
BACKOFF_CAP = 0.5  # seconds; a random wait up to min(cap, 10 ms * 2**attempt) spreads the retries


class DeviceError(Exception):
    """A request the CLI cannot carry out; the message says why."""


class WrongHomeError(DeviceError):
    """`--namespace` names another place than the tenant's recorded home: a usage error (exit 2)."""


@dataclass(frozen=True)
class Tenant:
    """A tenant's spec and where its device CA Secret and device registry are: (namespace, name) each."""

    spec: TenantIsolationSpec
    ca_secret: tuple[str, str]
    registry: tuple[str, str]


def _tenant(kube: Kube, name: str, namespace: str | None, *, writing: bool = False) -> Tenant:
    """Where the tenant's CA and registry are: as its status records them; `namespace` only where none is recorded
    (or for reading). Writing elsewhere than the recorded home would fill a registry the operator never reads."""
    body = kube.get("iotsec.io/v1alpha1", "TenantIsolation", name)
    if body is None:
        raise DeviceError(f"TenantIsolation {name} not found")
    spec: TenantIsolationSpec = parse_resource(body).spec  # type: ignore[assignment]
    status = body.get("status") or {}
    home = namespace or RELEASE_NAMESPACE
    if writing and namespace is not None:
        _refuse_another_home(name, status, namespace)

    def where(recorded_key: str, default_name: str) -> tuple[str, str]:
        recorded = status.get(recorded_key) or ""
        ns, _, recorded_name = recorded.partition("/")
        if recorded_name and namespace in (None, ns):
            return ns, recorded_name
        return home, default_name

    return Tenant(
        spec,
        where("deviceCASecret", device_ca_secret_name(spec.tenant_id)),
        where("deviceRegistry", device_registry_name(spec.tenant_id)),
    )


def _refuse_another_home(name: str, status: dict[str, Any], namespace: str) -> None:
    homes = sorted(
        {ref.partition("/")[0] for key in ("deviceCASecret", "deviceRegistry") if "/" in (ref := status.get(key) or "")}
    )
    if homes and homes != [namespace]:
        raise WrongHomeError(
            f"TenantIsolation {name} keeps its device CA and registry in namespace {', '.join(homes)} (recorded in "
            f"its status); --namespace {namespace} would record devices where the operator never reads them: "
            "leave --namespace out"
        )


def _ca(kube: Kube, tenant: Tenant) -> devices.DeviceCAState:
    namespace, name = tenant.ca_secret
    data = secretdata.decode(kube.get("v1", "Secret", name, namespace))
    if not data:
        raise DeviceError(
            f"the operator has not issued the device CA of tenant {tenant.spec.tenant_id} ({namespace}/{name}) yet"
        )
    return devices.DeviceCAState.from_secret_data(data)


def read_registry(kube: Kube, location: tuple[str, str]) -> tuple[devices.Registry, str | None]:
    """The registry at (namespace, name) and the resourceVersion it was read at (None: there is none yet)."""
    found = kube.get("v1", "ConfigMap", location[1], location[0])
    if found is None:
        return devices.Registry({}, {}), None
    return devices.Registry.from_config_map_data(found.get("data")), found["metadata"]["resourceVersion"]


def _registry_object(location: tuple[str, str], tenant_id: str, registry: devices.Registry) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": location[1],
            "namespace": location[0],
            "labels": {MANAGED_BY: MANAGER, TENANT_LABEL: tenant_id},
        },
        "data": registry.to_config_map_data(),
    }


def update_registry(
    kube: Kube, location: tuple[str, str], tenant_id: str, change: Callable[[devices.Registry], devices.Registry]
) -> devices.Registry:
    """Apply `change` to the registry as stored, retrying on a concurrent write; return what was written.

    `change` may run several times (each time on a fresh read) and may raise to give up.
    """
    for attempt in range(WRITE_ATTEMPTS):
        registry, version = read_registry(kube, location)
        updated = change(registry)
        if updated == registry and version is not None:
            return registry
        body = _registry_object(location, tenant_id, updated)
        if version is None:
            if kube.create(body):
                return updated
        else:
            body["metadata"]["resourceVersion"] = version  # a precondition: 409 if anyone wrote since our read
            try:
                kube.apply(body)
                return updated
            except ApiError as exc:
                if exc.status != 409:
                    raise
        time.sleep(random.uniform(0, min(BACKOFF_CAP, 0.01 * 2**attempt)))
    raise DeviceError(
        f"the device registry {location[0]}/{location[1]} kept changing under "
        f"{WRITE_ATTEMPTS} attempts to update it; nothing was recorded, try again"
    )


def issue(
    kube: Kube,
    tenant: str,
    device_id: str,
    device_class: str,
    manufacturer: str,
    model: str,
    out: Path,
    namespace: str | None = None,
) -> dict[str, Any]:
    """Issue, record, then write the files; `namespace` says where the CA and registry are when the tenant's status
    records no home (a different one than recorded is refused)."""
    where = _tenant(kube, tenant, namespace, writing=True)
    spec = where.spec
    profile = next((c for c in spec.device_classes or () if c.name == device_class), None)
    if profile is None:
        declared = ", ".join(c.name for c in spec.device_classes or ()) or "none"
        raise DeviceError(f"device class {device_class!r} is not declared by {tenant} (declared: {declared})")
    state = _ca(kube, where)
    certificate = devices.issue_device_certificate(
        state.ca,
        spec.tenant_id,
        device_id,
        device_class,
        manufacturer,
        model,
        profile.key_algorithm,
        parse_duration(profile.validity),
        profile.key_usage,
        profile.extended_key_usage,
        datetime.now(UTC),
    )
    details = devices.issued_details(certificate, state.ca.cert_pem)
    update_registry(
        kube,
        where.registry,
        spec.tenant_id,
        lambda registry: registry.with_issued(certificate.serial, device_id, details),
    )
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "certificate": out / f"{device_id}.crt",
        "key": out / f"{device_id}.key",
        "ca_bundle": out / "ca-bundle.crt",
    }
    files["certificate"].write_text(certificate.cert_pem)
    descriptor = os.open(files["key"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(certificate.key_pem)
    files["ca_bundle"].write_text(state.bundle())
    return {
        "deviceID": device_id,
        "serial": certificate.serial,
        "notAfter": certificate.not_after.isoformat(),
        "issuer": details.issuer,
        **{name: str(path) for name, path in files.items()},
    }


def revoke(
    kube: Kube, tenant: str, serial: int | None, device_id: str | None, namespace: str | None = None
) -> list[int]:
    where = _tenant(kube, tenant, namespace, writing=True)
    revoked: list[int] = []

    def change(registry: devices.Registry) -> devices.Registry:
        serials = [serial] if serial is not None else registry.serials_of(device_id or "")
        unknown = [s for s in serials if s not in registry.issued]
        if not serials or unknown:
            raise DeviceError(f"no certificate issued for {device_id or unknown} in tenant {tenant}")
        revoked[:] = serials
        return registry.with_revoked(serials, datetime.now(UTC))

    update_registry(kube, where.registry, where.spec.tenant_id, change)
    try:
        kube.annotate(API_VERSION, "TenantIsolation", tenant, {CRL_REQUESTED: rfc3339(now(), "microseconds")})
    except ApiError as exc:  # the CRL is still re-signed at the next resync
        raise DeviceError(f"revoked, but could not ask the operator for an immediate CRL: {exc}") from None
    return revoked


def list_devices(kube: Kube, tenant: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """The tenant's issued certificates: device id, serial, notAfter, issuing CA fingerprint, revocation time."""
    registry, _ = read_registry(kube, _tenant(kube, tenant, namespace).registry)
    return [
        {
            "deviceID": entry.device_id,
            "serial": entry.serial,
            "notAfter": _stamp(entry.not_after),
            "issuer": entry.issuer,
            "revoked": _stamp(entry.revoked),
        }
        for entry in registry.entries()
    ]


def _stamp(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment else None
