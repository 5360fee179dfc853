"""The sink's side of the cluster: canary writes, AuditPolicy status, anomaly events, retention (the signing key
Secret it may read is `iotsec.services.audit.signing_key_from_secret`).

Everything goes through `Kube` with field manager `iotsec-audit-sink`, so the sink's writes (canary nonce,
status fields it owns) never fight the operator's. The status patch carries the resourceVersion it read: a
concurrent operator write makes it fail with 409 and the next tick writes again.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

from iotsec.api.auditpolicy import AuditPolicySpec
from iotsec.api.common import API_VERSION
from iotsec.api.durations import parse_duration
from iotsec.audittrail.anomaly import AnomalyHit
from iotsec.audittrail.chain import EXPORTS
from iotsec.build import audit
from iotsec.build.audit import ready_condition, store_claim_name
from iotsec.k8s.kube import ApiError, Kube
from iotsec.model import conditions
from iotsec.model.time import parse_rfc3339, rfc3339
from iotsec.servers.auditsink.server import Sink

log = logging.getLogger(__name__)


def sink_status(sink: Sink, previous: list[dict[str, Any]] | None, generation: int | None) -> dict[str, Any]:
    """The AuditPolicy status fields the sink owns, with its conditions and the Ready they imply (pure)."""
    state, usage = sink.state, sink.usage
    broken = sink.pipeline_broken()
    own = [
        _pipeline_condition(sink, broken, generation),
        conditions.condition(
            audit.STORAGE_NEARLY_FULL,
            sink.nearly_full(),
            "AboveWarningLevel" if sink.nearly_full() else "BelowWarningLevel",
            f"audit store at {usage.percent}% of {usage.bytes_limit} bytes (warning at {sink.warn_at_percent}%)",
            generation,
            [audit.C_NOT_LOST],
        ),
        conditions.condition(
            audit.STORAGE_FULL,
            state.refusing,
            "RefusingBatches" if state.refusing else "Accepting",
            (
                "the last batch did not fit: the API server is buffering and retrying; export or enlarge the store"
                if state.refusing
                else f"{state.refused_batches} batches refused so far, none lost"
            ),
            generation,
            [audit.C_NOT_LOST],
        ),
    ]
    if state.last_verified is not None:
        own.append(
            conditions.condition(
                audit.CHAIN_INTACT,
                state.chain_break is None,
                "Verified" if state.chain_break is None else "ChainBroken",
                f"sealed segments verified {_iso(state.last_verified)}"
                if state.chain_break is None
                else f"verification found a break: {state.chain_break}",
                generation,
                [audit.C_PROTECTED],
            )
        )
    merged = conditions.merge_conditions(previous, own)
    merged = conditions.merge_conditions(merged, [ready_condition(merged, generation)])
    sealed = usage.last_sealed or {}
    return {
        "records": usage.records,
        "segments": usage.segments,
        "bytesUsed": usage.bytes_used,
        "bytesLimit": usage.bytes_limit,
        "percentUsed": usage.percent,
        "chainHead": usage.head or None,
        "chainHeadSeq": usage.head_seq,
        "lastSealedSegment": sealed.get("segment"),
        "lastSealed": sealed.get("sealedAt"),
        "lastCanarySeen": _iso(state.canary_seen),
        "lastVerified": _iso(state.last_verified),
        "lastExport": _iso(_last_export(sink)),
        "refusedBatches": state.refused_batches,
        "anomalies": [_hit_entry(hit) for hit in list(state.hits)[:32]],
        "conditions": merged,
    }


def _pipeline_condition(sink: Sink, broken: str | None, generation: int | None) -> dict[str, Any]:
    if broken:
        return conditions.condition(
            audit.PIPELINE_BROKEN, True, "CanaryMissing", broken, generation, [audit.C_NOT_LOST]
        )
    seen = sink.state.canary_seen
    message = f"last canary arrived {_iso(seen)}" if seen else "awaiting the first canary"
    reason = "CanaryArrived" if seen else "CanaryPending"
    return conditions.condition(audit.PIPELINE_BROKEN, False, reason, message, generation, [audit.C_NOT_LOST])


def _last_export(sink: Sink) -> datetime | None:
    path = sink.store.root / EXPORTS
    return datetime.fromtimestamp(path.stat().st_mtime, UTC) if path.exists() else None


def _hit_entry(hit: AnomalyHit) -> dict[str, Any]:
    return {
        "rule": hit.rule,
        "type": hit.type,
        "subject": hit.subject[:512],
        "count": hit.count,
        "firstSeen": _iso(hit.first_seen),
        "lastSeen": _iso(hit.last_seen),
        "severity": hit.severity,
    }


def _iso(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment else None


class Publisher:
    """Runs on the sink's housekeeping tick (in a worker thread)."""

    REPUBLISH_SECONDS = 60.0

    def __init__(
        self,
        kube: Kube,
        policy: str,
        namespace: str,
        sink: Sink,
        limit_override: int | None = None,
        generation: int | None = None,
    ) -> None:
        self.kube, self.policy, self.namespace, self.sink = kube, policy, namespace, sink
        self.limit_override = limit_override
        self._generation = generation  # of the spec the sink was configured with at start
        self._published: tuple[Any, ...] | None = None
        self._published_at = 0.0
        self.pending_hits: deque[AnomalyHit] = deque(maxlen=1000)
        self._canary_due = datetime.min.replace(tzinfo=UTC)
        self._reported_break: str | None = None

    def queue_hits(self, hits: list[AnomalyHit]) -> None:
        self.pending_hits.extend(hits)

    def tick(self) -> None:
        body = self.kube.get(API_VERSION, "AuditPolicy", self.policy)
        if body is None:
            log.warning("AuditPolicy %s not found; nothing to report to", self.policy)
            return
        spec = AuditPolicySpec.model_validate(body.get("spec") or {})
        generation = body["metadata"].get("generation")
        if generation != self._generation:
            self.sink.configure(spec, self.limit_override)
            log.info(
                "AuditPolicy %s changed (generation %s): settings and anomaly rules reloaded", self.policy, generation
            )
        self._generation = generation
        self._write_canary_if_due(spec)
        self._post_hits(body)
        self._post_chain_break(body)
        self._post_retention(body)
        self._backed_up_before(spec)
        self._publish(body)

    def _write_canary_if_due(self, spec: AuditPolicySpec) -> None:
        if self.sink.canary is None or datetime.now(UTC) < self._canary_due:
            return
        nonce = secrets.token_hex(12)
        self.sink.canary_written(nonce)
        self.kube.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": self.sink.canary.name, "namespace": self.sink.canary.namespace},
                "data": {"nonce": nonce, "writtenAt": _iso(datetime.now(UTC)) or ""},
            }
        )
        self._canary_due = datetime.now(UTC) + parse_duration(spec.sink.canary.interval)

    def _post_hits(self, body: dict[str, Any]) -> None:
        while self.pending_hits:
            hit = self.pending_hits.popleft()
            kind = "Warning" if hit.severity != "info" else "Normal"
            self.kube.post_event(body, kind, f"Anomaly{hit.type}", hit.message)

    def _post_retention(self, body: dict[str, Any]) -> None:
        deleted = []
        while self.sink.state.retention_deleted:
            deleted.append(self.sink.state.retention_deleted.popleft())
        if deleted:
            message = f"retention deleted {len(deleted)} exported or backed-up segments: {', '.join(deleted)}"
            self.kube.post_event(body, "Normal", "RetentionDeleted", message)

    def _post_chain_break(self, body: dict[str, Any]) -> None:
        found = self.sink.state.chain_break
        if found and found != self._reported_break:
            self.kube.post_event(body, "Warning", "ChainBroken", f"audit chain verification failed: {found}")
        self._reported_break = found

    def _backed_up_before(self, spec: AuditPolicySpec) -> None:
        """Segments sealed before the referenced BackupPolicy's last successful run started are backed up
        (X1369-9.6.4-3), and only if that policy names the store claim."""
        ref = spec.backup_policy_ref
        policy = None
        if ref is not None:
            policy = self.kube.get(API_VERSION, "BackupPolicy", ref.name, ref.namespace or self.namespace)
        self.sink.backed_up_before = backed_up_before(policy, store_claim_name(self.policy))

    def _publish(self, body: dict[str, Any]) -> None:
        """Write when something an operator acts on changed, else at most once a minute: each status write is
        itself an audited iotsec.io write, so writing every tick would feed the chain it reports on."""
        meta = body["metadata"]
        status = body.get("status") or {}
        patch = sink_status(self.sink, status.get("conditions"), meta.get("generation"))
        meaningful = (
            tuple((c["type"], c["status"], c["reason"]) for c in patch["conditions"]),
            tuple((a["rule"], a["subject"], a["lastSeen"]) for a in patch["anomalies"]),
            patch["refusedBatches"],
            patch["lastVerified"],
            patch["lastExport"],
        )
        if meaningful == self._published and time.monotonic() - self._published_at < self.REPUBLISH_SECONDS:
            return
        try:
            self.kube.patch_status(
                API_VERSION, "AuditPolicy", self.policy, patch, resource_version=meta.get("resourceVersion")
            )
        except ApiError as exc:
            if exc.status != 409:
                raise
            log.info("AuditPolicy %s changed while reporting; reporting again next tick", self.policy)
            return
        self._published, self._published_at = meaningful, time.monotonic()


def backed_up_before(policy: dict[str, Any] | None, claim: str) -> datetime | None:
    """When the last successful backup of the store claim started, or None (pure): nothing counts as backed
    up unless the policy names the claim and reports both its last success and how long that run took."""
    if policy is None or claim not in ((policy.get("spec") or {}).get("pvcNames") or []):
        return None
    status = policy.get("status") or {}
    success, duration = status.get("lastSuccess"), status.get("lastDurationSeconds")
    if not success or duration is None:
        return None
    return parse_rfc3339(success, "lastSuccess") - timedelta(seconds=float(duration))
