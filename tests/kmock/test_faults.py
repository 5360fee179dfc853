"""API faults against kmock: the adapter classifies them, the operator retries and still converges."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest
from kubernetes import client

import kmock
from iotsec.controllers import runtime
from iotsec.controllers import securitydomain as handlers
from iotsec.k8s.kube import ApiError, Kube
from tests.kmock.conftest import NETPOL, SD, apply_ok, status, wait_for

NP = kmock.resource(NETPOL)
SSA = ("patch", NP, kmock.headers({"Content-Type": "application/apply-patch+yaml"}))
POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "p", "namespace": "a"},
    "spec": {"podSelector": {}},
}


def _kube(k8s: Any) -> Kube:
    return Kube(client.ApiClient(client.Configuration(host=str(k8s.url).rstrip("/"))))


# ---------------------------------------------------------------- the adapter


@pytest.mark.parametrize(("code", "reason"), [(409, "Conflict"), (429, "TooManyRequests"), (500, "InternalError")])
async def test_apply_faults_are_transient_and_the_next_attempt_succeeds(k8s, code, reason):
    k8s.fault(k8s[SSA][:1]) << code << {"Retry-After": "2"} << status(code, reason, "injected")
    k8s.fault(k8s[SSA]) << apply_ok
    kube = _kube(k8s)
    with pytest.raises(ApiError) as caught:
        await asyncio.to_thread(kube.apply, POLICY)
    assert caught.value.status == code
    assert caught.value.transient
    assert caught.value.retry_after == 2.0
    assert reason in str(caught.value)
    applied = await asyncio.to_thread(kube.apply, POLICY)
    assert applied["metadata"]["name"] == "p"
    request = k8s[SSA][-1]
    assert request.params["fieldManager"] == "iotsec"
    assert request.params["force"] == "true"


async def test_invalid_object_is_a_permanent_error(k8s):
    k8s.fault(k8s[SSA]) << 422 << status(422, "Invalid", "spec.podSelector: Invalid value")
    with pytest.raises(ApiError) as caught:
        await asyncio.to_thread(_kube(k8s).apply, POLICY)
    assert caught.value.status == 422
    assert not caught.value.transient


async def test_unreachable_server_is_transient():
    kube = Kube(client.ApiClient(client.Configuration(host="http://127.0.0.1:9")))
    with pytest.raises(ApiError) as caught:
        await asyncio.to_thread(kube.list, "v1", "Namespace")
    assert caught.value.status is None
    assert caught.value.transient


async def test_prune_deletes_only_this_owners_stale_children(k8s):
    def policy(name: str, labels: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "a", "labels": labels},
            "spec": {"podSelector": {}},
        }

    ours = {
        "app.kubernetes.io/managed-by": "iotsec",
        "iotsec.io/owner-kind": "SecurityDomain",
        "iotsec.io/owner-name": "core",
    }
    for name, labels in [
        ("keep", ours),
        ("stale", ours),
        ("other-owner", {**ours, "iotsec.io/owner-name": "x"}),
        ("hand-made", {"app": "mine"}),
    ]:
        k8s.objects[NETPOL, "a", name] = policy(name, labels)
    removed = await asyncio.to_thread(
        _kube(k8s).prune, "networking.k8s.io/v1", "NetworkPolicy", "SecurityDomain", "core", {("a", "keep")}
    )
    assert removed == [("a", "stale")]
    assert [r.name for r in k8s["delete", NP]] == ["stale"]


# ---------------------------------------------------------------- the operator


_server: dict[str, str] = {}


@kopf.on.login()
def _login(**_: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=_server["url"], insecure=True)


@kopf.on.startup()
def _fast_test_settings(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.scanning.disabled = True
    settings.networking.error_backoffs = [0.1] * 3
    settings.queueing.error_delays = [0.2] * 10
    settings.watching.reconnect_backoff = 0.1


@pytest.fixture
def cluster(k8s, monkeypatch):
    """One namespace and one SecurityDomain; the handlers talk to the emulator."""
    _server["url"] = str(k8s.url).rstrip("/")
    kube = _kube(k8s)
    monkeypatch.setattr(handlers, "kube", lambda: kube)
    monkeypatch.setattr(runtime, "_loaded", dataclasses.replace(runtime.config(), metrics_port=0, retry_seconds=0.3))
    handlers._parsed.clear()
    k8s.objects["v1/namespaces", None, "a"] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "a", "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z"},
    }
    k8s.objects[SD, None, "core"] = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {
            "name": "core",
            "uid": "uid-core",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "zone": "core",
            "namespaces": ["a"],
            "securityLevelIsolation": False,
            "allow": [{"name": "web", "from": [{"cidr": "10.0.0.0/8"}], "ports": [{"port": 443}]}],
        },
    }
    return k8s


async def _run_until_ready(k8s: Any, extra: Any = None) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(kopf.operator(standalone=True, clusterwide=True, stop_flag=stop))
    try:
        if extra is not None:
            await extra()
        await wait_for(lambda: _ready(k8s) == "True" or task.done(), timeout=30)
        assert not task.done(), "the operator exited"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


def _ready(k8s: Any) -> str | None:
    conditions = (k8s.objects[SD, None, "core"].get("status") or {}).get("conditions") or []
    return next((c["status"] for c in conditions if c["type"] == "Ready"), None)


def _applied(k8s: Any) -> set[str]:
    return {r.name for r in k8s[SSA]}


EXPECTED = {"iotsec-core-default-deny", "iotsec-core-dns", "iotsec-core-intra", "iotsec-core-in-web"}


@pytest.mark.parametrize(("code", "reason"), [(409, "Conflict"), (500, "InternalError"), (503, "ServiceUnavailable")])
async def test_operator_retries_a_failed_apply_and_converges(cluster, code, reason):
    fault = cluster.fault(cluster[SSA][:1]) << code << status(code, reason, "injected")
    cluster.fault(cluster[SSA]) << apply_ok
    await _run_until_ready(cluster)
    assert len(list(fault)) == 1
    assert _applied(cluster) == EXPECTED
    assert len(cluster[SSA]) >= len(EXPECTED) + 1, "the failed apply was repeated"
    assert cluster.objects[SD, None, "core"]["status"]["policyCount"] == len(EXPECTED)


async def test_operator_waits_as_long_as_retry_after_says(cluster):
    fault = (
        cluster.fault(cluster[SSA][:1]) << 429 << {"Retry-After": "2"} << status(429, "TooManyRequests", "slow down")
    )
    cluster.fault(cluster[SSA]) << apply_ok
    loop = asyncio.get_running_loop()
    times: dict[str, float] = {}

    async def measure() -> None:
        await wait_for(lambda: len(list(fault)) == 1)
        times["fault"] = loop.time()
        await wait_for(lambda: len(cluster[SSA]) >= 2)
        times["retry"] = loop.time()

    await _run_until_ready(cluster, measure)
    assert times["retry"] - times["fault"] >= 1.8, "retried before Retry-After had passed"


async def test_operator_survives_an_expired_watch_and_still_sees_changes(cluster):
    """The watch breaks with 410 Gone (history compacted): kopf must re-list, then follow the new watch."""
    cluster.fault(cluster[SSA]) << apply_ok
    watch = kmock.resource(SD)
    expired = status(410, "Expired", "too old resource version")
    cluster["watch", watch][:1] << (b"", lambda: asyncio.sleep(0.5), {"type": "ERROR", "object": expired})

    async def change_spec_after_rewatch() -> None:
        await wait_for(lambda: len(cluster["watch", watch]) >= 2)
        await wait_for(lambda: _ready(cluster) == "True")
        body = {
            "metadata": {"generation": 2},
            "spec": {"allow": [{"name": "api", "from": [{"cidr": "10.0.0.0/8"}], "ports": [{"port": 8443}]}]},
        }
        await cluster.patch(f"/apis/{SD}/core", json=body, headers={"Connection": "close"})
        await wait_for(lambda: "iotsec-core-in-api" in _applied(cluster))

    await _run_until_ready(cluster, change_spec_after_rewatch)
    assert len(cluster["list", watch]) >= 2, "re-listed after the expired watch"
    assert len(cluster["watch", watch]) >= 2


def _policy_list(names: list[str], token: str | None = None) -> dict[str, Any]:
    metadata = {"resourceVersion": "7", **({"continue": token} if token else {})}
    items = [{**POLICY, "metadata": {**POLICY["metadata"], "name": n}} for n in names]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicyList", "metadata": metadata, "items": items}


async def test_a_list_is_read_in_pages_and_starts_again_when_its_snapshot_expired(k8s):
    """Red team F5: one list response of every ConfigMap, values and all, was decoded at once. Lists now ask for
    pages of LIST_PAGE objects and follow `continue`; a 410 Gone between pages (the snapshot compacted away) starts
    the list again, once."""
    from iotsec.k8s.kube import LIST_PAGE

    first = k8s.fault(k8s["list", NP, kmock.params(limit=str(LIST_PAGE))][:1])
    first << _policy_list(["a", "b"], token="page-2")
    second = k8s.fault(k8s["list", NP, kmock.params({"continue": "page-2"})][:1])
    second << _policy_list(["c"])
    found = await asyncio.to_thread(_kube(k8s).list, "networking.k8s.io/v1", "NetworkPolicy", "a")
    assert [p["metadata"]["name"] for p in found] == ["a", "b", "c"]
    assert len(list(first)) == 1
    assert len(list(second)) == 1


async def test_a_paged_list_whose_snapshot_expired_starts_again_once(k8s):
    from iotsec.k8s.kube import LIST_PAGE

    expired = k8s.fault(k8s["list", NP, kmock.params({"continue": "page-2"})][:1])
    expired << 410 << status(410, "Expired", "The provided continue parameter is too old")
    k8s.fault(k8s["list", NP, kmock.params({"continue": "page-2"})]) << _policy_list(["c", "d"])
    pages = k8s.fault(k8s["list", NP, kmock.params(limit=str(LIST_PAGE))])  # the first page (the others: above)
    pages << _policy_list(["a", "b"], token="page-2")
    found = await asyncio.to_thread(_kube(k8s).list, "networking.k8s.io/v1", "NetworkPolicy", "a")
    assert [p["metadata"]["name"] for p in found] == ["a", "b", "c", "d"]
    firsts = [r for r in pages if "continue" not in r.params]
    assert len(firsts) == 2, "the list started again from its first page"
    assert len(list(expired)) == 1


async def test_replace_is_a_compare_and_swap_none_when_someone_wrote_first(k8s):
    k8s.resources["coordination.k8s.io/v1/leases"] = kmock.ResourceInfo(
        kind="Lease", namespaced=True, verbs={"get", "create", "update"}
    )
    put = ("put", kmock.resource("coordination.k8s.io/v1/leases"))
    k8s.fault(k8s[put][:1]) << 409 << status(409, "Conflict", "the object has been modified")
    k8s.fault(k8s[put]) << (
        lambda request: {**request.data, "metadata": {**request.data["metadata"], "resourceVersion": "9"}}
    )
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "iotsec-operator", "namespace": "iotsec-system", "resourceVersion": "7"},
        "spec": {"holderIdentity": "pod-a"},
    }
    kube = _kube(k8s)
    assert await asyncio.to_thread(kube.replace, lease) is None
    written = await asyncio.to_thread(kube.replace, lease)
    assert written is not None
    assert written["metadata"]["resourceVersion"] == "9"
    assert [r.data["metadata"]["resourceVersion"] for r in k8s[put]] == ["7", "7"], "the version is the condition"


async def test_a_namespace_that_appeared_while_the_namespace_watch_was_down_is_isolated_at_the_relist(cluster):
    """The namespace watch ends with 410 Gone; a namespace the domain selects was created meanwhile. kopf lists
    again and hands it over as an event of type None, like its start-up listing: the domain must still take it in
    now, not at its resync a minute later."""
    cluster.fault(cluster[SSA]) << apply_ok
    cluster.objects[SD, None, "core"] = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {"name": "core", "uid": "uid-core", "generation": 1, "resourceVersion": "1"},
        "spec": {"zone": "core", "namespaces": ["a"], "namespaceSelector": {"matchLabels": {"zone": "core"}}},
    }
    namespaces = kmock.resource("v1/namespaces")
    expired = status(410, "Expired", "too old resource version")

    async def created_meanwhile() -> None:
        await wait_for(lambda: _ready(cluster) == "True")
        await asyncio.sleep(2)  # the reconciles of the start are over: the domain planned without "b"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        cluster.objects["v1/namespaces", None, "b"] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "b", "resourceVersion": "9", "labels": {"zone": "core"}, "creationTimestamp": now},
        }

    cluster["watch", namespaces][:1] << (b"", created_meanwhile, {"type": "ERROR", "object": expired})

    async def isolated_after_relist() -> None:
        await wait_for(lambda: any(r.namespace == "b" for r in cluster[SSA]), timeout=15)

    await _run_until_ready(cluster, isolated_after_relist)
    assert len(cluster["list", namespaces]) >= 2, "kopf listed the namespaces again after the expired watch"
    assert {r.name for r in cluster[SSA] if r.namespace == "b"} >= {"iotsec-core-default-deny"}
