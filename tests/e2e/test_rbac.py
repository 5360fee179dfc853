"""The chart's RBAC on a real API server: the operator and the webhook work with exactly it, and no more."""

from __future__ import annotations

import base64
import contextlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.conftest import ROOT
from tests.e2e.conftest import eventually
from tests.e2e.processes import Operator, WebhookProcess

SUFFIX = uuid.uuid4().hex[:5]
RELEASE, NAMESPACE = f"rbac{SUFFIX}", f"iotsec-rbac-{SUFFIX}"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


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
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            dynamic.delete(resource, name=obj["metadata"]["name"])
    core.delete_namespace(NAMESPACE)


def _kubeconfig_for(api_client, account: str, folder: Path) -> Path:
    """A kubeconfig holding the ServiceAccount's own token (1.20's token controller makes one per account)."""
    core = client.CoreV1Api(api_client)

    def token() -> str | None:
        for secret in core.list_namespaced_secret(NAMESPACE).items:
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
        ("get", "secrets", "", "kube-system", "anything", True),  # by name, as the table explains
        ("impersonate", "users", "", None, None, False),
        ("impersonate", "groups", "", None, None, False),
        ("escalate", "clusterroles", "rbac.authorization.k8s.io", None, None, False),
        ("bind", "clusterroles", "rbac.authorization.k8s.io", None, None, False),
        ("create", "clusterrolebindings", "rbac.authorization.k8s.io", None, None, False),
        ("patch", "validatingwebhookconfigurations", "admissionregistration.k8s.io", None, "someone-elses", False),
        ("patch", "validatingwebhookconfigurations", "admissionregistration.k8s.io", None, "iotsec", True),
        ("delete", "pods", "", "kube-system", None, False),
        ("create", "deployments", "apps", "default", None, False),
        ("create", "networkpolicies", "networking.k8s.io", "tenant-ns", None, True),
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

        eventually(
            applied, timeout=60, what="AuditPolicy applied (sink in the release namespace) under the chart's RBAC"
        )
        core.read_namespaced_secret("iotsec-app-svc-key", f"{tenant}-a")
        core.read_namespaced_secret(f"{RELEASE}-webhook-tls", NAMESPACE)
        forbidden = [line for line in running.log().splitlines() if " 403 " in line or "Forbidden" in line]
        assert forbidden == [], "\n".join(forbidden[:5])
    finally:
        running.stop()
        for plural, name in (("tenantisolations", tenant), ("securitydomains", domain), ("auditpolicies", audit)):
            with contextlib.suppress(ApiException):
                custom.delete_cluster_custom_object("iotsec.io", "v1alpha1", plural, name)


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
