"""The chart's RBAC on a real API server: the operator and the webhook work with exactly it, and no more."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from iotsec.build import audit as audit_builder
from tests.conftest import ROOT
from tests.e2e.conftest import eventually
from tests.e2e.processes import Operator, WebhookProcess

SUFFIX = uuid.uuid4().hex[:5]
RELEASE, NAMESPACE = f"rbac{SUFFIX}", f"iotsec-rbac-{SUFFIX}"
AUDIT = f"{RELEASE}-audit"  # the chart's audit namespace: the sinks, apart from the webhook
RBAC_KINDS = ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


def _helm() -> str:
    found = Path(sys.executable).parent / "helm"
    return str(found) if found.is_file() else "helm"


def _chart_rbac() -> list[dict[str, Any]]:
    rendered = subprocess.run(
        [_helm(), "template", RELEASE, str(ROOT / "charts" / "iotsec-operator"), "--namespace", NAMESPACE],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in RBAC_KINDS]


@pytest.fixture(scope="module")
def installed(api_client, crds) -> Iterator[list[dict[str, Any]]]:
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": NAMESPACE, "labels": {"kubernetes.io/metadata.name": NAMESPACE}}})
    dynamic = __import__("kubernetes.dynamic", fromlist=["DynamicClient"]).DynamicClient(api_client)
    objects = _chart_rbac()
    for obj in objects:
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        dynamic.create(resource, body=obj, namespace=obj["metadata"].get("namespace"))
    yield objects
    for obj in objects:
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding", "Namespace"):
            resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            dynamic.delete(resource, name=obj["metadata"]["name"])
    core.delete_namespace(NAMESPACE)


def _kubeconfig_for(api_client, account: str, folder: Path, namespace: str = NAMESPACE) -> Path:
    """A kubeconfig holding the ServiceAccount's own token (1.20's token controller makes one per account)."""
    core = client.CoreV1Api(api_client)

    def token() -> str | None:
        for secret in core.list_namespaced_secret(namespace).items:
            annotations = secret.metadata.annotations or {}
            if (
                secret.type == "kubernetes.io/service-account-token"
                and annotations.get("kubernetes.io/service-account.name") == account
            ):
                return base64.b64decode(secret.data["token"]).decode()
        return None

    value = eventually(token, timeout=60, what=f"a token for {account}")
    admin = yaml.safe_load(Path(__import__("os").environ["KUBECONFIG"]).read_text())
    cluster = admin["clusters"][0]
    path = folder / f"{account}.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": account, "user": {"token": value}}],
                "contexts": [{"name": account, "context": {"cluster": cluster["name"], "user": account}}],
                "current-context": account,
            }
        )
    )
    return path


def _can(
    kubeconfig: Path, verb: str, resource: str, group: str = "", namespace: str | None = None, name: str | None = None
) -> bool:
    api = client.AuthorizationV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    attributes: dict[str, Any] = {"verb": verb, "resource": resource, "group": group}
    if namespace:
        attributes["namespace"] = namespace
    if name:
        attributes["name"] = name
    review = api.create_self_subject_access_review({"spec": {"resourceAttributes": attributes}})
    return bool(review.status.allowed)


@pytest.fixture(scope="module")
def operator_kubeconfig(api_client, installed, tmp_path_factory) -> Path:
    return _kubeconfig_for(api_client, f"{RELEASE}-operator", tmp_path_factory.mktemp("rbac"))


@pytest.fixture(scope="module")
def webhook_kubeconfig(api_client, installed, tmp_path_factory) -> Path:
    return _kubeconfig_for(api_client, f"{RELEASE}-webhook", tmp_path_factory.mktemp("rbac-webhook"))


@pytest.mark.parametrize(
    ("verb", "resource", "group", "namespace", "name", "allowed"),
    [
        ("list", "secrets", "", None, None, False),
        ("list", "secrets", "", "kube-system", None, False),
        ("get", "secrets", "", "kube-system", "anything", False),  # only where it was granted
        ("get", "secrets", "", NAMESPACE, "anything", True),  # platform keys in the release namespace
        ("escalate", "roles", "rbac.authorization.k8s.io", "kube-system", None, False),
        ("create", "roles", "rbac.authorization.k8s.io", "kube-system", None, False),
        ("create", "cronjobs", "batch", "kube-system", None, False),
        ("patch", "configmaps", "", "kube-system", None, False),
        ("create", "pods", "", "kube-system", None, False),
        ("bind", "clusterroles", "rbac.authorization.k8s.io", None, "admin", False),
        ("bind", "clusterroles", "rbac.authorization.k8s.io", None, f"{RELEASE}-operator-namespace", True),
        ("impersonate", "users", "", None, None, False),
        ("impersonate", "groups", "", None, None, False),
        ("escalate", "clusterroles", "rbac.authorization.k8s.io", None, None, False),
        ("bind", "clusterroles", "rbac.authorization.k8s.io", None, None, False),
        ("create", "clusterrolebindings", "rbac.authorization.k8s.io", None, None, False),
        ("patch", "validatingwebhookconfigurations", "admissionregistration.k8s.io", None, "someone-elses", False),
        ("patch", "validatingwebhookconfigurations", "admissionregistration.k8s.io", None, "iotsec", True),
        ("watch", "validatingwebhookconfigurations", "admissionregistration.k8s.io", None, None, True),
        ("delete", "validatingwebhookconfigurations", "admissionregistration.k8s.io", None, "iotsec", False),
        ("delete", "pods", "", "kube-system", None, False),
        ("create", "deployments", "apps", "default", None, False),
        ("create", "networkpolicies", "networking.k8s.io", "tenant-ns", None, False),  # until granted there
        # the release namespace, where the webhook runs: keys and registries, nothing that runs, routes or binds
        ("create", "deployments", "apps", NAMESPACE, None, False),
        ("patch", "deployments", "apps", NAMESPACE, f"{RELEASE}-webhook", False),
        ("delete", "services", "", NAMESPACE, f"{RELEASE}-webhook", False),
        ("create", "networkpolicies", "networking.k8s.io", NAMESPACE, None, False),
        ("create", "roles", "rbac.authorization.k8s.io", NAMESPACE, None, False),
        ("create", "persistentvolumeclaims", "", NAMESPACE, None, False),
        ("create", "pods", "", NAMESPACE, None, False),
        # the audit namespace: the sinks
        ("create", "deployments", "apps", AUDIT, None, True),
        ("create", "services", "", AUDIT, None, True),
        ("create", "networkpolicies", "networking.k8s.io", AUDIT, None, True),
        ("list", "secrets", "", AUDIT, None, False),
        ("delete", "persistentvolumeclaims", "", AUDIT, None, False),  # the trail outlives its policy
    ],
)
def test_operator_permissions_are_the_table(operator_kubeconfig, verb, resource, group, namespace, name, allowed):
    assert _can(operator_kubeconfig, verb, resource, group, namespace, name) is allowed


@pytest.mark.parametrize(
    ("verb", "resource", "group", "namespace", "name", "allowed"),
    [
        ("list", "securitydomains", "iotsec.io", None, None, True),
        ("patch", "securitydomains", "iotsec.io", None, None, False),
        ("list", "secrets", "", NAMESPACE, None, False),
        ("get", "secrets", "", NAMESPACE, f"{RELEASE}-webhook-tls", True),
        ("get", "secrets", "", NAMESPACE, "another-secret", False),
        ("create", "networkpolicies", "networking.k8s.io", NAMESPACE, None, False),
    ],
)
def test_webhook_permissions_are_read_only(webhook_kubeconfig, verb, resource, group, namespace, name, allowed):
    assert _can(webhook_kubeconfig, verb, resource, group, namespace, name) is allowed


def test_the_operator_does_its_job_with_exactly_the_chart_permissions(operator_kubeconfig, api_client, tmp_path):
    custom = client.CustomObjectsApi(api_client)
    core = client.CoreV1Api(api_client)
    domain, tenant = f"rbac-core-{SUFFIX}", f"r{SUFFIX}"
    custom.create_cluster_custom_object(
        "iotsec.io",
        "v1alpha1",
        "securitydomains",
        {
            "apiVersion": "iotsec.io/v1alpha1",
            "kind": "SecurityDomain",
            "metadata": {"name": domain},
            "spec": {"zone": "core", "namespaceSelector": {"matchLabels": {"iotsec.io/security-domain": domain}}},
        },
    )
    custom.create_cluster_custom_object(
        "iotsec.io",
        "v1alpha1",
        "tenantisolations",
        {
            "apiVersion": "iotsec.io/v1alpha1",
            "kind": "TenantIsolation",
            "metadata": {"name": tenant},
            "spec": {
                "tenantID": tenant,
                "securityDomain": domain,
                "namespaces": [f"{tenant}-a"],
                "userClasses": [{"name": "ops", "privilege": "operator", "groups": ["ops"]}],
                "applicationClasses": [
                    {"name": "app", "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]}
                ],
                "applications": [{"name": "svc", "class": "app", "namespace": f"{tenant}-a"}],
            },
        },
    )
    audit = f"rbac-audit-{SUFFIX}"
    custom.create_cluster_custom_object(
        "iotsec.io",
        "v1alpha1",
        "auditpolicies",
        {"apiVersion": "iotsec.io/v1alpha1", "kind": "AuditPolicy", "metadata": {"name": audit}, "spec": {}},
    )
    running = Operator(tmp_path / "operator.log")
    running.start(
        KUBECONFIG=str(operator_kubeconfig),
        IOTSEC_RELEASE=RELEASE,  # as the chart sets them: the grant binds <release>-operator-namespace
        IOTSEC_OPERATOR_SERVICE_ACCOUNT=f"{RELEASE}-operator",
        IOTSEC_WEBHOOK_SECRET_NAME=f"{RELEASE}-webhook-tls",
        IOTSEC_WEBHOOK_NAMESPACE=NAMESPACE,
        IOTSEC_WEBHOOK_EXTRA_DNS="localhost",
        IOTSEC_WEBHOOK_EXTRA_IPS="127.0.0.1",
    )
    try:

        def ready(plural: str, name: str) -> bool:
            status = custom.get_cluster_custom_object("iotsec.io", "v1alpha1", plural, name).get("status") or {}
            return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))

        eventually(lambda: ready("tenantisolations", tenant), timeout=90, what="tenant Ready under the chart's RBAC")
        eventually(lambda: ready("securitydomains", domain), timeout=60, what="domain Ready under the chart's RBAC")

        def applied() -> bool:
            status = custom.get_cluster_custom_object("iotsec.io", "v1alpha1", "auditpolicies", audit).get("status")
            return any(c["type"] == "Applied" and c["status"] == "True" for c in (status or {}).get("conditions", []))

        eventually(applied, timeout=60, what="AuditPolicy applied (sink in the audit namespace) under the chart's RBAC")
        core.read_namespaced_secret("iotsec-app-svc-key", f"{tenant}-a")
        core.read_namespaced_secret(f"{RELEASE}-webhook-tls", NAMESPACE)
        core.read_namespaced_secret(audit_builder.signing_secret_name(audit), AUDIT)  # the operator made it
        apps = client.AppsV1Api(api_client)
        assert apps.read_namespaced_deployment(audit_builder.sink_name(audit), AUDIT)
        assert [d.metadata.name for d in apps.list_namespaced_deployment(NAMESPACE).items] == []
        sink = _kubeconfig_for(api_client, f"{RELEASE}-audit-sink", tmp_path, AUDIT)
        canary = audit_builder.canary_name(audit)
        assert _can(sink, "patch", "configmaps", "", AUDIT, canary), "the per-policy grant, made under the chart"
        assert not _can(sink, "patch", "configmaps", "", NAMESPACE, canary)
        assert not _can(sink, "patch", "configmaps", "", NAMESPACE, f"iotsec-device-registry-{SUFFIX}")
        assert not _can(sink, "get", "secrets", "", AUDIT, audit_builder.signing_secret_name(audit))
        assert not _can(sink, "get", "secrets", "", NAMESPACE, f"{RELEASE}-webhook-tls")
        forbidden = [line for line in running.log().splitlines() if " 403 " in line or "Forbidden" in line]
        assert forbidden == [], "\n".join(forbidden[:5])
        _the_grant_leaves_with_the_namespace(api_client, operator_kubeconfig, f"{tenant}-stale")
    finally:
        running.stop()
        for plural, name in (("tenantisolations", tenant), ("securitydomains", domain), ("auditpolicies", audit)):
            with contextlib.suppress(ApiException):
                custom.delete_cluster_custom_object("iotsec.io", "v1alpha1", plural, name)


def _the_grant_leaves_with_the_namespace(api_client, operator_kubeconfig: Path, stale: str) -> None:
    """A grant left where iotsec no longer works is withdrawn by the operator itself, under the chart's RBAC."""
    from iotsec.model.platform import Platform, operator_grant

    core, rbac_api = client.CoreV1Api(api_client), client.RbacAuthorizationV1Api(api_client)
    core.create_namespace({"metadata": {"name": stale}})
    try:
        grant = operator_grant(Platform(NAMESPACE, RELEASE, f"{RELEASE}-operator"), stale)
        rbac_api.create_namespaced_role_binding(stale, grant)  # as if a tenant had listed it once
        assert _can(operator_kubeconfig, "get", "secrets", "", stale, "x")

        def withdrawn() -> bool:
            return not rbac_api.list_namespaced_role_binding(stale).items

        eventually(withdrawn, timeout=30, what="the stale grant withdrawn")
        assert not _can(operator_kubeconfig, "get", "secrets", "", stale, "x")
    finally:
        core.delete_namespace(stale)


def test_the_webhook_serves_with_exactly_the_chart_permissions(
    webhook_kubeconfig, operator_kubeconfig, api_client, tmp_path
):
    core = client.CoreV1Api(api_client)
    secret_name = f"{RELEASE}-webhook-tls"
    eventually(
        lambda: core.read_namespaced_secret(secret_name, NAMESPACE).data.get("ca-bundle.crt"),
        timeout=60,
        what="the webhook TLS Secret the operator keeps",
    )
    bundle = tmp_path / "ca.crt"
    bundle.write_bytes(base64.b64decode(core.read_namespaced_secret(secret_name, NAMESPACE).data["ca-bundle.crt"]))
    process = WebhookProcess(tmp_path / "webhook.log", f"{NAMESPACE}/{secret_name}")
    import os

    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(webhook_kubeconfig)
    try:
        process.start(bundle)  # ready = it loaded its certificate and the cluster state with its own token
    finally:
        os.environ["KUBECONFIG"] = previous or ""
        process.stop()
    assert "Forbidden" not in (tmp_path / "webhook.log").read_text()


# ---------------------------------------------------------------- escapes replayed as each identity

ESCAPE = f"esc-{SUFFIX}"
ACME, GLOBEX, UNMANAGED = f"{ESCAPE}-acme", f"{ESCAPE}-globex", f"{ESCAPE}-free"


def _kubectl(*args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    """kubectl; a write with --dry-run=server stands for a real one (RBAC, escalation checks, admission all run)."""
    found = Path(sys.executable).parent / "kubectl"
    if args[0] == "get":
        args = tuple(a for a in args if a != "--dry-run=server")
    command = [str(found) if found.is_file() else "kubectl", *args]
    if kubeconfig is not None:
        command += ["--kubeconfig", str(kubeconfig)]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


@pytest.fixture(scope="module")
def escape_ground(api_client, installed, tmp_path_factory, server_minor) -> Iterator[Path]:
    """Two tenants' namespaces (acme listed by a TenantIsolation), a namespace nobody manages, platform keys in
    the release namespace, the tenant operator class bound as the operator binds it, and the webhook's fence
    registered (platform.iotsec.io) with a url: client config."""
    from iotsec.build.webhook import client_config, validating_webhook_configuration
    from iotsec.pki import certs
    from tests.e2e.processes import WebhookProcess

    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    rbac_api, admission = client.RbacAuthorizationV1Api(api_client), client.AdmissionregistrationV1Api(api_client)
    for name in (ACME, GLOBEX, UNMANAGED):
        core.create_namespace({"metadata": {"name": name}})
    tenant = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "TenantIsolation",
        "metadata": {"name": ESCAPE},
        "spec": {"tenantID": f"e{SUFFIX}", "securityDomain": "none", "namespaces": [ACME]},
    }
    custom.create_cluster_custom_object("iotsec.io", "v1alpha1", "tenantisolations", tenant)
    for namespace, name in ((GLOBEX, "globex-app-key"), (NAMESPACE, "iotsec-device-ca-acme")):
        core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": {"ca.key": "secret"}})
    rbac_api.create_namespaced_role_binding(
        ACME,
        {
            "metadata": {"name": "iotsec-user-ops"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"{RELEASE}-tenant-operator",
            },
            "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "acme:operators"}],
        },
    )
    folder = tmp_path_factory.mktemp("fence")
    tls, _ = certs.ensure_webhook_tls(
        None, ["localhost"], ["127.0.0.1"], __import__("datetime").datetime.now(__import__("datetime").UTC)
    )
    core.create_namespaced_secret(
        NAMESPACE,
        {"metadata": {"name": "fence-tls"}, "type": "kubernetes.io/tls", "stringData": tls.to_secret_data()},
    )
    cafile = folder / "ca.crt"
    cafile.write_text(tls.bundle())
    process = WebhookProcess(folder / "webhook.log", f"{NAMESPACE}/fence-tls")
    import os

    saved = {
        k: os.environ.get(k) for k in ("IOTSEC_WEBHOOK_NAMESPACE", "IOTSEC_RELEASE", "IOTSEC_OPERATOR_SERVICE_ACCOUNT")
    }
    os.environ.update(
        IOTSEC_WEBHOOK_NAMESPACE=NAMESPACE,
        IOTSEC_RELEASE=RELEASE,
        IOTSEC_OPERATOR_SERVICE_ACCOUNT=f"{RELEASE}-operator",
    )
    configuration = validating_webhook_configuration(
        f"fence-{SUFFIX}",
        client_config(url=f"https://127.0.0.1:{process.port}/validate", ca_bundle=tls.bundle()),
        NAMESPACE,
        server_minor=server_minor,  # 1.20 drops matchConditions: the fence must not fail closed for everyone
    )
    configuration["webhooks"] = [w for w in configuration["webhooks"] if w["name"] == "platform.iotsec.io"]
    try:
        process.start(cafile)
        admission.create_validating_webhook_configuration(configuration)
        eventually(lambda: process.ready(cafile), timeout=30, what="fence webhook ready")
        time.sleep(2)  # the API server's webhook informer picks the configuration up asynchronously
        yield folder
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with contextlib.suppress(ApiException):
            admission.delete_validating_webhook_configuration(f"fence-{SUFFIX}")
        process.stop()
        with contextlib.suppress(ApiException):
            custom.delete_cluster_custom_object("iotsec.io", "v1alpha1", "tenantisolations", ESCAPE)
        for name in (ACME, GLOBEX, UNMANAGED):
            with contextlib.suppress(ApiException):
                core.delete_namespace(name)


def _refused(result: subprocess.CompletedProcess[str]) -> str:
    """'rbac' when RBAC said no, 'fence' when the operator fence said no; fails when the request went through."""
    text = result.stdout + result.stderr
    assert result.returncode != 0, f"went through: {text}"
    if "X1369-9.6.3-1" in text and "operator-confinement" in text:
        return "fence"
    assert "forbidden" in text.lower(), text
    return "rbac"


def _operator_escapes(ns_admin: str) -> list[tuple[str, list[str], str]]:
    operator = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-operator"
    return [
        (
            "Role */*/* in kube-system",
            ["create", "role", "x", "-n", "kube-system", "--verb=*", "--resource=*.*"],
            "rbac",
        ),
        (
            "RoleBinding to admin in kube-system",
            ["create", "rolebinding", "x", "-n", "kube-system", "--clusterrole=admin", f"--user={operator}"],
            "rbac",
        ),
        (
            "RoleBinding to its namespace role in kube-system",
            ["create", "rolebinding", "x", "-n", "kube-system", f"--clusterrole={ns_admin}", f"--user={operator}"],
            "fence",
        ),
        (
            "RoleBinding to its namespace role in a namespace nobody manages",
            ["create", "rolebinding", "x", "-n", UNMANAGED, f"--clusterrole={ns_admin}", f"--user={operator}"],
            "fence",
        ),
        (
            "RoleBinding to its namespace role in the release namespace",
            ["create", "rolebinding", "x", "-n", NAMESPACE, f"--clusterrole={ns_admin}", f"--user={operator}"],
            "fence",
        ),
        (
            "RoleBinding to its namespace role in the audit namespace",
            ["create", "rolebinding", "x", "-n", AUDIT, f"--clusterrole={ns_admin}", f"--user={operator}"],
            "fence",
        ),
        (
            "Deployment in the release namespace (privileged, as the webhook's ServiceAccount)",
            ["create", "deployment", "x", "-n", NAMESPACE, "--image=busybox:1.35"],
            "rbac",
        ),
        ("delete the webhook's Service", ["delete", "service", f"{RELEASE}-webhook", "-n", NAMESPACE], "rbac"),
        (
            "scale the webhook to zero",
            ["patch", "deployment", f"{RELEASE}-webhook", "-n", NAMESPACE, "-p", '{"spec":{"replicas":0}}'],
            "rbac",
        ),
        (
            "ClusterRoleBinding to cluster-admin",
            ["create", "clusterrolebinding", f"x{SUFFIX}", "--clusterrole=cluster-admin", f"--user={operator}"],
            "rbac",
        ),
        ("read a kube-system Secret", ["get", "secret", "x", "-n", "kube-system"], "rbac"),
        ("read another tenant's key", ["get", "secret", "globex-app-key", "-n", GLOBEX], "rbac"),
        ("list Secrets anywhere", ["get", "secrets", "-A"], "rbac"),
        (
            "CronJob in kube-system",
            ["create", "cronjob", "x", "-n", "kube-system", "--image=busybox:1.35", "--schedule=* * * * *"],
            "rbac",
        ),
        (
            "patch a kube-system ConfigMap",
            ["patch", "configmap", "x", "-n", "kube-system", "-p", '{"data":{"a":"b"}}'],
            "rbac",
        ),
        ("label kube-system", ["label", "namespace", "kube-system", "iotsec.io/tenant=x"], "fence"),
        ("claim a namespace for a tenant", ["label", "namespace", UNMANAGED, "iotsec.io/tenant=x"], "fence"),
        ("relabel a namespace", ["label", "namespace", ACME, "team=mallory"], "fence"),
        ("delete a namespace no tenant made", ["delete", "namespace", UNMANAGED], "fence"),
        ("delete the release namespace", ["delete", "namespace", NAMESPACE], "fence"),
        (
            "widen a tenant's namespaces",
            [
                "patch",
                "tenantisolation",
                ESCAPE,
                "--type=merge",
                "-p",
                json.dumps({"spec": {"namespaces": [ACME, UNMANAGED]}}),
            ],
            "fence",
        ),
    ]


def test_the_operator_identity_cannot_escape(escape_ground, operator_kubeconfig):
    answers = {}
    for what, args, _ in _operator_escapes(f"{RELEASE}-operator-namespace"):
        result = _kubectl(*args, "--dry-run=server", kubeconfig=operator_kubeconfig)
        answers[what] = _refused(result)
    expected = {what: by for what, _, by in _operator_escapes(f"{RELEASE}-operator-namespace")}
    assert answers == expected
    print("\n".join(f"operator: {what}: refused by {by}" for what, by in answers.items()))


@pytest.mark.parametrize("resource", ["deployments.apps", "services", "networkpolicies.networking.k8s.io"])
@pytest.mark.parametrize("verb", ["create", "patch", "delete"])
def test_the_operator_token_cannot_run_or_route_anything_where_the_webhook_runs(operator_kubeconfig, verb, resource):
    """`kubectl auth can-i` as the operator's own token: no privileged pod as the webhook's ServiceAccount, no
    deleted, patched or walled-off webhook (its Deployment, Service, a deny NetworkPolicy) in the release namespace;
    the same rights in the audit namespace, where the sinks are."""
    release = _kubectl("auth", "can-i", verb, resource, "-n", NAMESPACE, kubeconfig=operator_kubeconfig)
    assert (release.returncode, release.stdout.strip()) == (1, "no"), release.stdout + release.stderr
    audit = _kubectl("auth", "can-i", verb, resource, "-n", AUDIT, kubeconfig=operator_kubeconfig)
    assert (audit.returncode, audit.stdout.strip()) == (0, "yes"), audit.stdout + audit.stderr


def test_the_fence_lets_the_operator_do_its_job(escape_ground, operator_kubeconfig):
    """The positive control: in a namespace a TenantIsolation lists, the operator's grant goes through."""
    operator = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-operator"
    grant = [
        "create",
        "rolebinding",
        "x",
        "-n",
        ACME,
        f"--clusterrole={RELEASE}-operator-namespace",
        f"--user={operator}",
    ]
    result = _kubectl(*grant, "--dry-run=server", kubeconfig=operator_kubeconfig)
    assert result.returncode == 0, result.stderr
    label = _kubectl(
        "label", "namespace", ACME, f"iotsec.io/tenant=e{SUFFIX}", "--dry-run=server", kubeconfig=operator_kubeconfig
    )
    assert label.returncode == 0, label.stderr


@pytest.mark.parametrize(
    ("what", "args"),
    [
        ("create RoleBinding", ["create", "rolebinding", "x", "-n", "kube-system", "--clusterrole=admin", "--user=me"]),
        ("read a Secret", ["get", "secret", "x", "-n", "kube-system"]),
        ("read a platform key", ["get", "secret", "iotsec-device-ca-acme", "-n", NAMESPACE]),
        ("CronJob", ["create", "cronjob", "x", "-n", "kube-system", "--image=busybox:1.35", "--schedule=* * * * *"]),
        ("ConfigMap patch", ["patch", "configmap", "x", "-n", "kube-system", "-p", '{"data":{"a":"b"}}']),
        ("delete a namespace", ["delete", "namespace", GLOBEX]),
        ("NetworkPolicy", ["create", "-f", "-"]),
    ],
)
def test_the_webhook_and_sink_identities_cannot_escape(
    escape_ground, webhook_kubeconfig, api_client, tmp_path, what, args
):
    sink = _kubeconfig_for(api_client, f"{RELEASE}-audit-sink", tmp_path, AUDIT)
    for kubeconfig in (webhook_kubeconfig, sink):
        if args[-1] == "-":
            result = _apply_allow_all(ACME, kubeconfig=kubeconfig)
        else:
            result = _kubectl(*args, "--dry-run=server", kubeconfig=kubeconfig)
        assert _refused(result) == "rbac", (kubeconfig.name, what)


def _apply_allow_all(namespace: str, *extra: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-all", "namespace": namespace},
        "spec": {"podSelector": {}, "ingress": [{}], "egress": [{}], "policyTypes": ["Ingress", "Egress"]},
    }
    found = Path(sys.executable).parent / "kubectl"
    command = [str(found) if found.is_file() else "kubectl", "apply", "--dry-run=server", "-f", "-", *extra]
    if kubeconfig is not None:
        command += ["--kubeconfig", str(kubeconfig)]
    return subprocess.run(command, input=json.dumps(policy), capture_output=True, text=True, check=False, timeout=60)


def test_a_tenant_cannot_void_its_wall_or_read_platform_keys(escape_ground):
    mallory = ("--as=mallory", "--as-group=acme:operators")
    assert _kubectl("auth", "can-i", "create", "deployments", "-n", ACME, *mallory).stdout.strip() == "yes"
    assert _refused(_apply_allow_all(ACME, *mallory)) == "rbac"
    for verb in ("create", "patch", "delete"):
        assert _kubectl("auth", "can-i", verb, "networkpolicies", "-n", ACME, *mallory).stdout.strip() == "no"
    assert _refused(_kubectl("get", "secret", "iotsec-device-ca-acme", "-n", NAMESPACE, *mallory)) == "rbac"
    assert _refused(_kubectl("get", "secret", "globex-app-key", "-n", GLOBEX, *mallory)) == "rbac"
    assert (
        _refused(
            _kubectl(
                "create",
                "rolebinding",
                "x",
                "-n",
                ACME,
                "--clusterrole=admin",
                "--user=mallory",
                "--dry-run=server",
                *mallory,
            )
        )
        == "rbac"
    )
