"""A NetworkPolicy evaluator for tests: would the cluster let this connection through?

It implements the Kubernetes semantics for the subset of features iotsec emits (pod and namespace selectors
with matchLabels/matchExpressions, ipBlock with except, ports with endPort, policyTypes): a pod selected by
no policy of a direction is open in that direction; a selected pod admits only what some rule allows.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


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
