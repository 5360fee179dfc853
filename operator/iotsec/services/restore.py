"""`iotsec restore POLICY`: a one-off restore Job into a new claim, or over an existing one only when asked."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from iotsec.api.backuppolicy import BackupPolicySpec
from iotsec.api.validation import parse_resource
from iotsec.build import backup as builder
from iotsec.k8s.kube import ApiError, Kube, Owner
from iotsec.model.labels import BACKUP_JOB_LABEL
from iotsec.model.platform import Image


class RestoreError(Exception):
    """A restore the CLI refuses or cannot start; the message says why."""


def _scheduled_image(kube: Kube, policy: str, namespace: str) -> Image:
    """The image the operator runs this policy's Jobs with (its CronJobs', else its repository init Job's, which
    exists also where batch/v1 CronJob is not served): a restore must read what that image wrote."""
    selector = f"iotsec.io/owner-kind=BackupPolicy,iotsec.io/owner-name={policy}"
    for api_version in ("batch/v1", "batch/v1beta1"):
        try:
            cron_jobs = kube.list(api_version, "CronJob", namespace, label_selector=selector)
        except ApiError as exc:
            if exc.status == 404:
                continue  # a version this server does not serve
            raise
        for cron_job in cron_jobs:
            return _image_of(cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    for job in kube.list("batch/v1", "Job", namespace, label_selector=f"{selector},{BACKUP_JOB_LABEL}=init"):
        return _image_of(job["spec"]["template"]["spec"])
    raise RestoreError(
        f"BackupPolicy {namespace}/{policy} has no CronJob or init Job yet: the operator has not reconciled it, so"
        " the image that wrote its snapshots is unknown; name it with --image"
    )


def _image_of(pod: dict[str, Any]) -> Image:
    container = pod["containers"][0]
    return Image(container["image"], container.get("imagePullPolicy") or "IfNotPresent")


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
    image: str | None = None,
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
        policy,
        namespace,
        spec,
        claim,
        snapshot,
        f"iotsec-restore-{policy}-{stamp}",
        source_claim=source,
        image=Image(image) if image else _scheduled_image(kube, policy, namespace),
    )
    kube.apply(job, Owner.of(body))
    return {
        "job": job["metadata"]["name"],
        "claim": claim,
        "snapshot": snapshot,
        "source": source,
        "overwrite": str(existing is not None).lower(),
    }
