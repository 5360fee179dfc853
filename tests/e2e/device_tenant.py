"""A live tenant with a device class, run by its own operator: what the device e2e modules share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e import processes

GROUP, VERSION = "iotsec.io", "v1alpha1"
RELEASE = "iotsec-system"  # the default: every operator on a shared test cluster agrees where platform keys live


@contextlib.contextmanager
def operator(core: client.CoreV1Api, log: Path, namespaces: list[str], resync: int | None = None) -> Iterator:
    """`iotsec run` for the release namespace, with `resync` seconds between timers; the namespaces go after."""
    with contextlib.suppress(ApiException):  # 409: there already, and then left there
        core.create_namespace({"metadata": {"name": RELEASE}})
    default_resync = processes.RESYNC_SECONDS
    processes.RESYNC_SECONDS = resync or default_resync  # read when the command line is built, in start()
    running = processes.Operator(log)
    try:
        running.start(IOTSEC_WEBHOOK_NAMESPACE=RELEASE)
    finally:
        processes.RESYNC_SECONDS = default_resync
    try:
        yield running
    finally:
        running.stop()
        for namespace in namespaces:
            with contextlib.suppress(ApiException):
                core.delete_namespace(namespace)


@contextlib.contextmanager
def tenant(custom: client.CustomObjectsApi, name: str, namespaces: list[str]) -> Iterator[str]:
    """A TenantIsolation of those namespaces with one device class, `meter`."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TenantIsolation",
        "metadata": {"name": name},
        "spec": {
            "tenantID": name,
            "securityDomain": f"none-{name}",
            "namespaces": namespaces,
            "deviceClasses": [{"name": "meter", "keyAlgorithm": "ecdsa-p256", "validity": "30d"}],
        },
    }
    custom.create_cluster_custom_object(GROUP, VERSION, "tenantisolations", body)
    try:
        yield name
    finally:
        with contextlib.suppress(ApiException):
            custom.delete_cluster_custom_object(GROUP, VERSION, "tenantisolations", name)


def status(custom: client.CustomObjectsApi, name: str) -> dict:
    try:
        return custom.get_cluster_custom_object(GROUP, VERSION, "tenantisolations", name).get("status") or {}
    except ApiException:
        return {}


def ca_issued(custom: client.CustomObjectsApi, core: client.CoreV1Api, name: str) -> bool:
    """Issued where status records it (on a shared test cluster, another test's operator may have been first)."""
    namespace, _, secret = (status(custom, name).get("deviceCASecret") or "/").partition("/")
    try:
        return bool(secret) and bool(core.read_namespaced_secret(secret, namespace).data)
    except ApiException:
        return False
