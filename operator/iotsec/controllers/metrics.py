"""Prometheus metrics of the operator and the webhook (names documented in the README)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

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
OBJECTS_LOST = Counter(
    "iotsec_objects_lost_total",
    "Objects iotsec manages that someone else deleted (a watch event, or a relist after a watch gap, found them "
    "gone); each asked its owner for a reconcile at once.",
    ["owner_kind", "kind"],
)
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


# ---------------------------------------------------------------- the background scan (controllers/scan.py)

BACKGROUND_VIOLATIONS = Gauge(
    "iotsec_background_violations",
    "Objects that exist in violation of a rule, found by the background scan, by control, namespace ('' for "
    "cluster-scoped objects), rule and the domain's mode; mode enforce: they bypassed admission.",
    ["control", "namespace", "rule", "mode"],
)
BACKGROUND_SCAN_SECONDS = Histogram(
    "iotsec_background_scan_seconds",
    "Time of one background scan: listing, judging and publishing the PolicyReports.",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
BACKGROUND_SCAN_OBJECTS = Gauge("iotsec_background_scan_objects", "Objects the last background scan judged.")
BACKGROUND_SCAN_TIMESTAMP = Gauge(
    "iotsec_background_scan_timestamp_seconds", "Unix time the last background scan succeeded."
)


class ScannedLike(Protocol):
    @property
    def namespace(self) -> str | None: ...
    @property
    def mode(self) -> str: ...

    @property
    def violations(self) -> Sequence[Any]: ...


def record_background_scan(objects: Sequence[ScannedLike], seconds: float, finished: float) -> None:
    """Set the scan's gauges; series whose count went to 0 (fixed, deleted) are removed, not left at 0."""
    counts: dict[tuple[str, str, str, str], int] = {}
    for scanned in objects:
        for finding in scanned.violations:
            key = (finding.control, scanned.namespace or "", finding.rule, scanned.mode)
            counts[key] = counts.get(key, 0) + 1
    for labels in list(BACKGROUND_VIOLATIONS._metrics):  # prometheus_client keeps children keyed by label values
        if labels not in counts:
            BACKGROUND_VIOLATIONS.remove(*labels)
    for labels, count in counts.items():
        BACKGROUND_VIOLATIONS.labels(*labels).set(count)
    BACKGROUND_SCAN_SECONDS.observe(seconds)
    BACKGROUND_SCAN_OBJECTS.set(len(objects))
    BACKGROUND_SCAN_TIMESTAMP.set(finished)
