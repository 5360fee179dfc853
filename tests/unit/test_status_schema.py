"""Every status the operator writes fits the status schema of the CRD as generated (issue 15: a CIDR in
`reachability.to` broke the pattern, and every status write of that domain was refused with a 422).

Hypothesis draws valid specs (each one passes the same validation as `iotsec validate` and the API server) and
clusters around them; the controllers' own status code runs on them (with an API adapter that records the status
patch instead of sending it), and the status as the API server would store it is checked against
`openAPIV3Schema.properties.status` of crds/*.yaml: types, patterns, maxLength, maxItems, enums, formats, and the
list-map and set uniqueness the server enforces.
"""

from __future__ import annotations

import functools
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


@functools.cache
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


def merged(current: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies a status patch (None removes)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(current) if isinstance(current, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merged(result.get(key), value)
    return result


@functools.cache
def status_validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(status_schema(kind), format_checker=validation.format_checker())


def schema_problems(kind: str, status: dict[str, Any]) -> list[str]:
    schema = status_schema(kind)
    validator = status_validator(kind)
    found = [f"status.{'.'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator.iter_errors(status)]
    found += [str(p) for p in validation._walk(schema, status, "status")]  # list-map keys, sets, CEL
    return found


class RecordingKube:
    """The API adapter as a status writer sees it: the status patches are kept, never sent."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def patch_status(self, api_version, kind, name, status, namespace=None, resource_version=None) -> None:
        self.patches.append(json.loads(json.dumps(status)))  # what goes on the wire


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


# ---------------------------------------------------------------- TenantIsolation

durations = st.from_regex(r"\A([1-9][0-9]{0,3}(w|d|h|m|s)){1,2}\Z")


@st.composite
def tenant_specs(draw: st.DrawFn) -> dict[str, Any]:
    namespaces = draw(st.lists(names.filter(lambda n: n != "kube-system"), min_size=1, max_size=6, unique=True))
    spec: dict[str, Any] = {
        "tenantID": draw(st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?\Z")),
        "securityDomain": draw(names),
        "namespaces": namespaces,
    }
    app_names = draw(st.lists(names, max_size=5, unique=True))
    if app_names:
        spec["applicationClasses"] = [{"name": "devices"}]
        spec["applications"] = []
        for name in app_names:
            overlap, rotation = sorted(draw(st.lists(st.integers(1, 10**6), min_size=2, max_size=2, unique=True)))
            app = {"name": name, "class": "devices", "namespace": draw(st.sampled_from(namespaces))}
            app |= {"keyAlgorithm": draw(st.sampled_from(["ed25519", "hmac-sha256"]))}
            app |= {"keyRotation": f"{rotation}{draw(st.sampled_from('wdhms'))}"}
            app |= {"keyOverlap": f"{overlap}s"}
            spec["applications"].append(app)
    storage = draw(st.sampled_from([None, "class", "provisioner"]))
    if storage == "class":
        spec["storage"] = {"storageClassName": draw(names)}
    elif storage == "provisioner":
        spec["storage"] = {"provisioner": "csi.example.com"}
    return spec


texts = st.text(max_size=300)


@SETTINGS
@given(
    spec=tenant_specs(),
    name=names,
    others=st.dictionaries(names, names, max_size=3),
    created=st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
    notes=st.tuples(st.lists(texts, max_size=3), st.lists(texts, max_size=3), st.none() | texts, st.booleans()),
    first_run=st.booleans(),
)
def test_every_tenantisolation_status_fits_the_schema(spec, name, others, created, notes, first_run) -> None:
    """`others`: namespaces another tenant labels (conflicts); `notes`: keys rotated, unreadable, a lost registry,
    a missing domain."""
    from iotsec.controllers import tenant as controller
    from iotsec.model.platform import Platform
    from iotsec.pki import appkeys

    body = body_of("TenantIsolation", name, spec)
    tenant = valid(body).spec
    labels = {ns: {"iotsec.io/tenant": other} for ns, other in others.items() if other != tenant.tenant_id}
    plan = controller.builder.plan_tenant(name, tenant, labels, Platform())
    rotated, unreadable, registry_missing, domain_missing = notes
    api = RecordingKube()
    run = controller._Run(api, body, tenant, NOW, None, set(), rotated=rotated, unreadable=unreadable)  # type: ignore[arg-type]
    run.registry_missing = registry_missing
    run.created = [] if first_run else list(plan.namespaces)
    for app in tenant.applications or ():
        if app.name in plan.app_ids:
            ring = appkeys.KeyRing(appkeys.new_key("hmac-sha256", created), None, None, None)
            run.applications.append(controller._application_status(app, tenant, ring))
    controller._write_status(run, plan, domain_missing)
    stored_status("TenantIsolation", body, api)


# ---------------------------------------------------------------- AuditPolicy

subdomains = st.one_of(
    names,
    st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?){0,3}\Z"),
    st.builds(lambda n: ".".join([n] * 4)[:253].strip(".-"), st.from_regex(r"\A[a-z0-9][-a-z0-9]{61}[a-z0-9]\Z")),
)
stamps = st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)).map(
    lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%SZ")
)


@SETTINGS
@given(
    name=subdomains,
    namespace=names,
    ref=st.none() | st.tuples(subdomains, st.none() | names),
    policy=st.sampled_from([None, "names-claim", "selects", "other"]),
    signing=st.tuples(st.booleans(), texts),
    last_canary=st.none() | stamps,
)
def test_every_auditpolicy_status_fits_the_schema(name, namespace, ref, policy, signing, last_canary) -> None:
    from iotsec.build import audit as builder
    from iotsec.build.apiserver_audit import policy_configmap_name
    from iotsec.controllers import audit as controller

    spec: dict[str, Any] = {}
    if ref is not None:
        spec["backupPolicyRef"] = {"name": ref[0], **({"namespace": ref[1]} if ref[1] else {})}
    body = body_of("AuditPolicy", name, spec)
    if last_canary:
        body["status"] = {"lastCanarySeen": last_canary}
    parsed = valid(body).spec
    backup_ref = builder.backup_ref(parsed, namespace)
    claim = builder.store_claim_name(name)
    policies = {"names-claim": {"pvcNames": [claim]}, "selects": {"pvcSelector": {}}, "other": {"pvcNames": ["x"]}}
    backup_policy = {"spec": policies[policy]} if policy else None
    readable, message = signing
    extra = [controller._signing_condition(readable, "Readable" if readable else "KeyUnreadable", message, 3)]
    silent = builder.silent_sink(body, parsed, NOW)
    api = RecordingKube()
    policy_map = f"{namespace}/{policy_configmap_name(name)}"
    controller._write_status(api, body, policy_map, backup_ref, backup_policy, [*extra, *([silent] if silent else [])])  # type: ignore[arg-type]
    stored_status("AuditPolicy", body, api)


# ---------------------------------------------------------------- BackupPolicy


@st.composite
def job_outcomes(draw: st.DrawFn, kind: str, targets: list[str]) -> dict[str, Any]:
    succeeded = draw(st.booleans())
    outcome: dict[str, Any] = {
        "succeeded": succeeded,
        "time": draw(stamps),
        "reason": draw(st.sampled_from(["Complete", "Failed", "BackoffLimitExceeded", "DeadlineExceeded"])),
        "message": draw(texts),
        "job": draw(subdomains),
        "uid": "u",
        "started": draw(st.none() | stamps),
    }
    if draw(st.booleans()):
        result: dict[str, Any] = {"succeeded": succeeded, "errors": draw(st.lists(texts, max_size=3))}
        if kind == "backup":
            result["targets"] = [
                {"name": t, "snapshots": draw(st.integers(0, 10**6)), "bytes": draw(st.integers(0, 2**62))}
                for t in targets
            ]
            result["duration_seconds"] = draw(st.floats(0, 10**7, allow_nan=False))
        if kind == "drill":
            result["restore_seconds"] = draw(st.floats(0, 10**7, allow_nan=False))
        outcome["result"] = result
    return outcome


@SETTINGS
@given(data=st.data(), name=names, namespace=names, scheduled=st.tuples(st.booleans(), texts), suspend=st.booleans())
def test_every_backuppolicy_status_fits_the_schema(data, name, namespace, scheduled, suspend) -> None:
    from iotsec.controllers import backup as controller

    targets = data.draw(st.lists(names, min_size=1, max_size=8, unique=True), label="targets")
    spec = {
        "schedule": "0 3 * * *",
        "pvcNames": data.draw(st.lists(subdomains, min_size=1, max_size=3, unique=True), label="pvcNames"),
        "targets": [
            {"name": t, "repository": f"s3:https://s3.example.com/bucket/{t}", "role": "offsite" if i else "primary"}
            for i, t in enumerate(targets)
        ],
        "suspend": suspend,
    }
    body = body_of("BackupPolicy", name, spec, namespace)
    parsed = valid(body).spec
    kinds = data.draw(st.lists(st.sampled_from(sorted(controller.CONDITION_OF)), unique=True), label="finished")
    found = {kind: data.draw(job_outcomes(kind, targets), label=kind) for kind in kinds}
    api = RecordingKube()
    controller._write_status(api, body, parsed, scheduled, found)  # type: ignore[arg-type]
    stored_status("BackupPolicy", body, api)


@pytest.mark.parametrize("duration", ["417420w", "99999999999w", "36501d"])
def test_a_duration_too_long_to_add_to_a_date_is_a_problem_not_a_crash(duration: str) -> None:
    """Found by the tenant test: keyRotation 417420w passed validation and then crashed every reconcile computing the
    next rotation (OverflowError, past year 9999); 99999999999w crashed validation itself."""
    body = body_of(
        "TenantIsolation",
        "t",
        {
            "tenantID": "a",
            "securityDomain": "d",
            "namespaces": ["n"],
            "applicationClasses": [{"name": "c"}],
            "applications": [{"name": "x", "class": "c", "namespace": "n", "keyRotation": duration}],
        },
    )
    problems = validation.validate_resource(body)
    assert [p.path for p in problems] == ["spec.applications[0].keyRotation"]
    assert "longer than 36500d" in problems[0].message
