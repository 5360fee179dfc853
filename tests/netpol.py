"""A NetworkPolicy evaluator for tests: would the cluster let this connection through?

It implements the Kubernetes semantics for the subset of features iotsec emits (pod and namespace selectors
with matchLabels/matchExpressions, ipBlock with except, ports with endPort, policyTypes): a pod selected by
no policy of a direction is open in that direction; a selected pod admits only what some rule allows.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from iotsec.model.labels import LEVEL_LABEL


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class External:
    ip: str


Endpoint = Pod | External


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.get("matchExpressions", []):
        present, value = req["key"] in labels, labels.get(req["key"])
        ok = {
            "In": present and value in req.get("values", []),
            "NotIn": not present or value not in req.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[req["operator"]]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict[str, Any], other: Endpoint, policy_ns: str, ns_labels: dict[str, dict[str, str]]) -> bool:
    if "ipBlock" in peer:
        if not isinstance(other, External):
            return False
        ip = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        net = ipaddress.ip_network(block["cidr"])
        if ip.version != net.version or ip not in net:
            return False
        return not any(
            ip in ipaddress.ip_network(e)
            for e in block.get("except", [])
            if ipaddress.ip_network(e).version == ip.version
        )
    if not isinstance(other, Pod):
        return False
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], ns_labels.get(other.namespace, {})):
            return False
    elif other.namespace != policy_ns:
        return False
    return _selects(peer.get("podSelector"), other.labels)


def _port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == protocol and p["port"] <= port <= p.get("endPort", p["port"]) for p in ports)


def _direction_allows(policies, pod: Pod, other: Endpoint, port: int, protocol: str, ns_labels, direction: str) -> bool:
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and direction in p["spec"]["policyTypes"]
        and _selects(p["spec"]["podSelector"], pod.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key)
            assert peers is None or peers, f"{policy['metadata']['name']}: an empty peer list would allow everything"
            if (
                peers is None or any(_peer_matches(pr, other, pod.namespace, ns_labels) for pr in peers)
            ) and _port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def can_connect(policies, ns_labels, source: Endpoint, target: Endpoint, port: int, protocol: str = "TCP") -> bool:
    """Both the source's egress and the target's ingress must allow the connection."""
    egress_ok = not isinstance(source, Pod) or _direction_allows(
        policies, source, target, port, protocol, ns_labels, "Egress"
    )
    ingress_ok = not isinstance(target, Pod) or _direction_allows(
        policies, target, source, port, protocol, ns_labels, "Ingress"
    )
    return egress_ok and ingress_ok


# ---------------------------------------------------------------- an independent analyzer (nca) and what to expect
#
# The isolation tests feed the same policies, namespaces and synthetic pods to network-config-analyzer (`nca`, a
# NetworkPolicy analyzer written by others) and to can_connect above, and compare both with the connectivity the
# SecurityDomain and TenantIsolation specs declare. Connections are sets of (protocol, port); ALL_CONNECTIONS is
# everything (every protocol, every port).

ALL_CONNECTIONS: frozenset[tuple[str, int]] = frozenset({("*", 0)})
PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")

UNDECLARED_LEVEL = "undeclared"
APP_LABEL = "app.kubernetes.io/name"
Conns = frozenset[tuple[str, int]]
Pair = tuple[str, str]


def union(*parts: Conns) -> Conns:
    if any(p == ALL_CONNECTIONS for p in parts):
        return ALL_CONNECTIONS
    return frozenset().union(*parts)


def intersect(left: Conns, right: Conns) -> Conns:
    if left == ALL_CONNECTIONS:
        return right
    if right == ALL_CONNECTIONS:
        return left
    return left & right


def allows(conns: Conns, protocol: str, port: int) -> bool:
    return conns == ALL_CONNECTIONS or (protocol, port) in conns


def port_specs(specs: Iterable[Any]) -> Conns:
    """(protocol, port) of API PortSpecs, ranges expanded."""
    return frozenset((s.protocol, p) for s in specs for p in range(s.port, (s.end_port or s.port) + 1))


def allow_all(namespace: str) -> dict[str, Any]:
    """The policy a careless or hostile tenant admin might add: everything in and out of the namespace."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-all", "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]},
    }


def pod_manifest(name: str, pod: Pod) -> dict[str, Any]:
    """A Pod as a workload would have it; never created on a server, only analysed."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": pod.namespace, "labels": dict(pod.labels)},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]},
    }


def namespace_manifest(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}


def nca_executable() -> str:
    """network-config-analyzer's `nca`, from its own venv inside ours (`make` puts it there), else from PATH.

    Its own venv because it pins PyYAML==6.0.2, which would hold the kubernetes client at 36.0.0, whose bearer
    token never reaches the API server (every live test would run as system:anonymous).
    """
    for candidate in (Path(sys.prefix) / "nca" / "bin" / "nca", Path(sys.executable).parent / "nca"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nca")
    assert found, "network-config-analyzer not found: `make` installs it into .venv/nca (see Makefile)"
    return found


def run_nca(
    policies: list[dict[str, Any]], ns_labels: dict[str, dict[str, str]], pods: dict[str, Pod], workdir: Path
) -> dict[Pair, Conns]:
    """nca's connectivity map between the pods ("namespace/name" pairs), IP-block endpoints left out."""
    workdir.mkdir(parents=True, exist_ok=True)
    files = {
        "policies.yaml": {"apiVersion": "v1", "kind": "List", "items": [_bare_policy(p) for p in policies]},
        "namespaces.yaml": {
            "apiVersion": "v1",
            "kind": "NamespaceList",
            "items": [namespace_manifest(n, labels) for n, labels in sorted(ns_labels.items())],
        },
        "pods.yaml": {
            "apiVersion": "v1",
            "kind": "PodList",
            "items": [pod_manifest(name.split("/")[1], pod) for name, pod in sorted(pods.items())],
        },
    }
    for filename, content in files.items():
        (workdir / filename).write_text(yaml.safe_dump(content, sort_keys=False))
    out = workdir / "connectivity.txt"
    command = [
        nca_executable(),
        "--connectivity",
        str(workdir / "policies.yaml"),
        "--ns_list",
        str(workdir / "namespaces.yaml"),
        "--pod_list",
        str(workdir / "pods.yaml"),
        "--output_format",
        "txt_no_fw_rules",  # one line per (source, destination): no grouping to undo
        "--output_endpoints",
        "pods",
        "--file_out",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"nca failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    assert out.exists(), f"nca wrote no output:\n{done.stdout}\n{done.stderr}"
    return parse_nca_connectivity(out.read_text(), pods.keys())


def _bare_policy(policy: dict[str, Any]) -> dict[str, Any]:
    meta = policy["metadata"]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": meta.get("labels") or {}},
        "spec": policy["spec"],
    }


def parse_nca_connectivity(text: str, pod_names: Iterable[str]) -> dict[Pair, Conns]:
    """Lines `SOURCE => DESTINATION : CONNECTIONS` of nca's txt_no_fw_rules output, between known pods only."""
    known = set(pod_names)
    result: dict[Pair, Conns] = {}
    for line in text.splitlines():
        if " => " not in line:
            continue
        endpoints, _, connections = line.partition(" : ")
        source, _, target = (part.strip() for part in endpoints.partition(" => "))
        if source in known and target in known and source != target:
            result[(source, target)] = parse_nca_connections(connections.strip())
    return result


def parse_nca_connections(text: str) -> Conns:
    """`All connections`, or cubes like `{protocols:TCP, UDP,dst_ports:53,8000-8010}` joined by commas."""
    if text == "All connections":
        return ALL_CONNECTIONS
    cubes = re.findall(r"\{([^{}]*)\}", text)
    assert cubes, f"unexpected nca connection text: {text!r}"
    conns: set[tuple[str, int]] = set()
    for cube in cubes:
        fields = dict(re.findall(r"(\w+):(.*?)(?=,\w+:|$)", cube))
        assert set(fields) <= {"protocols", "dst_ports"}, f"nca cube with dimensions we do not model: {cube!r}"
        protocols = fields.get("protocols", ", ".join(PORT_PROTOCOLS))
        assert not protocols.startswith("all but"), f"nca cube with protocols we do not model: {cube!r}"
        ports: list[int] = []
        for item in fields.get("dst_ports", "1-65535").split(","):
            start, _, end = item.partition("-")
            ports += range(int(start), int(end or start) + 1)
        conns |= {(protocol, port) for protocol in protocols.split(", ") for port in ports}
    return frozenset(conns)


@dataclass(frozen=True)
class Topology:
    """What the specs declare: domains, which namespace belongs to which domain and tenant, where DNS runs."""

    domains: dict[str, Any]  # name -> SecurityDomainSpec
    member_of: dict[str, str]  # namespace -> domain
    tenant_of: dict[str, str]  # namespace -> tenant id
    dns: Pod

    @classmethod
    def declared(
        cls,
        domains: dict[str, Any],
        tenants: Iterable[Any],
        ns_labels: dict[str, dict[str, str]],
        dns: Pod,
    ) -> Topology:
        """From SecurityDomain specs (namespaces, namespaceSelector) and TenantIsolation specs (namespaces)."""
        member_of: dict[str, str] = {}
        for name, spec in domains.items():
            selector = (
                spec.namespace_selector.model_dump(by_alias=True, exclude_none=True)
                if spec.namespace_selector
                else None
            )
            for namespace, labels in ns_labels.items():
                if namespace in (spec.namespaces or ()) or (selector is not None and _selects(selector, labels)):
                    assert member_of.setdefault(namespace, name) == name, f"{namespace} is claimed twice"
        tenant_of = {ns: t.tenant_id for t in tenants for ns in t.namespaces}
        return cls(domains, member_of, tenant_of, dns)

    def declared_ports(self) -> Conns:
        rules = [r for spec in self.domains.values() for r in [*(spec.allow or ()), *(spec.egress or ())]]
        return union(frozenset({("UDP", 53), ("TCP", 53)}), *(port_specs(r.ports) for r in rules))

    def domain_edges(self) -> dict[tuple[str, str], Conns]:
        """Ports between two different domains from the specs alone: A's egress to B meets B's allow from A."""
        edges = {}
        for (a, spec_a), (b, spec_b) in itertools.permutations(self.domains.items(), 2):
            out = [port_specs(r.ports) for r in spec_a.egress or () if any(p.domain == b for p in r.peers)]
            into = [port_specs(r.ports) for r in spec_b.allow or () if any(p.domain == a for p in r.peers)]
            if both := intersect(union(frozenset(), *out), union(frozenset(), *into)):
                edges[(a, b)] = both
        return edges

    def cross_tenant(self, connectivity: dict[Pair, Conns]) -> list[Pair]:
        """Connections between namespaces of two different tenants (either direction, any port)."""

        def tenant(pod: str) -> str | None:
            return self.tenant_of.get(pod.split("/")[0])

        return sorted(p for p in connectivity if tenant(p[0]) and tenant(p[1]) and tenant(p[0]) != tenant(p[1]))

    def cross_level_problems(self, pods: dict[str, Pod], connectivity: dict[Pair, Conns]) -> list[str]:
        """Pods of different security levels meet only on the declared cross-domain ports, and every declared
        port is open between the two domains' pods of different levels."""
        edges, seen = self.domain_edges(), {}
        problems = []
        for (source, target), conns in connectivity.items():
            a, b = pods[source], pods[target]
            if a.labels.get(LEVEL_LABEL) == b.labels.get(LEVEL_LABEL) or self.dns in (a, b):
                continue
            pair = (self.member_of[a.namespace], self.member_of[b.namespace])
            seen[pair] = union(seen.get(pair, frozenset()), conns)
            if conns == ALL_CONNECTIONS or not conns <= edges.get(pair, frozenset()):
                problems.append(
                    f"{source} -> {target}: {describe(conns)} (declared {pair}: {describe(edges.get(pair, frozenset()))})"
                )
        problems += [
            f"{a} -> {b}: declared {describe(ports)}, open {describe(seen.get((a, b), frozenset()))}"
            for (a, b), ports in edges.items()
            if seen.get((a, b)) != ports
        ]
        return problems

    def dns_problems(self, pods: dict[str, Pod], connectivity: dict[Pair, Conns]) -> list[str]:
        """Every member pod reaches the DNS pod on 53/UDP and 53/TCP only; the DNS pod reaches no member."""
        (dns,) = [name for name, pod in pods.items() if pod == self.dns]
        problems = []
        for name, pod in pods.items():
            if pod.namespace not in self.member_of:
                continue
            if (got := connectivity.get((name, dns), frozenset())) != {("UDP", 53), ("TCP", 53)}:
                problems.append(f"{name} -> DNS: {describe(got)}")
            if (dns, name) in connectivity:
                problems.append(f"DNS -> {name}: {describe(connectivity[(dns, name)])}")
        return problems

    def pods(self, unlabelled: bool = True) -> dict[str, Pod]:
        """In every member namespace one pod per declared security level, one with a level no domain declares
        (an adversary's), one without a level (unless `unlabelled` is False), one per peer podSelector that names
        the namespace's domain; and the DNS pod. Keys are "namespace/name"."""
        pods = {f"{self.dns.namespace}/dns": self.dns}
        for namespace, domain in sorted(self.member_of.items()):
            spec = self.domains[domain]
            for level in [*spec.security_levels, UNDECLARED_LEVEL]:
                pods[f"{namespace}/app-{level}"] = Pod(namespace, {APP_LABEL: "app", LEVEL_LABEL: level})
            if unlabelled:
                pods[f"{namespace}/app-unlabelled"] = Pod(namespace, {APP_LABEL: "app"})
            for index, labels in enumerate(self._selected_peers(domain)):
                pods[f"{namespace}/peer-{index}"] = Pod(namespace, {LEVEL_LABEL: spec.security_levels[0], **labels})
        return pods

    def _selected_peers(self, domain: str) -> list[dict[str, str]]:
        found = []
        for spec in self.domains.values():
            for rule in [*(spec.allow or ()), *(spec.egress or ())]:
                for peer in rule.peers:
                    selector = peer.pod_selector if peer.domain == domain else None
                    labels = dict(selector.match_labels or {}) if selector else {}
                    if labels and labels not in found:
                        found.append(labels)
        return found

    def expected(self, pods: dict[str, Pod]) -> dict[Pair, Conns]:
        """Every connection the specs declare between the pods (pairs with nothing allowed left out)."""
        result = {}
        for source, target in itertools.permutations(sorted(pods), 2):
            conns = intersect(self._egress(pods[source], pods[target]), self._ingress(pods[source], pods[target]))
            if conns:
                result[(source, target)] = conns
        return result

    def _egress(self, source: Pod, target: Pod) -> Conns:
        domain = self.member_of.get(source.namespace)
        if domain is None:
            return ALL_CONNECTIONS  # no policy selects the pod
        spec = self.domains[domain]
        dns = frozenset({("UDP", 53), ("TCP", 53)}) if target == self.dns else frozenset()
        rules = [
            port_specs(rule.ports)
            for rule in spec.egress or ()
            if _rule_selects(rule, source) and any(self._peer_matches(p, target, seen_from=source) for p in rule.peers)
        ]
        return union(dns, self._intra(domain, source, target), *rules)

    def _ingress(self, source: Pod, target: Pod) -> Conns:
        domain = self.member_of.get(target.namespace)
        if domain is None:
            return ALL_CONNECTIONS
        spec = self.domains[domain]
        rules = [
            port_specs(rule.ports)
            for rule in spec.allow or ()
            if _rule_selects(rule, target) and any(self._peer_matches(p, source, seen_from=target) for p in rule.peers)
        ]
        return union(self._intra(domain, target, source), *rules)

    def _peer_matches(self, peer: Any, other: Pod, seen_from: Pod) -> bool:
        """A domain peer: the domain's namespaces, but from a tenant's namespace only the platform's and its own."""
        if not peer.domain or self.member_of.get(other.namespace) != peer.domain:
            return False
        if not self._same_tenant_or_platform(seen_from, other):
            return False
        return peer.pod_selector is None or _selects(
            peer.pod_selector.model_dump(by_alias=True, exclude_none=True), other.labels
        )

    def _same_tenant_or_platform(self, own: Pod, other: Pod) -> bool:
        tenant = self.tenant_of.get(own.namespace)
        return tenant is None or self.tenant_of.get(other.namespace) in (None, tenant)

    def _intra(self, domain: str, own: Pod, other: Pod) -> Conns:
        spec = self.domains[domain]
        if self.member_of.get(other.namespace) != domain or spec.intra_domain_traffic == "none":
            return frozenset()
        if spec.intra_domain_traffic == "namespace" and own.namespace != other.namespace:
            return frozenset()
        if not self._same_tenant_or_platform(own, other):
            return frozenset()
        if spec.security_level_isolation:
            mine, theirs = own.labels.get(LEVEL_LABEL), other.labels.get(LEVEL_LABEL)
            if mine != theirs or (mine is not None and mine not in spec.security_levels):
                return frozenset()
        return ALL_CONNECTIONS


def _rule_selects(rule: Any, pod: Pod) -> bool:
    return rule.pod_selector is None or _selects(
        rule.pod_selector.model_dump(by_alias=True, exclude_none=True), pod.labels
    )


def restricted(connectivity: dict[Pair, Conns], probes: Conns) -> dict[Pair, Conns]:
    """The map seen through a set of probes (protocol, port): what a port-by-port evaluator can compare."""
    result = {}
    for pair, conns in connectivity.items():
        if seen := intersect(conns, probes):
            result[pair] = seen
    return result


def evaluator_map(
    policies: list[dict[str, Any]], ns_labels: dict[str, dict[str, str]], pods: dict[str, Pod], probes: Conns
) -> dict[Pair, Conns]:
    """can_connect's connectivity map between the pods, asked port by port for every probe (protocol, port)."""
    result = {}
    for source, target in itertools.permutations(sorted(pods), 2):
        allowed = frozenset(
            (protocol, port)
            for protocol, port in probes
            if can_connect(policies, ns_labels, pods[source], pods[target], port, protocol)
        )
        if allowed:
            result[(source, target)] = allowed
    return result


def differences(actual: dict[Pair, Conns], expected: dict[Pair, Conns]) -> list[str]:
    """Readable differences between two connectivity maps (empty when equal)."""
    lines = []
    for pair in sorted(actual.keys() | expected.keys()):
        got, want = actual.get(pair, frozenset()), expected.get(pair, frozenset())
        if got != want:
            lines.append(f"{pair[0]} -> {pair[1]}: analyzer {describe(got)}, declared {describe(want)}")
    return lines


def describe(conns: Conns) -> str:
    if conns == ALL_CONNECTIONS:
        return "all"
    return ",".join(f"{port}/{protocol}" for protocol, port in sorted(conns)) or "nothing"
