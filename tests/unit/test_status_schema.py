"""Every status the operator writes fits the status schema of the CRD as generated (issue 15: a CIDR in
`reachability.to` broke the pattern, and every status write of that domain was refused with a 422).

Hypothesis draws valid specs (each one passes the same validation as `iotsec validate` and the API server) and
clusters around them; the controllers' own status code runs on them (with an API adapter that records the status
patch instead of sending it), and the status as the API server would store it is checked against
`openAPIV3Schema.properties.status` of crds/*.yaml: types, patterns, maxLength, maxItems, enums, formats, and the
list-map and set uniqueness the server enforces.
"""

from __future__ import annotations

import ipaddress
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings, target
from hypothesis import strategies as st

from iotsec.api import validation
from iotsec.api.crd import all_crds
from iotsec.api.validation import InvalidResourceError, parse_resource
from iotsec.build import securitydomain as sd_builder
from iotsec.model.labels import DOMAIN_LABEL

kopf = pytest.importorskip("kopf")

CRDS = Path(__file__).resolve().parents[2] / "crds"
MAX_EXAMPLES = int(os.environ.get("IOTSEC_HYPOTHESIS_EXAMPLES", "100"))  # more for a deeper search
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def status_schema(kind: str) -> dict[str, Any]:
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    raise LookupError(kind)


def test_the_checked_schemas_are_the_generated_ones() -> None:
    for crd in all_crds():
        kind = crd["spec"]["names"]["kind"]
        assert status_schema(kind) == crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]


def merged(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies a status patch (None removes)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merged(result.get(key), value)
    return result


def schema_problems(kind: str, status: dict[str, Any]) -> list[str]:
    schema = status_schema(kind)
    validator = jsonschema.Draft202012Validator(schema, format_checker=validation._FORMATS)
    found = [f"status.{'.'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator.iter_errors(status)]
    found += [str(p) for p in validation._walk(schema, status, "status")]  # list-map keys, sets, CEL
    return found


class RecordingKube:
    """The API adapter as a status writer sees it: the status patches are kept, never sent."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
        self.patches: list[dict[str, Any]] = []
        self.objects = objects or {}

    def patch_status(self, api_version, kind, name, status, namespace=None, resource_version=None) -> None:
        self.patches.append(json.loads(json.dumps(status)))  # what goes on the wire

    def get(self, api_version, kind, name, namespace=None):
        return self.objects.get((kind, name))


@pytest.fixture(autouse=True)
def _quiet_events(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("event", "warn", "info", "exception"):
        monkeypatch.setattr(kopf, name, lambda *args, **kwargs: None)


def stored_status(kind: str, body: dict[str, Any], api: RecordingKube) -> dict[str, Any]:
    status = body.get("status") or {}
    for patch in api.patches:
        status = merged(status, patch)
    problems = schema_problems(kind, status)
    assert problems == [], f"{kind} status refused by the API server:\n" + "\n".join(problems)
    return status


def body_of(kind: str, name: str, spec: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "uid": f"uid-{name}",
        "generation": 3,
        "resourceVersion": "7",
        "creationTimestamp": "2026-01-01T00:00:00Z",
    }
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "iotsec.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}


def valid(body: dict[str, Any]) -> Any:
    """The resource if it passes iotsec's validation (schema, CEL, cross references); the example is dropped if not."""
    try:
        return parse_resource(body)
    except InvalidResourceError:
        assume(False)


# ---------------------------------------------------------------- strategies shared by the kinds

names = st.one_of(
    st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?\Z"),
    st.from_regex(r"\A[a-z0-9][-a-z0-9]{61}[a-z0-9]\Z"),  # the longest DNS label
    st.sampled_from(["a", "0", "a-b", "x--y", "9z", "kube-system"]),
)
protocols = st.sampled_from(["TCP", "UDP", "SCTP"])


@st.composite
def port_specs(draw: st.DrawFn) -> dict[str, Any]:
    port = draw(st.integers(1, 65535))
    spec: dict[str, Any] = {"port": port, "protocol": draw(protocols)}
    if draw(st.booleans()):
        spec["endPort"] = draw(st.integers(port, 65535))
    return spec


port_lists = st.lists(port_specs(), min_size=1, max_size=4) | st.lists(port_specs(), min_size=24, max_size=32)


@st.composite
def networks(draw: st.DrawFn, min_prefix: int = 0) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    prefix = draw(st.integers(min_prefix, bits))
    address = draw(st.integers(0, 2**bits - 1))
    return ipaddress.ip_network((address, prefix), strict=False)


@st.composite
def inside(draw: st.DrawFn, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str | None:
    if network.prefixlen == network.max_prefixlen:
        return None
    prefix = draw(st.integers(network.prefixlen + 1, network.max_prefixlen))
    offset = draw(st.integers(0, network.num_addresses - 1))
    return str(ipaddress.ip_network((int(network.network_address) + offset, prefix), strict=False))


# ---------------------------------------------------------------- SecurityDomain


@st.composite
def peers(draw: st.DrawFn, domain_names: list[str]) -> dict[str, Any]:
    if draw(st.booleans()):
        peer: dict[str, Any] = {"domain": draw(st.sampled_from(domain_names) | st.sampled_from(domain_names) | names)}
        if draw(st.booleans()):
            peer["podSelector"] = {"matchLabels": {"app": draw(names)}}
        return peer
    network = draw(networks())
    peer = {"cidr": str(network)}
    holes = [h for h in draw(st.lists(inside(network), max_size=3)) if h]
    if holes:
        peer["except"] = sorted(set(holes))
    return peer


@st.composite
def rules(draw: st.DrawFn, direction: str, domain_names: list[str]) -> list[dict[str, Any]]:
    rule_names = draw(st.lists(names, max_size=4, unique=True))
    return [
        {
            "name": name,
            direction: draw(st.lists(peers(domain_names), min_size=1, max_size=4)),
            "ports": draw(port_lists),
        }
        for name in rule_names
    ]


@st.composite
def domain_specs(draw: st.DrawFn, domain_names: list[str], namespace_names: list[str]) -> dict[str, Any]:
    zone = draw(st.sampled_from(["access", "core", "management", "interface", "support"]))
    spec: dict[str, Any] = {
        "zone": zone,
        "enforcement": draw(st.sampled_from(["enforce", "warn", "audit"])),
        "podSecurity": draw(st.sampled_from(["privileged", "baseline", "restricted"])),
        "intraDomainTraffic": draw(st.sampled_from(["domain", "namespace", "none"])),
        "securityLevelIsolation": draw(st.booleans()),
        "securityLevels": draw(st.lists(names, min_size=1, max_size=4, unique=True)),
    }
    members = draw(st.lists(st.sampled_from(namespace_names) | names, max_size=5, unique=True))
    if members:
        spec["namespaces"] = members
    if not members or draw(st.booleans()):
        spec["namespaceSelector"] = {"matchLabels": {"team": draw(st.sampled_from(["red", "blue"]))}}
    if draw(st.booleans()):
        spec["allow"] = draw(rules("from", domain_names))
    if draw(st.booleans()):
        spec["egress"] = draw(rules("to", domain_names))
    if draw(st.booleans()):
        spec["denyCIDRs"] = sorted({str(draw(networks(min_prefix=1))) for _ in range(draw(st.integers(1, 3)))})
    if zone in ("access", "interface") and draw(st.booleans()):
        spec["internet"] = {"ingress": draw(st.booleans()), "egress": draw(st.booleans()), "ports": draw(port_lists)}
    return spec


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[sd_builder.NamespaceInfo]]:
    """SecurityDomains that name each other (and some that do not exist), and namespaces some of them claim."""
    domain_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    namespace_names = draw(st.lists(names, min_size=1, max_size=6, unique=True))
    namespaces = []
    for name in namespace_names:
        labels = {"team": draw(st.sampled_from(["red", "blue"]))}
        if draw(st.booleans()):
            labels[DOMAIN_LABEL] = draw(st.sampled_from(domain_names))
        namespaces.append(sd_builder.NamespaceInfo(name, labels))
    bodies = []
    for index, name in enumerate(domain_names):
        body = body_of("SecurityDomain", name, draw(domain_specs(domain_names, namespace_names)))
        body["metadata"]["creationTimestamp"] = f"2026-01-01T00:00:0{index}Z"
        bodies.append(body)
    return bodies, namespaces


@SETTINGS
@given(clusters())
def test_every_securitydomain_status_fits_the_schema(cluster) -> None:
    from iotsec.controllers import securitydomain as controller

    bodies, namespaces = cluster
    domains = [
        sd_builder.Domain(b["metadata"]["name"], valid(b).spec, b["metadata"]["creationTimestamp"]) for b in bodies
    ]
    longest_note, most_ports = 0, 0
    for body, domain in zip(bodies, domains, strict=True):
        plan = sd_builder.plan_domain(domain, domains, namespaces)
        longest_note = max([longest_note, *map(len, plan.half_open + plan.conflicts)])
        most_ports = max([most_ports, *(len(edge.ports) for edge in plan.reachability)])
        api = RecordingKube()
        controller._write_status(api, body, plan)  # type: ignore[arg-type]
        stored_status("SecurityDomain", body, api)
    target(longest_note, label="longest halfOpenRules or conflicts entry (maxLength 512)")
    target(most_ports, label="most port ranges on one reachability edge (maxItems 64)")


def test_the_cidr_edge_of_issue_15_fits() -> None:
    """The example that was refused on the live cluster: egress to cidr:198.51.100.10/32, and its IPv6 sibling."""
    from iotsec.controllers import securitydomain as controller

    spec = {
        "zone": "core",
        "namespaces": ["ops"],
        "egress": [
            {"name": "ntp", "to": [{"cidr": "198.51.100.10/32"}, {"cidr": "2001:db8::/64"}], "ports": [{"port": 123}]}
        ],
        "allow": [{"name": "scrape", "from": [{"cidr": "fd00::/8"}], "ports": [{"port": 9100}]}],
    }
    body = body_of("SecurityDomain", "operations", spec)
    domain = sd_builder.Domain("operations", valid(body).spec)
    api = RecordingKube()
    controller._write_status(api, body, sd_builder.plan_domain(domain, [domain], [sd_builder.NamespaceInfo("ops")]))
    status = stored_status("SecurityDomain", body, api)
    assert {"from": "operations", "to": "cidr:198.51.100.10/32", "ports": ["123/TCP"]} in status["reachability"]
    assert {"from": "cidr:fd00::/8", "to": "operations", "ports": ["9100/TCP"]} in status["reachability"]


def _pair_statuses(allow_rules: list[dict[str, Any]], egress_ports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The statuses of a domain a (63 characters) admitting b (63 characters) by `allow_rules`, b sending on
    `egress_ports`."""
    from iotsec.controllers import securitydomain as controller

    a, b = "a" * 63, "b" * 63
    bodies = [
        body_of("SecurityDomain", a, {"zone": "core", "namespaces": ["x"], "allow": allow_rules}),
        body_of(
            "SecurityDomain",
            b,
            {
                "zone": "core",
                "namespaces": ["y"],
                "egress": [{"name": "out", "to": [{"domain": a}], "ports": egress_ports}],
            },
        ),
    ]
    domains = [sd_builder.Domain(body["metadata"]["name"], valid(body).spec) for body in bodies]
    namespaces = [sd_builder.NamespaceInfo("x"), sd_builder.NamespaceInfo("y")]
    statuses = []
    for body, domain in zip(bodies, domains, strict=True):
        api = RecordingKube()
        controller._write_status(api, body, sd_builder.plan_domain(domain, domains, namespaces))  # type: ignore[arg-type]
        statuses.append(stored_status("SecurityDomain", body, api))
    return statuses


def test_a_half_open_note_longer_than_the_schema_allows_is_clipped() -> None:
    """Found by this test: 32 port ranges make a halfOpenRules entry of 864 characters (maxLength 512), and the API
    server refuses the whole status. The entry is clipped; the Ready message keeps the note whole."""
    ports = [{"port": 10000 + 2 * i, "endPort": 60000 + i, "protocol": "SCTP"} for i in range(32)]
    status = _pair_statuses([{"name": "r" * 63, "from": [{"domain": "b" * 63}], "ports": ports}], [{"port": 1}])[0]
    (note,) = status["halfOpenRules"]
    assert len(note) == 512
    assert note.endswith("…")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert "60031/SCTP" in ready["message"]


def test_more_port_ranges_between_two_domains_than_the_schema_allows_are_clipped() -> None:
    """Three allow rules of 32 ports each, all matched by the peer's egress: 96 ranges on one edge (maxItems 64)."""
    rules = [
        {"name": f"r{r}", "from": [{"domain": "b" * 63}], "ports": [{"port": 1000 * r + 2 * i + 1} for i in range(32)]}
        for r in range(1, 4)
    ]
    statuses = _pair_statuses(rules, [{"port": 1, "endPort": 65535}])
    edge = next(e for e in statuses[0]["reachability"] if e["from"] == "b" * 63)
    assert len(edge["ports"]) == 64


def test_a_status_that_breaks_the_schema_is_caught() -> None:
    """The check itself can fail: the status of issue 15's 422, when `to` still had a DNS-label pattern."""
    strict = json.loads(json.dumps(status_schema("SecurityDomain")))
    strict["properties"]["reachability"]["items"]["properties"]["to"]["pattern"] = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    validator = jsonschema.Draft202012Validator(strict)
    bad = {"reachability": [{"from": "operations", "to": "cidr:198.51.100.10/32", "ports": []}]}
    assert list(validator.iter_errors(bad))
    assert schema_problems("SecurityDomain", {"conditions": [{"type": "Ready"}]})
    assert schema_problems("SecurityDomain", {"conflicts": ["x" * 513]})


NOW = datetime(2026, 12, 1, tzinfo=UTC)
