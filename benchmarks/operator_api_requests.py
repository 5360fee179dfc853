"""Benchmark: API requests the operator sends per reconcile, with and without its watch cache (issue 15).

Against the real testenv API server (KUBECONFIG): N SecurityDomains, each with M member namespaces, and N
TenantIsolations (one namespace each), reconciled by `iotsec run` in a subprocess. For each mode it reports the
cold start (requests until every resource is Ready) and the steady state (requests per resync of every resource
with nothing changed), as requests per reconcile by verb, from the operator's own iotsec_api_requests_total and
iotsec_reconcile_total. The operator's own watch streams count one request each when opened.

Run with no other operator on the cluster:
    KUBECONFIG=... PYTHONPATH=. .venv/bin/python benchmarks/operator_api_requests.py [N] [M]
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

from figures import record
from kubernetes import client, config
from tests.e2e.conftest import install_crds
from tests.e2e.processes import RESYNC_SECONDS, Operator

GROUP, VERSION = "iotsec.io", "v1alpha1"
RESYNC = RESYNC_SECONDS  # the test operator's resync interval (--resync-seconds)


def counters(text: str, name: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(rf"{name}(?:\{{(.*)\}})? ([0-9.e+]+)$", line)
        if match:
            found[match.group(1) or ""] = found.get(match.group(1) or "", 0) + float(match.group(2))
    return found


def reconciles(text: str) -> float:
    return sum(counters(text, "iotsec_reconcile_total").values())


def requests(text: str) -> dict[str, float]:
    return {k.split('"')[1]: v for k, v in counters(text, "iotsec_api_requests_total").items()}


def setup(core, custom, suffix: str, domains: int, members: int) -> list[str]:
    namespaces = []
    for d in range(domains):
        names = [f"bench-{suffix}-d{d}-{m}" for m in range(members)]
        tenant_ns = f"bench-{suffix}-t{d}"
        for name in [*names, tenant_ns]:
            core.create_namespace({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})
            namespaces.append(name)
        domain = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SecurityDomain",
            "metadata": {"name": f"bench-{suffix}-d{d}"},
            "spec": {"zone": "core", "namespaces": names, "allowedPorts": [{"port": 8080}],
                     "allow": [{"name": "from-prev", "from": [{"domain": f"bench-{suffix}-d{max(d - 1, 0)}"}],
                                "ports": [{"port": 8080}]}]},
        }  # fmt: skip
        custom.create_cluster_custom_object(GROUP, VERSION, "securitydomains", domain)
        tenant = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TenantIsolation",
            "metadata": {"name": f"bench-{suffix}-t{d}"},
            "spec": {"tenantID": f"b{suffix}t{d}", "securityDomain": f"bench-{suffix}-d{d}", "namespaces": [tenant_ns]},
        }
        custom.create_cluster_custom_object(GROUP, VERSION, "tenantisolations", tenant)
    return namespaces


def all_ready(custom, suffix: str) -> bool:
    for plural in ("securitydomains", "tenantisolations"):
        for item in custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]:
            if not item["metadata"]["name"].startswith(f"bench-{suffix}"):
                continue
            conditions = (item.get("status") or {}).get("conditions") or []
            if not any(c["type"] == "Ready" and c.get("reason") for c in conditions):
                return False
    return True


def measure(custom, suffix: str, cache: bool) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp(prefix="iotsec-bench-"))
    operator = Operator(folder / "operator.log")
    started = time.monotonic()
    operator.start(IOTSEC_WATCH_CACHE="true" if cache else "false")
    try:
        while not all_ready(custom, suffix):
            assert time.monotonic() - started < 300, f"not Ready in 300 s:\n{operator.log()}"
            time.sleep(0.5)
        time.sleep(3)  # let the start-up burst settle
        cold = operator.metrics()
        cold_seconds = time.monotonic() - started
        time.sleep(RESYNC * 5 + 1)  # five resyncs of everything, nothing changed
        steady = operator.metrics()
    finally:
        operator.stop()
    cold_requests, steady_requests = requests(cold), requests(steady)
    delta = {verb: steady_requests.get(verb, 0) - cold_requests.get(verb, 0) for verb in steady_requests}
    steady_reconciles = reconciles(steady) - reconciles(cold)
    return {
        "cold_seconds": round(cold_seconds, 1),
        "cold_reconciles": reconciles(cold),
        "cold_requests": {k: int(v) for k, v in sorted(cold_requests.items())},
        "steady_reconciles": steady_reconciles,
        "steady_requests": {k: int(v) for k, v in sorted(delta.items()) if v},
        "steady_requests_per_resync": round(sum(delta.values()) / 5),
        "steady_writes_per_resync": round(delta.get("apply", 0) / 5),
        "steady_per_reconcile": round(sum(delta.values()) / max(steady_reconciles, 1), 2),
        "steady_reads_per_reconcile": round(
            (delta.get("list", 0) + delta.get("get", 0)) / max(steady_reconciles, 1), 2
        ),
        "cache_hits": counters(steady, "iotsec_watch_cache_hits_total").get("", 0),
    }


def cleanup(core, custom, suffix: str) -> None:
    for plural in ("securitydomains", "tenantisolations"):
        for item in custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]:
            name = item["metadata"]["name"]
            if name.startswith(f"bench-{suffix}"):
                custom.patch_cluster_custom_object(GROUP, VERSION, plural, name, {"metadata": {"finalizers": None}})
                custom.delete_cluster_custom_object(GROUP, VERSION, plural, name)
    for ns in core.list_namespace().items:
        if ns.metadata.name.startswith(f"bench-{suffix}"):
            core.delete_namespace(ns.metadata.name)
    deadline = time.monotonic() + 180  # the next mode must not see this one's namespaces go (their events)
    while any(ns.metadata.name.startswith(f"bench-{suffix}") for ns in core.list_namespace().items):
        assert time.monotonic() < deadline, "benchmark namespaces not deleted in 180 s"
        time.sleep(1)


def main() -> None:
    domains = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    members = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    config.load_kube_config()
    install_crds(client.ApiClient())  # a fresh testenv has none; the operator under test needs its kinds served
    core, custom = client.CoreV1Api(), client.CustomObjectsApi()
    print(f"{domains} SecurityDomains x {members} namespaces, {domains} TenantIsolations; resync {RESYNC} s")
    for cache in (True, False):  # each on its own fresh objects: a cold start creates everything
        suffix = uuid.uuid4().hex[:4]
        setup(core, custom, suffix, domains, members)
        try:
            figures = measure(custom, suffix, cache)
        finally:
            cleanup(core, custom, suffix)
        print(f"watch cache {'on ' if cache else 'off'}: {figures}")
        mode = f"watch cache {'on' if cache else 'off'}, {domains} domains x {members} namespaces + {domains} tenants"
        writes = figures["steady_writes_per_resync"]
        record(f"steady-state writes per resync, {mode}", f"{writes}", "0" if cache else "")
        record(f"steady-state reads per reconcile, {mode}", f"{figures['steady_reads_per_reconcile']}")


if __name__ == "__main__":
    main()
