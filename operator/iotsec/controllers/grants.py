"""The operator withdraws its own namespace grant where iotsec no longer works.

A grant (RoleBinding to `<release>-operator-namespace`) is made on the operator's first write in a namespace a
TenantIsolation lists, a SecurityDomain holds or a BackupPolicy lives in. When the namespace leaves all three, the
grant would leave the operator its rights there for nothing: every resync this task lists the grants and deletes
those, judging "managed" exactly as the webhook's fence does (`checking.snapshot_from_objects`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf

from iotsec.admission.snapshot import snapshot_from_objects
from iotsec.api.common import API_VERSION
from iotsec.api.validation import parse_spec
from iotsec.controllers.runtime import config, kube
from iotsec.k8s.kube import ApiError, Kube, read_only_list
from iotsec.model.labels import MANAGED_BY, MANAGER, OWNER_KIND, owner_selector
from iotsec.model.platform import GRANT_OWNER_KIND, stale_grants

log = logging.getLogger(__name__)
SOURCES = (
    (API_VERSION, "SecurityDomain"),
    (API_VERSION, "TenantIsolation"),
    (API_VERSION, "BackupPolicy"),
    ("v1", "Namespace"),
)


_judged: list[tuple[Any, ...]] = []  # what the last pass that found nothing stale judged


def _judging(api: Kube, grants: list[dict[str, Any]]) -> tuple[Any, ...]:
    """What the judgement reads: the resources' specs and labels (generation, not status), the namespaces' labels,
    the grants. Read from the watch cache without copies."""
    found: list[Any] = [tuple(g["metadata"].get("namespace") for g in grants)]
    for api_version, kind in SOURCES:
        for obj in read_only_list(api, api_version, kind):
            meta = obj["metadata"]
            found.append((kind, meta["name"], meta.get("generation"), repr(meta.get("labels"))))
    return tuple(found)


def withdraw_stale_grants(api: Kube) -> list[str]:
    """Delete the operator's grants in namespaces iotsec no longer manages; return those namespaces.

    Not judged again while nothing it reads changed since a pass that found nothing stale: judging parses every
    custom resource (their CEL rules), seconds of CPU for 1,200 of them on every resync (issue 18)."""
    platform = config().platform
    selector = owner_selector(GRANT_OWNER_KIND, platform.prefix)
    grants = api.list("rbac.authorization.k8s.io/v1", "RoleBinding", label_selector=selector)
    judging = _judging(api, grants)
    if _judged and _judged[0] == judging:
        return []
    objects = [obj for api_version, kind in SOURCES for obj in api.list(api_version, kind)]
    managed = snapshot_from_objects(objects, platform=platform, parse=parse_spec).managed
    stale = stale_grants(grants, managed.manages, platform)
    _judged[:] = [] if stale else [judging]
    leftovers = _namespaces_left_to_prune(api) if stale else set()
    withdrawn = [ns for ns in stale if ns not in leftovers and api.withdraw_grant(ns)]
    if withdrawn:
        log.info("withdrew iotsec's operator grant from %s: iotsec no longer manages them", ", ".join(withdrawn))
    return withdrawn


PRUNED_KINDS = (
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "ConfigMap"),
    ("v1", "ServiceAccount"),
    ("v1", "ResourceQuota"),
    ("v1", "LimitRange"),
    ("batch/v1", "CronJob"),
)


def _namespaces_left_to_prune(api: Kube) -> set[str]:
    """Namespaces where a reconciler still has iotsec's objects to prune: the grant stays until they are gone.

    Cluster-wide lists (the operator's own read rights), so looking needs no grant where iotsec no longer works."""
    selector = f"{MANAGED_BY}={MANAGER},{OWNER_KIND} notin ({GRANT_OWNER_KIND})"
    found: set[str] = set()
    for api_version, kind in PRUNED_KINDS:
        try:
            found |= {o["metadata"].get("namespace") for o in api.list(api_version, kind, label_selector=selector)}
        except ApiError as exc:
            if exc.status != 404:  # a kind this server does not serve (batch/v1 CronJob before 1.21)
                raise
    return found


async def _keep_withdrawing(interval: float) -> None:
    wait = interval
    while True:
        await asyncio.sleep(wait)
        started = time.monotonic()
        try:
            await asyncio.to_thread(withdraw_stale_grants, kube())
        except ApiError as exc:
            log.warning("stale grants not checked this round: %s", exc)
        # a pass that took long (a cluster changing fast, judged anew each time) waits longer: at most a tenth
        wait = max(interval, 9 * (time.monotonic() - started))


@kopf.on.startup()
async def start_grant_withdrawal(memo: kopf.Memo, **_: Any) -> None:
    if config().namespace_grants:
        memo["grant_withdrawal"] = asyncio.create_task(_keep_withdrawing(config().resync_seconds))


@kopf.on.cleanup()
async def stop_grant_withdrawal(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("grant_withdrawal")
    if task:
        task.cancel()
