"""Prometheus metrics of the operator and the webhook (names documented in the README)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

RECONCILE_TOTAL = Counter(
    "iotsec_reconcile_total", "Reconciliations by kind and result (success, invalid, error).", ["kind", "result"]
)
RECONCILE_DURATION = Histogram(
    "iotsec_reconcile_duration_seconds",
    "Time to reconcile one custom resource.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MANAGED_OBJECTS = Gauge(
    "iotsec_managed_objects", "Objects iotsec maintains, by owner and object kind.", ["owner_kind", "owner", "kind"]
)
RESOURCE_READY = Gauge(
    "iotsec_resource_ready", "1 when the custom resource's Ready condition is True, else 0.", ["kind", "name"]
)
OBJECTS_PRUNED = Counter("iotsec_objects_pruned_total", "Child objects deleted because no longer desired.", ["kind"])
KEY_UNREADABLE = Gauge(
    "iotsec_key_unreadable",
    "1 while a key Secret iotsec keeps (webhook TLS, audit signing key) is unreadable or someone else's and is left "
    "alone until a person annotates it iotsec.io/replace-unreadable=true; 0 once it reads again.",
    ["secret"],
)


class Counted(Protocol):
    result: str  # success, invalid or error


@contextmanager
def reconciling(kind: str, outcome: Counted) -> Iterator[Counted]:
    """Time a reconcile and count it by `outcome.result` as it ends."""
    started = time.perf_counter()
    try:
        yield outcome
    finally:
        RECONCILE_DURATION.labels(kind).observe(time.perf_counter() - started)
        RECONCILE_TOTAL.labels(kind, outcome.result).inc()


def forget(kind: str, name: str) -> None:
    """Drop the per-object series of a deleted custom resource."""
    for labels in list(MANAGED_OBJECTS._metrics):  # prometheus_client keeps children keyed by label values
        if labels[:2] == (kind, name):
            MANAGED_OBJECTS.remove(*labels)
    with contextlib.suppress(KeyError):
        RESOURCE_READY.remove(kind, name)
