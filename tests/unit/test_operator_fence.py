"""The fence around iotsec's own operator identity: the webhook's guard and the chart's ValidatingAdmissionPolicy.

Both are replayed with the escapes a stolen operator token would try; both must refuse the same requests.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from typing import Any

import celpy
import pytest
import yaml

from iotsec.checking import snapshot_from_objects
from iotsec.desired.platform import Platform
from iotsec.policy.guard import Managed, confine_operator
from iotsec.webhook.review import review
from tests.chart.test_chart import CHART, _helm

PLATFORM = Platform("iotsec-system", "iotsec", "iotsec-operator")
OPERATOR = PLATFORM.operator_user
MANAGED = Managed({"acme-meters": "acme"}, frozenset({"ingest"}), frozenset({"backups"}))


def binding(namespace: str, ref_kind: str = "ClusterRole", ref: str = "admin") -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "escape", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": ref_kind, "name": ref},
        "subjects": [{"kind": "ServiceAccount", "name": "iotsec-operator", "namespace": "iotsec-system"}],
    }


def namespace(name: str, created_by: str | None = None, **labels: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if created_by:
        metadata["annotations"] = {"iotsec.io/created-by": created_by}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}


def guard(kind: str, operation: str, ns: str | None, obj: Any, old: Any = None, user: str = OPERATOR) -> list[str]:
    return [f.message for f in confine_operator(user, kind, operation, ns, obj, old, PLATFORM, MANAGED)]


@pytest.mark.parametrize("target", ["kube-system", "kube-public", "kube-node-lease", "default"])
def test_the_operator_cannot_bind_itself_in_a_reserved_namespace(target):
    assert guard("RoleBinding", "CREATE", target, binding(target)) == [
        f"namespace {target} is reserved: iotsec never writes there"
    ]
    assert guard("RoleBinding", "CREATE", target, binding(target, "ClusterRole", "iotsec-operator-namespace"))


def test_in_the_release_namespace_only_its_own_role_bindings():
    assert guard("RoleBinding", "CREATE", "iotsec-system", binding("iotsec-system"))
    assert guard("RoleBinding", "CREATE", "iotsec-system", binding("iotsec-system", "Role", "canary")) == []


def test_only_namespaces_iotsec_manages():
    assert "not managed by iotsec" in guard("RoleBinding", "CREATE", "monitoring", binding("monitoring"))[0]
    for managed in ("acme-meters", "ingest", "backups"):
        assert guard("RoleBinding", "CREATE", managed, binding(managed)) == []
        assert guard("RoleBinding", "DELETE", managed, None, binding(managed)) == []
    assert guard("RoleBinding", "DELETE", "monitoring", None, binding("monitoring"))


def test_other_users_are_left_to_rbac():
    assert guard("RoleBinding", "CREATE", "kube-system", binding("kube-system"), user="admin") == []
    assert guard("RoleBinding", "CREATE", "kube-system", binding("kube-system"), user=OPERATOR + "x") == []


def test_namespace_labels_and_deletion():
    old = namespace("acme-meters", team="a")
    assert guard("Namespace", "UPDATE", "acme-meters", namespace("acme-meters", team="b"), old)
    assert guard("Namespace", "UPDATE", "acme-meters", namespace("acme-meters"), old), "removing a label counts"
    labelled = namespace("acme-meters", team="a", **{"iotsec.io/domain": "ingest", "iotsec.io/tenant": "acme"})
    assert guard("Namespace", "UPDATE", "acme-meters", labelled, old) == []
    foreign_tenant = namespace("acme-meters", team="a", **{"iotsec.io/tenant": "globex"})
    assert "no TenantIsolation of tenant globex" in guard("Namespace", "UPDATE", "acme-meters", foreign_tenant, old)[0]
    hijack = namespace("monitoring", **{"iotsec.io/tenant": "acme"})
    assert guard("Namespace", "UPDATE", "monitoring", hijack, namespace("monitoring"))
    assert guard("Namespace", "UPDATE", "kube-system", namespace("kube-system", x="y"), namespace("kube-system"))
    made = namespace("acme-meters", "acme", **{"iotsec.io/owner-kind": "TenantIsolation", "iotsec.io/tenant": "acme"})
    assert guard("Namespace", "DELETE", "acme-meters", None, made) == []
    adopted = namespace("acme-meters", **{"iotsec.io/owner-kind": "TenantIsolation", "iotsec.io/tenant": "acme"})
    assert guard("Namespace", "DELETE", "acme-meters", None, adopted), "an adopted namespace is never deleted"
    forged = namespace("acme-meters", "acme", **{"iotsec.io/tenant": "acme"})
    assert "set only when iotsec creates" in guard("Namespace", "UPDATE", "acme-meters", forged, adopted)[0]
    assert guard("Namespace", "DELETE", "monitoring", None, namespace("monitoring"))
    assert guard("Namespace", "DELETE", "iotsec-system", None, namespace("iotsec-system"))


def test_the_operator_may_patch_metadata_but_not_specs_of_custom_resources():
    old = {"kind": "TenantIsolation", "metadata": {"name": "t"}, "spec": {"namespaces": ["a"]}}
    annotated = {**old, "metadata": {"name": "t", "annotations": {"kopf": "x"}}}
    assert guard("TenantIsolation", "UPDATE", None, annotated, old) == []
    widened = {**old, "spec": {"namespaces": ["a", "monitoring"]}}
    assert guard("TenantIsolation", "UPDATE", None, widened, old)


# ---------------------------------------------------------------- through the webhook's AdmissionReview path

TENANT = {
    "apiVersion": "iotsec.io/v1alpha1",
    "kind": "TenantIsolation",
    "metadata": {"name": "acme"},
    "spec": {"tenantID": "acme", "securityDomain": "ingest", "namespaces": ["acme-meters"]},
}


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
    snapshot = snapshot_from_objects([TENANT, namespace("acme-meters"), namespace("kube-system")], platform=PLATFORM)
    outcome = review(body.encode(), snapshot, lambda: datetime.now(UTC))
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
def fence() -> dict[str, Any]:
    rendered = subprocess.run(
        [
            _helm(),
            "template",
            "iotsec",
            str(CHART),
            "--namespace",
            "iotsec-system",
            "--api-versions",
            "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (policy,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ValidatingAdmissionPolicy"]
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


CASES = [
    ("rolebindings", "CREATE", "kube-system", binding("kube-system"), None),
    ("rolebindings", "CREATE", "default", binding("default", "ClusterRole", "iotsec-operator-namespace"), None),
    ("rolebindings", "CREATE", "iotsec-system", binding("iotsec-system"), None),
    ("rolebindings", "CREATE", "iotsec-system", binding("iotsec-system", "Role", "canary"), None),
    ("rolebindings", "CREATE", "acme-meters", binding("acme-meters"), None),
    ("namespaces", "UPDATE", "kube-system", namespace("kube-system", x="y"), namespace("kube-system")),
    ("namespaces", "UPDATE", "acme-meters", namespace("acme-meters", team="b"), namespace("acme-meters", team="a")),
    ("namespaces", "UPDATE", "acme-meters", namespace("acme-meters"), namespace("acme-meters", team="a")),
    (
        "namespaces",
        "UPDATE",
        "acme-meters",
        namespace("acme-meters", team="a", **{"iotsec.io/domain": "ingest"}),
        namespace("acme-meters", team="a"),
    ),
    ("namespaces", "UPDATE", "acme-meters", namespace("acme-meters", "acme"), namespace("acme-meters")),
    ("namespaces", "UPDATE", "acme-meters", namespace("acme-meters", "acme"), namespace("acme-meters", "acme")),
    ("namespaces", "UPDATE", "acme-meters", namespace("acme-meters"), namespace("acme-meters", "acme")),
    ("namespaces", "UPDATE", "acme-meters", namespace("acme-meters", "globex"), namespace("acme-meters", "acme")),
    ("namespaces", "DELETE", "monitoring", None, namespace("monitoring")),
    ("namespaces", "DELETE", "kube-node-lease", None, namespace("kube-node-lease")),
    (
        "namespaces",
        "DELETE",
        "acme-meters",
        None,
        namespace("acme-meters", "acme", **{"iotsec.io/owner-kind": "TenantIsolation", "iotsec.io/tenant": "acme"}),
    ),
    (
        "namespaces",
        "DELETE",
        "acme-meters",
        None,
        namespace("acme-meters", **{"iotsec.io/owner-kind": "TenantIsolation", "iotsec.io/tenant": "acme"}),
    ),
]


@pytest.mark.parametrize(("resource", "operation", "ns", "obj", "old"), CASES)
def test_the_admission_policy_and_the_webhook_agree(fence, resource, operation, ns, obj, old):
    kind = "RoleBinding" if resource == "rolebindings" else "Namespace"
    webhook = bool(guard(kind, operation, ns, obj, old))
    assert vap_denies(fence, resource, operation, ns, obj, old, OPERATOR) == webhook
    assert not vap_denies(fence, resource, operation, ns, obj, old, "system:serviceaccount:kube-system:other")
