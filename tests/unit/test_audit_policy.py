"""The rendered audit Policy, its ConfigMap, the kube-apiserver flags and the sink kubeconfig."""

from __future__ import annotations

import base64
import copy
import hashlib
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from iotsec.api.auditpolicy import AuditPolicySpec
from iotsec.build.apiserver_audit import (
    PROTECTIVE_RULES,
    apiserver_flags,
    level_for,
    matching_rule,
    policy_configmap,
    policy_configmap_name,
    policy_errors,
    render_policy,
    secret_exposure,
    webhook_kubeconfig,
)
from tests.conftest import load_examples

EXAMPLE = next(d for d in load_examples() if d["kind"] == "AuditPolicy")
OPERATOR = "system:serviceaccount:iotsec-system:iotsec-operator"
CANARY = ("iotsec-system", "iotsec-audit-canary")
WRITES = ["create", "update", "patch", "delete", "deletecollection"]
LEVELS = {"None", "Metadata", "Request", "RequestResponse"}
RULE_KEYS = {"level", "users", "userGroups", "verbs", "resources", "namespaces", "nonResourceURLs", "omitStages"}
CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n"


def spec(**changes) -> AuditPolicySpec:
    body = copy.deepcopy(EXAMPLE["spec"])
    body.update(changes)
    return AuditPolicySpec.model_validate(body)


def policy(**changes) -> dict:
    return render_policy(spec(**changes), operator_users=[OPERATOR], canary=CANARY)


HOSTILE_RULES = [
    [{"level": "RequestResponse", "resources": [{"group": "", "resources": ["secrets"]}]}],
    [{"level": "RequestResponse"}],
    [{"level": "Request", "verbs": ["get", "list", "watch"]}],
    [{"level": "RequestResponse", "resources": [{"group": ""}]}],
    [{"level": "RequestResponse", "resources": [{"group": "", "resources": ["*"]}]}],
    [{"level": "RequestResponse", "resources": [{"group": "", "resources": ["serviceaccounts/*", "*/token"]}]}],
    [{"level": "RequestResponse", "resources": [{"group": "authentication.k8s.io"}]}],
    [{"level": "RequestResponse", "namespaces": ["kube-system"]}],
    [{"level": "None", "resources": [{"group": "", "resources": ["secrets"]}]}, {"level": "RequestResponse"}],
]


# --- structure ---------------------------------------------------------------------------------------------------


def assert_well_formed(p: dict) -> None:
    """Checked here independently of policy_errors: what kube-apiserver loads, in the shape iotsec promises."""
    assert p["apiVersion"] == "audit.k8s.io/v1"
    assert p["kind"] == "Policy"
    assert set(p) <= {"apiVersion", "kind", "metadata", "rules", "omitStages"}
    for rule in p["rules"]:
        assert rule["level"] in LEVELS, rule
        assert set(rule) <= RULE_KEYS, rule
        assert not (rule.get("resources") and rule.get("nonResourceURLs")), rule
        assert not (rule.get("namespaces") and rule.get("nonResourceURLs")), rule
        for entry in rule.get("resources", []):
            assert set(entry) <= {"group", "resources", "resourceNames"}, entry
            assert "group" in entry, entry
            assert not entry.get("resourceNames") or entry.get("resources"), entry
        for key in ("users", "userGroups", "verbs", "namespaces", "nonResourceURLs", "omitStages"):
            assert key not in rule or (isinstance(rule[key], list) and rule[key]), rule
        for url in rule.get("nonResourceURLs", []):
            assert url.startswith("/"), url
            assert "*" not in url[:-1], url
    assert p["rules"][-1] == {"level": "Metadata"}, "the last rule is a Metadata catch-all"


def test_example_policy_is_well_formed_and_loads():
    p = policy()
    assert_well_formed(p)
    assert p["omitStages"] == ["RequestReceived"]
    assert policy_errors(p) == []
    assert secret_exposure(p) == []


def test_configmap_is_valid_kubernetes_and_carries_the_policy():
    cm = policy_configmap("platform-audit", spec(), namespace="iotsec-system", operator_users=[OPERATOR], canary=CANARY)
    kubernetes_validate.validate(cm, kubernetes_validate.latest_version(), strict=True)
    meta = cm["metadata"]
    assert meta["name"] == "iotsec-audit-policy-platform-audit"
    assert meta["namespace"] == "iotsec-system"
    assert meta["labels"]["iotsec.io/owner-kind"] == "AuditPolicy"
    assert meta["labels"]["iotsec.io/owner-name"] == "platform-audit"
    assert set(meta["annotations"]["iotsec.io/controls"].split(",")) == {
        "X1369-9.6.4-1",
        "X1369-9.3.1-1",
        "X1369-9.5.1-2",
        "X1369-9.6.4-6",
    }
    text = cm["data"]["policy.yaml"]
    assert meta["annotations"]["iotsec.io/audit-policy-sha256"] == hashlib.sha256(text.encode()).hexdigest()
    loaded = yaml.safe_load(text)
    assert loaded["metadata"] == {"name": "iotsec-audit-policy-platform-audit"}
    del loaded["metadata"]
    assert loaded == policy()  # a YAML round trip keeps the level "None" a string
    assert list(loaded) == ["apiVersion", "kind", "omitStages", "rules"]  # sort_keys=False


def test_configmap_name_is_truncated_safely():
    assert policy_configmap_name("a" * 63) == "iotsec-audit-policy-" + "a" * 63
    long_a, long_b = policy_configmap_name("x" * 300 + "a"), policy_configmap_name("x" * 300 + "b")
    assert len(long_a) <= 253
    assert long_a != long_b
    assert long_a[-1].isalnum()
    dashes = policy_configmap_name("x" * 220 + "-" * 40)  # cut inside the dashes: none kept before the digest
    assert len(dashes) <= 253
    assert dashes[-9] == "-"
    assert dashes[-10] == "x"


def test_rule_order_canary_protective_user_baseline():
    p = policy()
    rules = p["rules"]
    assert rules[0] == {
        "level": "Request",
        "namespaces": ["iotsec-system"],
        "resources": [{"group": "", "resources": ["configmaps"], "resourceNames": ["iotsec-audit-canary"]}],
    }
    assert rules[1 : 1 + len(PROTECTIVE_RULES)] == list(PROTECTIVE_RULES)
    for rule in PROTECTIVE_RULES:
        assert rule["level"] == "Metadata"
        assert not {"users", "userGroups", "verbs", "namespaces"} & set(rule)
    user = rules[1 + len(PROTECTIVE_RULES) : 3 + len(PROTECTIVE_RULES)]
    assert user == [
        {"level": "RequestResponse", "resources": [{"group": "iotsec.io"}]},
        {"level": "None", "users": ["system:kube-proxy"], "verbs": ["watch"]},
    ]
    assert rules[-2:] == [{"level": "Request", "verbs": WRITES}, {"level": "Metadata"}]
    without_canary = render_policy(spec(), operator_users=[OPERATOR])
    assert without_canary["rules"] == rules[1:]


def test_none_rules_only_silence_reads():
    for rule in policy(rules=None)["rules"]:
        if rule["level"] == "None":
            assert rule.get("verbs"), rule
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule


def test_operator_rule_only_with_operator_users():
    plain = render_policy(spec(rules=None))
    assert not any(r.get("users") == [OPERATOR] for r in plain["rules"])
    p = render_policy(spec(rules=None), operator_users=[OPERATOR, OPERATOR, ""])
    assert {"level": "RequestResponse", "users": [OPERATOR], "verbs": WRITES} in p["rules"]


def test_user_rules_are_converted_to_the_policy_spelling():
    rules = [
        {
            "level": "Request",
            "users": ["alice"],
            "userGroups": ["platform:sre"],
            "verbs": ["update"],
            "namespaces": ["iot-processing"],
            "resources": [{"group": "apps", "resources": ["deployments"], "resourceNames": ["ingest"]}],
            "omitStages": ["ResponseStarted"],
        },
        {"level": "Metadata", "nonResourceURLs": ["/logs*"]},
        {"level": "RequestResponse", "verbs": ["*"], "resources": [{"group": "batch"}]},
    ]
    p = policy(rules=rules)
    start = 1 + len(PROTECTIVE_RULES)
    assert p["rules"][start : start + 2] == rules[:2]
    # "*" is no wildcard in an audit Policy (it would match no verb): the list goes, meaning every verb
    assert p["rules"][start + 2] == {"level": "RequestResponse", "resources": [{"group": "batch"}]}
    assert level_for(p, user="bob", verb="delete", group="batch", resource="jobs", namespace="n") == "RequestResponse"


def test_omit_stages():
    assert policy(omitStages=["RequestReceived", "ResponseStarted"])["omitStages"] == [
        "RequestReceived",
        "ResponseStarted",
    ]
    assert "RequestReceived" in render_policy(AuditPolicySpec())["omitStages"]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"level": "None", "namespaces": ["a"], "nonResourceURLs": ["/x"]}], "both regular resources"),
        ([{"level": "None", "resources": [{"group": "", "resourceNames": ["a"]}]}], "resourceNames requires"),
        ([{"level": "None", "nonResourceURLs": ["healthz"]}], "must begin with '/'"),
        ([{"level": "None", "nonResourceURLs": ["/a*b"]}], "must begin with '/'"),
        ([{"level": "None", "resources": [{"group": "rbac.authorization.k8s.io/v1"}]}], "DNS subdomain"),
    ],
)
def test_rules_kube_apiserver_would_refuse_are_refused(rules, message):
    with pytest.raises(ValueError, match=message):
        policy(rules=rules)


def test_policy_errors_reports_what_the_server_rejects():
    assert policy_errors({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": []}) == [
        "rules must be a non-empty list"
    ]
    bad = {
        "apiVersion": "audit.k8s.io/v1beta1",
        "kind": "Policy",
        "omitStages": ["Never"],
        "rules": [{"level": "Everything", "resource": [], "omitStages": ["Sometimes"]}],
    }
    errors = policy_errors(bad)
    assert any("apiVersion" in e for e in errors)
    assert any("unknown stage 'Never'" in e for e in errors)
    assert any("rules[0].level" in e for e in errors)
    assert any("unknown field 'resource'" in e for e in errors)
    assert any("unknown stage 'Sometimes'" in e for e in errors)


def test_canary_needs_a_namespace_and_a_name():
    with pytest.raises(ValueError, match="canary"):
        render_policy(spec(), canary=("", "x"))


def test_rendering_shares_no_state():
    first = policy()
    first["rules"][1]["resources"][0]["resources"].append("pods")
    first["rules"][-1]["level"] = "None"
    assert policy() != first
    assert policy()["rules"][1] == PROTECTIVE_RULES[0]


# --- levels, as the API server would pick them -------------------------------------------------------------------

ADMIN = {"user": "carol", "groups": ["platform:sre", "system:authenticated"]}
DEV = {"user": "dave", "groups": ["system:authenticated"]}
KUBE_SYSTEM_SA = {
    "user": "system:serviceaccount:kube-system:coredns",
    "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
}
NODE = {"user": "system:node:worker-1", "groups": ["system:nodes", "system:authenticated"]}


@pytest.mark.parametrize(
    ("who", "request_", "level"),
    [
        (DEV, {"verb": "get", "resource": "secrets", "namespace": "iot", "name": "db"}, "Metadata"),
        (ADMIN, {"verb": "list", "resource": "secrets"}, "Metadata"),
        (NODE, {"verb": "get", "resource": "secrets", "namespace": "iot", "name": "db"}, "Metadata"),
        ({"user": OPERATOR, "groups": []}, {"verb": "patch", "resource": "secrets", "namespace": "a"}, "Metadata"),
        (KUBE_SYSTEM_SA, {"verb": "watch", "resource": "secrets"}, "Metadata"),
        (DEV, {"verb": "create", "resource": "serviceaccounts", "subresource": "token", "namespace": "a"}, "Metadata"),
        (DEV, {"verb": "create", "group": "authentication.k8s.io", "resource": "tokenreviews"}, "Metadata"),
        (DEV, {"verb": "create", "group": "authorization.k8s.io", "resource": "subjectaccessreviews"}, "Metadata"),
        (DEV, {"verb": "update", "resource": "configmaps", "namespace": "iot", "name": "settings"}, "Metadata"),
        (
            ADMIN,
            {"verb": "create", "group": "rbac.authorization.k8s.io", "resource": "clusterrolebindings"},
            "RequestResponse",
        ),
        (ADMIN, {"verb": "delete", "group": "rbac.authorization.k8s.io", "resource": "roles"}, "RequestResponse"),
        (DEV, {"verb": "create", "resource": "pods", "subresource": "exec", "namespace": "iot"}, "RequestResponse"),
        # a websocket exec is a GET: still recorded in full, also for the quietened kube-system accounts
        (
            KUBE_SYSTEM_SA,
            {"verb": "get", "resource": "pods", "subresource": "exec", "namespace": "a"},
            "RequestResponse",
        ),
        (
            DEV,
            {"verb": "create", "resource": "pods", "subresource": "portforward", "namespace": "a"},
            "RequestResponse",
        ),
        (NODE, {"verb": "get", "resource": "nodes", "subresource": "proxy", "name": "worker-2"}, "RequestResponse"),
        (
            DEV,
            {"verb": "patch", "resource": "pods", "subresource": "ephemeralcontainers", "namespace": "a"},
            "RequestResponse",
        ),
        (
            ADMIN,
            {"verb": "patch", "group": "iotsec.io", "resource": "auditpolicies", "name": "platform-audit"},
            "RequestResponse",
        ),
        (
            ADMIN,
            {"verb": "update", "group": "admissionregistration.k8s.io", "resource": "validatingwebhookconfigurations"},
            "RequestResponse",
        ),
        (
            ADMIN,
            {
                "verb": "update",
                "group": "certificates.k8s.io",
                "resource": "certificatesigningrequests",
                "subresource": "approval",
            },
            "RequestResponse",
        ),
        (
            {"user": "system:kube-proxy", "groups": ["system:authenticated"]},
            {"verb": "watch", "resource": "endpoints"},
            "None",
        ),
        (
            {"user": "system:kube-scheduler", "groups": ["system:authenticated"]},
            {"verb": "get", "group": "coordination.k8s.io", "resource": "leases", "namespace": "kube-system"},
            "None",
        ),
        # … but their writes are recorded
        (
            {"user": "system:kube-scheduler", "groups": ["system:authenticated"]},
            {"verb": "update", "group": "coordination.k8s.io", "resource": "leases", "namespace": "kube-system"},
            "Request",
        ),
        (NODE, {"verb": "list", "resource": "pods"}, "None"),
        (NODE, {"verb": "patch", "resource": "nodes", "subresource": "status", "name": "worker-1"}, "Request"),
        (KUBE_SYSTEM_SA, {"verb": "list", "resource": "services"}, "None"),
        (KUBE_SYSTEM_SA, {"verb": "create", "resource": "pods", "namespace": "kube-system"}, "Request"),
        (DEV, {"verb": "get", "non_resource_url": "/healthz"}, "None"),
        (DEV, {"verb": "get", "non_resource_url": "/readyz/etcd"}, "None"),
        (DEV, {"verb": "get", "non_resource_url": "/openapi/v3"}, "None"),
        (DEV, {"verb": "get", "non_resource_url": "/apis"}, "Metadata"),
        (DEV, {"verb": "post", "non_resource_url": "/healthz"}, "Metadata"),
        (DEV, {"verb": "create", "group": "apps", "resource": "deployments", "namespace": "iot"}, "Request"),
        (DEV, {"verb": "delete", "resource": "persistentvolumeclaims", "namespace": "iot", "name": "d"}, "Request"),
        (
            {"user": OPERATOR, "groups": ["system:serviceaccounts"]},
            {"verb": "patch", "group": "networking.k8s.io", "resource": "networkpolicies", "namespace": "iot"},
            "RequestResponse",
        ),
        (DEV, {"verb": "get", "resource": "pods", "namespace": "iot", "name": "p"}, "Metadata"),
        (DEV, {"verb": "get", "resource": "pods", "subresource": "log", "namespace": "iot"}, "Metadata"),
        # an unauthenticated request (a failed login) reaches the policy without a user
        ({"user": None, "groups": []}, {"verb": "get", "resource": "pods"}, "Metadata"),
        ({"user": None, "groups": []}, {"verb": "get", "resource": "secrets"}, "Metadata"),
        # the canary's nonce travels in the request body, whoever writes it
        (
            {"user": OPERATOR, "groups": []},
            {"verb": "update", "resource": "configmaps", "namespace": CANARY[0], "name": CANARY[1]},
            "Request",
        ),
        (
            {"user": OPERATOR, "groups": []},
            {"verb": "patch", "resource": "configmaps", "namespace": CANARY[0], "name": CANARY[1]},
            "Request",
        ),
        # a create has no name in the request attributes: it falls to the ConfigMap rule
        (
            {"user": OPERATOR, "groups": []},
            {"verb": "create", "resource": "configmaps", "namespace": CANARY[0]},
            "Metadata",
        ),
        (
            {"user": OPERATOR, "groups": []},
            {"verb": "update", "resource": "configmaps", "namespace": "elsewhere", "name": CANARY[1]},
            "Metadata",
        ),
    ],
)
def test_levels_the_api_server_picks(who, request_, level):
    assert level_for(policy(), **who, **request_) == level


def test_evaluator_matches_like_the_api_server():
    p = {
        "rules": [
            {"level": "RequestResponse", "resources": [{"group": "", "resources": ["pods/exec"]}]},
            {"level": "Request", "resources": [{"group": "apps", "resources": ["*/scale"]}]},
            {"level": "Metadata", "resources": [{"group": "batch", "resources": ["jobs/*"]}]},
            {"level": "RequestResponse", "resources": [{"group": "", "resources": ["pods"]}]},
            {
                "level": "Request",
                "namespaces": ["a"],
                "resources": [{"group": "", "resources": ["services"], "resourceNames": ["web"]}],
            },
            {"level": "Metadata", "userGroups": ["ops", "sre"], "verbs": ["delete"]},
            {"level": "Request", "users": ["alice"], "nonResourceURLs": ["/debug/*", "/version"]},
            {"level": "Metadata", "namespaces": [""]},
        ]
    }

    def level(**request) -> str:
        request.setdefault("user", "bob")
        return level_for(p, **request)

    assert level(verb="get", resource="pods", subresource="exec", namespace="x") == "RequestResponse"
    assert level(verb="get", resource="pods", namespace="x") == "RequestResponse"
    assert level(verb="get", resource="pods", subresource="log", namespace="x") == "None"  # "pods" ≠ "pods/log"
    assert level(verb="update", group="apps", resource="deployments", subresource="scale", namespace="x") == "Request"
    assert level(verb="update", group="apps", resource="deployments", namespace="x") == "None"
    assert level(verb="get", group="batch", resource="jobs", namespace="x") == "Metadata"  # "jobs/*" takes jobs too
    assert level(verb="get", group="batch", resource="jobs", subresource="status", namespace="x") == "Metadata"
    assert level(verb="get", resource="services", namespace="a", name="web") == "Request"
    assert level(verb="get", resource="services", namespace="a", name="db") == "None"
    assert level(verb="get", resource="services", namespace="b", name="web") == "None"
    assert level(verb="delete", resource="services", namespace="b", groups=["devs", "sre"]) == "Metadata"
    assert level(verb="delete", resource="services", namespace="b", groups=["devs"]) == "None"
    assert level(user="alice", verb="get", non_resource_url="/debug/pprof") == "Request"
    assert level(user="alice", verb="get", non_resource_url="/version") == "Request"
    assert level(user="alice", verb="get", non_resource_url="/version/x") == "None"
    assert level(user="bob", verb="get", non_resource_url="/debug/pprof") == "None"
    assert level(verb="get", resource="nodes") == "Metadata"  # cluster-scoped: namespace ""
    assert level(verb="get", non_resource_url="/metrics") == "None"  # a namespaces rule takes no non-resource URL
    assert matching_rule(p, user="bob", verb="get", resource="pods", subresource="exec") == 0
    assert matching_rule(p, user="bob", verb="get", resource="configmaps", namespace="x") is None
    with pytest.raises(ValueError, match="resource"):
        level_for(p, user="bob", verb="get")


# --- secrets never travel into the log ---------------------------------------------------------------------------


@pytest.mark.parametrize("rules", HOSTILE_RULES)
def test_no_user_rule_records_a_secret_body(rules):
    p = policy(rules=rules)
    assert secret_exposure(p) == []
    for who in (DEV, ADMIN, KUBE_SYSTEM_SA, {"user": OPERATOR, "groups": []}):
        for verb in ("get", "list", "watch", *WRITES):
            assert level_for(p, **who, verb=verb, resource="secrets", namespace="kube-system") == "Metadata"
        token = level_for(p, **who, verb="create", resource="serviceaccounts", subresource="token", namespace="a")
        assert token == "Metadata"
        review = level_for(p, **who, verb="create", group="authentication.k8s.io", resource="tokenreviews")
        assert review == "Metadata"


def test_the_secret_check_can_fail():
    p = policy(rules=HOSTILE_RULES[0])
    unprotected = {**p, "rules": [r for r in p["rules"] if r not in PROTECTIVE_RULES]}
    findings = secret_exposure(unprotected)
    assert findings
    assert any("core/secrets" in f and "RequestResponse" in f for f in findings)
    assert any("core/serviceaccounts/token" in f for f in findings)
    assert any("authentication.k8s.io/tokenreviews" in f for f in findings)
    # even without a hostile rule, the baseline alone would record secret writes with their bodies
    assert secret_exposure({**policy(rules=None), "rules": policy(rules=None)["rules"][1 + len(PROTECTIVE_RULES) :]})


@pytest.mark.parametrize(
    "shield",
    [
        {"level": "Metadata", "verbs": ["get"], "resources": [{"group": "", "resources": ["secrets"]}]},
        {"level": "Metadata", "users": ["alice"], "resources": [{"group": "", "resources": ["secrets"]}]},
        {"level": "Metadata", "namespaces": ["a"], "resources": [{"group": "", "resources": ["secrets"]}]},
        {"level": "None", "resources": [{"group": "", "resources": ["secrets"], "resourceNames": ["x"]}]},
        {"level": "None", "nonResourceURLs": ["*"]},
    ],
)
def test_a_partial_shield_is_no_protection(shield):
    leak = {"level": "Request", "resources": [{"group": "", "resources": ["secrets"]}]}
    findings = secret_exposure({"rules": [shield, leak, {"level": "Metadata"}]})
    assert findings == ["rules[1] records core/secrets requests at Request"]


def test_a_full_shield_protects():
    leak = {"level": "RequestResponse"}
    shield = {"level": "None", "resources": [{"group": "", "resources": ["secrets", "serviceaccounts/*"]}]}
    findings = secret_exposure({"rules": [shield, leak]})
    assert findings == ["rules[1] records authentication.k8s.io/tokenreviews requests at RequestResponse"]


# --- wiring --------------------------------------------------------------------------------------------------------


def test_apiserver_flags():
    flags = apiserver_flags(
        policy_path="/etc/kubernetes/audit/policy.yaml",
        webhook_config_path="/etc/kubernetes/audit/webhook-kubeconfig.yaml",
    )
    assert flags == [
        "--audit-policy-file=/etc/kubernetes/audit/policy.yaml",
        "--audit-webhook-config-file=/etc/kubernetes/audit/webhook-kubeconfig.yaml",
        "--audit-webhook-mode=batch",
        "--audit-webhook-batch-buffer-size=10000",
        "--audit-webhook-batch-max-size=400",
        "--audit-webhook-batch-max-wait=5s",
        "--audit-webhook-initial-backoff=10s",
        "--audit-webhook-truncate-enabled=true",
        "--audit-webhook-version=audit.k8s.io/v1",
    ]
    custom = apiserver_flags(policy_path="/p", webhook_config_path="/w", batch_buffer_size=50, initial_backoff="1m30s")
    assert "--audit-webhook-batch-buffer-size=50" in custom
    assert "--audit-webhook-initial-backoff=1m30s" in custom


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"policy_path": "policy.yaml"}, "absolute"),
        ({"batch_buffer_size": 0}, "at least 1"),
        ({"initial_backoff": "10"}, "Go duration"),
    ],
)
def test_apiserver_flags_refuse_nonsense(changes, message):
    args = {"policy_path": "/p", "webhook_config_path": "/w", **changes}
    with pytest.raises(ValueError, match=message):
        apiserver_flags(**args)


def test_webhook_kubeconfig_with_a_client_certificate():
    config = webhook_kubeconfig(
        server="https://iotsec-audit-sink.iotsec-system.svc:8443/events",
        ca_pem=CA,
        client_cert_pem=CERT,
        client_key_pem=KEY,
    )
    assert config["apiVersion"] == "v1"
    assert config["kind"] == "Config"
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == "https://iotsec-audit-sink.iotsec-system.svc:8443/events"
    assert base64.b64decode(cluster["certificate-authority-data"]) == CA
    user = config["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == CERT
    assert base64.b64decode(user["client-key-data"]) == KEY
    assert "token" not in user
    context = config["contexts"][0]
    assert config["current-context"] == context["name"]
    assert context["context"] == {"cluster": config["clusters"][0]["name"], "user": config["users"][0]["name"]}
    assert yaml.safe_load(yaml.safe_dump(config)) == config


def test_webhook_kubeconfig_with_a_token():
    config = webhook_kubeconfig(server="https://10.0.0.5:8443", ca_pem=CA, token="abc.def")
    assert config["users"][0]["user"] == {"token": "abc.def"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"server": "http://sink:8080", "token": "t"}, "https://"),
        ({"server": "sink:8443", "token": "t"}, "https://"),
        ({"server": "https://", "token": "t"}, "https://"),
        ({}, "one way to authenticate"),
        ({"token": "t", "client_cert_pem": CERT, "client_key_pem": KEY}, "not both"),
        ({"client_cert_pem": CERT}, "both client_cert_pem and client_key_pem"),
        ({"client_key_pem": KEY}, "both client_cert_pem and client_key_pem"),
        ({"client_cert_pem": KEY, "client_key_pem": CERT}, "PEM"),
        ({"token": ""}, "non-empty"),
        ({"token": "a b"}, "whitespace"),
        ({"ca_pem": b"", "token": "t"}, "ca_pem"),
    ],
)
def test_webhook_kubeconfig_refuses(args, message):
    args = {"server": "https://sink:8443", "ca_pem": CA, **args}
    with pytest.raises(ValueError, match=message):
        webhook_kubeconfig(**args)


def test_module_is_pure():
    code = (
        "import sys, iotsec.build.apiserver_audit; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kopf', 'kubernetes', 'aiohttp') "
        "or m == 'iotsec.cli.main'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
