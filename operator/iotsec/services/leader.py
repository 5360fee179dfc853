"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it: with several operator
replicas exactly one reconciles; the others stand by and take over when the leader's lease runs out.

- A candidate holds the lease by writing its identity and `renewTime` with a compare-and-swap (Kube.replace at
  the resourceVersion it read), so two candidates never both win the same record.
- Expiry is judged by the candidate's own monotonic clock, from when it last saw the record change (never by
  the `renewTime` written by another machine's clock): a record unchanged for `duration` seconds is free.
- A leader that has not renewed within `renew_deadline` stops acting at once (the caller exits the process):
  by then another candidate may hold the lease.
- A leader that stops gracefully releases the lease (empty holder), and a standby takes over at its next try.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from iotsec.k8s.kube import ApiError, Kube
from iotsec.model.time import rfc3339

log = logging.getLogger(__name__)
API_VERSION = "coordination.k8s.io/v1"


@dataclass(frozen=True)
class Timing:
    duration: float = 8.0  # leaseDurationSeconds: how long a record unchanged counts as held
    renew_deadline: float = 6.0  # a leader that could not renew for this long stops acting
    retry: float = 1.0  # how often the leader renews and a standby tries

    def __post_init__(self) -> None:
        if not 0 < self.retry < self.renew_deadline < self.duration:
            raise ValueError("leader election needs 0 < retry < renew deadline < lease duration")


def identity() -> str:
    """This process: the pod's name (the hostname) and a random part, so a restarted container is a new holder."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _micro(moment: datetime) -> str:
    return rfc3339(moment, "microseconds")  # a Lease's times are MicroTime


class Elector:
    def __init__(
        self,
        api: Kube,
        namespace: str,
        name: str,
        holder: str,
        timing: Timing = Timing(),
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.api, self.namespace, self.name, self.holder = api, namespace, name, holder
        self.timing, self.clock, self.now = timing, clock, now
        self._seen: tuple[Any, ...] | None = None  # the record as last read (holder, renewTime, version)
        self._seen_at = 0.0
        self.renewed_at: float | None = None  # when this candidate last wrote the record as its holder

    # ------------------------------------------------------------------ one attempt

    def try_hold(self) -> bool:
        """Acquire the lease or renew it; True while this candidate holds it. Never raises for API errors."""
        try:
            return self._try_hold()
        except ApiError as exc:
            log.warning("leader election: lease %s/%s: %s", self.namespace, self.name, exc)
            return False

    def _try_hold(self) -> bool:
        lease = self.api.get(API_VERSION, "Lease", self.name, self.namespace)
        if lease is None:
            return self._write(self._created(), acquired=True, create=True)
        spec = lease.get("spec") or {}
        current = spec.get("holderIdentity") or ""
        self._observe(spec, lease)
        if current and current != self.holder and not self._expired():
            return False
        acquired = current != self.holder
        now = _micro(self.now())
        spec = {
            **spec,
            "holderIdentity": self.holder,
            "leaseDurationSeconds": int(self.timing.duration),
            "renewTime": now,
        }
        if acquired:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if current else 0)
        return self._write({**lease, "spec": spec}, acquired=acquired)

    def _created(self) -> dict[str, Any]:
        now = _micro(self.now())
        return {
            "apiVersion": API_VERSION,
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.holder,
                "leaseDurationSeconds": int(self.timing.duration),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }

    def _write(self, lease: dict[str, Any], acquired: bool, create: bool = False) -> bool:
        written = (lease if self.api.create(lease) else None) if create else self.api.replace(lease)
        if written is None:
            return False  # another candidate wrote first
        self.renewed_at = self.clock()
        self._observe(written.get("spec") or {}, written)
        if acquired:
            log.info("leader election: %s now holds lease %s/%s", self.holder, self.namespace, self.name)
        return True

    def _observe(self, spec: dict[str, Any], lease: dict[str, Any]) -> None:
        record = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            (lease.get("metadata") or {}).get("resourceVersion"),
        )
        if record != self._seen:
            self._seen, self._seen_at = record, self.clock()

    def _expired(self) -> bool:
        return self.clock() > self._seen_at + self.timing.duration

    # ------------------------------------------------------------------ the leader's side

    def lost(self) -> bool:
        """Whether a leader has gone `renew_deadline` without renewing: it must stop acting now."""
        return self.renewed_at is None or self.clock() - self.renewed_at > self.timing.renew_deadline

    def release(self) -> None:
        """Give the lease up (a graceful stop), so a standby need not wait for it to run out."""
        try:
            lease = self.api.get(API_VERSION, "Lease", self.name, self.namespace)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.holder:
                return
            spec = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": _micro(self.now())}
            if self.api.replace({**lease, "spec": spec}) is not None:
                log.info("leader election: %s released lease %s/%s", self.holder, self.namespace, self.name)
        except ApiError as exc:
            log.warning("leader election: could not release lease %s/%s: %s", self.namespace, self.name, exc)
