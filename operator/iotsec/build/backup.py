"""BackupPolicy → the repository password Secret, the runner's configuration, the Job that creates the
repositories and the CronJobs that run backups, verification and drills.

Pure. The password is a placeholder here (the reconciler generates it once and keeps it, also after the policy is
deleted unless `deletionPolicy: Delete`). Jobs run the iotsec image's `iotsec backup …` as a non-root user under
the restricted Pod Security Standard, mount the selected claims read-only, never run two at once, and write a
machine-readable result to their termination message, which the reconciler reads back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from iotsec.api.backuppolicy import BackupPolicySpec, BackupTarget, local_path
from iotsec.build.tenant import PLACEHOLDER
from iotsec.model.labels import (
    BACKUP_JOB_LABEL,
    KEY_PURPOSE_LABEL,
    LEVEL_LABEL,
    MANAGED_BY,
    MANAGER,
    OWNER_KIND,
    OWNER_NAME,
    RESTORED_FROM_LABEL,
    owned_metadata,
    restricted_container_security,
)
from iotsec.model.names import BACKUP_ACCOUNT_PREFIX
from iotsec.model.platform import Image

KIND = "BackupPolicy"
CONFIG_MOUNT = "/etc/iotsec-backup"
DATA_MOUNT = "/data"
SCRATCH_MOUNT = "/scratch"
RESTORE_ROOT = "/restore"
SFTP_MOUNT = "/etc/iotsec/sftp"
SFTP_KEY = "ssh-privatekey"  # the key of a kubernetes.io/ssh-auth Secret
SFTP_KNOWN_HOSTS = "known_hosts"
SFTP_KEY_MODE = 0o400  # with the pod's fsGroup the kubelet makes it root:10001 0440: readable by the Job only
C_BACKUP = "X1369-9.2-1"
C_COMPLETE = "X1369-9.2.4-4"
C_ARCHIVE = "X1369-9.2.4-5"
C_INTEGRITY = "X1369-9.2.4-3"
C_KEYS = "X1369-9.2.4-2"
C_OFFSITE = "X1369-9.6.6-1"
C_DRILL = "X1369-9.6.1-2"
C_RESTORE = "X1369-9.6.6-2"


@dataclass
class BackupPlan:
    policy: str
    namespace: str
    claims: list[str]
    password_secret: str
    password_key: str
    generate_password: bool
    objects: list[dict[str, Any]] = field(default_factory=list)


ACCOUNT_PREFIX = BACKUP_ACCOUNT_PREFIX


def account_name(policy: str) -> str:
    """The Jobs' ServiceAccount: no token, no rights (the operator fence admits CronJobs only as such an account)."""
    return f"{ACCOUNT_PREFIX}{policy}"


def password_secret_name(policy: str) -> str:
    return f"iotsec-backup-{policy}-password"


def plan_backup(
    name: str, namespace: str, spec: BackupPolicySpec, claims: Sequence[str], image: Image | None = None
) -> BackupPlan:
    """Everything one policy needs. `claims`: the PVC names its names and selector resolve to."""
    image = image or Image()
    ref = spec.encryption.password_secret_ref
    plan = BackupPlan(
        policy=name,
        namespace=namespace,
        claims=sorted(set(claims) - repository_claims(spec)),
        password_secret=ref.name if ref else password_secret_name(name),
        password_key=ref.key if ref else "password",
        generate_password=ref is None,
    )
    meta = _Meta(name, namespace)
    if plan.generate_password:
        plan.objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": meta(plan.password_secret, [C_KEYS], {KEY_PURPOSE_LABEL: "backup-password"}),
                "stringData": {"password": PLACEHOLDER},
            }
        )
    plan.objects.append(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(account_name(name), [C_BACKUP]),
            "automountServiceAccountToken": False,
        }
    )  # the jobs need no API access
    plan.objects.append(_config(meta, name, spec, plan))
    plan.objects.append(
        _cron_job(meta, "backup", spec.schedule, spec, plan, image, [C_BACKUP, C_COMPLETE, C_ARCHIVE, C_OFFSITE])
    )
    if spec.verification.enabled:
        plan.objects.append(_cron_job(meta, "verify", spec.verification.schedule, spec, plan, image, [C_INTEGRITY]))
    if spec.restore_drill.enabled:
        plan.objects.append(
            _cron_job(meta, "drill", spec.restore_drill.schedule, spec, plan, image, [C_DRILL, C_RESTORE])
        )
    plan.objects.append(_egress(meta, name, spec))
    plan.objects.append(init_job(name, namespace, spec, image))
    return plan


DEFAULT_PORTS = {"s3": 443, "b2": 443, "azure": 443, "gs": 443, "swift": 443, "rclone": 443, "rest": 443, "sftp": 22}


def repository_port(repository: str) -> int | None:
    """The TCP port a restic repository is reached on; None for a local path."""
    backend, sep, rest = repository.partition(":")
    if repository.startswith("/") or not sep or backend == "local" or backend not in DEFAULT_PORTS:
        return None
    if "://" in rest or rest.startswith("//"):  # s3:https://host:port/…, or sftp://user@host:port//path
        url = urlsplit(rest if "://" in rest else repository)
        if url.port:
            return url.port
        return {"http": 80, "https": 443}.get(url.scheme, DEFAULT_PORTS[backend])
    return DEFAULT_PORTS[backend]  # sftp:user@host:/path is 22


def _egress(meta: _Meta, name: str, spec: BackupPolicySpec) -> dict[str, Any]:
    """Egress for this policy's Job pods only: DNS and the port of each repository, whatever a SecurityDomain's
    default deny says (the repositories are named by URL; a NetworkPolicy cannot name a host)."""
    ports = sorted({p for t in spec.targets if (p := repository_port(t.repository)) is not None})
    egress: list[dict[str, Any]] = [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]
    if ports:
        egress.append({"ports": [{"protocol": "TCP", "port": port} for port in ports]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(f"iotsec-backup-{name}", [C_BACKUP, C_OFFSITE]),
        "spec": {
            "podSelector": {"matchLabels": {OWNER_KIND: KIND, OWNER_NAME: name}},
            "policyTypes": ["Egress"],
            "egress": egress,
        },
    }


@dataclass(frozen=True)
class _Meta:
    owner: str
    namespace: str

    def __call__(self, name: str, controls: list[str], labels: dict[str, str] | None = None) -> dict[str, Any]:
        return owned_metadata(
            name, self.namespace, owner_kind=KIND, owner_name=self.owner, controls=controls, labels=labels
        )


def repository_claims(spec: BackupPolicySpec) -> set[str]:
    """The claims holding local repositories: mounted by every Job, never backed up into themselves."""
    return {t.claim_name for t in spec.targets if t.claim_name}


def _repository_volumes(spec: BackupPolicySpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each local repository's claim, mounted at the repository's path (volumes, mounts)."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for index, target in enumerate(t for t in spec.targets if t.claim_name):
        path = local_path(target.repository)
        assert path is not None, "the schema admits claimName on local repositories only"
        volumes.append({"name": f"repository-{index}", "persistentVolumeClaim": {"claimName": target.claim_name}})
        mounts.append({"name": f"repository-{index}", "mountPath": path})
    return volumes, mounts


def targets_digest(spec: BackupPolicySpec) -> str:
    """Names the init Job of one set of repositories: new targets, a new Job; the same targets, the same one."""
    listed = sorted((t.name, t.role, t.repository, t.claim_name or "") for t in spec.targets)
    return hashlib.sha256(json.dumps(listed).encode()).hexdigest()[:10]


def init_job_name(policy: str, spec: BackupPolicySpec) -> str:
    return f"iotsec-init-{policy}-{targets_digest(spec)}"


def init_job(name: str, namespace: str, spec: BackupPolicySpec, image: Image | None = None) -> dict[str, Any]:
    """The one explicit step that creates repositories: `backup init` for every target, once per set of targets.
    Backups never create a repository, so a repository that later goes missing (a volume swapped, a bucket
    emptied) fails the backup instead of silently starting a fresh one."""
    meta = _Meta(name, namespace)
    plan = _plan_for_jobs(name, namespace, spec)
    labels = {BACKUP_JOB_LABEL: "init"}
    controls = [C_BACKUP, C_OFFSITE]
    pod = _pod("init", spec, plan, image or Image())
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta(init_job_name(name, spec), controls, labels),
        "spec": {
            "backoffLimit": 2,  # init is idempotent: a repository that exists is left as it is
            "activeDeadlineSeconds": 3600,
            "template": {"metadata": {"labels": meta("", controls, labels)["labels"]}, "spec": pod},
        },
    }


def _plan_for_jobs(policy: str, namespace: str, spec: BackupPolicySpec) -> BackupPlan:
    """What a one-off Job (init, restore) needs of the plan: the password Secret's name and key."""
    ref = spec.encryption.password_secret_ref
    return BackupPlan(
        policy,
        namespace,
        [],
        ref.name if ref else password_secret_name(policy),
        ref.key if ref else "password",
        ref is None,
    )


def is_sftp(repository: str) -> bool:
    return repository.startswith("sftp:")


def sftp_folder(target: str) -> str:
    """Where an sftp target's credentials Secret (ssh-privatekey, known_hosts) is mounted."""
    return f"{SFTP_MOUNT}/{target}"


def _runner_target(target: BackupTarget) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": target.name, "repository": target.repository, "role": target.role}
    if is_sftp(target.repository):
        entry["ssh_key_file"] = f"{sftp_folder(target.name)}/{SFTP_KEY}"
        entry["known_hosts_file"] = f"{sftp_folder(target.name)}/{SFTP_KNOWN_HOSTS}"
    return entry


def runner_config(name: str, namespace: str, spec: BackupPolicySpec, claims: Sequence[str]) -> dict[str, Any]:
    """What `iotsec backup` reads: sources, targets (no credentials: those come from the environment, and for sftp
    targets from files mounted from their Secret), retention."""
    retention = spec.retention
    return {
        "host": name,
        "paths": [f"{DATA_MOUNT}/{claim}" for claim in sorted(set(claims))],
        "targets": [_runner_target(t) for t in spec.targets],
        "retention": {
            "keep_last": retention.keep_last,
            "keep_hourly": retention.keep_hourly,
            "keep_daily": retention.keep_daily,
            "keep_weekly": retention.keep_weekly,
            "keep_monthly": retention.keep_monthly,
            "keep_yearly": retention.keep_yearly,
        },
        "tags": [f"policy={name}", f"namespace={namespace}"],
        "snapshot_tags": [f"pvc={claim}" for claim in sorted(set(claims))],
        "read_data_subset": spec.verification.read_data_subset,
        "destination": SCRATCH_MOUNT,
    }


def _config(meta: _Meta, name: str, spec: BackupPolicySpec, plan: BackupPlan) -> dict[str, Any]:
    config = json.dumps(runner_config(name, plan.namespace, spec, plan.claims), indent=2, sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(f"iotsec-backup-{name}", [C_BACKUP]),
        "data": {"config.json": config},
    }


def _cron_job(
    meta: _Meta,
    job: str,
    schedule: str,
    spec: BackupPolicySpec,
    plan: BackupPlan,
    image: Image,
    controls: list[str],
) -> dict[str, Any]:
    labels = {BACKUP_JOB_LABEL: job}
    template = {
        "metadata": {"labels": {**meta("", controls, labels)["labels"]}},
        "spec": {
            "backoffLimit": 0,  # a failed backup is reported, not retried into a storm
            "activeDeadlineSeconds": 6 * 3600,
            "template": {
                "metadata": {"labels": {**meta("", controls, labels)["labels"], LEVEL_LABEL: "standard"}},
                "spec": _pod(job, spec, plan, image),
            },
        },
    }
    cron: dict[str, Any] = {
        "schedule": schedule,
        "concurrencyPolicy": "Forbid",
        "suspend": spec.suspend,
        "startingDeadlineSeconds": 3600,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": template,
    }
    if spec.time_zone:
        cron["timeZone"] = spec.time_zone
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": meta(f"iotsec-{job}-{plan.policy}", controls, labels),
        "spec": cron,
    }


def _pod(job: str, spec: BackupPolicySpec, plan: BackupPlan, image: Image) -> dict[str, Any]:
    mounts = [{"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True}, {"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": f"iotsec-backup-{plan.policy}"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
    ]
    if job == "backup":
        for index, claim in enumerate(plan.claims):
            volumes.append({"name": f"data-{index}", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
            mounts.append({"name": f"data-{index}", "mountPath": f"{DATA_MOUNT}/{claim}", "readOnly": True})
    repository_volumes, repository_mounts = _repository_volumes(spec)
    volumes += repository_volumes
    mounts += repository_mounts
    if job == "drill":
        scratch = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}
        if spec.restore_drill.storage_class_name:
            scratch["storageClassName"] = spec.restore_drill.storage_class_name
        volumes.append({"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": scratch}}})
        mounts.append({"name": "scratch", "mountPath": SCRATCH_MOUNT})
    env = [
        {
            "name": "RESTIC_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": plan.password_secret, "key": plan.password_key}},
        },
        {"name": "RESTIC_CACHE_DIR", "value": "/tmp/restic-cache"},
    ]
    # an sftp target's Secret holds a private key: mounted as files, never in the environment
    env_from = [
        {"secretRef": {"name": t.credentials_secret}}
        for t in spec.targets
        if t.credentials_secret and not is_sftp(t.repository)
    ]
    for index, target in enumerate(t for t in spec.targets if t.credentials_secret and is_sftp(t.repository)):
        secret = {"secretName": target.credentials_secret, "defaultMode": SFTP_KEY_MODE}
        volumes.append({"name": f"sftp-{index}", "secret": secret})
        mounts.append({"name": f"sftp-{index}", "mountPath": sftp_folder(target.name), "readOnly": True})
    container: dict[str, Any] = {
        "name": job,
        "image": image.reference,
        "imagePullPolicy": image.pull_policy,
        "args": [
            "backup",
            "run" if job == "backup" else job,
            "--config",
            f"{CONFIG_MOUNT}/config.json",
            "--result",
            "/dev/termination-log",
        ],
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        "securityContext": restricted_container_security(),
    }
    if env_from:
        container["envFrom"] = env_from
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "serviceAccountName": account_name(plan.policy),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }


def restore_claim(name: str, namespace: str, size: str, storage_class: str | None) -> dict[str, Any]:
    """A new claim to restore into (restoring into a new volume is the default: it destroys nothing)."""
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY: MANAGER, RESTORED_FROM_LABEL: "backup"},
        },
        "spec": spec,
    }


def restore_job(
    policy: str,
    namespace: str,
    spec: BackupPolicySpec,
    claim: str,
    snapshot: str,
    job_name: str,
    image: Image | None = None,
    source_claim: str | None = None,
) -> dict[str, Any]:
    """A one-off Job restoring `source_claim`'s files (default: `claim`'s) from `snapshot` of the policy's primary
    repository to the root of `claim`: the claim is mounted where the snapshot has the source, /data/<source>,
    under an empty folder, so restic writes into it and nothing else lands on it."""
    source = source_claim or claim
    image = image or Image()
    pod = _pod("restore", spec, _plan_for_jobs(policy, namespace, spec), image)
    pod["volumes"].append({"name": "target", "persistentVolumeClaim": {"claimName": claim}})
    pod["volumes"].append({"name": "restore-root", "emptyDir": {"sizeLimit": "16Mi"}})
    container = pod["containers"][0]
    container["volumeMounts"].append({"name": "restore-root", "mountPath": RESTORE_ROOT})
    container["volumeMounts"].append({"name": "target", "mountPath": f"{RESTORE_ROOT}{DATA_MOUNT}/{source}"})
    container["args"] = [
        "backup",
        "restore",
        "--config",
        f"{CONFIG_MOUNT}/config.json",
        "--snapshot",
        snapshot,
        "--destination",
        RESTORE_ROOT,
        "--include",
        f"{DATA_MOUNT}/{source}",
        "--result",
        "/dev/termination-log",
    ]
    meta = _Meta(policy, namespace)
    labels = {BACKUP_JOB_LABEL: "restore"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta(job_name, [C_RESTORE], labels),
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 7 * 86400,
            "template": {"metadata": {"labels": meta("", [C_RESTORE], labels)["labels"]}, "spec": pod},
        },
    }
