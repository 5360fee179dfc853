"""The device registry on a real API server: concurrent `iotsec device issue|revoke` lose nothing.

No operator runs here: the test writes the tenant's device CA Secret itself, in a release namespace of its own
(unique name, deleted afterwards), and drives `iotsec.services.devices` through the real `Kube` adapter from 20 threads.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from iotsec.k8s.kube import ApiError, Kube
from iotsec.model.labels import CRL_REQUESTED
from iotsec.model.platform import device_ca_secret_name, device_registry_name
from iotsec.pki.devices import Registry, ensure_device_ca, verify_device
from iotsec.services import devices as device_service
from tests.conftest import run_together

SUFFIX = uuid.uuid4().hex[:6]
RELEASE = f"iotsec-dev-{SUFFIX}"
TENANT = f"dev-{SUFFIX}"
TENANT_ID = f"dev{SUFFIX}"
THREADS = 20


@pytest.fixture(scope="module")
def tenant(api_client, crds, core) -> Iterator[dict[str, Any]]:
    custom = client.CustomObjectsApi(api_client)
    core.create_namespace({"metadata": {"name": RELEASE}})
    body = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "TenantIsolation",
        "metadata": {"name": TENANT},
        "spec": {
            "tenantID": TENANT_ID,
            "securityDomain": f"core-{SUFFIX}",
            "namespaces": [f"{TENANT}-a"],  # never created: no operator runs in this test
            "deviceClasses": [{"name": "meter", "keyAlgorithm": "ecdsa-p256", "validity": "30d"}],
        },
    }
    custom.create_cluster_custom_object("iotsec.io", "v1alpha1", "tenantisolations", body)
    now = datetime.now(UTC)
    state, _ = ensure_device_ca(None, TENANT_ID, "ecdsa-p256", timedelta(days=365), timedelta(days=30), now)
    data = {k: base64.b64encode(v.encode()).decode() for k, v in state.to_secret_data().items()}
    core.create_namespaced_secret(RELEASE, {"metadata": {"name": device_ca_secret_name(TENANT_ID)}, "data": data})
    try:
        yield {"state": state}
    finally:
        for cleanup in (
            lambda: custom.delete_cluster_custom_object("iotsec.io", "v1alpha1", "tenantisolations", TENANT),
            lambda: core.delete_namespace(RELEASE),
        ):
            try:
                cleanup()
            except ApiException as exc:
                if exc.status != 404:
                    raise


class CountingKube(Kube):
    """The real adapter, counting the registry writes the API server refused as concurrent (409)."""

    conflicts = 0

    def apply(self, obj: dict[str, Any], owner: Any = None) -> dict[str, Any]:
        try:
            return super().apply(obj, owner)
        except ApiError as exc:
            if exc.status == 409:
                type(self).conflicts += 1
            raise

    def create(self, obj: dict[str, Any]) -> bool:
        created = super().create(obj)
        type(self).conflicts += not created
        return created


@pytest.fixture(scope="module")
def kube(api_client) -> Kube:
    adapter = CountingKube(api_client)
    adapter.get("v1", "Namespace", "default")  # discovery once, before the threads share the adapter
    return adapter


def registry(kube: Kube) -> Registry:
    found = kube.get("v1", "ConfigMap", device_registry_name(TENANT_ID), RELEASE)
    return Registry.from_config_map_data((found or {}).get("data"))


def test_a_stale_resource_version_makes_server_side_apply_fail_with_409(kube, tenant):
    name = f"precondition-{SUFFIX}"
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": RELEASE}}
    assert kube.create({**body, "data": {"n": "0"}})
    assert not kube.create({**body, "data": {"n": "0"}}), "a second create finds it exists"
    version = kube.get("v1", "ConfigMap", name, RELEASE)["metadata"]["resourceVersion"]
    kube.apply({**body, "metadata": {**body["metadata"], "resourceVersion": version}, "data": {"n": "1"}})
    with pytest.raises(ApiError) as stale:
        kube.apply({**body, "metadata": {**body["metadata"], "resourceVersion": version}, "data": {"n": "2"}})
    assert stale.value.status == 409
    assert kube.get("v1", "ConfigMap", name, RELEASE)["data"] == {"n": "1"}


def test_parallel_issues_and_revocations_lose_nothing(kube, tenant, tmp_path):
    began, conflicts_before = time.monotonic(), CountingKube.conflicts
    early = run_together(
        [
            lambda i=i: device_service.issue(kube, TENANT, f"early-{i}", "meter", "ACME", "SM-3", tmp_path, RELEASE)
            for i in range(THREADS)
        ]
    )
    assert set(registry(kube).issued) == {r["serial"] for r in early}, "20 parallel issues, all recorded"

    half = THREADS // 2
    calls = [lambda r=r: device_service.revoke(kube, TENANT, r["serial"], None, RELEASE) for r in early[:half]]
    calls += [
        lambda i=i: device_service.issue(kube, TENANT, f"late-{i}", "meter", "ACME", "SM-3", tmp_path / str(i), RELEASE)
        for i in range(half)
    ]
    results = run_together(calls)
    late = {r["serial"] for r in results if isinstance(r, dict)}
    final = registry(kube)
    assert set(final.revoked) == {r["serial"] for r in early[:half]}
    assert set(final.issued) == {r["serial"] for r in early} | late
    assert len(final.issued) == THREADS + half
    assert len(device_service.list_devices(kube, TENANT, RELEASE)) == THREADS + half

    annotations = kube.get("iotsec.io/v1alpha1", "TenantIsolation", TENANT)["metadata"]["annotations"]
    assert CRL_REQUESTED in annotations, "the operator is asked to re-sign the CRLs at once"
    print(
        f"{2 * THREADS} concurrent registry updates in {time.monotonic() - began:.1f}s, "
        f"{CountingKube.conflicts - conflicts_before} refused as concurrent and retried"
    )
    certificate = (tmp_path / "early-0.crt").read_text()
    assert verify_device(certificate, tenant["state"].bundle(), datetime.now(UTC))
