"""The skeleton every iotsec reconciler shares: triggers, the per-resource lock, the outcome (counted and logged
in one line), the status writer, and the two ways a reconcile ends badly (invalid spec, API failure)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, NoReturn

import kopf

from iotsec.api.common import API_VERSION, GROUP, VERSION
from iotsec.api.validation import InvalidResourceError, parse_spec
from iotsec.controllers import metrics
from iotsec.controllers.runtime import config, kube, lost_object_listeners
from iotsec.k8s.kube import ApiError, Kube, attributed_to
from iotsec.model import conditions
from iotsec.model.labels import MANAGED_BY, MANAGER, OWNER_KIND, OWNER_NAME

log = logging.getLogger(__name__)
Logger = logging.Logger | logging.LoggerAdapter[Any]

_locks: defaultdict[tuple[str, str | None, str], threading.Lock] = defaultdict(threading.Lock)


def resource_lock(kind: str, name: str, namespace: str | None = None) -> threading.Lock:
    """One lock per custom resource: its reconcile and delete handlers never run at once."""
    return _locks[(kind, namespace, name)]


# reconciles asked for that have not taken their lock yet, and when they were last asked for
_waiting: dict[tuple[str, str | None, str], float] = {}
_waiting_lock = threading.Lock()
_requested_run: contextvars.ContextVar[bool] = contextvars.ContextVar("iotsec_requested_run", default=False)
_reads_since: contextvars.ContextVar[float | None] = contextvars.ContextVar("iotsec_reads_since", default=None)


def reads_since() -> float:
    """The moment (time.monotonic) since which what the running reconcile reads must be current: what any reader
    began to read at or after it (a cluster-wide analysis another reconcile made) serves this one too.

    A reconcile kopf started: when it started (after the cache was told of the body its event carried). A
    requested one: when it was last asked for (the change that asked was in the cache by then), so a burst of
    requests shares reads made after the last of them. Outside a reconcile: now."""
    floor = _reads_since.get()
    return time.monotonic() if floor is None else floor


def reconcile_soon(
    kind: str, name: str, reconcile: Callable[[], None], delay: float, namespace: str | None = None
) -> bool:
    """Reconcile a resource `delay` seconds from now, in a thread of its own, unless one asked for is still waiting
    to start: that one reads the cluster after this request and serves it too (False then). A burst of watch events
    (a cold start labels thousands of namespaces) costs each resource concerned one reconcile, not one per event,
    and never holds kopf's handler threads (issue 18)."""
    key = (kind, namespace, name)
    with _waiting_lock:
        asked_before = key in _waiting
        _waiting[key] = time.monotonic()  # a waiting reconcile serves this request too: it must read after it
        if asked_before:
            return False
    # kopf's context (its settings, the queue kopf.event posts to) as the handler that asked has it
    context = contextvars.copy_context()
    timer = threading.Timer(delay, context.run, (_run_requested, kind, name, namespace, reconcile))
    timer.daemon = True
    timer.start()
    return True


# Watch events that only route work (a namespace event names the domains to reconcile) run here, not on kopf's
# handler threads: at a cold start of 1,000 tenants those were all busy reconciling for minutes, and namespace events
# waited behind them, leaving domains unreconciled until their resync timer, itself ten minutes late (issue 18).
_routing = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="iotsec-events")


async def routed(fn: Callable[..., None], *args: Any) -> None:
    """Run `fn(*args)` on the event-routing threads, in kopf's context as the caller has it (kopf.event, and
    reconcile_soon's timers, post through it)."""
    context = contextvars.copy_context()
    await asyncio.get_running_loop().run_in_executor(_routing, partial(context.run, fn, *args))


# requested reconciles running at once (the others wait for a slot): 200 domains each in a thread of its own
# outnumbered the API connections and slowed the tenants' reconciles, and 4 left new tenant namespaces without their
# domain's NetworkPolicies for minutes at a cold start of 1,000 tenants while 16 handler threads made more (p50 94 s,
# max 288 s; with 12, and no reconcile for a domain's own writes: p50 2-3 s, max 7-32 s, cold start faster; issue 18)
_requested_slots = threading.BoundedSemaphore(12)


def _run_requested(kind: str, name: str, namespace: str | None, reconcile: Callable[[], None]) -> None:
    _requested_run.set(True)  # this thread's own context (reconcile_soon runs it in a copy)
    try:
        with _requested_slots:
            reconcile()
    except (kopf.TemporaryError, kopf.PermanentError) as exc:  # its status says so; the resync timer tries again
        log.info("%s %s: requested reconcile failed: %s", kind, name, exc)
    except Exception:
        log.exception("%s %s: requested reconcile failed", kind, name)
    finally:
        with _waiting_lock:  # normally cleared when it took the lock; not when it failed before
            _waiting.pop((kind, namespace, name), None)


class Reconciliation:
    """What one reconcile came to: its result (for the metrics) and what it did (for the log line)."""

    def __init__(self) -> None:
        self.result = "error"
        self.done: list[str] = []

    def succeeded(self) -> None:
        self.result = "success"

    def invalid(self) -> None:
        self.result = "invalid"

    def did(self, *parts: str) -> None:
        """Note what was applied, pruned, rotated, ... (names and counts only: never key material)."""
        self.done.extend(part for part in parts if part)

    def line(self) -> str:
        return f"reconciled ({self.result}): {'; '.join(self.done) or 'nothing changed'}"


@contextmanager
def live_resource(
    api: Kube,
    kind: str,
    name: str,
    namespace: str | None = None,
    logger: Logger | None = None,
    seen: dict[str, Any] | None = None,
) -> Iterator[tuple[dict[str, Any] | None, Reconciliation]]:
    """Hold the resource's lock, read it, count the outcome and log one line about it.

    Yields (body, reconciliation); body is None when the resource is gone or being deleted (a success, unlogged).
    `logger` is kopf's per-object logger when a kopf handler is the caller (its lines are about this object), `seen`
    the body its event carried: the read may come from the watch cache (issue 18), which is told of it first, so
    that the reconcile never plans with an older version than the one that triggered it."""
    reconciliation = Reconciliation()
    with resource_lock(kind, name, namespace), metrics.reconciling(kind, reconciliation), attributed_to(kind):
        with _waiting_lock:  # from here on, what changes is read: a request made now needs a reconcile of its own
            asked = _waiting.pop((kind, namespace, name), None)
        if seen is not None:
            api.observed(seen)
        floor = asked if asked is not None and _requested_run.get() else time.monotonic()
        token = _reads_since.set(floor)
        try:
            body = api.get(API_VERSION, kind, name, namespace)
            if body is None or body["metadata"].get("deletionTimestamp"):
                reconciliation.succeeded()
                yield None, reconciliation
                return
            try:
                yield body, reconciliation
            finally:
                _log(logger, kind, name, namespace, reconciliation)
        finally:
            _reads_since.reset(token)


def _log(logger: Logger | None, kind: str, name: str, namespace: str | None, reconciliation: Reconciliation) -> None:
    if logger is not None:
        logger.info(reconciliation.line())
    else:
        log.info("%s %s: %s", kind, f"{namespace}/{name}" if namespace else name, reconciliation.line())


def write_status(
    api: Kube,
    kind: str,
    body: dict[str, Any],
    found: list[dict[str, Any]],
    fields: dict[str, Any] | None = None,
    previous: list[dict[str, Any]] | None = None,
    guarded: bool = False,
) -> bool:
    """Merge the conditions `found` (into `previous`, default the status's own) and write them with `fields`,
    unless the status already says exactly that (no write, no new resourceVersion). True when written.

    `guarded`: send the resourceVersion read, so a concurrent writer of the same status makes this one fail with
    409 (retried) instead of being overwritten with stale conditions."""
    current = body.get("status") or {}
    before = current.get("conditions") if previous is None else previous
    status = {**(fields or {}), "conditions": conditions.merge_conditions(before, found)}
    if all(current.get(key) == value for key, value in status.items()):
        return False
    meta = body["metadata"]
    version = meta.get("resourceVersion") if guarded else None
    api.patch_status(API_VERSION, kind, meta["name"], status, meta.get("namespace"), resource_version=version)
    return True


def parsed_spec(api: Kube, kind: str, body: dict[str, Any], reconciliation: Reconciliation) -> Any:
    """The resource's typed spec; an invalid one ends the reconcile here (`reject`).

    Parsed by `parse_spec`, whose answers are remembered per content: validation evaluates the CRD's CEL rules,
    which cost more than the rest of a resync (issue 18). The status is not part of it: it is iotsec's own output,
    schema-checked by the API server, and with it every status write made the next reconcile evaluate the CEL rules
    again (a sixth of a cold start's CPU)."""
    try:
        return parse_spec(body).spec
    except InvalidResourceError as exc:
        reconciliation.invalid()
        reject(api, kind, body, exc)


def reject(api: Kube, kind: str, body: dict[str, Any], exc: InvalidResourceError) -> NoReturn:
    """An invalid spec: Ready=False InvalidSpec naming every problem, a Warning when that is news; no retry."""
    message = "; ".join(str(problem) for problem in exc.problems)
    not_ready(api, kind, body, "InvalidSpec", message)
    raise kopf.PermanentError(f"invalid spec: {message}")


def not_ready(api: Kube, kind: str, body: dict[str, Any], reason: str, message: str, type_: str = "Ready") -> None:
    """`type_`=False with the reason, and a Warning event when the status changed (a resync does not repeat it)."""
    meta = body["metadata"]
    generation = meta.get("generation")
    entry = conditions.condition(type_, False, reason, message, generation)
    if write_status(api, kind, body, [entry], {"observedGeneration": generation}):
        kopf.warn(body, reason=reason, message=message)
    metrics.RESOURCE_READY.labels(kind, _series_name(meta)).set(0)


def api_failed(exc: ApiError) -> NoReturn:
    """A transient API failure is retried after the server's Retry-After (or the retry setting); others are not."""
    if exc.transient:
        raise kopf.TemporaryError(str(exc), delay=exc.retry_after or config().retry_seconds) from None
    raise kopf.PermanentError(str(exc)) from None


def _series_name(meta: dict[str, Any]) -> str:
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]


@kopf.on.startup(id="retry-backoff")
def retry_backoff(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Every handler that fails with an unexpected exception is retried after the retry setting, not after kopf's
    own default of 60 s (a TemporaryError names its delay itself, see api_failed)."""
    settings.execution.default_backoff = config().retry_seconds


def level_triggered(kind: str, plural: str, reconcile: Callable[..., None], namespaced: bool = False) -> None:
    """Reconcile on create, update and resume, on a resync timer (drift, clock-driven key rotation), and when an
    object the resource owns is deleted by someone else (`owner_lost`).

    Every trigger recomputes the whole desired state from the cluster as it is, so each is safe to repeat.
    """
    _owners[kind] = (reconcile, namespaced)

    def reconcile_now(
        name: str, logger: Logger, body: kopf.Body | None = None, namespace: str | None = None, **_: Any
    ) -> None:
        if not _posting_context:
            _posting_context.append(contextvars.copy_context())
        seen = dict(body) if body is not None else None
        if namespaced:
            reconcile(name, namespace, logger=logger, seen=seen)
        else:
            reconcile(name, logger=logger, seen=seen)

    for trigger in (kopf.on.resume, kopf.on.create, kopf.on.update):
        trigger(GROUP, VERSION, plural, id="reconcile")(reconcile_now)
    interval = config().resync_seconds
    kopf.timer(GROUP, VERSION, plural, id="resync", interval=interval, initial_delay=interval)(reconcile_now)


# kind -> (its reconcile, whether it is namespaced), for `owner_lost`
_owners: dict[str, tuple[Callable[..., None], bool]] = {}
# kopf.event posts through context variables kopf sets for each object's handlers, not at start-up: the context of
# the first handler that ran, for reconciles the watch cache's threads ask for
_posting_context: list[contextvars.Context] = []
LOST_DELAY_SECONDS = 1.0  # the deletions of one owner's objects (a namespace's, a bulk delete) fold into one reconcile


def owner_lost(api_version: str, kind: str, obj: dict[str, Any]) -> bool:
    """An object iotsec manages is gone, deleted by someone else (the watch cache saw it go; iotsec's own deletions
    it is not told of): its owner reconciles at once and puts it back if it still wants it, rather than at its
    resync, up to a minute later. False, and nothing asked: not an object this process applied for a known owner
    (labels alone prove nothing: whoever may create an object may set them); it went with its namespace or its
    owner (either gone or being deleted: a tenant deleted, a namespace terminating); or no handler has run yet (the
    owners' resume reconciles them anyway)."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    owner_kind, owner = labels.get(OWNER_KIND, ""), labels.get(OWNER_NAME, "")
    if labels.get(MANAGED_BY) != MANAGER or owner_kind not in _owners or not owner or not _posting_context:
        return False
    reconcile, namespaced = _owners[owner_kind]
    namespace = meta.get("namespace") if namespaced else None  # a namespaced owner's objects live beside it
    if namespaced and not namespace:
        return False
    api = kube()
    if not api.disown(api_version, kind, meta.get("name") or "", meta.get("namespace"), meta.get("uid")):
        return False  # not an object this process wrote, only one with its labels (anyone may set them); or told
        # of this deletion already (by kopf's watch of NetworkPolicies, or the cache's)
    went, body = _went_with_home_or_owner(api, meta.get("namespace"), owner_kind, owner, namespace)
    if went:
        return False
    metrics.OBJECTS_LOST.labels(owner_kind, kind).inc()
    again = partial(reconcile, owner, namespace) if namespaced else partial(reconcile, owner)
    context = _posting_context[0].copy()
    if context.run(reconcile_soon, owner_kind, owner, again, LOST_DELAY_SECONDS, namespace):  # once per fold
        where = f"{meta.get('namespace')}/" if meta.get("namespace") else ""
        what = f"{kind} {where}{meta.get('name')}"
        log.info("%s of %s %s was deleted: reconciling its owner", what, owner_kind, owner)
        if body is not None:
            message = f"{what} was deleted, not by iotsec: reconciling to put it back"
            context.run(kopf.warn, body, reason="ManagedObjectDeleted", message=message)
    return True


def _went_with_home_or_owner(
    api: Kube, where: str | None, owner_kind: str, owner: str, namespace: str | None
) -> tuple[bool, dict[str, Any] | None]:
    """(whether the object went with its namespace or its owner: the namespace `where` or the owner is gone or being
    deleted; the owner as read). Read from the watch cache where it holds them (namespaces, domains, tenants); an
    owner that cannot be read is taken as staying (a reconcile too many is the safe side)."""
    try:
        home = api.get("v1", "Namespace", where) if where else {"metadata": {}}
        body = api.get(API_VERSION, owner_kind, owner, namespace) if home is not None else None
    except ApiError as exc:
        log.info("%s %s: could not read whether it is being deleted (%s): reconciling it", owner_kind, owner, exc)
        return False, None
    for found in (home, body):
        if found is None or found["metadata"].get("deletionTimestamp"):
            return True, None
    return False, body


lost_object_listeners[:] = [owner_lost]
