"""Types shared by the four iotsec APIs.

Every constraint written here ends up in the generated CRD schema, so the API server enforces
the same rules as `iotsec validate`. Strings and lists carry explicit bounds because
Kubernetes estimates the cost of CEL rules from them and rejects unbounded CRDs.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from iotsec.api.cron import validate_cron
from iotsec.api.durations import parse_duration

GROUP = "iotsec.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY_PATTERN = rf"^(\+|-)?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$"
DURATION_PATTERN = r"^([0-9]+(w|d|h|m|s))+$"
CRON_PATTERN = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$"
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONTROL_ID_PATTERN = r"^X1369-[0-9]+(\.[0-9]+)*-[0-9]+$"
GROUP_NAME_MAX = 256


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry: a CEL rule the API server checks on that node."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def schema_extra(*rules: dict[str, str], **extensions: Any) -> dict[str, Any]:
    """Extra keys for a model's or field's schema (CEL rules, list types, formats)."""
    extra: dict[str, Any] = {f"x-kubernetes-{k.replace('_', '-')}": v for k, v in extensions.items()}
    if rules:
        extra["x-kubernetes-validations"] = list(rules)
    return extra


def map_list(*keys: str) -> dict[str, Any]:
    """A list that the API server treats as a map keyed by `keys` (server-enforced uniqueness)."""
    return schema_extra(list_type="map", list_map_keys=list(keys))


SET_LIST = schema_extra(list_type="set")


_ACRONYMS = {
    "ca": "CA",
    "cpu": "CPU",
    "cidr": "CIDR",
    "cidrs": "CIDRs",
    "id": "ID",
    "ip": "IP",
    "tls": "TLS",
    "urls": "URLs",
}


def wire_name(field_name: str) -> str:
    """camelCase with the Kubernetes spelling of acronyms: device_ca -> deviceCA, deny_cidrs -> denyCIDRs."""
    first, *rest = field_name.rstrip("_").split("_")
    return first + "".join(_ACRONYMS.get(word, word.capitalize()) for word in rest)


class Model(BaseModel):
    """Base for every API object: camelCase on the wire, unknown fields are errors."""

    model_config = ConfigDict(
        alias_generator=wire_name,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=True,
        defer_build=True,  # validators are built on first use: a process that checks one kind builds only its own
    )


def _check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32 ({exc})") from None
    if "/" not in value:
        raise ValueError(f"{value!r} has no prefix length: write it as {value}/32 (or /128 for IPv6)")
    return value


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


def _check_cron(value: str) -> str:
    validate_cron(value)
    return value


Name = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
"""A DNS-1123 label: namespaces, rule names, ids that become part of object names."""

ResourceName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
"""A DNS-1123 subdomain: names of cluster objects such as StorageClasses or Secrets."""

Text = Annotated[str, Field(max_length=1024)]
ShortText = Annotated[str, Field(max_length=256)]
GroupName = Annotated[str, Field(min_length=1, max_length=GROUP_NAME_MAX)]
Quantity = Annotated[str, Field(max_length=64, pattern=QUANTITY_PATTERN)]
Duration = Annotated[
    str,
    Field(max_length=32, pattern=DURATION_PATTERN, examples=["90d", "12h", "1h30m"]),
    AfterValidator(_check_duration),
]
Cron = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=CRON_PATTERN, examples=["0 2 * * *", "@daily"]),
    AfterValidator(_check_cron),
]
CIDR = Annotated[str, Field(max_length=49, json_schema_extra={"format": "cidr"}), AfterValidator(_check_cidr)]
Port = Annotated[int, Field(ge=1, le=65535)]
Protocol = Literal["TCP", "UDP", "SCTP"]
ControlId = Annotated[str, Field(max_length=32, pattern=CONTROL_ID_PATTERN)]


class PortSpec(Model):
    """A port or port range (`port`..`endPort`) on one protocol."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel(
                "!has(self.endPort) || self.endPort >= self.port",
                "endPort must not be below port",
                ".endPort",
            )
        )
    )

    port: Port = Field(description="Port number (1-65535).")
    end_port: Port | None = Field(default=None, description="Last port of a range, inclusive.")
    protocol: Protocol = Field(default="TCP", description="TCP, UDP or SCTP.")


class LabelSelectorRequirement(Model):
    key: Annotated[str, Field(min_length=1, max_length=317)] = Field(description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[Annotated[str, Field(max_length=63)]] | None = Field(default=None, max_length=64)

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel(
                "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
                "values must be non-empty for In and NotIn, and absent for Exists and DoesNotExist",
            )
        )
    )


class LabelSelector(Model):
    """A Kubernetes label selector (matchLabels and/or matchExpressions)."""

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] | None = Field(default=None, max_length=64)
    match_expressions: list[LabelSelectorRequirement] | None = Field(default=None, max_length=32)


class LocalObjectRef(Model):
    name: ResourceName


class NamespacedObjectRef(Model):
    name: ResourceName
    namespace: Name | None = Field(default=None, description="Defaults to the referring object's namespace.")


class SecretKeyRef(Model):
    name: ResourceName = Field(description="Secret name.")
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = Field(
        description="Key inside the Secret."
    )


class Condition(Model):
    """A status condition as the Kubernetes API conventions define it."""

    type: Annotated[str, Field(min_length=1, max_length=316, pattern=r"^[A-Za-z][A-Za-z0-9]*$")]
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=REASON_PATTERN)]
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: datetime
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    controls: list[ControlId] | None = Field(
        default=None, max_length=32, description="X.1369 control ids this condition evidences."
    )


class Status(Model):
    """Fields every iotsec status carries."""

    model_config = ConfigDict(frozen=False)

    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The spec generation this status describes."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        description="Latest observations, one per type (Ready and kind-specific ones).",
        json_schema_extra=map_list("type"),
    )
