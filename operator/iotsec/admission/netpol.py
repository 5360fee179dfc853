"""NetworkPolicies written by others than iotsec: refused where they widen what the namespace's domain allows.

NetworkPolicies only add: a connection is allowed when any policy selecting the pod allows it, so one allow-all
policy voids the domain's default deny. A policy written in a member namespace is therefore admitted only when
every connection it allows is already allowed by the policies iotsec plans for that namespace (the same
`network_policies` the operator applies, so the semantics live in one place). The test is sound and
conservative: a user rule's (peer, port) is covered when, for every pod the user policy may select, one domain
policy that certainly selects the same pods allows a peer that certainly contains it on those ports (ipBlocks may be
covered by several domain rules together). Whatever cannot be shown covered is refused, naming rule, peer and port.

iotsec's own operator is not judged here: it writes the domain's policies (and a BackupPolicy's egress) from the
custom resources, and the webhook's view of a SecurityDomain may lag its change by a moment.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from iotsec.admission.context import Context
from iotsec.admission.model import Finding
from iotsec.build.securitydomain import Domain, namespace_labels, network_policies
from iotsec.model.labels import MANAGED_BY, MANAGER, OWNER_KIND, OWNER_NAME, TENANT_LABEL
from iotsec.model.selectors import Requirement, requirements, selected

RULE = "network-policy-scope"
NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace (1.21+), not changeable
PROTOCOLS = ("TCP", "UDP", "SCTP")
LOWEST, HIGHEST = 1, 65535
DIRECTIONS = (("Ingress", "ingress", "from", "spec.allow"), ("Egress", "egress", "to", "spec.egress"))
MAX_LISTED = 3  # address ranges, and (addresses, ports) groups, named in one message

Interval = tuple[int, int]


# ---------------------------------------------------------------- label selectors


def implies(narrow: Sequence[Requirement], wide: Sequence[Requirement]) -> bool:
    """Whether every label set `narrow` selects is selected by `wide` (sufficient, not necessary)."""
    return all(any(_implies(mine, wanted) for mine in narrow if mine[0] == wanted[0]) for wanted in wide)


def _implies(mine: Requirement, wanted: Requirement) -> bool:
    _, have, have_values = mine
    _, want, want_values = wanted
    if want == "In":
        return have == "In" and have_values <= want_values
    if want == "Exists":
        return have in ("In", "Exists")
    if want == "DoesNotExist":
        return have == "DoesNotExist"
    if want == "NotIn":
        return (
            (have == "In" and not have_values & want_values)
            or (have == "NotIn" and want_values <= have_values)
            or have == "DoesNotExist"
        )
    return False


# ---------------------------------------------------------------- ports


@dataclass(frozen=True)
class Ports:
    """Ports per protocol as sorted disjoint intervals, and named ports (protocol, name) kept apart."""

    ranges: tuple[tuple[str, tuple[Interval, ...]], ...] = ()
    named: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def of(cls, ports: Iterable[Mapping[str, Any]] | None) -> Ports:
        """A NetworkPolicy rule's `ports` (missing or empty: every port of every protocol)."""
        listed = list(ports or ())
        if not listed:
            return cls.every()
        ranges: dict[str, list[Interval]] = {}
        named = set()
        for port in listed:
            protocol, number = str(port.get("protocol") or "TCP"), port.get("port")
            if isinstance(number, str):
                named.add((protocol, number))
                continue
            span = (LOWEST, HIGHEST) if number is None else (int(number), int(port.get("endPort") or number))
            ranges.setdefault(protocol, []).append(span)
        return cls(tuple(sorted((p, _merge(r)) for p, r in ranges.items())), frozenset(named))

    @classmethod
    def every(cls) -> Ports:
        return cls(tuple((p, ((LOWEST, HIGHEST),)) for p in sorted(PROTOCOLS)))

    def of_protocol(self, protocol: str) -> tuple[Interval, ...]:
        return dict(self.ranges).get(protocol, ())

    def covers_named(self, protocol: str, name: str) -> bool:
        return (protocol, name) in self.named or self.of_protocol(protocol) == ((LOWEST, HIGHEST),)

    def __bool__(self) -> bool:
        return bool(self.ranges or self.named)

    def __str__(self) -> str:
        if self == Ports.every():
            return "every port"
        spans = [f"{p} " + ",".join(str(a) if a == b else f"{a}-{b}" for a, b in r) for p, r in self.ranges]
        return ", ".join(spans + [f"{p} port named {n}" for p, n in sorted(self.named)])


def _merge(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


def _subtract(intervals: Iterable[Interval], holes: Iterable[Interval]) -> tuple[Interval, ...]:
    remaining = list(_merge(intervals))
    for hole_start, hole_end in _merge(holes):
        next_remaining = []
        for start, end in remaining:
            if hole_end < start or end < hole_start:
                next_remaining.append((start, end))
                continue
            if start < hole_start:
                next_remaining.append((start, hole_start - 1))
            if hole_end < end:
                next_remaining.append((hole_end + 1, end))
        remaining = next_remaining
    return tuple(remaining)


def uncovered_ports(wanted: Ports, covers: Sequence[Ports]) -> Ports:
    """The part of `wanted` that no port set in `covers` contains."""
    ranges = []
    for protocol, spans in wanted.ranges:
        left = _subtract(spans, [span for cover in covers for span in cover.of_protocol(protocol)])
        if left:
            ranges.append((protocol, left))
    named = {(p, n) for p, n in wanted.named if not any(c.covers_named(p, n) for c in covers)}
    return Ports(tuple(ranges), frozenset(named))


# ---------------------------------------------------------------- peers


@dataclass(frozen=True)
class PodPeer:
    """Pods matching `pods` in the namespaces matching `namespaces` (None: the policy's own namespace)."""

    namespaces: tuple[Requirement, ...] | None
    pods: tuple[Requirement, ...]


@dataclass(frozen=True)
class AddressPeer:
    """An ipBlock as address intervals per IP version: (version, first, last)."""

    addresses: tuple[tuple[int, int, int], ...]


Peer = PodPeer | AddressPeer


def parse_peer(peer: Mapping[str, Any]) -> Peer:
    block = peer.get("ipBlock")
    if block is not None:
        network = as_go_reads(str(block["cidr"]))
        holes = [as_go_reads(str(e)) for e in block.get("except") or ()]
        left = _subtract([_span(network)], [_span(h) for h in holes if h.version == network.version])
        return AddressPeer(tuple((network.version, a, b) for a, b in left))
    namespaces = peer.get("namespaceSelector")
    return PodPeer(None if namespaces is None else requirements(namespaces), requirements(peer.get("podSelector")))


MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def as_go_reads(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The network the API server and the CNIs (Go's net package) see: an IPv4-mapped IPv6 block
    (::ffff:10.0.0.0/104) is the IPv4 block 10.0.0.0/8, and is judged as that."""
    network = ipaddress.ip_network(cidr, strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(MAPPED):
        return ipaddress.IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
    return network


def _span(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Interval:
    return int(network.network_address), int(network.broadcast_address)


@dataclass(frozen=True)
class OwnNamespace:
    """The namespace a policy lives in, with the labels it certainly carries while its domain's policies exist."""

    name: str
    labels: Mapping[str, str]


def contains(wide: PodPeer, narrow: PodPeer, own: OwnNamespace) -> bool:
    """Whether every pod `narrow` may name is one `wide` names, seen from a policy in `own`."""
    if not implies(narrow.pods, wide.pods):
        return False
    narrow_own = narrow.namespaces is None or _only_names(narrow.namespaces) == frozenset({own.name})
    if wide.namespaces is None:
        return narrow_own
    if narrow_own:
        return selected(wide.namespaces, own.labels)
    assert narrow.namespaces is not None
    return implies(narrow.namespaces, wide.namespaces)


def _only_names(reqs: Sequence[Requirement]) -> frozenset[str] | None:
    """The namespace names a selector is confined to by kubernetes.io/metadata.name (None: not confined)."""
    names = [values for key, operator, values in reqs if key == NAME_LABEL and operator == "In"]
    return frozenset.intersection(*names) if names else None


def describe_peer(peer: Mapping[str, Any], parsed: Peer, namespace: str) -> str:
    if isinstance(parsed, AddressPeer):
        block = peer["ipBlock"]
        excepted = f" except {', '.join(block['except'])}" if block.get("except") else ""
        return f"ipBlock {block['cidr']}{excepted}"
    pods = "every pod" if not parsed.pods else f"pods {_selector_text(peer.get('podSelector'))}"
    if parsed.namespaces is None:
        return f"{pods} of namespace {namespace}"
    if not parsed.namespaces:
        return f"{pods} of every namespace (namespaceSelector {{}})"
    return f"{pods} of namespaces {_selector_text(peer.get('namespaceSelector'))}"


def _selector_text(selector: Mapping[str, Any] | None) -> str:
    parts = []
    for key, operator, values in requirements(selector):
        listed = ",".join(sorted(values))
        if operator == "In" and len(values) == 1:
            parts.append(f"{key}={listed}")
            continue
        parts.append(
            {"In": f"{key} in ({listed})", "NotIn": f"{key} notin ({listed})", "Exists": key}.get(operator, f"!{key}")
        )
    return "{" + ", ".join(parts) + "}" if parts else "{}"


# ---------------------------------------------------------------- what the domain allows


@dataclass(frozen=True)
class DomainRule:
    peers: tuple[Peer, ...] | None  # None: every peer
    ports: Ports


def domain_rules(
    policies: Iterable[Mapping[str, Any]], pods: Sequence[Requirement], direction: str
) -> list[DomainRule]:
    """The rules of the domain's policies of `direction` that certainly apply to every pod `pods` selects."""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    found = []
    for policy in policies:
        spec = policy["spec"]
        if direction not in spec.get("policyTypes", ()) or not implies(pods, requirements(spec.get("podSelector"))):
            continue
        for rule in spec.get(key) or ():
            peers = rule.get(peers_key)
            parsed = tuple(parse_peer(p) for p in peers) if peers else None
            found.append(DomainRule(parsed, Ports.of(rule.get("ports"))))
    return found


def uncovered_addresses(peer: AddressPeer, wanted: Ports, rules: Sequence[DomainRule]) -> list[tuple[str, Ports]]:
    """(addresses, ports) of `peer` x `wanted` that no domain rule allows, ports cut at every domain port boundary."""
    entries = [
        (tuple(a for p in r.peers if isinstance(p, AddressPeer) for a in p.addresses) if r.peers else None, r.ports)
        for r in rules
    ]
    spans: dict[Addresses, dict[str, list[Interval]]] = {}
    named: dict[Addresses, set[tuple[str, str]]] = {}
    gaps: dict[tuple[int, ...], Addresses] = {}  # by the covering rules: as many as the domain has port pieces
    for protocol, wanted_spans in wanted.ranges:
        for piece in _pieces(wanted_spans, [s for _, ports in entries for s in ports.of_protocol(protocol)]):
            covering = tuple(
                i for i, (_, ports) in enumerate(entries) if not _subtract([piece], ports.of_protocol(protocol))
            )
            if covering not in gaps:
                gaps[covering] = _address_gap(peer, [entries[i][0] for i in covering])
            if gap := gaps[covering]:
                spans.setdefault(gap, {}).setdefault(protocol, []).append(piece)
    for protocol, name in sorted(wanted.named):
        if gap := _address_gap(peer, [a for a, ports in entries if ports.covers_named(protocol, name)]):
            named.setdefault(gap, set()).add((protocol, name))
    return [
        (
            "all of it" if gap == peer.addresses else _addresses_text(gap),
            Ports(tuple(sorted((p, _merge(r)) for p, r in spans.get(gap, {}).items())), frozenset(named.get(gap, ()))),
        )
        for gap in dict.fromkeys([*spans, *named])
    ]


Addresses = tuple[tuple[int, int, int], ...]


def _pieces(spans: Iterable[Interval], cuts: Iterable[Interval]) -> list[Interval]:
    """`spans` split wherever an interval of `cuts` starts or ends: each piece lies wholly in or out of each cut."""
    bounds = sorted({s for a, b in cuts for s in (a, b + 1)})
    pieces = []
    for start, end in spans:
        inner = [b for b in bounds if start < b <= end]
        for left, right in zip([start, *inner], [*inner, end + 1], strict=True):
            pieces.append((left, right - 1))
    return pieces


def _address_gap(peer: AddressPeer, covering: Sequence[Addresses | None]) -> Addresses:
    """The addresses of `peer` outside every covering set (None covers everything)."""
    if any(c is None for c in covering):
        return ()
    gap: list[tuple[int, int, int]] = []
    for version in (4, 6):
        mine = [(a, b) for v, a, b in peer.addresses if v == version]
        holes = [(a, b) for c in covering if c is not None for v, a, b in c if v == version]
        gap += [(version, a, b) for a, b in _subtract(mine, holes)]
    return tuple(gap)


def _addresses_text(addresses: Addresses) -> str:
    networks: list[str] = []
    for version, start, end in addresses:
        address = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
        networks += [str(n) for n in ipaddress.summarize_address_range(address(start), address(end))]
    shown = ", ".join(networks[:MAX_LISTED])
    return shown + (f" (+{len(networks) - MAX_LISTED} more)" if len(networks) > MAX_LISTED else "")


# ---------------------------------------------------------------- the check


def check_network_policy(obj: dict[str, Any], ctx: Context, out: list[Finding]) -> None:
    """Findings for a NetworkPolicy that opens more than the domain's own policies."""
    namespace = (obj.get("metadata") or {}).get("namespace")
    snapshot = ctx.snapshot
    if not namespace or snapshot is None:
        return
    operator = ctx.user == snapshot.platform.operator_user
    if namespace == snapshot.platform.audit_namespace:
        if not (operator or (not ctx.user and _iotsecs(obj)) or _only_denies(obj.get("spec") or {})):
            out.append(_not_in_audit_namespace(namespace))
        return
    if operator and backup_egress(obj):
        return  # a BackupPolicy's Job egress: wider than the domain by design (the repositories are URLs)
    too_large = _too_large(obj.get("spec") or {})
    if too_large:
        out.append(too_large)
        return
    if ctx.domain.name is None:
        out.append(_unassigned(namespace))
        return
    domain = next((d for d in snapshot.domains if d.name == ctx.domain.name), None)
    if domain is None:
        return  # iotsec's own audit namespace: no domain has a say there
    tenant = (snapshot.namespaces.get(namespace) or {}).get(TENANT_LABEL)
    claim = snapshot.tenant_claims.get(namespace)
    tenant = tenant or (claim[0] if claim and claim[1] == domain.name else None)
    out += judge(obj, domain, namespace, tenant)


MAX_ITEMS = 256  # peers, ports or except entries of one rule: real policies hold a handful
MAX_WORK = 500_000  # sum of ports x (1 + except ranges) over all peers: about 0.1 s of coverage work on this code


def _too_large(spec: Mapping[str, Any]) -> Finding | None:
    """A policy too large to verify in the few milliseconds admission has (coverage grows with ports x ranges)."""
    work = 0
    for _, key, peers_key, _ in DIRECTIONS:
        for index, rule in enumerate(spec.get(key) or ()):
            if not isinstance(rule, Mapping):
                continue
            peers = [p for p in rule.get(peers_key) or () if isinstance(p, Mapping)]
            ports = rule.get("ports") or ()
            holes = [len((p.get("ipBlock") or {}).get("except") or ()) for p in peers]
            work += sum(max(1, len(ports)) * (1 + h) for h in holes)
            if max(len(peers), len(ports), *holes, 0) > MAX_ITEMS or work > MAX_WORK:
                return Finding(
                    RULE,
                    f"spec.{key}[{index}]",
                    f"{key}[{index}] is too large to verify in time ({len(peers)} peers, {len(ports)} ports, up to "
                    f"{max(holes, default=0)} except ranges; at most {MAX_ITEMS} of each and {MAX_WORK:,} "
                    "port x range pairs in a policy)",
                    "split the policy, or add the flow to the SecurityDomain",
                )
    return None


def backup_egress(obj: Mapping[str, Any]) -> bool:
    """Whether a policy has the shape of a BackupPolicy's Job egress (build.backup): `iotsec-backup-<policy>`,
    selecting that policy's Job pods only, egress only, to any address on listed ports. The operator's identity
    writes only this shape unjudged; anything else it writes is judged like anyone's."""
    metadata, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    selected = (spec.get("podSelector") or {}).get("matchLabels") or {}
    owner = selected.get(OWNER_NAME)
    return (
        isinstance(owner, str)
        and metadata.get("name") == f"iotsec-backup-{owner}"
        and spec.get("podSelector") == {"matchLabels": {OWNER_KIND: "BackupPolicy", OWNER_NAME: owner}}
        and spec.get("policyTypes") == ["Egress"]
        and not spec.get("ingress")
        and all(isinstance(r, Mapping) and set(r) == {"ports"} and r["ports"] for r in spec.get("egress") or ())
    )


def policy_types(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The directions a policy applies to: its policyTypes, or (unset) Ingress, plus Egress when it has egress
    rules (the API server's default)."""
    declared = spec.get("policyTypes")
    if isinstance(declared, list) and declared:
        return tuple(str(t) for t in declared)
    return ("Ingress", "Egress") if spec.get("egress") else ("Ingress",)


def _only_denies(spec: Mapping[str, Any]) -> bool:
    """A policy without a rule in any direction it applies to allows nothing (the chart's default deny)."""
    return not any(spec.get(key) for direction, key, _, _ in DIRECTIONS if direction in policy_types(spec))


def _iotsecs(obj: Mapping[str, Any]) -> bool:
    """Offline (`iotsec check`, no identity): iotsec's own rendered objects say so; the webhook always knows the
    writer, and there the label counts for nothing."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return isinstance(labels, Mapping) and labels.get(MANAGED_BY) == MANAGER


def _not_in_audit_namespace(namespace: str) -> Finding:
    return Finding(
        RULE,
        "metadata.namespace",
        f"{namespace} is iotsec's audit namespace: only the operator opens paths there (the audit sinks); others "
        "may only deny",
        "remove the policy; the AuditPolicy's sink settings decide who reaches the sinks",
    )


def judge(obj: Mapping[str, Any], domain: Domain, namespace: str, tenant: str | None) -> list[Finding]:
    """Every (rule, peer) of the policy that allows something the domain's planned policies do not."""
    planned, _ = network_policies(domain, namespace, tenant=tenant)
    labels = {**namespace_labels(domain), NAME_LABEL: namespace, **({TENANT_LABEL: tenant} if tenant else {})}
    own = OwnNamespace(namespace, labels)
    spec = obj.get("spec") or {}
    pods = requirements(spec.get("podSelector"))
    found = []
    for direction, key, peers_key, field in DIRECTIONS:
        if direction not in policy_types(spec):
            continue  # Kubernetes ignores the rules of a direction the policy does not declare
        rules = domain_rules(planned, pods, direction)
        fix = f"add the flow to SecurityDomain {domain.name} ({field}) instead"
        for index, rule in enumerate(spec.get(key) or ()):
            path = f"spec.{key}[{index}]"
            peers = rule.get(peers_key)
            if not peers:
                message = f"{key}[{index}] has no {peers_key}: allows every pod, namespace and address"
                found.append(Finding(RULE, path, f"{message} on {Ports.of(rule.get('ports'))}", fix))
                continue
            wanted = Ports.of(rule.get("ports"))
            for position, peer in enumerate(peers):
                gap = _gap(peer, wanted, rules, own)
                if gap:
                    where = f"{key}[{index}].{peers_key}[{position}]"
                    what = f"{where} allows {describe_peer(peer, parse_peer(peer), namespace)} {gap}"
                    found.append(Finding(RULE, f"spec.{where}", what, fix))
    return found


def _gap(peer: Mapping[str, Any], wanted: Ports, rules: Sequence[DomainRule], own: OwnNamespace) -> str:
    """What of `peer` x `wanted` no domain rule allows, as text ("" when it is all allowed)."""
    parsed = parse_peer(peer)
    if isinstance(parsed, AddressPeer):
        gaps = uncovered_addresses(parsed, wanted, rules)
        listed = "; ".join(f"{address} on {ports}" for address, ports in gaps[:MAX_LISTED])
        more = f"; {len(gaps) - MAX_LISTED} more" if len(gaps) > MAX_LISTED else ""
        return f"beyond the domain: {listed}{more}" if gaps else ""
    covers = [
        r.ports
        for r in rules
        if r.peers is None or any(isinstance(p, PodPeer) and contains(p, parsed, own) for p in r.peers)
    ]
    left = uncovered_ports(wanted, covers)
    return f"on {left}" if left else ""


def _unassigned(namespace: str) -> Finding:
    """The same finding the engine adds for other namespaced kinds in a namespace of no domain."""
    return Finding(
        "domain-membership",
        "metadata.namespace",
        f"namespace {namespace} belongs to no SecurityDomain",
        "add the namespace to a SecurityDomain (spec.namespaces or namespaceSelector)",
    )
