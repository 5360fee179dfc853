"""What the deployed tiers share: the install `make testenv-install` made, and a namespace in a SecurityDomain of
its own that the operator, in its pod, has reconciled."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e.conftest import eventually

RELEASE = os.environ.get("RELEASE", "iotsec")
NAMESPACE = os.environ.get("NAMESPACE", "iotsec-system")
DEPLOYMENTS = (f"{RELEASE}-operator", f"{RELEASE}-webhook")


def require_install(api_client) -> client.AppsV1Api:
    """The operator and webhook Deployments with a Ready pod each; skip (or fail under IOTSEC_DEPLOYED_REQUIRED=1,
    as CI runs after `make testenv-install`) when iotsec is not installed."""
    apps = client.AppsV1Api(api_client)
    try:
        found = {d: apps.read_namespaced_deployment(d, NAMESPACE) for d in DEPLOYMENTS}
    except ApiException as exc:
        if exc.status != 404:
            raise
        message = f"iotsec is not installed in {NAMESPACE} (make image && make testenv-install)"
        if os.environ.get("IOTSEC_DEPLOYED_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    for name, deployment in found.items():
        assert (deployment.status.ready_replicas or 0) >= 1, f"{name} has no Ready pod"
    return apps


def domain_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@contextmanager
def domain_namespace(core, custom, prefix: str = "deployed", name: str | None = None, **spec: Any) -> Iterator[str]:
    """A namespace in a restricted, enforcing SecurityDomain of its own (same name; `spec` adds to the domain's),
    Ready (reconciled by the operator's pod)."""
    name = name or domain_name(prefix)
    core.create_namespace({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})
    domain = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {"name": name},
        "spec": {
            "zone": "core",
            "namespaces": [name],
            "enforcement": "enforce",
            "podSecurity": "restricted",
            **spec,
        },
    }
    custom.create_cluster_custom_object("iotsec.io", "v1alpha1", "securitydomains", domain)

    def reconciled() -> bool:
        found = custom.get_cluster_custom_object("iotsec.io", "v1alpha1", "securitydomains", name)
        ready = [c for c in (found.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"]
        return bool(ready) and ready[0]["status"] == "True"

    try:
        eventually(reconciled, timeout=60, what=f"SecurityDomain {name} Ready (reconciled by the operator's pod)")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{operator_state(core)}") from None
    try:
        yield name
    finally:  # quietly: a test may have deleted the domain itself
        delete_quietly(lambda: custom.delete_cluster_custom_object("iotsec.io", "v1alpha1", "securitydomains", name))
        delete_quietly(lambda: core.delete_namespace(name))


def operator_pods(core) -> list[Any]:
    selector = f"app.kubernetes.io/component=operator,app.kubernetes.io/instance={RELEASE}"
    return list(core.list_namespaced_pod(NAMESPACE, label_selector=selector).items)


def operator_state(core) -> str:
    """Where the operator's pod is and what it last said (this container's and the one before), for a failure."""
    lines = []
    for pod in operator_pods(core):
        for status in pod.status.container_statuses or ():
            last = status.last_state.terminated if status.last_state else None
            ended = f"; last ended: {last.reason} (exit {last.exit_code}) at {last.finished_at}" if last else ""
            lines.append(f"pod {pod.metadata.name}: ready={status.ready} restarts={status.restart_count}{ended}")
        for previous in (False, True):
            try:
                text = core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE, tail_lines=40, previous=previous)
            except ApiException as exc:
                text = f"(none: {exc.reason})"
            lines.append(f"--- its {'previous' if previous else 'current'} container's log, last lines:\n{text}")
    return "\n".join(lines)[-12000:]


def delete_quietly(delete: Callable[[], Any]) -> None:
    """Run a delete call; an object already gone (404) is fine."""
    try:
        delete()
    except ApiException as exc:
        if exc.status != 404:
            raise


def local_storage_class(api_client, name: str) -> Callable[[], None]:
    """A StorageClass without a provisioner (its PersistentVolumes are made by the test: host_path_volume); returns
    what removes it."""
    storage = client.StorageV1Api(api_client)
    storage.create_storage_class(
        {
            "metadata": {"name": name},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "Immediate",
            "reclaimPolicy": "Retain",
        }
    )
    return lambda: delete_quietly(lambda: storage.delete_storage_class(name))


def host_path_volume(
    core,
    name: str,
    path: Path,
    storage_class: str,
    claim: tuple[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> None:
    """A PersistentVolume on a folder of this machine (the testenv's node is this machine), writable by any UID:
    a hostPath volume knows no fsGroup, and the product's pods run as UID 10001."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    spec: dict[str, Any] = {
        "capacity": {"storage": "1Gi"},
        "accessModes": ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": storage_class,
        "hostPath": {"path": str(path), "type": "Directory"},
    }
    if claim:
        spec["claimRef"] = {"namespace": claim[0], "name": claim[1]}
    core.create_persistent_volume({"metadata": {"name": name, "labels": labels or {}}, "spec": spec})
