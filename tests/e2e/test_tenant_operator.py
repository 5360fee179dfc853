"""TenantIsolation on a real API server: what the operator creates, and what the cluster then enforces.

The operator runs with its own release namespace (`RELEASE`), where the platform-held keys live; the chart's
tenant ClusterRoles are created from `privilege_rules` as the chart makes them."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
RELEASE = "iotsec-system"  # the default: every operator on a shared test cluster agrees where platform keys live
CA_SECRET = f"iotsec-device-ca-{TENANT}"


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
def release(core) -> str:
    with contextlib.suppress(ApiException):  # 409: there already, and then left there
        core.create_namespace({"metadata": {"name": RELEASE}})
    return RELEASE


@pytest.fixture(scope="module")
def tenant_cluster_roles(api_client) -> Iterator[None]:
    """The chart's iotsec-tenant-<privilege> ClusterRoles, made from the same rules (left alone if present)."""
    from iotsec.build.tenant import BUILT_IN_PRIVILEGES, privilege_rules

    rbac = client.RbacAuthorizationV1Api(api_client)
    made = []
    for privilege in BUILT_IN_PRIVILEGES:
        role = {"metadata": {"name": f"iotsec-tenant-{privilege}"}, "rules": privilege_rules(privilege)}
        try:
            rbac.create_cluster_role(role)
            made.append(role["metadata"]["name"])
        except ApiException as exc:
            if exc.status != 409:
                raise
    yield
    for name in made:
        with contextlib.suppress(ApiException):
            rbac.delete_cluster_role(name)


@pytest.fixture(scope="module")
def operator(crds, release, tenant_cluster_roles, tmp_path_factory) -> Iterator[Operator]:
    running = Operator(tmp_path_factory.mktemp("tenant") / "operator.log")
    running.start(IOTSEC_WEBHOOK_NAMESPACE=release)
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


def _condition(custom, name: str, type_: str = "Ready") -> dict[str, Any]:
    return next((c for c in _status(custom, name).get("conditions", []) if c["type"] == type_), {})


def _secret_data(core, name: str, namespace: str) -> dict[str, str]:
    return {
        k: base64.b64decode(v).decode() for k, v in (core.read_namespaced_secret(name, namespace).data or {}).items()
    }


def _events(core, name: str, reason: str, type_: str = "Warning") -> list[str]:
    events = core.list_event_for_all_namespaces(field_selector=f"involvedObject.name={name}").items
    return [e.message for e in events if e.type == type_ and e.reason == reason]


def _ca_home(custom, name: str) -> tuple[str, str]:
    """Where status records the device CA: the release namespace of the operator that first reconciled the tenant
    (on a shared test cluster another test's operator, with another release namespace, may have been first)."""
    namespace, _, secret = (_status(custom, name).get("deviceCASecret") or "/").partition("/")
    return namespace, secret


def _ca_issued(custom, core, name: str) -> bool:
    """The device CA at a home out of tenant reach, recorded in status."""
    namespace, secret = _ca_home(custom, name)
    if secret != f"iotsec-device-ca-{name}":
        return False
    assert "iotsec.io/tenant" not in (core.read_namespace(namespace).metadata.labels or {}), "in a tenant's reach"
    return not _gone(lambda: core.read_namespaced_secret(secret, namespace))


def _gone(read) -> bool:
    try:
        read()
    except ApiException as exc:
        return exc.status == 404
    return False


@contextlib.contextmanager
def _own_tenant(custom, core, prefix: str, namespaces: list[str] | None = None, **extra: Any) -> Iterator[str]:
    """A tenant of its own for a test that breaks things; deleted (Retain) and its namespaces removed after."""
    name = f"{prefix}{SUFFIX}"
    listed = namespaces or [f"{name}-a", f"{name}-b"]
    custom.create_cluster_custom_object(GROUP, VERSION, "tenantisolations", _tenant(name, name, listed, **extra))
    try:
        eventually(lambda: _ca_issued(custom, core, name), timeout=60, what=f"device CA of {name} issued")
        yield name
    finally:
        home, secret = _ca_home(custom, name)
        with contextlib.suppress(ApiException):
            custom.delete_cluster_custom_object(GROUP, VERSION, "tenantisolations", name)
        with contextlib.suppress(ApiException):  # Retain keeps keys by design; a test cleans up after itself
            if secret:
                core.delete_namespaced_secret(secret, home)
        eventually(
            lambda: _gone(lambda: custom.get_cluster_custom_object(GROUP, VERSION, "tenantisolations", name)),
            timeout=30,
            what=f"{name} deleted",
        )
        for namespace in listed:
            if namespace != RELEASE:
                with contextlib.suppress(ApiException):
                    core.delete_namespace(namespace)


def test_tenant_gets_namespaces_bounds_rbac_identities_and_keys(tenants, custom, core, api_client):
    eventually(lambda: _ready(custom, TENANT), timeout=60, what="tenant Ready")
    for namespace in (NS_A, NS_B):
        labels = core.read_namespace(namespace).metadata.labels
        assert labels["iotsec.io/tenant"] == TENANT
        assert core.read_namespaced_resource_quota("iotsec-tenant-quota", namespace).spec.hard["pods"] == "3"
        core.read_namespaced_limit_range("iotsec-tenant-limits", namespace)
    rbac = client.RbacAuthorizationV1Api(api_client)
    roles = {r.metadata.name for r in rbac.list_namespaced_role(NS_A).items}
    assert "iotsec-app-class-ingest" in roles
    assert not roles & {"iotsec-user-operators", "iotsec-user-viewers"}, "built-in classes get no Role of their own"
    binding = rbac.read_namespaced_role_binding("iotsec-user-operators", NS_A)
    assert (binding.role_ref.kind, binding.role_ref.name) == ("ClusterRole", "iotsec-tenant-operator")
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
    allow_all = {
        "metadata": {"name": "allow-all"},
        "spec": {"podSelector": {}, "ingress": [{}], "egress": [{}], "policyTypes": ["Ingress", "Egress"]},
    }
    networking = client.NetworkingV1Api(operator.api_client)
    networking.list_namespaced_network_policy(NS_A)
    for attempt in (
        lambda: viewer.create_namespaced_config_map(NS_A, config_map),
        lambda: operator.list_namespaced_secret(NS_A),
        lambda: operator.create_namespaced_config_map(NS_OTHER, config_map),
        lambda: viewer.list_namespaced_config_map(NS_OTHER),
        lambda: networking.create_namespaced_network_policy(NS_A, allow_all),
        lambda: operator.read_namespaced_secret(CA_SECRET, RELEASE),
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
    from iotsec.pki.devices import DeviceCAState

    eventually(lambda: _ca_issued(custom, core, TENANT), timeout=60, what="device CA issued")
    home, secret = _ca_home(custom, TENANT)
    assert home not in (NS_A, NS_B), "a platform namespace, never one of the tenant's"
    state = DeviceCAState.from_secret_data(_secret_data(core, secret, home))
    for namespace in (NS_A, NS_B):
        names = {s.metadata.name for s in core.list_namespaced_secret(namespace).items}
        assert not {n for n in names if n.startswith("iotsec-device-ca")}, "no CA key within tenant reach"
    for namespace in (NS_A, NS_B):
        trust = core.read_namespaced_config_map("iotsec-device-trust", namespace).data
        assert trust["ca-bundle.crt"] == state.bundle()
        assert "BEGIN X509 CRL" in trust["crl.pem"]
        assert "PRIVATE KEY" not in trust["ca-bundle.crt"]


def test_device_issue_and_revoke_through_the_cli(tenants, custom, core, tmp_path):
    import json
    import subprocess
    import sys

    from iotsec.pki.devices import device_id_of, revoked_serials, verify_device

    eventually(lambda: _ca_issued(custom, core, TENANT), timeout=60, what="device CA issued")
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
        [
            sys.executable,
            "-m",
            "iotsec",
            "device",
            "revoke",
            "--tenant",
            TENANT,
            "--device-id",
            "meter-0001",
        ],
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
    eventually(lambda: _ca_issued(custom, core, TENANT), timeout=60, what="keys issued")
    log = operator.log_path.read_text(errors="replace")
    material = []
    for name, namespace in (("iotsec-app-meter-ingest-key", NS_A), _ca_home(custom, TENANT)[::-1]):
        data = core.read_namespaced_secret(name, namespace).data
        for key in ("key", "previous-key", "ca.key"):
            if key in data:
                material.append(base64.b64decode(data[key]).decode())
    assert material
    for secret in material:
        body = "".join(line for line in secret.splitlines() if "-----" not in line)
        assert body[:40] not in log, "key material appeared in the operator's log"
        assert base64.b64encode(secret.encode()).decode()[:40] not in log


def test_shred_destroys_only_what_the_tenant_created_and_its_keys(tenants, custom, core):
    name = f"s{SUFFIX}"
    created, adopted = f"{name}-a", f"{name}-adopted"
    core.create_namespace({"metadata": {"name": adopted, "labels": {"team": "was-here-first"}}})
    body = _tenant(name, name, [adopted, created], deletionPolicy="Shred")
    custom.create_cluster_custom_object(GROUP, VERSION, "tenantisolations", body)
    try:
        eventually(lambda: _ready(custom, name), timeout=60, what="shred tenant Ready")
        assert _status(custom, name)["createdNamespaces"] == [created]
        core.read_namespaced_secret("iotsec-app-meter-ingest-key", adopted)  # the app lives in the adopted one
        home, ca = eventually(lambda: _ca_issued(custom, core, name) and _ca_home(custom, name), what="CA issued")
        custom.delete_cluster_custom_object(GROUP, VERSION, "tenantisolations", name)
        eventually(lambda: _gone(lambda: core.read_namespace(created)), timeout=120, what="created namespace shredded")
        message = eventually(lambda: _events(core, name, "Shredded"), timeout=30, what="a Shredded warning")[-1]
        assert core.read_namespace(adopted).metadata.deletion_timestamp is None, "an adopted namespace is kept"
        assert _gone(lambda: core.read_namespaced_secret("iotsec-app-meter-ingest-key", adopted))
        assert _gone(lambda: core.read_namespaced_secret(ca, home))
        assert core.read_namespace(home).metadata.deletion_timestamp is None
        assert f"namespaces created for it deleted ({created})" in message
        for destroyed in (f"{adopted}/iotsec-app-meter-ingest-key", f"{home}/{ca}"):
            assert destroyed in message
    finally:
        with contextlib.suppress(ApiException):
            core.delete_namespace(adopted)


def test_reordering_the_namespaces_changes_no_status_and_no_key(tenants, custom, core):
    with _own_tenant(custom, core, "r") as name:
        eventually(lambda: _ready(custom, name), timeout=60, what="tenant Ready")
        home, ca = _ca_home(custom, name)

        def observed() -> tuple[dict[str, Any], str, str]:
            status = {k: v for k, v in _status(custom, name).items() if k not in ("conditions", "observedGeneration")}
            versions = (
                core.read_namespaced_secret(ca, home).metadata.resource_version,
                core.read_namespaced_secret("iotsec-app-meter-ingest-key", f"{name}-a").metadata.resource_version,
            )
            return status, *versions

        before = observed()
        generation = custom.patch_cluster_custom_object(
            GROUP, VERSION, "tenantisolations", name, {"spec": {"namespaces": [f"{name}-b", f"{name}-a"]}}
        )["metadata"]["generation"]
        eventually(
            lambda: _status(custom, name).get("observedGeneration") == generation, timeout=30, what="reorder seen"
        )
        assert observed() == before
        assert _ready(custom, name)


def test_a_flipped_tenant_label_is_a_conflict_that_changes_nothing_else(tenants, custom, core, api_client):
    with _own_tenant(custom, core, "f") as name:
        eventually(lambda: _ready(custom, name), timeout=60, what="tenant Ready")
        home, ca = _ca_home(custom, name)
        ca_version = core.read_namespaced_secret(ca, home).metadata.resource_version
        flipped = f"{name}-a"
        core.patch_namespace(flipped, {"metadata": {"labels": {"iotsec.io/tenant": OTHER}}})
        eventually(lambda: _condition(custom, name).get("reason") == "Conflict", timeout=30, what="Conflict")
        assert f"namespace {flipped} belongs to tenant {OTHER}" in _condition(custom, name)["message"]
        assert eventually(lambda: _events(core, name, "Conflict"), timeout=20, what="a Conflict warning")
        # the status written with the Conflict comes after the prune of the same pass: nothing was pruned
        rbac = client.RbacAuthorizationV1Api(api_client)
        core.read_namespaced_resource_quota("iotsec-tenant-quota", flipped)
        core.read_namespaced_config_map("iotsec-device-trust", flipped)
        rbac.read_namespaced_role_binding("iotsec-user-operators", flipped)
        rbac.read_namespaced_role("iotsec-app-class-ingest", flipped)
        assert core.read_namespace(flipped).metadata.labels["iotsec.io/tenant"] == OTHER, "no label overwrite"
        assert _ca_home(custom, name) == (home, ca)
        assert core.read_namespaced_secret(ca, home).metadata.resource_version == ca_version, "no new CA"
        assert not [s for s in core.list_namespaced_secret(flipped).items if "device-ca" in s.metadata.name]


def test_the_release_namespace_is_never_adopted(tenants, custom, core, api_client):
    with _own_tenant(custom, core, "n", namespaces=[f"n{SUFFIX}-a", RELEASE]) as name:
        eventually(lambda: _condition(custom, name).get("reason") == "Conflict", timeout=60, what="Conflict")
        assert f"namespace {RELEASE} is reserved" in _condition(custom, name)["message"]
        assert "iotsec.io/tenant" not in (core.read_namespace(RELEASE).metadata.labels or {})
        assert _gone(lambda: core.read_namespaced_resource_quota("iotsec-tenant-quota", RELEASE))
        rbac = client.RbacAuthorizationV1Api(api_client)
        assert _gone(lambda: rbac.read_namespaced_role_binding("iotsec-user-operators", RELEASE))


@pytest.mark.parametrize(
    ("secret", "damage"),
    [
        ("iotsec-app-meter-ingest-key", {"key": "not a key"}),
        ("iotsec-device-ca-{name}", {"ca.key": "not a key"}),
    ],
    ids=["app-key", "device-ca"],
)
def test_an_unreadable_key_is_left_alone_until_a_person_names_it(tenants, custom, core, secret, damage):
    with _own_tenant(custom, core, "u") as name:
        eventually(lambda: _ready(custom, name), timeout=60, what="tenant Ready")
        namespace = _ca_home(custom, name)[0] if "device-ca" in secret else f"{name}-a"
        secret = secret.format(name=name)
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in damage.items()}
        core.patch_namespaced_secret(secret, namespace, {"data": encoded})
        damaged = _secret_data(core, secret, namespace)
        ref = f"{namespace}/{secret}"
        eventually(lambda: _condition(custom, name).get("reason") == "KeyUnreadable", timeout=30, what="KeyUnreadable")
        assert f"Secret {ref}" in _condition(custom, name)["message"]
        assert "not a key" not in _condition(custom, name)["message"]
        assert eventually(lambda: _events(core, name, "KeyUnreadable"), timeout=20, what="a KeyUnreadable warning")
        generation = _status(custom, name)["observedGeneration"]
        custom.patch_cluster_custom_object(GROUP, VERSION, "tenantisolations", name, {"spec": {"quota": {"pods": 4}}})
        eventually(lambda: _status(custom, name)["observedGeneration"] > generation, timeout=30, what="reconciled")
        assert _secret_data(core, secret, namespace) == damaged, "neither rotated nor overwritten"

        annotation = {"metadata": {"annotations": {"iotsec.io/replace-unreadable-keys": ref}}}
        custom.patch_cluster_custom_object(GROUP, VERSION, "tenantisolations", name, annotation)
        eventually(lambda: _ready(custom, name), timeout=30, what="Ready again after the replacement")
        assert _secret_data(core, secret, namespace) != damaged
        assert eventually(lambda: _events(core, name, "KeyReplaced"), timeout=20, what="a KeyReplaced warning")


def test_a_device_ca_at_the_old_home_moves_to_the_release_namespace_unchanged(tenants, custom, core):
    """Older releases kept the CA in the tenant's first namespace, in reach of its admins: moved, not reissued."""
    from iotsec.model.labels import owner_labels
    from iotsec.pki.devices import ensure_device_ca

    name = f"m{SUFFIX}"
    home = f"{name}-a"
    state, _ = ensure_device_ca(None, name, "ecdsa-p256", timedelta(days=1825), timedelta(days=180), datetime.now(UTC))
    data = {k: base64.b64encode(v.encode()).decode() for k, v in state.to_secret_data().items()}
    core.create_namespace({"metadata": {"name": home}})
    legacy = {"metadata": {"name": "iotsec-device-ca", "labels": owner_labels("TenantIsolation", name)}, "data": data}
    core.create_namespaced_secret(home, legacy)
    with _own_tenant(custom, core, "m", namespaces=[home, f"{name}-b"]):
        release, secret = _ca_home(custom, name)
        assert core.read_namespaced_secret(secret, release).data == data, "copied, not reissued"
        eventually(
            lambda: _gone(lambda: core.read_namespaced_secret("iotsec-device-ca", home)), timeout=30, what="old gone"
        )
        moved = eventually(lambda: _events(core, name, "KeyMigrated", "Normal"), timeout=20, what="KeyMigrated")
        assert any(f"{home}/iotsec-device-ca" in m and f"{release}/{secret}" in m for m in moved)
        trust = core.read_namespaced_config_map("iotsec-device-trust", f"{name}-b").data
        assert state.ca.cert_pem in trust["ca-bundle.crt"]


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
