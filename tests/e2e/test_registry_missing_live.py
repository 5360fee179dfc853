"""A device registry deleted on a live cluster: the CRLs keep their revocations, the tenant says RegistryMissing and
the operator recreates the registry with the published revocations (create: never over one the CLI just wrote)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e import device_tenant
from tests.e2e.conftest import eventually
from tests.e2e.device_tenant import GROUP, VERSION

SUFFIX = uuid.uuid4().hex[:5]
TENANT = f"r{SUFFIX}"
NAMESPACES = [f"{TENANT}-a", f"{TENANT}-b"]


@pytest.fixture(scope="module")
def tenant(crds, core, custom, tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("registry") / "operator.log"
    with device_tenant.operator(core, log, NAMESPACES), device_tenant.tenant(custom, TENANT, NAMESPACES):
        yield TENANT
        status = _status(custom)
        for key, kind in (("deviceRegistry", "config_map"), ("deviceCASecret", "secret")):
            namespace, _, name = (status.get(key) or "/").partition("/")
            if name:
                with contextlib.suppress(ApiException):  # Retain keeps them: a shared test cluster should not
                    getattr(core, f"delete_namespaced_{kind}")(name, namespace)


def _status(custom: client.CustomObjectsApi) -> dict:
    return device_tenant.status(custom, TENANT)


def _ready(custom: client.CustomObjectsApi) -> dict:
    return next((c for c in _status(custom).get("conditions") or () if c["type"] == "Ready"), {})


def test_a_deleted_registry_drops_no_revocation_and_is_reported(tenant, custom, core, tmp_path):
    from iotsec.k8s.kube import Kube
    from iotsec.pki.devices import Registry, revoked_serials
    from iotsec.services import devices as device_service

    eventually(lambda: device_tenant.ca_issued(custom, core, TENANT), timeout=60, what="device CA issued")
    kube = Kube()
    issued = device_service.issue(kube, TENANT, "meter-1", "meter", "ACME", "SM-3", tmp_path)
    device_service.revoke(kube, TENANT, None, "meter-1")

    def in_every_crl() -> bool:
        bundles = [core.read_namespaced_config_map("iotsec-device-trust", ns).data for ns in NAMESPACES]
        return all(issued["serial"] in revoked_serials(b["crl.pem"]) for b in bundles)

    eventually(in_every_crl, timeout=30, what="the revocation in every CRL")
    registry_ns, _, registry_name = _status(custom)["deviceRegistry"].partition("/")
    core.delete_namespaced_config_map(registry_name, registry_ns)
    custom.patch_cluster_custom_object(  # a reconcile now, as the next resync would
        GROUP,
        VERSION,
        "tenantisolations",
        TENANT,
        {"metadata": {"annotations": {"iotsec.io/crl-requested": datetime.now(UTC).isoformat()}}},
    )
    eventually(
        lambda: _ready(custom).get("reason") == "RegistryMissing", timeout=30, what="Ready=False RegistryMissing"
    )
    assert in_every_crl(), "the CRLs kept the revocation"
    recreated = core.read_namespaced_config_map(registry_name, registry_ns)
    assert issued["serial"] in Registry.from_config_map_data(recreated.data).revoked
    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={TENANT}").items
    assert any(e.reason == "RegistryMissing" and e.type == "Warning" for e in events)
