"""The report's vocabulary: verdicts, scopes, evidence and the versioned JSON document they make up."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

SCHEMA_VERSION = "iotsec.io/conformance/v1"  # bump on any incompatible change of to_json's shape


class Verdict(StrEnum):
    MET = "met"
    PARTIAL = "partial"
    NOT_MET = "not-met"
    NOT_APPLICABLE = "not-applicable"
    OUT_OF_SCOPE = "out-of-scope"

    @property
    def label(self) -> str:
        return self.value.replace("-", " ")


# A control's verdict is the worst of its scopes' verdicts, in this order (first is worst).
WORST_FIRST: tuple[Verdict, ...] = (
    Verdict.NOT_MET,
    Verdict.PARTIAL,
    Verdict.MET,
    Verdict.NOT_APPLICABLE,
    Verdict.OUT_OF_SCOPE,
)

ScopeKind = Literal["cluster", "domain", "tenant", "namespace"]


@dataclass(frozen=True)
class ObjectRef:
    """An object a verdict was read from; `planned` when it is what the operator would write (offline report),
    not something observed on a cluster."""

    api_version: str
    kind: str
    name: str
    namespace: str | None = None
    planned: bool = False

    @classmethod
    def of(cls, obj: Mapping[str, Any], planned: bool = False) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            str(obj.get("apiVersion", "")),
            str(obj.get("kind", "")),
            str(meta.get("name", "")),
            meta.get("namespace"),
            planned,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            out["namespace"] = self.namespace
        if self.planned:
            out["planned"] = True
        return out

    @property
    def title(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


@dataclass(frozen=True)
class Evidence:
    text: str  # one sentence a person reads: what was found, with figures (ages, dates, counts)
    objects: tuple[ObjectRef, ...] = ()
    observed_at: str | None = None  # RFC 3339 time the fact refers to (last backup, last canary, ...)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "objects": [o.to_json() for o in self.objects]}
        if self.observed_at:
            out["observedAt"] = self.observed_at
        return out


@dataclass(frozen=True)
class Scope:
    kind: ScopeKind
    name: str  # "" for the cluster
    domain: str | None = None  # the SecurityDomain the scope belongs to (a namespace's, a tenant's), for filters
    tenant: str | None = None  # the TenantIsolation the scope belongs to

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "domain": self.domain, "tenant": self.tenant}

    @property
    def title(self) -> str:
        return "cluster" if self.kind == "cluster" else f"{self.kind} {self.name}"


CLUSTER = Scope("cluster", "")


@dataclass(frozen=True)
class Assessment:
    """One verdict on one control in one scope."""

    control: str  # control id, X1369-...
    scope: Scope
    verdict: Verdict
    summary: str  # one line: why this verdict
    evidence: tuple[Evidence, ...] = ()
    missing: str = ""  # for partial / not met: what is missing and how to fix it
    mechanism: str = ""  # what produced the evidence (e.g. "NetworkPolicy", "background scan", "BackupPolicy status")

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope.to_json(),
            "verdict": str(self.verdict),
            "summary": self.summary,
            "mechanism": self.mechanism,
            "missing": self.missing,
            "evidence": [e.to_json() for e in self.evidence],
        }


def worst(verdicts: Iterable[Verdict]) -> Verdict | None:
    found = set(verdicts)
    return next((v for v in WORST_FIRST if v in found), None)


@dataclass
class Inventory:
    """Everything a report is judged from. `objects` are as read (cluster) or as written (files); `planned` are
    what the operator would write for the custom resources among them (offline reports take those as applied)."""

    mode: Literal["cluster", "files"]
    now: Any  # datetime (aware, UTC)
    objects: list[dict[str, Any]] = field(default_factory=list)
    planned: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""  # the cluster's server URL, or the paths read
    unavailable: dict[str, str] = field(default_factory=dict)  # "group/kind" -> why it could not be read

    def of_kind(self, kind: str, group: str | None = None) -> list[dict[str, Any]]:
        """Observed objects of `kind` (and API `group`, "" for core, None for any)."""
        return [o for o in self.objects if o.get("kind") == kind and (group is None or _group(o) == group)]

    def planned_of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.planned if o.get("kind") == kind]


def _group(obj: Mapping[str, Any]) -> str:
    api_version = str(obj.get("apiVersion", ""))
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


Probe = Callable[[Inventory], Iterable[Assessment]]
