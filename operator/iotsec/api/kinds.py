"""The four iotsec kinds: names, scope, models and printer columns, in one table."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from iotsec.api.common import API_VERSION, GROUP, VERSION, Model, Status
from iotsec.api.terms import NAMESPACED_KINDS

READY = '.status.conditions[?(@.type=="Ready")].status'
REASON = '.status.conditions[?(@.type=="Ready")].reason'
MESSAGE = '.status.conditions[?(@.type=="Ready")].message'


@dataclass(frozen=True)
class Column:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def manifest(self) -> dict[str, object]:
        column: dict[str, object] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            column["description"] = self.description
        if self.priority:
            column["priority"] = self.priority
        return column


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    short_name: str
    module: str  # where its models KindSpec and KindStatus are: imported when first asked for (issue 18)
    summary: str
    columns: tuple[Column, ...] = field(default_factory=tuple)

    @property
    def namespaced(self) -> bool:
        return NAMESPACED_KINDS[self.kind]

    @property
    def spec(self) -> type[Model]:
        spec: type[Model] = getattr(importlib.import_module(self.module), f"{self.kind}Spec")
        return spec

    @property
    def status(self) -> type[Status]:
        status: type[Status] = getattr(importlib.import_module(self.module), f"{self.kind}Status")
        return status

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def api_version(self) -> str:
        return API_VERSION


def _standard_columns(*columns: Column) -> tuple[Column, ...]:
    return (
        *columns,
        Column("Ready", READY, description="Ready condition"),
        Column("Reason", REASON, description="why Ready is what it is (e.g. CronJobUnsupported, Conflict)"),
        Column("Message", MESSAGE, priority=1, description="the Ready condition's message"),
        Column("Age", ".metadata.creationTimestamp", type="date"),
    )


KINDS: tuple[KindInfo, ...] = (
    KindInfo(
        kind="SecurityDomain",
        plural="securitydomains",
        short_name="sd",
        module="iotsec.api.securitydomain",
        summary="A network security zone: default-deny isolation of its namespaces and explicit inter-zone rules.",
        columns=_standard_columns(
            Column("Zone", ".spec.zone"),
            Column("Enforcement", ".spec.enforcement"),
            Column("Namespaces", ".status.namespaceCount", type="integer"),
            Column("Policies", ".status.policyCount", type="integer", priority=1),
        ),
    ),
    KindInfo(
        kind="TenantIsolation",
        plural="tenantisolations",
        short_name="ti",
        module="iotsec.api.tenantisolation",
        summary="An isolated tenant: namespaces, quotas, RBAC by class, application keys, device CA, storage.",
        columns=_standard_columns(
            Column("Tenant", ".spec.tenantID"),
            Column("Domain", ".spec.securityDomain"),
            Column("Deletion", ".spec.deletionPolicy", priority=1),
        ),
    ),
    KindInfo(
        kind="BackupPolicy",
        plural="backuppolicies",
        short_name="bp",
        module="iotsec.api.backuppolicy",
        summary="Encrypted, verified and restorable restic backups of selected PersistentVolumeClaims.",
        columns=_standard_columns(
            Column("Schedule", ".spec.schedule"),
            Column("Suspended", ".spec.suspend", type="boolean"),
            Column("Last Success", ".status.lastSuccess", type="date"),
        ),
    ),
    KindInfo(
        kind="AuditPolicy",
        plural="auditpolicies",
        short_name="ap",
        module="iotsec.api.auditpolicy",
        summary="API audit policy, a tamper-evident audit store with storage limits, and anomaly rules.",
        columns=_standard_columns(
            Column("Used %", ".status.percentUsed", type="number"),
            Column("Segments", ".status.segments", type="integer", priority=1),
        ),
    ),
)

BY_KIND: dict[str, KindInfo] = {info.kind: info for info in KINDS}
__all__ = ["API_VERSION", "BY_KIND", "GROUP", "KINDS", "VERSION", "Column", "KindInfo"]
