"""TenantIsolation on a real API server: what the operator creates, and what the cluster then enforces."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.e2e.conftest import eventually
from tests.e2e.processes import Operator

GROUP, VERSION = "iotsec.io", "v1alpha1"
SUFFIX = uuid.uuid4().hex[:5]
TENANT, OTHER = f"t{SUFFIX}", f"o{SUFFIX}"
NS_A, NS_B, NS_OTHER = f"{TENANT}-a", f"{TENANT}-b", f"{OTHER}-a"


def _tenant(name: str, tenant_id: str, namespaces: list[str], **extra: Any) -> dict[str, Any]:
    spec = {
        "tenantID": tenant_id,
        "securityDomain": f"core-{SUFFIX}",
        "namespaces": namespaces,
        "quota": {"pods": 3},
        "userClasses": [
            {"name": "operators", "privilege": "operator", "groups": [f"{tenant_id}:operators"]},
            {"name": "viewers", "privilege": "viewer", "groups": [f"{tenant_id}:viewers"]},
        ],
        # not the core group "": the k8s-testenv server turns "" in custom resources into null
        "applicationClasses": [
            {"name": "ingest", "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]}
        ],
        "applications": [
            {"name": "meter-ingest", "class": "ingest", "namespace": namespaces[0], "keyAlgorithm": "ed25519"}
        ],
        "deviceClasses": [{"name": "meter", "keyAlgorithm": "ecdsa-p256", "validity": "30d"}],
        **extra,
    }
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TenantIsolation", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def custom(api_client) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="module")
def core(api_client) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="module")
def operator(crds, tmp_path_factory) -> Iterator[Operator]:
    running = Operator(tmp_path_factory.mktemp("tenant") / "operator.log")
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def tenants(operator, custom, core) -> Iterator[str]:
    domain = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SecurityDomain",
        "metadata": {"name": f"core-{SUFFIX}"},
        "spec": {"zone": "core", "namespaceSelector": {"matchLabels": {"iotsec.io/security-domain": f"core-{SUFFIX}"}}},
    }
    custom.create_cluster_custom_object(GROUP, VERSION, "securitydomains", domain)
    custom.create_cluster_custom_object(GROUP, VERSION, "tenantisolations", _tenant(TENANT, TENANT, [NS_A, NS_B]))
    custom.create_cluster_custom_object(GROUP, VERSION, "tenantisolations", _tenant(OTHER, OTHER, [NS_OTHER]))
    yield TENANT
    for plural, name in (("tenantisolations", OTHER), ("securitydomains", f"core-{SUFFIX}")):
        with contextlib.suppress(ApiException):
            custom.delete_cluster_custom_object(GROUP, VERSION, plural, name)


def _status(custom, name: str) -> dict[str, Any]:
    return custom.get_cluster_custom_object(GROUP, VERSION, "tenantisolations", name).get("status") or {}


def _ready(custom, name: str) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in _status(custom, name).get("conditions", []))


def test_tenant_gets_namespaces_bounds_rbac_identities_and_keys(tenants, custom, core, api_client):
    eventually(lambda: _ready(custom, TENANT), timeout=60, what="tenant Ready")
    for namespace in (NS_A, NS_B):
        labels = core.read_namespace(namespace).metadata.labels
        assert labels["iotsec.io/tenant"] == TENANT
        assert core.read_namespaced_resource_quota("iotsec-tenant-quota", namespace).spec.hard["pods"] == "3"
        core.read_namespaced_limit_range("iotsec-tenant-limits", namespace)
    rbac = client.RbacAuthorizationV1Api(api_client)
    assert {r.metadata.name for r in rbac.list_namespaced_role(NS_A).items} >= {
        "iotsec-user-operators",
        "iotsec-user-viewers",
        "iotsec-app-class-ingest",
    }
    account = core.read_namespaced_service_account("meter-ingest", NS_A)
    assert account.metadata.labels["iotsec.io/app-id"] == f"{TENANT}.meter-ingest"
    secret = core.read_namespaced_secret("iotsec-app-meter-ingest-key", NS_A)
    assert secret.metadata.owner_references is None, "keys never follow the tenant object into the garbage"
    data = {k: base64.b64decode(v).decode() for k, v in secret.data.items()}
    assert data["algorithm"] == "ed25519"
    assert "BEGIN PRIVATE KEY" in data["key"]
    (app,) = _status(custom, TENANT)["applications"]
    assert app["appID"] == f"{TENANT}.meter-ingest"
    assert app["keySecret"] == "iotsec-app-meter-ingest-key"
    assert app["nextRotation"] > app["keyCreated"]


def test_the_quota_is_enforced_by_the_api_server(tenants, custom, core):
    eventually(lambda: _ready(custom, TENANT), timeout=60, what="tenant Ready")
    pod = {
        "metadata": {"generateName": "q-"},
        "spec": {"containers": [{"name": "c", "image": "x"}], "automountServiceAccountToken": False},
    }
    # the quota controller (kube-controller-manager) must have computed the quota's status first
    eventually(
        lambda: (core.read_namespaced_resource_quota("iotsec-tenant-quota", NS_B).status.hard or {}).get("pods"),
        timeout=60,
        what="quota status computed",
    )
    for _ in range(3):
        core.create_namespaced_pod(NS_B, pod)  # the LimitRange fills in the limits the quota counts
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod(NS_B, pod)
    assert caught.value.status == 403
    assert "exceeded quota" in caught.value.body


def _as(api_client, user: str, group: str) -> client.CoreV1Api:
    impersonating = config.new_client_from_config()
    impersonating.set_default_header("Impersonate-User", user)
    impersonating.set_default_header("Impersonate-Group", group)
    return client.CoreV1Api(impersonating)


def test_users_get_their_class_privileges_and_nothing_in_other_tenants(tenants, custom, api_client):
    eventually(lambda: _ready(custom, TENANT) and _ready(custom, OTHER), timeout=60, what="tenants Ready")
    operator = _as(api_client, "alice", f"{TENANT}:operators")
    viewer = _as(api_client, "bob", f"{TENANT}:viewers")
    config_map = {"metadata": {"generateName": "cm-"}, "data": {"a": "b"}}
    operator.create_namespaced_config_map(NS_A, config_map)
    viewer.list_namespaced_config_map(NS_A)
    for attempt in (
        lambda: viewer.create_namespaced_config_map(NS_A, config_map),
        lambda: operator.list_namespaced_secret(NS_A),
        lambda: operator.create_namespaced_config_map(NS_OTHER, config_map),
        lambda: viewer.list_namespaced_config_map(NS_OTHER),
    ):
        with pytest.raises(ApiException) as caught:
            attempt()
        assert caught.value.status == 403


def test_a_rotation_request_replaces_the_key_at_once(tenants, custom, core):
    eventually(lambda: _ready(custom, TENANT), timeout=60, what="tenant Ready")

    def key_id() -> str:
        data = core.read_namespaced_secret("iotsec-app-meter-ingest-key", NS_A).data
        return base64.b64decode(data["key-id"]).decode()

    before = key_id()
    custom.patch_cluster_custom_object(
        GROUP,
        VERSION,
        "tenantisolations",
        TENANT,
        {"metadata": {"annotations": {"iotsec.io/rotate-keys": "suspected-leak-1"}}},
    )
    eventually(lambda: key_id() != before, timeout=30, what="key rotated")
    data = core.read_namespaced_secret("iotsec-app-meter-ingest-key", NS_A).data
    assert "previous-key" not in data, "a compromised key is not kept for an overlap"


def test_device_ca_and_trust_bundle_are_published(tenants, custom, core):
    from iotsec.devices import DeviceCAState

    eventually(lambda: _status(custom, TENANT).get("deviceCANotAfter"), timeout=60, what="device CA issued")
    data = {
        k: base64.b64decode(v).decode() for k, v in core.read_namespaced_secret("iotsec-device-ca", NS_A).data.items()
    }
    state = DeviceCAState.from_secret_data(data)
    for namespace in (NS_A, NS_B):
        trust = core.read_namespaced_config_map("iotsec-device-trust", namespace).data
        assert trust["ca-bundle.crt"] == state.bundle()
        assert "BEGIN X509 CRL" in trust["crl.pem"]
        assert "PRIVATE KEY" not in trust["ca-bundle.crt"]


def test_device_issue_and_revoke_through_the_cli(tenants, custom, core, tmp_path):
    import json
    import subprocess
    import sys

    from iotsec.devices import device_id_of, revoked_serials, verify_device

    eventually(lambda: _status(custom, TENANT).get("deviceCANotAfter"), timeout=60, what="device CA issued")
    issued = subprocess.run(
        [
            sys.executable,
            "-m",
            "iotsec",
            "device",
            "issue",
            "--tenant",
            TENANT,
            "--device-id",
            "meter-0001",
            "--class",
            "meter",
            "--manufacturer",
            "ACME",
            "--model",
            "SM-3",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(issued.stdout)
    assert "PRIVATE KEY" not in issued.stdout + issued.stderr, "key material is never printed"
    assert (tmp_path / "meter-0001.key").stat().st_mode & 0o777 == 0o600
    certificate = (tmp_path / "meter-0001.crt").read_text()
    assert device_id_of(certificate) == "meter-0001"
    now = datetime.now(UTC)
    trust = core.read_namespaced_config_map("iotsec-device-trust", NS_B).data
    assert verify_device(certificate, trust["ca-bundle.crt"], now, trust["crl.pem"])
    subprocess.run(
        [sys.executable, "-m", "iotsec", "device", "revoke", "--tenant", TENANT, "--device-id", "meter-0001"],
        check=True,
        capture_output=True,
    )

    def revoked() -> bool:
        crl = core.read_namespaced_config_map("iotsec-device-trust", NS_B).data["crl.pem"]
        return result["serial"] in revoked_serials(crl)

    eventually(revoked, timeout=30, what="serial in the CRL of every trust bundle")
    trust = core.read_namespaced_config_map("iotsec-device-trust", NS_B).data
    assert not verify_device(certificate, trust["ca-bundle.crt"], now, trust["crl.pem"])


def test_no_key_material_in_the_operator_log(tenants, custom, core, operator):
    eventually(lambda: _status(custom, TENANT).get("deviceCANotAfter"), timeout=60, what="keys issued")
    log = operator.log_path.read_text(errors="replace")
    material = []
    for name in ("iotsec-app-meter-ingest-key", "iotsec-device-ca"):
        data = core.read_namespaced_secret(name, NS_A).data
        for key in ("key", "previous-key", "ca.key"):
            if key in data:
                material.append(base64.b64decode(data[key]).decode())
    assert material
    for secret in material:
        body = "".join(line for line in secret.splitlines() if "-----" not in line)
        assert body[:40] not in log, "key material appeared in the operator's log"
        assert base64.b64encode(secret.encode()).decode()[:40] not in log


def test_shred_destroys_the_tenant_namespaces_and_their_keys_on_purpose(operator, custom, core):
    name, namespace = f"s{SUFFIX}", f"s{SUFFIX}-a"
    custom.create_cluster_custom_object(
        GROUP, VERSION, "tenantisolations", _tenant(name, name, [namespace], deletionPolicy="Shred")
    )
    eventually(lambda: _ready(custom, name), timeout=60, what="shred tenant Ready")
    core.read_namespaced_secret("iotsec-app-meter-ingest-key", namespace)
    custom.delete_cluster_custom_object(GROUP, VERSION, "tenantisolations", name)

    def namespace_gone() -> bool:
        try:
            core.read_namespace(namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually(namespace_gone, timeout=120, what="tenant namespace shredded")

    def shredded_event() -> bool:
        events = core.list_event_for_all_namespaces(field_selector=f"involvedObject.name={name}").items
        return any(e.type == "Warning" and e.reason == "Shredded" for e in events)

    eventually(shredded_event, timeout=30, what="a Shredded warning event")


def test_deleting_with_retain_keeps_namespaces_and_keys(tenants, custom, core):
    eventually(lambda: _ready(custom, TENANT), timeout=60, what="tenant Ready")
    custom.delete_cluster_custom_object(GROUP, VERSION, "tenantisolations", TENANT)

    def gone() -> bool:
        try:
            custom.get_cluster_custom_object(GROUP, VERSION, "tenantisolations", TENANT)
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually(gone, timeout=30, what="tenant object deleted")
    for namespace in (NS_A, NS_B):
        assert core.read_namespace(namespace).metadata.deletion_timestamp is None
    core.read_namespaced_secret("iotsec-app-meter-ingest-key", NS_A)

    def retained_event() -> bool:
        events = core.list_event_for_all_namespaces(field_selector=f"involvedObject.name={TENANT}").items
        return any(e.type == "Normal" and e.reason == "Retained" for e in events)

    eventually(retained_event, timeout=20, what="a Retained event")
