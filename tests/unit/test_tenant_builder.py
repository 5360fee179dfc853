"""The TenantIsolation builder: namespaces, bounds, RBAC by class, application identities, key objects."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from iotsec.api.tenantisolation import SYSTEM_NAMESPACES, TenantIsolationSpec
from iotsec.build.tenant import (
    PLACEHOLDER,
    app_id,
    plan_tenant,
    privilege_rules,
)
from iotsec.model.labels import TENANT_LABEL
from iotsec.model.platform import RESERVED_NAMESPACES, Platform
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


def test_a_flipped_tenant_label_holds_what_the_tenant_has_there_and_moves_no_key(acme):
    """Relabelling a namespace for another tenant must not let the operator prune the tenant's walls there."""
    flipped = plan_tenant("acme-utilities", spec(), {"acme-meters": {TENANT_LABEL: "globex"}})
    held = {(o["kind"], o["metadata"]["name"]) for o in flipped.held}
    assert {("ResourceQuota", "iotsec-tenant-quota"), ("RoleBinding", "iotsec-user-operators")} <= held
    assert ("ConfigMap", "iotsec-device-trust") in held
    assert ("Secret", "iotsec-app-meter-ingest-key") in held
    assert all(o["metadata"].get("namespace") == "acme-meters" for o in flipped.held)
    assert {("acme-meters", "iotsec-tenant-quota"), ("acme-meters", "iotsec-user-operators")} <= flipped.keep
    assert ("Namespace", "acme-meters") not in held, "its labels are not overwritten"
    assert (flipped.device_ca, flipped.device_registry) == (acme.device_ca, acme.device_registry)


def test_reserved_namespaces_are_never_adopted():
    plan = plan_tenant("acme-utilities", spec(namespaces=["acme-meters", "kube-system", "iotsec-system"]), {})
    assert plan.namespaces == ["acme-meters"]
    assert plan.conflicts == [
        "namespace iotsec-system is reserved for the platform and never adopted by a tenant",
        "namespace kube-system is reserved for the platform and never adopted by a tenant",
    ]
    touched = {o["metadata"].get("namespace") or o["metadata"]["name"] for o in plan.objects + plan.held}
    assert not touched & {"kube-system"}
    assert all(o["kind"] != "Namespace" or o["metadata"]["name"] == "acme-meters" for o in plan.objects)
    assert not [o for o in plan.objects if o["metadata"].get("namespace") == "iotsec-system" and o["kind"] != "Secret"]


def test_the_schema_refuses_the_same_system_namespaces_the_platform_reserves():
    assert set(SYSTEM_NAMESPACES) == set(RESERVED_NAMESPACES)


def test_reordering_the_namespaces_changes_nothing(acme):
    reordered = plan_tenant("acme-utilities", spec(namespaces=["acme-analytics", "acme-meters"]), {})
    assert {yaml.safe_dump(o) for o in reordered.objects} == {yaml.safe_dump(o) for o in acme.objects}
    assert (reordered.namespaces, reordered.device_ca, reordered.keep) == (acme.namespaces, acme.device_ca, acme.keep)


def test_platform_keys_live_in_the_release_namespace_out_of_tenant_reach():
    plan = plan_tenant("globex-fleet", spec("globex-fleet"), {}, Platform(namespace="platform-x"))
    assert plan.device_ca == ("platform-x", "iotsec-device-ca-globex")
    assert plan.volume_key == ("platform-x", "iotsec-volume-key-globex")
    assert plan.device_registry == ("platform-x", "iotsec-device-registry-globex")
    secrets = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects(plan, "Secret")}
    assert {plan.device_ca, plan.volume_key} <= secrets
    tenant_namespaces = set(spec("globex-fleet").namespaces)
    assert not {ns for ns, name in secrets if "device-ca" in name or "volume-key" in name} & tenant_namespaces


def test_a_recorded_key_home_is_kept_whatever_the_release_namespace_is_now():
    plan = plan_tenant("globex-fleet", spec("globex-fleet"), {}, Platform(namespace="new-home"), key_namespace="old")
    assert plan.device_ca == ("old", "iotsec-device-ca-globex")
    assert plan.volume_key == ("old", "iotsec-volume-key-globex")


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
    assert bindings["iotsec-user-auditors"]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "iotsec-user-auditors",
    }


@pytest.mark.parametrize(("user_class", "privilege"), [("admins", "admin"), ("operators", "operator")])
def test_built_in_classes_bind_the_charts_cluster_role_and_get_no_role(user_class, privilege):
    plan = plan_tenant("acme-utilities", spec(), {}, Platform(prefix="rel"))
    bindings = {o["metadata"]["name"]: o for o in objects(plan, "RoleBinding", "acme-meters")}
    assert bindings[f"iotsec-user-{user_class}"]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": f"rel-tenant-{privilege}",
    }
    assert f"iotsec-user-{user_class}" not in {o["metadata"]["name"] for o in objects(plan, "Role")}


@pytest.mark.parametrize("privilege", ["viewer", "operator", "admin"])
def test_no_class_may_write_network_policies(privilege):
    """A tenant's allow-all NetworkPolicy would void the domain's default deny."""
    for rule in privilege_rules(privilege):
        if "networkpolicies" in rule["resources"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}
    assert any("networkpolicies" in r["resources"] for r in privilege_rules(privilege)), "but they may read them"


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
    assert {s["metadata"]["name"] for s in secrets} >= {"iotsec-device-ca-acme", "iotsec-app-meter-ingest-key"}
    for secret in secrets:
        assert set(secret["stringData"].values()) == {PLACEHOLDER}  # under the operator's keys (render ≡ live)
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
        assert params[f"csi.storage.k8s.io/{stage}-secret-name"] == "iotsec-volume-key-globex"
        assert params[f"csi.storage.k8s.io/{stage}-secret-namespace"] == "iotsec-system", "the release namespace"
    assert plan.storage_class == "iotsec-globex-encrypted"


def test_a_shared_encrypted_class_is_used_as_named(acme):
    assert acme.storage_class == "encrypted-ssd"
    assert objects(acme, "StorageClass") == []


def test_rendering_is_deterministic():
    assert yaml.safe_dump(plan_tenant("acme-utilities", spec(), {}).objects) == yaml.safe_dump(
        plan_tenant("acme-utilities", spec(), {}).objects
    )
