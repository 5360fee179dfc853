"""The kopf triggers every level-triggered iotsec reconciler shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kopf

from iotsec.api.common import GROUP, VERSION
from iotsec.runtime import CONFIG


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
        GROUP, VERSION, plural, id="resync", interval=CONFIG.resync_seconds, initial_delay=CONFIG.resync_seconds
    )(reconcile_now)
