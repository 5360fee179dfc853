"""kopf wiring for BackupPolicy: password, configuration and CronJobs applied; outcomes read back from the Jobs.

The operator learns what happened from the Jobs it owns (their status) and from the runner's result, which each
Job's container writes as JSON to its termination message. It never guesses: no finished Job, no condition.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from typing import Any

import kopf
from prometheus_client import Counter, Gauge

from iotsec.api.backuppolicy import BackupPolicySpec
from iotsec.build import backup as builder
from iotsec.controllers import metrics
from iotsec.controllers.reconciler import (
    Logger,
    api_failed,
    level_triggered,
    live_resource,
    not_ready,
    parsed_spec,
    write_status,
)
from iotsec.controllers.runtime import config, kube
from iotsec.k8s.kube import ApiError, Kube, Owner
from iotsec.model import conditions, selectors
from iotsec.model.labels import BACKUP_JOB_LABEL, OWNER_KIND, OWNER_NAME
from iotsec.model.time import parse_rfc3339

KIND = builder.KIND
PLURAL = "backuppolicies"
CRONJOB = ("batch/v1", "CronJob")
CONDITION_OF = {
    "init": "RepositoriesReady",
    "backup": "BackupSucceeded",
    "verify": "Verified",
    "drill": "RestoreVerified",
}
CONTROLS_OF = {
    "init": ["X1369-9.2-1", "X1369-9.6.6-1"],
    "backup": ["X1369-9.2-1", "X1369-9.2.4-4"],
    "verify": ["X1369-9.2.4-3"],
    "drill": ["X1369-9.6.1-2", "X1369-9.6.6-2"],
}
LAST_SUCCESS = Gauge(
    "iotsec_backup_last_success_timestamp_seconds",
    "Completion time of the last successful backup.",
    ["namespace", "policy"],
)
DURATION = Gauge("iotsec_backup_duration_seconds", "Duration of the last finished backup Job.", ["namespace", "policy"])
FAILURES = Counter(
    "iotsec_backup_failures_total", "Failed backup, verify and drill Jobs.", ["namespace", "policy", "job"]
)
_counted: set[str] = set()


@kopf.on.delete("iotsec.io", "v1alpha1", PLURAL)
def on_delete(name: str, namespace: str, body: kopf.Body, **_: Any) -> None:
    """Retain (default) keeps the password, so existing backups stay readable; Delete destroys it on purpose."""
    spec = body.get("spec") or {}
    if spec.get("deletionPolicy") == "Delete" and not (spec.get("encryption") or {}).get("passwordSecretRef"):
        kube().delete("v1", "Secret", builder.password_secret_name(name), namespace)
        kopf.warn(
            body,
            reason="PasswordDeleted",
            message="deletionPolicy Delete: the repository password is gone; its backups can no longer be read",
        )
    else:
        kopf.event(
            body,
            type="Normal",
            reason="Retained",
            message="policy deleted; the repository password and every backup are kept",
        )
    for gauge in (LAST_SUCCESS, DURATION):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)
    metrics.forget(KIND, f"{namespace}/{name}")


@kopf.on.event("batch", "v1", "jobs", labels={OWNER_KIND: KIND})
def on_job(type: str | None, labels: dict[str, str], namespace: str, **_: Any) -> None:
    """A Job of a policy changed: read its outcome now rather than at the next resync."""
    if type is not None and labels.get(OWNER_NAME):
        reconcile(labels[OWNER_NAME], namespace)


def reconcile(
    name: str, namespace: str | None, logger: Logger | None = None, seen: dict[str, Any] | None = None
) -> None:
    api = kube()
    assert namespace is not None
    with live_resource(api, KIND, name, namespace, logger=logger, seen=seen) as (body, outcome):
        if body is None:
            return
        spec: BackupPolicySpec = parsed_spec(api, KIND, body, outcome)
        try:
            scheduled = _apply(api, body, spec)
            found = _outcomes(api, name, namespace)
        except ApiError as exc:
            if not exc.transient:
                not_ready(api, KIND, body, "ApplyFailed", str(exc))
            api_failed(exc)
        ready = _write_status(api, body, spec, scheduled, found)
        metrics.RESOURCE_READY.labels(KIND, f"{namespace}/{name}").set(1 if ready else 0)
        outcome.did(
            scheduled[1],
            *(f"last {kind}: {'ok' if o['succeeded'] else 'FAILED'} ({o['job']})" for kind, o in sorted(found.items())),
            f"Ready={ready}",
        )
        outcome.succeeded()


def _claims(api: Kube, namespace: str, spec: BackupPolicySpec) -> list[str]:
    claims = set(spec.pvc_names or ())
    if spec.pvc_selector is not None:
        for claim in api.list("v1", "PersistentVolumeClaim", namespace):
            if selectors.matches(spec.pvc_selector, claim["metadata"].get("labels") or {}):
                claims.add(claim["metadata"]["name"])
    return sorted(claims)


def _apply(api: Kube, body: dict[str, Any], spec: BackupPolicySpec) -> tuple[bool, str]:
    """Apply everything; return whether the CronJobs could be scheduled (and why not)."""
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    plan = builder.plan_backup(name, namespace, spec, _claims(api, namespace, spec), config().job_image)
    owner = Owner.of(body)
    scheduled, why = True, f"{len(plan.claims)} claims, schedule {spec.schedule}"
    for obj in plan.objects:
        if obj["kind"] == "Secret":
            _ensure_password(api, obj)
        elif obj["kind"] == "Job":
            _initialise_repositories(api, body, obj, spec, owner)
        elif obj["kind"] == "CronJob":
            try:
                api.apply(obj, owner)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                scheduled, why = False, "this API server does not serve batch/v1 CronJob (Kubernetes 1.21+ does)"
        else:
            api.apply(obj, owner)
    if scheduled:
        keep = {(namespace, o["metadata"]["name"]) for o in plan.objects if o["kind"] == "CronJob"}
        api.prune(*CRONJOB, KIND, name, keep)
    return scheduled, why


def _initialise_repositories(
    api: Kube, body: dict[str, Any], job: dict[str, Any], spec: BackupPolicySpec, owner: Owner
) -> None:
    """One init Job per set of targets, created (a Job's template cannot change, so never applied over) once and
    never re-run by a resync; a superseded one goes."""
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    if api.create(job, owner):
        kopf.info(
            body,
            reason="InitialisingRepositories",
            message=f"Job {job['metadata']['name']} creates the"
            f" repositories that do not exist yet: {', '.join(t.name for t in spec.targets)}",
        )
    selector = f"{OWNER_KIND}={KIND},{OWNER_NAME}={name},{BACKUP_JOB_LABEL}=init"
    for found in api.list("batch/v1", "Job", namespace, label_selector=selector):
        if found["metadata"]["name"] != job["metadata"]["name"]:
            api.delete("batch/v1", "Job", found["metadata"]["name"], namespace)


def _ensure_password(api: Kube, obj: dict[str, Any]) -> None:
    """Generated once (256 bits), never rotated in place: every existing backup is encrypted with it."""
    meta = obj["metadata"]
    if api.get("v1", "Secret", meta["name"], meta["namespace"]) is not None:
        return
    secret = {key: value for key, value in obj.items() if key != "stringData"}
    secret["stringData"] = {"password": secrets.token_urlsafe(32)}
    api.apply(secret)  # no owner reference: the password must outlive the policy unless Delete says otherwise


def _outcomes(api: Kube, name: str, namespace: str) -> dict[str, dict[str, Any]]:
    """The latest finished Job of each kind (backup, verify, drill), with the runner's result when readable."""
    jobs = api.list("batch/v1", "Job", namespace, label_selector=f"{OWNER_KIND}={KIND},{OWNER_NAME}={name}")
    latest: dict[str, dict[str, Any]] = {}
    for job in jobs:
        kind = (job["metadata"].get("labels") or {}).get(BACKUP_JOB_LABEL)
        finished = _finished(job)
        if kind not in CONDITION_OF or finished is None:
            continue
        if kind not in latest or finished["time"] > latest[kind]["time"]:
            latest[kind] = {
                **finished,
                "job": job["metadata"]["name"],
                "uid": job["metadata"]["uid"],
                "started": (job.get("status") or {}).get("startTime"),
            }
    for kind, found in latest.items():
        found["result"] = _result(api, namespace, found["job"])
        if found["result"] is not None and not found["result"].get("succeeded", True):
            found["succeeded"] = False  # the runner's strict rules outrank a zero exit code
        if not found["succeeded"] and found["uid"] not in _counted:
            _counted.add(found["uid"])
            FAILURES.labels(namespace, name, kind).inc()
    return latest


def _finished(job: dict[str, Any]) -> dict[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or ():
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            when = (
                (
                    job["status"].get("completionTime")
                    if condition["type"] == "Complete"
                    else condition.get("lastTransitionTime")
                )
                or condition.get("lastTransitionTime")
                or ""
            )
            return {
                "succeeded": condition["type"] == "Complete",
                "time": when,
                "reason": condition.get("reason") or condition["type"],
                "message": condition.get("message", ""),
            }
    return None


def _result(api: Kube, namespace: str, job: str) -> dict[str, Any] | None:
    for pod in api.list("v1", "Pod", namespace, label_selector=f"job-name={job}"):
        for status in (pod.get("status") or {}).get("containerStatuses") or ():
            message = ((status.get("state") or {}).get("terminated") or {}).get("message")
            if message:
                try:
                    return json.loads(message)
                except ValueError:
                    return None
    return None


def _already_reported(body: dict[str, Any], condition_type: str, job: str) -> bool:
    """One Warning per failed Job, not one per resync: the condition already names this Job's failure."""
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == condition_type:
            return condition.get("status") == "False" and f"Job {job} failed" in condition.get("message", "")
    return False


def _write_status(
    api: Kube,
    body: dict[str, Any],
    spec: BackupPolicySpec,
    scheduled: tuple[bool, str],
    found: dict[str, dict[str, Any]],
) -> bool:
    generation = body["metadata"].get("generation")
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    ready, why = scheduled
    reason = ("Suspended" if spec.suspend else "Scheduled") if ready else "CronJobUnsupported"
    entries = [conditions.condition("Ready", ready, reason, why, generation, ["X1369-9.2-1"])]
    fields: dict[str, Any] = {"observedGeneration": generation}
    for kind, condition_type in CONDITION_OF.items():
        outcome = found.get(kind)
        if outcome is None:
            continue
        errors = "; ".join((outcome.get("result") or {}).get("errors") or []) or outcome["message"]
        message = f"Job {outcome['job']} {'succeeded' if outcome['succeeded'] else 'failed'} at {outcome['time']}"
        entries.append(
            conditions.condition(
                condition_type,
                outcome["succeeded"],
                "Succeeded" if outcome["succeeded"] else "Failed",
                message + (f": {errors}" if errors and not outcome["succeeded"] else ""),
                generation,
                CONTROLS_OF[kind],
            )
        )
        if not outcome["succeeded"] and not _already_reported(body, condition_type, outcome["job"]):
            kopf.warn(body, reason=f"{condition_type}Failed", message=message + (f": {errors}" if errors else ""))
    backup = found.get("backup")
    if backup:
        fields["lastRun"] = backup["started"] or backup["time"]
        if backup["succeeded"]:
            fields["lastSuccess"] = backup["time"]
            LAST_SUCCESS.labels(namespace, name).set(_epoch(backup["time"]))
        targets = (backup.get("result") or {}).get("targets") or []
        if targets:
            fields["targets"] = [
                {"name": t["name"], "snapshots": int(t.get("snapshots") or 0), "bytes": int(t.get("bytes") or 0)}
                for t in targets
            ]
        duration = (backup.get("result") or {}).get("duration_seconds")
        if duration is not None:
            DURATION.labels(namespace, name).set(float(duration))
            fields["lastDurationSeconds"] = float(duration)
    if found.get("verify", {}).get("succeeded"):
        fields["lastVerified"] = found["verify"]["time"]
    restore = (found.get("drill", {}).get("result") or {}).get("restore_seconds")
    if restore is not None:
        fields["lastRestoreSeconds"] = float(restore)
    write_status(api, KIND, body, entries, fields)
    return ready


def _epoch(stamp: str) -> float:
    return parse_rfc3339(stamp).timestamp()


level_triggered(KIND, PLURAL, reconcile, namespaced=True)
