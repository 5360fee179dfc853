"""AuditPolicy on a real API server: the operator applies the policy, canary, store claim and sink, keeps the
sink's conditions, derives Ready from them, and never lets the audit trail go with the policy."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from iotsec.build import audit as builder
from iotsec.build.apiserver_audit import level_for
from tests.e2e.conftest import eventually
from tests.e2e.processes import Operator

SUFFIX = uuid.uuid4().hex[:5]
NAMESPACE, POLICY = f"iotsec-audit-{SUFFIX}", f"trail-{SUFFIX}"  # the audit namespace the sinks live in
RELEASE_NAMESPACE = f"iotsec-rel-{SUFFIX}"  # where the operator and the webhook run: no sink object there
GROUP, VERSION, PLURAL = "iotsec.io", "v1alpha1", "auditpolicies"
SPEC = {
    "rules": [{"level": "RequestResponse", "resources": [{"group": "apps", "resources": ["deployments"]}]}],
    "sink": {"authentication": "bearerToken", "storage": {"size": "2Gi"}},
    "backupPolicyRef": {"name": "audit-store"},
    "trustedAdminGroups": ["platform:sre"],
}


@pytest.fixture(scope="module")
def policy(crds, core, custom, tmp_path_factory) -> Iterator[None]:
    for name in (NAMESPACE, RELEASE_NAMESPACE):
        core.create_namespace({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})
    operator = Operator(tmp_path_factory.mktemp("audit-operator") / "operator.log")
    operator.start(
        IOTSEC_WEBHOOK_NAMESPACE=RELEASE_NAMESPACE,
        IOTSEC_AUDIT_NAMESPACE=NAMESPACE,
        IOTSEC_IMAGE="registry.example.com/iotsec/iotsec@sha256:" + "a" * 64,
        IOTSEC_OPERATOR_USERS="system:serviceaccount:iotsec-system:iotsec-operator",
    )
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AuditPolicy", "metadata": {"name": POLICY}, "spec": SPEC}
    custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    yield
    try:
        custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, POLICY)
    except ApiException as exc:
        if exc.status != 404:
            raise
    operator.stop()
    for name in (NAMESPACE, RELEASE_NAMESPACE):
        core.delete_namespace(name)


def _present(read):
    """For `eventually`: the object, or None while the API answers 404."""

    def attempt():
        try:
            return read()
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    return attempt


def _status(custom) -> dict[str, Any]:
    return custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, POLICY).get("status") or {}


def _conditions(custom) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in _status(custom).get("conditions", [])}


def test_the_policy_configmap_renders_the_spec(policy, core):
    name = f"iotsec-audit-policy-{POLICY}"
    config_map = eventually(_present(lambda: core.read_namespaced_config_map(name, NAMESPACE)), what="policy ConfigMap")
    rendered = yaml.safe_load(config_map.data["policy.yaml"])
    assert rendered["kind"] == "Policy"
    assert level_for(rendered, user="bob", verb="patch", group="apps", resource="deployments") == "RequestResponse"
    assert level_for(rendered, user="bob", verb="get", resource="secrets") == "Metadata"
    canary = builder.canary_name(POLICY)
    assert level_for(rendered, user="x", verb="patch", resource="configmaps", namespace=NAMESPACE, name=canary) == (
        "Request"
    )


def test_sink_objects_are_applied_and_the_store_is_not_owned(policy, core, api_client):
    apps = client.AppsV1Api(api_client)
    deployment = eventually(
        _present(lambda: apps.read_namespaced_deployment(builder.sink_name(POLICY), NAMESPACE)),
        what="sink Deployment",
    )
    args = deployment.spec.template.spec.containers[0].args
    assert "--token-file" in args
    assert "--signing-key-readonly" in args
    assert "--signing-key-secret" not in args
    volumes = {v.name: v for v in deployment.spec.template.spec.volumes}
    assert volumes["signing-key"].secret.secret_name == builder.signing_secret_name(POLICY)
    mounts = {m.name: m for m in deployment.spec.template.spec.containers[0].volume_mounts}
    assert mounts["signing-key"].read_only
    assert deployment.spec.strategy.type == "Recreate"
    assert deployment.metadata.owner_references[0].kind == "AuditPolicy"
    claim = core.read_namespaced_persistent_volume_claim(builder.store_claim_name(POLICY), NAMESPACE)
    assert claim.spec.resources.requests["storage"] == "2Gi"
    assert not claim.metadata.owner_references  # deleting the policy must not take the audit trail with it
    assert core.read_namespaced_service(builder.sink_name(POLICY), NAMESPACE)
    canary = core.read_namespaced_config_map(builder.canary_name(POLICY), NAMESPACE)
    assert not canary.data  # the sink owns the nonce; the operator applies only the metadata


def test_nothing_of_the_sink_lands_in_the_release_namespace(policy, core, api_client):
    apps = client.AppsV1Api(api_client)
    eventually(
        _present(lambda: apps.read_namespaced_deployment(builder.sink_name(POLICY), NAMESPACE)),
        what="sink Deployment in the audit namespace",
    )
    eventually(
        _present(lambda: core.read_namespaced_secret(builder.tls_secret_name(POLICY), NAMESPACE)),
        what="sink TLS Secret in the audit namespace",
    )
    networking = client.NetworkingV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)
    found = {
        "Deployment": apps.list_namespaced_deployment(RELEASE_NAMESPACE).items,
        "Service": core.list_namespaced_service(RELEASE_NAMESPACE).items,
        "NetworkPolicy": networking.list_namespaced_network_policy(RELEASE_NAMESPACE).items,
        "Role": rbac.list_namespaced_role(RELEASE_NAMESPACE).items,
        "RoleBinding": rbac.list_namespaced_role_binding(RELEASE_NAMESPACE).items,
        "PersistentVolumeClaim": core.list_namespaced_persistent_volume_claim(RELEASE_NAMESPACE).items,
        "ConfigMap": [
            c for c in core.list_namespaced_config_map(RELEASE_NAMESPACE).items if "audit" in c.metadata.name
        ],
        "Secret": [s for s in core.list_namespaced_secret(RELEASE_NAMESPACE).items if "audit" in s.metadata.name],
    }
    assert {kind: [o.metadata.name for o in items] for kind, items in found.items() if items} == {}


def test_status_waits_for_the_sink_and_flags_the_missing_backup_policy(policy, custom):
    def reported() -> dict[str, dict[str, Any]]:
        found = _conditions(custom)
        assert found.get("Applied", {}).get("status") == "True", found
        return found

    found = eventually(reported, what="Applied condition")
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("False", "AwaitingSink")
    assert (found["BackedUp"]["status"], found["BackedUp"]["reason"]) == ("False", "BackupPolicyMissing")
    assert _status(custom)["policyConfigMap"] == f"{NAMESPACE}/iotsec-audit-policy-{POLICY}"


def test_the_sinks_conditions_are_kept_and_make_it_ready(policy, custom):
    eventually(lambda: "Applied" in _conditions(custom), what="Applied condition")
    current = list(_conditions(custom).values())
    sink_report = {
        "type": "AuditPipelineBroken",
        "status": "False",
        "reason": "CanaryArrived",
        "message": "last canary arrived",
        "lastTransitionTime": "2026-11-28T00:00:00Z",
    }
    status = {"records": 42, "conditions": [c for c in current if c["type"] != "AuditPipelineBroken"] + [sink_report]}
    custom.patch_cluster_custom_object_status(GROUP, VERSION, PLURAL, POLICY, {"status": status})
    custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, POLICY, {"spec": {"sink": {"retention": "500d"}}})

    def recording() -> dict[str, dict[str, Any]]:
        found = _conditions(custom)
        assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("True", "Recording"), found
        return found

    found = eventually(recording, what="Ready once the sink reports")
    assert found["AuditPipelineBroken"]["reason"] == "CanaryArrived"
    assert _status(custom)["records"] == 42


def test_the_operator_issues_the_sink_credentials_and_the_cli_writes_the_api_servers_kubeconfig(policy, core):
    import base64
    import subprocess
    import sys
    from datetime import UTC, datetime

    from iotsec.pki import certs

    tls_name, client_name = builder.tls_secret_name(POLICY), builder.client_secret_name(POLICY)
    tls = eventually(_present(lambda: core.read_namespaced_secret(tls_name, NAMESPACE)), what="sink TLS Secret")
    client = eventually(_present(lambda: core.read_namespaced_secret(client_name, NAMESPACE)), what="client Secret")
    tls_data = {k: base64.b64decode(v).decode() for k, v in tls.data.items()}
    token = base64.b64decode(client.data["token"]).decode()
    cluster_ip = core.read_namespaced_service(builder.sink_name(POLICY), NAMESPACE).spec.cluster_ip
    done = subprocess.run(
        [sys.executable, "-m", "iotsec", "audit", "policy", "--from-cluster", POLICY, "--namespace", NAMESPACE,
         "--webhook-kubeconfig"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == f"https://{cluster_ip}:443/audit"
    ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    assert certs.verify_chain(tls_data["tls.crt"], ca, datetime.now(UTC))  # the API server will trust the sink
    assert config["users"][0]["user"]["token"] == token


def _sink_may(api_client, verb: str, resource: str, name: str | None = None) -> bool:
    """What the API server's RBAC says the sink's ServiceAccount may do in the audit namespace."""
    attributes = {"verb": verb, "resource": resource, "namespace": NAMESPACE, **({"name": name} if name else {})}
    review = client.AuthorizationV1Api(api_client).create_subject_access_review(
        {"spec": {"user": f"system:serviceaccount:{NAMESPACE}:iotsec-audit-sink", "resourceAttributes": attributes}}
    )
    return bool(review.status.allowed)


def test_the_operator_keeps_the_signing_key_and_the_sink_may_touch_only_its_canary(policy, core, api_client):
    import base64

    from iotsec.audittrail.chain import private_key_from_pem

    key_name = builder.signing_secret_name(POLICY)
    secret = eventually(_present(lambda: core.read_namespaced_secret(key_name, NAMESPACE)), what="signing key")
    assert not secret.metadata.owner_references, "deleting the policy keeps the key with the store"
    private_key_from_pem(base64.b64decode(secret.data["ed25519.key"]), "the operator's key")
    rbac = client.RbacAuthorizationV1Api(api_client)
    role = eventually(
        _present(lambda: rbac.read_namespaced_role(builder.canary_role_name(POLICY), NAMESPACE)), what="canary Role"
    )
    assert role.rules[0].resource_names == [builder.canary_name(POLICY)]
    eventually(
        lambda: _sink_may(api_client, "patch", "configmaps", builder.canary_name(POLICY)), what="the canary grant"
    )
    assert _sink_may(api_client, "get", "configmaps", builder.canary_name(POLICY))
    assert not _sink_may(api_client, "patch", "configmaps", f"iotsec-device-registry-{SUFFIX}")
    assert not _sink_may(api_client, "get", "secrets", key_name), "the key is a volume, not an API read"
    assert not _sink_may(api_client, "get", "secrets", "iotsec-webhook-tls")
    assert not _sink_may(api_client, "create", "secrets")
    assert not _sink_may(api_client, "list", "secrets")


def test_an_unreadable_signing_key_is_reported_and_kept_until_a_person_says_replace(policy, core, custom):
    other = f"unreadable-{SUFFIX}"
    key_name = builder.signing_secret_name(other)
    damaged = {"ed25519.key": base64_text("not a key")}
    core.create_namespaced_secret(NAMESPACE, {"metadata": {"name": key_name}, "data": damaged})
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AuditPolicy", "metadata": {"name": other}, "spec": SPEC}
    custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    try:

        def reported() -> dict[str, Any]:
            status = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, other).get("status") or {}
            found = {c["type"]: c for c in status.get("conditions", [])}
            assert found.get("Ready", {}).get("reason") == "KeyUnreadable", found
            return found

        found = eventually(reported, what="Ready=False KeyUnreadable")
        assert found["SigningKeyReadable"]["status"] == "False"
        events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={other}").items
        assert any(e.reason == "KeyUnreadable" and e.type == "Warning" for e in events)
        assert core.read_namespaced_secret(key_name, NAMESPACE).data == damaged, "never overwritten"
        core.patch_namespaced_secret(
            key_name, NAMESPACE, {"metadata": {"annotations": {"iotsec.io/replace-unreadable": "true"}}}
        )
        eventually(lambda: core.read_namespaced_secret(key_name, NAMESPACE).data != damaged, what="replaced on request")
    finally:
        custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, other)


def base64_text(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()
