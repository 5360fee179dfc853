"""Reconciles asked for by watch events (issue 18): a burst of events for one resource costs one reconcile that
starts after the last of them, never one per event, and none is lost once a reconcile has started reading."""

from __future__ import annotations

import threading
import time

from iotsec.controllers import reconciler
from iotsec.controllers.reconciler import live_resource, reads_since, reconcile_soon
from iotsec.k8s.kube import Kube, attributed_to


class _Api:
    def __init__(self) -> None:
        self.reads = 0

    def get(self, api_version, kind, name, namespace=None):  # type: ignore[no-untyped-def]
        self.reads += 1
        return {"metadata": {"name": name}}


def _reconciler(api: _Api, done: threading.Event, runs: list[int], release: threading.Event | None = None):
    def reconcile() -> None:
        with live_resource(api, "SecurityDomain", "d") as (_body, outcome):  # type: ignore[arg-type]
            if release is not None:
                release.wait(5)
            runs.append(api.reads)
            outcome.succeeded()
        done.set()

    return reconcile


def test_a_burst_of_requests_costs_one_reconcile():
    api, done, runs = _Api(), threading.Event(), []
    asked = [reconcile_soon("SecurityDomain", "d", _reconciler(api, done, runs), 0.2) for _ in range(50)]
    assert done.wait(5)
    assert asked.count(True) == 1
    assert runs == [1]


def test_a_request_while_a_reconcile_runs_gets_one_of_its_own():
    api, runs = _Api(), []
    first, second, release = threading.Event(), threading.Event(), threading.Event()
    assert reconcile_soon("SecurityDomain", "d", _reconciler(api, first, runs, release), 0.0)
    for _ in range(100):  # the first has taken the lock and read: what changes now is news to it
        if api.reads:
            break
        threading.Event().wait(0.01)
    assert reconcile_soon("SecurityDomain", "d", _reconciler(api, second, runs), 0.0)
    assert not reconcile_soon("SecurityDomain", "d", _reconciler(api, second, runs), 0.0), "folded into the second"
    release.set()
    assert first.wait(5)
    assert second.wait(5)
    assert runs == [1, 2]


def test_a_requested_reconcile_may_share_reads_made_after_its_last_request_and_no_earlier():
    api, done, floors = _Api(), threading.Event(), []

    def reconcile() -> None:
        with live_resource(api, "SecurityDomain", "shared") as (_body, outcome):  # type: ignore[arg-type]
            floors.append((reads_since(), time.monotonic()))
            outcome.succeeded()
        done.set()

    first_asked = time.monotonic()
    assert reconcile_soon("SecurityDomain", "shared", reconcile, 1.0)
    time.sleep(0.1)
    last_asked = time.monotonic()
    assert not reconcile_soon("SecurityDomain", "shared", reconcile, 1.0), "folded into the waiting one"
    assert done.wait(5)
    ((floor, running),) = floors
    assert last_asked <= floor < running, "when it was last asked for, not first"
    assert running - first_asked >= 1.0, "the timer ran its course"
    assert running - floor >= 0.5, "not when it started: reads made while it waited for its timer serve it"


def test_a_reconcile_kopf_started_shares_only_reads_made_after_it_started():
    api = _Api()
    before = time.monotonic()
    with live_resource(api, "SecurityDomain", "direct") as (_body, outcome):  # type: ignore[arg-type]
        floor = reads_since()
        outcome.succeeded()
    assert floor >= before
    assert reads_since() > floor, "outside a reconcile: now"


def test_a_reconcile_kopf_starts_while_a_request_waits_needs_reads_after_its_own_start():
    """It serves the waiting request, but kopf started it for a change of its own (a new spec): an analysis begun
    before it started, though after that request, must not serve it."""
    api, done = _Api(), threading.Event()
    assert reconcile_soon("SecurityDomain", "both", lambda: done.set(), 0.5)
    time.sleep(0.1)
    started = time.monotonic()
    with live_resource(api, "SecurityDomain", "both") as (_body, outcome):  # type: ignore[arg-type]
        floor = reads_since()
        outcome.succeeded()
    assert floor >= started, "its own start, not the earlier request it also serves"
    assert ("SecurityDomain", None, "both") not in reconciler._waiting, "that request is served"
    assert done.wait(5)


def test_a_failed_requested_reconcile_does_not_block_the_next():
    calls: list[str] = []

    def broken() -> None:
        calls.append("run")
        raise RuntimeError("the API went away")

    assert reconcile_soon("SecurityDomain", "broken", broken, 0.0)
    for _ in range(100):
        if calls and ("SecurityDomain", None, "broken") not in reconciler._waiting:
            break
        threading.Event().wait(0.01)
    assert reconcile_soon("SecurityDomain", "broken", broken, 0.0)


def test_requests_are_counted_by_the_controller_that_sent_them():
    api = Kube(api_client=object())  # type: ignore[arg-type]
    with attributed_to("TenantIsolation"):
        api._call("get Secret a/b", lambda: None)
    api._call("list Namespace", lambda: None)
    assert api.by_controller == {("TenantIsolation", "get"): 1, ("", "list"): 1}
    assert api.requests == {"get": 1, "list": 1}
