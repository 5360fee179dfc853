"""The elected reconciler as deployed (issue 18): the chart's two operator replicas on the node, one holding the
Lease. SIGKILL the leader's process: the standby takes the Lease when it runs out and reconciles a domain created at
the moment of the kill, and nothing is rotated on the way (the webhook's certificate and CA bundle stay as they
were). Stop the leader gracefully: it releases the Lease and the standby takes it without waiting for it to run
out. Figures over ten kills: benchmarks/failover.py."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest
from kubernetes import client

from iotsec.services.leader import Timing
from tests.e2e.deployed import NAMESPACE, RELEASE, require_install
from tests.e2e.failover import holder, kill_leader, operator_pods, replace_pod, replicas_running

WEBHOOK_SECRET = f"{RELEASE}-webhook-tls"


@pytest.fixture(scope="module")
def two_replicas(api_client, core) -> list[str]:
    require_install(api_client)
    deadline = time.monotonic() + 120
    while not (running := replicas_running(core)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert running, "the chart runs two operator replicas (operator.replicas: 2), both up on the node"
    return running


def _rotation_marks(api_client, core) -> tuple[str, str]:
    secret = core.read_namespaced_secret(WEBHOOK_SECRET, NAMESPACE).metadata.resource_version
    hooks = client.AdmissionregistrationV1Api(api_client).read_validating_webhook_configuration(RELEASE).webhooks
    return secret, hooks[0].client_config.ca_bundle


def test_exactly_one_replica_reconciles(api_client, core, two_replicas):
    leader = holder(api_client)
    assert leader in two_replicas
    standby = next(p for p in two_replicas if p != leader)
    log = core.read_namespaced_pod_log(standby, NAMESPACE)
    assert "stands by for lease" in log
    assert "now holds lease" not in log, "the standby never took the lease while the leader lived"
    assert "Handler" not in log, "and ran no kopf handler"
    for pod in operator_pods(core):
        assert _leader_gauge(pod) == (1.0 if pod.metadata.name == leader else 0.0), pod.metadata.name


def _leader_gauge(pod) -> float:
    """iotsec_leader as the pod's metrics endpoint serves it (the pod network is reachable from the node)."""
    port = next(p.container_port for p in pod.spec.containers[0].ports if p.name == "metrics")
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return float(re.search(r"^iotsec_leader (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]


def test_killing_the_leader_hands_reconciling_to_the_standby_and_rotates_nothing(
    api_client, core, custom, two_replicas
):
    before = _rotation_marks(api_client, core)
    result = kill_leader(api_client, core, custom)
    print(
        f"\nfailover: {result.killed} killed; {result.new_leader} held the Lease after {result.lease_seconds:.1f} s "
        f"and reconciled a new domain after {result.reconcile_seconds:.1f} s"
    )
    assert result.new_leader != result.killed
    assert result.new_leader in two_replicas
    assert _rotation_marks(api_client, core) == before, "no certificate or CA bundle rewritten by the takeover"
    replace_pod(core, result.killed)
    assert holder(api_client) == result.new_leader, "the replaced replica stands by"


def test_a_leader_stopping_gracefully_releases_the_lease_and_the_standby_takes_it_at_once(
    api_client, core, two_replicas
):
    leader = holder(api_client)
    started = time.monotonic()
    core.delete_namespaced_pod(leader, NAMESPACE)
    while holder(api_client) in ("", leader) and time.monotonic() - started < 60:
        time.sleep(0.1)
    taken = time.monotonic() - started
    assert holder(api_client) not in ("", leader)
    assert taken < Timing().duration, f"taken after {taken:.1f} s: released, not run out"
    deadline = time.monotonic() + 120
    while not replicas_running(core) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(operator_pods(core)) == 2
