"""Failover of the elected reconciler as deployed, shared by tests/e2e/test_deployed_failover.py (one kill, asserted)
and benchmarks/failover.py (ten kills, figures): SIGKILL the leader's process on the node (this machine), then time
the Lease's new holder and the first reconcile of a SecurityDomain created at the moment of the kill."""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e import deployed
from tests.e2e.deployed import NAMESPACE, RELEASE, delete_quietly

LEASE = f"{RELEASE}-operator"


@dataclass(frozen=True)
class Failover:
    killed: str  # the pod whose process was killed
    new_leader: str
    lease_seconds: float  # kill -> the Lease names another pod
    reconcile_seconds: float  # kill -> a domain created at the kill is Ready


def holder(api_client) -> str:
    """The pod that holds the Lease ('' when none)."""
    lease = client.CoordinationV1Api(api_client).read_namespaced_lease(LEASE, NAMESPACE)
    return (lease.spec.holder_identity or "").rsplit("_", 1)[0]


def operator_process(pod: str) -> int:
    """The PID, on this node, of the `iotsec run` process of `pod` (its HOSTNAME is the pod's name)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"run" in command
            and any(c.endswith(b"iotsec") for c in command)
            and f"HOSTNAME={pod}".encode() in environment
        ):
            return int(entry.name)
    raise AssertionError(f"no iotsec run process of pod {pod} on this node")


def _ready(custom, name: str) -> bool:
    try:
        found = custom.get_cluster_custom_object("iotsec.io", "v1alpha1", "securitydomains", name)
    except ApiException:
        return False
    conditions = (found.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def kill_leader(api_client, core, custom, timeout: float = 90.0) -> Failover:
    """SIGKILL the leader's process; a new domain (and its namespace) is created right after; cleaned up after."""
    killed = holder(api_client)
    assert killed, "no replica holds the Lease"
    name = f"failover-{uuid.uuid4().hex[:6]}"
    pid = operator_process(killed)
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    core.create_namespace({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})
    domain = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {"name": name},
        "spec": {"zone": "core", "namespaces": [name]},
    }
    custom.create_cluster_custom_object("iotsec.io", "v1alpha1", "securitydomains", domain)
    lease_at = reconciled_at = None
    new_leader = ""
    try:
        while time.monotonic() - started < timeout and reconciled_at is None:
            if lease_at is None:
                new_leader = holder(api_client)
                if new_leader and new_leader != killed:
                    lease_at = time.monotonic()
            if _ready(custom, name):
                reconciled_at = time.monotonic()
            time.sleep(0.1)
    finally:
        delete_quietly(lambda: custom.delete_cluster_custom_object("iotsec.io", "v1alpha1", "securitydomains", name))
        delete_quietly(lambda: core.delete_namespace(name))
    assert reconciled_at is not None, f"the domain created when {killed} was killed was not Ready in {timeout:.0f} s"
    assert lease_at is not None, "the domain was reconciled but the Lease never changed hands"
    return Failover(killed, new_leader, lease_at - started, reconciled_at - started)


def operator_pods(core) -> list[client.V1Pod]:
    """The operator's pods that are not being deleted."""
    return [p for p in deployed.operator_pods(core) if p.metadata.deletion_timestamp is None]


def replicas_running(core, count: int = 2) -> list[str]:
    """The names of the operator pods whose `iotsec run` process is up on this node (standing by or leading)."""
    running = []
    for pod in operator_pods(core):
        try:
            operator_process(pod.metadata.name)
        except AssertionError:
            continue
        running.append(pod.metadata.name)
    return running if len(running) >= count else []


def replace_pod(core, pod: str, timeout: float = 120.0) -> None:
    """Delete the killed pod (a fresh one avoids kubelet's restart back-off) and wait for two replicas again."""
    try:
        core.delete_namespaced_pod(pod, NAMESPACE, grace_period_seconds=0)
    except ApiException as exc:
        if exc.status != 404:
            raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replicas_running(core) and pod not in replicas_running(core):
            return
        time.sleep(0.5)
    raise AssertionError(f"no second operator replica in {timeout:.0f} s after deleting {pod}")
