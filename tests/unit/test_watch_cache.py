"""The webhook's informer-style view of the cluster (issue 15): list, then watch; relist on 410 Gone and on a broken
stream without ever emptying the store; a snapshot rebuilt per change, validating each custom resource once per
resourceVersion; readiness only after every kind was listed; a request in a namespace the snapshot lacks waits
for its watch event."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from iotsec.admission import snapshot as snapshot_module
from iotsec.admission.snapshot import CONTEXT_SOURCES as SOURCES
from iotsec.k8s.cache import Reflector
from iotsec.k8s.kube import ApiError
from iotsec.servers.webhook import cluster
from iotsec.servers.webhook.cluster import ClusterSnapshot
from iotsec.servers.webhook.review import review


def namespace(name: str, version: str = "1", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": version, "labels": labels},
    }


def domain(name: str, members: list[str], version: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": version},
        "spec": {"zone": "core", "namespaces": members, "enforcement": "enforce", "podSecurity": "restricted"},
    }


class ScriptedKube:
    """list_at and watch of an API server, scripted per kind: each watch call takes the next script, a list of
    events and exceptions; an exhausted script blocks until released (a quiet, open stream)."""

    def __init__(self) -> None:
        self.lists: dict[str, list[list[dict[str, Any]]]] = {}
        self.watches: dict[str, list[list[Any]]] = {}
        self.listed: dict[str, int] = {}
        self.resumed_from: dict[str, list[str]] = {}
        self.release = threading.Event()
        self.cond = threading.Condition()

    def list_at(self, api_version: str, kind: str) -> tuple[list[dict[str, Any]], str]:
        self.listed[kind] = self.listed.get(kind, 0) + 1
        results = self.lists.get(kind) or [[]]
        items = results.pop(0) if len(results) > 1 else results[0]
        if isinstance(items, Exception):
            raise items
        return [dict(i) for i in items], f"list-{kind}-{self.listed[kind]}"

    def watch(self, api_version: str, kind: str, version: str, timeout: int = 300) -> Iterator[tuple[str, dict]]:
        self.resumed_from.setdefault(kind, []).append(version)
        scripts = self.watches.get(kind) or []
        for step in scripts.pop(0) if scripts else []:
            if isinstance(step, Exception):
                raise step
            yield step
        self.release.wait(30)


def run_reflector(kube: ScriptedKube, kind: str, until) -> Reflector:
    changes = threading.Semaphore(0)
    reflector = Reflector(kube, "v1", kind, changes.release, retry_seconds=0.01)  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=reflector.run, args=(stop,), daemon=True)
    thread.start()
    for _ in range(200):
        if until(reflector):
            break
        changes.acquire(timeout=0.05)
    stop.set()
    kube.release.set()
    thread.join(5)
    assert until(reflector), "the reflector never reached the expected state"
    return reflector


def names(reflector: Reflector) -> set[str]:
    return {o["metadata"]["name"] for o in reflector.items()}


def test_a_reflector_lists_then_follows_added_modified_and_deleted_events():
    kube = ScriptedKube()
    kube.lists["Namespace"] = [[namespace("a"), namespace("b")]]
    kube.watches["Namespace"] = [
        [("ADDED", namespace("c")), ("MODIFIED", namespace("a", "2", team="x")), ("DELETED", namespace("b"))]
    ]
    reflector = run_reflector(kube, "Namespace", lambda r: names(r) == {"a", "c"})
    assert kube.resumed_from["Namespace"][0] == "list-Namespace-1", "the watch starts where the list ended"
    assert next(o for o in reflector.items() if o["metadata"]["name"] == "a")["metadata"]["labels"] == {"team": "x"}
    assert reflector.synced.is_set()


def test_410_gone_lists_again_and_what_was_deleted_meanwhile_goes():
    kube = ScriptedKube()
    kube.lists["Namespace"] = [[namespace("a"), namespace("b")], [namespace("a")]]
    kube.watches["Namespace"] = [[ApiError("too old resource version", 410)]]
    reflector = run_reflector(kube, "Namespace", lambda r: kube.listed.get("Namespace", 0) >= 2 and names(r) == {"a"})
    assert kube.resumed_from["Namespace"][-1] == "list-Namespace-2", "resumed from the new list, not the old one"
    assert reflector.lists == 2


def test_a_broken_stream_keeps_the_last_state_while_the_list_fails():
    kube = ScriptedKube()
    kube.lists["Namespace"] = [[namespace("a")], ApiError("connection refused"), [namespace("a"), namespace("z")]]
    kube.watches["Namespace"] = [[("ADDED", namespace("b")), ApiError("the stream broke")]]
    seen: list[set[str]] = []

    def recorded(reflector: Reflector) -> bool:
        seen.append(names(reflector))
        return names(reflector) == {"a", "z"}

    run_reflector(kube, "Namespace", recorded)
    assert set() not in seen, "the store is never emptied by a failure"
    assert kube.listed["Namespace"] == 3


def scripted_cluster(**lists: list[dict[str, Any]]) -> ScriptedKube:
    kube = ScriptedKube()
    for _, kind in SOURCES:
        kube.lists[kind] = [lists.get(kind, [])]
    return kube


def pod_review(namespace_name: str) -> bytes:
    import orjson

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace_name},
        "spec": {"containers": [{"name": "c", "image": "registry.example.com/app:1.0", "securityContext": {
            "privileged": True}}]},
    }  # fmt: skip
    request = {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": namespace_name,
        "operation": "CREATE",
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": pod,
    }
    return orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})


def test_not_ready_until_every_kind_was_listed_then_a_new_namespace_is_judged_by_its_domain():
    kube = scripted_cluster(SecurityDomain=[domain("plant", ["plant-a", "plant-b"])], Namespace=[namespace("plant-a")])
    kube.lists["StorageClass"] = [ApiError("the API server is not answering", 503), []]
    kube.watches["Namespace"] = [[("ADDED", namespace("plant-b"))]]
    source = ClusterSnapshot(kube)  # type: ignore[arg-type]

    async def scenario() -> None:
        task = asyncio.create_task(source.run())
        for _ in range(400):
            if source.current is not None and "plant-b" in source.current.namespaces:
                break
            await asyncio.sleep(0.01)
        task.cancel()

    try:
        asyncio.run(scenario())
    finally:
        kube.release.set()
    assert kube.listed["StorageClass"] >= 2, "no snapshot before StorageClasses were listed"
    assert source.current is not None
    decision = review(pod_review("plant-b"), source.current, lambda: datetime.now(UTC))
    message = decision.body["response"]["status"]["message"]
    assert "domain-membership" not in message, "judged by the domain, not as a namespace of no domain"
    assert "privileged" in message


def test_a_request_in_a_namespace_the_snapshot_lacks_waits_for_its_watch_event():
    """The API server admits a pod only in a namespace that exists: if the snapshot lacks it, the watch is behind."""
    from iotsec.servers.webhook.server import make_app

    kube = scripted_cluster(SecurityDomain=[domain("plant", ["plant-new"])])
    gate = threading.Event()

    def late_namespace() -> Iterator[tuple[str, dict]]:
        gate.wait(10)
        yield "ADDED", namespace("plant-new")

    kube.watches["Namespace"] = [[]]
    original_watch = kube.watch

    def watch(api_version: str, kind: str, version: str, timeout: int = 300):
        if kind == "Namespace":
            kube.resumed_from.setdefault(kind, []).append(version)
            yield from late_namespace()
            kube.release.wait(30)
            return
        yield from original_watch(api_version, kind, version, timeout)

    kube.watch = watch  # type: ignore[method-assign]
    source = ClusterSnapshot(kube)  # type: ignore[arg-type]

    async def scenario() -> str:
        from aiohttp.test_utils import TestClient, TestServer

        task = asyncio.create_task(source.run())
        for _ in range(400):
            if source.current is not None:
                break
            await asyncio.sleep(0.01)
        assert source.current is not None
        assert "plant-new" not in source.current.namespaces
        async with TestClient(TestServer(make_app(source))) as http:
            asyncio.get_running_loop().call_later(0.3, gate.set)  # the event arrives while the request waits
            answer = await http.post("/validate", data=pod_review("plant-new"))
            body = await answer.json()
        task.cancel()
        return body["response"]["status"]["message"]

    try:
        message = asyncio.run(scenario())
    finally:
        gate.set()
        kube.release.set()
    assert "domain-membership" not in message
    assert "privileged" in message


def test_each_custom_resource_is_validated_once_per_resource_version(monkeypatch):
    calls: list[str] = []
    real = cluster.parse_resource

    def counting(obj: dict[str, Any]):
        calls.append(obj["metadata"]["resourceVersion"])
        return real(obj)

    monkeypatch.setattr(cluster, "parse_resource", counting)
    kube = scripted_cluster(SecurityDomain=[domain("plant", ["plant-a"])])
    source = ClusterSnapshot(kube)  # type: ignore[arg-type]
    source.reflectors = [Reflector(kube, v, k, lambda: None) for v, k in SOURCES]  # type: ignore[arg-type]
    for reflector in source.reflectors:
        reflector._list()
    for _ in range(3):
        source.load()
    assert calls == ["1"], "three builds, one validation"
    source.reflectors[0]._apply("MODIFIED", domain("plant", ["plant-a", "plant-b"], version="2"))
    assert "plant-b" in {n for d in source.load().domains for n in d.spec.namespaces}
    assert calls == ["1", "2"]
    assert snapshot_module.parse_resource is not counting, "only the webhook's parser remembers"


# -- the operator's watch cache (issue 15: handlers re-listed the whole cluster on every reconcile) -------------


def test_selector_strings_parse_as_the_api_server_reads_them():
    from iotsec.model.selectors import parse_selector, selected

    labels = {"iotsec.io/owner-kind": "SecurityDomain", "iotsec.io/owner-name": "plant", "tier": "a"}
    cases = {
        "iotsec.io/owner-kind=SecurityDomain,iotsec.io/owner-name=plant": True,
        "iotsec.io/owner-kind==SecurityDomain,iotsec.io/owner-name=other": False,
        "tier!=b": True,
        "tier in (a, b),iotsec.io/owner-kind notin (TenantIsolation)": True,
        "tier notin (a)": False,
        "tier,!missing": True,
        "missing": False,
        "": True,
    }
    for text, expected in cases.items():
        requirements = parse_selector(text)
        assert requirements is not None, text
        assert selected(requirements, labels) is expected, text
    for unsure in ("tier in a", "a b c", "tier in (a"):
        assert parse_selector(unsure) is None, unsure


def cached_kube(**lists: list[dict[str, Any]]):
    from iotsec.k8s.cache import WatchCache
    from iotsec.k8s.kube import Kube

    kube = ScriptedKube()
    for kind, items in lists.items():
        kube.lists[kind] = [items]
    kinds = (("v1", "Namespace"), ("networking.k8s.io/v1", "NetworkPolicy"), ("iotsec.io/v1alpha1", "SecurityDomain"))
    cache = WatchCache(kube, kinds, lookups=(("v1", "Namespace"),))  # type: ignore[arg-type]
    api = Kube(api_client=object(), cache=cache)  # type: ignore[arg-type]
    return api, cache, kube


def policy(name: str, namespace: str, owner: str) -> dict[str, Any]:
    labels = {"iotsec.io/owner-kind": "SecurityDomain", "iotsec.io/owner-name": owner}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace, "labels": labels}}  # fmt: skip


def test_lists_are_answered_from_the_cache_once_it_has_listed_and_never_before():
    api, cache, _ = cached_kube(
        Namespace=[namespace("a", team="x"), namespace("b")],
        NetworkPolicy=[policy("p1", "a", "plant"), policy("p2", "b", "other")],
    )
    assert cache.list("v1", "Namespace", None, None) is None, "not listed yet: ask the API server"
    for reflector in cache.reflectors.values():
        reflector._list()
    assert {n["metadata"]["name"] for n in api.list("v1", "Namespace")} == {"a", "b"}
    assert [n["metadata"]["name"] for n in api.list("v1", "Namespace", label_selector="team=x")] == ["a"]
    owned = api.list("networking.k8s.io/v1", "NetworkPolicy", label_selector="iotsec.io/owner-name=plant")
    assert [p["metadata"]["name"] for p in owned] == ["p1"]
    assert [p["metadata"]["name"] for p in api.list("networking.k8s.io/v1", "NetworkPolicy", "b")] == ["p2"]
    assert cache.list("v1", "Namespace", None, "team in x") is None, "a selector it is unsure of goes to the API"
    assert cache.list("v1", "ConfigMap", None, None) is None, "a kind it does not watch goes to the API"
    assert sum(api.requests.values()) == 0, "none of those lists reached the API server"
    api.list("v1", "Namespace")[0]["metadata"]["labels"]["team"] = "mallory"
    assert api.list("v1", "Namespace", label_selector="team=mallory") == [], "callers get copies"


def test_the_cache_holds_what_the_operator_wrote_and_was_given_before_the_watch_says_so():
    api, cache, _ = cached_kube(Namespace=[namespace("a")])
    for reflector in cache.reflectors.values():
        reflector._list()
    api.observed(namespace("new", "7", **{"iotsec.io/domain": "plant"}))
    assert [n["metadata"]["name"] for n in api.list("v1", "Namespace", label_selector="iotsec.io/domain=plant")] == [
        "new"
    ]
    assert api.get("v1", "Namespace", "new")["metadata"]["resourceVersion"] == "7", "by name too (a lookup kind)"
    api.forgotten("v1", "Namespace", "new")
    assert cache.get("v1", "Namespace", "new", None) is None, "a miss is asked of the API server, never assumed"
    assert cache.get("networking.k8s.io/v1", "NetworkPolicy", "p1", "a") is None, "not a lookup kind"


def test_an_unchanged_policy_is_not_applied_again_and_any_hand_edit_is():
    """Steady state writes nothing; but a policy edited by hand, even only narrowed in its selector (which widens
    what the default deny leaves open), is applied over."""
    from iotsec.k8s.kube import already_applied

    desired = policy("deny", "a", "plant")
    desired["metadata"]["ownerReferences"] = [{"apiVersion": "iotsec.io/v1alpha1", "kind": "SecurityDomain",
                                               "name": "plant", "uid": "u1", "controller": True}]  # fmt: skip
    desired["spec"] = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    live = copy.deepcopy(desired)
    live["metadata"].update(resourceVersion="9", uid="p-1", labels={**desired["metadata"]["labels"], "extra": "x"})
    assert already_applied(desired, live)
    narrowed = copy.deepcopy(live)
    narrowed["spec"]["podSelector"] = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]}
    widened = copy.deepcopy(live)
    widened["spec"]["ingress"] = [{}]
    relabelled = copy.deepcopy(live)
    relabelled["metadata"]["labels"]["iotsec.io/owner-name"] = "someone"
    disowned = copy.deepcopy(live)
    disowned["metadata"]["ownerReferences"] = []
    for edited in (narrowed, widened, relabelled, disowned):
        assert not already_applied(desired, edited)

    api, cache, _ = cached_kube(NetworkPolicy=[live])
    for reflector in cache.reflectors.values():
        reflector._list()
    cache.lookups.add(("networking.k8s.io/v1", "NetworkPolicy"))
    from iotsec.k8s.kube import Owner

    owner = Owner("iotsec.io/v1alpha1", "SecurityDomain", "plant", "u1")
    plain = dict(desired)
    plain["metadata"] = {k: v for k, v in desired["metadata"].items() if k != "ownerReferences"}
    assert api.apply(plain, owner)["metadata"]["resourceVersion"] == "9", "answered without a request"
    assert sum(api.requests.values()) == 0
