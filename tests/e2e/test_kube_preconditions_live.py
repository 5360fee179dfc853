"""The adapter's compare-and-swap writes against the real API server: a delete or replace conditional on the
version that was read never removes or overwrites a version written since."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from kubernetes import client

from iotsec.k8s.kube import ApiError, Kube

NAMESPACE = "default"


@pytest.fixture
def secret(core: client.CoreV1Api):
    name = f"iotsec-cas-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_secret(NAMESPACE, {"metadata": {"name": name}, "stringData": {"key": "damaged"}})
    yield name
    with contextlib.suppress(client.ApiException):  # the test may have deleted it
        core.delete_namespaced_secret(name, NAMESPACE)


def test_a_delete_conditional_on_what_was_read_spares_a_version_written_since(core, secret):
    kube = Kube()
    judged = kube.get("v1", "Secret", secret, NAMESPACE)
    core.patch_namespaced_secret(secret, NAMESPACE, {"stringData": {"key": "fixed by a person"}})
    with pytest.raises(ApiError) as raised:
        kube.delete("v1", "Secret", secret, NAMESPACE, unchanged_since=judged)
    assert raised.value.status == 409
    assert core.read_namespaced_secret(secret, NAMESPACE).data["key"] == "Zml4ZWQgYnkgYSBwZXJzb24="  # still there
    current = kube.get("v1", "Secret", secret, NAMESPACE)
    assert kube.delete("v1", "Secret", secret, NAMESPACE, unchanged_since=current) is True
    assert kube.get("v1", "Secret", secret, NAMESPACE) is None


def test_a_delete_conditional_on_a_recreated_object_spares_the_new_one(core, secret):
    kube = Kube()
    judged = kube.get("v1", "Secret", secret, NAMESPACE)
    core.delete_namespaced_secret(secret, NAMESPACE)
    core.create_namespaced_secret(NAMESPACE, {"metadata": {"name": secret}, "stringData": {"key": "new"}})
    with pytest.raises(ApiError) as raised:
        kube.delete("v1", "Secret", secret, NAMESPACE, unchanged_since=judged)
    assert raised.value.status == 409, "same name, another uid: not the object that was judged"
    assert core.read_namespaced_secret(secret, NAMESPACE).data["key"] == "bmV3"
