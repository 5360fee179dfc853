"""The cluster state the webhook decides with, refreshed from the API server in the background."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iotsec.admission.context import Snapshot
from iotsec.admission.snapshot import snapshot_from_objects
from iotsec.k8s.kube import ApiError, Kube
from iotsec.model.platform import Platform
from iotsec.servers.webhook.server import SnapshotSource

log = logging.getLogger(__name__)
SOURCES = (
    ("iotsec.io/v1alpha1", "SecurityDomain"),
    ("iotsec.io/v1alpha1", "AuditPolicy"),
    ("iotsec.io/v1alpha1", "TenantIsolation"),
    ("iotsec.io/v1alpha1", "BackupPolicy"),
    ("v1", "Namespace"),
    ("storage.k8s.io/v1", "StorageClass"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
)


class ClusterSnapshot(SnapshotSource):
    """Lists what the policy needs every `interval` seconds; keeps the last good snapshot when the API fails."""

    def __init__(
        self, kube: Kube, interval: float = 10.0, unassigned: str = "enforce", platform: Platform | None = None
    ):
        self.kube, self.interval, self.unassigned = kube, interval, unassigned
        self.platform = platform or Platform()
        self.current: Snapshot | None = None
        self._summary = ""

    def load(self) -> Snapshot:
        objects: list[dict[str, Any]] = []
        for api_version, kind in SOURCES:
            objects += self.kube.list(api_version, kind)
        return snapshot_from_objects(objects, self.unassigned, platform=self.platform)

    async def run(self) -> None:
        while True:
            try:
                snapshot = await asyncio.to_thread(self.load)
                summary = f"{len(snapshot.domains)} SecurityDomains over {len(snapshot.namespaces)} namespaces"
                if self.current is None or summary != self._summary:
                    log.info("cluster state: %s", summary)
                self.current, self._summary = snapshot, summary
            except ApiError as exc:
                log.warning("cannot refresh cluster state (keeping the last one): %s", exc)
            await asyncio.sleep(self.interval)


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
