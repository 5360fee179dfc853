"""Benchmark: what one request costs the API server and etcd, by kind of write (issue 18's cold reconcile).

On the API server KUBECONFIG names, when it runs on this machine (the testenv): N NetworkPolicies like the ones a
tenant gets, written one request at a time, in phases: created by POST, created by server-side apply, applied again
unchanged, applied changed, read by GET, updated by PUT, deleted. For each phase it prints the CPU the kube-apiserver
and etcd processes used per request, less what they use idle over the same time (measured first). The operator's
cold reconcile is bound by CPU on two cores, the API server's share included: this says which writes cost what.
Run: KUBECONFIG=... .venv/bin/python benchmarks/apiserver_costs.py [N]  (N: 400; 3 rounds; 2 namespaces, removed after)
Not a test: it asserts nothing; it reports figures.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from figures import record
from kubernetes import client, config
from operator_scale import control_plane_cpu

NAMESPACES = ("iotsec-bench-cost-post", "iotsec-bench-cost-apply")
POLICIES = "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
ROUNDS = 3
SETTLE_SECONDS = 1.5  # after a phase: etcd's compaction and the watch fan-out of its last writes are counted too


def policy(namespace: str, name: str, port: int = 8080) -> dict[str, Any]:
    """A NetworkPolicy shaped like an iotsec inter-zone policy (labels, an annotation, ingress and egress rules)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "iotsec",
                "iotsec.io/tenant": "bench",
                "iotsec.io/domain": "core",
            },
            "annotations": {"iotsec.io/controls": "X1369-9.4.1-2,X1369-9.4.1-3"},
        },
        "spec": {
            "podSelector": {"matchLabels": {"app": name}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"iotsec.io/domain": "core"}},
                            "podSelector": {"matchLabels": {"iotsec.io/security-level": "high"}},
                        }
                    ],
                    "ports": [{"port": port, "protocol": "TCP"}],
                }
            ],
            "egress": [
                {
                    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                }
            ],
        },
    }


class Caller:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def __call__(self, method: str, path: str, body: Any = None, apply: bool = False, ok: tuple[int, ...] = ()) -> None:
        query = [("fieldManager", "iotsec")] if method in ("POST", "PATCH", "PUT") else []
        if apply:
            query.append(("force", "true"))
        content_type = "application/apply-patch+yaml" if apply else "application/json"
        method, url, headers, payload, _ = self.api.param_serialize(
            method,
            path,
            query_params=query,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(method, url, header_params=headers, body=payload)
        response.read()
        if response.status >= 300 and response.status not in ok:
            raise SystemExit(f"{method} {path}: HTTP {response.status}: {response.data[:300]!r}")


def idle_rate(seconds: float = 5.0) -> float:
    before = control_plane_cpu()
    time.sleep(seconds)
    return (control_plane_cpu() - before) / seconds


def phase(label: str, count: int, idle: float, write: Callable[[int], None]) -> float:
    time.sleep(SETTLE_SECONDS)
    started, cpu = time.monotonic(), control_plane_cpu()
    for index in range(count):
        write(index)
    time.sleep(SETTLE_SECONDS)
    elapsed = time.monotonic() - started
    per_request = (control_plane_cpu() - cpu - idle * elapsed) / count * 1000
    print(f"  {label:34s} {per_request:5.2f} ms CPU per request ({count} in {elapsed - SETTLE_SECONDS:.1f} s)")
    return per_request


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    config.load_kube_config()
    call = Caller(client.ApiClient())
    if control_plane_cpu() == 0:
        raise SystemExit("no kube-apiserver or etcd process on this machine: start ../shared/k8s-testenv")
    for namespace in NAMESPACES:
        call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    rounds: dict[str, list[float]] = {}
    try:
        posted, applied = (POLICIES.format(namespace=n) for n in NAMESPACES)
        idle = idle_rate()
        print(f"API server + etcd CPU per request, {count} policies a phase, idle ({idle * 1000:.0f} ms/s) less:")
        for round_ in range(ROUNDS):
            print(f"round {round_ + 1} of {ROUNDS}")
            for label, value in one_round(call, count, idle, posted, applied, f"r{round_}-").items():
                rounds.setdefault(label, []).append(value)
    finally:
        for namespace in NAMESPACES:
            call("DELETE", f"/api/v1/namespaces/{namespace}", ok=(404,))
    print(f"medians of {ROUNDS} rounds:")
    for label, values in rounds.items():
        print(f"  {label:34s} {statistics.median(values):5.2f} ms ({', '.join(f'{v:.2f}' for v in values)})")
        record(
            f"API server + etcd CPU per request: {label} (NetworkPolicy, median of {ROUNDS} rounds of {count})",
            f"{statistics.median(values):.2f} ms",
        )


def one_round(call: Caller, count: int, idle: float, posted: str, applied: str, prefix: str) -> dict[str, float]:
    """Each kind of request once over `count` new policies (names start with `prefix`), which are deleted after."""
    first, second = NAMESPACES

    def name(index: int) -> str:
        return f"{prefix}{index}"

    return {
        "POST create": phase("POST create", count, idle, lambda i: call("POST", posted, policy(first, name(i)))),
        "server-side apply that creates": phase(
            "server-side apply, creating",
            count,
            idle,
            lambda i: call("PATCH", f"{applied}/{name(i)}", policy(second, name(i)), apply=True),
        ),
        "server-side apply, unchanged": phase(
            "server-side apply, unchanged",
            count,
            idle,
            lambda i: call("PATCH", f"{applied}/{name(i)}", policy(second, name(i)), apply=True),
        ),
        "server-side apply, changed": phase(
            "server-side apply, changed",
            count,
            idle,
            lambda i: call("PATCH", f"{applied}/{name(i)}", policy(second, name(i), 9090), apply=True),
        ),
        "GET": phase("GET", count, idle, lambda i: call("GET", f"{applied}/{name(i)}")),
        "PUT update, changed": phase(
            "PUT update, changed",
            count,
            idle,
            lambda i: call("PUT", f"{posted}/{name(i)}", policy(first, name(i), 7070)),
        ),
        "DELETE": phase("DELETE", count, idle, lambda i: call("DELETE", f"{posted}/{name(i)}")),
        "DELETE (applied)": phase("DELETE (applied)", count, idle, lambda i: call("DELETE", f"{applied}/{name(i)}")),
    }


if __name__ == "__main__":
    main()
