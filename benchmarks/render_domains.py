"""Benchmark: render 200 SecurityDomains over 2,000 namespaces (pure builder, no cluster).

Prints objects per second and peak memory. Run: .venv/bin/python benchmarks/render_domains.py [domains] [namespaces]
Not a test: it asserts nothing about speed; it reports figures for the closing notes and for regressions.
"""

from __future__ import annotations

import resource
import sys
import time
import tracemalloc

from figures import record

from iotsec.api.securitydomain import SecurityDomainSpec
from iotsec.build.securitydomain import Domain, NamespaceInfo, plan_domain, plan_domains, reachability

ZONES = ("access", "core", "management", "interface", "support")


def platform(domains: int, namespaces: int) -> tuple[list[Domain], list[NamespaceInfo]]:
    per_domain = namespaces // domains
    built = []
    for index in range(domains):
        zone = ZONES[index % len(ZONES)]
        peers = [f"d{(index + step) % domains}" for step in (1, 2, 3)]
        spec = {
            "zone": zone,
            "namespaces": [f"ns-{index}-{n}" for n in range(per_domain)],
            "intraDomainTraffic": "domain" if index % 2 else "namespace",
            "allow": [
                {"name": f"from-{peer}", "from": [{"domain": peer}], "ports": [{"port": 8000 + step}]}
                for step, peer in enumerate(peers)
            ]
            + [
                {
                    "name": "vpn",
                    "from": [{"cidr": "10.20.0.0/16", "except": ["10.20.5.0/24"]}],
                    "ports": [{"port": 443}],
                }
            ],
            "egress": [{"name": f"to-{peer}", "to": [{"domain": peer}], "ports": [{"port": 8000}]} for peer in peers],
            "denyCIDRs": ["10.20.9.0/24"],
        }
        if zone in ("access", "interface"):
            spec["internet"] = {"ingress": True, "ports": [{"port": 443}]}
        built.append(
            Domain(
                f"d{index}",
                SecurityDomainSpec.model_validate(spec),
                f"2026-01-01T00:{index // 60:02d}:{index % 60:02d}Z",
            )
        )
    infos = [NamespaceInfo(ns) for d in built for ns in d.spec.namespaces or ()]
    return built, infos


def main() -> None:
    domains_count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    namespaces_count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    domains, namespaces = platform(domains_count, namespaces_count)
    started = time.perf_counter()
    plans = plan_domains(domains, namespaces)  # what `iotsec render` does
    elapsed = time.perf_counter() - started
    objects = sum(len(p.policies) + len(p.namespace_labels) for p in plans)
    print(f"domains={len(domains)} namespaces={len(namespaces)} objects={objects}")
    print(f"render all: {elapsed:.2f}s, {objects / elapsed:,.0f} objects/s")
    record(f"render {len(domains)} domains over {len(namespaces):,} namespaces", f"{objects / elapsed:,.0f} objects/s")

    started = time.perf_counter()
    plan_domain(domains[0], domains, namespaces)  # what one reconciliation does
    print(
        f"one domain's reconcile plan (cluster-wide analysis included): {(time.perf_counter() - started) * 1000:.0f} ms"
    )

    tracemalloc.start()
    plan_domains(domains, namespaces)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    edges, _ = reachability(domains)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"reachability edges={len(edges)}; peak traced memory {peak / 2**20:.1f} MiB; max RSS {rss_mib:.1f} MiB")
    record(f"render {len(domains)} domains, max RSS", f"{rss_mib:.0f} MiB")


if __name__ == "__main__":
    main()
