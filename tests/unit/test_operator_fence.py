"""The fence around iotsec's own operator identity: the webhook's guard and the chart's ValidatingAdmissionPolicy.

Both are replayed with the escapes a stolen operator token would try (several found by review: label a namespace
into a domain then bind there, mint a token, run a CronJob as a powerful ServiceAccount, take over the default
StorageClass, bind a Role to anyone in the release namespace). The policy may only ever be weaker than the webhook
(it cannot see the custom resources), never stricter, and both refuse the name-based escapes alike.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import celpy
import pytest

from iotsec.admission.guard import confine_operator
from iotsec.admission.snapshot import snapshot_from_objects
from iotsec.build.securitydomain import Domain, namespace_labels
from iotsec.model.platform import Platform
from iotsec.servers.webhook.review import review
from tests.chart.test_chart import FENCE_POLICY_FLAGS, render

PLATFORM = Platform("iotsec-system", "iotsec", "iotsec-operator")
OPERATOR = PLATFORM.operator_user
SINK = {"kind": "ServiceAccount", "name": "iotsec-audit-sink", "namespace": "iotsec-system"}
DOMAIN = {
    "apiVersion": "iotsec.io/v1alpha1",
    "kind": "SecurityDomain",
    "metadata": {"name": "ingest"},
    "spec": {"zone": "core", "namespaceSelector": {"matchLabels": {"iotsec.io/security-domain": "ingest"}}},
}
TENANT = {
    "apiVersion": "iotsec.io/v1alpha1",
    "kind": "TenantIsolation",
    "metadata": {"name": "acme-ti"},
    "spec": {"tenantID": "acme", "securityDomain": "ingest", "namespaces": ["acme-meters", "acme-new"]},
}
BACKUP = {
    "apiVersion": "iotsec.io/v1alpha1",
    "kind": "BackupPolicy",
    "metadata": {"name": "tsdb", "namespace": "backups"},
    "spec": {
        "schedule": "0 3 * * *",
        "pvcNames": ["data"],
        "targets": [{"name": "primary", "repository": "s3:https://s3.example.com/b/x"}],
    },
}


def namespace(name: str, created_by: str | None = None, **labels: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if created_by:
        metadata["annotations"] = {"iotsec.io/created-by": created_by}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}


SNAPSHOT = snapshot_from_objects(
    [
        DOMAIN,
        TENANT,
        BACKUP,
        namespace("acme-meters", **{"iotsec.io/security-domain": "ingest", "iotsec.io/tenant": "acme"}),
        namespace("monitoring"),
        namespace("argocd"),
        namespace("backups"),
        namespace("kube-system"),
    ],
    platform=PLATFORM,
)
INGEST_LABELS = dict(namespace_labels(Domain("ingest", SNAPSHOT.domains[0].spec, "")))


def binding(ns: str, ref_kind: str = "ClusterRole", ref: str = "admin", subjects: list | None = None) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "escape", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": ref_kind, "name": ref},
        "subjects": subjects or [{"kind": "ServiceAccount", "name": "iotsec-operator", "namespace": "iotsec-system"}],
    }


def guard(kind: str, operation: str, ns: str | None, obj: Any, old: Any = None, user: str = OPERATOR) -> list[str]:
    return [f.message for f in confine_operator(user, kind, operation, ns, obj, old, PLATFORM, SNAPSHOT.managed)]


@pytest.mark.parametrize("target", ["kube-system", "kube-public", "kube-node-lease", "default"])
def test_the_operator_cannot_bind_itself_in_a_reserved_namespace(target):
    assert guard("RoleBinding", "CREATE", target, binding(target)) == [
        f"namespace {target} is reserved: iotsec never writes there"
    ]
    assert guard("RoleBinding", "CREATE", target, binding(target, "ClusterRole", "iotsec-operator-namespace"))


def test_in_the_release_namespace_only_a_sinks_canary_grant():
    canary = binding("iotsec-system", "Role", "iotsec-audit-sink-canary-main", [SINK])
    assert guard("RoleBinding", "CREATE", "iotsec-system", canary) == []
    assert guard("RoleBinding", "CREATE", "iotsec-system", binding("iotsec-system"))
    mallory = [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]
    leak = binding("iotsec-system", "Role", "iotsec-operator", mallory)
    assert guard("RoleBinding", "CREATE", "iotsec-system", leak), "a Role reading every platform key, for mallory"
    assert guard("RoleBinding", "CREATE", "iotsec-system", {**canary, "subjects": [SINK, *mallory]})
    role = {"kind": "Role", "metadata": {"name": "iotsec-audit-sink-canary-main", "namespace": "iotsec-system"}}
    good = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "patch"], "resourceNames": ["c"]}]
    assert guard("Role", "CREATE", "iotsec-system", {**role, "rules": good}) == []
    secrets = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    assert guard("Role", "CREATE", "iotsec-system", {**role, "rules": secrets})
    assert guard("Role", "CREATE", "acme-meters", {**role, "rules": secrets}) == [], "RBAC bounds it there"


def test_only_namespaces_iotsec_manages():
    assert "not managed by iotsec" in guard("RoleBinding", "CREATE", "monitoring", binding("monitoring"))[0]
    for managed in ("acme-meters", "backups"):
        assert guard("RoleBinding", "CREATE", managed, binding(managed)) == []
    assert guard("RoleBinding", "DELETE", "monitoring", None, binding("monitoring"))
    own = binding("monitoring")
    own["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "iotsec"}
    assert guard("RoleBinding", "DELETE", "monitoring", None, own) == [], "pruning where it no longer works"
    assert guard("RoleBinding", "DELETE", "kube-system", None, {**own, "metadata": {**own["metadata"]}})


def test_other_users_are_left_to_rbac():
    assert guard("RoleBinding", "CREATE", "kube-system", binding("kube-system"), user="admin") == []
    assert guard("RoleBinding", "CREATE", "kube-system", binding("kube-system"), user=OPERATOR + "x") == []


def test_label_a_namespace_into_a_domain_then_bind_is_refused():
    """Review finding: the claim label a domain selects on was settable anywhere, and then the grant followed."""
    claimed = namespace("argocd", **{"iotsec.io/security-domain": "ingest"})
    assert (
        "no TenantIsolation lists namespace argocd"
        in guard("Namespace", "UPDATE", "argocd", claimed, namespace("argocd"))[0]
    )
    domain_only = namespace("argocd", **INGEST_LABELS)
    assert guard("Namespace", "UPDATE", "argocd", domain_only, namespace("argocd")), "no domain holds argocd"
    privileged = namespace("argocd", **{"pod-security.kubernetes.io/enforce": "privileged"})
    assert guard("Namespace", "UPDATE", "argocd", privileged, namespace("argocd")), "PSA off for everyone there"


def test_tenant_and_domain_labels_only_as_the_specs_say():
    old = namespace("acme-meters", **{"iotsec.io/security-domain": "ingest", "iotsec.io/tenant": "acme"})
    member = namespace(
        "acme-meters", **{"iotsec.io/security-domain": "ingest", "iotsec.io/tenant": "acme"}, **INGEST_LABELS
    )
    assert guard("Namespace", "UPDATE", "acme-meters", member, old) == [], "the domain handler's own labels"
    weakened = namespace(
        "acme-meters", **{**member["metadata"]["labels"], "pod-security.kubernetes.io/enforce": "privileged"}
    )
    assert "prescribes restricted" in guard("Namespace", "UPDATE", "acme-meters", weakened, member)[0]
    stripped = {k: v for k, v in member["metadata"]["labels"].items() if k != "pod-security.kubernetes.io/enforce"}
    assert guard("Namespace", "UPDATE", "acme-meters", namespace("acme-meters", **stripped), member)
    globex = namespace("acme-meters", **{"iotsec.io/security-domain": "ingest", "iotsec.io/tenant": "globex"})
    assert "says acme" in guard("Namespace", "UPDATE", "acme-meters", globex, old)[0]
    foreign = namespace("acme-meters", team="b", **old["metadata"]["labels"])
    assert guard("Namespace", "UPDATE", "acme-meters", foreign, old)
    left = namespace("monitoring")
    was = namespace("monitoring", **INGEST_LABELS)
    assert guard("Namespace", "UPDATE", "monitoring", left, was) == [], "a namespace that left its domain is cleaned"


def test_namespaces_are_created_only_for_the_tenant_that_lists_them():
    new = namespace("acme-new", "acme-ti", **{"iotsec.io/tenant": "acme", "iotsec.io/security-domain": "ingest"})
    assert guard("Namespace", "CREATE", "acme-new", new) == []
    assert guard("Namespace", "CREATE", "rogue", namespace("rogue", "acme-ti", **{"iotsec.io/tenant": "acme"}))
    assert guard("Namespace", "CREATE", "acme-new", namespace("acme-new", "someone-else"))
    assert guard("Namespace", "CREATE", "kube-node-lease", namespace("kube-node-lease"))


def test_deletion_only_of_namespaces_a_tenant_created():
    made = namespace("acme-meters", "acme-ti", **{"iotsec.io/tenant": "acme"})
    assert guard("Namespace", "DELETE", "acme-meters", None, made) == []
    adopted = namespace("acme-meters", **{"iotsec.io/tenant": "acme"})
    assert guard("Namespace", "DELETE", "acme-meters", None, adopted), "an adopted namespace is never deleted"
    assert guard("Namespace", "DELETE", "monitoring", None, namespace("monitoring"))
    assert guard("Namespace", "DELETE", "iotsec-system", None, namespace("iotsec-system"))
    forged = namespace("acme-meters", "acme-ti", **{"iotsec.io/tenant": "acme"})
    assert "set only when iotsec creates" in guard("Namespace", "UPDATE", "acme-meters", forged, adopted)[0]


def test_no_token_minting_and_cronjobs_run_as_their_own_backup_account():
    token = {
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "t", "annotations": {"kubernetes.io/service-account.name": "powerful"}},
    }
    assert guard("Secret", "CREATE", "acme-meters", token)
    assert guard("Secret", "CREATE", "acme-meters", {**token, "type": "Opaque"}), "the annotation alone mints one"
    assert (
        guard("Secret", "CREATE", "acme-meters", {"kind": "Secret", "type": "Opaque", "metadata": {"name": "k"}}) == []
    )

    def cron(account: str, automount: bool | None = False) -> dict:
        pod = {"serviceAccountName": account, "containers": []}
        if automount is not None:
            pod["automountServiceAccountToken"] = automount
        return {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": pod}}}}}

    assert guard("CronJob", "CREATE", "backups", cron("iotsec-backup-tsdb")) == []
    assert guard("CronJob", "CREATE", "backups", cron("powerful"))
    assert guard("CronJob", "CREATE", "backups", cron("iotsec-backup-tsdb", None)), "with a token it could act"


def test_storage_classes_only_the_tenants_own_never_the_default():
    def storage_class(**annotations: str) -> dict:
        return {
            "kind": "StorageClass",
            "metadata": {
                "name": "iotsec-acme-encrypted",
                "labels": {"app.kubernetes.io/managed-by": "iotsec", "iotsec.io/tenant": "acme"},
                "annotations": annotations,
            },
            "parameters": {"csi.storage.k8s.io/node-stage-secret-namespace": "iotsec-system"},
        }

    assert guard("StorageClass", "CREATE", None, storage_class()) == []
    assert guard(
        "StorageClass", "CREATE", None, storage_class(**{"storageclass.kubernetes.io/is-default-class": "true"})
    )
    elsewhere = storage_class()
    elsewhere["parameters"] = {"csi.storage.k8s.io/node-stage-secret-namespace": "kube-system"}
    assert guard("StorageClass", "UPDATE", None, elsewhere, storage_class())
    foreign = {"kind": "StorageClass", "metadata": {"name": "encrypted-ssd"}}
    assert guard("StorageClass", "DELETE", None, None, foreign), "never someone else's class"
    assert guard("StorageClass", "DELETE", None, None, storage_class()) == []


def test_the_operator_may_patch_metadata_but_not_specs_of_custom_resources():
    old = {"kind": "TenantIsolation", "metadata": {"name": "t"}, "spec": {"namespaces": ["a"]}}
    annotated = {**old, "metadata": {"name": "t", "annotations": {"kopf": "x"}}}
    assert guard("TenantIsolation", "UPDATE", None, annotated, old) == []
    widened = {**old, "spec": {"namespaces": ["a", "monitoring"]}}
    assert guard("TenantIsolation", "UPDATE", None, widened, old)


# ---------------------------------------------------------------- through the webhook's AdmissionReview path


def _review(kind: str, operation: str, ns: str | None, obj: Any, old: Any = None, user: str = OPERATOR) -> dict:
    request = {
        "uid": "u1",
        "kind": {"group": "", "version": "v1", "kind": kind},
        "operation": operation,
        "namespace": ns,
        "object": obj,
        "oldObject": old,
        "userInfo": {"username": user, "groups": ["system:serviceaccounts"]},
    }
    body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
    outcome = review(body.encode(), SNAPSHOT, lambda: datetime.now(UTC))
    assert outcome.status == 200
    return outcome.body["response"]


def test_the_webhook_denies_the_escape_with_the_control_id():
    response = _review("RoleBinding", "CREATE", "kube-system", binding("kube-system"))
    assert response["allowed"] is False
    assert "X1369-9.6.3-1 operator-confinement" in response["status"]["message"]
    assert "violations" in response["auditAnnotations"]


def test_the_webhook_answers_deletes_and_allows_what_iotsec_manages():
    assert _review("Namespace", "DELETE", "monitoring", None, namespace("monitoring"))["allowed"] is False
    assert _review("RoleBinding", "CREATE", "acme-meters", binding("acme-meters", "Role", "x"))["allowed"] is True
    assert _review("RoleBinding", "CREATE", "kube-system", binding("kube-system"), user="admin")["allowed"] is True


# ---------------------------------------------------------------- the chart's ValidatingAdmissionPolicy


@pytest.fixture(scope="module")
def fence(tmp_path_factory) -> dict[str, Any]:
    docs = render(tmp_path_factory.mktemp("fence"), None, *FENCE_POLICY_FLAGS)
    (policy,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    return policy["spec"]


def _cel(expression: str, activation: dict[str, Any]) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(expression)).evaluate(activation)


def vap_denies(spec: dict[str, Any], resource: str, operation: str, ns: str, obj: Any, old: Any, user: str) -> bool:
    request = {
        "resource": {"resource": resource},
        "operation": operation,
        "namespace": "" if resource == "namespaces" else ns,
        "name": ns if resource == "namespaces" else "escape",
        "userInfo": {"username": user},
    }
    activation: dict[str, Any] = {
        "request": celpy.json_to_cel(request),
        "object": celpy.json_to_cel(obj),
        "oldObject": celpy.json_to_cel(old),
    }
    if not all(bool(_cel(c["expression"], activation)) for c in spec["matchConditions"]):
        return False
    variables: dict[str, Any] = {}
    for variable in spec["variables"]:  # each variable may use the ones before it
        activation["variables"] = celpy.celtypes.MapType(
            {celpy.celtypes.StringType(k): v for k, v in variables.items()}
        )
        variables[variable["name"]] = _cel(variable["expression"], activation)
    activation["variables"] = celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in variables.items()})
    return not all(bool(_cel(v["expression"], activation)) for v in spec["validations"])


SA_TOKEN = {"kind": "Secret", "type": "kubernetes.io/service-account-token", "metadata": {"name": "t"}}
DEFAULT_CLASS = {
    "kind": "StorageClass",
    "metadata": {
        "name": "iotsec-acme-encrypted",
        "labels": {"app.kubernetes.io/managed-by": "iotsec", "iotsec.io/tenant": "acme"},
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
    },
}
TENANT_CLASS = {**DEFAULT_CLASS, "metadata": {**DEFAULT_CLASS["metadata"], "annotations": {}}}


def cronjob(account: str) -> dict:
    pod = {"serviceAccountName": account, "automountServiceAccountToken": False, "containers": []}
    return {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": pod}}}}}


# (resource, operation, namespace, object, old object, the policy decides it alone: it must agree with the webhook)
CASES = [
    ("rolebindings", "CREATE", "kube-system", binding("kube-system"), None, True),
    ("rolebindings", "CREATE", "default", binding("default", "ClusterRole", "iotsec-operator-namespace"), None, True),
    ("rolebindings", "CREATE", "iotsec-system", binding("iotsec-system"), None, True),
    (
        "rolebindings",
        "CREATE",
        "iotsec-system",
        binding("iotsec-system", "Role", "iotsec-audit-sink-canary-a", [SINK]),
        None,
        True,
    ),
    ("rolebindings", "CREATE", "iotsec-system", binding("iotsec-system", "Role", "iotsec-operator"), None, True),
    # the audit namespace is iotsec's own like the release namespace: only the sinks' canary grants
    ("rolebindings", "CREATE", "iotsec-audit", binding("iotsec-audit"), None, True),
    (
        "rolebindings",
        "CREATE",
        "iotsec-audit",
        binding("iotsec-audit", "ClusterRole", "iotsec-operator-namespace"),
        None,
        True,
    ),
    (
        "rolebindings",
        "CREATE",
        "iotsec-audit",
        binding("iotsec-audit", "Role", "iotsec-audit-sink-canary-a", [{**SINK, "namespace": "iotsec-audit"}]),
        None,
        True,
    ),
    (
        "namespaces",
        "DELETE",
        "iotsec-audit",
        None,
        namespace("iotsec-audit", "a", **{"iotsec.io/tenant": "acme"}),
        True,
    ),
    ("rolebindings", "CREATE", "acme-meters", binding("acme-meters"), None, True),
    ("rolebindings", "CREATE", "monitoring", binding("monitoring"), None, False),
    ("namespaces", "UPDATE", "kube-system", namespace("kube-system", x="y"), namespace("kube-system"), True),
    (
        "namespaces",
        "UPDATE",
        "acme-meters",
        namespace("acme-meters", team="b"),
        namespace("acme-meters", team="a"),
        True,
    ),
    ("namespaces", "UPDATE", "acme-meters", namespace("acme-meters"), namespace("acme-meters", team="a"), True),
    (
        "namespaces",
        "UPDATE",
        "argocd",
        namespace("argocd", **{"iotsec.io/security-domain": "ingest"}),
        namespace("argocd"),
        False,
    ),
    ("namespaces", "UPDATE", "acme-meters", namespace("acme-meters", "acme-ti"), namespace("acme-meters"), True),
    ("namespaces", "UPDATE", "acme-meters", namespace("acme-meters"), namespace("acme-meters", "acme-ti"), True),
    ("namespaces", "CREATE", "kube-public", namespace("kube-public"), None, True),
    ("namespaces", "DELETE", "monitoring", None, namespace("monitoring"), True),
    ("namespaces", "DELETE", "kube-node-lease", None, namespace("kube-node-lease"), True),
    (
        "namespaces",
        "DELETE",
        "acme-meters",
        None,
        namespace("acme-meters", "acme-ti", **{"iotsec.io/tenant": "acme"}),
        True,
    ),
    ("namespaces", "DELETE", "acme-meters", None, namespace("acme-meters", **{"iotsec.io/tenant": "acme"}), True),
    ("secrets", "CREATE", "acme-meters", SA_TOKEN, None, True),
    ("secrets", "CREATE", "acme-meters", {**SA_TOKEN, "type": "Opaque"}, None, True),
    ("cronjobs", "CREATE", "backups", cronjob("powerful"), None, True),
    ("cronjobs", "CREATE", "backups", cronjob("iotsec-backup-tsdb"), None, True),
    ("storageclasses", "CREATE", "", DEFAULT_CLASS, None, True),
    ("storageclasses", "CREATE", "", TENANT_CLASS, None, True),
    ("storageclasses", "DELETE", "", None, {"kind": "StorageClass", "metadata": {"name": "encrypted-ssd"}}, True),
    ("storageclasses", "UPDATE", "", TENANT_CLASS, {"kind": "StorageClass", "metadata": {"name": "standard"}}, True),
    ("storageclasses", "UPDATE", "", TENANT_CLASS, TENANT_CLASS, True),
]
KINDS = {
    "rolebindings": "RoleBinding",
    "namespaces": "Namespace",
    "secrets": "Secret",
    "cronjobs": "CronJob",
    "storageclasses": "StorageClass",
}


@pytest.mark.parametrize(("resource", "operation", "ns", "obj", "old", "alone"), CASES)
def test_the_admission_policy_is_never_stricter_than_the_webhook(fence, resource, operation, ns, obj, old, alone):
    webhook = bool(guard(KINDS[resource], operation, ns or None, obj, old))
    policy = vap_denies(fence, resource, operation, ns, obj, old, OPERATOR)
    assert not policy or webhook, "the policy refuses what the webhook lets the operator do"
    if alone:
        assert policy == webhook, "a rule that needs only the request is in both"
    assert not vap_denies(fence, resource, operation, ns, obj, old, "system:serviceaccount:kube-system:other")


# ---------------------------------------------------------------- iotsec's ConfigMaps keep their content


def _trust(crl: str, managed: bool = True) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "iotsec"} if managed else {}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "iotsec-device-trust", "namespace": "acme-meters", "labels": labels},
        "data": {"ca-bundle.crt": "CA", "crl.pem": crl},
    }


def _review_as(user: str, groups: list[str], obj: Any, old: Any) -> dict:
    request = {
        "uid": "u1",
        "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "operation": "UPDATE",
        "namespace": "acme-meters",
        "object": obj,
        "oldObject": old,
        "userInfo": {"username": user, "groups": groups},
    }
    body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
    outcome = review(body.encode(), SNAPSHOT, lambda: datetime.now(UTC))
    assert outcome.status == 200
    return outcome.body["response"]


def test_a_tenant_cannot_swap_the_trust_bundle_or_crl_its_brokers_trust():
    """Review finding: tenant operators may edit ConfigMaps in their namespace, the device trust bundle included."""
    tenant = ("mallory", ["acme:operators", "system:authenticated"])
    swapped = _review_as(*tenant, _trust("an empty CRL"), _trust("CRL revoking device 7"))
    assert swapped["allowed"] is False
    assert "X1369-9.1.1.3-3 managed-object-integrity" in swapped["status"]["message"]
    disowned = _review_as(*tenant, _trust("CRL revoking device 7", managed=False), _trust("CRL revoking device 7"))
    assert disowned["allowed"] is False, "dropping iotsec's label would make it the tenant's"
    annotated = _trust("CRL revoking device 7")
    annotated["metadata"]["annotations"] = {"team": "x"}
    assert _review_as(*tenant, annotated, _trust("CRL revoking device 7"))["allowed"] is True, "metadata only"
    assert _review_as(OPERATOR, [], _trust("new CRL"), _trust("old CRL"))["allowed"] is True
    assert _review_as("admin", ["system:masters"], _trust("new CRL"), _trust("old CRL"))["allowed"] is True
    own = _review_as(*tenant, _trust("x", managed=False), _trust("y", managed=False))
    assert own["allowed"] is True, "the tenant's own ConfigMaps are the tenant's"


def test_the_operators_own_labels_never_decide_membership():
    """Second review: a domain selecting on a label the operator writes (zone), or a namespace claimed by two
    domains, let the operator's label decide which domain holds a namespace: label, then join, then bind."""
    zone_domain = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {"name": "edge", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"zone": "access", "namespaceSelector": {"matchLabels": {"iotsec.io/zone": "access"}}},
    }
    snapshot = snapshot_from_objects([zone_domain, namespace("payments")], platform=PLATFORM)
    labels = dict(namespace_labels(Domain("edge", snapshot.domains[0].spec, "")))
    found = confine_operator(
        OPERATOR,
        "Namespace",
        "UPDATE",
        "payments",
        namespace("payments", **labels),
        namespace("payments"),
        PLATFORM,
        snapshot.managed,
    )
    assert found, "the zone label it writes would have made payments a member"
    assert not snapshot.managed.manages("payments")


def test_a_holder_cannot_be_moved_by_writing_the_other_domains_label():
    first = {**DOMAIN, "metadata": {"name": "ingest", "creationTimestamp": "2026-01-01T00:00:00Z"}}
    second = {
        **DOMAIN,
        "metadata": {"name": "other", "creationTimestamp": "2026-02-01T00:00:00Z"},
        "spec": {**DOMAIN["spec"], "zone": "access"},
    }
    shared = {"iotsec.io/security-domain": "ingest"}
    snapshot = snapshot_from_objects([first, second, namespace("both", **shared)], platform=PLATFORM)
    held = dict(namespace_labels(Domain("ingest", snapshot.domains[0].spec, "")))
    other = dict(namespace_labels(Domain("other", snapshot.domains[1].spec, "")))
    old = namespace("both", **shared, **held)

    def verdict(new: dict) -> list:
        return confine_operator(OPERATOR, "Namespace", "UPDATE", "both", new, old, PLATFORM, snapshot.managed)

    assert verdict(namespace("both", **shared, **other)), "moving it to the other domain by its own write"
    assert verdict(namespace("both", **shared, **held, **{"iotsec.io/owner-name": "x"})) != []  # not a tenant's


def test_a_storage_class_iotsec_did_not_make_cannot_be_claimed_then_deleted():
    """Second review: relabelling the cluster's default class as iotsec's let the operator take it over."""
    standard = {"kind": "StorageClass", "metadata": {"name": "standard", "labels": {}}}
    claimed = {
        "kind": "StorageClass",
        "metadata": {"name": "standard", "labels": {"app.kubernetes.io/managed-by": "iotsec", "iotsec.io/tenant": "x"}},
    }
    assert guard("StorageClass", "UPDATE", None, claimed, standard)
    other_tenant = {
        **claimed,
        "metadata": {**claimed["metadata"], "labels": {**claimed["metadata"]["labels"], "iotsec.io/tenant": "y"}},
    }
    assert guard("StorageClass", "UPDATE", None, other_tenant, claimed), "a class never changes tenant"
    assert guard("StorageClass", "UPDATE", None, claimed, claimed) == []


def test_a_tenant_cannot_delete_and_create_the_trust_bundle_again():
    """Second review: CREATE was not checked, so delete + create replaced the trust bundle with the tenant's CA."""
    tenant = ("mallory", ["acme:operators"])

    def create(obj: dict) -> dict:
        request = {
            "uid": "u1",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "operation": "CREATE",
            "namespace": "acme-meters",
            "object": obj,
            "userInfo": {"username": tenant[0], "groups": tenant[1]},
        }
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
        return review(body.encode(), SNAPSHOT, lambda: datetime.now(UTC)).body["response"]

    assert create(_trust("forged", managed=False))["allowed"] is False, "iotsec's name"
    renamed = _trust("forged")
    renamed["metadata"]["name"] = "broker-trust"
    assert create(renamed)["allowed"] is False, "iotsec's label"
    own = _trust("x", managed=False)
    own["metadata"]["name"] = "broker-config"
    assert create(own)["allowed"] is True


def test_a_domain_being_deleted_lets_the_operator_take_its_labels_off_and_nothing_else():
    """Red team F8: deleting a SecurityDomain deadlocked. Its deletion handler takes the domain's labels off its
    namespaces, but the fence still saw the domain (it exists until its finalizer is removed) prescribing them,
    refused, and the finalizer never came off while the namespace stayed."""
    member = namespace("acme-meters", **{"iotsec.io/security-domain": "ingest", "iotsec.io/tenant": "acme"})
    labelled = namespace("acme-meters", **member["metadata"]["labels"], **INGEST_LABELS)
    unlabelled = namespace("acme-meters", **member["metadata"]["labels"])
    refused = guard("Namespace", "UPDATE", "acme-meters", unlabelled, labelled)
    assert refused, "while the domain stays, its labels stay"
    assert "prescribes" in refused[0]
    deleting = {**DOMAIN, "metadata": {**DOMAIN["metadata"], "deletionTimestamp": "2026-12-03T22:00:00Z"}}
    objects = [deleting, TENANT, BACKUP, member, namespace("monitoring")]
    leaving = snapshot_from_objects(objects, platform=PLATFORM).managed

    def fenced(obj: Any, old: Any) -> list[str]:
        return [
            f.message
            for f in confine_operator(OPERATOR, "Namespace", "UPDATE", "acme-meters", obj, old, PLATFORM, leaving)
        ]

    assert fenced(unlabelled, labelled) == [], "the deletion handler's unlabel"
    privileged = namespace(
        "acme-meters", **{**labelled["metadata"]["labels"], "pod-security.kubernetes.io/enforce": "privileged"}
    )
    assert fenced(privileged, labelled), "a leaving domain prescribes nothing, so nothing may be set in its name"
    other = namespace("monitoring", **INGEST_LABELS)
    assert [
        f.message
        for f in confine_operator(
            OPERATOR, "Namespace", "UPDATE", "monitoring", other, namespace("monitoring"), PLATFORM, leaving
        )
    ]
    still = snapshot_from_objects(
        [deleting, namespace("acme-meters", **labelled["metadata"]["labels"])], platform=PLATFORM
    )
    assert still.domain_of("acme-meters").name == "ingest", "its workloads are judged by it until it is gone"
