"""The TenantIsolation builder: namespaces, bounds, RBAC by class, application identities, key objects."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from iotsec.api.tenantisolation import TenantIsolationSpec
from iotsec.desired.tenant import (
    DEVICE_CA_SECRET,
    PLACEHOLDER,
    TENANT_LABEL,
    VOLUME_KEY_SECRET,
    app_id,
    plan_tenant,
    privilege_rules,
)
from tests.conftest import load_examples

TENANTS = {d["metadata"]["name"]: d for d in load_examples() if d["kind"] == "TenantIsolation"}


def spec(name: str = "acme-utilities", **changes) -> TenantIsolationSpec:
    body = copy.deepcopy(TENANTS[name]["spec"])
    body.update(changes)
    return TenantIsolationSpec.model_validate(body)


def objects(plan, kind: str, namespace: str | None = None) -> list[dict]:
    return [o for o in plan.objects if o["kind"] == kind and namespace in (None, o["metadata"].get("namespace"))]


@pytest.fixture(scope="module")
def acme():
    return plan_tenant("acme-utilities", spec(), {})


def test_every_object_is_valid_kubernetes(acme):
    version = kubernetes_validate.latest_version()
    for name in TENANTS:
        for obj in plan_tenant(name, spec(name), {}).objects:
            kubernetes_validate.validate(obj, version, strict=True)


def test_namespaces_carry_the_tenant_and_the_domain_they_join(acme):
    namespaces = {o["metadata"]["name"]: o["metadata"]["labels"] for o in objects(acme, "Namespace")}
    assert set(namespaces) == {"acme-meters", "acme-analytics"}
    for labels in namespaces.values():
        assert labels[TENANT_LABEL] == "acme"
        assert labels["iotsec.io/security-domain"] == "ingestion"
        assert labels["app.kubernetes.io/managed-by"] == "iotsec"


def test_a_namespace_of_another_tenant_is_not_adopted():
    plan = plan_tenant("acme-utilities", spec(), {"acme-meters": {TENANT_LABEL: "globex"}})
    assert plan.namespaces == ["acme-analytics"]
    assert plan.conflicts == ["namespace acme-meters belongs to tenant globex"]
    assert all(
        o["metadata"].get("namespace") != "acme-meters" and o["metadata"]["name"] != "acme-meters" for o in plan.objects
    )


def test_quota_and_limits_follow_the_spec_and_defaults(acme):
    quota = objects(acme, "ResourceQuota", "acme-meters")[0]["spec"]["hard"]
    assert quota["limits.cpu"] == "16"
    assert quota["limits.memory"] == "32Gi"
    assert quota["services.loadbalancers"] == "0", "default: no LoadBalancer unless the domain is exposed"
    limits = objects(acme, "LimitRange", "acme-meters")[0]["spec"]["limits"][0]
    assert limits["default"] == {"cpu": "250m", "memory": "256Mi"}
    assert limits["defaultRequest"] == {"cpu": "100m", "memory": "128Mi"}


def test_user_classes_become_roles_bound_to_their_groups(acme):
    roles = {o["metadata"]["name"]: o for o in objects(acme, "Role", "acme-meters")}
    bindings = {o["metadata"]["name"]: o for o in objects(acme, "RoleBinding", "acme-meters")}
    assert bindings["iotsec-user-operators"]["subjects"] == [
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "acme:operators"}
    ]
    assert roles["iotsec-user-auditors"]["rules"] == [
        {"apiGroups": [""], "resources": ["events", "pods"], "verbs": ["get", "list", "watch"]}
    ]


@pytest.mark.parametrize(
    ("privilege", "secrets", "writes"), [("viewer", False, False), ("operator", False, True), ("admin", True, True)]
)
def test_privileges(privilege, secrets, writes):
    rules = privilege_rules(privilege)
    verbs = {v for r in rules for v in r["verbs"]}
    resources = {res for r in rules for res in r["resources"]}
    assert ("secrets" in resources) is secrets
    assert ("delete" in verbs) is writes
    assert not verbs & {"escalate", "bind", "impersonate", "*"}
    assert not resources & {"roles", "rolebindings", "pods/exec", "*"}


def test_no_cluster_wide_rbac_is_ever_created():
    for name in TENANTS:
        kinds = {o["kind"] for o in plan_tenant(name, spec(name), {}).objects}
        assert not kinds & {"ClusterRole", "ClusterRoleBinding"}


def test_each_application_gets_an_identity_a_scoped_role_and_a_key_secret(acme):
    account = next(o for o in objects(acme, "ServiceAccount") if o["metadata"]["name"] == "meter-ingest")
    assert account["metadata"]["namespace"] == "acme-meters"
    assert account["metadata"]["labels"]["iotsec.io/app-id"] == "acme.meter-ingest"
    assert account["automountServiceAccountToken"] is True, "its class has rules: it calls the API"
    binding = next(o for o in objects(acme, "RoleBinding") if o["metadata"]["name"] == "iotsec-app-meter-ingest")
    assert binding["roleRef"]["name"] == "iotsec-app-class-ingest"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "meter-ingest", "namespace": "acme-meters"}]
    assert ("acme-meters", "iotsec-app-meter-ingest-key") in acme.key_secrets
    assert acme.app_ids == {"meter-ingest": "acme.meter-ingest", "billing-export": "acme.billing-export"}


def test_app_ids_are_unique_across_tenants():
    ids = [i for name in TENANTS for i in plan_tenant(name, spec(name), {}).app_ids.values()]
    assert len(ids) == len(set(ids))
    assert app_id("acme", "x") != app_id("globex", "x")


def test_key_material_is_never_rendered(acme):
    secrets = objects(acme, "Secret")
    assert {s["metadata"]["name"] for s in secrets} >= {DEVICE_CA_SECRET, "iotsec-app-meter-ingest-key"}
    for secret in secrets:
        assert secret["stringData"] == {"placeholder": PLACEHOLDER}
        assert "data" not in secret
    assert "BEGIN" not in yaml.safe_dump(acme.objects)


def test_device_trust_bundle_in_every_namespace(acme):
    assert {o["metadata"]["namespace"] for o in objects(acme, "ConfigMap")} == {"acme-meters", "acme-analytics"}


def test_a_provisioner_gets_a_per_tenant_encrypted_storage_class_with_its_volume_key():
    plan = plan_tenant("globex-fleet", spec("globex-fleet"), {})
    (storage_class,) = objects(plan, "StorageClass")
    assert storage_class["metadata"]["name"] == "iotsec-globex-encrypted"
    assert storage_class["metadata"]["labels"]["iotsec.io/encrypted"] == "true"
    assert storage_class["reclaimPolicy"] == "Retain"
    params = storage_class["parameters"]
    assert params["encrypted"] == "true"
    for stage in ("provisioner", "node-stage", "node-publish"):
        assert params[f"csi.storage.k8s.io/{stage}-secret-name"] == VOLUME_KEY_SECRET
        assert params[f"csi.storage.k8s.io/{stage}-secret-namespace"] == "globex-telematics"
    assert plan.storage_class == "iotsec-globex-encrypted"


def test_a_shared_encrypted_class_is_used_as_named(acme):
    assert acme.storage_class == "encrypted-ssd"
    assert objects(acme, "StorageClass") == []


def test_rendering_is_deterministic():
    assert yaml.safe_dump(plan_tenant("acme-utilities", spec(), {}).objects) == yaml.safe_dump(
        plan_tenant("acme-utilities", spec(), {}).objects
    )
