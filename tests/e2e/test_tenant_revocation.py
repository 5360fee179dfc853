"""A revocation reaches every trust bundle's CRL within seconds, not at the next resync.

The operator runs here with a resync period far longer than the test, so only its reaction to the
`iotsec.io/crl-requested` annotation that `iotsec device revoke` sets can re-sign the CRLs in time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e import device_tenant
from tests.e2e.conftest import eventually

SUFFIX = uuid.uuid4().hex[:5]
TENANT = f"v{SUFFIX}"
NAMESPACES = [f"{TENANT}-a", f"{TENANT}-b"]
BOUND_SECONDS = 5.0
LONG_RESYNC = 900  # far beyond the test: the timer cannot be what re-signs the CRL


@pytest.fixture(scope="module")
def tenant(crds, core, custom, tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("revocation") / "operator.log"
    with device_tenant.operator(core, log, NAMESPACES, LONG_RESYNC), device_tenant.tenant(custom, TENANT, NAMESPACES):
        yield TENANT


def test_a_revocation_is_in_every_crl_within_five_seconds(tenant, custom, core, tmp_path):
    from iotsec.k8s.kube import Kube
    from iotsec.pki.devices import revoked_serials
    from iotsec.services import devices as device_service

    eventually(lambda: device_tenant.ca_issued(custom, core, TENANT), timeout=60, what="device CA issued")
    kube = Kube()
    issued = device_service.issue(kube, TENANT, "meter-7", "meter", "ACME", "SM-3", tmp_path)

    def in_every_crl() -> bool:
        bundles = [core.read_namespaced_config_map("iotsec-device-trust", ns).data for ns in NAMESPACES]
        return all(issued["serial"] in revoked_serials(b["crl.pem"]) for b in bundles)

    assert not in_every_crl()
    started = time.monotonic()
    device_service.revoke(kube, TENANT, None, "meter-7")
    eventually(
        in_every_crl, timeout=BOUND_SECONDS, interval=0.1, what=f"the serial in every CRL within {BOUND_SECONDS}s"
    )
    elapsed = time.monotonic() - started
    print(f"revocation to every CRL: {elapsed:.2f}s (resync period {LONG_RESYNC}s)")
    assert elapsed <= BOUND_SECONDS
