"""The TenantIsolation reconciler against an in-memory API: keys never replaced behind anyone's back, platform keys
at a fixed home (and migrated there), conflicts that change nothing, Shred limited to what the tenant created."""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest

from iotsec.build import tenant as builder
from iotsec.controllers import tenant as handler
from iotsec.controllers.runtime import config
from iotsec.k8s.kube import ApiError
from iotsec.model.labels import CRL_REQUESTED, TENANT_LABEL, owner_labels
from iotsec.pki import devices
from tests.conftest import load_examples

NAME = "acme-utilities"
HOME = config().platform.namespace
CA = f"{HOME}/iotsec-device-ca-acme"
APP_KEY = "acme-meters/iotsec-app-meter-ingest-key"


class FakeKube:
    """Just enough of iotsec.k8s.kube.Kube: objects by (kind, namespace, name); apply replaces, like a forced apply."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.deleted: list[tuple[str, str | None, str]] = []

    def put(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta.get("namespace"), meta["name"])] = copy.deepcopy(obj)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found else None

    def list(self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None):
        return [copy.deepcopy(o) for (k, ns, _), o in self.objects.items() if k == kind and namespace in (None, ns)]

    def apply(self, obj: dict[str, Any], owner: Any = None) -> dict[str, Any]:
        key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if obj["kind"] != "Namespace" and key[1] is not None and ("Namespace", None, key[1]) not in self.objects:
            raise ApiError(f"namespace {key[1]} not found", 404)
        merged = copy.deepcopy(obj)
        if key in self.objects and obj["kind"] == "TenantIsolation":
            merged["status"] = self.objects[key].get("status")
        self.put(merged)
        return merged

    def create(self, obj: dict[str, Any]) -> bool:
        key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if key in self.objects:
            return False
        self.put(obj)
        return True

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        self.deleted.append((kind, namespace, name))
        return self.objects.pop((kind, namespace, name), None) is not None

    def prune(self, api_version, kind, owner_kind, owner_name, keep, namespace=None):
        wanted = set(keep)
        for (k, ns, name), obj in list(self.objects.items()):
            labels = obj["metadata"].get("labels") or {}
            ours = labels.get("iotsec.io/owner-kind") == owner_kind and labels.get("iotsec.io/owner-name") == owner_name
            if k == kind and ours and (ns, name) not in wanted:
                self.delete(api_version, k, name, ns)

    def patch_status(self, api_version, kind, name, status, namespace=None, resource_version=None) -> None:
        obj = self.objects[(kind, namespace, name)]
        obj["status"] = {**(obj.get("status") or {}), **status}

    def annotate(self, api_version, kind, name, annotations, namespace=None) -> bool:
        meta = self.objects[(kind, namespace, name)]["metadata"]
        current = meta.setdefault("annotations", {})
        for key, value in annotations.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        return True

    # helpers for the tests
    def secret(self, ref: str) -> dict[str, Any] | None:
        namespace, name = ref.split("/")
        return self.objects.get(("Secret", namespace, name))

    def data(self, ref: str) -> dict[str, str]:
        return {k: base64.b64decode(v).decode() for k, v in (self.secret(ref) or {})["data"].items()}

    def tenant(self) -> dict[str, Any]:
        return self.objects[("TenantIsolation", None, NAME)]

    def ready(self) -> dict[str, Any]:
        return next(c for c in self.tenant()["status"]["conditions"] if c["type"] == "Ready")


@pytest.fixture
def events(monkeypatch) -> list[tuple[str, str, str]]:
    seen: list[tuple[str, str, str]] = []
    monkeypatch.setattr(kopf, "event", lambda body, *, type, reason, message: seen.append((type, reason, message)))
    monkeypatch.setattr(kopf, "warn", lambda body, *, reason, message: seen.append(("Warning", reason, message)))
    return seen


def _example() -> dict[str, Any]:
    doc = next(d for d in load_examples() if d["kind"] == "TenantIsolation" and d["metadata"]["name"] == NAME)
    return copy.deepcopy(doc)


@pytest.fixture
def api(monkeypatch) -> FakeKube:
    fake = FakeKube()
    body = _example()
    body["metadata"].update(uid="uid-1", generation=1)
    fake.put(body)
    fake.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": HOME}})
    fake.put({"apiVersion": "iotsec.io/v1alpha1", "kind": "SecurityDomain", "metadata": {"name": "ingestion"}})
    monkeypatch.setattr(handler, "kube", lambda: fake)
    return fake


def _set_spec(api: FakeKube, **changes: Any) -> None:
    api.tenant()["spec"].update(changes)


def _annotate(api: FakeKube, **annotations: str) -> None:
    api.tenant()["metadata"].setdefault("annotations", {}).update(annotations)


def _corrupt(api: FakeKube, ref: str, data: dict[str, str] | None = None, labels: dict[str, str] | None = None):
    secret = api.secret(ref)
    assert secret is not None
    if data is not None:
        secret["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    if labels is not None:
        secret["metadata"]["labels"] = labels
    return copy.deepcopy(secret)


def test_a_new_tenant_gets_its_platform_keys_in_the_release_namespace_recorded_in_status(api, events):
    handler.reconcile(NAME)
    status = api.tenant()["status"]
    assert status["deviceCASecret"] == CA
    assert status["deviceRegistry"] == f"{HOME}/iotsec-device-registry-acme"
    assert sorted(status["createdNamespaces"]) == ["acme-analytics", "acme-meters"]
    assert (
        api.objects[("Namespace", None, "acme-meters")]["metadata"]["annotations"][handler.CREATED_ANNOTATION] == NAME
    )
    devices.DeviceCAState.from_secret_data(api.data(CA))
    assert api.secret("acme-meters/iotsec-device-ca") is None, "no CA in a tenant namespace"
    assert api.ready()["status"] == "True"


@pytest.mark.parametrize(
    ("ref", "damage"),
    [
        (APP_KEY, {"algorithm": "ed25519", "key": "not a key"}),
        (CA, {"ca.crt": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", "ca.key": "x"}),
    ],
    ids=["app-key", "device-ca"],
)
def test_an_unreadable_key_is_reported_and_left_alone_until_a_person_names_it(api, events, ref, damage):
    handler.reconcile(NAME)
    before = _corrupt(api, ref, data=damage)
    events.clear()
    handler.reconcile(NAME)
    assert api.secret(ref) == before, "neither rotated nor overwritten"
    ready = api.ready()
    assert (ready["status"], ready["reason"]) == ("False", "KeyUnreadable")
    assert f"Secret {ref} cannot be read" in ready["message"]
    assert "not a key" not in ready["message"], "never its content"
    assert "nope" not in ready["message"], "never its content"
    assert any(t == "Warning" and r == "KeyUnreadable" and ref in m for t, r, m in events)
    assert api.objects[("ResourceQuota", "acme-analytics", "iotsec-tenant-quota")], "other objects still reconcile"

    _annotate(api, **{handler.REPLACE_ANNOTATION: f"other/thing,{ref}"})
    events.clear()
    handler.reconcile(NAME)
    assert api.secret(ref) != before
    assert any(t == "Warning" and r == "KeyReplaced" and ref in m for t, r, m in events)
    assert api.ready()["status"] == "True"
    assert api.tenant()["metadata"]["annotations"][handler.REPLACE_ANNOTATION] == "other/thing", "used once"


def test_an_unreadable_device_ca_leaves_the_published_trust_bundles_as_they_are(api, events):
    handler.reconcile(NAME)
    trust = api.objects[("ConfigMap", "acme-meters", builder.DEVICE_TRUST)]["data"]
    _corrupt(api, CA, data={"ca.crt": "garbage"})
    handler.reconcile(NAME)
    assert api.objects[("ConfigMap", "acme-meters", builder.DEVICE_TRUST)]["data"] == trust
    assert api.tenant()["status"]["deviceCANotAfter"], "the last known expiry is kept"


def test_a_foreign_secret_under_a_key_name_is_not_taken_over(api, events):
    handler.reconcile(NAME)
    before = _corrupt(api, APP_KEY, labels={"app.kubernetes.io/managed-by": "someone-else"})
    handler.reconcile(NAME)
    assert api.secret(APP_KEY) == before
    assert "is not iotsec's key of TenantIsolation acme-utilities" in api.ready()["message"]


def test_an_unreadable_volume_key_is_reported_and_left_alone(api, events):
    _set_spec(api, storage={"provisioner": "driver.longhorn.io", "parameters": {"encrypted": "true"}})
    handler.reconcile(NAME)
    ref = api.tenant()["status"]["volumeKeySecret"]
    assert ref == f"{HOME}/iotsec-volume-key-acme"
    storage_class = api.objects[("StorageClass", None, "iotsec-acme-encrypted")]
    assert storage_class["parameters"]["csi.storage.k8s.io/node-stage-secret-namespace"] == HOME
    before = _corrupt(api, ref, data={"CRYPTO_KEY_PROVIDER": "secret"})
    handler.reconcile(NAME)
    assert api.secret(ref) == before
    assert api.ready()["reason"] == "KeyUnreadable"
    assert "missing key 'CRYPTO_KEY_VALUE'" in api.ready()["message"]


def test_a_flipped_tenant_label_is_a_conflict_that_prunes_nothing_and_issues_no_ca(api, events):
    handler.reconcile(NAME)
    ca = api.data(CA)
    quota = api.objects[("ResourceQuota", "acme-meters", "iotsec-tenant-quota")]
    namespace = api.objects[("Namespace", None, "acme-meters")]
    namespace["metadata"]["labels"][TENANT_LABEL] = "globex"
    events.clear()
    handler.reconcile(NAME)
    assert (api.ready()["status"], api.ready()["reason"]) == ("False", "Conflict")
    assert "acme-meters belongs to tenant globex" in api.ready()["message"]
    assert any(t == "Warning" and r == "Conflict" for t, r, _ in events)
    assert api.objects[("ResourceQuota", "acme-meters", "iotsec-tenant-quota")] == quota, "not pruned"
    assert ("ConfigMap", "acme-meters", builder.DEVICE_TRUST) in api.objects
    assert ("RoleBinding", "acme-meters", "iotsec-user-operators") in api.objects
    assert api.objects[("Namespace", None, "acme-meters")]["metadata"]["labels"][TENANT_LABEL] == "globex"
    assert api.data(CA) == ca, "no new CA"
    assert [s for s in api.objects if s[0] == "Secret" and "device-ca" in s[2]] == [("Secret", HOME, CA.split("/")[1])]


def test_reordering_the_namespaces_changes_no_status_and_no_secret(api, events):
    handler.reconcile(NAME)
    status, objects = copy.deepcopy(api.tenant()["status"]), copy.deepcopy(api.objects)
    _set_spec(api, namespaces=list(reversed(api.tenant()["spec"]["namespaces"])))
    handler.reconcile(NAME)
    after = api.tenant()["status"]
    assert {k: v for k, v in after.items() if k != "conditions"} == {
        k: v for k, v in status.items() if k != "conditions"
    }
    assert {k: v for k, v in api.objects.items() if k[0] == "Secret"} == {
        k: v for k, v in objects.items() if k[0] == "Secret"
    }


def test_a_reserved_namespace_is_a_conflict_and_nothing_is_written_there(api, events):
    api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})
    _set_spec(api, namespaces=["acme-meters", "acme-analytics", HOME])
    handler.reconcile(NAME)
    assert api.ready()["reason"] == "Conflict"
    assert f"namespace {HOME} is reserved" in api.ready()["message"]
    assert not [k for k in api.objects if k[1] == HOME and k[0] not in ("Secret",)]
    assert "iotsec.io/tenant" not in (api.objects[("Namespace", None, HOME)]["metadata"].get("labels") or {})


def _legacy(
    api: FakeKube, kind: str, name: str, data: dict[str, str], namespace: str = "acme-meters"
) -> dict[str, Any]:
    obj = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": owner_labels("TenantIsolation", NAME)},
        "data": data,
    }
    api.put(obj)
    return obj


def test_keys_at_the_old_home_are_moved_never_regenerated(api, events):
    api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "acme-meters"}})
    state, _ = devices.ensure_device_ca(None, "acme", "ecdsa-p256", *_ca_times())
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in state.to_secret_data().items()}
    _legacy(api, "Secret", "iotsec-device-ca", encoded)
    registry = _legacy(api, "ConfigMap", "iotsec-device-registry", {"issued": "{}"})
    registry["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "iotsec", TENANT_LABEL: "acme"}
    api.put(registry)
    api.tenant()["status"] = {"deviceCASecret": "iotsec-device-ca", "namespaces": ["acme-meters"]}
    handler.reconcile(NAME)
    assert api.secret(CA)["data"] == encoded, "copied, not regenerated"
    assert api.secret("acme-meters/iotsec-device-ca") is None, "the old one is gone from tenant reach"
    assert api.objects[("ConfigMap", HOME, "iotsec-device-registry-acme")]["data"] == {"issued": "{}"}
    assert ("ConfigMap", "acme-meters", "iotsec-device-registry") not in api.objects
    moved = [m for t, r, m in events if t == "Normal" and r == "KeyMigrated"]
    assert any("acme-meters/iotsec-device-ca" in m and CA in m for m in moved)
    assert api.tenant()["status"]["deviceCASecret"] == CA
    assert api.tenant()["status"]["createdNamespaces"] == ["acme-analytics"], "acme-meters existed: adopted"


def test_a_stray_ca_left_by_an_older_release_is_reported_not_deleted(api, events):
    for namespace in ("acme-meters", "acme-analytics"):
        api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    state, _ = devices.ensure_device_ca(None, "acme", "ecdsa-p256", *_ca_times())
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in state.to_secret_data().items()}
    _legacy(api, "Secret", "iotsec-device-ca", encoded)
    _legacy(api, "Secret", "iotsec-device-ca", {"ca.crt": "c3RyYXk="}, namespace="acme-analytics")
    api.tenant()["status"] = {"deviceCASecret": "iotsec-device-ca", "namespaces": ["acme-meters", "acme-analytics"]}
    handler.reconcile(NAME)
    assert api.secret(CA)["data"] == encoded, "the one at the last home is the one in use"
    assert api.secret("acme-analytics/iotsec-device-ca") is not None
    assert any(r == "StrayKey" and "acme-analytics/iotsec-device-ca" in m for _, r, m in events)


def _ca_times():
    from datetime import UTC, datetime, timedelta

    return timedelta(days=1825), timedelta(days=180), datetime.now(UTC), "ACME Utilities"


def test_a_new_request_annotation_reconciles_at_once_and_nothing_else_does(monkeypatch):
    """kopf leaves iotsec.io/ annotations out of its diff: the watch-event handler must see the requests."""
    reconciled: list[str] = []
    observed: list[dict] = []
    monkeypatch.setattr(handler, "reconcile", lambda name, seen: reconciled.append(name) or observed.append(seen))
    monkeypatch.setattr(handler, "_requests_seen", {})

    def event(annotations: dict[str, str], type_: str = "MODIFIED") -> None:
        asyncio.run(handler.on_request(name=NAME, body={"metadata": {"annotations": annotations}}, type=type_))

    event({}, type_=None)  # the first listing: resume handles it
    event({"iotsec.io/last-handled-configuration": "x"})
    assert reconciled == []
    event({CRL_REQUESTED: "2026-12-03T10:00:00Z"})
    assert reconciled == [NAME]
    assert observed == [{"metadata": {"annotations": {CRL_REQUESTED: "2026-12-03T10:00:00Z"}}}], (
        "the reconcile reads its tenant from the watch cache: it must hold the body that carried the request"
    )
    event({CRL_REQUESTED: "2026-12-03T10:00:00Z", "other": "change"})
    assert reconciled == [NAME], "the same request is not handled twice"
    event({CRL_REQUESTED: "2026-12-03T10:00:00Z", handler.ROTATE_ANNOTATION: "leak-1"})
    assert reconciled == [NAME, NAME]


def _shred(api: FakeKube, events) -> str:
    api.tenant()["spec"]["deletionPolicy"] = "Shred"
    handler._delete(api, NAME, api.tenant())
    return next(m for t, r, m in events if r == "Shredded")


def test_shred_deletes_only_namespaces_it_created_and_the_tenants_keys(api, events):
    api.put(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "acme-meters", "labels": {"team": "pre-existing"}},
        }
    )
    handler.reconcile(NAME)
    assert api.tenant()["status"]["createdNamespaces"] == ["acme-analytics"]
    message = _shred(api, events)
    assert ("Namespace", None, "acme-analytics") not in api.objects
    assert ("Namespace", None, "acme-meters") in api.objects, "adopted: kept"
    assert handler.CREATED_ANNOTATION not in api.objects[("Namespace", None, "acme-meters")]["metadata"]["annotations"]
    assert api.secret(APP_KEY) is None, "the app key in the adopted namespace is destroyed"
    assert api.secret(CA) is None
    assert "namespaces created for it deleted (acme-analytics)" in message
    for named in (APP_KEY, CA):
        assert named in message
    assert ("Namespace", None, HOME) in api.objects


def test_shred_never_deletes_an_adopted_system_namespace(api, events):
    api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    handler.reconcile(NAME)
    api.tenant()["status"]["createdNamespaces"] += ["default"]  # as if recorded by a faulty version
    api.objects[("Namespace", None, "default")]["metadata"]["labels"] = {TENANT_LABEL: "acme"}
    _shred(api, events)
    assert ("Namespace", None, "default") in api.objects
    assert ("Namespace", None, HOME) in api.objects


def test_shred_names_the_namespaces_it_deleted_even_when_they_took_a_while(api, events, monkeypatch):
    handler.reconcile(NAME)
    api.tenant()["spec"]["deletionPolicy"] = "Shred"
    delete = api.delete
    monkeypatch.setattr(api, "delete", lambda v, kind, *rest: kind == "Namespace" or delete(v, kind, *rest))
    with pytest.raises(kopf.TemporaryError, match="waiting for namespaces"):
        handler._delete(api, NAME, api.tenant())  # namespaces terminating
    for namespace in ("acme-meters", "acme-analytics"):
        api.objects.pop(("Namespace", None, namespace))
    handler._delete(api, NAME, api.tenant())
    message = next(m for t, r, m in events if r == "Shredded")
    assert "namespaces created for it deleted (acme-analytics, acme-meters)" in message


REGISTRY = f"{HOME}/iotsec-device-registry-acme"
TENANT_NAMESPACES = ("acme-meters", "acme-analytics")


def _issue_and_record(api: FakeKube, revoke: bool) -> int:
    """Issue a device from the tenant's CA and record it (revoked or not) in the registry, as `iotsec device` does."""
    state = devices.DeviceCAState.from_secret_data(api.data(CA))
    now = datetime.now(UTC)
    cert = devices.issue_device_certificate(
        state.ca, "acme", "meter-1", "meter", "ACME", "M1", "ecdsa-p256", timedelta(days=30),
        ["digitalSignature"], ["clientAuth"], now,
    )  # fmt: skip
    registry = devices.Registry({}, {}).with_issued(cert.serial, "meter-1")
    if revoke:
        registry = registry.with_revoked([cert.serial], now)
    namespace, name = REGISTRY.split("/")
    labels = {"app.kubernetes.io/managed-by": "iotsec", TENANT_LABEL: "acme"}
    api.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "data": registry.to_config_map_data(),
        }
    )
    return cert.serial


def _published_revocations(api: FakeKube) -> dict[str, set[int]]:
    return {
        ns: devices.revoked_serials(api.objects[("ConfigMap", ns, builder.DEVICE_TRUST)]["data"]["crl.pem"])
        for ns in TENANT_NAMESPACES
    }


def _delete_registry(api: FakeKube) -> None:
    namespace, name = REGISTRY.split("/")
    api.delete("v1", "ConfigMap", name, namespace)


def test_a_deleted_registry_drops_no_revocation_is_reported_and_is_recreated(api, events):
    handler.reconcile(NAME)
    serial = _issue_and_record(api, revoke=True)
    handler.reconcile(NAME)
    assert _published_revocations(api) == {ns: {serial} for ns in TENANT_NAMESPACES}
    assert api.ready()["status"] == "True"

    _delete_registry(api)
    events.clear()
    handler.reconcile(NAME)
    assert _published_revocations(api) == {ns: {serial} for ns in TENANT_NAMESPACES}, "the CRLs never shrink"
    ready = api.ready()
    assert (ready["status"], ready["reason"]) == ("False", "RegistryMissing")
    assert REGISTRY in ready["message"]
    assert any(t == "Warning" and r == "RegistryMissing" and REGISTRY in m for t, r, m in events)
    namespace, name = REGISTRY.split("/")
    recreated = api.objects[("ConfigMap", namespace, name)]
    assert set(devices.Registry.from_config_map_data(recreated["data"]).revoked) == {serial}
    assert recreated["metadata"]["labels"][TENANT_LABEL] == "acme"

    handler.reconcile(NAME)
    assert _published_revocations(api) == {ns: {serial} for ns in TENANT_NAMESPACES}


def test_a_deleted_registry_without_revocations_is_reported_not_invented(api, events):
    handler.reconcile(NAME)
    _issue_and_record(api, revoke=False)
    handler.reconcile(NAME)
    assert api.secret(CA)["metadata"]["annotations"][handler.DEVICES_ISSUED_ANNOTATION] == "true"
    _delete_registry(api)
    handler.reconcile(NAME)
    assert api.ready()["reason"] == "RegistryMissing"
    namespace, name = REGISTRY.split("/")
    assert ("ConfigMap", namespace, name) not in api.objects, "nothing to recover: left for a restore"


def test_a_tenant_that_never_issued_a_device_needs_no_registry(api, events):
    handler.reconcile(NAME)
    handler.reconcile(NAME)
    assert api.ready()["status"] == "True"
    assert not any(r == "RegistryMissing" for _, r, _ in events)
    namespace, name = REGISTRY.split("/")
    assert ("ConfigMap", namespace, name) not in api.objects


def test_an_older_registry_restored_drops_no_revocation_even_in_a_namespace_new_to_the_tenant(api, events):
    handler.reconcile(NAME)
    serial = _issue_and_record(api, revoke=True)
    handler.reconcile(NAME)
    namespace, name = REGISTRY.split("/")
    registry_map = api.objects[("ConfigMap", namespace, name)]
    restored = devices.Registry.from_config_map_data(registry_map["data"])
    registry_map["data"] = devices.Registry(restored.issued, {}).to_config_map_data()  # a copy from before
    _set_spec(api, namespaces=[*api.tenant()["spec"]["namespaces"], "acme-new"])
    handler.reconcile(NAME)
    crl = api.objects[("ConfigMap", "acme-new", builder.DEVICE_TRUST)]["data"]["crl.pem"]
    assert devices.revoked_serials(crl) == {serial}
    assert _published_revocations(api) == {ns: {serial} for ns in TENANT_NAMESPACES}
    assert api.ready()["status"] == "True", "a registry is there: nothing is missing"


def test_each_reconcile_says_what_it_did_in_one_line_of_the_objects_logger(api, events, caplog):
    """`kubectl logs` tells the story: one INFO line per reconcile on kopf's per-object logger, never key material."""
    logger = logging.getLogger("kopf.objects.test")
    with caplog.at_level(logging.INFO):
        handler.reconcile(NAME, logger=logger)
        handler.reconcile(NAME, logger=logger)
    lines = [r.getMessage() for r in caplog.records if r.name == "kopf.objects.test"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("reconciled (success): 2 namespaces, ")
    assert "Ready=True" in lines[0]
    keys = [v for ref in (CA, APP_KEY) for v in api.data(ref).values() if len(v) >= 40]  # key material, not ids
    assert keys
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(key in everything for key in keys), "no key material in any log line"
    assert "PRIVATE KEY" not in everything


def test_an_invalid_spec_is_logged_as_invalid_with_one_warning(api, events, caplog):
    _set_spec(api, tenantID="Not Valid!")
    logger = logging.getLogger("kopf.objects.test")
    with caplog.at_level(logging.INFO), pytest.raises(handler.kopf.PermanentError):
        handler.reconcile(NAME, logger=logger)
    with pytest.raises(handler.kopf.PermanentError):
        handler.reconcile(NAME, logger=logger)
    lines = [r.getMessage() for r in caplog.records if r.name == "kopf.objects.test"]
    assert lines[0].startswith("reconciled (invalid)")
    assert (api.ready()["status"], api.ready()["reason"]) == ("False", "InvalidSpec")
    assert [r for t, r, _ in events if t == "Warning"] == ["InvalidSpec"], "warned once, not at every retry"
