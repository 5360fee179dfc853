"""Benchmark: `iotsec report` over a large live-like inventory (no cluster): 10 SecurityDomains, 1,000 namespaces
labelled as the operator labels them, their NetworkPolicies and tenant objects as the operator writes them,
20 Deployments per namespace (one in ten violating a rule) and the background scan's PolicyReports over them.

Times each stage of the report (the shared view, every probe, the JSON document, text, markdown and HTML) and
prints the peak RSS. Not a test: it asserts nothing; it reports figures for the closing notes and regressions.
Run: .venv/bin/python benchmarks/report_scale.py [namespaces] [deployments per namespace] [tenants] [--profile]
"""

from __future__ import annotations

import cProfile
import json
import pstats
import resource
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from figures import record

from iotsec.build import render
from iotsec.conformance import html, inventory
from iotsec.conformance import render as text_render
from iotsec.conformance.assess import assess
from iotsec.conformance.document import to_document
from iotsec.conformance.model import Inventory
from iotsec.model.manifests import Document

DOMAINS = 10
ZONES = ("access", "core", "management", "interface", "support")
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
T = TypeVar("T")


def domain(index: int, namespaces: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {"name": f"d{index}"},
        "spec": {
            "zone": ZONES[index % len(ZONES)],
            "namespaces": namespaces,
            "enforcement": "enforce",
            "podSecurity": "restricted",
            "allowedPorts": [{"port": 8080}],
            "allowedRegistries": ["registry.example.com"],
            "allow": [{"name": "peer", "from": [{"domain": f"d{(index + 1) % DOMAINS}"}], "ports": [{"port": 8080}]}],
        },
    }


def tenant(index: int, domain_name: str, namespaces: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "TenantIsolation",
        "metadata": {"name": f"t{index}"},
        "spec": {"tenantID": f"t{index}", "securityDomain": domain_name, "namespaces": namespaces},
    }


def deployment(namespace: str, index: int) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": "registry.example.com/app@sha256:" + "a" * 64,
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": index % 10 == 0,  # one in ten violates no-privilege-escalation
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    labels = {"app.kubernetes.io/name": f"app-{index}"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"app-{index}", "namespace": namespace, "uid": f"{namespace}-{index}", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                },
            },
        },
    }


def platform(namespaces: int, per_namespace: int, tenants: int) -> Inventory:
    """A cluster as the operator leaves it: custom resources, labelled namespaces, the objects it writes,
    workloads and the background scan's PolicyReports."""
    names = [f"ns-{n:04d}" for n in range(namespaces)]
    per_domain = max(1, namespaces // DOMAINS)
    domains = [domain(d, names[d * per_domain : (d + 1) * per_domain]) for d in range(DOMAINS)]
    per_tenant = max(1, namespaces // max(1, tenants))
    owners = [
        tenant(t, f"d{(t * per_tenant) // per_domain}", names[t * per_tenant : (t + 1) * per_tenant])
        for t in range(tenants)
    ]
    bare = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names]
    custom = [*domains, *owners]
    planned = render.render([Document("<bench>", i, o) for i, o in enumerate([*custom, *bare])]).objects
    labels: dict[str, dict[str, str]] = {}
    for patch in (o for o in planned if o["kind"] == "Namespace"):  # tenants' and domains' labels, merged
        labels.setdefault(patch["metadata"]["name"], {}).update(patch["metadata"].get("labels") or {})
    namespace_objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": labels.get(n, {})}} for n in names
    ]
    written = [o for o in planned if o["kind"] != "Namespace"]
    workloads = [deployment(n, i) for n in names for i in range(per_namespace)]
    objects = [*custom, *namespace_objects, *written, *workloads]
    reports = inventory.scan_reports(objects, NOW, as_written=False) or []
    return Inventory("cluster", NOW, [*objects, *reports], source="benchmark")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(what: str, call: Callable[[], T]) -> T:
    start = time.perf_counter()
    value = call()
    print(f"  {what:<22} {time.perf_counter() - start:7.2f} s   peak RSS {rss_mb():6.0f} MB")
    return value


def main(args: list[str]) -> None:
    profile = "--profile" in args
    numbers = [int(a) for a in args if not a.startswith("--")]
    namespaces, per_namespace, tenants = (numbers + [1000, 20, 100][len(numbers) :])[:3]
    print(f"report over {namespaces} namespaces x {per_namespace} Deployments, {DOMAINS} domains, {tenants} tenants")
    started = time.perf_counter()
    built = timed("build inventory+scan", lambda: platform(namespaces, per_namespace, tenants))
    built_in = time.perf_counter() - started
    print(f"  {len(built.objects)} objects, baseline peak RSS {rss_mb():.0f} MB")
    record(f"scan of {namespaces:,} namespaces x {per_namespace} Deployments (built and scanned)", f"{built_in:.1f} s")
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    start = time.perf_counter()
    timed("inventory.view", lambda: inventory.view(built))
    report = timed("assess (all probes)", lambda: assess(built))
    middle = time.perf_counter()
    document = timed("to_document", lambda: to_document(report))
    timed("render text", lambda: text_render.text(document))
    timed("render markdown", lambda: text_render.markdown(document))
    page = timed("render html", lambda: html.html(document))
    end = time.perf_counter()
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    assessments = sum(len(c["assessments"]) for c in document["controls"])
    size = len(json.dumps(document)) / 1e6
    print(f"  view+assess {middle - start:.2f} s, all stages {end - start:.2f} s, peak RSS {rss_mb():.0f} MB")
    print(f"  {assessments} assessments, JSON {size:.1f} MB, HTML {len(page) / 1e6:.1f} MB")
    scale = f"{namespaces:,} namespaces x {per_namespace} Deployments"
    record(f"report over {scale}: every stage", f"{end - start:.1f} s")
    record(f"report over {scale}: peak RSS (inventory and scan included)", f"{rss_mb():,.0f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
