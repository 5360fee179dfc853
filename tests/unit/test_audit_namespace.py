"""The audit sinks live in their own namespace (default <release>-audit), apart from the release namespace where
the admission webhook runs: settings, the reconciler's target, the operator's fence and grants, admission."""

from __future__ import annotations

import copy
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from iotsec.admission.context import Snapshot
from iotsec.admission.engine import decide
from iotsec.admission.guard import confine_operator
from iotsec.api.auditpolicy import AuditPolicySpec
from iotsec.build import audit as builder
from iotsec.build import rbac
from iotsec.controllers import runtime
from iotsec.k8s.kube import NamespaceGrants
from iotsec.model.config import Config
from iotsec.model.platform import Platform
from tests.conftest import ROOT, load_examples

EXAMPLE = next(d for d in load_examples() if d["kind"] == "AuditPolicy")
PLATFORM = Platform("iotsec-system", "iotsec", "iotsec-operator")
SINK = {"kind": "ServiceAccount", "name": "iotsec-audit-sink", "namespace": "iotsec-audit"}


def sink_objects(namespace: str = "iotsec-audit") -> list[dict[str, Any]]:
    return builder.desired_objects(
        "main",
        AuditPolicySpec.model_validate(EXAMPLE["spec"]),
        namespace=namespace,
        image="registry.example.com/iotsec/iotsec:0.1.0",
        operator_users=[PLATFORM.operator_user],
        sink_service_account="iotsec-audit-sink",
    )


# ---------------------------------------------------------------- settings


def test_the_audit_namespace_defaults_to_release_audit_and_is_configurable():
    assert Config().platform.audit_namespace == "iotsec-audit"
    assert Config.from_env({"IOTSEC_RELEASE": "edge"}).platform.audit_namespace == "edge-audit"
    assert Config.from_env({"IOTSEC_AUDIT_NAMESPACE": "trail"}).platform.audit_namespace == "trail"
    config = Config.from_env({"IOTSEC_WEBHOOK_NAMESPACE": "sys", "IOTSEC_AUDIT_NAMESPACE": "trail"})
    assert (config.platform.namespace, config.platform.audit_namespace) == ("sys", "trail")
    assert Platform(prefix="edge").audit_namespace == "edge-audit"


def test_the_audit_namespace_is_reserved_and_gets_no_operator_grant():
    assert PLATFORM.reserved("iotsec-audit"), "no tenant or domain may adopt, label or shred it"
    grants = NamespaceGrants(PLATFORM)
    assert not grants.needed("apps/v1", "Deployment", "iotsec-audit"), "the chart's Role covers it"
    assert grants.needed("apps/v1", "Deployment", "acme")


# ---------------------------------------------------------------- the reconciler


class RecordingKube:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.namespaces: set[str | None] = set()

    def get(self, api_version, kind, name, namespace=None):
        self.namespaces.add(namespace) if namespace else None
        return copy.deepcopy(self.body) if kind == "AuditPolicy" else None

    def apply(self, obj, owner=None):
        self.namespaces.add(obj["metadata"].get("namespace"))
        return obj

    def create(self, obj):
        self.namespaces.add(obj["metadata"].get("namespace"))
        return True

    def prune(self, api_version, kind, owner_kind, owner_name, keep, namespace=None):
        self.namespaces.add(namespace)
        return []

    def patch_status(self, api_version, kind, name, status, namespace=None, **_):
        self.body["status"] = status


def test_the_reconciler_works_only_in_the_audit_namespace(monkeypatch):
    from iotsec.controllers import audit as handler

    config = Config.from_env({"IOTSEC_WEBHOOK_NAMESPACE": "sys", "IOTSEC_AUDIT_NAMESPACE": "trail"})
    monkeypatch.setattr(runtime, "_loaded", config)
    monkeypatch.setattr(handler.kopf, "warn", lambda *a, **k: None)
    monkeypatch.setattr(handler.kopf, "event", lambda *a, **k: None)
    body = copy.deepcopy(EXAMPLE)
    body["metadata"].update(name="main", uid="u-1", generation=1)
    body["spec"].pop("backupPolicyRef", None)
    api = RecordingKube(body)
    monkeypatch.setattr(handler, "kube", lambda: api)
    handler.reconcile("main")
    assert api.namespaces == {"trail"}, "no sink object, key or claim in the release namespace"
    assert body["status"]["policyConfigMap"] == "trail/iotsec-audit-policy-main"
    assert runtime.config().audited_operator_users == ["system:serviceaccount:sys:iotsec-operator"], (
        "the operator stays put"
    )


# ---------------------------------------------------------------- RBAC


def test_the_operator_runs_routes_and_binds_nothing_in_the_release_namespace():
    release = {(g, r) for p in rbac.OPERATOR_NAMESPACE for g in p.api_groups for r in p.resources}
    assert release == {("", "secrets"), ("", "configmaps"), ("coordination.k8s.io", "leases")}, (
        "platform keys, device registries and the leader-election Lease only"
    )
    audit = {r for p in rbac.OPERATOR_AUDIT_NAMESPACE for r in p.resources}
    assert {"deployments", "services", "networkpolicies", "roles", "rolebindings"} <= audit
    for permission in rbac.OPERATOR_NAMESPACE + rbac.OPERATOR_AUDIT_NAMESPACE:
        if "secrets" in permission.resources:
            assert not {"list", "watch"} & set(permission.verbs), "Secrets by name only"
    assert "operator-audit-namespace-rules.yaml" in rbac.rule_files()


# ---------------------------------------------------------------- the fence


def fence(namespace: str, binding: dict[str, Any]) -> list[str]:
    managed = Snapshot(platform=PLATFORM).managed  # iotsec manages no namespace at all
    found = confine_operator(
        PLATFORM.operator_user, "RoleBinding", "CREATE", namespace, binding, None, PLATFORM, managed
    )
    return [f.message for f in found]


def grant(namespace: str, ref_kind: str, ref: str, subject: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "x", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": ref_kind, "name": ref},
        "subjects": [subject],
    }


def test_the_fence_lets_the_operator_bind_a_sinks_canary_role_in_the_audit_namespace():
    (binding,) = [o for o in sink_objects() if o["kind"] == "RoleBinding"]
    assert fence("iotsec-audit", binding) == []


@pytest.mark.parametrize(
    "binding",
    [
        grant("iotsec-audit", "ClusterRole", "iotsec-operator-namespace", SINK),
        grant("iotsec-audit", "ClusterRole", "admin", {**SINK, "name": "mallory"}),
    ],
    ids=["its namespace role", "admin"],
)
def test_the_fence_refuses_cluster_role_bindings_in_the_audit_namespace(binding):
    assert fence("iotsec-audit", binding), "the audit namespace is iotsec's own, like the release namespace"


# ---------------------------------------------------------------- admission


def test_the_sinks_pass_iotsecs_admission_in_the_audit_namespace_and_only_there():
    snapshot = Snapshot(platform=PLATFORM)  # no SecurityDomain at all; unassigned namespaces are enforced
    now = datetime.now(UTC)
    for obj in sink_objects():
        decision = decide(obj, snapshot.context("iotsec-audit", now))
        assert [v.line() for v in decision.violations] == [], obj["kind"]
        assert decision.allowed
    deployment = next(o for o in sink_objects("elsewhere") if o["kind"] == "Deployment")
    assert not decide(deployment, snapshot.context("elsewhere", now)).allowed, "not a blanket pass"


def test_a_privileged_pod_in_the_audit_namespace_is_refused():
    """What a stolen operator token would start there: refused by the restricted standard, enforced."""
    deployment = copy.deepcopy(next(o for o in sink_objects() if o["kind"] == "Deployment"))
    pod = deployment["spec"]["template"]["spec"]
    pod["hostPID"] = True
    pod["containers"][0]["securityContext"] = {"privileged": True}
    decision = decide(deployment, Snapshot(platform=PLATFORM).context("iotsec-audit", datetime.now(UTC)))
    assert not decision.allowed
    assert decision.mode == "enforce"


def test_iotsec_check_passes_the_rendered_sink_objects():
    """`iotsec render | iotsec check -`, as an administrator would: the sinks land in iotsec-audit and pass."""
    rendered = subprocess.run(
        [sys.executable, "-m", "iotsec", "render", str(ROOT / "examples" / "platform" / "40-audit.yaml")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert {d["metadata"]["namespace"] for d in docs} == {"iotsec-audit"}
    checked = subprocess.run(
        [sys.executable, "-m", "iotsec", "check", "-"], input=rendered, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    judged = [d for d in docs if d["kind"] not in ("Secret", "Role", "ServiceAccount")]  # the webhook judges none
    assert f"{len(judged)} objects checked: {len(judged)} clean" in checked.stdout
    assert "not checked (kind" in checked.stdout, "unjudged kinds are not counted as clean"
