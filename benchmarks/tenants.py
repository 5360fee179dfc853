"""Benchmark: render 1,000 tenants (3 namespaces, 5 applications each) and generate their keys.

Prints objects/s of the pure builder, key generations/s (application keys of both algorithms, device CAs) and
peak memory. Run: .venv/bin/python benchmarks/tenants.py [tenants]
"""

from __future__ import annotations

import resource
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

from figures import record

from iotsec.api.tenantisolation import TenantIsolationSpec
from iotsec.build.tenant import plan_tenant
from iotsec.pki import appkeys, devices


def tenant(index: int) -> TenantIsolationSpec:
    namespaces = [f"t{index}-{n}" for n in range(3)]
    return TenantIsolationSpec.model_validate(
        {
            "tenantID": f"t{index}",
            "securityDomain": "core",
            "namespaces": namespaces,
            "userClasses": [
                {"name": "admins", "privilege": "admin", "groups": [f"t{index}:admins"]},
                {"name": "viewers", "privilege": "viewer", "groups": [f"t{index}:viewers"]},
            ],
            "applicationClasses": [
                {"name": "ingest", "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}
            ],
            "applications": [
                {
                    "name": f"app-{a}",
                    "class": "ingest",
                    "namespace": namespaces[a % 3],
                    "keyAlgorithm": "ed25519" if a % 2 else "hmac-sha256",
                }
                for a in range(5)
            ],
            "deviceClasses": [{"name": "meter"}],
            "storage": {"provisioner": "driver.longhorn.io", "parameters": {"encrypted": "true"}},
        }
    )


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    specs = [tenant(i) for i in range(count)]
    started = time.perf_counter()  # timed without tracemalloc, which slows allocation-heavy code several times
    plans = [plan_tenant(f"tenant-{i}", spec, {}) for i, spec in enumerate(specs)]  # held, as render holds them
    objects = sum(len(plan.objects) for plan in plans)
    elapsed = time.perf_counter() - started
    del plans
    tracemalloc.start()
    held = [plan_tenant(f"tenant-{i}", spec, {}) for i, spec in enumerate(specs)]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del held
    print(f"tenants={count} namespaces={3 * count} applications={5 * count} objects={objects}")
    print(f"render: {elapsed:.2f}s, {objects / elapsed:,.0f} objects/s; peak traced memory {peak / 2**20:.1f} MiB")
    record(f"render {count:,} tenants (pure builder)", f"{objects / elapsed:,.0f} objects/s", "keep (35 k objects/s)")
    record(f"render {count:,} tenants, peak traced memory", f"{peak / 2**20:.0f} MiB", "keep (188 MiB)")

    now = datetime.now(UTC)
    rates = {}
    for algorithm in appkeys.ALGORITHMS:
        n = 2000
        started = time.perf_counter()
        for _ in range(n):
            appkeys.new_key(algorithm, now)
        rates[algorithm] = n / (time.perf_counter() - started)
        print(f"application keys ({algorithm}): {rates[algorithm]:,.0f} key generations/s")
    started = time.perf_counter()
    for i in range(50):
        devices.new_device_ca(f"t{i}", "ecdsa-p256", timedelta(days=1825), now)
    ca_rate = 50 / (time.perf_counter() - started)
    print(f"device CAs (EC P-256): {ca_rate:,.0f}/s")
    first_run = 5 * count / min(rates.values()) + count / ca_rate
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"all keys of {count} tenants from scratch: {first_run:.1f} s at the slower rate; max RSS {rss:.0f} MiB")
    record(f"keys of {count:,} tenants from scratch (5 applications + a device CA each)", f"{first_run:.1f} s")


if __name__ == "__main__":
    main()
