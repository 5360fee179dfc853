"""Anomaly rules: each type fires exactly at its threshold inside the window, and stays quiet on normal traffic."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
import yaml

from iotsec.api.auditpolicy import AnomalyRule, AuditPolicySpec
from iotsec.api.validation import parse_resource
from iotsec.audittrail import anomaly
from iotsec.audittrail.anomaly import AnomalyDetector, AnomalyHit
from tests.conftest import EXAMPLES

T0 = datetime(2026, 11, 28, 1, 0, 0, tzinfo=UTC)
TRUSTED = ("platform:sre", "system:masters")
_IDS = count()


def event(
    at: float = 0,
    *,
    user: str = "alice",
    groups: tuple[str, ...] = ("dev",),
    verb: str = "get",
    resource: str = "pods",
    subresource: str | None = None,
    api_group: str = "",
    code: int = 200,
    ips: tuple[str, ...] = ("10.0.0.5",),
    stage: str | None = "ResponseComplete",
    annotations: dict[str, str] | None = None,
    impersonate: tuple[str, tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    """An audit.k8s.io/v1 Event as the API server posts it, `at` seconds after T0."""
    stamp = (T0 + timedelta(seconds=at)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body: dict[str, Any] = {
        "auditID": f"id-{next(_IDS)}",
        "verb": verb,
        "user": {"username": user, "groups": list(groups)},
        "sourceIPs": list(ips),
        "objectRef": {"resource": resource, "namespace": "default", "name": "x", "apiGroup": api_group},
        "responseStatus": {"code": code},
        "requestReceivedTimestamp": stamp,
        "stageTimestamp": stamp,
        "annotations": annotations or {},
    }
    if stage is not None:
        body["stage"] = stage
    if subresource:
        body["objectRef"]["subresource"] = subresource
    if impersonate:
        body["impersonatedUser"] = {"username": impersonate[0], "groups": list(impersonate[1])}
    return body


def failure(at: float = 0, **kw: Any) -> dict[str, Any]:
    return event(at, code=401, user="system:anonymous", groups=("system:unauthenticated",), **kw)


def secret_read(at: float = 0, **kw: Any) -> dict[str, Any]:
    return event(at, resource="secrets", **{"verb": "list", **kw})


def rbac_write(at: float = 0, **kw: Any) -> dict[str, Any]:
    return event(at, resource="clusterrolebindings", api_group="rbac.authorization.k8s.io", **{"verb": "create", **kw})


def detector(type_: str, trusted: tuple[str, ...] = TRUSTED, **fields: Any) -> AnomalyDetector:
    rule = AnomalyRule(name="r", type=type_, **{"threshold": 1, "window": "5m", **fields})
    return AnomalyDetector([rule], trusted)


def firing_indexes(det: AnomalyDetector, events: list[dict[str, Any]]) -> list[int]:
    return [i for i, e in enumerate(events) if det.observe(e)]


# AuthFailures


def test_auth_failures_fire_exactly_at_threshold_with_a_complete_hit():
    det = detector("AuthFailures", threshold=10, group_by="sourceIP", severity="critical")
    events = [failure(i * 10, ips=("203.0.113.7",)) for i in range(10)]
    assert det.observe_all(events[:9]) == []
    [hit] = det.observe(events[9])
    assert hit == AnomalyHit(
        rule="r",
        type="AuthFailures",
        subject="203.0.113.7",
        count=10,
        first_seen=T0,
        last_seen=T0 + timedelta(seconds=90),
        severity="critical",
        control="X1369-9.1.1.1-5",
        message=hit.message,
        audit_ids=tuple(e["auditID"] for e in events),
    )
    for fragment in ("r", "AuthFailures", "10 ", "source IP 203.0.113.7", "5m", "X1369-9.1.1.1-5", "01:01:30Z"):
        assert fragment in hit.message
    assert "\n" not in hit.message


def test_auth_failures_count_authorizer_403():
    det = detector("AuthFailures", threshold=2)
    forbid = {"authorization.k8s.io/decision": "forbid"}
    assert det.observe_all([event(0, code=403, annotations=forbid), event(1, code=403, annotations=forbid)]) != []


@pytest.mark.parametrize(
    "quiet",
    [
        event(code=200),
        event(code=201, verb="create"),
        event(code=404),
        event(code=403, annotations={"pods.validate.iotsec.io/violations": "privileged"}),
        event(code=403, annotations={"authorization.k8s.io/decision": "allow"}),
        event(code=500),
    ],
    ids=["ok", "created", "not-found", "admission-403", "allowed-403", "server-error"],
)
def test_auth_failures_ignore_successes_and_admission_denials(quiet):
    det = detector("AuthFailures")
    assert det.observe_all([quiet] * 5) == []


def test_no_hit_when_threshold_events_are_spread_wider_than_the_window():
    det = detector("AuthFailures", threshold=3, window="1m")
    assert det.observe_all([failure(t) for t in (0, 40, 80, 120, 160, 200)]) == []


def test_window_edge_is_inclusive():
    det = detector("AuthFailures", threshold=3, window="1m")
    assert firing_indexes(det, [failure(t) for t in (0, 30, 60)]) == [2]


def test_rearms_after_firing_without_an_alert_storm():
    det = detector("AuthFailures", threshold=10)
    hits = det.observe_all([failure(i) for i in range(100)])
    assert len(hits) == 10
    assert {hit.count for hit in hits} == {10}
    assert [hit.last_seen for hit in hits] == [T0 + timedelta(seconds=9 + 10 * i) for i in range(10)]


@pytest.mark.parametrize(
    ("group_by", "fires_at", "subject"),
    [("user", [2], "alice"), ("sourceIP", [1], "10.1.1.1"), ("none", [1], "*")],
)
def test_group_by_keeps_subjects_apart(group_by, fires_at, subject):
    det = detector("RequestRate", threshold=2, group_by=group_by)
    events = [
        event(0, user="alice", ips=("10.1.1.1",)),
        event(1, user="bob", ips=("10.1.1.1",)),
        event(2, user="alice", ips=("10.2.2.2",)),
    ]
    hits = [det.observe(e) for e in events]
    assert [i for i, h in enumerate(hits) if h] == fires_at
    assert hits[fires_at[0]][0].subject == subject


def test_group_by_source_ip_without_addresses_uses_a_dash():
    det = detector("RequestRate", threshold=2, group_by="sourceIP")
    [hit] = det.observe_all([event(0, ips=()), event(1, ips=())])
    assert hit.subject == "-"


# SecretAccess


def test_secret_access_fires_for_an_outsider_at_threshold():
    det = detector("SecretAccess", threshold=3, allowed_groups=["ci:deployers"])
    events = [secret_read(i, user="mallory", groups=("dev",)) for i in range(3)]
    assert firing_indexes(det, events) == [2]


def test_secret_access_hit_names_the_user_and_control():
    det = detector("SecretAccess", threshold=2)
    [hit] = det.observe_all([secret_read(0, user="mallory", verb=v) for v in ("get", "watch")])
    assert (hit.subject, hit.count, hit.control) == ("mallory", 2, "X1369-9.6.4-7")
    assert "by user mallory" in hit.message


@pytest.mark.parametrize(
    "quiet",
    [
        secret_read(groups=("ci:deployers",)),
        secret_read(groups=("platform:sre",)),
        secret_read(user="system:serviceaccount:kube-system:namespace-controller", groups=()),
        secret_read(user="system:kube-controller-manager", groups=()),
        secret_read(user="system:kube-scheduler", groups=()),
        secret_read(user="system:apiserver", groups=()),
        secret_read(user="system:node:worker-1", groups=("system:nodes",)),
        secret_read(verb="create"),
        secret_read(verb="delete"),
        secret_read(api_group="example.com"),
        event(resource="configmaps"),
    ],
    ids=[
        "allowed-group",
        "trusted-admin",
        "kube-system-sa",
        "controller-manager",
        "scheduler",
        "apiserver",
        "kubelet",
        "create",
        "delete",
        "other-api-group",
        "configmaps",
    ],
)
def test_secret_access_ignores_expected_readers_and_non_reads(quiet):
    det = detector("SecretAccess", allowed_groups=["ci:deployers"])
    assert det.observe(quiet) == []


def test_secret_access_does_not_exempt_other_service_accounts():
    det = detector("SecretAccess")
    [hit] = det.observe(secret_read(user="system:serviceaccount:apps:web", groups=("system:serviceaccounts",)))
    assert hit.subject == "system:serviceaccount:apps:web"


def test_impersonation_is_judged_on_the_effective_user():
    det = detector("SecretAccess", allowed_groups=["ci:deployers"])
    admin_as_outsider = secret_read(user="root", groups=("platform:sre",), impersonate=("mallory", ("dev",)))
    outsider_as_deployer = secret_read(user="bob", groups=("dev",), impersonate=("ci-bot", ("ci:deployers",)))
    [hit] = det.observe(admin_as_outsider)
    assert hit.subject == "mallory"
    assert det.observe(outsider_as_deployer) == []


# PrivilegeGrant


def test_privilege_grant_fires_on_an_rbac_write_by_an_outsider():
    det = detector("PrivilegeGrant", group_by="none", window="1m")
    [hit] = det.observe(rbac_write(user="mallory", verb="patch"))
    assert (hit.subject, hit.count, hit.type, hit.control) == ("*", 1, "PrivilegeGrant", "X1369-9.6.3-1")
    assert "RBAC" in hit.message
    assert "across all subjects" in hit.message


@pytest.mark.parametrize(
    "quiet",
    [
        rbac_write(user="root", groups=("platform:sre",)),
        rbac_write(user="admin", groups=("system:masters",), verb="delete"),
        rbac_write(user="mallory", verb="get"),
        rbac_write(user="mallory", verb="list"),
        rbac_write(user="mallory", code=403),
        rbac_write(user="system:kube-controller-manager", groups=(), verb="update"),
        rbac_write(user="system:serviceaccount:kube-system:clusterrole-aggregation-controller", groups=()),
        rbac_write(user="system:apiserver", groups=()),
        event(user="mallory", verb="create", resource="configmaps"),
    ],
    ids=[
        "trusted-admin",
        "masters",
        "get",
        "list",
        "denied",
        "controller-manager",
        "kube-system-sa",
        "apiserver",
        "not-rbac",
    ],
)
def test_privilege_grant_ignores_admins_controllers_reads_and_denied_writes(quiet):
    det = detector("PrivilegeGrant")
    assert det.observe(quiet) == []


@pytest.mark.parametrize(
    ("user", "groups"),
    [("system:kube-scheduler", ()), ("system:node:worker-1", ("system:nodes",)), ("system:apiserver-evil", ())],
)
def test_privilege_grant_does_not_apply_the_secret_reader_exemptions(user, groups):
    det = detector("PrivilegeGrant")
    assert len(det.observe(rbac_write(user=user, groups=groups))) == 1


# ExecIntoPod


@pytest.mark.parametrize("subresource", ["exec", "attach", "portforward"])
def test_exec_into_pod_fires_at_threshold(subresource):
    det = detector("ExecIntoPod", threshold=2)
    events = [event(i, verb="create", subresource=subresource, user="mallory") for i in range(2)]
    assert firing_indexes(det, events) == [1]


def test_exec_into_pod_hit_fields():
    det = detector("ExecIntoPod", threshold=1)
    [hit] = det.observe(event(verb="create", subresource="exec", user="mallory"))
    assert (hit.subject, hit.control, hit.type) == ("mallory", "X1369-9.6.3-1", "ExecIntoPod")
    assert "exec" in hit.message


@pytest.mark.parametrize(
    "quiet",
    [
        event(verb="create", subresource="exec", user="root", groups=("platform:sre",)),
        event(verb="create", subresource="exec", user="bob", impersonate=("root", ("system:masters",))),
        event(verb="get", subresource="log", user="mallory"),
        event(verb="get", user="mallory"),
        event(verb="create", resource="deployments", subresource="exec", api_group="apps"),
    ],
    ids=["trusted-admin", "impersonating-admin", "logs", "get-pod", "other-resource"],
)
def test_exec_into_pod_ignores_admins_and_other_pod_access(quiet):
    det = detector("ExecIntoPod")
    assert det.observe(quiet) == []


# UnexpectedSource

CIDRS = ["10.0.0.0/8", "fd00:10::/32"]


@pytest.mark.parametrize(
    ("ips", "unexpected"),
    [
        (("10.20.30.40",), False),
        (("fd00:10::1",), False),
        (("::ffff:10.1.2.3",), False),
        (("198.51.100.9",), True),
        (("2001:db8::1",), True),
        (("fd00:11::1",), True),
        (("10.0.0.1", "198.51.100.9"), True),
        (("not-an-ip",), True),
        ((), False),
    ],
    ids=["v4-in", "v6-in", "v4-mapped-in", "v4-out", "v6-out", "v6-next-range", "proxied-from-out", "garbage", "none"],
)
def test_unexpected_source_checks_every_address_against_the_cidrs(ips, unexpected):
    det = detector("UnexpectedSource", allowed_cidrs=CIDRS, group_by="sourceIP")
    hits = det.observe(event(ips=ips))
    assert bool(hits) is unexpected
    if hits:
        assert hits[0].subject == ips[0]
        assert hits[0].control == "X1369-9.6.4-7"


# AdmissionDenials

VIOLATIONS = {"pods.validate.iotsec.io/violations": "hostNetwork is not allowed"}


def test_admission_denials_fire_at_threshold():
    det = detector("AdmissionDenials", threshold=3)
    events = [event(i, verb="create", code=403, annotations=VIOLATIONS) for i in range(3)]
    hits = [det.observe(e) for e in events]
    assert [bool(h) for h in hits] == [False, False, True]
    assert "denied by admission" in hits[2][0].message


@pytest.mark.parametrize(
    "quiet",
    [
        event(verb="create", code=201, annotations=VIOLATIONS),
        event(verb="create", code=403),
        event(verb="create", code=403, annotations={"pods.validate.iotsec.io/decision": "deny"}),
    ],
    ids=["warn-only", "no-violations", "other-annotation"],
)
def test_admission_denials_need_violations_and_a_failed_response(quiet):
    det = detector("AdmissionDenials")
    assert det.observe(quiet) == []


# RequestRate


def test_request_rate_counts_every_request_per_user():
    det = detector("RequestRate", threshold=5, window="10s")
    events = [event(i, verb=v, code=c) for i, (v, c) in enumerate([("get", 200), ("list", 403), ("create", 500)] * 2)]
    assert firing_indexes(det, events) == [4]
    assert det.observe_all([event(100 + 20 * i) for i in range(5)]) == []  # 5 requests, but 80 s apart at the ends


# AuditConfigChange


@pytest.mark.parametrize(
    ("verb", "api_group", "resource", "fires"),
    [
        ("patch", "iotsec.io", "auditpolicies", True),
        ("delete", "iotsec.io", "auditpolicies", True),
        ("delete", "admissionregistration.k8s.io", "validatingwebhookconfigurations", True),
        ("update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", True),
        ("get", "iotsec.io", "auditpolicies", False),
        ("watch", "admissionregistration.k8s.io", "validatingwebhookconfigurations", False),
        ("patch", "iotsec.io", "securitydomains", False),
        ("patch", "", "configmaps", False),
    ],
)
def test_audit_config_change_counts_writes_to_audit_and_webhook_config(verb, api_group, resource, fires):
    det = detector("AuditConfigChange")
    hits = det.observe(event(verb=verb, api_group=api_group, resource=resource, user="root", groups=TRUSTED))
    assert bool(hits) is fires
    if hits:
        assert "AuditPolicies or admission webhook" in hits[0].message


# Stages, time and memory


@pytest.mark.parametrize(
    ("stage", "counted"),
    [("ResponseComplete", True), ("Panic", True), (None, True), ("ResponseStarted", False), ("RequestReceived", False)],
)
def test_only_final_stages_are_counted(stage, counted):
    det = detector("AuthFailures")
    assert bool(det.observe(failure(stage=stage))) is counted


def test_a_long_request_is_counted_once():
    det = detector("ExecIntoPod", threshold=2)
    started = event(0, verb="create", subresource="exec", stage="ResponseStarted")
    complete = {**started, "stage": "ResponseComplete", "stageTimestamp": event(60)["stageTimestamp"]}
    assert det.observe_all([started, complete]) == []


def test_out_of_order_events_count_at_their_own_time():
    det = detector("AuthFailures", threshold=3)
    assert det.observe_all([failure(100), failure(50)]) == []
    [hit] = det.observe(failure(10))
    assert (hit.first_seen, hit.last_seen) == (T0 + timedelta(seconds=10), T0 + timedelta(seconds=100))


def test_a_late_event_older_than_the_window_is_not_counted():
    det = detector("AuthFailures", threshold=2, window="1m")
    assert det.observe_all([failure(600), failure(500)]) == []


def test_time_is_the_event_timestamp_not_the_wall_clock():
    det = detector("AuthFailures", threshold=2, window="1m")
    first, second = failure(0), failure(3600)
    del second["stageTimestamp"]  # falls back to requestReceivedTimestamp: an hour later, outside the window
    assert det.observe_all([first, second]) == []


def test_an_event_without_timestamps_uses_the_newest_time_seen():
    det = detector("AuthFailures", threshold=2, window="1m")
    undated = {k: v for k, v in failure().items() if not k.endswith("Timestamp")}
    assert det.observe(undated) == []  # nothing seen yet: skipped
    [hit] = det.observe_all([failure(30), undated])
    assert hit.first_seen == hit.last_seen == T0 + timedelta(seconds=30)


def test_subjects_are_bounded_by_evicting_the_least_recently_seen(monkeypatch):
    monkeypatch.setattr(anomaly, "MAX_SUBJECTS", 2)
    det = detector("AuthFailures", threshold=2, group_by="sourceIP")
    events = [failure(0, ips=("10.0.0.1",)), failure(1, ips=("10.0.0.2",)), failure(2, ips=("10.0.0.3",))]
    assert det.observe_all([*events, failure(3, ips=("10.0.0.1",))]) == []  # 10.0.0.1 was evicted
    assert len(det.observe(failure(4, ips=("10.0.0.3",)))) == 1


def test_audit_ids_keep_the_last_twenty():
    det = detector("RequestRate", threshold=25)
    events = [event(i) for i in range(25)]
    [hit] = det.observe_all(events)
    assert hit.audit_ids == tuple(e["auditID"] for e in events[5:])


def test_one_event_can_fire_several_rules():
    rules = [AnomalyRule(name="fails", type="AuthFailures"), AnomalyRule(name="rate", type="RequestRate")]
    hits = AnomalyDetector(rules, TRUSTED).observe(failure())
    assert [(h.rule, h.type) for h in hits] == [("fails", "AuthFailures"), ("rate", "RequestRate")]


def test_message_stays_on_one_bounded_line():
    det = detector("RequestRate")
    [hit] = det.observe(event(user="evil\nuser" + "x" * 1000))
    assert "\n" not in hit.message
    assert len(hit.message) < 400
    assert hit.subject.startswith("evil\nuser")


def test_module_is_pure():
    code = (
        "import sys, iotsec.audittrail.anomaly; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kopf', 'kubernetes', 'aiohttp') "
        "or m == 'iotsec.cli.main'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# The shipped example


def example_spec() -> AuditPolicySpec:
    docs = yaml.safe_load_all((EXAMPLES / "platform" / "40-audit.yaml").read_text())
    doc = next(d for d in docs if d and d.get("kind") == "AuditPolicy")
    spec = parse_resource(doc).spec
    assert isinstance(spec, AuditPolicySpec)
    return spec


@pytest.mark.parametrize(("failures", "hits"), [(9, 0), (10, 1)])
def test_example_brute_force_rule(failures, hits):
    spec = example_spec()
    rule = next(r for r in spec.anomaly_rules or [] if r.name == "brute-force")
    assert (rule.type, rule.threshold, rule.window, rule.group_by) == ("AuthFailures", 10, "5m", "sourceIP")
    det = AnomalyDetector(spec.anomaly_rules or [], spec.trusted_admin_groups)
    attacker = [failure(i * 20, ips=("198.51.100.66",)) for i in range(failures)]
    bystander = [failure(i * 20 + 1, ips=("198.51.100.67",)) for i in range(9)]
    stream = sorted(attacker + bystander, key=lambda e: e["stageTimestamp"])
    brute = [h for h in det.observe_all(stream) if h.rule == "brute-force"]
    assert len(brute) == hits
    if hits:
        assert (brute[0].subject, brute[0].severity, brute[0].count) == ("198.51.100.66", "critical", 10)
