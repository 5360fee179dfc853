"""The kopf triggers every level-triggered iotsec reconciler shares."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import kopf

from iotsec.api.common import API_VERSION, GROUP, VERSION
from iotsec.controllers import metrics
from iotsec.controllers.runtime import config
from iotsec.k8s.kube import Kube

_locks: defaultdict[tuple[str, str | None, str], threading.Lock] = defaultdict(threading.Lock)


def resource_lock(kind: str, name: str, namespace: str | None = None) -> threading.Lock:
    """One lock per custom resource: its reconcile and delete handlers never run at once."""
    return _locks[(kind, namespace, name)]


@contextmanager
def live_resource(
    api: Kube, kind: str, name: str, namespace: str | None = None
) -> Iterator[tuple[dict[str, Any] | None, metrics.Outcome]]:
    """The skeleton of every reconcile: hold the resource's lock, count the outcome, read the resource.

    Yields (body, outcome); body is None when the resource is gone or being deleted (counted as a success)."""
    with resource_lock(kind, name, namespace), metrics.reconciling(kind) as outcome:
        body = api.get(API_VERSION, kind, name, namespace)
        if body is None or body["metadata"].get("deletionTimestamp"):
            outcome.succeeded()
            body = None
        yield body, outcome


def level_triggered(plural: str, reconcile: Callable[..., None], namespaced: bool = False) -> None:
    """Reconcile on create, update and resume, and on a resync timer (drift, clock-driven key rotation).

    Every trigger recomputes the whole desired state from the cluster as it is, so each is safe to repeat.
    """

    def reconcile_now(name: str, namespace: str | None = None, **_: Any) -> None:
        if namespaced:
            reconcile(name, namespace)
        else:
            reconcile(name)

    for trigger in (kopf.on.resume, kopf.on.create, kopf.on.update):
        trigger(GROUP, VERSION, plural, id="reconcile")(reconcile_now)
    kopf.timer(
        GROUP, VERSION, plural, id="resync", interval=config().resync_seconds, initial_delay=config().resync_seconds
    )(reconcile_now)
