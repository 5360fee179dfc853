"""The API adapter's discovery is safe across kopf's handler threads (issue 15: KeyError 'resources' at start)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from iotsec.k8s.kube import Kube


class RacyDiscovery:
    """Like the DynamicClient's lazy discoverer: two lookups at once corrupt its cache (here: raise KeyError)."""

    def __init__(self) -> None:
        self.inside = 0
        self.calls = 0
        self.guard = threading.Lock()

    def get(self, api_version: str, kind: str) -> object:
        with self.guard:
            self.inside += 1
            self.calls += 1
            overlapping = self.inside > 1
        time.sleep(0.005)
        with self.guard:
            self.inside -= 1
        if overlapping:
            raise KeyError("resources")
        return SimpleNamespace(api_version=api_version, kind=kind)


def test_concurrent_first_lookups_neither_race_nor_repeat():
    kube = Kube(api_client=object())
    discovery = RacyDiscovery()
    kube._dynamic = SimpleNamespace(resources=discovery)
    kinds = [("v1", "Namespace"), ("v1", "Secret"), ("iotsec.io/v1alpha1", "SecurityDomain")] * 20
    with ThreadPoolExecutor(max_workers=20) as pool:
        found = list(pool.map(lambda key: kube._resource(*key), kinds))
    assert [(r.api_version, r.kind) for r in found] == kinds
    assert discovery.calls == 3, "each resource is discovered once per process"
