"""Small pure pieces of the operator: conditions, configuration, readiness."""

from __future__ import annotations

import pytest

from iotsec.build.securitydomain import DomainPlan
from iotsec.controllers.runtime import network
from iotsec.model.conditions import condition, find, merge_conditions
from iotsec.model.config import Config


def test_transition_time_is_kept_while_the_status_stays():
    first = merge_conditions(None, [condition("Ready", True, "Reconciled", "ok", 1)], "2026-01-01T00:00:00Z")
    again = merge_conditions(first, [condition("Ready", True, "Reconciled", "still ok", 2)], "2026-01-02T00:00:00Z")
    assert find(again, "Ready")["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert find(again, "Ready")["observedGeneration"] == 2
    flipped = merge_conditions(again, [condition("Ready", False, "Conflict", "x", 2)], "2026-01-03T00:00:00Z")
    assert find(flipped, "Ready")["lastTransitionTime"] == "2026-01-03T00:00:00Z"


def test_other_writers_conditions_survive():
    previous = [{"type": "KeysRotated", "status": "True", "reason": "Rotated", "lastTransitionTime": "t"}]
    merged = merge_conditions(previous, [condition("Ready", True, "Reconciled", "ok", 1)], "now")
    assert [c["type"] for c in merged] == ["Ready", "KeysRotated"]


def test_condition_names_its_controls_sorted_and_unique():
    entry = condition("Ready", True, "Reconciled", "ok", 3, ["X1369-9.4.1-3", "X1369-9.4.1-2", "X1369-9.4.1-3"])
    assert entry["controls"] == ["X1369-9.4.1-2", "X1369-9.4.1-3"]


def test_config_from_environment():
    config = Config.from_env(
        {"IOTSEC_RESYNC_SECONDS": "5", "IOTSEC_METRICS_PORT": "0", "IOTSEC_DNS_POD_LABELS": "app=coredns, tier=dns"}
    )
    assert config.resync_seconds == 5.0
    assert config.metrics_port == 0
    assert network(config).dns_pod_labels == {"app": "coredns", "tier": "dns"}
    assert network(Config.from_env({})).dns_pod_labels == {"k8s-app": "kube-dns"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IOTSEC_RESYNC_SECONDS": "0"}, "IOTSEC_RESYNC_SECONDS='0': must be a positive number of seconds"),
        ({"IOTSEC_DNS_POD_LABELS": "kube-dns"}, "IOTSEC_DNS_POD_LABELS='kube-dns': must be key=value"),
    ],
)
def test_config_rejects_nonsense(env, message):
    with pytest.raises(ValueError, match=message):
        Config.from_env(env)


def _plan(**overrides) -> DomainPlan:
    fields = {
        "domain": "d",
        "members": ["a"],
        "namespace_labels": {},
        "policies": [],
        "missing_namespaces": [],
        "reserved_namespaces": [],
        "conflicts": [],
        "missing_peers": [],
        "reachability": [],
        "half_open": [],
        "dropped_rules": [],
    }
    return DomainPlan(**{**fields, **overrides})


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({}, "Reconciled"),
        ({"missing_namespaces": ["x"]}, "NamespaceMissing"),
        ({"missing_peers": ["p"], "missing_namespaces": ["x"]}, "PeerDomainMissing"),
        ({"reserved_namespaces": ["kube-system"], "missing_peers": ["p"]}, "ReservedNamespace"),
        ({"conflicts": ["namespace a is also claimed by e; e keeps it"], "missing_peers": ["p"]}, "Conflict"),
        ({"conflicts": ["namespace a is also claimed by e; this domain keeps it"]}, "Reconciled"),
    ],
)
def test_readiness_reports_the_most_important_problem(overrides, reason):
    kopf = pytest.importorskip("kopf")
    assert kopf
    from iotsec.controllers.securitydomain import _readiness

    assert _readiness(_plan(**overrides))[1] == reason
