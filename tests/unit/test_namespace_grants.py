"""The operator's per-namespace grant in the API adapter: bound before the first call, once, and re-bound once."""

from __future__ import annotations

from typing import Any

import pytest

from iotsec.k8s.kube import ApiError, Kube, NamespaceGrants
from iotsec.model.platform import Platform, operator_grant

PLATFORM = Platform("iotsec-system", "rel", "rel-operator")


class FakeResource:
    def __init__(self, server: FakeServer, kind: str):
        self.server, self.kind = server, kind

    def get(self, name: str | None = None, namespace: str | None = None, **_: Any) -> Any:
        self.server.calls.append(("get", self.kind, namespace))
        cluster_wide = self.kind in ("BackupPolicy", "Event")  # the operator's ClusterRole covers them everywhere
        if namespace and not cluster_wide and not self.server.authorizes(namespace):
            raise ApiError("403 Forbidden", 403)
        return type("Result", (), {"to_dict": lambda _self: {"items": [], "metadata": {"name": name}}})()


class FakeServer(Kube):
    """RBAC in miniature: a call in a namespace is allowed once the grant RoleBinding exists there, and RBAC has
    seen it: after `lag` more calls there were refused."""

    def __init__(self, existing: set[str], lag: int = 0):
        super().__init__(api_client=object(), grants=NamespaceGrants(PLATFORM))  # type: ignore[arg-type]
        self.existing, self.bound, self.calls = existing, set(), []
        self.grants_made: list[dict[str, Any]] = []
        self.lag, self._unseen = lag, {}

    def authorizes(self, namespace: str) -> bool:
        if namespace not in self.bound:
            return False
        if self._unseen.get(namespace, 0) > 0:
            self._unseen[namespace] -= 1
            return False
        return True

    def _resource(self, api_version: str, kind: str) -> Any:
        return FakeResource(self, kind)

    def _create_grant(self, binding: dict[str, Any], trust_cache: bool = True) -> bool | None:
        namespace = binding["metadata"]["namespace"]
        self.calls.append(("grant", "trusting the cache" if trust_cache else "looking", namespace))
        if namespace not in self.existing:
            return None
        self.grants_made.append(binding)
        fresh = namespace not in self.bound
        self.bound.add(namespace)
        if fresh:
            self._unseen[namespace] = self.lag
        return fresh


def test_the_grant_is_made_once_before_the_first_call_in_a_namespace():
    server = FakeServer({"acme"})
    assert server.get("v1", "Secret", "k", "acme") == {"items": [], "metadata": {"name": "k"}}
    server.get("v1", "ConfigMap", "c", "acme")
    assert server.grants_made == [operator_grant(PLATFORM, "acme")]
    assert server.calls == [
        ("grant", "trusting the cache", "acme"),
        ("get", "Secret", "acme"),
        ("get", "ConfigMap", "acme"),
    ], "no access review first: RBAC mostly sees a new binding at once"


def test_a_call_refused_while_rbac_has_not_seen_a_new_grant_is_retried_until_it_has():
    server = FakeServer({"acme"}, lag=3)
    assert server.get("v1", "Secret", "k", "acme") is not None
    assert server.calls.count(("get", "Secret", "acme")) == 4
    assert len(server.grants_made) == 1, "a refusal just after the grant is no reason to grant again"


def test_a_refusal_that_outlasts_the_propagation_time_is_an_error(monkeypatch):
    server = FakeServer({"acme"}, lag=10_000)
    monkeypatch.setattr(NamespaceGrants, "PROPAGATION_SECONDS", 0.35)
    with pytest.raises(ApiError) as caught:
        server.get("v1", "Secret", "k", "acme")
    assert caught.value.status == 403
    assert 2 <= server.calls.count(("get", "Secret", "acme")) <= 5


def test_reserved_and_release_namespaces_and_cluster_scope_get_no_grant():
    server = FakeServer({"kube-system", "iotsec-system"})
    for namespace in ("kube-system", "iotsec-system"):
        with pytest.raises(ApiError) as caught:
            server.get("v1", "Secret", "k", namespace)
        assert caught.value.status == 403
    server.get("v1", "Namespace", "acme")
    server.get("iotsec.io/v1alpha1", "BackupPolicy", "b", "acme")
    assert server.grants_made == []


def test_a_missing_namespace_reads_as_empty_not_forbidden():
    server = FakeServer(set())
    assert server.get("v1", "Secret", "k", "later") is None
    assert server.list("v1", "ConfigMap", "later") == []
    assert server.grants_made == []
    server.existing.add("later")
    assert server.get("v1", "Secret", "k", "later") is not None, "bound once the namespace exists"


def test_a_grant_removed_behind_its_back_is_made_again_once():
    server = FakeServer({"acme"})
    server.get("v1", "Secret", "k", "acme")
    server.bound.discard("acme")  # someone deleted the RoleBinding
    assert server.get("v1", "Secret", "k", "acme") is not None
    assert len(server.grants_made) == 2
    assert server.calls[-2] == ("grant", "looking", "acme"), "the cache said it was there: asked the server this time"


def test_the_grant_binds_the_charts_namespace_role_to_the_operator_only():
    grant = operator_grant(PLATFORM, "acme")
    assert grant["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "rel-operator-namespace",
    }
    assert grant["subjects"] == [{"kind": "ServiceAccount", "name": "rel-operator", "namespace": "iotsec-system"}]
    assert grant["metadata"]["labels"]["iotsec.io/owner-kind"] == "Platform", "never pruned as a tenant's"


def test_a_fence_refusal_is_retried_other_refusals_are_not():
    """The webhook's view may lag a new domain by its refresh interval: its refusal is worth a retry."""
    from kubernetes.dynamic.exceptions import DynamicApiError

    from iotsec.k8s.kube import _guarded

    class RefusedError(DynamicApiError):
        def __init__(self, body: str):
            self.status, self.reason, self.body, self.headers = 403, "Forbidden", body, {}

        def summary(self) -> str:
            return self.body

    def call(body: str) -> ApiError:
        def fail() -> None:
            raise RefusedError(body)

        with pytest.raises(ApiError) as caught:
            _guarded("apply RoleBinding", fail)
        return caught.value

    fenced = call('admission webhook "platform.iotsec.io" denied the request: [X1369-9.6.3-1 operator-confinement] ...')
    assert fenced.status == 403
    assert fenced.transient
    assert not call('rolebindings.rbac.authorization.k8s.io is forbidden: User "x" cannot create').transient


def test_the_grant_is_withdrawn_where_iotsec_no_longer_works():
    from iotsec.controllers import grants
    from iotsec.controllers.runtime import config
    from iotsec.model.platform import stale_grants

    platform = config().platform
    tenant = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "TenantIsolation",
        "metadata": {"name": "acme"},
        "spec": {"tenantID": "acme", "securityDomain": "ingest", "namespaces": ["acme-a"]},
    }
    held = [operator_grant(platform, ns) for ns in ("acme-a", "left-tenant", "gone", "pending")]
    foreign = {
        **operator_grant(platform, "monitoring"),
        "metadata": {"name": "iotsec-operator", "namespace": "monitoring"},
    }

    class Cluster:
        withdrawn: list[str] = []

        def list(self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None):
            if kind == "TenantIsolation":
                return [tenant]
            if kind == "RoleBinding" and "owner-kind=Platform" in (label_selector or ""):
                return held
            if kind == "Role":  # a tenant Role still waiting to be pruned in `pending`
                assert label_selector == "app.kubernetes.io/managed-by=iotsec,iotsec.io/owner-kind notin (Platform)"
                return [{"metadata": {"name": "iotsec-user-ops", "namespace": "pending"}}]
            return []

        def withdraw_grant(self, namespace: str) -> bool:
            self.withdrawn.append(namespace)
            return True

    assert stale_grants([*held, foreign], lambda ns: ns == "acme-a", platform) == ["gone", "left-tenant", "pending"]
    cluster = Cluster()
    assert grants.withdraw_stale_grants(cluster) == ["gone", "left-tenant"]  # type: ignore[arg-type]
    assert cluster.withdrawn == ["gone", "left-tenant"], "never one it did not make, never where it still works"
    # `pending` keeps its grant while a tenant Role is left to prune there (review finding: pruning got stuck)


def test_withdrawing_forgets_the_grant_so_a_returning_namespace_is_bound_again():
    server = FakeServer({"acme"})
    server.get("v1", "Secret", "k", "acme")
    deleted = []
    server._resource = lambda api_version, kind: type(  # type: ignore[method-assign]
        "R",
        (),
        {
            "delete": lambda _self, name, namespace: deleted.append((namespace, name)),
            "get": FakeResource(server, kind).get,
        },
    )()
    assert server.withdraw_grant("acme") is True
    assert deleted == [("acme", "rel-operator")]
    server.bound.discard("acme")
    server.get("v1", "Secret", "k", "acme")
    assert len(server.grants_made) == 2


def test_the_operators_domains_never_take_a_namespace_the_fence_reserves():
    """Second review: a domain selecting `default` or the release namespace stalled on the fence's refusal."""
    from iotsec.controllers.runtime import network
    from iotsec.model.config import Config

    config = Config.from_env({"IOTSEC_WEBHOOK_NAMESPACE": "platform", "IOTSEC_RELEASE": "rel"})
    reserved = set(network(config).reserved_namespaces)
    assert {"kube-system", "default", "platform", "rel-audit"} <= reserved
    assert all(config.platform.reserved(ns) for ns in reserved)


class _GrantServer:
    """The RoleBinding resource as `Kube._create_grant` calls it: a look (a list by name) and a create, which the
    fence may refuse."""

    def __init__(self, there: bool, fence_refuses: bool = False):
        self.there, self.fence_refuses, self.calls = there, fence_refuses, []

    def get(self, namespace: str, field_selector: str, **_: Any) -> Any:
        self.calls.append("look")
        items = [{"metadata": {"name": field_selector.split("=", 1)[1]}}] if self.there else []
        return type("Result", (), {"to_dict": lambda _self: {"items": items}})()

    def create(self, body: dict[str, Any], namespace: str) -> Any:
        self.calls.append("create")
        if self.fence_refuses:
            raise ApiError('admission webhook "platform.iotsec.io" denied the request: operator-confinement', 403)
        if self.there:
            raise ApiError("already exists", 409)
        self.there = True
        return body


class _Presence:
    """A watch cache that follows iotsec's RoleBindings (`follows`) and holds the grant or not (`holds`)."""

    def __init__(self, follows: bool, holds: bool):
        self.follows, self.holds = follows, holds

    def current(self, api_version: str, kind: str, name: str, namespace: str | None, labels: dict[str, str]) -> Any:
        if not self.follows:
            return False, None
        return True, ({"metadata": {"name": name}} if self.holds else None)


def _grant_with(server: _GrantServer, cache: _Presence | None) -> tuple[bool | None, list[str]]:
    api = Kube(api_client=object(), cache=cache)  # type: ignore[arg-type]
    api._resource = lambda api_version, kind: server  # type: ignore[method-assign]
    return api._create_grant(operator_grant(PLATFORM, "acme")), server.calls


@pytest.mark.parametrize(
    ("follows", "holds", "there", "expected", "calls"),
    [
        (True, False, False, True, ["create"]),  # a new namespace: no look first (issue 18)
        (True, True, True, False, []),  # the cache holds it: nothing sent
        (False, False, False, True, ["look", "create"]),  # the cache does not follow it (yet): looked for
        (False, False, True, False, ["look"]),
        (True, False, True, False, ["create"]),  # the cache has not seen it yet: the create says it is there (409)
    ],
)
def test_whether_the_grant_exists_is_asked_of_the_watch_cache_first(follows, holds, there, expected, calls):
    assert _grant_with(_GrantServer(there), _Presence(follows, holds)) == (expected, calls)


def test_a_fenced_create_of_a_grant_the_cache_missed_is_looked_into_before_it_counts_as_a_refusal():
    """Where iotsec no longer works the fence refuses even a grant that is there: pruning must go on."""
    assert _grant_with(_GrantServer(there=True, fence_refuses=True), _Presence(True, False)) == (
        False,
        ["create", "look"],
    )
    with pytest.raises(ApiError) as caught:
        _grant_with(_GrantServer(there=False, fence_refuses=True), _Presence(True, False))
    assert caught.value.status == 403
    assert "iotsec may not work in namespace acme" in str(caught.value)
