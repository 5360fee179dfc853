"""The operator process's shared state: its settings (loaded once by `iotsec run`), the API adapter, kopf settings."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import kopf
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily

from iotsec.build.securitydomain import NetworkSettings
from iotsec.k8s.cache import WatchCache
from iotsec.k8s.kube import Kube, NamespaceGrants
from iotsec.model.config import Config
from iotsec.model.labels import MANAGED_BY, MANAGER

log = logging.getLogger(__name__)


_loaded: Config | None = None


def load(config: Config) -> Config:
    """Make `config` the process's settings. `iotsec run` calls it once, before it imports the handlers (their
    timers take the resync interval when they register)."""
    global _loaded
    _loaded = config
    kube.cache_clear()
    _made.clear()
    return config


def config() -> Config:
    """The process's settings: what `load` was given, else the defaults (never read from the environment here)."""
    return _loaded if _loaded is not None else load(Config())


def network(settings: Config | None = None) -> NetworkSettings:
    """Cluster DNS for every zone; domains never take a namespace the fence reserves."""
    settings = settings or config()
    return NetworkSettings(
        dns_namespace=settings.dns_namespace,
        dns_pod_labels=settings.dns_pod_labels,
        reserved_namespaces=settings.platform.reserved_namespaces,
    )


# What every reconcile lists (domains plan against all domains and namespaces, tenants against all namespaces,
# grants against all managed objects): answered from watches. Namespaces and NetworkPolicies also by name (label
# patches read the namespace first; policies are compared before they are applied).
CACHED_KINDS = (
    ("iotsec.io/v1alpha1", "SecurityDomain"),
    ("iotsec.io/v1alpha1", "TenantIsolation"),
    ("iotsec.io/v1alpha1", "BackupPolicy"),
    ("v1", "Namespace"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
)
LOOKUP_KINDS = (
    # a reconcile reads its own resource (and a tenant its domain) from here: the cache holds the body the kopf event
    # carried and every status iotsec wrote (`Kube.observed`), so it is never older than what triggered the reconcile
    ("iotsec.io/v1alpha1", "SecurityDomain"),
    ("iotsec.io/v1alpha1", "TenantIsolation"),
    ("v1", "Namespace"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    # a tenant's bindings and StorageClass are read before each apply (a changed roleRef or provisioner means delete
    # and create): iotsec's own are answered from the managed cache below, any other from the API server
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("storage.k8s.io/v1", "StorageClass"),
)
# Kinds iotsec applies, followed as far as they are iotsec's (its managed-by label), so that an apply of an unchanged
# object sends nothing and one edited or deleted by someone else is applied again (issue 18); prune's lists of them
# come from memory too. Only kinds the operator may list and watch cluster-wide (iotsec.build.rbac): Secrets are
# not (their applies are decided by the tenant controller, which writes a key only when it changed).
MANAGED_KINDS = (
    ("v1", "ConfigMap"),
    ("v1", "ServiceAccount"),
    ("v1", "ResourceQuota"),
    ("v1", "LimitRange"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("storage.k8s.io/v1", "StorageClass"),
)


_made: list[Kube] = []
_making = threading.Lock()
# told of each object iotsec manages that the watch cache saw go without iotsec deleting it: the reconciler's
# owner_lost (set when it is imported), so that the owner puts it back at once
lost_object_listeners: list[Callable[[str, str, dict[str, Any]], object]] = []


@cache
def kube() -> Kube:
    """The process's API adapter (created on first use, after kopf has started), with its watch cache. One per
    process even when several handler threads ask first at once (each made its own, with watches of its own)."""
    with _making:
        if not _made:
            _made.append(_new_kube())
        return _made[0]


def _new_kube() -> Kube:
    settings = config()
    api = Kube(grants=NamespaceGrants(settings.platform) if settings.namespace_grants else None)
    if settings.watch_cache:
        watched = WatchCache(api, CACHED_KINDS, LOOKUP_KINDS, MANAGED_KINDS, f"{MANAGED_BY}={MANAGER}")
        api.cache = watched
        watched.on_gone = _object_lost
        watched.start()
    _API_REQUESTS.api = api
    return api


def _object_lost(api_version: str, kind: str, obj: dict[str, Any]) -> None:
    for listener in lost_object_listeners:
        listener(api_version, kind, obj)


class _ApiRequests:
    """iotsec_api_requests_total{verb}: what reached the API server (lists answered by the watch cache do not)."""

    def __init__(self) -> None:
        self.api: Kube | None = None

    def collect(self) -> Iterator[CounterMetricFamily]:
        if self.api is None:
            return
        family = CounterMetricFamily(
            "iotsec_api_requests", "Requests the operator sent to the API server, by verb.", labels=["verb"]
        )
        for verb, count in sorted(self.api.requests.items()):
            family.add_metric([verb], count)
        yield family
        by_controller = CounterMetricFamily(
            "iotsec_api_requests_by_controller",
            "Requests the operator sent to the API server, by the controller whose reconcile sent them ('' for "
            "none: watches, deletions, start-up) and verb.",
            labels=["controller", "verb"],
        )
        for (controller, verb), count in sorted(self.api.by_controller.items()):
            by_controller.add_metric([controller, verb], count)
        yield by_controller
        cache = self.api.cache
        hits = CounterMetricFamily(
            "iotsec_watch_cache_hits",
            "Lists and lookups the operator's watch cache answered instead of the API server.",
        )
        hits.add_metric([], getattr(cache, "hits", 0))
        yield hits
        skipped = CounterMetricFamily(
            "iotsec_api_applies_skipped",
            "Applies the operator did not send: the object was as it would have applied it.",
            labels=["kind"],
        )
        for kind, count in sorted(self.api.skipped.items()):
            skipped.add_metric([kind], count)
        yield skipped


API_RETRY_BACKOFFS = (1, 1, 2, 3, 5, 8, 13, 21, 30, 30, 30, 30, 30, 30, 30, 30)
# Threads for the (synchronous) handlers. A reconcile mostly waits for the API server: Python's default of
# cpus + 4 (six here) reconciled six tenants at a time, and a cold start of 1,000 took minutes of waiting (issue 18).
HANDLER_THREADS = 16
CONSISTENCY_SECONDS = 30.0
EXIT_TIMEOUT_SECONDS = 20.0


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = "iotsec.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="iotsec.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="iotsec.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 15
    settings.queueing.error_delays = (1, 2, 5, 10, 30, 60)
    settings.execution.max_workers = HANDLER_THREADS
    # kopf waits this long for the event of its own last patch before it handles an object again; past it, it
    # handles the older body, and ran a creation twice when a cold start of 1,000 tenants kept it busy (5 s)
    settings.persistence.consistency_timeout = CONSISTENCY_SECONDS
    # kopf stops the whole operator when its own request (a status patch, a watch) fails its last retry. Its
    # default budget, 54 s, is shorter than a control-plane restart: retry for about five minutes instead
    settings.networking.error_backoffs = API_RETRY_BACKOFFS
    # a stopping operator whose threads hang (a handler mid-request) is killed after this, not after kopf's 10
    # minutes without a liveness endpoint: the pod restarts at once
    settings.process.ultimate_exiting_timeout = EXIT_TIMEOUT_SECONDS
    # a deleted object keeps its finalizer until its resync timer has stopped: look every second, not minute
    settings.background.cancellation_polling = 1.0
    log.info("settings: %s", config().described())


@kopf.on.probe(id="apiserver")
def api_reachable(**_: Any) -> bool:
    """Liveness detail: the API adapter can reach the API server."""
    kube().list("v1", "Namespace", label_selector="iotsec.io/liveness-probe=none")
    return True


_API_REQUESTS = _ApiRequests()
REGISTRY.register(_API_REQUESTS)
