"""BackupPolicy: encrypted, verified, restorable backups of a namespace's volumes.

X.1369 asks for regular backups of core data and a restore mechanism (§9.2, 9.2.4-4), integrity detection
(9.2.4-3), archiving and clean-up (9.2.4-5), a remote redundant copy (9.6.6-1), fast restore (9.6.6-2),
emergency drills (9.6.1-2) and secure key storage (9.2.4-2).
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field

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


class BackupTarget(Model):
    """A restic repository; one primary and any number of off-site copies (X1369-9.6.6-1)."""

    name: Name
    role: TargetRole = Field(default="primary", description="primary (backed up) or offsite (copied to).")
    repository: Repository
    credentials_secret: ResourceName | None = Field(
        default=None,
        description=(
            "Secret with the repository's environment (e.g. AWS_ACCESS_KEY_ID). For an sftp: repository it is"
            " mounted as files instead (never as environment) and must hold ssh-privatekey (the private key, as in"
            " a kubernetes.io/ssh-auth Secret) and known_hosts (the server's host key; an unknown or changed key"
            " fails the run)."
        ),
    )


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
    retention: Retention = Field(default=Retention())
    targets: list[BackupTarget] = Field(min_length=1, max_length=8, json_schema_extra=map_list("name"))
    encryption: Encryption = Field(default=Encryption())
    verification: Verification = Field(default=Verification())
    restore_drill: RestoreDrill = Field(default=RestoreDrill())
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
