"""The live-cluster tier: runs against whatever cluster KUBECONFIG names.

Without a cluster these tests skip with the reason; with IOTSEC_E2E_REQUIRED=1 (as CI sets) a missing or
unreachable cluster is a failure instead, so CI can never pass with the tier silently skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

kubernetes = pytest.importorskip("kubernetes")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


def _unavailable(reason: str) -> None:
    if os.environ.get("IOTSEC_E2E_REQUIRED") == "1":
        pytest.fail(f"IOTSEC_E2E_REQUIRED=1 but {reason}", pytrace=False)
    pytest.skip(f"{reason}: the live tier needs a cluster (../shared/k8s-testenv/start.sh starts one)")


@pytest.fixture(scope="session")
def api_client():
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if not kubeconfig or not Path(kubeconfig).is_file():
        _unavailable(f"KUBECONFIG is {'unset' if not kubeconfig else 'not a file: ' + kubeconfig}")
    client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    try:
        version = kubernetes.client.VersionApi(client).get_code(_request_timeout=5)
    except Exception as exc:
        _unavailable(f"the cluster in {kubeconfig} does not answer ({type(exc).__name__}: {exc})")
    print(f"live cluster: Kubernetes {version.git_version}")
    return client


@pytest.fixture(scope="session")
def core(api_client) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def custom(api_client) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api_client)


@pytest.fixture(scope="session")
def server_minor(api_client) -> int:
    version = kubernetes.client.VersionApi(api_client).get_code()
    return int("".join(ch for ch in version.minor if ch.isdigit()))


def install_crds(client_api) -> list[dict]:
    """Create or replace the generated CRDs and wait until they are Established.

    create/replace, not server-side apply: 1.20 refuses to apply CRDs with x-kubernetes-validations.
    """
    import copy
    import time

    from kubernetes.client.rest import ApiException

    from iotsec.api.crd import all_crds

    api = kubernetes.client.ApiextensionsV1Api(client_api)
    generated = all_crds()
    for crd in generated:
        name = crd["metadata"]["name"]
        try:
            existing = api.read_custom_resource_definition(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            api.create_custom_resource_definition(crd)
            continue
        body = copy.deepcopy(crd)
        body["metadata"]["resourceVersion"] = existing.metadata.resource_version
        api.replace_custom_resource_definition(name, body)
    deadline = time.monotonic() + 60
    pending = {crd["metadata"]["name"] for crd in generated}
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            conditions = api.read_custom_resource_definition(name).status.conditions or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                pending.discard(name)
        time.sleep(0.2)
    assert not pending, f"not Established after 60s: {sorted(pending)}"
    return generated


@pytest.fixture(scope="session")
def crds(api_client):
    return install_crds(api_client)


def eventually(check, timeout: float = 45.0, interval: float = 0.5, what: str = "condition"):
    """Poll `check` until it returns a truthy value (returned) or raises nothing; fail with the last error."""
    import time

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = None
        except AssertionError as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s" + (f": {last}" if last else ""))
