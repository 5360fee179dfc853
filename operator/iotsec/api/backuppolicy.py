"""BackupPolicy: encrypted, verified, restorable backups of a namespace's volumes.

X.1369 asks for regular backups of core data and a restore mechanism (§9.2, 9.2.4-4), integrity detection
(9.2.4-3), archiving and clean-up (9.2.4-5), a remote redundant copy (9.6.6-1), fast restore (9.6.6-2),
emergency drills (9.6.1-2) and secure key storage (9.2.4-2).
"""

from __future__ import annotations

import posixpath
import zoneinfo
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator

from iotsec.api.common import (
    SET_LIST,
    Cron,
    LabelSelector,
    Model,
    Name,
    ResourceName,
    SecretKeyRef,
    Status,
    cel,
    map_list,
    schema_extra,
)


def _check_time_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone such as Europe/Berlin or UTC") from None
    return value


TimeZone = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_check_time_zone)]
TargetRole = Literal["primary", "offsite"]
Keep = Annotated[int, Field(ge=0, le=10000)]
Repository = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        pattern=r"^(/|(local|s3|b2|azure|gs|rest|sftp|swift|rclone):)\S+$",
        description="A restic repository: /path, local:, s3:, b2:, azure:, gs:, rest:, sftp:, swift: or rclone:.",
    ),
]


# Where a Job's own files live: a local repository mounted over one of them would hide or break it
RESERVED_PATHS = ("/data", "/dev", "/etc", "/proc", "/restore", "/run", "/scratch", "/sys", "/tmp", "/usr", "/var/run")


def local_path(repository: str) -> str | None:
    """The folder of a local repository (/path or local:/path); None for any other backend."""
    if repository.startswith("/"):
        return repository
    if repository.startswith("local:"):
        return repository.removeprefix("local:")
    return None


def _check_local_path(repository: str) -> str:
    path = local_path(repository)
    if path is None:
        return repository
    if not path.startswith("/") or posixpath.normpath(path) != path or path == "/":
        raise ValueError(
            f"local repository {path!r} must be an absolute, normalised folder below / (e.g. /backups/app)"
        )
    for reserved in RESERVED_PATHS:
        if path == reserved or path.startswith(reserved + "/"):
            raise ValueError(f"local repository {path!r} would be mounted over the Job's {reserved}; choose another")
    return repository


class Retention(Model):
    """How many snapshots to keep (restic forget --prune, X1369-9.2.4-5)."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel(
                "self.keepLast + self.keepHourly + self.keepDaily + self.keepWeekly + self.keepMonthly"
                " + self.keepYearly > 0",
                "a retention that keeps no snapshot would delete every backup",
            )
        )
    )

    keep_last: Keep = 0
    keep_hourly: Keep = 0
    keep_daily: Keep = 7
    keep_weekly: Keep = 4
    keep_monthly: Keep = 12
    keep_yearly: Keep = 0


LOCAL_REPOSITORY = "self.repository.startsWith('/') || self.repository.startsWith('local:')"


class BackupTarget(Model):
    """A restic repository; one primary and any number of off-site copies (X1369-9.6.6-1)."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel(
                f"({LOCAL_REPOSITORY}) == has(self.claimName)",
                "a local (path) repository lives on a PersistentVolumeClaim: name it with claimName (a pod's own"
                " file system is read-only and gone with the pod); other repositories take no claimName",
            )
        )
    )

    name: Name
    role: TargetRole = Field(default="primary", description="primary (backed up) or offsite (copied to).")
    repository: Repository
    claim_name: ResourceName | None = Field(
        default=None,
        description=(
            "For a local repository (/path or local:/path): the PersistentVolumeClaim, in the policy's namespace, that"
            " holds it. Every Job of the policy mounts it at the repository's path; it is never itself backed up."
        ),
    )
    credentials_secret: ResourceName | None = Field(
        default=None,
        description=(
            "Secret with the repository's environment (e.g. AWS_ACCESS_KEY_ID). For an sftp: repository it is"
            " mounted as files instead (never as environment) and must hold ssh-privatekey (the private key, as in"
            " a kubernetes.io/ssh-auth Secret) and known_hosts (the server's host key; an unknown or changed key"
            " fails the run)."
        ),
    )

    @field_validator("repository")
    @classmethod
    def _local_path_is_mountable(cls, repository: str) -> str:
        return _check_local_path(repository)


class Encryption(Model):
    """The restic repository password (X1369-9.2.4-2)."""

    password_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Bring your own password; by default one is generated per policy."
    )
    retain_on_delete: bool = Field(
        default=True, description="Keep the generated password Secret when the policy is deleted."
    )


class Verification(Model):
    """Scheduled integrity checks of the repositories (restic check, X1369-9.2.4-3)."""

    enabled: bool = True
    schedule: Cron = Field(default="0 4 * * 0", description="When to verify (default: Sundays 04:00).")
    read_data_subset: Annotated[str, Field(max_length=16, pattern=r"^([0-9]{1,3}(\.[0-9]+)?%|[0-9]+/[0-9]+)$")] = Field(
        default="5%", description="Share of pack data read back: a percentage or n/t."
    )


class RestoreDrill(Model):
    """Scheduled test restores into a scratch volume (X1369-9.6.1-2, X1369-9.6.6-2)."""

    enabled: bool = False
    schedule: Cron = Field(default="0 5 1 * *", description="When to drill (default: monthly).")
    storage_class_name: ResourceName | None = Field(default=None, description="StorageClass of the scratch volume.")


class BackupPolicySpec(Model):
    """Backups of the PVCs a selector names, into one primary and optional off-site repositories."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel(
                "self.targets.exists_one(t, t.role == 'primary')",
                "exactly one target has role primary",
                ".targets",
            ),
            cel(
                "has(self.pvcSelector) || (has(self.pvcNames) && size(self.pvcNames) > 0)",
                "name the volumes to back up with pvcSelector and/or pvcNames",
            ),
        )
    )

    schedule: Cron = Field(description="Cron schedule of backups, e.g. '0 2 * * *' (X1369-9.2-1).")
    time_zone: TimeZone | None = Field(default=None, description="IANA time zone of the schedules, e.g. Europe/Berlin.")
    pvc_selector: LabelSelector | None = Field(default=None, description="PVCs to back up, by label.")
    pvc_names: list[ResourceName] | None = Field(
        default=None, max_length=64, description="PVCs to back up, by name.", json_schema_extra=SET_LIST
    )
    retention: Retention = Field(default=Retention.model_construct())
    targets: list[BackupTarget] = Field(min_length=1, max_length=8, json_schema_extra=map_list("name"))
    encryption: Encryption = Field(default=Encryption.model_construct())
    verification: Verification = Field(default=Verification.model_construct())
    restore_drill: RestoreDrill = Field(default=RestoreDrill.model_construct())
    suspend: bool = Field(default=False, description="Pause scheduled backups, checks and drills.")
    deletion_policy: Literal["Retain", "Delete"] = Field(
        default="Retain", description="Retain keeps repositories and keys when the policy is deleted."
    )


class TargetStatus(Model):
    model_config = ConfigDict(frozen=False)

    name: Name
    snapshots: Annotated[int, Field(ge=0)] = 0
    bytes: Annotated[int, Field(ge=0)] = 0
    last_success: datetime | None = None


class BackupPolicyStatus(Status):
    last_run: datetime | None = None
    last_success: datetime | None = None
    last_verified: datetime | None = None
    last_duration_seconds: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="How long the last backup run took, from the runner's result."
    )
    last_restore_seconds: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Measured duration of the last restore drill (RTO evidence)."
    )
    targets: list[TargetStatus] = Field(default_factory=list, max_length=8, json_schema_extra=map_list("name"))
