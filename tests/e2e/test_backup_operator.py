"""BackupPolicy on a real API server: password, configuration and schedules applied; Job outcomes in status."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from iotsec.api.backuppolicy import BackupPolicySpec
from iotsec.build.backup import plan_backup
from tests.e2e.conftest import eventually
from tests.e2e.processes import Operator

SUFFIX = uuid.uuid4().hex[:5]
NAMESPACE, POLICY = f"bk-{SUFFIX}", "tsdb"
SPEC = {
    "schedule": "0 2 * * *",
    "pvcSelector": {"matchLabels": {"app": "tsdb"}},
    "targets": [
        {"name": "primary", "repository": "/backups/primary", "claimName": "repository"},
        {"name": "offsite", "role": "offsite", "repository": "sftp:backup@vault.example.net:/srv/tsdb"},
    ],
}


@pytest.fixture(scope="module")
def policy(crds, api_client, core, tmp_path_factory) -> Iterator[dict[str, Any]]:
    core.create_namespace({"metadata": {"name": NAMESPACE, "labels": {"kubernetes.io/metadata.name": NAMESPACE}}})
    core.create_namespaced_persistent_volume_claim(
        NAMESPACE,
        {
            "metadata": {"name": "data", "labels": {"app": "tsdb"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    operator = Operator(tmp_path_factory.mktemp("backup") / "operator.log")
    operator.start()
    custom = client.CustomObjectsApi(api_client)
    body = {"apiVersion": "iotsec.io/v1alpha1", "kind": "BackupPolicy", "metadata": {"name": POLICY}, "spec": SPEC}
    custom.create_namespaced_custom_object("iotsec.io", "v1alpha1", NAMESPACE, "backuppolicies", body)
    yield custom.get_namespaced_custom_object("iotsec.io", "v1alpha1", NAMESPACE, "backuppolicies", POLICY)
    custom.delete_namespaced_custom_object("iotsec.io", "v1alpha1", NAMESPACE, "backuppolicies", POLICY)
    eventually(lambda: _gone(custom), timeout=30, what="policy deleted")
    operator.stop()
    core.delete_namespace(NAMESPACE)


def _gone(custom) -> bool:
    try:
        custom.get_namespaced_custom_object("iotsec.io", "v1alpha1", NAMESPACE, "backuppolicies", POLICY)
    except ApiException as exc:
        return exc.status == 404
    return False


def _status(api_client) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api_client)
    return (
        custom.get_namespaced_custom_object("iotsec.io", "v1alpha1", NAMESPACE, "backuppolicies", POLICY).get("status")
        or {}
    )


def _condition(api_client, kind: str) -> dict[str, Any]:
    return next((c for c in _status(api_client).get("conditions", []) if c["type"] == kind), {})


def _eventually_condition(api_client, kind: str, status: str, timeout: float) -> dict[str, Any]:
    """Wait until condition `kind` has `status`; return it."""

    def reached() -> dict[str, Any] | None:
        condition = _condition(api_client, kind)
        return condition if condition.get("status") == status else None

    return eventually(reached, timeout=timeout, what=f"{kind}={status}")


def _secret(core: client.CoreV1Api, name: str) -> Any:
    try:
        return core.read_namespaced_secret(name, NAMESPACE)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_password_configuration_and_account_are_applied(policy, core, api_client):
    secret = eventually(lambda: _secret(core, f"iotsec-backup-{POLICY}-password"), timeout=60, what="password")
    assert len(base64.b64decode(secret.data["password"])) >= 32
    assert secret.metadata.owner_references is None, "the password outlives the policy"
    config_map = eventually(  # applied after the password: a slow API server shows the gap
        lambda: (
            core.list_namespaced_config_map(NAMESPACE, field_selector=f"metadata.name=iotsec-backup-{POLICY}").items
        ),
        timeout=30,
        what="runner configuration",
    )[0]
    config = json.loads(config_map.data["config.json"])
    assert config["paths"] == ["/data/data"], "the selector found the claim"
    assert [t["role"] for t in config["targets"]] == ["primary", "offsite"]
    account = core.read_namespaced_service_account(f"iotsec-backup-{POLICY}", NAMESPACE)
    assert account.automount_service_account_token is False
    egress = eventually(
        lambda: (
            client.NetworkingV1Api(api_client)
            .list_namespaced_network_policy(NAMESPACE, field_selector=f"metadata.name=iotsec-backup-{POLICY}")
            .items
        ),
        timeout=30,
        what="the Jobs' egress policy",
    )[0]
    assert egress.spec.pod_selector.match_labels == {
        "iotsec.io/owner-kind": "BackupPolicy",
        "iotsec.io/owner-name": POLICY,
    }
    assert egress.metadata.owner_references[0].name == POLICY, "it goes with the policy"


def test_schedules_or_a_clear_reason_why_not(policy, api_client):
    ready = eventually(lambda: _condition(api_client, "Ready"), timeout=60, what="Ready condition")
    served = any(r.name == "cronjobs" for r in client.BatchV1Api(api_client).get_api_resources().resources)
    if served:
        assert ready["status"] == "True"
        assert ready["reason"] == "Scheduled"
    else:
        assert ready["status"] == "False"
        assert ready["reason"] == "CronJobUnsupported"
        assert "batch/v1 CronJob" in ready["message"]


def _job_from_the_schedule(name: str, schedule: str = "backup", spec: dict[str, Any] = SPEC) -> dict[str, Any]:
    """The Job the `schedule` CronJob would create (1.20 cannot create one from a batch/v1 CronJob)."""
    policy = BackupPolicySpec.model_validate(spec)
    cron = next(
        o
        for o in plan_backup(POLICY, NAMESPACE, policy, ["data"]).objects
        if o["kind"] == "CronJob" and o["metadata"]["name"] == f"iotsec-{schedule}-{POLICY}"
    )
    template = copy.deepcopy(cron["spec"]["jobTemplate"])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {**template["metadata"], "name": name},
        "spec": template["spec"],
    }


def _finish(batch: client.BatchV1Api, name: str, succeeded: bool, when: datetime) -> None:
    """Mark a Job finished as a kubelet-less cluster never will. The job controller rewrites the status on its
    first sync, so wait for that, then patch, and make sure the finished state stuck."""
    eventually(
        lambda: batch.read_namespaced_job(name, NAMESPACE).status.active,
        timeout=30,
        what="the job controller's first sync",
    )
    stamp = when.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    condition = {
        "type": "Complete" if succeeded else "Failed",
        "status": "True",
        "lastTransitionTime": stamp,
        "lastProbeTime": stamp,
        "reason": "Test" if succeeded else "BackoffLimitExceeded",
    }
    status: dict[str, Any] = {"conditions": [condition], "startTime": stamp, "active": 0}
    status.update({"completionTime": stamp, "succeeded": 1} if succeeded else {"failed": 1})

    def finished() -> bool:
        job = batch.read_namespaced_job(name, NAMESPACE)
        if not job.status.conditions:
            batch.patch_namespaced_job_status(name, NAMESPACE, {"status": status})
            return False
        return True

    eventually(finished, timeout=30, interval=1.0, what=f"Job {name} marked finished")


def test_a_finished_job_lands_in_status(policy, api_client):
    batch = client.BatchV1Api(api_client)
    batch.create_namespaced_job(NAMESPACE, _job_from_the_schedule("backup-ok"))
    done = datetime.now(UTC) - timedelta(minutes=5)
    _finish(batch, "backup-ok", True, done)
    condition = _eventually_condition(api_client, "BackupSucceeded", "True", timeout=60)
    assert "backup-ok" in condition["message"]
    assert _status(api_client)["lastSuccess"] == done.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def test_a_failed_job_turns_the_condition_false_with_an_event(policy, api_client, core):
    batch = client.BatchV1Api(api_client)
    batch.create_namespaced_job(NAMESPACE, _job_from_the_schedule("backup-failed"))
    _finish(batch, "backup-failed", False, datetime.now(UTC))
    condition = _eventually_condition(api_client, "BackupSucceeded", "False", timeout=60)
    assert "backup-failed failed" in condition["message"]
    assert _status(api_client)["lastSuccess"], "the last success is still reported"

    def warned() -> bool:
        events = core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={POLICY}").items
        return any(e.type == "Warning" and e.reason == "BackupSucceededFailed" for e in events)

    eventually(warned, timeout=30, what="a Warning event")


def test_restore_into_a_new_claim_and_never_over_a_live_one_by_accident(policy, core, api_client):
    import subprocess
    import sys

    def restore(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "iotsec", "restore", POLICY, "-n", NAMESPACE, *extra],
            capture_output=True,
            text=True,
            check=False,
        )

    refused = restore("--target-pvc", "data")
    assert refused.returncode == 1
    assert "needs --overwrite" in refused.stderr
    unnamed = restore("--size", "2Gi")
    assert unnamed.returncode == 1
    assert "--claim" in unnamed.stderr
    if not any(r.name == "cronjobs" for r in client.BatchV1Api(api_client).get_api_resources().resources):
        implied = restore("--claim", "data", "--size", "2Gi")  # no CronJob: the init Job names the operator's image
        assert implied.returncode == 0, implied.stderr
        batch = client.BatchV1Api(api_client)
        job = batch.read_namespaced_job(json.loads(implied.stdout)["job"], NAMESPACE)
        selector = f"iotsec.io/owner-name={POLICY},iotsec.io/backup-job=init"
        (init,) = batch.list_namespaced_job(NAMESPACE, label_selector=selector).items
        assert job.spec.template.spec.containers[0].image == init.spec.template.spec.containers[0].image
    started = restore("--claim", "data", "--size", "2Gi", "--image", "localhost/testenv/iotsec:e2e")
    assert started.returncode == 0, started.stderr
    result = json.loads(started.stdout)
    claim = core.read_namespaced_persistent_volume_claim(result["claim"], NAMESPACE)
    assert claim.spec.resources.requests["storage"] == "2Gi"
    job = client.BatchV1Api(api_client).read_namespaced_job(result["job"], NAMESPACE)
    mounts = {m.name: m.mount_path for m in job.spec.template.spec.containers[0].volume_mounts}
    assert mounts["target"] == "/restore/data/data"
    assert job.spec.template.spec.volumes[-2].persistent_volume_claim.claim_name == result["claim"]
    assert job.metadata.owner_references[0].name == POLICY
    assert job.metadata.labels["iotsec.io/backup-job"] == "restore"
    assert job.spec.template.spec.containers[0].image == "localhost/testenv/iotsec:e2e", "never the placeholder"
    overwrite = restore("--target-pvc", "data", "--overwrite", "--image", "localhost/testenv/iotsec:e2e")
    assert overwrite.returncode == 0, overwrite.stderr
    assert json.loads(overwrite.stdout)["overwrite"] == "true"


def test_a_drill_result_from_the_termination_message_lands_in_status(policy, api_client, core):
    """The runner's JSON in the drill pod's termination message gives RestoreVerified and the measured RTO. No kubelet
    here: the test writes the pod status a kubelet would, and the job controller completes the Job from it."""
    job = _job_from_the_schedule("drill-ok", "drill", {**SPEC, "restoreDrill": {"enabled": True}})
    # 1.20 drops generic ephemeral volumes (beta from 1.21, like batch/v1 CronJob): the scratch becomes an emptyDir.
    scratch = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "scratch")
    assert "volumeClaimTemplate" in scratch.pop("ephemeral")
    scratch["emptyDir"] = {}
    batch = client.BatchV1Api(api_client)
    batch.create_namespaced_job(NAMESPACE, job)
    now = datetime.now(UTC).replace(microsecond=0)
    stamp = now.isoformat().replace("+00:00", "Z")
    result = {
        "operation": "drill",
        "succeeded": True,
        "started": stamp,
        "finished": stamp,
        "duration_seconds": 42.5,
        "targets": [{"name": "primary", "snapshot_id": "1a2b3c4d", "files": 20003, "bytes": 249400000}],
        "errors": [],
        "restore_seconds": 37.25,
    }
    _terminate_like_a_kubelet(core, "drill-ok", result)
    condition = _eventually_condition(api_client, "RestoreVerified", "True", timeout=90)
    assert "drill-ok" in condition["message"]
    assert _status(api_client)["lastRestoreSeconds"] == 37.25


def _terminate_like_a_kubelet(core: client.CoreV1Api, job: str, result: dict[str, Any]) -> None:
    """Write the status a kubelet writes when the Job's container exits 0 with the runner's result as its
    termination message; the job controller then completes the Job."""
    pod = eventually(
        lambda: next(iter(core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={job}").items), None),
        timeout=30,
        what="the job controller's pod",
    )
    stamp = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    container = pod.spec.containers[0]
    terminated = {"exitCode": 0, "reason": "Completed", "message": json.dumps(result, separators=(",", ":"))}
    terminated.update({"startedAt": stamp, "finishedAt": stamp})
    state = {"name": container.name, "image": container.image, "imageID": "", "ready": False, "restartCount": 0}
    state["state"] = {"terminated": terminated}
    status = {"phase": "Succeeded", "containerStatuses": [state]}
    core.patch_namespaced_pod_status(pod.metadata.name, NAMESPACE, {"status": status})


def test_a_backup_result_gives_duration_and_per_target_figures(policy, api_client, core):
    batch = client.BatchV1Api(api_client)
    batch.create_namespaced_job(NAMESPACE, _job_from_the_schedule("backup-measured"))
    stamp = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    targets = [
        {"name": "primary", "snapshot_id": "5e6f7a8b", "files": 120, "bytes": 7340032, "snapshots": 3},
        {"name": "offsite", "snapshot_id": "5e6f7a8b", "files": 120, "bytes": 7340032, "snapshots": 3},
    ]
    result = {"operation": "backup", "succeeded": True, "started": stamp, "finished": stamp}
    result.update({"duration_seconds": 12.75, "targets": targets, "errors": [], "restore_seconds": None})
    _terminate_like_a_kubelet(core, "backup-measured", result)

    def measured() -> dict[str, Any] | None:
        status = _status(api_client)
        return status if status.get("lastDurationSeconds") == 12.75 else None

    status = eventually(measured, timeout=90, what="lastDurationSeconds from the runner's result")
    assert {t["name"]: (t["snapshots"], t["bytes"]) for t in status["targets"]} == {
        "primary": (3, 7340032),
        "offsite": (3, 7340032),
    }


def test_an_object_the_server_refuses_turns_into_ready_false_with_the_servers_reason(policy, api_client, core):
    """A name the server takes for the policy but not for our label values (over 63 characters): no crash loop,
    a condition and an event that say what the server said."""
    custom = client.CustomObjectsApi(api_client)
    name = "telemetry-" + "x" * 60
    body = {"apiVersion": "iotsec.io/v1alpha1", "kind": "BackupPolicy", "metadata": {"name": name}, "spec": SPEC}
    custom.create_namespaced_custom_object("iotsec.io", "v1alpha1", NAMESPACE, "backuppolicies", body)

    def refused() -> dict[str, Any] | None:
        found = custom.get_namespaced_custom_object("iotsec.io", "v1alpha1", NAMESPACE, "backuppolicies", name)
        ready = next((c for c in (found.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)
        return ready if ready and ready["reason"] == "ApplyFailed" else None

    try:
        ready = eventually(refused, timeout=60, what="Ready=False ApplyFailed")
        assert ready["status"] == "False"
        assert "63" in ready["message"]
        events = core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={name}").items
        assert any(e.type == "Warning" and e.reason == "ApplyFailed" for e in events)
    finally:
        custom.delete_namespaced_custom_object("iotsec.io", "v1alpha1", NAMESPACE, "backuppolicies", name)
