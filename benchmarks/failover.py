"""Benchmark: failover of the elected reconciler as deployed (issue 18): SIGKILL the leader's process on the node,
N times, and report from the kill to the Lease's new holder and to the first reconcile, by the standby, of a
SecurityDomain created at the kill. After each kill the killed pod is replaced (a fresh pod, no restart back-off)
and the next kill waits for two replicas again.

Needs the chart installed on the testenv with its node (make image testenv-install), root (it reads /proc and
kills the process on this machine). Run:
    KUBECONFIG=/var/cache/iotsec-testenv/run/kubeconfig PYTHONPATH=. .venv/bin/python benchmarks/failover.py [N]
Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import statistics
import sys
import time

from figures import record
from kubernetes import client, config
from tests.e2e.failover import kill_leader, replace_pod, replicas_running


def main(runs: int) -> None:
    config.load_kube_config()
    api_client = client.ApiClient()
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    leases, reconciles = [], []
    for run in range(1, runs + 1):
        deadline = time.monotonic() + 180
        while not replicas_running(core) and time.monotonic() < deadline:
            time.sleep(0.5)
        result = kill_leader(api_client, core, custom)
        leases.append(result.lease_seconds)
        reconciles.append(result.reconcile_seconds)
        print(
            f"run {run:2}: killed {result.killed}; lease to {result.new_leader} after {result.lease_seconds:.1f} s, "
            f"first reconcile after {result.reconcile_seconds:.1f} s",
            flush=True,
        )
        replace_pod(core, result.killed)
    print("\n| figure | min | median | max | goal |")
    print("|---|---|---|---|---|")
    for name, values, goal in (
        ("SIGKILL → Lease held by the standby", leases, "—"),
        ("SIGKILL → first reconcile by the standby", reconciles, "≤ 15 s"),
    ):
        low, middle, high = min(values), statistics.median(values), max(values)
        print(f"| {name} ({runs} runs) | {low:.1f} s | {middle:.1f} s | {high:.1f} s | {goal} |")
        record(f"{name} (median of {runs}; min to max)", f"{middle:.1f} s ({low:.1f} to {high:.1f})", goal)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
