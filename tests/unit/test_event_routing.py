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

    def forgotten_(self, *args: Any) -> None:
        self.forgotten.append(args)


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
    return api, requested


def test_handlers_that_only_route_work_are_coroutines():
    for handler in (securitydomain.on_namespace, securitydomain.on_policy_deleted, tenant.on_request):
        assert inspect.iscoroutinefunction(handler), handler.__name__


def test_a_namespace_event_asks_for_its_domains_from_a_routing_thread(routed):
    api, requested = routed
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n1", "labels": {"a": "b"}}}
    asyncio.run(securitydomain.on_namespace(type="ADDED", name="n1", labels={"a": "b"}, body=body))
    assert api.observed == [body], "the cache holds the namespace before its domain is planned"
    assert [name for name, _ in requested] == ["domain-of-n1"]
    assert requested[0][1].startswith("iotsec-events"), "not one of kopf's handler threads"
    asyncio.run(securitydomain.on_namespace(type="DELETED", name="n1", labels={}, body=body))
    assert api.forgotten == [("v1", "Namespace", "n1")]
    asyncio.run(securitydomain.on_namespace(type=None, name="n2", labels={}, body=body))
    assert len(requested) == 2, "the start-up listing asks for nothing: the resume handlers cover it"


def test_a_deleted_policy_asks_for_its_domain(routed):
    api, requested = routed
    labels = {"iotsec.io/owner-name": "core"}
    asyncio.run(securitydomain.on_policy_deleted(type="DELETED", labels=labels, name="p", namespace="a"))
    asyncio.run(securitydomain.on_policy_deleted(type="MODIFIED", labels=labels, name="p", namespace="a"))
    assert [name for name, _ in requested] == ["core"]
    assert api.forgotten == [("networking.k8s.io/v1", "NetworkPolicy", "p", "a")]
