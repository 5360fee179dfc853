"""AuditPolicy: complete, tamper-evident, never-lost audit of administrator activity (X.1369 §9.6.4).

An AuditPolicy renders the API server's audit Policy, sizes and protects the audit store that iotsec's sink
writes (hash chain, signed segments, storage limits), names the BackupPolicy that backs it up and the
anomaly rules watched in real time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from iotsec.api.common import (
    CIDR,
    SET_LIST,
    Duration,
    GroupName,
    Model,
    Name,
    NamespacedObjectRef,
    Quantity,
    ResourceName,
    Status,
    Text,
    cel,
    map_list,
    schema_extra,
)

AuditLevel = Literal["None", "Metadata", "Request", "RequestResponse"]
Stage = Literal["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"]
AnomalyType = Literal[
    "AuthFailures",
    "SecretAccess",
    "PrivilegeGrant",
    "ExecIntoPod",
    "AdmissionDenials",
    "RequestRate",
    "AuditConfigChange",
    "UnexpectedSource",
]
Severity = Literal["info", "warning", "critical"]
Verb = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^([a-z]+|\*)$")]


class GroupResources(Model):
    group: Annotated[str, Field(max_length=253)] = Field(description='API group; "" is the core group.')
    resources: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = Field(
        default=None, max_length=64, description="Resources (and subresources such as pods/exec); empty: all."
    )
    resource_names: list[ResourceName] | None = Field(default=None, max_length=64)


class AuditRule(Model):
    """A rule of the rendered audit.k8s.io/v1 Policy; the first matching rule wins."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel(
                "!(has(self.resources) && has(self.nonResourceURLs))",
                "a rule matches resources or nonResourceURLs, not both",
            )
        )
    )

    level: AuditLevel
    users: list[GroupName] | None = Field(default=None, max_length=64)
    user_groups: list[GroupName] | None = Field(default=None, max_length=64)
    verbs: list[Verb] | None = Field(default=None, max_length=16)
    resources: list[GroupResources] | None = Field(default=None, max_length=32)
    namespaces: list[Name] | None = Field(default=None, max_length=64)
    non_resource_urls: list[Annotated[str, Field(min_length=1, max_length=512)]] | None = Field(
        default=None, max_length=32
    )
    omit_stages: list[Stage] | None = Field(default=None, max_length=4, json_schema_extra=SET_LIST)


class SinkStorage(Model):
    """The audit store's volume and limits (X1369-9.6.4-2)."""

    size: Quantity = Field(default="20Gi", description="Volume size; batches are refused (never dropped) at the limit.")
    storage_class_name: ResourceName | None = None
    warn_at_percent: Annotated[int, Field(ge=1, le=99)] = Field(
        default=80, description="Raise the StorageNearlyFull condition and alert at this fill level."
    )
    segment_size: Quantity = Field(default="64Mi", description="Seal and sign a segment at this size.")
    segment_max_age: Duration = Field(default="1h", description="Seal a segment after this long even if small.")


class Canary(Model):
    """A write the sink must see within a deadline, or the pipeline is broken (X1369-9.6.4-2, kubernetes#111208)."""

    interval: Duration = Field(default="1m", description="How often the canary ConfigMap is written.")
    deadline: Duration = Field(
        default="2m", description="AuditPipelineBroken when a canary write has not reached the sink by then."
    )


class Sink(Model):
    """iotsec's audit webhook sink (X1369-9.6.4-4, -6)."""

    authentication: Literal["clientCertificate", "bearerToken"] = Field(
        default="clientCertificate",
        description="How the API server authenticates to the sink (always over TLS).",
    )
    storage: SinkStorage = Field(default=SinkStorage.model_construct())
    retention: Duration = Field(
        default="400d", description="Delete sealed segments older than this, once exported or backed up (-5)."
    )
    canary: Canary = Field(default=Canary.model_construct())


class AnomalyRule(Model):
    """A pattern over audit events that raises an alert in real time (X1369-9.6.4-7, X1369-9.1.1.1-5).

    AuthFailures counts 401/403 responses; SecretAccess counts reads of Secrets by users outside
    `allowedGroups`; PrivilegeGrant (RBAC writes) and ExecIntoPod (exec, attach, port-forward) count acts by
    subjects outside the trusted admin groups; UnexpectedSource counts requests from outside `allowedCIDRs`;
    AdmissionDenials counts requests iotsec's webhook denied; RequestRate counts every request;
    AuditConfigChange counts writes to AuditPolicies and webhook configurations.
    """

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel(
                "self.type != 'UnexpectedSource' || (has(self.allowedCIDRs) && size(self.allowedCIDRs) > 0)",
                "an UnexpectedSource rule names the allowedCIDRs requests may come from",
                ".allowedCIDRs",
            )
        )
    )

    name: Name
    type: AnomalyType
    threshold: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=1, description="Events within window that trigger."
    )
    window: Duration = Field(default="5m")
    group_by: Literal["user", "sourceIP", "none"] = Field(default="user")
    severity: Severity = "warning"
    description: Text | None = None
    allowed_groups: list[GroupName] | None = Field(
        default=None,
        max_length=32,
        description="SecretAccess: groups whose Secret reads are expected (besides trustedAdminGroups).",
        json_schema_extra=SET_LIST,
    )
    allowed_cidrs: list[CIDR] | None = Field(
        default=None,
        max_length=32,
        description="UnexpectedSource: source ranges requests are expected from.",
        json_schema_extra=SET_LIST,
    )


class AuditPolicySpec(Model):
    """What the API server records, where it goes and what is watched."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel(
                "size(self.trustedAdminGroups) > 0",
                "name at least one trusted admin group (X1369-9.6.3-1)",
                ".trustedAdminGroups",
            )
        )
    )

    rules: list[AuditRule] | None = Field(
        default=None,
        max_length=64,
        description="Rules placed before iotsec's built-in baseline (secrets at Metadata, RBAC at RequestResponse).",
    )
    omit_stages: list[Stage] = Field(default=["RequestReceived"], max_length=4, json_schema_extra=SET_LIST)
    sink: Sink = Field(default=Sink.model_construct())
    backup_policy_ref: NamespacedObjectRef | None = Field(
        default=None, description="The BackupPolicy that backs up the audit store (X1369-9.6.4-3)."
    )
    anomaly_rules: list[AnomalyRule] | None = Field(default=None, max_length=64, json_schema_extra=map_list("name"))
    trusted_admin_groups: list[GroupName] = Field(
        default=["system:masters"],
        max_length=32,
        description="Groups allowed cluster-admin and escalating bindings (X1369-9.6.3-1).",
        json_schema_extra=SET_LIST,
    )


class AnomalyHit(Model):
    """One anomaly rule firing for one subject."""

    rule: Name
    type: AnomalyType
    subject: Annotated[str, Field(max_length=512)] = Field(description="The user, source IP or '*' it fired for.")
    count: Annotated[int, Field(ge=0)] = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    severity: Severity = "warning"


class AuditPolicyStatus(Status):
    policy_config_map: Annotated[str, Field(max_length=317)] | None = Field(
        default=None, description="namespace/name of the ConfigMap holding the rendered audit Policy."
    )
    records: Annotated[int, Field(ge=0)] = 0
    segments: Annotated[int, Field(ge=0)] = 0
    bytes_used: Annotated[int, Field(ge=0)] = 0
    bytes_limit: Annotated[int, Field(ge=0)] = 0
    percent_used: Annotated[float, Field(ge=0, le=100)] = 0.0
    last_sealed_segment: Annotated[str, Field(max_length=253)] | None = None
    last_sealed: datetime | None = None
    chain_head: Annotated[str, Field(max_length=128)] | None = None
    chain_head_seq: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="The seq chainHead belongs to: kept outside the store volume, so `iotsec audit verify "
        "--expect-seq/--expect-head` and the sink at start can tell newest records were cut off (X1369-9.6.4-4).",
    )
    last_export: datetime | None = None
    last_verified: datetime | None = None
    last_canary_seen: datetime | None = None
    refused_batches: Annotated[int, Field(ge=0)] = 0
    anomalies: list[AnomalyHit] = Field(
        default_factory=list, max_length=32, description="The most recent anomaly hits (newest first)."
    )
