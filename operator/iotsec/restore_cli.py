"""`iotsec restore POLICY`: a one-off restore Job into a new claim, or over an existing one only when asked."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from iotsec.api.backuppolicy import BackupPolicySpec
from iotsec.api.validation import parse_resource
from iotsec.desired import backup as builder
from iotsec.kube import Kube, Owner


class RestoreError(Exception):
    """A restore the CLI refuses or cannot start; the message says why."""


def restore(
    kube: Kube,
    policy: str,
    namespace: str,
    snapshot: str,
    target: str | None,
    overwrite: bool,
    size: str,
    storage_class: str | None,
    source: str | None = None,
) -> dict[str, str]:
    source = source or target
    if source is None:
        raise RestoreError("name the backed-up claim to restore with --claim (its files go to the new claim's root)")
    body = kube.get("iotsec.io/v1alpha1", "BackupPolicy", policy, namespace)
    if body is None:
        raise RestoreError(f"BackupPolicy {namespace}/{policy} not found")
    spec: BackupPolicySpec = parse_resource(body).spec  # type: ignore[assignment]
    # Random suffix: two restores within one second must not meet on one (immutable) Job.
    stamp = f"{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(2)}"
    claim = target or f"{policy}-restore-{stamp}"
    existing = kube.get("v1", "PersistentVolumeClaim", claim, namespace)
    if existing is not None and not overwrite:
        raise RestoreError(
            f"claim {namespace}/{claim} exists: restoring over live data needs --overwrite "
            "(or restore into a new claim by leaving out --target-pvc)"
        )
    if existing is None:
        kube.apply(builder.restore_claim(claim, namespace, size, storage_class))
    job = builder.restore_job(
        policy, namespace, spec, claim, snapshot, f"iotsec-restore-{policy}-{stamp}", source_claim=source
    )
    kube.apply(job, Owner.of(body))
    return {
        "job": job["metadata"]["name"],
        "claim": claim,
        "snapshot": snapshot,
        "source": source,
        "overwrite": str(existing is not None).lower(),
    }
