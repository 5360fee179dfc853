"""The one adapter between iotsec and the Kubernetes API server.

Everything iotsec writes goes through `Kube.apply` (server-side apply, field manager `iotsec`, force for the
objects it owns, owner references where scope allows); everything it removes goes through `Kube.prune`, which
deletes only objects carrying iotsec's ownership labels. No other module calls the API.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import orjson
import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

from iotsec.model.labels import MANAGED_BY, MANAGER, OWNER_KIND, OWNER_NAME, owner_selector
from iotsec.model.platform import Platform, operator_grant
from iotsec.model.time import rfc3339

FIELD_MANAGER = MANAGER
TRANSIENT_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
FENCE_RULE = "operator-confinement"  # iotsec.admission.guard's rule id in an admission denial
log = logging.getLogger(__name__)
T = TypeVar("T")


class ApiError(Exception):
    """An API call failed. `transient` ones (conflicts, throttling, server errors, network) are worth retrying."""

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None, transient: bool | None = None
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self._transient = transient

    @property
    def transient(self) -> bool:
        if self._transient is not None:
            return self._transient
        return self.status is None or self.status in TRANSIENT_STATUSES


@dataclass(frozen=True)
class Owner:
    """The custom resource a child object belongs to."""

    api_version: str
    kind: str
    name: str
    uid: str
    namespace: str | None = None

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def may_own(self, namespace: str | None) -> bool:
        """Kubernetes allows a cluster-scoped owner for anything, a namespaced one only in its namespace."""
        return self.namespace is None or self.namespace == namespace

    @classmethod
    def of(cls, body: dict[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(body["apiVersion"], body["kind"], meta["name"], meta["uid"], meta.get("namespace"))


_controller = threading.local()


@contextmanager
def attributed_to(kind: str) -> Iterator[None]:
    """Requests sent by this thread inside count as the `kind` controller's (`Kube.by_controller`): the
    benchmarks tell a tenant's requests from a domain's."""
    previous = getattr(_controller, "kind", "")
    _controller.kind = kind
    try:
        yield
    finally:
        _controller.kind = previous


class _Throttle:
    """Honours the API server's Retry-After for every caller, not only the one that was told."""

    MAX_WAIT = 60.0

    def __init__(self) -> None:
        self._not_before = 0.0

    def wait(self) -> None:
        delay = self._not_before - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, self.MAX_WAIT))

    def hold(self, seconds: float) -> None:
        self._not_before = max(self._not_before, time.monotonic() + min(seconds, self.MAX_WAIT))


def _guarded(action: str, fn: Callable[[], T], throttle: _Throttle | None = None) -> T:
    if throttle:
        throttle.wait()
    try:
        return fn()
    except DynamicApiError as exc:
        retry_after = _retry_after(getattr(exc, "headers", None))
        if throttle and retry_after and exc.status in (429, 503):
            throttle.hold(retry_after)
        message = _message(exc)
        # The operator fence judges by the webhook's view of the cluster, which may lag a new domain or tenant by
        # its refresh interval: worth a retry, not a permanent failure.
        fenced = exc.status == 403 and FENCE_RULE in message
        raise ApiError(
            f"{action}: {exc.status} {exc.reason}: {message}",
            exc.status,
            retry_after,
            transient=True if fenced else None,
        ) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ApiError(f"{action}: cannot reach the API server: {exc}") from None


def _message(exc: DynamicApiError) -> str:
    summary = getattr(exc, "summary", None)
    return summary() if callable(summary) else str(exc.body)[:500]


def _retry_after(headers: Any) -> float | None:
    try:
        return float(headers.get("Retry-After")) if headers and headers.get("Retry-After") else None
    except (TypeError, ValueError):
        return None


def default_api_client(context: str | None = None) -> k8s_client.ApiClient:
    """In-cluster credentials inside a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config), in its `context`
    when one is named."""
    configuration = k8s_client.Configuration()
    if context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        try:
            # KUBECONFIG as it is now: the client library reads it once, when it is imported
            k8s_config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None, context=context, client_configuration=configuration
            )
        except k8s_config.ConfigException as exc:  # no kubeconfig, or no such context in it
            raise ApiError(f"kubeconfig: {exc}", transient=False) from None
    # one connection per thread that may call at once (the library's default, 5 per CPU, discarded and re-made a
    # TLS connection for most requests once kopf ran 16 handlers at a time)
    configuration.connection_pool_maxsize = CONNECTIONS
    return k8s_client.ApiClient(configuration)


CONNECTIONS = 32  # kept open to the API server: kopf's handler threads, the watch cache's and the services'

# custom resources, events and the background scan's PolicyReports: cluster-wide rights
UNGRANTED_GROUPS = ("iotsec.io/", "events.k8s.io/", "wgpolicyk8s.io/")


class NamespaceGrants:
    """The operator's rights inside a namespace come from a RoleBinding it creates there on first use.

    Its cluster-wide role holds only `create rolebindings` and `bind` on the chart's ClusterRoles; the webhook's
    fence (iotsec.admission.guard) refuses the binding outside the namespaces iotsec manages. Reserved namespaces
    are never tried; the release namespace is covered by the chart's Role.
    """

    PROPAGATION_SECONDS = 5.0

    def __init__(self, platform: Platform):
        self.platform = platform
        self._granted: set[str] = set()
        self._lock = threading.Lock()
        # one lock per namespace: grants in different namespaces are made at once (a cold start makes thousands,
        # each waiting for RBAC to see it), two in one namespace never
        self._namespace_locks: dict[str, threading.Lock] = {}
        self._fresh: dict[str, float] = {}  # namespace -> until when its new grant may not be in force yet

    def needed(self, api_version: str, kind: str, namespace: str | None) -> bool:
        if not namespace or self.platform.reserved(namespace):  # the chart's Roles cover its own namespaces
            return False
        return kind != "Event" and not api_version.startswith(UNGRANTED_GROUPS)

    def ensure(self, kube: Kube, namespace: str, trust_cache: bool = True) -> bool:
        """Bind the operator's namespace role in `namespace`; False when the namespace does not exist (yet).

        `trust_cache`: whether the watch cache may say if the grant exists (no request); not on a second try."""
        if namespace in self._granted:
            return True
        with self._lock:
            lock = self._namespace_locks.setdefault(namespace, threading.Lock())
        with lock:
            if namespace in self._granted:
                return True
            created = kube._create_grant(operator_grant(self.platform, namespace), trust_cache)
            if created is None:
                return False
            if created:
                self._fresh[namespace] = time.monotonic() + self.PROPAGATION_SECONDS
            self._granted.add(namespace)
        return True

    def propagating(self, namespace: str) -> float | None:
        """The deadline until which a 403 in `namespace` may only mean that RBAC has not seen the grant made there
        a moment ago; None when no such grant is that recent."""
        deadline = self._fresh.get(namespace)
        if deadline is not None and deadline <= time.monotonic():
            self._fresh.pop(namespace, None)
            return None
        return deadline

    def in_force(self, namespace: str) -> None:
        """A call in `namespace` was allowed: a refusal there from now on is no propagation delay."""
        if namespace in self._fresh:
            self._fresh.pop(namespace, None)

    def forget(self, namespace: str) -> None:
        with self._lock:
            self._granted.discard(namespace)
            self._namespace_locks.pop(namespace, None)
            self._fresh.pop(namespace, None)


def already_applied(desired: dict[str, Any], live: dict[str, Any]) -> bool:
    """Whether applying `desired` would change nothing: every field but metadata equal (not merely contained: an
    added matchExpressions or rule would narrow a selector or widen a policy, and must be overwritten), and the
    labels, annotations and owner references it sets present with the same values."""
    for key, value in desired.items():
        if key not in ("metadata", "status") and live.get(key) != value:
            return False
    wanted, found = desired["metadata"], live.get("metadata") or {}
    for field in ("labels", "annotations"):
        have = found.get(field) or {}
        if any(have.get(k) != v for k, v in (wanted.get(field) or {}).items()):
            return False
    return "ownerReferences" not in wanted or _owners(wanted) == _owners(found)


def _owners(metadata: dict[str, Any]) -> list[tuple[Any, ...]]:
    return sorted(
        (r.get("apiVersion"), r.get("kind"), r.get("name"), r.get("uid"), bool(r.get("controller")))
        for r in metadata.get("ownerReferences") or ()
    )


class ListCache(Protocol):
    """Answers some lists from memory (k8s.cache.WatchCache); None: ask the API server."""

    def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None, copy_each: bool = True
    ) -> list[dict[str, Any]] | None: ...

    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None: ...

    def observe(self, obj: dict[str, Any]) -> None: ...

    def forget(
        self, api_version: str, kind: str, name: str, namespace: str | None, deleted: dict[str, Any] | None = None
    ) -> None: ...

    def expect_gone(self, api_version: str, kind: str, name: str, namespace: str | None) -> None:
        """iotsec is about to delete this object: its watch event is not someone else's deletion."""
        ...

    def current(
        self, api_version: str, kind: str, name: str, namespace: str | None, labels: dict[str, str]
    ) -> tuple[bool, dict[str, Any] | None]:
        """(whether the cache follows this object now, the object as last seen or None when it is gone)."""
        ...


ObjectKey = tuple[str, str, str, str]  # apiVersion, kind, namespace or "", name


@dataclass(frozen=True)
class _Applied:
    """What iotsec last applied to one object: a digest of the exact body sent, the version it made, and which
    incarnation of the object (its uid) it was."""

    digest: bytes
    resource_version: str
    uid: str | None = None


def _object_key(obj: dict[str, Any]) -> ObjectKey:
    metadata = obj["metadata"]
    return obj["apiVersion"], obj["kind"], metadata.get("namespace") or "", metadata["name"]


def _as_dict(answer: Any) -> dict[str, Any]:
    """A dynamic client's answer as a dict (an empty one when it is no object): the response itself when it was
    asked for with serialize=False (its JSON decoded once, where the client would wrap every field of it in a
    ResourceInstance first, a tenth of the operator's CPU in a cold start), else the client's object."""
    data = getattr(answer, "data", None)
    if isinstance(data, bytes):
        found = _decoded(data) if data else {}
    else:
        to_dict = getattr(answer, "to_dict", None)
        found = to_dict() if callable(to_dict) else answer
    return found if isinstance(found, dict) else {}


def _decoded(data: bytes) -> Any:
    """The API server's JSON by orjson (lists of thousands of objects: twice as fast as json), by json where orjson
    refuses what json reads (an escaped lone surrogate). orjson reads an integer beyond 64 bits as a float, json
    exactly; the API server never sends one (it holds numbers as int64 or float64)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


@dataclass(frozen=True)
class MetadataPatch:
    """What `Kube.patch_metadata` did: the object as the patch left it (None when nothing changed: nothing sent),
    which of labels and annotations changed, and whether the patch alone made it (`alone`: the object is exactly
    what was read plus these changes, so its resourceVersion is this write's and nobody else's change is in it)."""

    written: dict[str, Any] | None
    fields: set[str]
    alone: bool


def _only_these(current: dict[str, Any], written: dict[str, Any], changes: dict[str, dict[str, str | None]]) -> bool:
    before, after = current.get("metadata") or {}, written.get("metadata") or {}
    for field in ("labels", "annotations"):
        expected = dict(before.get(field) or {})
        for key, value in changes.get(field, {}).items():
            if value is None:
                expected.pop(key, None)
            else:
                expected[key] = value
        if expected != (after.get(field) or {}):
            return False
    return True


def cached_presence(cache: ListCache | None, obj: dict[str, Any]) -> bool | None:
    """Whether an object such as `obj` (its name, kind and labels) exists as the watch cache knows it; None when the
    cache does not follow such objects (or has not listed them yet): only the API server can say."""
    current = getattr(cache, "current", None)
    if current is None:
        return None
    meta = obj["metadata"]
    followed, live = current(
        obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"), meta.get("labels") or {}
    )
    return (live is not None) if followed else None


LIST_PAGE = 500  # objects per list request, as kubectl asks


def read_only_list(api: Kube, api_version: str, kind: str) -> list[dict[str, Any]]:
    """Every object of a kind, not to be changed: the watch cache's own objects when it holds the whole kind (no
    copy of each), else `api.list`."""
    view = getattr(getattr(api, "cache", None), "view", None)
    found = view(api_version, kind) if view is not None else None
    return found if found is not None else api.list(api_version, kind)


class Kube:
    def __init__(
        self,
        api_client: k8s_client.ApiClient | None = None,
        field_manager: str = FIELD_MANAGER,
        grants: NamespaceGrants | None = None,
        cache: ListCache | None = None,
    ):
        self._api_client = api_client or default_api_client()
        self.field_manager = field_manager
        self._dynamic: DynamicClient | None = None
        self._resources: dict[tuple[str, str], Any] = {}
        # The DynamicClient's discovery cache is not thread-safe: kopf runs handlers in threads, and concurrent
        # first lookups failed with KeyError 'resources'/'apis' (kubernetes-client/python #2037). One lock around
        # discovery, and each resource looked up once per process.
        self._discovery = threading.RLock()
        self._throttle = _Throttle()
        self._grants = grants
        self.cache = cache
        self.requests: Counter[str] = Counter()  # by verb (the action's first word): what reached the API server
        self.by_controller: Counter[tuple[str, str]] = Counter()  # by (controller kind or "", verb)
        self.skipped: Counter[str] = Counter()  # applies by kind not sent: the object is as iotsec last applied it
        self._applied: dict[ObjectKey, _Applied] = {}
        # keyed digests: what stays in memory of a Secret's body says nothing of its content to anyone without the key
        self._digest_key = secrets.token_bytes(32)

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        verb = action.split(" ", 1)[0]
        self.requests[verb] += 1
        self.by_controller[getattr(_controller, "kind", ""), verb] += 1
        return _guarded(action, fn, self._throttle)

    def _in(self, api_version: str, kind: str, namespace: str | None, action: str, fn: Callable[[], T]) -> T:
        """A call inside `namespace`, with the operator's grant there first (and once more if it went missing)."""
        grants = self._grants
        if grants is None or not grants.needed(api_version, kind, namespace):
            return self._call(action, fn)
        assert namespace is not None
        exists = grants.ensure(self, namespace)
        try:
            answer = self._call(action, fn)
        except ApiError as exc:
            if exc.status != 403:
                raise
            if not exists:  # authorization comes before the lookup: in a missing namespace, say so, not 403
                raise ApiError(f"{action}: namespace {namespace} does not exist", 404) from None
            if grants.propagating(namespace) is None:
                grants.forget(namespace)  # the namespace or its grant was recreated or removed: bind again, once
                if not grants.ensure(self, namespace, trust_cache=False):
                    raise ApiError(f"{action}: namespace {namespace} does not exist", 404) from None
            return self._while_propagating(grants, namespace, action, fn)
        grants.in_force(namespace)
        return answer

    def _while_propagating(self, grants: NamespaceGrants, namespace: str, action: str, fn: Callable[[], T]) -> T:
        """The call again, and while it is refused (403) again every 0.1 s until RBAC may have seen a grant made a
        moment ago. No access review is asked for first: RBAC mostly sees a binding at once, and a cold start
        makes thousands (issue 18); the call itself is the review."""
        while True:
            try:
                answer = self._call(action, fn)
                grants.in_force(namespace)
                return answer
            except ApiError as exc:
                deadline = grants.propagating(namespace)
                fenced = exc.transient  # the webhook's fence, not RBAC: kopf retries it later
                if exc.status != 403 or fenced or deadline is None or time.monotonic() + 0.1 > deadline:
                    raise
            time.sleep(0.1)

    def withdraw_grant(self, namespace: str) -> bool:
        """Delete the operator's grant in `namespace` (made by NamespaceGrants); False when it was not there."""
        if self._grants is None:
            return False
        name = self._grants.platform.grant_name
        resource = self._resource("rbac.authorization.k8s.io/v1", "RoleBinding")
        self._grants.forget(namespace)
        try:
            self._call(f"withdraw grant in {namespace}", lambda: resource.delete(name=name, namespace=namespace))
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _create_grant(self, binding: dict[str, Any], trust_cache: bool = True) -> bool | None:
        """Create the grant RoleBinding: True when made now, False when it existed, None when its namespace is gone.

        Whether it exists is asked of the watch cache, which follows iotsec's RoleBindings (no request), or else
        looked for (a list, which the operator may do anywhere): where iotsec no longer works the fence refuses a
        create, even of a grant that is still there, and pruning must go on. A refused create is therefore looked
        into too before it counts as a refusal: the cache may not have seen a grant made a moment ago."""
        namespace = binding["metadata"]["namespace"]
        known = cached_presence(self.cache, binding) if trust_cache else None
        if known or (known is None and self._grant_found(binding)):
            return False
        resource = self._resource("rbac.authorization.k8s.io/v1", "RoleBinding")
        try:
            self._call(
                f"grant iotsec in namespace {namespace}", lambda: resource.create(body=binding, namespace=namespace)
            )
        except ApiError as exc:
            if exc.status == 409:
                return False
            if exc.status == 404:
                return None
            if known is False and self._grant_found(binding):
                return False
            raise ApiError(
                f"iotsec may not work in namespace {namespace}: {exc}", exc.status, transient=exc.transient
            ) from None
        log.info("granted iotsec's operator its namespace role in %s", namespace)
        return True

    def _grant_found(self, binding: dict[str, Any]) -> bool:
        namespace, name = binding["metadata"]["namespace"], binding["metadata"]["name"]
        resource = self._resource("rbac.authorization.k8s.io/v1", "RoleBinding")
        found = self._call(
            f"look for the grant in {namespace}",
            lambda: resource.get(namespace=namespace, field_selector=f"metadata.name={name}"),
        ).to_dict()
        return bool(found.get("items"))

    @property
    def dynamic(self) -> DynamicClient:
        with self._discovery:
            if self._dynamic is None:
                self._dynamic = self._call("discover the API", lambda: DynamicClient(self._api_client))
            return self._dynamic

    def _resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        found = self._resources.get(key)
        if found is not None:
            return found
        with self._discovery:
            if key not in self._resources:
                try:
                    self._resources[key] = self._call(
                        f"discover {kind}", lambda: self.dynamic.resources.get(api_version=api_version, kind=kind)
                    )
                except ResourceNotFoundError:
                    raise ApiError(f"the API server does not serve {kind} in {api_version}", 404) from None
            return self._resources[key]

    # ---------------------------------------------------------------- reading

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        if self.cache is not None:
            cached = self.cache.get(api_version, kind, name, namespace)
            if cached is not None:
                return cached
        resource = self._resource(api_version, kind)
        try:
            found = _as_dict(
                self._in(
                    api_version,
                    kind,
                    namespace,
                    f"get {kind} {name}",
                    lambda: resource.get(name=name, namespace=namespace, serialize=False),
                )
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        self.observed(found)  # a fresh read: lists from the watch cache then hold it as it is now (a reconciled CR)
        return found

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        if self.cache is not None:
            cached = self.cache.list(api_version, kind, namespace, label_selector)
            if cached is not None:
                return cached
        try:
            items = self._pages(api_version, kind, namespace, label_selector)
        except ApiError as exc:
            if exc.status == 404 and namespace:
                return []  # a namespace that does not exist (yet) holds nothing
            raise
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def _read_only(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None
    ) -> list[dict[str, Any]]:
        """`list`, without a copy of each object where the watch cache answers: for callers that only read them."""
        cached = None
        if self.cache is not None:
            cached = self.cache.list(api_version, kind, namespace, label_selector, copy_each=False)
        return cached if cached is not None else self.list(api_version, kind, namespace, label_selector)

    def _pages(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None
    ) -> list[dict[str, Any]]:
        """A list in pages of LIST_PAGE objects (red team F5: one response of every ConfigMap in the cluster, values
        and all, was held several times over while it was decoded). When the server has compacted away the list's
        snapshot between two pages (410 Gone), the list starts again, once."""
        try:
            return self._each_page(api_version, kind, namespace, label_selector)
        except ApiError as exc:
            if exc.status != 410:
                raise
        return self._each_page(api_version, kind, namespace, label_selector)

    def _each_page(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None
    ) -> list[dict[str, Any]]:
        resource = self._resource(api_version, kind)
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = _as_dict(
                self._in(
                    api_version,
                    kind,
                    namespace,
                    f"list {kind}",
                    lambda after=token: resource.get(
                        namespace=namespace,
                        label_selector=label_selector,
                        limit=LIST_PAGE,
                        _continue=after,
                        serialize=False,
                    ),
                )
            )
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                return items

    def list_at(
        self, api_version: str, kind: str, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """Every object of a kind (that `label_selector` selects), cluster-wide, and the list's resourceVersion (where
        a watch of it resumes)."""
        resource = self._resource(api_version, kind)
        result = _as_dict(
            self._call(f"list {kind}", lambda: resource.get(label_selector=label_selector, serialize=False))
        )
        items = result.get("items") or []
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items, (result.get("metadata") or {}).get("resourceVersion") or ""

    def watch(
        self,
        api_version: str,
        kind: str,
        resource_version: str,
        timeout_seconds: int = 300,
        label_selector: str | None = None,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Changes of a kind, cluster-wide, after `resource_version`: (ADDED, MODIFIED or DELETED, object), resumed
        from the last version seen when the server ends a stream. ApiError 410 when the version is too old to
        resume from (list again), another ApiError when the stream breaks."""
        resource = self._resource(api_version, kind)
        watcher = k8s_watch.Watch()
        try:
            # the stream the dynamic client's watch reads, without the ResourceInstance it wraps each event in
            for event in watcher.stream(
                resource.get,
                resource_version=resource_version,
                timeout_seconds=timeout_seconds,
                label_selector=label_selector,
                serialize=False,
            ):
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    obj = event["raw_object"]
                    obj.setdefault("apiVersion", api_version)
                    obj.setdefault("kind", kind)
                    yield event["type"], obj
        except ApiException as exc:
            raise ApiError(f"watch {kind}: {exc.status} {exc.reason}", exc.status) from None
        except DynamicApiError as exc:
            raise ApiError(f"watch {kind}: {exc.status} {exc.reason}: {_message(exc)}", exc.status) from None
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise ApiError(f"watch {kind}: the stream broke: {exc}") from None
        finally:
            watcher.stop()

    # ---------------------------------------------------------------- writing

    def apply(self, obj: dict[str, Any], owner: Owner | None = None) -> dict[str, Any]:
        """Server-side apply `obj` as this client's field manager, forcing conflicts on fields it owns.

        Not sent when nothing would change (issue 18): the body is the one this process last applied and the watch
        cache shows the object still at the version that apply made, or the cache's copy already holds it.
        """
        body = dict(obj)
        metadata = dict(body["metadata"])
        if owner is not None and owner.may_own(metadata.get("namespace")):
            metadata["ownerReferences"] = [owner.reference()]
        body["metadata"] = metadata
        key, digest = _object_key(body), self._digest(body)
        unchanged = self._unchanged_since_applied(body, key, digest)
        if unchanged is not None:
            self.skipped[body["kind"]] += 1
            return unchanged
        if self.cache is not None:
            live = self.cache.get(body["apiVersion"], body["kind"], metadata["name"], metadata.get("namespace"))
            if live is not None and already_applied(body, live):
                self.skipped[body["kind"]] += 1
                self._remember_applied(key, digest, live)  # as if applied: after a restart, the object is iotsec's
                return live
        resource = self._resource(body["apiVersion"], body["kind"])
        name = f"apply {body['kind']} {metadata.get('namespace', '')}/{metadata['name']}"
        applied = _as_dict(
            self._in(
                body["apiVersion"],
                body["kind"],
                metadata.get("namespace"),
                name,
                lambda: resource.server_side_apply(
                    body=body, field_manager=self.field_manager, force_conflicts=True, serialize=False
                ),
            )
        )
        self._remember_applied(key, digest, applied)
        self.observed(applied)
        return applied

    def _remember_applied(self, key: ObjectKey, digest: bytes, live: dict[str, Any]) -> None:
        metadata = live.get("metadata") or {}
        if metadata.get("resourceVersion"):
            self._applied[key] = _Applied(digest, metadata["resourceVersion"], metadata.get("uid"))

    def disown(
        self, api_version: str, kind: str, name: str, namespace: str | None = None, uid: str | None = None
    ) -> bool:
        """Someone deleted the object (the incarnation `uid`, when known): forget that this process applied it (its
        next apply writes). Whether it had, and had not deleted it since: an object of iotsec's, not one that only
        carries its labels. Of two callers told of the same deletion, only the first gets True; a deletion of an
        earlier incarnation than the one iotsec applied last gets False."""
        key = (api_version, kind, namespace or "", name)
        applied = self._applied.get(key)
        if applied is None or (uid and applied.uid and uid != applied.uid):
            return False
        return self._applied.pop(key, None) is not None

    def _digest(self, body: dict[str, Any]) -> bytes:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
        return hashlib.blake2b(text, key=self._digest_key, digest_size=32).digest()

    def _unchanged_since_applied(self, body: dict[str, Any], key: ObjectKey, digest: bytes) -> dict[str, Any] | None:
        """The live object when this exact body was applied last and the object is as that apply left it: at the
        version it made, or at a later one that still holds every field the body sets (a ResourceQuota's status,
        another manager's fields). None when that is not known for sure (a kind the cache does not follow, or one it
        has not listed yet)."""
        last = self._applied.get(key)
        current = getattr(self.cache, "current", None)
        if last is None or last.digest != digest or current is None:
            return None
        labels = body["metadata"].get("labels") or {}
        followed, live = current(key[0], key[1], key[3], key[2] or None, labels)
        if not followed or live is None:
            return None
        version = (live.get("metadata") or {}).get("resourceVersion")
        if version == last.resource_version:
            return live
        if version and already_applied(body, live):
            self._remember_applied(key, digest, live)
            return live
        return None

    def create(self, obj: dict[str, Any], owner: Owner | None = None) -> bool:
        """Create `obj` only if nothing of that name exists (False then): for keys, which are never overwritten,
        and for one-off Jobs, whose spec cannot change."""
        metadata = obj["metadata"]
        if owner is not None and owner.may_own(metadata.get("namespace")):
            obj = {**obj, "metadata": {**metadata, "ownerReferences": [owner.reference()]}}
        resource = self._resource(obj["apiVersion"], obj["kind"])
        name = f"create {obj['kind']} {metadata.get('namespace', '')}/{metadata['name']}"
        namespace = metadata.get("namespace")
        try:
            self._in(
                obj["apiVersion"], obj["kind"], namespace, name, lambda: resource.create(body=obj, namespace=namespace)
            )
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def replace(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Write `obj` whole, on condition that it is still at its metadata.resourceVersion (PUT): None when someone
        wrote it in between (409), for a compare-and-swap such as a leader-election Lease."""
        metadata = obj["metadata"]
        resource = self._resource(obj["apiVersion"], obj["kind"])
        action = f"replace {obj['kind']} {metadata.get('namespace', '')}/{metadata['name']}"
        try:
            written = self._call(action, lambda: resource.replace(body=obj, namespace=metadata.get("namespace")))
        except ApiError as exc:
            if exc.status == 409:
                return None
            raise
        return dict(written.to_dict())

    def patch_labels(
        self, api_version: str, kind: str, name: str, labels: dict[str, str | None], namespace: str | None = None
    ) -> bool:
        """Set (or, with None, remove) labels on an existing object; return whether anything changed.

        A merge patch, not apply: several iotsec owners may label one object (a namespace joins a domain and a
        tenant), and an apply by one would drop the labels the other applied under the same field manager.
        """
        return self._patch_metadata("labels", api_version, kind, name, labels, namespace)

    def annotate(
        self, api_version: str, kind: str, name: str, annotations: dict[str, str | None], namespace: str | None = None
    ) -> bool:
        """Set (or remove) annotations, e.g. to ask the operator for something now; return whether it changed."""
        return self._patch_metadata("annotations", api_version, kind, name, annotations, namespace)

    def _patch_metadata(
        self, field: str, api_version: str, kind: str, name: str, values: dict[str, str | None], namespace: str | None
    ) -> bool:
        return bool(self.patch_metadata(api_version, kind, name, namespace, **{field: values}).fields)

    def patch_metadata(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        labels: dict[str, str | None] | None = None,
        annotations: dict[str, str | None] | None = None,
    ) -> MetadataPatch:
        """Set (or, with None, remove) labels and annotations in one merge patch, so that both land together (a
        record of what a namespace had, and the labels that change it)."""
        current = self.get(api_version, kind, name, namespace)
        if current is None:
            raise ApiError(f"set metadata of {kind} {name}: not found", 404)
        changes: dict[str, dict[str, str | None]] = {}
        for field, values in (("labels", labels), ("annotations", annotations)):
            existing = current["metadata"].get(field) or {}
            changed = {
                k: v
                for k, v in (values or {}).items()
                if existing.get(k) != v and not (v is None and k not in existing)
            }
            if changed:
                changes[field] = changed
        if not changes:
            return MetadataPatch(None, set(), alone=False)
        resource = self._resource(api_version, kind)
        patched = self._in(
            api_version,
            kind,
            namespace,
            f"set {' and '.join(changes)} of {kind} {name}",
            lambda: resource.patch(
                name=name,
                namespace=namespace,
                body={"metadata": changes},
                content_type="application/merge-patch+json",
                field_manager=self.field_manager,
            ),
        )
        written = patched.to_dict()
        self.observed(written)
        return MetadataPatch(written, set(changes), _only_these(current, written, changes))

    def observed(self, obj: dict[str, Any]) -> None:
        """Tell the watch cache of an object as fresh as a watch event (a write's answer, the body an event handler
        was given): a reconcile then never plans with an older copy than the one that triggered it."""
        if self.cache is not None and obj.get("metadata"):
            self.cache.observe(obj)

    def forgotten(
        self, api_version: str, kind: str, name: str, namespace: str | None = None, deleted: dict | None = None
    ) -> None:
        """Tell the watch cache an object is gone (a DELETED event a handler was given: `deleted`, its body, says
        which incarnation, so that one made again since under the same name stays)."""
        if self.cache is not None:
            self.cache.forget(api_version, kind, name, namespace, deleted)

    def patch_status(
        self,
        api_version: str,
        kind: str,
        name: str,
        status: dict[str, Any],
        namespace: str | None = None,
        resource_version: str | None = None,
    ) -> None:
        """Merge-patch the status; with `resource_version`, a concurrent writer makes it fail with 409. The answer
        goes to the watch cache: a reconcile that reads its resource from there reads its own status writes."""
        resource = self._resource(api_version, kind)
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        written = self._call(
            f"write status of {kind} {name}",
            lambda: resource.status.patch(
                name=name,
                namespace=namespace,
                body=body,
                content_type="application/merge-patch+json",
                field_manager=self.field_manager,
                serialize=False,
            ),
        )
        self.observed(_as_dict(written))

    def post_event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about `involved`; cluster-scoped objects get theirs in the default namespace."""
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        moment = rfc3339(datetime.now(UTC))
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "uid": meta.get("uid"),
                **({"namespace": meta["namespace"]} if meta.get("namespace") else {}),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self.field_manager},
            "firstTimestamp": moment,
            "lastTimestamp": moment,
            "count": 1,
        }
        resource = self._resource("v1", "Event")
        self._call(f"post event {reason}", lambda: resource.create(body=event, namespace=namespace))

    def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        unchanged_since: Mapping[str, Any] | None = None,
    ) -> bool:
        """Delete one object and, in the background, what it owns (a Job's pods: the API's default orphans them).

        `unchanged_since` (an object as it was read): delete only that very version (preconditions on its uid and
        resourceVersion), so a write in between (someone fixing it) is never deleted; ApiError 409 then."""
        resource = self._resource(api_version, kind)
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if unchanged_since is not None:
            metadata = unchanged_since.get("metadata") or {}
            body["preconditions"] = {"uid": metadata.get("uid"), "resourceVersion": metadata.get("resourceVersion")}
        if self.cache is not None:  # its watch event may come before this request's answer
            self.cache.expect_gone(api_version, kind, name, namespace)
        try:
            self._in(
                api_version,
                kind,
                namespace,
                f"delete {kind} {name}",
                lambda: resource.delete(name=name, namespace=namespace, body=body),
            )
            if self.cache is not None:
                self.cache.forget(api_version, kind, name, namespace)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        finally:
            self._applied.pop((api_version, kind, namespace or "", name), None)
        return True

    def prune(
        self,
        api_version: str,
        kind: str,
        owner_kind: str,
        owner_name: str,
        keep: Iterable[tuple[str | None, str]],
        namespace: str | None = None,
    ) -> list[tuple[str | None, str]]:
        """Delete the owner's children of one kind that are not in `keep` (pairs of namespace, name), in one
        namespace when given (what a namespaced Role allows), else cluster-wide.

        Only objects labelled as iotsec's and as this owner's are candidates: nothing else is ever deleted.
        """
        wanted = set(keep)
        removed = []
        selector = owner_selector(owner_kind, owner_name)
        for item in self._read_only(api_version, kind, namespace, selector):
            meta = item["metadata"]
            labels = meta.get("labels") or {}
            ours = labels.get(MANAGED_BY) == MANAGER and labels.get(OWNER_KIND) == owner_kind
            if not ours or labels.get(OWNER_NAME) != owner_name:
                continue
            key = (meta.get("namespace"), meta["name"])
            if key not in wanted and self.delete(api_version, kind, meta["name"], meta.get("namespace")):
                removed.append(key)
        return sorted(removed, key=lambda k: (k[0] or "", k[1]))
