"""Watch events that only route work run on threads of their own, never waiting for kopf's handler threads
(issue 18: at a cold start of 1,000 tenants those were busy for minutes, and domains waited for their namespaces'
events until their resync timer, ten minutes late)."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

import pytest

from iotsec.controllers import securitydomain, tenant


class _Api:
    def __init__(self) -> None:
        self.observed: list[dict[str, Any]] = []
        self.forgotten: list[tuple[Any, ...]] = []
        self.deleted: list[dict[str, Any] | None] = []  # the bodies: which incarnation went

    def forgotten_(self, *args: Any, deleted: dict[str, Any] | None = None) -> None:
        self.forgotten.append(args)
        self.deleted.append(deleted)


@pytest.fixture
def routed(monkeypatch) -> tuple[_Api, list[tuple[str, str]]]:
    api = _Api()
    fake = type("Kube", (), {"observed": staticmethod(api.observed.append), "forgotten": staticmethod(api.forgotten_)})
    monkeypatch.setattr(securitydomain, "kube", fake)
    requested: list[tuple[str, str]] = []

    def reconcile_soon(kind: str, name: str, *_: Any) -> bool:
        requested.append((name, threading.current_thread().name))
        return True

    monkeypatch.setattr(securitydomain, "reconcile_soon", reconcile_soon)
    monkeypatch.setattr(securitydomain, "_domains_concerned", lambda name, labels: {f"domain-of-{name}"})
    monkeypatch.setattr(securitydomain, "_namespace_versions", {})
    securitydomain._begin_watching()  # the operator starts: its namespace versions are forgotten
    monkeypatch.setattr(securitydomain, "_watching_since", [STARTED])
    return api, requested


def test_handlers_that_only_route_work_are_coroutines():
    for handler in (securitydomain.on_namespace, securitydomain.on_policy_deleted, tenant.on_request):
        assert inspect.iscoroutinefunction(handler), handler.__name__


def test_a_namespace_event_asks_for_its_domains_from_a_routing_thread(routed):
    api, requested = routed
    asyncio.run(securitydomain.on_namespace(type=None, name="n0", labels={}, body=_namespace("n0", "1")))
    assert requested == [], "the start-up listing asks for nothing: the resume handlers cover it"
    body = _namespace("n1", "2", a="b")
    asyncio.run(securitydomain.on_namespace(type="ADDED", name="n1", labels={"a": "b"}, body=body))
    assert api.observed == [body], "the cache holds the namespace before its domain is planned"
    assert [name for name, _ in requested] == ["domain-of-n1"]
    assert requested[0][1].startswith("iotsec-events"), "not one of kopf's handler threads"
    asyncio.run(securitydomain.on_namespace(type="DELETED", name="n1", labels={}, body=body))
    assert api.forgotten == [("v1", "Namespace", "n1")]
    assert api.deleted == [body], "the cache is told which incarnation went"
    assert len(requested) == 2


STARTED = 1_796_000_000.5  # 2026-11-30T00:53:20.5Z: when the operator began to watch
BEFORE, SKEWED = "2026-11-30T00:10:00Z", "2026-11-30T00:49:20Z"
SAME_SECOND, AFTER = "2026-11-30T00:53:20Z", "2026-11-30T00:55:00Z"


def _namespace(name: str, version: str, created: str = BEFORE, **labels: str) -> dict[str, Any]:
    meta = {"name": name, "resourceVersion": version, "labels": labels, "creationTimestamp": created}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def _event(type_: str | None, name: str, version: str, created: str = BEFORE, **labels: str) -> None:
    body = _namespace(name, version, created, **labels)
    asyncio.run(securitydomain.on_namespace(type=type_, name=name, labels=labels, body=body))


def test_a_listing_after_the_watch_was_down_asks_for_what_changed_or_appeared_meanwhile(routed):
    """kopf lists again after 410 Gone and hands every namespace over as type None, as at start-up."""
    _, requested = routed
    for name in ("quiet", "relabelled", "gone"):
        _event(None, name, "1")  # the start-up listing
    assert requested == [], "the start-up listing asks nothing"
    _event("MODIFIED", "quiet", "5")  # the watch runs
    requested.clear()
    # the watch ends (410 Gone); meanwhile "relabelled" changed, "new" was created, "gone" was deleted; kopf lists
    # again, in the API server's order
    _event(None, "new", "9", AFTER, team="x")
    _event(None, "quiet", "5")
    _event(None, "relabelled", "8", zone="y")
    assert sorted(name for name, _ in requested) == ["domain-of-new", "domain-of-relabelled"]
    requested.clear()
    _event(None, "relabelled", "8", zone="y")  # the same version listed again asks nothing
    _event(None, "new", "9", AFTER, team="x")
    assert requested == []


def test_before_any_watch_event_a_new_namespace_is_told_by_its_creation_time(routed):
    """A relist before the watch brought anything (a quiet cluster since start-up): the start-up listing holds only
    namespaces made before the operator began to watch, give or take the two clocks' skew."""
    _, requested = routed
    _event(None, "old", "1", BEFORE)
    _event(None, "made-as-it-started", "2", SAME_SECOND)
    _event(None, "api-server-clock-behind", "3", SKEWED)  # made after the start, stamped 4 minutes before it
    _event(None, "later", "4", AFTER)
    _event(None, "no-timestamp", "5", "")  # never from a real API server: the safe side is a reconcile
    assert sorted(name for name, _ in requested) == [
        "domain-of-api-server-clock-behind",
        "domain-of-later",
        "domain-of-made-as-it-started",
        "domain-of-no-timestamp",
    ]
    _event(None, "old", "1", BEFORE)  # listed again, unchanged
    assert len(requested) == 4


def test_a_deleted_policy_is_reported_lost_from_a_routing_thread(routed, monkeypatch):
    api, _ = routed
    lost: list[tuple[str, str, str]] = []
    monkeypatch.setattr(
        securitydomain,
        "owner_lost",
        lambda av, kind, obj: lost.append((kind, obj["metadata"]["name"], threading.current_thread().name)),
    )
    labels = {"iotsec.io/owner-name": "core"}
    body = {"metadata": {"name": "p", "namespace": "a", "labels": labels}}
    asyncio.run(securitydomain.on_policy_deleted(type="DELETED", labels=labels, body=body))
    asyncio.run(securitydomain.on_policy_deleted(type="MODIFIED", labels=labels, body=body))
    assert [(kind, name) for kind, name, _ in lost] == [("NetworkPolicy", "p")]
    assert lost[0][2].startswith("iotsec-events"), "not one of kopf's handler threads"
    assert api.forgotten == [("networking.k8s.io/v1", "NetworkPolicy", "p", "a")]
    assert api.deleted == [body]


def test_a_namespace_whose_routing_failed_is_routed_again_at_the_next_listing(routed, monkeypatch):
    """kopf does not retry an event handler: a relist must not take the namespace for one already routed."""
    _, requested = routed
    _event("MODIFIED", "other", "2")  # the watch runs
    requested.clear()

    def fails(name: str, labels: Any) -> set[str]:
        raise RuntimeError("the cache could not answer")

    monkeypatch.setattr(securitydomain, "_domains_concerned", fails)
    with pytest.raises(RuntimeError):
        _event("MODIFIED", "flaky", "7", zone="y")
    monkeypatch.setattr(securitydomain, "_domains_concerned", lambda name, labels: {f"domain-of-{name}"})
    _event(None, "flaky", "7", zone="y")  # kopf lists again (410 Gone): the same version
    assert [name for name, _ in requested] == ["domain-of-flaky"]
