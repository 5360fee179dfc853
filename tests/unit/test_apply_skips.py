"""Writes only on change (issue 18): `Kube.apply` sends nothing when the body is the one this process last applied
and the watch cache shows the object still at the version that apply made; a changed body, an object someone else
edited or deleted, a kind the cache does not follow and a fresh process all write. A TenantIsolation resync with
nothing changed applies nothing."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import kopf
import pytest

from iotsec.controllers import tenant as handler
from iotsec.controllers.runtime import CACHED_KINDS, LOOKUP_KINDS, MANAGED_KINDS, config
from iotsec.k8s.cache import WatchCache
from iotsec.k8s.kube import ApiError, Kube
from iotsec.model import selectors
from iotsec.model.labels import MANAGED_BY, MANAGER, owner_selector
from tests.conftest import load_examples

MANAGED = f"{MANAGED_BY}={MANAGER}"
LABELS = {MANAGED_BY: MANAGER, "iotsec.io/owner-kind": "TenantIsolation", "iotsec.io/owner-name": "t"}
CONFIG_MAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "trust", "namespace": "a", "labels": LABELS},
    "data": {"ca.crt": "one"},
}


class _Answer:
    def __init__(self, obj: dict[str, Any]):
        self._obj = obj

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)


class FakeServer:
    """An in-memory API server behind the dynamic client's resource calls Kube makes: objects by (apiVersion,
    kind, namespace, name), each write a new resourceVersion; apply replaces all but status, like a forced apply
    of every field. Status patches, merge patches of metadata, creates and deletes as the server does them."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._versions = itertools.count(1)

    def resource(self, api_version: str, kind: str) -> _Resource:
        return _Resource(self, api_version, kind)

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        obj["metadata"].setdefault("uid", f"uid-{obj['metadata']['name']}")
        meta = obj["metadata"]
        self.objects[obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"]] = obj
        return obj

    def find(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self.objects.get((api_version, kind, namespace or "", name))


class _Status:
    def __init__(self, resource: _Resource):
        self._resource = resource

    def patch(self, name: str, namespace: str | None, body: dict[str, Any], **_: Any) -> _Answer:
        found = self._resource.existing(name, namespace)
        found["status"] = {**(found.get("status") or {}), **body["status"]}
        return _Answer(self._resource.server.put(found))


class _Resource:
    def __init__(self, server: FakeServer, api_version: str, kind: str):
        self.server, self.api_version, self.kind = server, api_version, kind
        self.status = _Status(self)

    def existing(self, name: str, namespace: str | None) -> dict[str, Any]:
        found = self.server.find(self.api_version, self.kind, name, namespace)
        if found is None:
            raise ApiError(f"{self.kind} {name} not found", 404)
        return copy.deepcopy(found)

    def get(
        self,
        name: str | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        **_: Any,
    ) -> _Answer:
        if name is not None:
            return _Answer(self.existing(name, namespace))
        requirements = selectors.parse_selector(label_selector or "") or []
        named = field_selector.split("=", 1)[1] if field_selector else None
        items = [
            obj
            for (api_version, kind, ns, obj_name), obj in self.server.objects.items()
            if (api_version, kind) == (self.api_version, self.kind)
            and namespace in (None, ns)
            and named in (None, obj_name)
            and selectors.selected(requirements, obj["metadata"].get("labels") or {})
        ]
        return _Answer({"items": items, "metadata": {"resourceVersion": "list"}})

    def server_side_apply(self, body: dict[str, Any], **_: Any) -> _Answer:
        meta = body["metadata"]
        before = self.server.find(self.api_version, self.kind, meta["name"], meta.get("namespace"))
        merged = copy.deepcopy(body)
        if before is not None and "status" in before:
            merged["status"] = before["status"]
        return _Answer(self.server.put(merged))

    def patch(self, name: str, namespace: str | None, body: dict[str, Any], **_: Any) -> _Answer:
        found = self.existing(name, namespace)
        for field, values in body["metadata"].items():
            current = found["metadata"].setdefault(field, {})
            for key, value in values.items():
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = value
        return _Answer(self.server.put(found))

    def create(self, body: dict[str, Any], namespace: str | None = None) -> _Answer:
        meta = body["metadata"]
        if self.server.find(self.api_version, self.kind, meta.get("name", ""), namespace):
            raise ApiError(f"{self.kind} {meta['name']} exists", 409)
        return _Answer(self.server.put(body) if "name" in meta else body)

    def delete(self, name: str, namespace: str | None = None, **_: Any) -> _Answer:
        self.existing(name, namespace)
        return _Answer(self.server.objects.pop((self.api_version, self.kind, namespace or "", name)))


def kube_on(server: FakeServer, cache: bool = True, managed: tuple[tuple[str, str], ...] = MANAGED_KINDS) -> Kube:
    """A Kube talking to `server`, with the operator's watch cache listed once (its watch events are fed by hand)."""
    api = Kube(api_client=object())  # type: ignore[arg-type]
    api._resource = server.resource  # type: ignore[method-assign]
    if cache:
        watched = WatchCache(api, CACHED_KINDS, LOOKUP_KINDS, managed, MANAGED)
        for reflector in watched.reflectors.values():
            reflector._list()
        api.cache = watched
        api.requests.clear()
    return api


def event(api: Kube, type_: str, obj: dict[str, Any]) -> None:
    """A watch event reaching the operator's cache."""
    assert isinstance(api.cache, WatchCache)
    api.cache.reflectors[obj["apiVersion"], obj["kind"]].take(type_, copy.deepcopy(obj))


def someone_edits(server: FakeServer, api: Kube, change: dict[str, Any]) -> None:
    found = server.find("v1", "ConfigMap", "trust", "a")
    assert found is not None
    event(api, "MODIFIED", server.put({**found, **change}))


# ---------------------------------------------------------------- the adapter


def test_a_second_apply_of_an_unchanged_object_sends_nothing():
    server = FakeServer()
    api = kube_on(server)
    first = api.apply(CONFIG_MAP)
    again = api.apply(copy.deepcopy(CONFIG_MAP))
    assert api.requests["apply"] == 1
    assert api.skipped["ConfigMap"] == 1
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert again["data"] == {"ca.crt": "one"}


def test_a_changed_body_is_applied():
    server = FakeServer()
    api = kube_on(server)
    api.apply(CONFIG_MAP)
    changed = api.apply({**CONFIG_MAP, "data": {"ca.crt": "two"}})
    assert api.requests["apply"] == 2
    assert changed["data"] == {"ca.crt": "two"}
    found = server.find("v1", "ConfigMap", "trust", "a")
    assert found is not None
    assert found["data"] == {"ca.crt": "two"}


def test_an_object_someone_else_edited_is_applied_again():
    server = FakeServer()
    api = kube_on(server)
    api.apply(CONFIG_MAP)
    someone_edits(server, api, {"data": {"ca.crt": "forged"}})
    restored = api.apply(CONFIG_MAP)
    assert api.requests["apply"] == 2
    assert restored["data"] == {"ca.crt": "one"}
    api.apply(CONFIG_MAP)
    assert api.requests["apply"] == 2, "restored, then unchanged again"


def test_a_write_that_left_every_applied_field_as_it_was_needs_no_apply():
    """A ResourceQuota's status, another manager's label: a new version, nothing to apply again."""
    server = FakeServer()
    api = kube_on(server)
    applied = api.apply(CONFIG_MAP)
    labels = {**LABELS, "someone.example/else": "x"}
    someone_edits(server, api, {"metadata": {**applied["metadata"], "labels": labels}, "status": {"seen": True}})
    api.apply(CONFIG_MAP)
    api.apply(CONFIG_MAP)
    assert api.requests["apply"] == 1
    assert api.skipped["ConfigMap"] == 2


def test_an_object_someone_else_deleted_is_created_again():
    server = FakeServer()
    api = kube_on(server)
    api.apply(CONFIG_MAP)
    gone = server.objects.pop(("v1", "ConfigMap", "a", "trust"))
    event(api, "DELETED", gone)
    api.apply(CONFIG_MAP)
    assert api.requests["apply"] == 2
    assert server.find("v1", "ConfigMap", "trust", "a") is not None


def test_an_object_whose_labels_someone_removed_is_applied_again():
    """It leaves the cache's selection (a DELETED from a label-selected watch): no longer known to be unchanged."""
    server = FakeServer()
    api = kube_on(server)
    applied = api.apply(CONFIG_MAP)
    event(api, "DELETED", applied)
    restored = api.apply(CONFIG_MAP)
    assert api.requests["apply"] == 2
    assert restored["metadata"]["labels"] == LABELS


def test_after_a_restart_the_first_apply_writes():
    server = FakeServer()
    kube_on(server).apply(CONFIG_MAP)
    fresh = kube_on(server)
    fresh.apply(CONFIG_MAP)
    assert fresh.requests["apply"] == 1
    fresh.apply(CONFIG_MAP)
    assert fresh.requests["apply"] == 1


@pytest.mark.parametrize("where", ["no cache", "kind not followed", "not iotsec's labels", "cache not listed yet"])
def test_what_the_cache_cannot_vouch_for_is_always_applied(where):
    server = FakeServer()
    api = kube_on(server, cache=where != "no cache", managed=() if where == "kind not followed" else MANAGED_KINDS)
    obj = copy.deepcopy(CONFIG_MAP)
    if where == "not iotsec's labels":
        obj["metadata"]["labels"] = {"app": "mine"}
    if where == "cache not listed yet":
        assert isinstance(api.cache, WatchCache)
        api.cache.reflectors["v1", "ConfigMap"].synced.clear()
    api.apply(obj)
    api.apply(obj)
    assert api.requests["apply"] == 2
    assert not api.skipped


def test_a_delete_forgets_what_was_applied():
    server = FakeServer()
    api = kube_on(server)
    api.apply(CONFIG_MAP)
    api.delete("v1", "ConfigMap", "trust", "a")
    api.apply(CONFIG_MAP)
    assert api.requests["apply"] == 2


def test_lists_of_a_label_selected_kind_come_from_memory_only_within_its_selection():
    server = FakeServer()
    api = kube_on(server)
    api.apply(CONFIG_MAP)
    server.put({**CONFIG_MAP, "metadata": {"name": "theirs", "namespace": "a", "labels": {"app": "x"}}})
    ours = api.list("v1", "ConfigMap", label_selector=owner_selector("TenantIsolation", "t"))
    assert [o["metadata"]["name"] for o in ours] == ["trust"]
    assert api.requests["list"] == 0, "an owner selector lies within the managed-by selection"
    theirs = api.list("v1", "ConfigMap", label_selector="app=x")
    assert [o["metadata"]["name"] for o in theirs] == ["theirs"]
    assert api.requests["list"] == 1, "any other selector asks the API server"


# ---------------------------------------------------------------- a tenant's resync


def _server_with(monkeypatch, tenant: str) -> FakeServer:
    """A server holding the example tenant `tenant`, its SecurityDomain and the release namespace."""
    monkeypatch.setattr(kopf, "event", lambda *a, **k: None)
    monkeypatch.setattr(kopf, "warn", lambda *a, **k: None)
    server = FakeServer()
    doc = next(d for d in load_examples() if d["kind"] == "TenantIsolation" and d["metadata"]["name"] == tenant)
    body = copy.deepcopy(doc)
    body["metadata"].update(uid="uid-1", generation=1)
    server.put(body)
    server.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": config().platform.namespace}})
    server.put({"apiVersion": "iotsec.io/v1alpha1", "kind": "SecurityDomain", "metadata": {"name": "ingestion"}})
    return server


@pytest.fixture
def tenant_server(monkeypatch) -> FakeServer:
    return _server_with(monkeypatch, "acme-utilities")


def _reconcile(api: Kube, monkeypatch, tenant: str = "acme-utilities") -> dict[str, int]:
    monkeypatch.setattr(handler, "kube", lambda: api)
    before = dict(api.requests)
    handler.reconcile(tenant)
    return {verb: count - before.get(verb, 0) for verb, count in api.requests.items() if count != before.get(verb, 0)}


WRITES = ("apply", "write", "set", "create", "delete", "grant")


def test_a_tenant_resync_with_nothing_changed_writes_nothing(tenant_server, monkeypatch):
    api = kube_on(tenant_server)
    cold = _reconcile(api, monkeypatch)
    assert cold["apply"] >= 10
    _reconcile(api, monkeypatch)  # the second pass still reports the keys created by the first as current
    resync = _reconcile(api, monkeypatch)
    assert {verb: resync[verb] for verb in WRITES if verb in resync} == {}, resync
    assert resync.get("list", 0) == 0, "prune's lists come from the cache"


def test_a_tenant_resync_reads_its_role_bindings_from_the_cache(tenant_server, monkeypatch):
    api = kube_on(tenant_server)
    _reconcile(api, monkeypatch)
    sent: list[str] = []
    call = api._call
    monkeypatch.setattr(api, "_call", lambda action, fn: sent.append(action) or call(action, fn))
    _reconcile(api, monkeypatch)
    assert [a for a in sent if a.startswith("get ")]
    assert not [a for a in sent if a.startswith("get RoleBinding")], sent
    tenant = tenant_server.find("iotsec.io/v1alpha1", "TenantIsolation", "acme-utilities")
    assert tenant is not None
    ready = next(c for c in tenant["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", ready


def test_a_tenant_resync_reads_and_applies_its_storage_class_from_the_cache(monkeypatch):
    """A tenant with a provisioner gets a StorageClass of its own: read before each apply (a changed provisioner
    means delete and create), listed by prune; on a resync all three come from the watch cache."""
    server = _server_with(monkeypatch, "globex-fleet")
    api = kube_on(server)
    _reconcile(api, monkeypatch, "globex-fleet")
    assert [k for k in server.objects if k[1] == "StorageClass"], "the tenant's StorageClass was created"
    _reconcile(api, monkeypatch, "globex-fleet")
    sent: list[str] = []
    call = api._call
    monkeypatch.setattr(api, "_call", lambda action, fn: sent.append(action) or call(action, fn))
    skipped = api.skipped["StorageClass"]
    _reconcile(api, monkeypatch, "globex-fleet")
    assert not [a for a in sent if "StorageClass" in a], sent
    assert api.skipped["StorageClass"] == skipped + 1


def test_a_new_tenant_reads_none_of_its_bindings_nor_its_storage_class(monkeypatch):
    """The cache follows iotsec's bindings and StorageClasses and holds none of a new tenant's: nothing to compare."""
    server = _server_with(monkeypatch, "globex-fleet")
    api = kube_on(server)
    sent: list[str] = []
    call = api._call
    monkeypatch.setattr(api, "_call", lambda action, fn: sent.append(action) or call(action, fn))
    _reconcile(api, monkeypatch, "globex-fleet")
    assert [a for a in sent if a.startswith("apply RoleBinding")]
    assert not [a for a in sent if a.startswith(("get RoleBinding", "get StorageClass"))], sent


def test_someone_elses_binding_of_that_name_with_another_role_is_replaced(monkeypatch):
    server = _server_with(monkeypatch, "globex-fleet")
    api = kube_on(server)
    _reconcile(api, monkeypatch, "globex-fleet")
    key = next(k for k in server.objects if k[1] == "RoleBinding")
    theirs = copy.deepcopy(server.objects.pop(key))
    event(api, "DELETED", theirs)
    wanted_role = theirs["roleRef"]
    theirs["metadata"]["labels"] = {"app": "theirs"}
    theirs["roleRef"] = {**wanted_role, "name": "someone-elses-role"}
    server.put(theirs)  # not iotsec's: the cache does not follow it
    apply = server.resource("rbac.authorization.k8s.io/v1", "RoleBinding").server_side_apply

    def refuse_role_change(body: dict[str, Any], **kwargs: Any) -> _Answer:
        found = server.find(key[0], key[1], key[3], key[2] or None)
        if found is not None and found["roleRef"] != body["roleRef"]:
            raise ApiError("roleRef is immutable", 422)
        return apply(body, **kwargs)

    resources = server.resource
    monkeypatch.setattr(
        api,
        "_resource",
        lambda v, k: _Refusing(resources(v, k), refuse_role_change) if k == "RoleBinding" else resources(v, k),
    )
    _reconcile(api, monkeypatch, "globex-fleet")
    replaced = server.find(key[0], key[1], key[3], key[2] or None)
    assert replaced is not None
    assert replaced["roleRef"] == wanted_role


class _Refusing:
    """A resource whose server-side apply is `apply`; everything else as `resource` does it."""

    def __init__(self, resource: Any, apply: Any):
        self._resource, self.server_side_apply = resource, apply

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resource, name)


def test_a_storage_class_someone_deleted_is_created_again_on_resync(monkeypatch):
    server = _server_with(monkeypatch, "globex-fleet")
    api = kube_on(server)
    _reconcile(api, monkeypatch, "globex-fleet")
    _reconcile(api, monkeypatch, "globex-fleet")
    (key,) = [k for k in server.objects if k[1] == "StorageClass"]
    event(api, "DELETED", server.objects.pop(key))
    resync = _reconcile(api, monkeypatch, "globex-fleet")
    assert resync.get("apply") == 1
    assert key in server.objects


def test_a_tenant_resync_restores_an_object_someone_edited(tenant_server, monkeypatch):
    api = kube_on(tenant_server)
    _reconcile(api, monkeypatch)
    quota = next(o for k, o in tenant_server.objects.items() if k[1] == "ResourceQuota")
    event(api, "MODIFIED", tenant_server.put({**quota, "spec": {"hard": {"pods": "1000"}}}))
    resync = _reconcile(api, monkeypatch)
    assert resync.get("apply") == 1
    restored = tenant_server.find("v1", "ResourceQuota", quota["metadata"]["name"], quota["metadata"]["namespace"])
    assert restored is not None
    assert restored["spec"] == quota["spec"]


def test_skipped_applies_are_exported_by_kind():
    from iotsec.controllers.runtime import _ApiRequests

    api = kube_on(FakeServer())
    api.apply(CONFIG_MAP)
    api.apply(CONFIG_MAP)
    exported = _ApiRequests()
    exported.api = api
    family = next(f for f in exported.collect() if f.name == "iotsec_api_applies_skipped")
    assert [(s.name, s.labels, s.value) for s in family.samples] == [
        ("iotsec_api_applies_skipped_total", {"kind": "ConfigMap"}, 1)
    ]


# ---------------------------------------------------------------- a new tenant's reads (issue 18: ≤ 5 per tenant)


def _sent(api: Kube, monkeypatch) -> list[str]:
    """Every request `api` makes from now on, as its action line."""
    sent: list[str] = []
    call = api._call
    monkeypatch.setattr(api, "_call", lambda action, fn: sent.append(action) or call(action, fn))
    return sent


def _tenant(server: FakeServer, name: str = "acme-utilities") -> dict[str, Any]:
    found = server.find("iotsec.io/v1alpha1", "TenantIsolation", name)
    assert found is not None
    return found


def _ready(tenant: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in tenant["status"]["conditions"] if c["type"] == "Ready")


def test_a_new_tenant_reads_nothing_its_keys_are_created_not_looked_for(tenant_server, monkeypatch):
    api = kube_on(tenant_server)
    sent = _sent(api, monkeypatch)
    cold = _reconcile(api, monkeypatch)
    assert "get" not in cold, [a for a in sent if not a.startswith("apply")]
    assert "list" not in cold
    created = sorted(a.split(" ", 2)[2] for a in sent if a.startswith("create Secret"))
    assert created == [
        "acme-analytics/iotsec-app-billing-export-key",
        "acme-meters/iotsec-app-meter-ingest-key",
        "iotsec-system/iotsec-device-ca-acme",
    ]
    for namespace, name in (s.split("/") for s in created):
        secret = tenant_server.find("v1", "Secret", name, namespace)
        assert secret is not None
        assert secret["data"], f"{name} holds key material"
    assert _ready(_tenant(tenant_server))["status"] == "True"
    sent.clear()
    again = _reconcile(api, monkeypatch)
    assert "create" not in again, "keys the status records are read, never created again"
    assert sorted(a for a in sent if a.startswith("get Secret")) == [
        "get Secret iotsec-app-billing-export-key",
        "get Secret iotsec-app-meter-ingest-key",
        "get Secret iotsec-device-ca-acme",
    ]


def test_a_key_secret_someone_made_before_the_tenant_is_read_and_never_overwritten(tenant_server, monkeypatch):
    foreign = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "iotsec-app-billing-export-key", "namespace": "acme-analytics", "labels": {"app": "x"}},
        "data": {"password": "aHVudGVyMg=="},
    }
    tenant_server.put(foreign)
    api = kube_on(tenant_server)
    sent = _sent(api, monkeypatch)
    _reconcile(api, monkeypatch)
    assert "get Secret iotsec-app-billing-export-key" in sent, "the create was refused (409): the one there is read"
    kept = tenant_server.find("v1", "Secret", "iotsec-app-billing-export-key", "acme-analytics")
    assert kept is not None
    assert kept["data"] == foreign["data"]
    assert kept["metadata"]["labels"] == {"app": "x"}
    ready = _ready(_tenant(tenant_server))
    assert (ready["status"], ready["reason"]) == ("False", "KeyUnreadable")
    assert "acme-analytics/iotsec-app-billing-export-key" in ready["message"]
    applications = _tenant(tenant_server)["status"]["applications"]
    assert sorted(a["name"] for a in applications) == ["billing-export", "meter-ingest"], "one entry per app"
    billing = next(a for a in applications if a["name"] == "billing-export")
    assert "keyCreated" not in billing, "no key was made for it, none is reported"


def test_a_new_device_ca_reads_no_registry_unless_one_is_there(tenant_server, monkeypatch):
    api = kube_on(tenant_server)
    sent = _sent(api, monkeypatch)
    _reconcile(api, monkeypatch)
    assert not [a for a in sent if a.startswith("get ConfigMap")], "a CA made just now has issued nothing"

    server = _server_with(monkeypatch, "acme-utilities")
    registry = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "iotsec-device-registry-acme",
            "namespace": config().platform.namespace,
            "labels": {MANAGED_BY: MANAGER, "iotsec.io/tenant": "acme"},
        },
        "data": {},
    }
    server.put(registry)  # a registry restored from a backup, its CA Secret not
    api = kube_on(server)
    sent = _sent(api, monkeypatch)
    _reconcile(api, monkeypatch)
    assert "get ConfigMap iotsec-device-registry-acme" in sent, "a registry there is read, whatever the CA's age"


def test_a_reconcile_reads_its_tenant_and_domain_from_the_cache_and_its_own_status_writes(tenant_server, monkeypatch):
    api = kube_on(tenant_server)
    sent = _sent(api, monkeypatch)
    _reconcile(api, monkeypatch)
    _reconcile(api, monkeypatch)
    assert not [a for a in sent if a.startswith(("get TenantIsolation", "get SecurityDomain"))], sent
    cached = api.get("iotsec.io/v1alpha1", "TenantIsolation", "acme-utilities")
    assert cached is not None
    server_status = _tenant(tenant_server)["status"]
    assert cached["status"] == server_status, "each status write's answer is in the cache before its watch event"
    assert sorted(server_status["createdNamespaces"]) == ["acme-analytics", "acme-meters"]


def test_a_reconcile_plans_with_the_body_its_event_carried_when_the_cache_lags(tenant_server, monkeypatch):
    from iotsec.controllers import reconciler

    handlers: list[Any] = []
    monkeypatch.setattr(kopf.on, "create", lambda *a, **k: lambda fn: handlers.append(fn) or fn)
    monkeypatch.setattr(kopf.on, "resume", lambda *a, **k: lambda fn: fn)
    monkeypatch.setattr(kopf.on, "update", lambda *a, **k: lambda fn: fn)
    monkeypatch.setattr(kopf, "timer", lambda *a, **k: lambda fn: fn)
    api = kube_on(tenant_server)
    monkeypatch.setattr(handler, "kube", lambda: api)
    reconciler.level_triggered(handler.KIND, handler.PLURAL, handler.reconcile)
    newer = copy.deepcopy(_tenant(tenant_server))
    newer["spec"]["namespaces"] = [*newer["spec"]["namespaces"], "acme-extra"]
    newer = tenant_server.put(newer)  # its watch event has not reached the cache yet; kopf's has reached the handler
    handlers[0](name="acme-utilities", logger=None, body=newer)
    assert "acme-extra" in _tenant(tenant_server)["status"]["namespaces"]


def test_prune_reads_the_cache_without_copies_and_deletes_only_strays(tenant_server, monkeypatch):
    import copy as copy_module

    api = kube_on(tenant_server)
    _reconcile(api, monkeypatch)
    owner = {**LABELS, "iotsec.io/owner-name": "acme-utilities"}
    stray = {**CONFIG_MAP, "metadata": {"name": "stray", "namespace": "acme-meters", "labels": owner}}
    event(api, "ADDED", tenant_server.put(stray))
    planned = [(k[2], k[3]) for k in tenant_server.objects if k[1] == "ConfigMap" and k[3] != "stray"]
    copies: list[Any] = []
    deepcopy = copy_module.deepcopy
    monkeypatch.setattr(copy_module, "deepcopy", lambda obj, *a: copies.append(obj) or deepcopy(obj, *a))
    removed = api.prune("v1", "ConfigMap", "TenantIsolation", "acme-utilities", keep=planned)
    monkeypatch.setattr(copy_module, "deepcopy", deepcopy)
    assert removed == [("acme-meters", "stray")]
    kept = {name for _, name in planned}
    copied = [c["metadata"]["name"] for c in copies if isinstance(c, dict) and c.get("kind") == "ConfigMap"]
    assert not kept & set(copied), "read from the cache, not copied (the stray's copy is the fake server's answer)"
    assert all(tenant_server.find("v1", "ConfigMap", name, ns) is not None for ns, name in planned)
    assert api.requests["list"] == 0


def test_a_namespace_of_another_tenant_is_seen_through_the_cache_lookups(monkeypatch):
    """A tenant looks up its own namespaces in the watch cache (not a pass over every namespace): one another tenant
    holds is still found, and not adopted."""
    server = _server_with(monkeypatch, "acme-utilities")
    for index in range(50):
        server.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"unrelated-{index}"}})
    theirs = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "acme-meters", "labels": {}}}
    theirs["metadata"]["labels"]["iotsec.io/tenant"] = "globex"
    server.put(theirs)
    api = kube_on(server)
    _reconcile(api, monkeypatch)
    ready = _ready(_tenant(server))
    assert (ready["status"], ready["reason"]) == ("False", "Conflict")
    assert "namespace acme-meters belongs to tenant globex" in ready["message"]
    kept = server.find("v1", "Namespace", "acme-meters")
    assert kept is not None
    assert kept["metadata"]["labels"]["iotsec.io/tenant"] == "globex"


def test_domains_reuse_the_cluster_wide_analysis_until_a_domain_namespace_or_tenant_changes(monkeypatch):
    from iotsec.controllers import securitydomain as domains

    server = _server_with(monkeypatch, "acme-utilities")
    server.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "acme-meters"}})
    api = kube_on(server)
    analysed: list[str] = []  # each pass over the cluster's domains, namespaces and tenants
    read_only_list = domains.read_only_list
    monkeypatch.setattr(
        domains, "read_only_list", lambda a, v, kind: analysed.append(kind) or read_only_list(a, v, kind)
    )
    monkeypatch.setattr(domains, "_planned", [])
    body = server.find("iotsec.io/v1alpha1", "SecurityDomain", "ingestion")
    assert body is not None
    body = {**body, "spec": {"zone": "access", "namespaces": ["acme-meters"]}, "metadata": {**body["metadata"]}}
    event(api, "MODIFIED", server.put(body))
    domain = domains._domain(api.get("iotsec.io/v1alpha1", "SecurityDomain", "ingestion"))
    first = domains._plan(api, domain)
    passes = list(analysed)
    assert "Namespace" in passes
    again = domains._plan(api, domain)
    assert analysed == passes, "nothing changed: the analysis is reused without reading the cluster again"
    api.observed(copy.deepcopy(_tenant(server)))  # a tenant's resync: the body of its kopf event, the same version
    event(api, "MODIFIED", copy.deepcopy(_tenant(server)))  # a re-list's or a late watch event of that version
    domains._plan(api, domain)
    assert analysed == passes, "the same version again is no change"
    assert again.policies == first.policies
    labelled = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "acme-meters", "labels": {"x": "y"}}}
    event(api, "MODIFIED", server.put(labelled))
    domains._plan(api, domain)
    assert analysed == passes + passes, "a namespace changed: analysed anew"


def _domain_planner(monkeypatch):
    """A domain `ingestion` over namespace acme-meters, the API on a fake server, and the list of the cluster-wide
    analysis' passes over the namespaces (one entry each)."""
    from iotsec.controllers import securitydomain as domains

    server = _server_with(monkeypatch, "acme-utilities")
    server.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "acme-meters"}})
    api = kube_on(server)
    passes: list[str] = []
    read_only_list = domains.read_only_list

    def counted(a: Any, v: str, kind: str) -> list[dict[str, Any]]:
        if kind == "Namespace":
            passes.append(kind)
        return read_only_list(a, v, kind)

    monkeypatch.setattr(domains, "read_only_list", counted)
    monkeypatch.setattr(domains, "_planned", [])
    body = server.find("iotsec.io/v1alpha1", "SecurityDomain", "ingestion")
    assert body is not None
    body = {**body, "spec": {"zone": "access", "namespaces": ["acme-meters"]}, "metadata": {**body["metadata"]}}
    event(api, "MODIFIED", server.put(body))
    return domains, server, api, domains._domain(api.get("iotsec.io/v1alpha1", "SecurityDomain", "ingestion")), passes


def test_a_domain_asked_for_before_an_analysis_began_shares_it_though_namespaces_changed_since(monkeypatch):
    import time

    domains, server, api, domain, passes = _domain_planner(monkeypatch)
    asked = time.monotonic()
    monkeypatch.setattr(domains, "reads_since", lambda: asked)
    domains._plan(api, domain)
    assert passes == ["Namespace"]
    labelled = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "acme-meters", "labels": {"x": "y"}}}
    event(api, "MODIFIED", server.put(labelled))
    domains._plan(api, domain)
    assert passes == ["Namespace"], "the analysis began after this reconcile was asked for: it serves it"
    changed = time.monotonic()
    monkeypatch.setattr(domains, "reads_since", lambda: changed)
    planned = domains._plan(api, domain)
    assert passes == ["Namespace", "Namespace"], "asked for after the analysis began: analysed anew"
    assert domains._planned[0][0] >= changed
    assert planned.domain == "ingestion"


def test_domains_asked_for_at_once_analyse_the_cluster_once(monkeypatch):
    import threading
    import time

    domains, server, api, domain, passes = _domain_planner(monkeypatch)
    labelled = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "acme-meters", "labels": {"x": "y"}}}
    event(api, "MODIFIED", server.put(labelled))  # the cache changed: no analysis is current by its stamp
    asked = time.monotonic()
    monkeypatch.setattr(domains, "reads_since", lambda: asked)
    slow = domains._fresh_analysis
    monkeypatch.setattr(domains, "_fresh_analysis", lambda a: time.sleep(0.2) or slow(a))
    plans: list[Any] = []
    threads = [threading.Thread(target=lambda: plans.append(domains._plan(api, domain))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(plans) == 4
    assert passes == ["Namespace"], "one analysis, the others waited for it and used it"
    assert all(plan.policies == plans[0].policies for plan in plans)


def test_a_joining_namespace_gets_its_record_and_labels_in_one_patch_and_its_echo_asks_no_reconcile(monkeypatch):
    domains, server, api, domain, _ = _domain_planner(monkeypatch)
    patches: list[tuple[str, dict[str, Any]]] = []
    patch = _Resource.patch

    def recorded(self: _Resource, name: str, namespace: str | None, body: dict[str, Any], **kw: Any) -> _Answer:
        patches.append((name, copy.deepcopy(body)))
        return patch(self, name, namespace, body, **kw)

    monkeypatch.setattr(_Resource, "patch", recorded)
    monkeypatch.setattr(domains, "_own_writes", {})
    body = api.get("iotsec.io/v1alpha1", "SecurityDomain", "ingestion")
    applied = domains._apply(api, body, domains._plan(api, domain))
    (sent,) = [b for n, b in patches if n == "acme-meters"]
    assert set(sent["metadata"]) == {"labels", "annotations"}, "the record and the labels it records, together"
    assert applied.labelled == ["acme-meters"]
    written = server.find("v1", "Namespace", "acme-meters")
    assert written is not None
    assert domains._own_writes["acme-meters"] == ("ingestion", written["metadata"]["resourceVersion"])

    asked: list[str] = []
    monkeypatch.setattr(domains, "kube", lambda: api)
    monkeypatch.setattr(domains, "_domains_concerned", lambda namespace, labels: {"ingestion", "other"})
    monkeypatch.setattr(domains, "reconcile_soon", lambda kind, name, *a, **k: asked.append(name))
    labels = written["metadata"]["labels"]
    domains.namespace_changed("MODIFIED", "acme-meters", labels, copy.deepcopy(written))
    assert asked == ["other"], "its own write's event asks no reconcile of the domain, another concerned still"
    someone = {**written, "metadata": {**written["metadata"], "resourceVersion": "999"}}
    domains.namespace_changed("MODIFIED", "acme-meters", labels, someone)
    assert sorted(asked) == ["ingestion", "other", "other"], "a later change by anyone asks for both"
    domains.namespace_changed("DELETED", "acme-meters", labels, copy.deepcopy(written))
    assert asked.count("ingestion") == 2, "a deletion always does"
    assert "acme-meters" not in domains._own_writes, "nor is a deleted namespace remembered"


def test_a_patch_that_lands_on_someone_elses_change_is_news_to_the_domain(monkeypatch):
    domains, server, api, domain, _ = _domain_planner(monkeypatch)
    patch = _Resource.patch

    def raced(self: _Resource, name: str, namespace: str | None, body: dict[str, Any], **kw: Any) -> _Answer:
        if self.kind == "Namespace":  # a person's label lands between the domain's read and its patch
            theirs = self.existing(name, namespace)
            theirs["metadata"].setdefault("labels", {})["team"] = "ops"
            server.put(theirs)
        return patch(self, name, namespace, body, **kw)

    monkeypatch.setattr(_Resource, "patch", raced)
    monkeypatch.setattr(domains, "_own_writes", {})
    body = api.get("iotsec.io/v1alpha1", "SecurityDomain", "ingestion")
    domains._apply(api, body, domains._plan(api, domain))
    written = server.find("v1", "Namespace", "acme-meters")
    assert written is not None
    assert written["metadata"]["labels"]["team"] == "ops"
    assert "acme-meters" not in domains._own_writes, "not the namespace it planned: its event is news"
    asked: list[str] = []
    monkeypatch.setattr(domains, "kube", lambda: api)
    monkeypatch.setattr(domains, "_domains_concerned", lambda namespace, labels: {"ingestion"})
    monkeypatch.setattr(domains, "reconcile_soon", lambda kind, name, *a, **k: asked.append(name))
    domains.namespace_changed("MODIFIED", "acme-meters", written["metadata"]["labels"], copy.deepcopy(written))
    assert asked == ["ingestion"]
