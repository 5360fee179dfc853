"""A revocation reaches every trust bundle's CRL within seconds, not at the next resync.

The operator runs here with a resync period far longer than the test, so only its reaction to the
`iotsec.io/crl-requested` annotation that `iotsec device revoke` sets can re-sign the CRLs in time.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e import processes
from tests.e2e.conftest import eventually

GROUP, VERSION = "iotsec.io", "v1alpha1"
SUFFIX = uuid.uuid4().hex[:5]
TENANT = f"v{SUFFIX}"
RELEASE = "iotsec-system"  # the default: every operator on a shared test cluster agrees where platform keys live
NAMESPACES = [f"{TENANT}-a", f"{TENANT}-b"]
BOUND_SECONDS = 5.0
LONG_RESYNC = 900  # far beyond the test: the timer cannot be what re-signs the CRL


@pytest.fixture(scope="module")
def core(api_client) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="module")
def custom(api_client) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="module")
def operator(crds, core, tmp_path_factory) -> Iterator[processes.Operator]:
    with contextlib.suppress(ApiException):  # 409: there already, and then left there
        core.create_namespace({"metadata": {"name": RELEASE}})
    default_resync = processes.RESYNC_SECONDS
    processes.RESYNC_SECONDS = LONG_RESYNC  # read when the command line is built, in start()
    running = processes.Operator(tmp_path_factory.mktemp("revocation") / "operator.log")
    try:
        running.start(IOTSEC_WEBHOOK_NAMESPACE=RELEASE)
    finally:
        processes.RESYNC_SECONDS = default_resync
    yield running
    running.stop()
    for namespace in NAMESPACES:
        with contextlib.suppress(ApiException):
            core.delete_namespace(namespace)


@pytest.fixture(scope="module")
def tenant(operator, custom) -> Iterator[str]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TenantIsolation",
        "metadata": {"name": TENANT},
        "spec": {
            "tenantID": TENANT,
            "securityDomain": f"none-{SUFFIX}",
            "namespaces": NAMESPACES,
            "deviceClasses": [{"name": "meter", "keyAlgorithm": "ecdsa-p256", "validity": "30d"}],
        },
    }
    custom.create_cluster_custom_object(GROUP, VERSION, "tenantisolations", body)
    yield TENANT
    with contextlib.suppress(ApiException):
        custom.delete_cluster_custom_object(GROUP, VERSION, "tenantisolations", TENANT)


def test_a_revocation_is_in_every_crl_within_five_seconds(tenant, custom, core, tmp_path):
    from iotsec import device_cli
    from iotsec.devices import revoked_serials
    from iotsec.kube import Kube

    def ca_issued() -> bool:
        """Issued where status records it (on a shared test cluster, another test's operator may have been first)."""
        status = custom.get_cluster_custom_object(GROUP, VERSION, "tenantisolations", TENANT).get("status") or {}
        namespace, _, name = (status.get("deviceCASecret") or "/").partition("/")
        try:
            return bool(name) and bool(core.read_namespaced_secret(name, namespace).data)
        except ApiException:
            return False

    eventually(ca_issued, timeout=60, what="device CA issued")
    kube = Kube()
    issued = device_cli.issue(kube, TENANT, "meter-7", "meter", "ACME", "SM-3", tmp_path)

    def in_every_crl() -> bool:
        bundles = [core.read_namespaced_config_map("iotsec-device-trust", ns).data for ns in NAMESPACES]
        return all(issued["serial"] in revoked_serials(b["crl.pem"]) for b in bundles)

    assert not in_every_crl()
    started = time.monotonic()
    device_cli.revoke(kube, TENANT, None, "meter-7")
    eventually(
        in_every_crl, timeout=BOUND_SECONDS, interval=0.1, what=f"the serial in every CRL within {BOUND_SECONDS}s"
    )
    elapsed = time.monotonic() - started
    print(f"revocation to every CRL: {elapsed:.2f}s (resync period {LONG_RESYNC}s)")
    assert elapsed <= BOUND_SECONDS
