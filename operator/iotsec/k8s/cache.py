"""Informer-style caches: one kind's objects kept current from a list, then a watch.

A `Reflector` lists a kind once, then follows its watch from the list's resourceVersion; the Kubernetes client
resumes a stream the server ends from the last version it saw. When that version is too old (410 Gone) or the
stream breaks, it lists again and replaces its store, so a missed event cannot outlive the next list. Its store
is never emptied by a failure: readers keep the last state they were given.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from iotsec.k8s.kube import ApiError, Kube

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace or "", name)


def _key(obj: dict) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


class Reflector:
    """One kind's objects, cluster-wide, current to the last watch event; `on_change` is called (from the
    reflector's thread) after each list and each event."""

    def __init__(
        self,
        kube: Kube,
        api_version: str,
        kind: str,
        on_change: Callable[[], None],
        retry_seconds: float = 2.0,
        watch_seconds: int = 300,
    ):
        self.kube, self.api_version, self.kind = kube, api_version, kind
        self.on_change, self.retry_seconds, self.watch_seconds = on_change, retry_seconds, watch_seconds
        self.synced = threading.Event()
        self.lists = 0
        self._objects: dict[Key, dict] = {}
        self._lock = threading.Lock()

    def items(self) -> list[dict]:
        with self._lock:
            return list(self._objects.values())

    def run(self, stop: threading.Event) -> None:
        """List and watch until `stop` is set; each failure is logged once and retried after `retry_seconds`."""
        while not stop.is_set():
            try:
                version = self._list()
                for type_, obj in self.kube.watch(self.api_version, self.kind, version, self.watch_seconds):
                    self._apply(type_, obj)
                    if stop.is_set():
                        return
            except ApiError as exc:
                if exc.status == 410:
                    log.info("%s: resourceVersion too old, listing again", self.kind)
                    continue
                log.warning(
                    "%s: %s (keeping the last state; listing again in %.0fs)", self.kind, exc, self.retry_seconds
                )
                stop.wait(self.retry_seconds)

    def _list(self) -> str:
        items, version = self.kube.list_at(self.api_version, self.kind)
        with self._lock:
            self._objects = {_key(obj): obj for obj in items}
        self.lists += 1
        self.synced.set()
        self.on_change()
        return version

    def _apply(self, type_: str, obj: dict) -> None:
        with self._lock:
            if type_ == "DELETED":
                self._objects.pop(_key(obj), None)
            else:
                self._objects[_key(obj)] = obj
        self.on_change()
