"""`iotsec device issue|revoke`: device certificates from the tenant's CA, recorded for revocation.

The CLI reads the tenant's device CA from the cluster (it needs get on that Secret), issues a certificate and key
bound to the device id, records the serial in the tenant's device registry, and writes the files locally. It
never prints key material. Revocations go into the registry; the operator re-signs the CRL in every tenant
namespace's trust bundle (this command asks it to do so at once).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from iotsec import devices, secretdata
from iotsec.api.durations import parse_duration
from iotsec.api.tenantisolation import TenantIsolationSpec
from iotsec.api.validation import parse_resource
from iotsec.desired import tenant as builder
from iotsec.kube import ApiError, Kube

CRL_REQUEST = "iotsec.io/crl-requested"


class DeviceError(Exception):
    """A request the CLI cannot carry out; the message says why."""


def _tenant(kube: Kube, name: str) -> tuple[TenantIsolationSpec, str]:
    body = kube.get("iotsec.io/v1alpha1", "TenantIsolation", name)
    if body is None:
        raise DeviceError(f"TenantIsolation {name} not found")
    spec: TenantIsolationSpec = parse_resource(body).spec  # type: ignore[assignment]
    return spec, spec.namespaces[0]


def _ca(kube: Kube, home: str) -> devices.DeviceCAState:
    secret = kube.get("v1", "Secret", builder.DEVICE_CA_SECRET, home)
    data = secretdata.decode(secret)
    if not data:
        raise DeviceError(f"the operator has not issued the device CA in {home} yet")
    return devices.DeviceCAState.from_secret_data(data)


def _registry(kube: Kube, home: str) -> devices.Registry:
    found = kube.get("v1", "ConfigMap", devices.REGISTRY, home)
    return devices.Registry.from_config_map_data((found or {}).get("data"))


def _save(kube: Kube, home: str, tenant_id: str, registry: devices.Registry) -> None:
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": devices.REGISTRY,
                "namespace": home,
                "labels": {"app.kubernetes.io/managed-by": "iotsec", builder.TENANT_LABEL: tenant_id},
            },
            "data": registry.to_config_map_data(),
        }
    )


def issue(
    kube: Kube, tenant: str, device_id: str, device_class: str, manufacturer: str, model: str, out: Path
) -> dict[str, Any]:
    spec, home = _tenant(kube, tenant)
    profile = next((c for c in spec.device_classes or () if c.name == device_class), None)
    if profile is None:
        declared = ", ".join(c.name for c in spec.device_classes or ()) or "none"
        raise DeviceError(f"device class {device_class!r} is not declared by {tenant} (declared: {declared})")
    state = _ca(kube, home)
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
    _save(kube, home, spec.tenant_id, _registry(kube, home).with_issued(certificate.serial, device_id))
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
        **{name: str(path) for name, path in files.items()},
    }


def revoke(kube: Kube, tenant: str, serial: int | None, device_id: str | None) -> list[int]:
    spec, home = _tenant(kube, tenant)
    registry = _registry(kube, home)
    serials = [serial] if serial is not None else registry.serials_of(device_id or "")
    unknown = [s for s in serials if s not in registry.issued]
    if not serials or unknown:
        raise DeviceError(f"no certificate issued for {device_id or unknown} in tenant {tenant}")
    _save(kube, home, spec.tenant_id, registry.with_revoked(serials, datetime.now(UTC)))
    try:
        kube.annotate("iotsec.io/v1alpha1", "TenantIsolation", tenant, {CRL_REQUEST: datetime.now(UTC).isoformat()})
    except ApiError as exc:  # the CRL is still re-signed at the next resync
        raise DeviceError(f"revoked, but could not ask the operator for an immediate CRL: {exc}") from None
    return serials
