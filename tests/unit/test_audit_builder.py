"""The AuditPolicy builder: policy and canary ConfigMaps, store claim, sink Deployment, Service, NetworkPolicy;
Ready from the conditions; the sink's RBAC files."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest
import yaml

from iotsec.admission.context import Context, DomainPolicy
from iotsec.admission.engine import decide
from iotsec.api.auditpolicy import AuditPolicySpec
from iotsec.build import audit as builder
from iotsec.build import rbac
from iotsec.build.apiserver_audit import POLICY_KEY, policy_configmap_name
from iotsec.build.securitydomain import NetworkSettings
from iotsec.model import conditions
from iotsec.model.labels import CONTROLS, MANAGED_BY, OWNER_KIND, OWNER_NAME
from tests.conftest import ROOT, load_examples

EXAMPLE = next(d for d in load_examples() if d["kind"] == "AuditPolicy")
NAME = EXAMPLE["metadata"]["name"]
NAMESPACE = "iotsec-audit"  # the audit namespace (the chart's <release>-audit), never the release namespace
IMAGE = "registry.example.com/iotsec/iotsec@sha256:" + "b" * 64
OPERATOR = "system:serviceaccount:iotsec-system:iotsec-operator"


def spec(**sink: Any) -> AuditPolicySpec:
    body = copy.deepcopy(EXAMPLE["spec"])
    body["sink"].update(sink)
    return AuditPolicySpec.model_validate(body)


def build(name: str = NAME, **sink: Any) -> list[dict[str, Any]]:
    return builder.desired_objects(
        name,
        spec(**sink),
        namespace=NAMESPACE,
        image=IMAGE,
        operator_users=[OPERATOR],
        sink_service_account="iotsec-audit-sink",
    )


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"]))


def pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def test_every_object_is_valid_kubernetes():
    version = kubernetes_validate.latest_version()
    for authentication in ("clientCertificate", "bearerToken"):
        objects = build(authentication=authentication)
        assert [o["kind"] for o in objects] == [
            "ConfigMap",
            "ConfigMap",
            "PersistentVolumeClaim",
            "Service",
            "NetworkPolicy",
            "Role",
            "RoleBinding",
            "Deployment",
        ], "the Deployment last: what it mounts and the rights it uses exist first"
        for obj in objects:
            kubernetes_validate.validate(obj, version, strict=True)


def test_names_and_owner_metadata():
    objects = build()
    assert {(o["kind"], o["metadata"]["name"]) for o in objects} == {
        ("ConfigMap", "iotsec-audit-policy-platform-audit"),
        ("ConfigMap", "iotsec-audit-canary-platform-audit"),
        ("PersistentVolumeClaim", "iotsec-audit-store-platform-audit"),
        ("Service", "iotsec-audit-sink-platform-audit"),
        ("NetworkPolicy", "iotsec-audit-sink-platform-audit"),
        ("Role", "iotsec-audit-sink-canary-platform-audit"),
        ("RoleBinding", "iotsec-audit-sink-canary-platform-audit"),
        ("Deployment", "iotsec-audit-sink-platform-audit"),
    }
    for obj in objects:
        meta = obj["metadata"]
        assert meta["namespace"] == NAMESPACE
        assert meta["labels"][MANAGED_BY] == "iotsec"
        assert (meta["labels"][OWNER_KIND], meta["labels"][OWNER_NAME]) == ("AuditPolicy", NAME)
        assert meta["annotations"][CONTROLS].startswith("X1369-9.")
    template = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert template[OWNER_NAME] == NAME


def test_policy_configmap_records_the_canary_and_the_operator():
    policy_map = one(build(), "ConfigMap", policy_configmap_name(NAME))
    rendered = yaml.safe_load(policy_map["data"][POLICY_KEY])
    assert rendered["rules"][0] == {
        "level": "Request",
        "namespaces": [NAMESPACE],
        "resources": [{"group": "", "resources": ["configmaps"], "resourceNames": [builder.canary_name(NAME)]}],
    }
    assert any(r.get("users") == [OPERATOR] and r["level"] == "RequestResponse" for r in rendered["rules"])


def test_the_canary_configmap_leaves_its_data_to_the_sink():
    canary = one(build(), "ConfigMap", builder.canary_name(NAME))
    assert "data" not in canary, "the operator's apply must not reset the nonce the sink writes"
    assert "binaryData" not in canary


def test_store_claim_size_and_class():
    claim = one(build(), "PersistentVolumeClaim")["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"]
    assert claim["resources"]["requests"]["storage"] == "50Gi"
    assert claim["storageClassName"] == "encrypted-ssd"
    default = one(build(storage={"size": "5Gi"}), "PersistentVolumeClaim")["spec"]
    assert default["resources"]["requests"]["storage"] == "5Gi"
    assert "storageClassName" not in default, "no class named: the cluster default"


@pytest.mark.parametrize(
    ("authentication", "flag", "path", "key"),
    [
        ("clientCertificate", "--client-ca", "/etc/iotsec/audit-client-ca/ca.crt", "ca.crt"),
        ("bearerToken", "--token-file", "/etc/iotsec/audit-token/token", "token"),
    ],
)
def test_sink_arguments_and_secrets_per_authentication(authentication, flag, path, key):
    objects = build(authentication=authentication)
    spec_ = pod(objects)
    (container,) = spec_["containers"]
    args = container["args"]
    assert args[:2] == ["audit", "serve"]
    assert "--signing-key-readonly" in args, "the sink never makes a key of its own"
    valued = [a for a in args[2:] if a != "--signing-key-readonly"]
    pairs = dict(zip(valued[::2], valued[1::2], strict=True))
    assert pairs == {
        "--audit-policy": NAME,
        "--namespace": NAMESPACE,
        "--store": "/var/lib/iotsec-audit",
        "--signing-key": "/etc/iotsec/audit-signing/ed25519.key",
        "--tls-cert": "/etc/iotsec/audit-tls/tls.crt",
        "--tls-key": "/etc/iotsec/audit-tls/tls.key",
        flag: path,
        "--port": "8443",
        "--metrics-port": "9090",
    }
    other = "--token-file" if flag == "--client-ca" else "--client-ca"
    assert other not in args
    volumes = {v["name"]: v for v in spec_["volumes"]}
    assert volumes["store"]["persistentVolumeClaim"] == {"claimName": f"iotsec-audit-store-{NAME}"}
    assert volumes["tls"]["secret"]["secretName"] == f"iotsec-audit-sink-tls-{NAME}"
    assert volumes["client"]["secret"]["secretName"] == f"iotsec-audit-client-{NAME}"
    assert volumes["client"]["secret"]["items"] == [{"key": key, "path": key}]
    assert volumes["signing-key"]["secret"] == {
        "secretName": f"iotsec-audit-signing-{NAME}",
        "defaultMode": 0o440,
        "items": [{"key": "ed25519.key", "path": "ed25519.key"}],
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert path.startswith(mounts["client"]["mountPath"] + "/")
    assert pairs["--signing-key"] == mounts["signing-key"]["mountPath"] + "/ed25519.key"
    assert mounts["tls"]["readOnly"]
    assert mounts["client"]["readOnly"]
    assert mounts["signing-key"]["readOnly"]
    assert mounts["store"]["mountPath"] == "/var/lib/iotsec-audit"


def test_one_sink_per_store_with_restricted_security():
    objects = build()
    deployment = one(objects, "Deployment")["spec"]
    assert deployment["replicas"] == 1
    assert deployment["strategy"] == {"type": "Recreate"}
    assert deployment["selector"]["matchLabels"].items() <= deployment["template"]["metadata"]["labels"].items()
    spec_ = pod(objects)
    assert spec_["serviceAccountName"] == "iotsec-audit-sink"
    assert spec_["automountServiceAccountToken"] is True
    security = spec_["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] >= 10000
    assert security["fsGroup"] == security["runAsGroup"], "the store volume is writable by the sink"
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec_["containers"]
    assert container["image"] == IMAGE
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert set(container["resources"]["requests"]) == set(container["resources"]["limits"]) == {"cpu", "memory"}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "scheme": "HTTPS", "port": "https"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"https": 8443, "metrics": 9090}


def test_the_sinks_one_namespaced_right_is_its_own_canary():
    objects = build()
    role = one(objects, "Role")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [builder.canary_name(NAME)],
            "verbs": ["get", "patch"],
        }
    ]
    binding = one(objects, "RoleBinding")
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": builder.canary_role_name(NAME),
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "iotsec-audit-sink", "namespace": NAMESPACE}]
    assert one(build("other"), "Role")["rules"][0]["resourceNames"] == [builder.canary_name("other")]


def test_the_sink_passes_iotsecs_own_admission():
    decision = decide(one(build(), "Deployment"), Context(DomainPolicy("support", "support"), datetime.now(UTC)))
    assert [v.line() for v in decision.violations] == []


def test_service_and_network_policy():
    objects = build()
    service = one(objects, "Service")["spec"]
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["ports"]} == {
        ("https", 443, "https"),
        ("metrics", 9090, "metrics"),
    }
    assert service["selector"] == builder.sink_selector(NAME)
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["podSelector"] == {"matchLabels": builder.sink_selector(NAME)}
    assert policy["policyTypes"] == ["Ingress", "Egress"], "everything not listed is denied"
    webhook, metrics = policy["ingress"]
    assert webhook == {"ports": [{"port": 8443, "protocol": "TCP"}]}, "the API server calls from outside the pods"
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}}]
    assert metrics["ports"] == [{"port": 9090, "protocol": "TCP"}]
    api, dns = policy["egress"]
    assert {p["port"] for p in api["ports"]} == {443, 6443}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}


def test_dns_settings_reach_the_network_policy():
    network = NetworkSettings(dns_namespace="dns", dns_pod_labels={"app": "coredns"})
    objects = builder.desired_objects(
        NAME, spec(), namespace=NAMESPACE, image=IMAGE, operator_users=(), sink_service_account="sa", network=network
    )
    (to,) = one(objects, "NetworkPolicy")["spec"]["egress"][1]["to"]
    assert to == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns"}},
        "podSelector": {"matchLabels": {"app": "coredns"}},
    }


def test_long_and_dotted_names_fit_dns_labels():
    long_name = "a" * 63
    objects = build(long_name)
    version = kubernetes_validate.latest_version()
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
    sink = builder.sink_name(long_name)
    assert len(sink) <= 63
    assert sink.startswith("iotsec-audit-sink-aaa")
    assert one(objects, "Service")["metadata"]["name"] == sink
    assert one(objects, "Deployment")["metadata"]["name"] == sink
    assert builder.store_claim_name(long_name) == f"iotsec-audit-store-{long_name}", "subdomains keep the full name"
    assert builder.sink_name("b" * 63) != sink
    dotted = builder.sink_name("audit.prod")
    assert "." not in dotted
    assert len(dotted) <= 63
    assert dotted != builder.sink_name("audit-prod"), "a dot and a dash never yield the same Service"
    assert builder.sink_name("audit-prod") == "iotsec-audit-sink-audit-prod"
    for obj in build("audit.prod"):
        kubernetes_validate.validate(obj, version, strict=True)


def test_names_longer_than_a_label_value_are_refused():
    with pytest.raises(ValueError, match="at most 63"):
        build("a" * 64)


def test_bounded_name_is_stable_and_bounded():
    name = builder.bounded_name("prefix-", "x" * 300)
    assert len(name) == 253
    assert name == builder.bounded_name("prefix-", "x" * 300)
    assert builder.bounded_name("prefix-", "short") == "prefix-short"


# --- Ready ----------------------------------------------------------------------------------------------------


def cond(type_: str, status: bool, reason: str = "Reason", message: str = "") -> dict[str, Any]:
    return conditions.condition(type_, status, reason, message or f"{type_} {status}", 3)


APPLIED = cond("Applied", True, "Applied")
HEALTHY = cond("AuditPipelineBroken", False, "CanaryArrived")


@pytest.mark.parametrize(
    ("found", "status", "reason"),
    [
        ([APPLIED, HEALTHY], "True", "Recording"),
        ([APPLIED, HEALTHY, cond("StorageFull", False), cond("StorageNearlyFull", True)], "True", "Recording"),
        ([APPLIED], "False", "AwaitingSink"),
        ([], "False", "NotApplied"),
        ([cond("Applied", False, "InvalidSpec"), HEALTHY], "False", "InvalidSpec"),
        ([cond("Applied", False, "ApplyFailed"), cond("AuditPipelineBroken", True)], "False", "ApplyFailed"),
        ([APPLIED, cond("AuditPipelineBroken", True, "CanaryMissing")], "False", "AuditPipelineBroken"),
        ([APPLIED, cond("AuditPipelineBroken", True), cond("StorageFull", True)], "False", "AuditPipelineBroken"),
        ([APPLIED, HEALTHY, cond("StorageFull", True, "RefusingBatches")], "False", "StorageFull"),
        ([APPLIED, cond("StorageFull", True)], "False", "StorageFull"),
        ([APPLIED, HEALTHY, cond("SigningKeyReadable", False, "KeyUnreadable")], "False", "KeyUnreadable"),
        ([APPLIED, HEALTHY, cond("SigningKeyReadable", True, "Readable")], "True", "Recording"),
    ],
)
def test_ready_condition_truth_table(found, status, reason):
    ready = builder.ready_condition(found, 7)
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", status, reason)
    assert ready["observedGeneration"] == 7


def test_ready_messages():
    assert builder.ready_condition([APPLIED], 1)["message"] == "no report from the audit sink yet"
    broken = cond("AuditPipelineBroken", True, "CanaryMissing", "canary written 300s ago …")
    assert builder.ready_condition([APPLIED, broken], 1)["message"] == "canary written 300s ago …"
    failed = cond("Applied", False, "ApplyFailed", "422 Unprocessable")
    assert builder.ready_condition([failed], 1)["message"] == "422 Unprocessable"


def test_backup_reference_and_condition():
    assert builder.backup_ref(spec(), "elsewhere") == ("iotsec-audit", "audit-store")
    body = copy.deepcopy(EXAMPLE["spec"])
    body["backupPolicyRef"] = {"name": "audit-store"}
    assert builder.backup_ref(AuditPolicySpec.model_validate(body), NAMESPACE) == (NAMESPACE, "audit-store")
    del body["backupPolicyRef"]
    assert builder.backup_ref(AuditPolicySpec.model_validate(body), NAMESPACE) is None
    claim = builder.store_claim_name("trail")
    missing = builder.backed_up_condition(("ns", "b"), None, claim, 2)
    assert (missing["type"], missing["status"], missing["reason"]) == ("BackedUp", "False", "BackupPolicyMissing")
    assert missing["controls"] == ["X1369-9.6.4-3"]
    named = {"metadata": {"namespace": "ns"}, "spec": {"pvcNames": [claim]}}
    found = builder.backed_up_condition(("ns", "b"), named, claim, 2)
    assert (found["status"], found["reason"]) == ("True", "BackupPolicyFound")
    other = {"metadata": {"namespace": "ns"}, "spec": {"pvcNames": ["tsdb-0"]}}
    unselected = builder.backed_up_condition(("ns", "b"), other, claim, 2)
    assert (unselected["status"], unselected["reason"]) == ("False", "StoreNotSelected")
    assert claim in unselected["message"]
    by_label = {"metadata": {"namespace": "ns"}, "spec": {"pvcSelector": {"matchLabels": {"a": "b"}}}}
    assert builder.backed_up_condition(("ns", "b"), by_label, claim, 2)["status"] == "True"


def test_the_example_backup_policy_backs_up_the_example_audit_store():
    backups = [d for d in yaml.safe_load_all((ROOT / "examples" / "platform" / "30-backups.yaml").read_text()) if d]
    store = next(d for d in backups if d["metadata"]["name"] == "audit-store")
    claim = builder.store_claim_name(EXAMPLE["metadata"]["name"])
    assert store["metadata"]["namespace"] == NAMESPACE, "a BackupPolicy backs up claims of its own namespace"
    assert builder.backed_up_condition((NAMESPACE, "audit-store"), store, claim, 1)["status"] == "True"


# --- the sink's RBAC ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "filename"),
    [("AUDIT_SINK", "audit-sink-rules.yaml"), ("OPERATOR_AUDIT_NAMESPACE", "operator-audit-namespace-rules.yaml")],
)
def test_sink_rule_files_are_the_table(table, filename):
    permissions = getattr(rbac, table)
    shipped = ROOT / "charts" / "iotsec-operator" / "files" / filename
    assert shipped.read_text() == rbac.rules_file(permissions), "regenerate the chart's sink rule files"
    assert all(len(p.reason) > 20 for p in permissions)
    for permission in permissions:
        if "secrets" in permission.resources:
            assert not {"list", "watch"} & set(permission.verbs), "Secrets by name only"


def test_the_sink_can_read_no_secret_and_write_no_configmap_of_the_release_namespace():
    granted = {r for p in rbac.AUDIT_SINK for r in p.resources}
    assert not hasattr(rbac, "AUDIT_SINK_NAMESPACE"), "no namespace-wide Role for the sink anywhere"
    assert not {"secrets", "configmaps"} & granted, "its key is a volume; its canary grant is per policy, by name"


def test_the_operator_may_manage_the_sink_objects_but_never_delete_the_store():
    def verbs(group: str, resource: str) -> set[str]:
        table = rbac.OPERATOR + rbac.OPERATOR_AUDIT_NAMESPACE
        return {v for p in table if group in p.api_groups and resource in p.resources for v in p.verbs}

    # read-only lists cluster-wide are the background scan's (issue 17): no write outside the audit namespace
    cluster_wide = {r for p in rbac.OPERATOR if set(p.verbs) - {"get", "list", "watch"} for r in p.resources}
    assert not {"deployments", "services"} & cluster_wide, "sinks run in the audit namespace only"

    assert {"get", "create", "patch", "delete"} <= verbs("apps", "deployments")
    assert {"get", "create", "patch", "delete"} <= verbs("", "services")
    assert {"get", "create", "patch", "delete"} <= verbs("", "configmaps")
    assert {"get", "create", "patch", "delete"} <= verbs("networking.k8s.io", "networkpolicies")
    assert {"get", "create", "patch"} <= verbs("", "persistentvolumeclaims")
    assert "delete" not in verbs("", "persistentvolumeclaims"), "the audit trail outlives its policy"
    assert "get" in verbs("iotsec.io", "backuppolicies")
    assert {"get", "create", "delete"} <= verbs("", "secrets"), "the signing key: created, replaced when asked"
    assert {"get", "list", "create", "patch", "delete"} <= verbs("rbac.authorization.k8s.io", "roles")
    assert {"get", "list", "create", "patch", "delete"} <= verbs("rbac.authorization.k8s.io", "rolebindings")


# --- the reconciler, against a fake API ---------------------------------------------------------------------


class FakeKube:
    def __init__(self, body: dict[str, Any], backup_exists: bool = True, fail: Any = None) -> None:
        self.body, self.backup_exists, self.fail = body, backup_exists, fail
        self.applied: list[tuple[dict[str, Any], Any]] = []
        self.created: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str]] = []
        self.replaced: list[tuple[str, str]] = []
        self.written_meanwhile: dict[str, Any] | None = None  # what another writer puts there before a replace
        self.pruned: list[tuple[str, set]] = []
        self.statuses: list[dict[str, Any]] = []

    def get(self, api_version, kind, name, namespace=None):
        if kind == "AuditPolicy":
            return copy.deepcopy(self.body)
        if kind == "BackupPolicy":
            spec = {"pvcNames": [builder.store_claim_name(NAME)]}
            return {"metadata": {"name": name, "namespace": namespace}, "spec": spec} if self.backup_exists else None
        if kind in ("Secret", "Service"):
            written = [o for o, _ in self.applied] + self.created
            found = [o for o in written if o["kind"] == kind and o["metadata"]["name"] == name]
            if not found:
                return None
            obj = copy.deepcopy(found[-1])
            if kind == "Service":
                obj["spec"]["clusterIP"] = "10.96.0.50"  # assigned by the API server
            return obj
        raise AssertionError(kind)

    def apply(self, obj, owner=None):
        if self.fail is not None:
            raise self.fail
        self.applied.append((obj, owner))
        return obj

    def create(self, obj):
        if self.fail is not None:
            raise self.fail
        if self.get(obj["apiVersion"], obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")):
            return False
        self.created.append(copy.deepcopy(obj))
        return True

    def replace(self, obj):
        """PUT at metadata.resourceVersion: None (409) when `written_meanwhile` got there first."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        current = self.get(obj["apiVersion"], kind, name, obj["metadata"].get("namespace"))
        assert current is not None, "a replace is of an existing object"
        if self.written_meanwhile is not None:
            self.created[:] = [o for o in self.created if (o["kind"], o["metadata"]["name"]) != (kind, name)]
            self.created.append(copy.deepcopy(self.written_meanwhile))
            return None
        assert obj["metadata"].get("resourceVersion") == current["metadata"].get("resourceVersion")
        self.replaced.append((kind, name))
        self.created[:] = [o for o in self.created if (o["kind"], o["metadata"]["name"]) != (kind, name)]
        self.created.append(copy.deepcopy(obj))
        return obj

    def delete(self, api_version, kind, name, namespace=None):
        self.deleted.append((kind, name))
        kept = [(o, w) for o, w in self.applied if (o["kind"], o["metadata"]["name"]) != (kind, name)]
        self.applied[:] = kept
        self.created[:] = [o for o in self.created if (o["kind"], o["metadata"]["name"]) != (kind, name)]
        return True

    def prune(self, api_version, kind, owner_kind, owner_name, keep, namespace=None):
        assert namespace == NAMESPACE, "a namespaced Role allows listing the audit namespace only"
        self.pruned.append((kind, set(keep)))
        return []

    def patch_status(self, api_version, kind, name, status, namespace=None, **_):
        self.statuses.append(status)
        self.body["status"] = {**(self.body.get("status") or {}), **status}


@pytest.fixture
def reconciler(monkeypatch):
    from iotsec.controllers import audit as handler

    warnings: list[tuple[str, str]] = []
    monkeypatch.setattr(handler.kopf, "warn", lambda body, reason, message: warnings.append((reason, message)))
    monkeypatch.setattr(handler.kopf, "event", lambda body, type, reason, message: None)

    def run(api: FakeKube) -> list[tuple[str, str]]:
        monkeypatch.setattr(handler, "kube", lambda: api)
        handler.reconcile(NAME)
        return warnings

    return run


def resource(**status: Any) -> dict[str, Any]:
    body = copy.deepcopy(EXAMPLE)
    body["metadata"].update(uid="u-1", generation=4)
    if status:
        body["status"] = status
    return body


def by_type(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_reconcile_applies_prunes_and_awaits_the_sink(reconciler):
    api = FakeKube(resource())
    assert reconciler(api) == []
    kinds = {obj["kind"]: owner for obj, owner in api.applied}
    assert kinds["PersistentVolumeClaim"] is None, "the store claim has no owner: deleting the policy keeps it"
    assert kinds["Deployment"] is not None
    assert kinds["Deployment"].kind == "AuditPolicy"
    assert "PersistentVolumeClaim" not in {kind for kind, _ in api.pruned}
    assert {kind for kind, _ in api.pruned} == {
        "ConfigMap",
        "Service",
        "Deployment",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
    }
    assert kinds["Role"] is not None, "the canary grant goes with its policy"
    (status,) = api.statuses
    assert status["policyConfigMap"] == f"iotsec-audit/iotsec-audit-policy-{NAME}"
    assert status["observedGeneration"] == 4
    found = by_type(status)
    assert (found["Applied"]["status"], found["Applied"]["reason"]) == ("True", "Applied")
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("False", "AwaitingSink")
    assert (found["BackedUp"]["status"], found["BackedUp"]["reason"]) == ("True", "BackupPolicyFound")
    assert (found["SigningKeyReadable"]["status"], found["SigningKeyReadable"]["reason"]) == ("True", "Readable")
    reconciler(api)
    assert len(api.statuses) == 1, "an unchanged status is not written again"


def test_reconcile_keeps_the_sinks_conditions_and_becomes_ready(reconciler):
    sink = [
        {**HEALTHY, "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {**cond("StorageNearlyFull", True, "AboveWarningLevel"), "lastTransitionTime": "2026-01-01T00:00:00Z"},
    ]
    api = FakeKube(resource(conditions=sink, records=12))
    reconciler(api)
    found = by_type(api.statuses[-1])
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("True", "Recording")
    assert found["AuditPipelineBroken"] == sink[0]
    assert found["StorageNearlyFull"] == sink[1]
    assert api.body["status"]["records"] == 12


def test_a_missing_backup_policy_warns_once(reconciler):
    api = FakeKube(resource(), backup_exists=False)
    warnings = reconciler(api)
    found = by_type(api.statuses[-1])
    assert (found["BackedUp"]["status"], found["BackedUp"]["reason"]) == ("False", "BackupPolicyMissing")
    assert found["Applied"]["status"] == "True"
    assert [reason for reason, _ in warnings] == ["BackupPolicyMissing"]
    reconciler(api)
    assert len(warnings) == 1


def test_a_refused_object_is_apply_failed(reconciler):
    import kopf

    from iotsec.k8s.kube import ApiError

    api = FakeKube(resource(), fail=ApiError("apply Deployment: 422 Unprocessable", 422))
    with pytest.raises(kopf.PermanentError):
        reconciler(api)
    found = by_type(api.statuses[-1])
    assert (found["Applied"]["status"], found["Applied"]["reason"]) == ("False", "ApplyFailed")
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("False", "ApplyFailed")
    api = FakeKube(resource(), fail=ApiError("apply: 503", 503))
    with pytest.raises(kopf.TemporaryError):
        reconciler(api)
    assert api.statuses == []


def test_an_invalid_spec_is_reported(reconciler):
    import kopf

    body = resource()
    body["spec"]["sink"]["storage"]["warnAtPercent"] = 150
    api = FakeKube(body)
    with pytest.raises(kopf.PermanentError):
        reconciler(api)
    found = by_type(api.statuses[-1])
    assert (found["Applied"]["reason"], found["Ready"]["reason"]) == ("InvalidSpec", "InvalidSpec")
    assert api.applied == []


def test_a_concurrent_sink_write_retries_instead_of_overwriting(reconciler, monkeypatch):
    import kopf

    from iotsec.k8s.kube import ApiError

    api = FakeKube(resource())
    api.body["metadata"]["resourceVersion"] = "41"
    seen: list[Any] = []

    def conflict(api_version, kind, name, status, namespace=None, resource_version=None):
        seen.append(resource_version)
        raise ApiError("write status of AuditPolicy: 409 Conflict", 409)

    monkeypatch.setattr(api, "patch_status", conflict)
    with pytest.raises(kopf.TemporaryError):
        reconciler(api)
    assert seen == ["41"], "the status write carries the resourceVersion it read"


def test_a_sink_that_stopped_reporting_is_flagged_by_the_operator():
    from datetime import timedelta

    spec = AuditPolicySpec.model_validate({"sink": {"canary": {"interval": "1m", "deadline": "2m"}}})
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    body = {"metadata": {"generation": 3}, "status": {}}
    assert builder.silent_sink(body, spec, now) is None  # never reported: Ready says AwaitingSink instead
    body["status"]["lastCanarySeen"] = (now - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    assert builder.silent_sink(body, spec, now) is None  # within interval + deadline + margin (6 min)
    body["status"]["lastCanarySeen"] = (now - timedelta(minutes=7)).isoformat().replace("+00:00", "Z")
    silent = builder.silent_sink(body, spec, now)
    assert (silent["type"], silent["status"], silent["reason"]) == ("AuditPipelineBroken", "True", "SinkSilent")
    assert "420s ago" in silent["message"]
    ready = builder.ready_condition([{"type": "Applied", "status": "True"}, silent], 3)
    assert (ready["status"], ready["reason"]) == ("False", "AuditPipelineBroken")


def _secret_data(api: FakeKube, name: str) -> dict[str, str]:
    import base64

    secret = api.get("v1", "Secret", name, NAMESPACE)
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_reconcile_issues_the_sink_certificate_and_the_api_servers_client_identity(reconciler):
    from cryptography import x509

    from iotsec.pki import certs

    api = FakeKube(resource())  # the example authenticates the API server by client certificate
    reconciler(api)
    tls = _secret_data(api, builder.tls_secret_name(NAME))
    cert = x509.load_pem_x509_certificate(tls["tls.crt"].encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    service = builder.sink_name(NAME)
    assert f"{service}.{NAMESPACE}.svc" in sans.get_values_for_type(x509.DNSName)
    assert "10.96.0.50" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]  # https://<clusterIP>/audit
    now = datetime.now(UTC)
    assert certs.verify_chain(tls["tls.crt"], tls["ca-bundle.crt"], now)
    client = _secret_data(api, builder.client_secret_name(NAME))
    assert certs.verify_chain(client["client.crt"], client["ca.crt"], now)  # the sink's --client-ca trusts it
    secrets_applied = sum(1 for obj, _ in api.applied if obj["kind"] == "Secret")
    assert secrets_applied == 2
    reconciler(api)
    assert sum(1 for obj, _ in api.applied if obj["kind"] == "Secret") == 2, "valid credentials are kept as they are"


def test_credentials_the_user_provides_are_never_touched(reconciler):
    api = FakeKube(resource())
    user_secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": builder.tls_secret_name(NAME)}}
    api.applied.append(({**user_secret, "data": {"tls.crt": "dXNlcg=="}}, None))  # from cert-manager, say
    reconciler(api)
    tls_writes = [
        o for o, _ in api.applied if o["kind"] == "Secret" and o["metadata"]["name"] == user_secret["metadata"]["name"]
    ]
    assert len(tls_writes) == 1


def test_a_bearer_token_is_created_once_and_a_changed_mode_replaces_the_credentials(reconciler):
    body = resource()
    body["spec"]["sink"]["authentication"] = "bearerToken"
    api = FakeKube(body)
    reconciler(api)
    token = _secret_data(api, builder.client_secret_name(NAME))["token"]
    assert len(token) >= 32
    reconciler(api)
    assert _secret_data(api, builder.client_secret_name(NAME))["token"] == token
    api.body["spec"]["sink"]["authentication"] = "clientCertificate"
    warnings = reconciler(api)
    assert set(_secret_data(api, builder.client_secret_name(NAME))) == {"ca.crt", "ca.key", "client.crt", "client.key"}
    assert any(reason == "SinkClientCredentials" and "--from-cluster" in message for reason, message in warnings)


def test_client_credentials_are_kept_renewed_and_replaced_with_their_ca():
    from datetime import timedelta

    from iotsec.pki import certs

    now = datetime(2026, 11, 28, tzinfo=UTC)
    first, reasons = certs.ensure_client_auth(None, "kube-apiserver", now)
    assert reasons == ["created client CA and certificate"]
    assert certs.ensure_client_auth(first, "kube-apiserver", now + timedelta(days=300)) == (first, [])
    renewed, reasons = certs.ensure_client_auth(first, "kube-apiserver", now + timedelta(days=340))
    assert renewed.ca == first.ca
    assert renewed.client != first.client
    assert "reissued" in reasons[0]
    assert certs.verify_chain(renewed.client.cert_pem, first.ca.cert_pem, now + timedelta(days=340))
    replaced, reasons = certs.ensure_client_auth(first, "kube-apiserver", now + timedelta(days=3300))
    assert replaced.ca != first.ca
    assert "client CA close to expiry" in reasons[0]
    assert certs.ClientAuth.from_secret_data(first.to_secret_data()) == first


# --- the signing key: created by the operator once, never overwritten, never replaced unasked ------------------


def _signing(api: FakeKube) -> list[dict[str, Any]]:
    name = builder.signing_secret_name(NAME)
    return [o for o in api.created if o["kind"] == "Secret" and o["metadata"]["name"] == name]


def _key_gauge() -> float | None:
    from prometheus_client import REGISTRY

    ref = f"{NAMESPACE}/{builder.signing_secret_name(NAME)}"
    return REGISTRY.get_sample_value("iotsec_key_unreadable", {"secret": ref})


def test_the_operator_creates_the_signing_key_once_without_an_owner(reconciler):
    from iotsec.audittrail.chain import private_key_from_pem

    api = FakeKube(resource())
    reconciler(api)
    (secret,) = _signing(api)
    labels = secret["metadata"]["labels"]
    assert (labels[MANAGED_BY], labels[OWNER_KIND], labels[OWNER_NAME]) == ("iotsec", "AuditPolicy", NAME)
    assert "ownerReferences" not in secret["metadata"], "deleting the policy keeps the key with the store"
    import base64

    private_key_from_pem(base64.b64decode(secret["data"]["ed25519.key"]), "the created key")
    assert not [o for o, _ in api.applied if o["kind"] == "Secret" and o["metadata"] == secret["metadata"]]
    reconciler(api)
    assert len(_signing(api)) == 1, "created once: never applied, never overwritten"
    assert _key_gauge() == 0


def _existing_signing_key(api: FakeKube, data: dict[str, str], **metadata: Any) -> dict[str, Any]:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": builder.signing_secret_name(NAME), "namespace": NAMESPACE, **metadata},
        "data": data,
    }
    api.created.append(secret)
    return copy.deepcopy(secret)


def test_a_key_an_earlier_sink_made_is_used_as_it_is(reconciler):
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from iotsec.audittrail.chain import private_pem

    api = FakeKube(resource())
    pem = base64.b64encode(private_pem(Ed25519PrivateKey.generate())).decode()
    before = _existing_signing_key(
        api, {"ed25519.key": pem}, labels={"app.kubernetes.io/managed-by": "iotsec-audit-sink"}
    )
    reconciler(api)
    assert _signing(api) == [before]
    assert by_type(api.statuses[-1])["SigningKeyReadable"]["status"] == "True"


@pytest.mark.parametrize(
    ("data", "why"),
    [({}, "missing key 'ed25519.key'"), ({"ed25519.key": "bm90IGEga2V5"}, "ed25519.key"), ({"ed25519.key": "%%%"}, "")],
)
def test_an_unreadable_signing_key_is_reported_never_replaced(reconciler, data, why):
    api = FakeKube(resource())
    before = _existing_signing_key(api, data, labels={OWNER_KIND: "AuditPolicy", OWNER_NAME: NAME})
    warnings = reconciler(api)
    assert _signing(api) == [before], "left exactly as it is"
    assert api.deleted == []
    found = by_type(api.statuses[-1])
    key = found["SigningKeyReadable"]
    assert (key["status"], key["reason"]) == ("False", "KeyUnreadable")
    assert why in key["message"]
    assert "iotsec.io/replace-unreadable=true" in key["message"]
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("False", "KeyUnreadable")
    assert [reason for reason, _ in warnings] == ["KeyUnreadable"]
    assert _key_gauge() == 1
    reconciler(api)
    assert [reason for reason, _ in warnings] == ["KeyUnreadable"], "one Warning per episode"
    assert _signing(api) == [before]


def test_a_person_annotating_the_unreadable_key_has_it_replaced(reconciler):
    api = FakeKube(resource())
    _existing_signing_key(api, {"ed25519.key": "bm90IGEga2V5"}, annotations={"iotsec.io/replace-unreadable": "true"})
    warnings = reconciler(api)
    assert api.deleted == [], "replaced in one write: readers never find the Secret missing"
    assert api.replaced == [("Secret", builder.signing_secret_name(NAME))]
    (secret,) = _signing(api)
    assert (
        "annotations" not in secret["metadata"]
        or "iotsec.io/replace-unreadable" not in secret["metadata"]["annotations"]
    )
    assert by_type(api.statuses[-1])["SigningKeyReadable"]["status"] == "True"
    assert [reason for reason, _ in warnings] == ["SigningKeyReplaced"]
    assert _key_gauge() == 0


def test_a_key_written_between_the_judgement_and_the_replacement_is_kept(reconciler):
    """The replacement is a compare-and-swap at the version judged unreadable: a person who fixes the Secret (or
    another replica that replaced it) in between wins, and that key is read and used, never overwritten."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from iotsec.audittrail.chain import private_pem

    api = FakeKube(resource())
    _existing_signing_key(api, {"ed25519.key": "bm90IGEga2V5"}, annotations={"iotsec.io/replace-unreadable": "true"})
    fixed = copy.deepcopy(_signing(api)[0])
    fixed["data"] = {"ed25519.key": base64.b64encode(private_pem(Ed25519PrivateKey.generate())).decode()}
    fixed["metadata"]["annotations"] = {}
    api.written_meanwhile = fixed
    warnings = reconciler(api)
    assert (api.deleted, api.replaced) == ([], [])
    assert _signing(api) == [fixed]
    assert by_type(api.statuses[-1])["SigningKeyReadable"]["status"] == "True"
    assert warnings == []


def test_the_replace_annotation_never_replaces_a_readable_signing_key(reconciler):
    """Review finding: the annotation alone deleted a readable key, ending the chain's key behind its back."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from iotsec.audittrail.chain import private_pem

    api = FakeKube(resource())
    pem = base64.b64encode(private_pem(Ed25519PrivateKey.generate())).decode()
    before = _existing_signing_key(api, {"ed25519.key": pem}, annotations={"iotsec.io/replace-unreadable": "true"})
    warnings = reconciler(api)
    assert api.deleted == []
    assert _signing(api) == [before]
    assert by_type(api.statuses[-1])["SigningKeyReadable"]["status"] == "True"
    assert warnings == []
