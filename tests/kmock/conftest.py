"""kmock: a Kubernetes API emulator for the faults a real server will not produce on demand.

kmock 0.8's emulator needs three corrections to stand in for an API server here (its README says the API may
still change before 1.0, hence the exact pin in pyproject.toml):
- requests marked as faults must not change the stored objects (it applies writes before reactions run);
- a re-watch must not replay every object as ADDED (it ignores resourceVersion);
- list responses need their kind, which the Kubernetes client relies on.
- `/api/v1/namespaces[/NAME]` addresses the Namespace resource itself, not objects inside a namespace.
Server-side apply is answered by a reaction (`apply_ok`), since the emulator only knows merge patches.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from kmock._internal import parsing

import kmock

_parse_path = parsing.parse_path


def _parse_path_with_namespaces(path: str) -> parsing.ParsedPath:
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        return parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None, None)
    return _parse_path(path)


parsing.parse_path = _parse_path_with_namespaces

SD = "iotsec.io/v1alpha1/securitydomains"
NETPOL = "networking.k8s.io/v1/networkpolicies"
KINDS = {SD: "SecurityDomain", NETPOL: "NetworkPolicy", "v1/namespaces": "Namespace"}
_versions = itertools.count(100)


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


def apply_ok(request: Any) -> dict[str, Any]:
    """Answer a server-side apply as the server would: the applied object with a new resourceVersion."""
    body = dict(request.data)
    body["metadata"] = {**body["metadata"], "resourceVersion": str(next(_versions)), "uid": "uid-applied"}
    return body


async def wait_for(predicate, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


class OperatorEmulator(kmock.KubernetesEmulator):
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.faults: list[Any] = []

    def fault(self, view: Any) -> Any:
        """Requests seen by this view get only its reactions: no change to the stored objects."""
        self.faults.append(view)
        return view

    async def _handle(self, request):  # type: ignore[no-untyped-def]
        if any(request in view for view in self.faults):
            return await kmock.RawHandler._handle(self, request)
        return await super()._handle(request)

    async def _serve_watch(self, request):  # type: ignore[no-untyped-def]
        events = super()._serve_watch(request)
        yield await anext(events)
        if "resourceVersion" in request.params:
            for key, obj in list(self.objects.items()):
                if key[0] == request.resource and not obj.deleted and request.namespace in (None, key[1]):
                    await anext(events)
        async for event in events:
            yield event

    async def _serve_list(self, request):  # type: ignore[no-untyped-def]
        payload = await super()._serve_list(request)
        resource = str(request.resource)
        kind = next((k for r, k in KINDS.items() if resource.endswith(r.split("/")[-1])), "Object")
        return {"kind": f"{kind}List", "apiVersion": "v1", **payload}


@pytest.fixture
def kmock_options(kmock_options):
    return dict(kmock_options, cls=OperatorEmulator)


@pytest.fixture
def k8s(kmock):
    info = kmock.ResourceInfo
    kmock.resources["v1/namespaces"] = info(kind="Namespace", namespaced=False, verbs={"get", "list", "watch", "patch"})
    kmock.resources["v1/events"] = info(kind="Event", namespaced=True, verbs={"create"})
    kmock.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = info(
        kind="CustomResourceDefinition", namespaced=False, verbs={"list", "watch"}
    )
    kmock.resources[NETPOL] = info(
        kind="NetworkPolicy", namespaced=True, verbs={"get", "list", "watch", "patch", "delete"}
    )
    kmock.resources[SD] = info(
        kind="SecurityDomain",
        singular="securitydomain",
        namespaced=False,
        verbs={"get", "list", "watch", "patch", "update"},
        subresources={"status"},
    )
    return kmock
