"""Offline validation: valid examples pass, and each broken spec fails with its field path and reason."""

from __future__ import annotations

import re
from typing import Any

import pytest

from iotsec.api.crd import all_crds
from iotsec.api.validation import InvalidResourceError, Problem, apply_defaults, parse_resource, validate_resource
from tests.conftest import load_examples

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
DELETE = object()


def mutate(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set (or with DELETE remove) the field at a dotted path such as spec.allow[0].ports[0].port."""
    steps = [int(i) if i else name for name, i in _STEP.findall(path)]
    node = obj
    for step in steps[:-1]:
        node = node[step]
    if value is DELETE:
        del node[steps[-1]]
    else:
        node[steps[-1]] = value
    return obj


@pytest.mark.parametrize("doc", load_examples(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_example_is_valid(doc):
    assert validate_resource(doc) == []
    resource = parse_resource(doc)
    assert resource.kind == doc["kind"]
    assert resource.name == doc["metadata"]["name"]


# (kind, example name, path, new value, expected problem path, expected message fragment)
INVALID = [
    # SecurityDomain
    (
        "SecurityDomain",
        "ingestion",
        "spec.zone",
        "dmz",
        "spec.zone",
        "must be one of: access, core, management",
    ),
    ("SecurityDomain", "ingestion", "spec.enforcement", "block", "spec.enforcement", "enforce, warn, audit"),
    (
        "SecurityDomain",
        "partner-api",
        "spec.allow[0].from[0].cidr",
        "203.0.113/24",
        "spec.allow[0].from[0].cidr",
        "is not a valid cidr",
    ),
    (
        "SecurityDomain",
        "partner-api",
        "spec.allow[0].from[0].cidr",
        "203.0.113.7",
        "spec.allow[0].from[0].cidr",
        "is not a valid cidr",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.allow[0].ports[0].port",
        70000,
        "spec.allow[0].ports[0].port",
        "65535",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.allow[0].ports[0].endPort",
        10,
        "spec.allow[0].ports[0].endPort",
        "endPort must not be below port",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.internet",
        {"ingress": True},
        "spec.internet",
        "only permitted for access and interface zones (X1369-9.4.1-4)",
    ),
    (
        "SecurityDomain",
        "admin-console",
        "spec.internet",
        {"egress": True},
        "spec.internet",
        "only permitted for access and interface zones",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.allow[0].from[0]",
        {"domain": "a", "cidr": "10.0.0.0/8"},
        "spec.allow[0].from[0]",
        "a peer names exactly one of domain or cidr",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.allow[0].from[0]",
        {},
        "spec.allow[0].from[0]",
        "a peer names exactly one of domain or cidr",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.allow[0].from[0]",
        {"domain": "a", "except": ["10.0.0.0/8"]},
        "spec.allow[0].from[0].except",
        "except only applies to a cidr peer",
    ),
    (
        "SecurityDomain",
        "admin-console",
        "spec.allow[0].from[0].podSelector",
        {"matchLabels": {"a": "b"}},
        "spec.allow[0].from[0].podSelector",
        "podSelector only applies to a domain peer",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.allow[1].name",
        "from-gateway",
        "spec.allow[1]",
        "duplicate entry name='from-gateway'",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.namespaces",
        ["iot-ingest", "iot-ingest"],
        "spec.namespaces[1]",
        "duplicate value",
    ),
    (
        "SecurityDomain",
        "admin-console",
        "spec.namespaces",
        DELETE,
        "spec",
        "name member namespaces in namespaces and/or namespaceSelector",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.namespaces[0]",
        "IoT_Ingest",
        "spec.namespaces[0]",
        "is not a DNS-1123 label",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.namespaceSelector.matchExpressions",
        [{"key": "tier", "operator": "In"}],
        "spec.namespaceSelector.matchExpressions[0]",
        "values must be non-empty for In and NotIn",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.exceptions[0].justification",
        "legacy",
        "spec.exceptions[0].justification",
        "too short",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.exceptions[0].expires",
        "next spring",
        "spec.exceptions[0].expires",
        "is not a valid date-time",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.exceptions[0].approver",
        DELETE,
        "spec.exceptions[0]",
        "'approver' is required",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.allowedRegistries",
        ["https://registry.example.com"],
        "spec.allowedRegistries[0]",
        "does not match",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.allowedPorts[0].protocol",
        "HTTP",
        "spec.allowedPorts[0].protocol",
        "TCP, UDP, SCTP",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.intraDomainTrafic",
        "domain",
        "spec.intraDomainTrafic",
        "unknown field",
    ),
    (
        "SecurityDomain",
        "ingestion",
        "spec.securityLevelIsolation",
        "yes",
        "spec.securityLevelIsolation",
        "must be of type boolean",
    ),
    (
        "SecurityDomain",
        "partner-api",
        "spec.allow[0].from[0].except",
        ["198.51.100.0/24"],
        "spec.allow[0].from[0].except[0]",
        "must lie strictly inside 203.0.113.0/24",
    ),
    ("SecurityDomain", "partner-api", "spec.denyCIDRs", ["0.0.0.0/0"], "spec.denyCIDRs[0]", "denies everything"),
    (
        "SecurityDomain",
        "admin-console",
        "spec.exceptions",
        [
            {
                "rule": "no-host-path",
                "target": {"namespace": "elsewhere"},
                "justification": "x" * 25,
                "approver": "ciso@example.com",
                "expires": "2027-01-01T00:00:00Z",
            }
        ],
        "spec.exceptions[0].target.namespace",
        "is not a member of this domain",
    ),
    # TenantIsolation
    ("TenantIsolation", "acme-utilities", "spec.tenantID", "ACME", "spec.tenantID", "is not a DNS-1123 label"),
    ("TenantIsolation", "acme-utilities", "spec.namespaces", [], "spec.namespaces", "should be non-empty"),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.namespaces",
        ["acme-meters", "kube-system"],
        "spec.namespaces",
        "system namespaces (kube-system, kube-public, kube-node-lease, default) are never a tenant's",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.userClasses[2].rules",
        [{"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "patch"]}],
        "spec.userClasses[2].rules[0].verbs",
        "may read networkpolicies but never write them",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.applicationClasses[0].rules",
        [{"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies/status"], "verbs": ["create"]}],
        "spec.applicationClasses[0].rules[0].verbs",
        "may read networkpolicies but never write them",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.userClasses[2].rules",
        DELETE,
        "spec.userClasses[2]",
        "rules are required for privilege custom",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.userClasses[0].rules",
        [{"resources": ["pods"], "verbs": ["get"]}],
        "spec.userClasses[0]",
        "not allowed otherwise",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.userClasses[0].groups",
        DELETE,
        "spec.userClasses[0]",
        "a user class binds at least one group or user",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.userClasses[2].rules[0].verbs",
        ["get", "escalate"],
        "spec.userClasses[2].rules[0].verbs",
        "may not grant escalate, bind, impersonate or * (X1369-9.6.3-1)",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.applicationClasses[0].rules[0].resources",
        ["*"],
        "spec.applicationClasses[0].rules[0].resources",
        "name resources explicitly",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.applications[0].class",
        "billing",
        "spec.applications",
        "every application's class must be declared in applicationClasses",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.applications[0].namespace",
        "globex-telematics",
        "spec.applications[0].namespace",
        "is not one of the tenant's namespaces",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.applications[0].keyRotation",
        "30 days",
        "spec.applications[0].keyRotation",
        "is not a duration such as 90d",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.applications[0].keyOverlap",
        "60d",
        "spec.applications[0].keyOverlap",
        "must be shorter than the rotation period",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.applications[0].keyAlgorithm",
        "hmac-md5",
        "spec.applications[0].keyAlgorithm",
        "must be one of: hmac-sha256, ed25519",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.deviceClasses[0].keyAlgorithm",
        "rsa-1024",
        "spec.deviceClasses[0].keyAlgorithm",
        "must be one of",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.deviceCA.rotateBefore",
        "2000d",
        "spec.deviceCA.rotateBefore",
        "must be shorter than the CA validity",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.quota.memory",
        "lots",
        "spec.quota.memory",
        "is not a quantity such as 500m",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.storage.provisioner",
        "ebs.csi.aws.com",
        "spec.storage",
        "set storageClassName (a shared encrypted class) or provisioner",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.storage.defaultDataClass",
        "public",
        "spec.storage.defaultDataClass",
        "defaultDataClass must be one of dataClasses",
    ),
    (
        "TenantIsolation",
        "globex-fleet",
        "spec.storage.parameters",
        {"encrypted": "true", "csi.storage.k8s.io/controller-expand-secret-namespace": "ceph-csi"},
        "spec.storage.parameters",
        "csi.storage.k8s.io/* parameters are iotsec's",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "spec.deletionPolicy",
        "Delete",
        "spec.deletionPolicy",
        "Retain, Shred",
    ),
    (
        "TenantIsolation",
        "acme-utilities",
        "metadata.namespace",
        "default",
        "metadata.namespace",
        "cluster-scoped",
    ),
    # BackupPolicy
    (
        "BackupPolicy",
        "timeseries",
        "spec.schedule",
        "0 25 * * *",
        "spec.schedule",
        "hour: 25 is outside 0-23",
    ),
    ("BackupPolicy", "timeseries", "spec.schedule", "every night", "spec.schedule", "is not a cron schedule: 5 fields"),
    (
        "BackupPolicy",
        "timeseries",
        "spec.timeZone",
        "Europe/Atlantis",
        "spec.timeZone",
        "not an IANA time zone",
    ),
    (
        "BackupPolicy",
        "timeseries",
        "spec.targets[1].role",
        "primary",
        "spec.targets",
        "exactly one target has role primary",
    ),
    (
        "BackupPolicy",
        "timeseries",
        "spec.targets[0].role",
        "offsite",
        "spec.targets",
        "exactly one target has role primary",
    ),
    ("BackupPolicy", "timeseries", "spec.targets", [], "spec.targets", "should be non-empty"),
    (
        "BackupPolicy",
        "timeseries",
        "spec.targets[0].repository",
        "/backups/timeseries",
        "spec.targets[0]",
        "a local (path) repository lives on a PersistentVolumeClaim",
    ),
    (
        "BackupPolicy",
        "timeseries",
        "spec.targets[0]",
        {"name": "primary", "role": "primary", "repository": "/var/run/backups", "claimName": "backups"},
        "spec.targets[0].repository",
        "would be mounted over the Job's /var/run",
    ),
    (
        "BackupPolicy",
        "timeseries",
        "spec.targets[0].repository",
        "ftp://backup",
        "spec.targets[0].repository",
        "does not match",
    ),
    (
        "BackupPolicy",
        "timeseries",
        "spec.retention",
        {"keepDaily": 0, "keepWeekly": 0, "keepMonthly": 0},
        "spec.retention",
        "a retention that keeps no snapshot would delete every backup",
    ),
    (
        "BackupPolicy",
        "timeseries",
        "spec.pvcSelector",
        DELETE,
        "spec",
        "name the volumes to back up with pvcSelector and/or pvcNames",
    ),
    (
        "BackupPolicy",
        "timeseries",
        "spec.verification.readDataSubset",
        "lots",
        "spec.verification.readDataSubset",
        "does not match",
    ),
    (
        "BackupPolicy",
        "timeseries",
        "spec.restoreDrill.schedule",
        "0 6 32 * *",
        "spec.restoreDrill.schedule",
        "day of month: 32",
    ),
    # AuditPolicy
    (
        "AuditPolicy",
        "platform-audit",
        "spec.rules[0].level",
        "Everything",
        "spec.rules[0].level",
        "None, Metadata, Request, RequestResponse",
    ),
    (
        "AuditPolicy",
        "platform-audit",
        "spec.rules[0].nonResourceURLs",
        ["/healthz"],
        "spec.rules[0]",
        "a rule matches resources or nonResourceURLs, not both",
    ),
    (
        "AuditPolicy",
        "platform-audit",
        "spec.trustedAdminGroups",
        [],
        "spec.trustedAdminGroups",
        "name at least one trusted admin group (X1369-9.6.3-1)",
    ),
    (
        "AuditPolicy",
        "platform-audit",
        "spec.sink.storage.warnAtPercent",
        100,
        "spec.sink.storage.warnAtPercent",
        "99",
    ),
    (
        "AuditPolicy",
        "platform-audit",
        "spec.anomalyRules[0].type",
        "Bruteforce",
        "spec.anomalyRules[0].type",
        "AuthFailures",
    ),
    (
        "AuditPolicy",
        "platform-audit",
        "spec.anomalyRules[0].threshold",
        0,
        "spec.anomalyRules[0].threshold",
        "minimum of 1",
    ),
    (
        "AuditPolicy",
        "platform-audit",
        "spec.anomalyRules[0].window",
        "0m",
        "spec.anomalyRules[0].window",
        "zero",
    ),
    (
        "AuditPolicy",
        "platform-audit",
        "spec.anomalyRules[0].type",
        "UnexpectedSource",
        "spec.anomalyRules[0].allowedCIDRs",
        "an UnexpectedSource rule names the allowedCIDRs requests may come from",
    ),
]


def _case_id(case: tuple[Any, ...]) -> str:
    return f"{case[0]}:{case[2]}={case[3]!r}"[:80]


@pytest.mark.parametrize(("kind", "name", "path", "value", "where", "fragment"), INVALID, ids=map(_case_id, INVALID))
def test_broken_spec_is_rejected_with_path_and_reason(example, kind, name, path, value, where, fragment):
    doc = mutate(example(kind, name), path, value)
    problems = validate_resource(doc)
    assert any(p.path == where and fragment in p.message for p in problems), problems
    with pytest.raises(InvalidResourceError) as caught:
        parse_resource(doc)
    assert caught.value.problems == problems


def test_every_cel_rule_is_exercised_by_a_failing_case(example):
    """CEL rules are enforced, not just present: each one is what some case above fails on."""
    produced = {
        problem.message
        for kind, name, path, value, *_ in INVALID
        for problem in validate_resource(mutate(example(kind, name), path, value))
    }
    rules = [rule for crd in all_crds() for rule in _cel_rules(crd["spec"]["versions"][0]["schema"])]
    assert len(rules) >= 15
    untested = [r["message"] for r in rules if "oldSelf" not in r["rule"] and r["message"] not in produced]
    assert untested == []


def _cel_rules(node: Any) -> list[dict[str, str]]:
    if isinstance(node, dict):
        own = list(node.get("x-kubernetes-validations", []))
        return own + [r for key, value in node.items() if key != "x-kubernetes-validations" for r in _cel_rules(value)]
    if isinstance(node, list):
        return [r for item in node for r in _cel_rules(item)]
    return []


def test_every_problem_of_a_resource_is_reported_at_once(example):
    doc = example("SecurityDomain", "partner-api")
    mutate(doc, "spec.zone", "core")
    mutate(doc, "spec.internet", {"ingress": True})
    mutate(doc, "spec.allow[0].ports[0].port", 0)
    mutate(doc, "spec.enforcment", "warn")
    paths = {p.path for p in validate_resource(doc)}
    assert paths == {"spec.internet", "spec.allow[0].ports[0].port", "spec.enforcment"}


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (
            {"apiVersion": "iotsec.io/v1", "kind": "SecurityDomain"},
            Problem("apiVersion", "must be iotsec.io/v1alpha1, got 'iotsec.io/v1'"),
        ),
        (
            {"apiVersion": "iotsec.io/v1alpha1", "kind": "Firewall"},
            Problem(
                "kind",
                "must be one of SecurityDomain, TenantIsolation, BackupPolicy, AuditPolicy, got 'Firewall'",
            ),
        ),
        (
            {"apiVersion": "iotsec.io/v1alpha1", "kind": "AuditPolicy", "spec": {}},
            Problem("metadata.name", "is required"),
        ),
        (
            {
                "apiVersion": "iotsec.io/v1alpha1",
                "kind": "AuditPolicy",
                "metadata": {"name": "Bad_Name"},
                "spec": {},
            },
            Problem("metadata.name", "'Bad_Name' is not a DNS-1123 subdomain (lowercase, digits, - and .)"),
        ),
        (
            {"apiVersion": "iotsec.io/v1alpha1", "kind": "AuditPolicy", "metadata": {"name": "a"}},
            Problem("", "'spec' is required"),
        ),
    ],
)
def test_identity_problems(doc, problem):
    assert problem in validate_resource(doc)


def test_defaults_are_applied_as_the_server_would(example):
    doc = example("SecurityDomain", "admin-console")
    del doc["spec"]["enforcement"]
    defaulted = apply_defaults(_schema("SecurityDomain"), doc)
    assert defaulted["spec"]["enforcement"] == "enforce"
    assert defaulted["spec"]["intraDomainTraffic"] == "namespace"
    assert defaulted["spec"]["allow"][0]["ports"][0]["protocol"] == "TCP"
    assert "enforcement" not in doc["spec"], "the input is not changed"


def test_object_defaults_expand_to_their_fields_defaults(example):
    doc = example("BackupPolicy", "audit-store")
    defaulted = apply_defaults(_schema("BackupPolicy"), doc)
    assert defaulted["spec"]["verification"] == {
        "enabled": True,
        "schedule": "0 4 * * 0",
        "readDataSubset": "5%",
    }
    assert defaulted["spec"]["encryption"] == {"retainOnDelete": True}


def test_parsed_spec_is_typed(example):
    resource = parse_resource(example("TenantIsolation", "acme-utilities"))
    assert resource.spec.applications[0].app_class == "ingest"
    assert resource.spec.device_ca.key_algorithm == "ecdsa-p256"
    assert resource.spec.quota.load_balancers == 0


def _schema(kind: str) -> dict[str, Any]:
    from iotsec.api.crd import resource_schema
    from iotsec.api.kinds import BY_KIND

    return resource_schema(BY_KIND[kind])


def test_internet_exposure_needs_ports(example):
    doc = example("SecurityDomain", "device-gateway")
    del doc["spec"]["internet"]["ports"]
    assert validate_resource(doc) == [], "allowedPorts stand in for internet.ports"
    del doc["spec"]["allowedPorts"]
    assert validate_resource(doc) == [
        Problem("spec.internet.ports", "internet exposure needs ports: set internet.ports or allowedPorts")
    ]
