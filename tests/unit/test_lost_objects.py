"""An object iotsec manages that someone else deletes is put back by its owner at once, not at the owner's resync:
the watch cache reports what leaves it other than by iotsec's own hand (a watch event, or a relist after a watch
gap that no longer holds it), and the reconciler asks the owner named by the object's labels for a reconcile."""

from __future__ import annotations

import contextvars
import copy
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from iotsec.controllers import metrics, reconciler, runtime
from iotsec.controllers import tenant as handler
from iotsec.k8s.cache import Reflector, WatchCache
from iotsec.k8s.kube import ApiError
from iotsec.model.labels import MANAGED_BY, MANAGER, OWNER_KIND, OWNER_NAME
from tests.unit.test_apply_skips import FakeServer, _reconcile, _server_with, event, kube_on


def _quota(name: str, version: str, owner: str = "acme", owner_kind: str = "TenantIsolation") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": name,
            "namespace": "acme-meters",
            "resourceVersion": version,
            "labels": {MANAGED_BY: MANAGER, OWNER_KIND: owner_kind, OWNER_NAME: owner},
        },
    }


def _reflector(reported: list[dict]) -> Reflector:
    return Reflector(None, "v1", "ResourceQuota", lambda: None, on_gone=reported.extend)  # type: ignore[arg-type]


def _names(objects: list[dict]) -> list[str]:
    return sorted(obj["metadata"]["name"] for obj in objects)


# ---------------------------------------------------------------- what the cache reports


def test_a_watch_deletion_of_a_held_object_reports_its_last_copy():
    reported: list[dict] = []
    reflector = _reflector(reported)
    reflector.take("ADDED", _quota("bounds", "10"))
    reflector.take("DELETED", {"metadata": {"name": "bounds", "namespace": "acme-meters"}})
    assert [obj["metadata"]["labels"][OWNER_NAME] for obj in reported] == ["acme"], "the store's copy, labels kept"
    reflector.take("DELETED", _quota("never-seen", "11"))
    assert len(reported) == 1, "nothing held: nothing to report"


class _Server:
    """Lists in turn, each at the next version; a watch yields its events, then ends as `ends` says."""

    def __init__(self, lists: list[list[dict]], watches: list[list[tuple[str, dict]]], stop: threading.Event):
        self.lists, self.watches, self.stop, self.version = lists, watches, stop, 100

    def list_at(self, api_version: str, kind: str) -> tuple[list[dict], str]:
        self.version += 10
        return [copy.deepcopy(obj) for obj in self.lists.pop(0)], str(self.version)

    def watch(self, api_version: str, kind: str, version: str, seconds: int) -> Iterator[tuple[str, dict]]:
        yield from self.watches.pop(0)
        if not self.watches:
            self.stop.set()
            return
        raise ApiError("too old resource version", 410)


def test_the_reflector_reports_watch_deletions_and_what_a_relist_no_longer_holds_but_not_the_first_list():
    stop = threading.Event()
    reported: list[dict] = []
    reflector = _reflector(reported)
    first = [_quota("bounds", "10"), _quota("limits", "11"), _quota("kept", "12")]
    # the watch reports one deletion, then ends with 410 Gone; "limits" was deleted while it was down
    reflector.kube = _Server(  # type: ignore[assignment]
        lists=[first, [_quota("kept", "12")]],
        watches=[[("DELETED", _quota("bounds", "20"))], []],
        stop=stop,
    )
    reflector.run(stop)
    assert _names(reported) == ["bounds", "limits"]
    assert _names(reflector.items()) == ["kept"]


def test_a_listener_that_fails_does_not_stop_the_watch(caplog):
    stop = threading.Event()
    reflector = Reflector(None, "v1", "ResourceQuota", lambda: None, on_gone=lambda gone: 1 / 0)  # type: ignore[arg-type]
    reflector.kube = _Server(  # type: ignore[assignment]
        lists=[[_quota("bounds", "10"), _quota("limits", "11")], []],
        watches=[[("DELETED", _quota("bounds", "20"))], []],
        stop=stop,
    )
    reflector.run(stop)
    assert reflector.items() == [], "the relist after the failed report was still taken"
    assert "reporting 1 objects gone failed" in caplog.text


def _a_cache_holding_a_quota() -> tuple[FakeServer, Any, list[tuple[str, str, dict]], dict]:
    """(the server, an adapter whose cache holds the quota "bounds", what its cache reports gone, the quota)."""
    server = FakeServer()
    api = kube_on(server)
    assert isinstance(api.cache, WatchCache)
    reported: list[tuple[str, str, dict]] = []
    api.cache.on_gone = lambda *args: reported.append(args)
    quota = server.put(_quota("bounds", "0"))
    event(api, "ADDED", quota)
    return server, api, reported, quota


def test_iotsec_own_deletion_is_not_reported_and_someone_else_s_is():
    server, api, reported, quota = _a_cache_holding_a_quota()
    api.delete("v1", "ResourceQuota", "bounds", "acme-meters")  # prune's way: the cache forgets it at once
    event(api, "DELETED", quota)  # then the watch event of that deletion arrives
    assert reported == []
    event(api, "ADDED", server.put(_quota("limits", "0")))
    event(api, "DELETED", server.objects.pop(("v1", "ResourceQuota", "acme-meters", "limits")))
    assert [(kind, obj["metadata"]["name"]) for _, kind, obj in reported] == [("ResourceQuota", "limits")]


def test_iotsec_own_deletion_is_not_reported_when_its_watch_event_comes_before_the_answer():
    server, api, reported, quota = _a_cache_holding_a_quota()
    resource = server.resource("v1", "ResourceQuota")
    answer = resource.delete

    def delete_and_tell_the_watch_first(name: str, namespace: str | None = None, **kwargs: Any) -> Any:
        answered = answer(name, namespace, **kwargs)
        event(api, "DELETED", quota)  # the watch thread is faster than this request's answer
        return answered

    resource.delete = delete_and_tell_the_watch_first  # type: ignore[method-assign]
    api._resource = lambda api_version, kind: (
        resource if kind == "ResourceQuota" else server.resource(api_version, kind)
    )  # type: ignore[method-assign]
    assert api.delete("v1", "ResourceQuota", "bounds", "acme-meters")
    assert reported == []
    assert api.cache.get("v1", "ResourceQuota", "bounds", "acme-meters") is None


def test_an_object_iotsec_deleted_while_the_watch_was_down_is_not_reported():
    reported: list[dict] = []
    reflector = _reflector(reported)
    reflector.take("ADDED", _quota("bounds", "10"))
    reflector.take("ADDED", _quota("limits", "11"))
    reflector.expect_deletion("acme-meters", "bounds")  # its answer never came: the connection broke
    reflector.kube = type("Listing", (), {"list_at": lambda self, *a: ([], "30")})()  # type: ignore[assignment]
    reflector._list()
    assert _names(reported) == ["limits"], "someone else's deletion is still reported"


def test_an_object_iotsec_deletes_while_a_relist_is_on_its_way_is_not_reported():
    reported: list[dict] = []
    reflector = _reflector(reported)
    reflector._apply("ADDED", _quota("bounds", "10"))
    reflector._apply("ADDED", _quota("limits", "11"))

    class Listing:
        def list_at(self, api_version: str, kind: str) -> tuple[list[dict], str]:
            reflector._apply("DELETED", {"metadata": {"name": "bounds", "namespace": "acme-meters"}})  # forget
            return [_quota("limits", "11")], "30"

    reflector.kube = Listing()  # type: ignore[assignment]
    reflector._list()
    assert reported == []


def _incarnation(name: str, version: str, uid: str) -> dict:
    quota = _quota(name, version)
    quota["metadata"]["uid"] = uid
    return quota


def test_the_late_deletion_of_an_earlier_incarnation_keeps_the_one_iotsec_made_again():
    """A changed roleRef is deleted and created again: the old one's DELETED event, after the new one's answer."""
    reported: list[dict] = []
    reflector = _reflector(reported)
    reflector.take("ADDED", _incarnation("binding", "10", "uid-old"))
    reflector.expect_deletion("acme-meters", "binding")
    reflector._apply("DELETED", {"metadata": {"name": "binding", "namespace": "acme-meters"}})  # forget
    reflector._apply("MODIFIED", _incarnation("binding", "14", "uid-new"))  # observe: the new one's answer
    reflector.take("DELETED", _incarnation("binding", "12", "uid-old"))  # the old one's event, late
    assert [o["metadata"]["uid"] for o in reflector.items()] == ["uid-new"], "the new one is not taken for gone"
    reflector.take("ADDED", _incarnation("binding", "14", "uid-new"))
    assert [o["metadata"]["uid"] for o in reflector.items()] == ["uid-new"]
    assert reported == []
    reflector.take("DELETED", _incarnation("binding", "20", "uid-new"))  # then someone deletes the new one
    assert _names(reported) == ["binding"]


def test_an_event_from_before_iotsec_s_deletion_arriving_after_it_is_not_news():
    """The watch lags: iotsec's delete was answered (and forgotten) before the watch brought the object's last
    MODIFIED and its DELETED."""
    reported: list[dict] = []
    reflector = _reflector(reported)
    reflector.take("ADDED", _incarnation("bounds", "10", "u1"))
    reflector.expect_deletion("acme-meters", "bounds")
    reflector._apply("DELETED", {"metadata": {"name": "bounds", "namespace": "acme-meters"}})  # forget
    reflector.take("MODIFIED", _incarnation("bounds", "10", "u1"))
    assert reflector.items() == [], "the copy iotsec deleted does not come back"
    reflector.take("DELETED", _incarnation("bounds", "12", "u1"))
    assert reported == []


def test_a_relist_from_before_iotsec_s_deletion_then_its_event_is_not_news():
    reported: list[dict] = []
    reflector = _reflector(reported)
    reflector.take("ADDED", _incarnation("bounds", "10", "u1"))
    reflector.expect_deletion("acme-meters", "bounds")
    reflector._apply("DELETED", {"metadata": {"name": "bounds", "namespace": "acme-meters"}})  # forget
    snapshot = _incarnation("bounds", "11", "u1")  # someone touched it; the list was read before the delete
    reflector.kube = type("Listing", (), {"list_at": lambda self, *a: ([snapshot], "11")})()  # type: ignore[assignment]
    reflector._list()
    reflector.take("DELETED", _incarnation("bounds", "12", "u1"))
    assert reported == []


# ---------------------------------------------------------------- what the reconciler does with it


class _Cluster:
    """What `owner_lost` reads: namespaces and owners, each live unless named in `gone` or `deleting`."""

    def __init__(self) -> None:
        self.gone: set[str] = set()
        self.deleting: set[str] = set()
        self.unwritten: set[str] = set()  # objects iotsec did not apply (only its labels)
        self.reads: list[tuple[str, str | None]] = []

    def disown(
        self, api_version: str, kind: str, name: str, namespace: str | None = None, uid: str | None = None
    ) -> bool:
        return name not in self.unwritten

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        self.reads.append((kind, name))
        if name in self.gone:
            return None
        meta: dict[str, Any] = {"name": name, "namespace": namespace}
        if name in self.deleting:
            meta["deletionTimestamp"] = "2026-12-05T00:00:00Z"
        return {"metadata": meta}


@pytest.fixture
def cluster(monkeypatch) -> _Cluster:
    fake = _Cluster()
    monkeypatch.setattr(reconciler, "kube", lambda: fake)
    return fake


@pytest.fixture
def warned(monkeypatch) -> list[tuple[dict, str, str]]:
    posted: list[tuple[dict, str, str]] = []
    monkeypatch.setattr(reconciler.kopf, "warn", lambda body, reason, message: posted.append((body, reason, message)))
    return posted


@pytest.fixture
def asked(monkeypatch, cluster, warned) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(reconciler, "reconcile_soon", lambda *args: calls.append(args) or True)
    monkeypatch.setattr(reconciler, "_posting_context", [contextvars.copy_context()])
    monkeypatch.setattr(
        reconciler,
        "_owners",
        {"TenantIsolation": (handler.reconcile, False), "BackupPolicy": (lambda *a, **k: None, True)},
    )
    return calls


def _lost_count(owner_kind: str, kind: str) -> float:
    return metrics.OBJECTS_LOST.labels(owner_kind, kind)._value.get()


def test_a_lost_object_asks_its_owner_for_a_reconcile_and_warns_on_it(asked, warned):
    before = _lost_count("TenantIsolation", "ResourceQuota")
    assert reconciler.owner_lost("v1", "ResourceQuota", _quota("bounds", "10"))
    ((kind, name, _, delay, namespace),) = asked
    assert (kind, name, delay, namespace) == ("TenantIsolation", "acme", reconciler.LOST_DELAY_SECONDS, None)
    assert _lost_count("TenantIsolation", "ResourceQuota") == before + 1
    [(body, reason, message)] = warned
    assert body["metadata"]["name"] == "acme", "the event is on the owner, where its users look"
    assert reason == "ManagedObjectDeleted"
    assert message == "ResourceQuota acme-meters/bounds was deleted, not by iotsec: reconciling to put it back"


def test_deletions_folded_into_one_reconcile_warn_once(asked, warned, monkeypatch):
    monkeypatch.setattr(reconciler, "reconcile_soon", lambda *args: asked.append(args) or len(asked) == 1)
    for name in ("bounds", "limits", "more"):
        assert reconciler.owner_lost("v1", "ResourceQuota", _quota(name, "10"))
    assert len(asked) == 3
    assert [message.split(" ")[1] for _, _, message in warned] == ["acme-meters/bounds"]


def test_a_namespaced_owner_is_looked_for_beside_its_object(asked):
    assert reconciler.owner_lost("v1", "ConfigMap", _quota("restic", "3", owner="nightly", owner_kind="BackupPolicy"))
    assert [(call[0], call[1], call[4]) for call in asked] == [("BackupPolicy", "nightly", "acme-meters")]


@pytest.mark.parametrize(
    "change",
    ["not iotsec's", "no owner name", "an owner kind iotsec does not reconcile", "a namespaced owner, no namespace"],
)
def test_what_names_no_owner_iotsec_reconciles_asks_nothing(asked, change):
    obj = _quota("bounds", "10")
    labels, meta = obj["metadata"]["labels"], obj["metadata"]
    if change == "not iotsec's":
        labels[MANAGED_BY] = "helm"
    elif change == "no owner name":
        del labels[OWNER_NAME]
    elif change == "an owner kind iotsec does not reconcile":
        labels[OWNER_KIND] = "Deployment"
    else:
        labels[OWNER_KIND] = "BackupPolicy"
        del meta["namespace"]
    assert not reconciler.owner_lost("v1", "ResourceQuota", obj)
    assert asked == []


@pytest.mark.parametrize(
    "going",
    [("gone", "acme"), ("deleting", "acme"), ("deleting", "acme-meters"), ("gone", "acme-meters")],
    ids=["owner gone", "owner being deleted", "namespace terminating", "namespace gone"],
)
def test_what_went_with_its_namespace_or_its_owner_asks_nothing(asked, cluster, going):
    """A tenant deleted, or a namespace terminating: its objects go too, and nobody deleted them from under it."""
    state, name = going
    getattr(cluster, state).add(name)
    before = _lost_count("TenantIsolation", "ResourceQuota")
    assert not reconciler.owner_lost("v1", "ResourceQuota", _quota("bounds", "10"))
    assert asked == []
    assert _lost_count("TenantIsolation", "ResourceQuota") == before


def test_an_owner_that_cannot_be_read_is_asked_anyway(asked, cluster, warned, monkeypatch):
    def unreachable(*args: Any, **kwargs: Any) -> dict:
        raise ApiError("connection refused", 0)

    monkeypatch.setattr(cluster, "get", unreachable)
    assert reconciler.owner_lost("v1", "ResourceQuota", _quota("bounds", "10"))
    assert [call[1] for call in asked] == ["acme"]
    assert warned == [], "no owner read: nothing to post the event on"


def test_an_object_that_only_carries_iotsec_labels_asks_nothing_and_reads_nothing(asked, cluster, warned):
    """A tenant admin may create a ServiceAccount labelled as a SecurityDomain's and delete it, again and again: no
    reconcile of that domain, no Warning on it, no read on the watch's thread."""
    forged = _quota("forged", "10", owner="prod", owner_kind="TenantIsolation")
    cluster.unwritten.add("forged")
    for _ in range(5):
        assert not reconciler.owner_lost("v1", "ServiceAccount", forged)
    assert (asked, warned, cluster.reads) == ([], [], [])


def test_one_deletion_told_by_both_watches_counts_once(asked, warned, monkeypatch):
    """kopf's watch of NetworkPolicies and the watch cache both see a policy go: one count, one reconcile."""
    server = FakeServer()
    api = kube_on(server)
    monkeypatch.setattr(reconciler, "kube", lambda: api)
    monkeypatch.setattr(api, "get", lambda *a, **k: {"metadata": {"name": a[2]}})
    policy = _quota("default-deny", "0", owner="core", owner_kind="TenantIsolation")
    policy.update(apiVersion="networking.k8s.io/v1", kind="NetworkPolicy")
    api.apply(policy)
    before = _lost_count("TenantIsolation", "NetworkPolicy")
    told = [reconciler.owner_lost("networking.k8s.io/v1", "NetworkPolicy", policy) for _ in range(2)]
    assert told == [True, False]
    assert _lost_count("TenantIsolation", "NetworkPolicy") == before + 1
    assert len(asked) == 1
    assert len(warned) == 1
    api.forgotten("networking.k8s.io/v1", "NetworkPolicy", "default-deny", "acme-meters")  # the cache saw it go
    api.apply(policy)  # put back: a later deletion is news again
    assert reconciler.owner_lost("networking.k8s.io/v1", "NetworkPolicy", policy)


def test_before_any_handler_ran_nothing_is_asked(asked, monkeypatch):
    monkeypatch.setattr(reconciler, "_posting_context", [])
    assert not reconciler.owner_lost("v1", "ResourceQuota", _quota("bounds", "10"))
    assert asked == []


def test_the_operator_s_cache_tells_the_reconciler(monkeypatch):
    started: list[WatchCache] = []
    monkeypatch.setattr(runtime, "Kube", lambda **_: type("Api", (), {"cache": None})())
    monkeypatch.setattr(WatchCache, "start", lambda self: started.append(self))
    monkeypatch.setattr(runtime._API_REQUESTS, "api", runtime._API_REQUESTS.api)  # _new_kube sets it: put it back
    runtime._new_kube()
    [cache] = started
    told: list[tuple[str, str]] = []
    monkeypatch.setattr(runtime, "lost_object_listeners", [lambda av, kind, obj: told.append((kind, obj["n"]))])
    cache.reflectors["v1", "ResourceQuota"].on_gone([{"n": "bounds"}])
    assert told == [("ResourceQuota", "bounds")]
    assert reconciler.owner_lost in reconciler.lost_object_listeners


def test_one_failing_report_does_not_keep_the_others_from_their_owners(caplog):
    cache = WatchCache(None, (), managed=(("v1", "ResourceQuota"),))  # type: ignore[arg-type]
    told: list[str] = []

    def listener(api_version: str, kind: str, obj: dict) -> None:
        if obj["metadata"]["name"] == "bad":
            raise RuntimeError("boom")
        told.append(obj["metadata"]["name"])

    cache.on_gone = listener
    cache.reflectors["v1", "ResourceQuota"].on_gone([_quota("bad", "1"), _quota("good", "2")])
    assert told == ["good"]
    assert "reporting bad gone failed" in caplog.text


# ---------------------------------------------------------------- end to end, on the fake API server


def test_a_tenant_s_quota_deleted_by_someone_is_back_before_any_resync(monkeypatch):
    server = _server_with(monkeypatch, "acme-utilities")
    api = kube_on(server)
    assert isinstance(api.cache, WatchCache)
    api.cache.on_gone = runtime._object_lost
    _reconcile(api, monkeypatch)
    quotas = [key for key in server.objects if key[1] == "ResourceQuota"]
    assert quotas, "the tenant has quotas"
    monkeypatch.setattr(reconciler, "_posting_context", [contextvars.copy_context()])
    monkeypatch.setattr(reconciler, "LOST_DELAY_SECONDS", 0.0)
    monkeypatch.setattr(reconciler, "_owners", {"TenantIsolation": (handler.reconcile, False)})
    monkeypatch.setattr(reconciler, "kube", lambda: api)
    done = threading.Event()
    requested = reconciler._run_requested
    monkeypatch.setattr(reconciler, "_run_requested", lambda *a: (requested(*a), done.set()))
    api.requests.clear()
    gone = server.objects.pop(quotas[0])
    event(api, "DELETED", gone)  # someone else's deletion: the cache still held it
    assert done.wait(10), "the owner's reconcile ran"
    assert quotas[0] in server.objects, "the quota is back"
    assert api.requests["apply"] == 1, "only the deleted object is written again"


# ---------------------------------------------------------------- the second review's scenarios


class _UidServer(FakeServer):
    """Like the API server: an object made (again) gets a new uid; a write to an existing one keeps its uid."""

    def __init__(self) -> None:
        super().__init__()
        self._uids = itertools.count(1)

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        held = self.find(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
        uid = held["metadata"]["uid"] if held is not None else f"uid-{next(self._uids)}"
        return super().put({**obj, "metadata": {**meta, "uid": uid}})


NP = ("networking.k8s.io/v1", "NetworkPolicy")


def _policy() -> dict[str, Any]:
    labels = {MANAGED_BY: MANAGER, OWNER_KIND: "SecurityDomain", OWNER_NAME: "prod"}
    return {
        "apiVersion": NP[0],
        "kind": NP[1],
        "metadata": {"name": "iotsec-prod-default-deny", "namespace": "m1", "labels": labels},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }


@pytest.fixture
def domain_env(monkeypatch, warned):
    from iotsec.controllers import securitydomain

    server = _UidServer()
    server.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "m1"}})
    server.put({"apiVersion": "iotsec.io/v1alpha1", "kind": "SecurityDomain", "metadata": {"name": "prod"}})
    asked: list[tuple[Any, ...]] = []
    monkeypatch.setattr(reconciler, "reconcile_soon", lambda *args: asked.append(args[:2]) or True)
    monkeypatch.setattr(reconciler, "_posting_context", [contextvars.copy_context()])
    monkeypatch.setitem(reconciler._owners, "SecurityDomain", (lambda *a, **k: None, False))

    def on(api: Any) -> None:
        monkeypatch.setattr(reconciler, "kube", lambda: api)
        monkeypatch.setattr(securitydomain, "kube", lambda: api)
        api.cache.on_gone = runtime._object_lost

    return server, asked, on


def test_after_a_restart_a_deleted_default_deny_still_asks_its_domain(domain_env):
    """The restarted operator's first reconcile finds the policy as it wants it and sends nothing; someone deleting
    it afterwards is still news (it used to wait for the resync: no apply, so not known as iotsec's)."""
    from iotsec.controllers import securitydomain

    server, asked, on = domain_env
    server.put(_policy())  # made by the process before the restart
    api = kube_on(server)
    on(api)
    api.apply(_policy())  # the domain's first reconcile after the restart
    assert api.requests["apply"] == 0
    gone = server.objects.pop((*NP, "m1", "iotsec-prod-default-deny"))
    event(api, "DELETED", gone)  # the watch cache
    securitydomain.policy_deleted(copy.deepcopy(gone))  # kopf's watch
    assert asked == [("SecurityDomain", "prod")]


def test_kopf_s_late_deletion_of_the_policy_before_the_repair_keeps_the_repair(domain_env, warned):
    """Someone deletes a policy; the cache's watch tells first and the domain puts it back (a new uid); kopf's
    DELETED of the old one is handled after that: the new one stays in the cache, one count, one Warning."""
    from iotsec.controllers import securitydomain

    server, asked, on = domain_env
    api = kube_on(server)
    on(api)
    event(api, "ADDED", api.apply(_policy()))
    gone = server.objects.pop((*NP, "m1", "iotsec-prod-default-deny"))
    event(api, "DELETED", gone)
    again = api.apply(_policy())  # the domain's reconcile
    assert again["metadata"]["uid"] != gone["metadata"]["uid"]
    securitydomain.policy_deleted(copy.deepcopy(gone))  # kopf, late
    held = api.cache.reflectors[NP].get("m1", "iotsec-prod-default-deny")
    assert held is not None
    assert held["metadata"]["uid"] == again["metadata"]["uid"]
    assert len(asked) == 1
    assert len(warned) == 1
    applies = api.requests["apply"]
    api.apply(_policy())
    assert api.requests["apply"] == applies, "the repaired policy is known unchanged: nothing sent"


def test_a_namespace_made_again_stays_in_the_cache_when_kopf_tells_the_old_one_s_deletion_late(domain_env, monkeypatch):
    from iotsec.controllers import securitydomain

    server, _, on = domain_env
    api = kube_on(server)
    on(api)
    monkeypatch.setattr(securitydomain, "_domains_concerned", lambda name, labels: set())  # only the cache matters
    old = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "m2", "resourceVersion": "50", "uid": "a"}}
    new = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "m2", "resourceVersion": "60", "uid": "b"}}
    event(api, "ADDED", old)
    event(api, "DELETED", {**old, "metadata": {**old["metadata"], "resourceVersion": "55"}})
    event(api, "ADDED", new)  # the cache's watch is ahead of kopf's handlers
    securitydomain.namespace_changed("DELETED", "m2", {}, copy.deepcopy(old))
    securitydomain.namespace_changed("ADDED", "m2", {}, copy.deepcopy(new))
    assert api.cache.reflectors["v1", "Namespace"].get("", "m2")["metadata"]["uid"] == "b"
