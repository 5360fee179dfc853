"""SecurityDomain: a network security zone of the IoT platform (X.1369 §9.4.1, §9.5.2).

A domain groups namespaces into one zone. The operator isolates every member namespace by default and
opens only the traffic that `allow` and `egress` rules name; the admission webhook applies the domain's
enforcement mode, Pod Security level, allowed ports and registries, and exceptions to its workloads.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from iotsec.api.common import (
    CIDR,
    SET_LIST,
    LabelSelector,
    Model,
    Name,
    PortSpec,
    ResourceName,
    ShortText,
    Status,
    Text,
    cel,
    map_list,
    schema_extra,
)
from iotsec.api.terms import EXPOSABLE_ZONES, Enforcement, Zone

PodSecurityLevel = Literal["privileged", "baseline", "restricted"]
IntraDomainTraffic = Literal["domain", "namespace", "none"]
ImagePinning = Literal["digest", "version", "any"]
# What a security reviewer asks of each zone by default: the management zone runs the platform's keys and
# administration, so nothing there may change under it; elsewhere a full version tag (1.2.3) is the floor.
DEFAULT_IMAGE_PINNING: dict[str, ImagePinning] = {
    "management": "digest",
    "access": "version",
    "interface": "version",
    "core": "version",
    "support": "version",
}
RuleId = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?|\*)$")]
Registry = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=r"^[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?(:[0-9]+)?(/[a-z0-9]([-a-z0-9._/]*[a-z0-9])?)?$",
    ),
]

ApiGroup = Annotated[
    str, Field(max_length=253, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$")
]

_INTERNET_RULE = cel(
    "!has(self.internet) || !(self.internet.ingress || self.internet.egress) || self.zone in ['access', 'interface']",
    "internet ingress/egress is only permitted for access and interface zones (X1369-9.4.1-4)",
    ".internet",
)
_MEMBERS_RULE = cel(
    "(has(self.namespaces) && size(self.namespaces) > 0) || has(self.namespaceSelector)",
    "name member namespaces in namespaces and/or namespaceSelector (X1369-9.4.1-1)",
)


class Peer(Model):
    """One side of a traffic rule: another SecurityDomain or an IP range, never both."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            cel("has(self.domain) != has(self.cidr)", "a peer names exactly one of domain or cidr"),
            cel("!has(self.except) || has(self.cidr)", "except only applies to a cidr peer", ".except"),
            cel(
                "!has(self.podSelector) || has(self.domain)",
                "podSelector only applies to a domain peer",
                ".podSelector",
            ),
        )
    )

    domain: Name | None = Field(default=None, description="Name of a peer SecurityDomain; resolves to its members.")
    cidr: CIDR | None = Field(default=None, description="An IP range, e.g. 203.0.113.0/24 (X1369-9.5.2-1).")
    except_: list[CIDR] | None = Field(default=None, max_length=32, description="Ranges inside cidr that stay denied.")
    pod_selector: LabelSelector | None = Field(
        default=None, description="Restrict a domain peer to pods with these labels."
    )


class IngressRule(Model):
    """Traffic that may enter this domain's pods (X1369-9.4.1-3)."""

    name: Name = Field(description="Rule name; becomes part of the NetworkPolicy name.")
    description: Text | None = None
    from_: list[Peer] = Field(min_length=1, max_length=32, description="Who may connect.")
    ports: list[PortSpec] = Field(min_length=1, max_length=32, description="Destination ports opened.")
    pod_selector: LabelSelector | None = Field(
        default=None, description="Which of this domain's pods the rule admits to (default: all)."
    )

    @property
    def peers(self) -> list[Peer]:
        return self.from_


class EgressRule(Model):
    """Traffic that this domain's pods may send (X1369-9.4.1-3)."""

    name: Name = Field(description="Rule name; becomes part of the NetworkPolicy name.")
    description: Text | None = None
    to: list[Peer] = Field(min_length=1, max_length=32, description="Where pods may connect.")
    ports: list[PortSpec] = Field(min_length=1, max_length=32, description="Destination ports opened.")
    pod_selector: LabelSelector | None = Field(
        default=None, description="Which of this domain's pods may send (default: all)."
    )

    @property
    def peers(self) -> list[Peer]:
        return self.to


class Internet(Model):
    """Traffic to or from the internet (0.0.0.0/0 minus private ranges); access/interface zones only."""

    ingress: bool = Field(default=False, description="Accept connections from the internet.")
    egress: bool = Field(default=False, description="Open connections to the internet.")
    ports: list[PortSpec] | None = Field(
        default=None, max_length=32, description="Ports the internet rules apply to (default: allowedPorts)."
    )


class ExceptionTarget(Model):
    namespace: Name = Field(description="Namespace of the excepted object.")
    kind: Annotated[str, Field(max_length=63, pattern=r"^[A-Z][A-Za-z0-9]*$")] | None = Field(
        default=None, description="Kind of the excepted object (default: any kind)."
    )
    name: ResourceName | None = Field(default=None, description="Name of the excepted object (default: any).")
    api_group: (
        Annotated[
            str, Field(max_length=253, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$")
        ]
        | None
    ) = Field(
        default=None,
        description=(
            "API group of kind ('' for the core group). Default: the group Kubernetes knows the kind by (Service "
            "is core, not Knative's; StatefulSet is apps, not OpenKruise's), else any group."
        ),
    )


class PolicyException(Model):
    """A time-limited, approved waiver of one admission rule for named objects."""

    rule: RuleId = Field(description="Admission rule id (e.g. no-host-path), or * for every rule.")
    target: ExceptionTarget
    justification: Annotated[str, Field(min_length=20, max_length=2048)] = Field(
        description="Why the waiver is needed (at least 20 characters; shown in reports)."
    )
    approver: ShortText = Field(min_length=1, description="Who approved the waiver.")
    expires: datetime = Field(description="When the waiver ends (RFC 3339); expired waivers are ignored.")
    ticket: ShortText | None = Field(default=None, description="Change or risk ticket reference.")


# Dotted field names, each optionally followed by [*] (every item of a list); iotsec.model.workloads.parse_path
# reads them and explains a mismatch segment by segment.
POD_SPEC_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\[\*\])?(\.[A-Za-z_][A-Za-z0-9_]*(\[\*\])?)*$"


class WorkloadKind(Model):
    """A custom workload kind that embeds pod specs (e.g. an operator's own Deployment-like kind)."""

    group: Annotated[
        str, Field(max_length=253, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$")
    ] = Field(description="API group, e.g. apps.example.com ('' for the core group).")
    kind: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Z][A-Za-z0-9]*$")] = Field(
        description="Kind, e.g. Rollout."
    )
    resource: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")] = Field(
        description="Plural resource name the webhook registers, e.g. rollouts."
    )
    pod_spec_paths: list[Annotated[str, Field(min_length=1, max_length=253, pattern=POD_SPEC_PATH)]] = Field(
        min_length=1,
        max_length=16,
        description=(
            "Dotted paths to the pod specs inside the object; [*] walks every item of a list, "
            "e.g. spec.template.spec or spec.templates[*].podSpec."
        ),
        json_schema_extra=SET_LIST,
    )


class SecurityDomainSpec(Model):
    """A network security zone and the admission rules for its workloads."""

    model_config = ConfigDict(json_schema_extra=schema_extra(_INTERNET_RULE, _MEMBERS_RULE))

    zone: Zone = Field(description="Zone type (X1369-9.4.1-1, -4): access, core, management, interface or support.")
    description: Text | None = None
    namespaces: list[Name] | None = Field(
        default=None, max_length=256, description="Member namespaces by name.", json_schema_extra=SET_LIST
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Member namespaces by label, in addition to namespaces."
    )
    enforcement: Enforcement = Field(
        default="enforce",
        description="What the admission webhook does with a violation: enforce (deny), warn, or audit (record).",
    )
    pod_security: PodSecurityLevel = Field(
        default="restricted",
        description="Pod Security Standard for members (labels and admission checks, X1369-9.4.3-1).",
    )
    intra_domain_traffic: IntraDomainTraffic = Field(
        default="namespace",
        description=(
            "Traffic allowed without a rule: domain (between all members), namespace (inside each namespace) "
            "or none (X1369-9.4.1-2)."
        ),
    )
    security_level_isolation: bool = Field(
        default=True,
        description=(
            "Pods whose iotsec.io/security-level labels differ cannot reach each other, even in one "
            "namespace (X1369-9.4.1-2)."
        ),
    )
    security_levels: list[Name] = Field(
        default=["low", "standard", "high"],
        min_length=1,
        max_length=16,
        description=(
            "Values of the iotsec.io/security-level pod label; with securityLevelIsolation each level talks only "
            "to itself, pods with an undeclared level to nothing (X1369-9.4.1-2)."
        ),
        json_schema_extra=SET_LIST,
    )
    allow: list[IngressRule] | None = Field(
        default=None, max_length=64, description="Explicit ingress rules.", json_schema_extra=map_list("name")
    )
    egress: list[EgressRule] | None = Field(
        default=None, max_length=64, description="Explicit egress rules.", json_schema_extra=map_list("name")
    )
    internet: Internet | None = Field(default=None, description="Internet exposure (access/interface zones only).")
    deny_cidrs: list[CIDR] | None = Field(
        default=None,
        max_length=64,
        description="Ranges carved out of every CIDR and internet rule: a deny list (X1369-9.5.2-2).",
        json_schema_extra=SET_LIST,
    )
    allowed_ports: list[PortSpec] | None = Field(
        default=None,
        max_length=64,
        description="Container ports workloads may declare (default: any declared port, X1369-9.3.2-3).",
    )
    allowed_registries: list[Registry] | None = Field(
        default=None,
        max_length=64,
        description="Image registries (host[/path] prefixes) workloads may pull from (X1369-9.3.2-1).",
        json_schema_extra=SET_LIST,
    )
    image_pinning: ImagePinning | None = Field(
        default=None,
        description=(
            "How images must be pinned (X1369-9.3.2-1): digest (image@sha256:...), version (a digest or a full "
            "version tag such as 1.2.3; floating tags like 12 or 8.0 are refused) or any (any tag but latest). "
            "Default: digest in the management zone, version elsewhere."
        ),
    )
    workload_kinds: list[WorkloadKind] | None = Field(
        default=None,
        max_length=32,
        description=(
            "Custom workload kinds whose embedded pod specs the webhook checks in this domain's namespaces, in "
            "addition to the built-in table (Pods, Deployments, ..., Argo Rollouts, Knative Services, ...)."
        ),
    )
    exceptions: list[PolicyException] | None = Field(
        default=None, max_length=128, description="Approved, expiring waivers of admission rules."
    )

    @property
    def effective_image_pinning(self) -> ImagePinning:
        return self.image_pinning or DEFAULT_IMAGE_PINNING[self.zone]

    def cross_reference_problems(self) -> Iterator[tuple[str, str]]:
        """References between fields that CEL cannot check cheaply (relative paths)."""
        internet = self.internet
        if internet and (internet.ingress or internet.egress) and not (internet.ports or self.allowed_ports):
            yield "internet.ports", "internet exposure needs ports: set internet.ports or allowedPorts"
        peer_lists = [(f"allow[{i}].from", r.peers) for i, r in enumerate(self.allow or ())]
        peer_lists += [(f"egress[{i}].to", r.peers) for i, r in enumerate(self.egress or ())]
        for where, peers in peer_lists:
            for p_index, peer in enumerate(peers):
                for e_index, hole in enumerate(peer.except_ or ()):
                    if not _strictly_inside(hole, peer.cidr or ""):
                        yield f"{where}[{p_index}].except[{e_index}]", f"{hole} must lie strictly inside {peer.cidr}"
        for index, deny in enumerate(self.deny_cidrs or ()):
            if ipaddress.ip_network(deny, strict=False).prefixlen == 0:
                yield f"denyCIDRs[{index}]", f"{deny} denies everything: leave the rules out instead"
        named_only = self.namespace_selector is None
        for index, exception in enumerate(self.exceptions or ()):
            if named_only and exception.target.namespace not in (self.namespaces or ()):
                yield (
                    f"exceptions[{index}].target.namespace",
                    f"{exception.target.namespace!r} is not a member of this domain",
                )


def _strictly_inside(inner: str, outer: str) -> bool:
    hole, network = ipaddress.ip_network(inner, strict=False), ipaddress.ip_network(outer, strict=False)
    return hole.version == network.version and hole != network and hole.subnet_of(network)  # type: ignore[arg-type]


class Reachability(Model):
    """One edge of the effective reachability matrix."""

    from_: Annotated[str, Field(max_length=253)] = Field(description="Source domain, CIDR or internet.")
    to: Annotated[str, Field(max_length=253)] = Field(description="Destination domain, CIDR (cidr:…) or internet.")
    ports: list[Annotated[str, Field(max_length=32)]] = Field(
        default_factory=list, max_length=64, description="Ports, e.g. 8883/TCP; empty means all."
    )


class SecurityDomainStatus(Status):
    member_namespaces: list[Name] = Field(default_factory=list, max_length=4096)
    namespace_count: Annotated[int, Field(ge=0)] = 0
    policy_count: Annotated[int, Field(ge=0)] = 0
    reachability: list[Reachability] = Field(default_factory=list, max_length=4096)
    conflicts: list[Annotated[str, Field(max_length=512)]] = Field(default_factory=list, max_length=256)
    half_open_rules: list[Annotated[str, Field(max_length=512)]] = Field(
        default_factory=list,
        max_length=256,
        description="Rules that the other side does not match (an allow without the peer's egress, or vice versa).",
    )


__all__ = [
    "DEFAULT_IMAGE_PINNING",
    "EXPOSABLE_ZONES",
    "EgressRule",
    "ImagePinning",
    "IngressRule",
    "Internet",
    "Peer",
    "PolicyException",
    "ResourceName",
    "SecurityDomainSpec",
    "SecurityDomainStatus",
    "WorkloadKind",
    "Zone",
]
