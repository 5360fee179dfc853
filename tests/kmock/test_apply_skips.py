"""Writes only on change (issue 18) against kmock's API emulator, counted at the emulator: a second apply of an
unchanged object sends no request; a changed body, an object someone else edited or deleted (as the cache's list
shows it) and the first apply of a fresh process are sent. The emulator keeps no resourceVersions of its own, so
applies here store the object at a new version, as the server does; the cache is listed by hand, no watch thread."""

from __future__ import annotations

import asyncio
import copy
import itertools
from typing import Any

import pytest
from kubernetes import client

import kmock
from iotsec.k8s.cache import WatchCache
from iotsec.k8s.kube import Kube
from iotsec.model.labels import MANAGED_BY, MANAGER
from tests.kmock.conftest import NETPOL
from tests.kmock.test_faults import SSA

LABELS = {MANAGED_BY: MANAGER, "iotsec.io/owner-kind": "SecurityDomain", "iotsec.io/owner-name": "core"}
POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "p", "namespace": "a", "labels": LABELS},
    "spec": {"podSelector": {}},
}
KIND = ("networking.k8s.io/v1", "NetworkPolicy")
_versions = itertools.count(1000)


@pytest.fixture
def emulator(k8s):
    def apply_stored(request: Any) -> dict[str, Any]:
        body = copy.deepcopy(request.data)
        body["metadata"]["resourceVersion"] = str(next(_versions))
        k8s.objects[NETPOL, body["metadata"]["namespace"], body["metadata"]["name"]] = body
        return body

    k8s.fault(k8s[SSA]) << apply_stored
    return k8s


def _process(k8s: Any) -> tuple[Kube, WatchCache]:
    """A fresh process's adapter, its cache following iotsec's NetworkPolicies (only: no lookups, so nothing but the
    last-applied check can skip an apply), listed once."""
    kube = Kube(client.ApiClient(client.Configuration(host=str(k8s.url).rstrip("/"))))
    cache = WatchCache(kube, (), managed=(KIND,), managed_selector=f"{MANAGED_BY}={MANAGER}")
    kube.cache = cache
    _relist(cache)
    return kube, cache


def _relist(cache: WatchCache) -> None:
    cache.reflectors[KIND]._list()


async def test_an_unchanged_object_is_applied_once_a_changed_body_again(emulator):
    kube, _ = await asyncio.to_thread(_process, emulator)
    await asyncio.to_thread(kube.apply, POLICY)
    skipped = await asyncio.to_thread(kube.apply, copy.deepcopy(POLICY))
    assert len(emulator[SSA]) == 1, "the second apply of the same body sent nothing"
    assert skipped["metadata"]["name"] == "p"
    assert kube.skipped["NetworkPolicy"] == 1
    changed = {**POLICY, "spec": {"podSelector": {"matchLabels": {"app": "x"}}}}
    await asyncio.to_thread(kube.apply, changed)
    assert len(emulator[SSA]) == 2
    assert emulator[SSA][-1].data["spec"] == changed["spec"]


async def test_an_object_someone_edited_is_applied_again(emulator):
    kube, cache = await asyncio.to_thread(_process, emulator)
    await asyncio.to_thread(kube.apply, POLICY)
    await asyncio.to_thread(_relist, cache)
    await asyncio.to_thread(kube.apply, POLICY)
    assert len(emulator[SSA]) == 1, "the cache's list shows the object as applied"
    edited = copy.deepcopy(POLICY)
    edited["spec"] = {"podSelector": {"matchLabels": {"app": "wide"}}}
    edited["metadata"]["resourceVersion"] = str(next(_versions))
    emulator.objects[NETPOL, "a", "p"] = edited
    await asyncio.to_thread(_relist, cache)
    await asyncio.to_thread(kube.apply, POLICY)
    assert len(emulator[SSA]) == 2, "the edit made the apply go out again"
    assert emulator[SSA][-1].data["spec"] == POLICY["spec"]


async def test_an_object_someone_deleted_is_applied_again(emulator):
    kube, cache = await asyncio.to_thread(_process, emulator)
    await asyncio.to_thread(kube.apply, POLICY)
    del emulator.objects[NETPOL, "a", "p"]
    await asyncio.to_thread(_relist, cache)
    assert cache.reflectors[KIND].get("a", "p") is None
    await asyncio.to_thread(kube.apply, POLICY)
    assert len(emulator[SSA]) == 2, "the deletion made the apply go out again"


async def test_a_fresh_process_applies_first_then_skips(emulator):
    first, _ = await asyncio.to_thread(_process, emulator)
    await asyncio.to_thread(first.apply, POLICY)
    kube, _ = await asyncio.to_thread(_process, emulator)
    await asyncio.to_thread(kube.apply, POLICY)
    await asyncio.to_thread(kube.apply, POLICY)
    assert len(emulator[SSA]) == 2, "one apply per process"


async def test_the_cache_lists_only_iotsecs_objects_of_a_managed_kind(emulator):
    await asyncio.to_thread(_process, emulator)
    listed = emulator["list", kmock.resource(NETPOL)]
    assert [r.params.get("labelSelector") for r in listed] == [f"{MANAGED_BY}={MANAGER}"]
