"""SecurityDomain → namespace labels and NetworkPolicies (X.1369 §9.4.1, §9.5.2).

Every member namespace is isolated by default (ingress and egress), may resolve DNS, and opens only what the
domain's rules name. Peer domains are selected by the `iotsec.io/domain` label that each domain puts on its own
members, so a rule naming a domain that does not exist yet selects nothing until it does.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from iotsec.model import selectors
from iotsec.model.labels import (
    DESCRIPTION,
    DOMAIN_LABEL,
    LEVEL_LABEL,
    PSA_BEFORE,
    TENANT_LABEL,
    ZONE_LABEL,
    owned_metadata,
)

if TYPE_CHECKING:
    from iotsec.api.common import PortSpec
    from iotsec.api.securitydomain import EgressRule, IngressRule, Peer, SecurityDomainSpec

KIND = "SecurityDomain"
PSA_PREFIX = "pod-security.kubernetes.io"
PRIVATE_RANGES = {
    4: ("10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16"),
    # and the IPv6 ranges that embed IPv4 addresses (NAT64, 6to4), so "the IPv6 internet" opens no private IPv4
    # range through them. IPv4-mapped ::ffff:0:0/96 cannot be excepted from ::/0: Go (the API server, CNIs) reads
    # such a block as IPv4 and refuses it as no subset; the webhook reads user blocks in it as IPv4 the same way.
    6: ("::1/128", "fc00::/7", "fe80::/10", "64:ff9b::/96", "2002::/16"),
}
EVERYWHERE = {4: "0.0.0.0/0", 6: "::/0"}
INTERNET = "internet"

C_SEGMENT = "X1369-9.4.1-2"
C_MUTUAL = "X1369-9.4.1-3"
C_BOUNDARY = "X1369-9.4.1-4"
C_ISOLATED_DATA = "X1369-9.2.1-1"
C_SOURCE_RANGES = "X1369-9.5.2-1"
C_DENY_LIST = "X1369-9.5.2-2"
C_PORTS = "X1369-9.3.2-3"
C_DDOS = "X1369-9.1.4-1"


@dataclass(frozen=True)
class Domain:
    """A valid SecurityDomain as the builder sees it."""

    name: str
    spec: SecurityDomainSpec
    created: str = ""  # creationTimestamp: the older domain keeps a namespace two domains claim


@dataclass(frozen=True)
class NamespaceInfo:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkSettings:
    """Cluster facts the policies depend on (where DNS runs, which namespaces no domain may take)."""

    dns_namespace: str = "kube-system"
    dns_pod_labels: Mapping[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})
    reserved_namespaces: tuple[str, ...] = ("kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True, order=True)
class PortRange:
    protocol: str
    start: int
    end: int

    def __str__(self) -> str:
        span = str(self.start) if self.start == self.end else f"{self.start}-{self.end}"
        return f"{span}/{self.protocol}"

    def intersect(self, other: PortRange) -> PortRange | None:
        if self.protocol != other.protocol:
            return None
        start, end = max(self.start, other.start), min(self.end, other.end)
        return PortRange(self.protocol, start, end) if start <= end else None


@dataclass(frozen=True, order=True)
class Edge:
    """`source` may open connections to `target` on `ports` (empty: every port)."""

    source: str
    target: str
    ports: tuple[str, ...] = ()

    def manifest(self) -> dict[str, Any]:
        return {"from": self.source, "to": self.target, "ports": list(self.ports)}


@dataclass
class DomainPlan:
    """Everything one SecurityDomain should make true, and what stands in its way."""

    domain: str
    members: list[str]
    namespace_labels: dict[str, dict[str, str]]
    policies: list[dict[str, Any]]
    missing_namespaces: list[str]
    reserved_namespaces: list[str]
    conflicts: list[str]
    missing_peers: list[str]
    reachability: list[Edge]
    half_open: list[str]
    dropped_rules: list[str]
    namespace_records: dict[str, dict[str, str]] = field(default_factory=dict)
    """Annotations a joining member gets before the domain's labels: its own Pod Security labels (joining_record)."""


@dataclass(frozen=True)
class Analysis:
    """Cluster-wide facts every domain's plan needs: who owns which namespace, and who reaches whom."""

    domains: Sequence[Domain]
    namespaces: Mapping[str, NamespaceInfo]
    owners: Mapping[str, str]
    claimants: Mapping[str, list[str]]
    edges: list[Edge]
    half_open: list[str]
    settings: NetworkSettings


def analyse(
    domains: Sequence[Domain], namespaces: Iterable[NamespaceInfo], settings: NetworkSettings | None = None
) -> Analysis:
    settings = settings or NetworkSettings()
    by_name = {ns.name: ns for ns in namespaces}
    owners, claimants = assign_namespaces(domains, by_name, settings)
    edges, half_open = reachability(domains)
    return Analysis(domains, by_name, owners, claimants, edges, half_open, settings)


def plan_domain(
    domain: Domain,
    domains: Sequence[Domain],
    namespaces: Iterable[NamespaceInfo],
    settings: NetworkSettings | None = None,
) -> DomainPlan:
    """The desired state of one domain, given every valid domain and every namespace of the cluster."""
    return plan_from(domain, analyse(domains, namespaces, settings))


def plan_domains(
    domains: Sequence[Domain], namespaces: Iterable[NamespaceInfo], settings: NetworkSettings | None = None
) -> list[DomainPlan]:
    """Plans of all domains, sharing one cluster-wide analysis (what `iotsec render` needs)."""
    analysis = analyse(domains, namespaces, settings)
    return [plan_from(domain, analysis) for domain in sorted(domains, key=lambda d: d.name)]


def plan_from(domain: Domain, analysis: Analysis) -> DomainPlan:
    claimed, missing = claimed_namespaces(domain, analysis.namespaces)
    members = sorted(ns for ns in claimed if analysis.owners.get(ns) == domain.name)
    conflicts = [
        _conflict_message(domain.name, ns, analysis.owners.get(ns), analysis.claimants[ns])
        for ns in sorted(claimed)
        if len(analysis.claimants.get(ns, ())) > 1
    ]
    policies: list[dict[str, Any]] = []
    dropped: list[str] = []
    for namespace in members:
        tenant = analysis.namespaces[namespace].labels.get(TENANT_LABEL)
        built, skipped = network_policies(domain, namespace, analysis.settings, tenant)
        policies += built
        dropped += skipped
    known = {d.name for d in analysis.domains}
    return DomainPlan(
        domain=domain.name,
        members=members,
        namespace_labels={ns: namespace_labels(domain) for ns in members},
        policies=policies,
        missing_namespaces=missing,
        reserved_namespaces=sorted(claimed & set(analysis.settings.reserved_namespaces)),
        conflicts=conflicts,
        missing_peers=sorted(peer_domains(domain.spec) - known),
        reachability=[e for e in analysis.edges if domain.name in (e.source, e.target)],
        half_open=[h for h in analysis.half_open if h.startswith(f"{domain.name} ")],
        dropped_rules=sorted(set(dropped)),
        namespace_records={
            ns: record for ns in members if (record := joining_record(analysis.namespaces[ns])) is not None
        },
    )


def claimed_namespaces(
    domain: Domain, namespaces: Mapping[str, NamespaceInfo], index: selectors.LabelIndex | None = None
) -> tuple[set[str], list[str]]:
    """Namespaces the domain names or selects that exist, and the named ones that do not. `index`: the namespaces'
    labels indexed (`selectors.LabelIndex`), when many domains are matched against the same namespaces."""
    named = set(domain.spec.namespaces or ())
    claimed = named & namespaces.keys()
    selector = domain.spec.namespace_selector
    if selector is not None:
        candidates = index.candidates(selector) if index is not None else None
        pool = namespaces.keys() if candidates is None else candidates & namespaces.keys()
        claimed |= {name for name in pool if selectors.matches(selector, namespaces[name].labels)}
    return claimed, sorted(named - namespaces.keys())


def assign_namespaces(
    domains: Sequence[Domain], namespaces: Mapping[str, NamespaceInfo], settings: NetworkSettings
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Which domain owns each claimed namespace, and who claims it.

    A namespace claimed twice stays with the domain that already labels it, else goes to the older domain;
    reserved namespaces (kube-system, ...) are never owned.
    """
    claimants: dict[str, list[Domain]] = {}
    index = selectors.LabelIndex({name: ns.labels for name, ns in namespaces.items()})
    for domain in domains:
        for namespace in claimed_namespaces(domain, namespaces, index)[0]:
            claimants.setdefault(namespace, []).append(domain)
    owners = {}
    for namespace, candidates in claimants.items():
        if namespace in settings.reserved_namespaces:
            continue
        holder = namespaces[namespace].labels.get(DOMAIN_LABEL)
        current = [d for d in candidates if d.name == holder]
        owners[namespace] = (current or sorted(candidates, key=lambda d: (d.created or "~", d.name)))[0].name
    return owners, {ns: sorted(d.name for d in ds) for ns, ds in claimants.items()}


def _conflict_message(domain: str, namespace: str, owner: str | None, claimants: list[str]) -> str:
    others = ", ".join(c for c in claimants if c != domain)
    keeper = "this domain keeps it" if owner == domain else f"{owner} keeps it" if owner else "nobody may take it"
    return f"namespace {namespace} is also claimed by {others}; {keeper}"


def peer_domains(spec: SecurityDomainSpec) -> set[str]:
    peers = [p for rule in [*(spec.allow or ()), *(spec.egress or ())] for p in rule.peers]
    return {p.domain for p in peers if p.domain}


PSA_MODES = {"enforce": ("enforce", "warn", "audit"), "warn": ("warn", "audit"), "audit": ("audit",)}
"""The Pod Security Admission modes a domain's enforcement asks of the API server: a domain that only warns must
not have the API server's own Pod Security admission deny what iotsec was told to warn about."""
PSA_LABELS = tuple(f"{PSA_PREFIX}/{mode}{suffix}" for mode in PSA_MODES["enforce"] for suffix in ("", "-version"))
MEMBER_LABELS = (DOMAIN_LABEL, ZONE_LABEL, *PSA_LABELS)
"""Every label a domain may put on a member namespace: what comes off when it leaves."""


def psa_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The Pod Security Admission labels among `labels`."""
    return {key: value for key, value in labels.items() if key.startswith(f"{PSA_PREFIX}/")}


def joining_record(namespace: NamespaceInfo) -> dict[str, str] | None:
    """The annotation a namespace joining a domain gets first: the Pod Security labels it has of its own, put back
    when it leaves (leaving_labels). None for a namespace a domain already labels: its Pod Security labels are
    iotsec's, and what it had before is recorded already (or, joined before iotsec recorded it, unknown)."""
    if namespace.labels.get(DOMAIN_LABEL):
        return None
    return {PSA_BEFORE: json.dumps(psa_labels(namespace.labels), sort_keys=True, separators=(",", ":"))}


def recorded_psa_labels(annotations: Mapping[str, str]) -> dict[str, str]:
    """The Pod Security labels a member had before it joined, as joining_record wrote them ({} if none or unreadable:
    an unreadable record restores nothing rather than something nobody chose)."""
    try:
        recorded = json.loads(annotations.get(PSA_BEFORE) or "{}")
    except ValueError:
        return {}
    if not isinstance(recorded, dict):
        return {}
    return {k: v for k, v in psa_labels(recorded).items() if isinstance(v, str) and k in PSA_LABELS}


def leaving_labels(annotations: Mapping[str, str]) -> dict[str, str | None]:
    """The label patch of a namespace leaving its domain (None removes): the domain's labels off, and the Pod
    Security labels it had before it joined back on."""
    return {**dict.fromkeys(MEMBER_LABELS), **recorded_psa_labels(annotations)}


def namespace_labels(domain: Domain) -> dict[str, str]:
    """Labels a member namespace carries: domain and zone (peers select on them) and Pod Security Admission in
    the modes its enforcement asks for (enforce: all three; warn: warn and audit; audit: audit)."""
    level = domain.spec.pod_security
    labels = {DOMAIN_LABEL: domain.name, ZONE_LABEL: domain.spec.zone}
    for mode in PSA_MODES[domain.spec.enforcement]:
        labels[f"{PSA_PREFIX}/{mode}"] = level
        labels[f"{PSA_PREFIX}/{mode}-version"] = "latest"
    return labels


def network_policies(
    domain: Domain, namespace: str, settings: NetworkSettings | None = None, tenant: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The NetworkPolicies of one member namespace, and the rules left out because nothing they name remains.

    In a tenant's namespace every domain peer means "the domain's platform namespaces and this tenant's own":
    NetworkPolicies can only add, so isolation between tenants of one domain is built into each allow.
    """
    settings = settings or NetworkSettings()
    spec = domain.spec
    build = _PolicyFactory(domain.name, namespace, tenant)
    policies = [
        build(
            "default-deny",
            [C_SEGMENT, C_ISOLATED_DATA],
            {},
            ingress=[],
            egress=[],
            description="Deny all traffic that no other iotsec policy allows.",
        ),
        build(
            "dns",
            [C_MUTUAL],
            {},
            egress=[{"to": [_dns_peer(settings)], "ports": _DNS_PORTS}],
            description="Name resolution via the cluster DNS only.",
        ),
    ]
    policies += _intra_policies(build, domain)
    dropped = []
    rules = [("in", "allow", r) for r in spec.allow or ()] + [("out", "egress", r) for r in spec.egress or ()]
    for prefix, kind, rule in rules:
        policy = _rule_policy(build, prefix, rule, spec.deny_cidrs)
        if policy is None:
            dropped.append(f"{kind}/{rule.name}: every peer lies inside denyCIDRs")
        else:
            policies.append(policy)
    policies += _internet_policies(build, domain)
    return policies, dropped


def _rule_policy(
    build: _PolicyFactory, prefix: str, rule: IngressRule | EgressRule, deny_cidrs: list[str] | None
) -> dict[str, Any] | None:
    """The policy of one allow (prefix in) or egress (prefix out) rule; None when no peer survives denyCIDRs."""
    peers = [p for peer in rule.peers for p in _peer(peer, deny_cidrs, build.tenant)]
    if not peers:  # an empty peer list would mean "everyone" to Kubernetes
        return None
    controls = [C_MUTUAL, C_PORTS, *_peer_controls(rule.peers, deny_cidrs)]
    direction = {"in": ("ingress", "from"), "out": ("egress", "to")}[prefix]
    traffic = [{direction[1]: peers, "ports": _ports(rule.ports)}]
    return build(
        f"{prefix}-{rule.name}",
        controls,
        selectors.manifest(rule.pod_selector),
        description=rule.description,
        **{direction[0]: traffic},
    )


class _PolicyFactory:
    def __init__(self, domain: str, namespace: str, tenant: str | None = None):
        self.domain, self.namespace, self.tenant = domain, namespace, tenant

    def __call__(
        self,
        suffix: str,
        controls: list[str],
        pod_selector: dict[str, Any],
        *,
        ingress: list[dict[str, Any]] | None = None,
        egress: list[dict[str, Any]] | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {"podSelector": pod_selector, "policyTypes": []}
        if ingress is not None:
            spec["policyTypes"].append("Ingress")
            if ingress:
                spec["ingress"] = ingress
        if egress is not None:
            spec["policyTypes"].append("Egress")
            if egress:
                spec["egress"] = egress
        annotations = {DESCRIPTION: description} if description else None
        metadata = owned_metadata(
            f"iotsec-{self.domain}-{suffix}",
            self.namespace,
            owner_kind=KIND,
            owner_name=self.domain,
            controls=controls,
            labels={DOMAIN_LABEL: self.domain},
            annotations=annotations,
        )
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata, "spec": spec}


_DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def _dns_peer(settings: NetworkSettings) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.dns_namespace}},
        "podSelector": {"matchLabels": dict(settings.dns_pod_labels)},
    }


def _intra_policies(build: _PolicyFactory, domain: Domain) -> list[dict[str, Any]]:
    mode = domain.spec.intra_domain_traffic
    if mode == "none":
        return []
    scopes = _domain_namespaces(domain.name, build.tenant) if mode == "domain" else [{}]
    description = f"Traffic inside the {'domain' if mode == 'domain' else 'namespace'}"
    if not domain.spec.security_level_isolation:
        peers = [{**scope, "podSelector": {}} for scope in scopes]
        return [
            build(
                "intra",
                [C_SEGMENT],
                {},
                ingress=[{"from": peers}],
                egress=[{"to": peers}],
                description=f"{description}.",
            )
        ]
    groups: list[tuple[str, dict[str, Any]]] = [
        (level, {"matchLabels": {LEVEL_LABEL: level}}) for level in domain.spec.security_levels
    ]
    groups.append(("unlabelled", {"matchExpressions": [{"key": LEVEL_LABEL, "operator": "DoesNotExist"}]}))
    policies = []
    for level, pods in groups:
        peers = [{**scope, "podSelector": pods} for scope in scopes]
        policies.append(
            build(
                f"intra-{level}",
                [C_SEGMENT],
                pods,
                ingress=[{"from": peers}],
                egress=[{"to": peers}],
                description=f"{description}, between pods of security level {level} only.",
            )
        )
    return policies


def _peer(peer: Peer, deny_cidrs: list[str] | None, tenant: str | None) -> list[dict[str, Any]]:
    """The NetworkPolicy peers for one rule peer (none when the deny list swallows a CIDR)."""
    if peer.domain:
        pods = {"podSelector": selectors.manifest(peer.pod_selector)} if peer.pod_selector is not None else {}
        return [{**scope, **pods} for scope in _domain_namespaces(peer.domain, tenant)]
    block = _ip_block(peer.cidr or "", peer.except_ or [], deny_cidrs or [])
    return [{"ipBlock": block}] if block else []


def _domain_namespaces(domain: str, tenant: str | None) -> list[dict[str, Any]]:
    """A domain's namespaces as seen from a namespace of `tenant`: platform ones and the tenant's own only."""
    if tenant is None:
        return [{"namespaceSelector": {"matchLabels": {DOMAIN_LABEL: domain}}}]
    return [
        {
            "namespaceSelector": {
                "matchLabels": {DOMAIN_LABEL: domain},
                "matchExpressions": [{"key": TENANT_LABEL, "operator": "DoesNotExist"}],
            }
        },
        {"namespaceSelector": {"matchLabels": {DOMAIN_LABEL: domain, TENANT_LABEL: tenant}}},
    ]


def _ip_block(cidr: str, excepts: Iterable[str], deny_cidrs: Iterable[str]) -> dict[str, Any] | None:
    """An ipBlock with the deny list carved out; None when the deny list covers the whole range."""
    block = _carved(cidr, tuple(excepts), tuple(deny_cidrs))
    return copy.deepcopy(block) if block else None


@lru_cache(maxsize=4096)
def _carved(cidr: str, excepts: tuple[str, ...], deny_cidrs: tuple[str, ...]) -> dict[str, Any] | None:
    network = ipaddress.ip_network(cidr, strict=False)
    carve = set()
    for raw in [*excepts, *deny_cidrs]:
        hole = ipaddress.ip_network(raw, strict=False)
        if hole.version != network.version:
            continue
        if network.subnet_of(hole):  # type: ignore[arg-type]
            return None
        if hole.subnet_of(network):  # type: ignore[arg-type]
            carve.add(hole)
    block: dict[str, Any] = {"cidr": str(network)}
    if carve:
        block["except"] = [str(n) for n in sorted(carve, key=lambda n: (n.network_address, n.prefixlen))]
    return block


def _peer_controls(peers: Iterable[Peer], deny_cidrs: list[str] | None) -> list[str]:
    controls = []
    if any(p.cidr for p in peers):
        controls.append(C_SOURCE_RANGES)
        if deny_cidrs:
            controls.append(C_DENY_LIST)
    return controls


def _ports(specs: Iterable[PortSpec]) -> list[dict[str, Any]]:
    ports = []
    for spec in specs:
        port: dict[str, Any] = {"protocol": spec.protocol, "port": spec.port}
        if spec.end_port is not None and spec.end_port != spec.port:
            port["endPort"] = spec.end_port
        ports.append(port)
    return ports


def _internet_policies(build: _PolicyFactory, domain: Domain) -> list[dict[str, Any]]:
    internet = domain.spec.internet
    if internet is None or not (internet.ingress or internet.egress):
        return []
    peers = [{"ipBlock": _internet_block(version, domain.spec.deny_cidrs or [])} for version in (4, 6)]
    ports = _ports(internet.ports or domain.spec.allowed_ports or ())
    controls = [C_BOUNDARY, C_DDOS, *([C_DENY_LIST] if domain.spec.deny_cidrs else [])]
    policies = []
    if internet.ingress:
        policies.append(
            build(
                "internet-in",
                controls,
                {},
                ingress=[{"from": peers, "ports": ports}],
                description="Connections from the internet (public addresses only).",
            )
        )
    if internet.egress:
        policies.append(
            build(
                "internet-out",
                controls,
                {},
                egress=[{"to": peers, "ports": ports}],
                description="Connections to the internet (public addresses only).",
            )
        )
    return policies


def _internet_block(version: int, deny_cidrs: Iterable[str]) -> dict[str, Any]:
    holes = [*PRIVATE_RANGES[version], *deny_cidrs]
    block = _ip_block(EVERYWHERE[version], [h for h in holes if ipaddress.ip_network(h).version == version], [])
    assert block is not None  # nothing but ::/0 or 0.0.0.0/0 itself covers everything, and those fail validation
    return block


# ---------------------------------------------------------------- reachability


def reachability(domains: Sequence[Domain]) -> tuple[list[Edge], list[str]]:
    """The effective reachability matrix, and the rules only one side of a boundary opened.

    Every member is default-deny in both directions, so domain A reaches domain B on a port only when A's
    egress and B's ingress both allow it. CIDR and internet sources need only the receiving side.
    """
    opened: dict[str, dict[tuple[str, str], list[PortRange]]] = {"allow": {}, "egress": {}}
    rule_names: dict[tuple[str, str, str], list[str]] = {}
    edges: set[Edge] = set()
    for domain in domains:
        spec = domain.spec
        if spec.intra_domain_traffic == "domain":
            edges.add(Edge(domain.name, domain.name))
        rules = [("allow", r) for r in spec.allow or ()] + [("egress", r) for r in spec.egress or ()]
        for kind, rule in rules:
            ranges = _ranges(rule.ports)
            for peer in rule.peers:
                other = peer.domain or f"cidr:{peer.cidr}"
                pair = (other, domain.name) if kind == "allow" else (domain.name, other)
                if peer.domain:
                    opened[kind].setdefault(pair, []).extend(ranges)
                    rule_names.setdefault((kind, *pair), []).append(rule.name)
                elif _ip_block(peer.cidr or "", peer.except_ or [], spec.deny_cidrs or []):
                    edges.add(Edge(*pair, _labels(ranges)))
        edges |= _internet_edges(domain)
    ingress, egress = opened["allow"], opened["egress"]
    half_open = []
    known = {d.name for d in domains}
    for pair in sorted(ingress.keys() | egress.keys()):
        source, target = pair
        if source == target or not {source, target} <= known:
            continue
        both = _intersect(ingress.get(pair, []), egress.get(pair, []))
        if both:
            edges.add(Edge(source, target, _labels(both)))
        half_open += _half_open(pair, ingress.get(pair, []), egress.get(pair, []), both, rule_names)
    return sorted(edges), sorted(half_open)


def _internet_edges(domain: Domain) -> set[Edge]:
    internet = domain.spec.internet
    if internet is None:
        return set()
    ports = _labels(_ranges(internet.ports or domain.spec.allowed_ports or ()))
    edges = set()
    if internet.ingress:
        edges.add(Edge(INTERNET, domain.name, ports))
    if internet.egress:
        edges.add(Edge(domain.name, INTERNET, ports))
    return edges


def _half_open(
    pair: tuple[str, str],
    allowed_in: list[PortRange],
    allowed_out: list[PortRange],
    both: list[PortRange],
    rule_names: dict[tuple[str, str, str], list[str]],
) -> list[str]:
    source, target = pair
    notes = []
    if _labels(allowed_in) != _labels(both):
        rules = ", ".join(rule_names.get(("allow", source, target), []))
        notes.append(
            f"{target} allow/{rules}: {source} has no egress to {target} on all of {', '.join(_labels(allowed_in))}"
        )
    if _labels(allowed_out) != _labels(both):
        rules = ", ".join(rule_names.get(("egress", source, target), []))
        notes.append(
            f"{source} egress/{rules}: {target} does not allow ingress from {source} on all of "
            f"{', '.join(_labels(allowed_out))}"
        )
    return notes


def _ranges(specs: Iterable[PortSpec]) -> list[PortRange]:
    return [PortRange(s.protocol, s.port, s.end_port or s.port) for s in specs]


def _intersect(left: list[PortRange], right: list[PortRange]) -> list[PortRange]:
    return sorted({r for a in left for b in right if (r := a.intersect(b))})


def _labels(ranges: Iterable[PortRange]) -> tuple[str, ...]:
    return tuple(str(r) for r in sorted(set(ranges)))
