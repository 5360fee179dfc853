"""The cluster state the webhook decides with: informer-style watches, so a decision is at most one watch event
behind the API server (a pod created right after its namespace joined a domain is judged by that domain)."""

from __future__ import annotations

import asyncio
import base64
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from iotsec.admission.configmaps import summarise
from iotsec.admission.context import ConfigMapSummary, Snapshot
from iotsec.admission.snapshot import CONTEXT_SOURCES, snapshot_from_objects
from iotsec.api.validation import Resource, parse_resource
from iotsec.k8s.cache import Reflector
from iotsec.k8s.kube import ApiError, Kube
from iotsec.model.platform import Platform
from iotsec.servers.webhook.server import SnapshotSource

log = logging.getLogger(__name__)


class ParsedResources:
    """Validates each custom resource once per resourceVersion: schema and CEL checks cost milliseconds per
    object, and a namespace event must not re-validate every domain."""

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, str], Resource] = {}
        self._seen: set[tuple[str, str]] = set()

    def __call__(self, obj: dict[str, Any]) -> Resource:
        meta = obj.get("metadata") or {}
        key = (meta.get("uid") or "", meta.get("resourceVersion") or "")
        if not all(key):
            return parse_resource(obj)
        self._seen.add(key)
        if key not in self._parsed:
            self._parsed[key] = parse_resource(obj)  # an invalid one raises, is not remembered and is tried again
        return self._parsed[key]

    def forget_unseen(self) -> None:
        """Drop what the last build did not ask for (deleted or superseded versions)."""
        self._parsed = {key: value for key, value in self._parsed.items() if key in self._seen}
        self._seen = set()


class ConfigMapSummaries:
    """The Kube a ConfigMap Reflector lists and watches through: each ConfigMap arrives summarised (its name and
    the names of its keys holding a literal secret, never a value), so the webhook's memory grows with the number
    of ConfigMaps, not with what they hold. The list answer itself is summarised as it is read."""

    def __init__(self, kube: Kube):
        self.kube = kube

    def list_at(self, api_version: str, kind: str) -> tuple[list[dict[str, Any]], str]:
        items, version = self.kube.list_at(api_version, kind)
        return [_summarised(item) for item in items], version

    def watch(
        self, api_version: str, kind: str, resource_version: str, timeout_seconds: int = 300
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        for type_, obj in self.kube.watch(api_version, kind, resource_version, timeout_seconds):
            yield type_, _summarised(obj)


def _summarised(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    try:
        summary = summarise(obj)
    except (AttributeError, TypeError, ValueError):
        summary = ConfigMapSummary()  # the API server validated it; never let one object stop the watch
    # namespace names are interned: thousands of summaries share a few dozen namespaces
    identity = {"namespace": sys.intern(str(meta.get("namespace") or "")), "name": str(meta.get("name") or "")}
    return {"metadata": identity, "summary": summary}


class ConfigMapView(Mapping[tuple[str, str], ConfigMapSummary]):
    """The summaries as the watch holds them now: a decision reads the latest without a snapshot rebuild, so the
    frequent ConfigMap updates of a cluster (leader election, caches) cost no rebuild of the domains' view."""

    def __init__(self, reflector: Reflector):
        self.reflector = reflector

    def __getitem__(self, key: tuple[str, str]) -> ConfigMapSummary:
        held = self.reflector.get(*key)
        if held is None:
            raise KeyError(key)
        summary: ConfigMapSummary = held["summary"]
        return summary

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter([(o["metadata"]["namespace"], o["metadata"]["name"]) for o in self.reflector.items()])

    def __len__(self) -> int:
        return len(self.reflector.items())


class ClusterSnapshot(SnapshotSource):
    """Watches what the policy needs and rebuilds the snapshot after each change (changes that arrive while a
    build runs are folded into the next one). `current` stays None, and /readyz 503, until every kind has been
    listed once; a broken watch keeps the last state while it lists again."""

    CATCH_UP_SECONDS = 2.0  # how long a request in a namespace the snapshot lacks waits for its watch event

    def __init__(self, kube: Kube, unassigned: str = "enforce", platform: Platform | None = None):
        self.kube, self.unassigned = kube, unassigned
        self._published: asyncio.Condition | None = None
        self.platform = platform or Platform()
        self.current: Snapshot | None = None
        self.reflectors: list[Reflector] = []
        self.builds = 0
        self._parse = ParsedResources()
        self._summary = ""
        self._stop = threading.Event()
        # Not among the kinds readiness waits for: a webhook that may not list ConfigMaps (an older RBAC) still
        # serves, and a ConfigMap not (yet) known only costs the envFrom check, which its own admission backs up.
        self.config_maps = Reflector(ConfigMapSummaries(kube), "v1", "ConfigMap", lambda: None)  # type: ignore[arg-type]

    def load(self) -> Snapshot:
        """The snapshot from what the reflectors hold now."""
        objects = [obj for reflector in self.reflectors for obj in reflector.items()]
        snapshot = snapshot_from_objects(
            objects,
            self.unassigned,
            platform=self.platform,
            parse=self._parse,
            config_maps=ConfigMapView(self.config_maps),
        )
        self._parse.forget_unseen()
        return snapshot

    async def holding(self, namespace: str) -> Snapshot | None:
        published = self._published
        if published is None:
            return self.current
        try:
            async with published:
                await asyncio.wait_for(
                    published.wait_for(lambda: self.current is not None and namespace in self.current.namespaces),
                    self.CATCH_UP_SECONDS,
                )
        except TimeoutError:
            pass
        return self.current

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        self._published = asyncio.Condition()

        def notify() -> None:
            loop.call_soon_threadsafe(changed.set)

        self.reflectors = [Reflector(self.kube, api_version, kind, notify) for api_version, kind in CONTEXT_SOURCES]
        for reflector in (*self.reflectors, self.config_maps):
            threading.Thread(
                target=reflector.run, args=(self._stop,), name=f"watch-{reflector.kind}", daemon=True
            ).start()
        try:
            while True:
                await changed.wait()
                changed.clear()
                if all(reflector.synced.is_set() for reflector in self.reflectors):
                    self._publish(await asyncio.to_thread(self.load))
                    async with self._published:
                        self._published.notify_all()
        finally:
            self._stop.set()

    def _publish(self, snapshot: Snapshot) -> None:
        summary = f"{len(snapshot.domains)} SecurityDomains over {len(snapshot.namespaces)} namespaces"
        if self.current is None or summary != self._summary:
            log.info("cluster state: %s", summary)
        self.current, self._summary = snapshot, summary
        self.builds += 1


class SecretFiles:
    """Mirrors the serving pair from the operator-managed Secret into files the TLS context loads.

    For clusters where the Secret is not mounted (or to pick up rotation before the kubelet syncs a mount).
    """

    def __init__(self, kube: Kube, namespace: str, name: str, folder: Path):
        self.kube, self.namespace, self.name, self.folder = kube, namespace, name, folder
        self.cert_file, self.key_file = folder / "tls.crt", folder / "tls.key"

    def sync(self) -> bool:
        secret = self.kube.get("v1", "Secret", self.name, self.namespace)
        data = (secret or {}).get("data") or {}
        if "tls.crt" not in data or "tls.key" not in data:
            raise ApiError(f"Secret {self.namespace}/{self.name} has no tls.crt and tls.key yet", 404)
        changed = False
        for filename, key in ((self.cert_file, "tls.crt"), (self.key_file, "tls.key")):
            content = base64.b64decode(data[key])
            if not filename.exists() or filename.read_bytes() != content:
                temporary = filename.with_suffix(".tmp")
                temporary.write_bytes(content)
                temporary.chmod(0o600)
                temporary.replace(filename)
                changed = True
        return changed

    def wait_for_pair(self, timeout: float, interval: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        """Block until the Secret holds the pair (a fresh install: the operator writes it a few seconds after both
        start), instead of exiting and being restarted; ApiError when it is still missing after `timeout`."""
        deadline = clock() + timeout
        while True:
            try:
                self.sync()
                return
            except ApiError as exc:
                if clock() >= deadline:
                    raise ApiError(
                        f"{exc} after waiting {timeout:.0f}s: is the operator running?", exc.status
                    ) from None
                log.info("waiting for the serving certificate: %s", exc)
            time.sleep(interval)

    async def keep_synced(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.sync)
            except ApiError as exc:
                log.warning("cannot refresh the serving certificate from the Secret: %s", exc)
