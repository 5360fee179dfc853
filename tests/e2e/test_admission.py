"""Admission through the real chain: the API server calls `iotsec webhook` with the operator-managed CA."""

from __future__ import annotations

import base64
import copy
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

from iotsec.admission.snapshot import check
from iotsec.build.webhook import client_config, validating_webhook_configuration
from iotsec.model.manifests import Document, load_documents
from tests.conftest import EXAMPLES
from tests.e2e.conftest import eventually
from tests.e2e.processes import Operator, WebhookProcess

SYSTEM = f"iotsec-e2e-{uuid.uuid4().hex[:5]}"
SECRET = "iotsec-webhook-tls"
CONFIGURATION = f"iotsec-e2e-{uuid.uuid4().hex[:5]}"
WORKLOADS = EXAMPLES / "workloads"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def dynamic(api_client) -> DynamicClient:
    return DynamicClient(api_client)


@pytest.fixture(scope="module")
def platform(api_client, crds, dynamic) -> Iterator[list[str]]:
    """The example platform's namespaces and SecurityDomains, plus the operator's own namespace."""
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    created = []
    names = [d["metadata"]["name"] for d in _docs(EXAMPLES / "platform" / "00-namespaces.yaml")]
    for name in [*names, SYSTEM, "scratch"]:
        eventually(lambda name=name: _not_terminating(core, name), timeout=120, what=f"namespace {name} deleted")
        labels = {"kubernetes.io/metadata.name": name}
        try:
            core.create_namespace({"metadata": {"name": name, "labels": labels}})
            created.append(name)
        except ApiException as exc:
            if exc.status != 409:
                raise
            core.patch_namespace(name, {"metadata": {"labels": labels}})
    # 1.20 does not label namespaces with their name; the exclusions rely on it (1.21+ sets it itself)
    core.patch_namespace("kube-system", {"metadata": {"labels": {"kubernetes.io/metadata.name": "kube-system"}}})
    for storage_class in _docs(EXAMPLES / "platform" / "05-storageclass.yaml"):
        _create_or_exists(dynamic, storage_class)
    domains = list(_docs(EXAMPLES / "platform" / "10-securitydomains.yaml"))
    for domain in domains:
        _remove_domain(custom, domain["metadata"]["name"])  # leftovers of an interrupted run
        custom.create_cluster_custom_object("iotsec.io", "v1alpha1", "securitydomains", domain)
    yield names
    for domain in domains:
        _remove_domain(custom, domain["metadata"]["name"])
    for name in created:
        core.delete_namespace(name)


def _remove_domain(custom: client.CustomObjectsApi, name: str) -> None:
    """Delete a domain and, the operator being gone by now, release iotsec's finalizer ourselves."""
    args = ("iotsec.io", "v1alpha1", "securitydomains", name)
    try:
        custom.delete_cluster_custom_object(*args)
        custom.patch_cluster_custom_object(*args, {"metadata": {"finalizers": None}})
    except ApiException as exc:
        if exc.status != 404:
            raise
    eventually(lambda: _gone(custom, args), timeout=30, what=f"SecurityDomain {name} deleted")


def _gone(custom: client.CustomObjectsApi, args: tuple[str, ...]) -> bool:
    try:
        custom.get_cluster_custom_object(*args)
    except ApiException as exc:
        return exc.status == 404
    return False


@pytest.fixture(scope="module")
def operator(platform, tmp_path_factory) -> Iterator[Operator]:
    running = Operator(tmp_path_factory.mktemp("admission") / "operator.log")
    running.start(
        IOTSEC_WEBHOOK_SECRET_NAME=SECRET,
        IOTSEC_WEBHOOK_NAMESPACE=SYSTEM,
        IOTSEC_WEBHOOK_CONFIGURATION=CONFIGURATION,
        IOTSEC_WEBHOOK_EXTRA_DNS="localhost",
        IOTSEC_WEBHOOK_EXTRA_IPS="127.0.0.1",
        IOTSEC_WEBHOOK_TLS_CHECK_SECONDS="1",
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def webhook(api_client, operator, tmp_path_factory, server_minor) -> Iterator[WebhookProcess]:
    """The webhook registered with a url: client config; the operator injects the CA bundle."""
    folder = tmp_path_factory.mktemp("webhook")
    process = WebhookProcess(folder / "webhook.log", f"{SYSTEM}/{SECRET}")
    admission = client.AdmissionregistrationV1Api(api_client)
    core = client.CoreV1Api(api_client)
    eventually(
        lambda: core.read_namespaced_secret(SECRET, SYSTEM).data.get("ca-bundle.crt"),
        timeout=60,
        what="operator-managed TLS Secret",
    )
    configuration = validating_webhook_configuration(
        CONFIGURATION,
        client_config(url=f"https://127.0.0.1:{process.port}/validate"),
        SYSTEM,
        server_minor=server_minor,
    )
    admission.create_validating_webhook_configuration(configuration)
    try:
        bundle = eventually(
            lambda: admission.read_validating_webhook_configuration(CONFIGURATION).webhooks[0].client_config.ca_bundle,
            timeout=30,
            what="CA bundle injected",
        )
        cafile = folder / "ca.crt"
        cafile.write_bytes(base64.b64decode(bundle))
        secret_bundle = base64.b64decode(core.read_namespaced_secret(SECRET, SYSTEM).data["ca-bundle.crt"])
        assert cafile.read_bytes() == secret_bundle, "the configuration trusts exactly the operator's CA bundle"
        process.start(cafile)
        yield process
    finally:
        process.stop()
        admission.delete_validating_webhook_configuration(CONFIGURATION)  # never leave a fail-closed hook behind


def _not_terminating(core: client.CoreV1Api, name: str) -> bool:
    try:
        return core.read_namespace(name).metadata.deletion_timestamp is None
    except ApiException as exc:
        return exc.status == 404


def _create(dynamic: DynamicClient, obj: dict[str, Any]) -> Any:
    try:
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    except ResourceNotFoundError:
        pytest.skip(f"this API server does not serve {obj['kind']} in {obj['apiVersion']} (1.20 lacks it)")
    return dynamic.create(resource, body=obj, namespace=obj["metadata"].get("namespace"))


def _servable(dynamic: DynamicClient, obj: dict[str, Any]) -> bool:
    try:
        dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    except ResourceNotFoundError:
        print(f"skipped {obj['kind']} {obj['apiVersion']}: not served by this API server (1.20)")
        return False
    return True


def _unique(obj: dict[str, Any]) -> dict[str, Any]:
    copied = copy.deepcopy(obj)
    copied["metadata"]["name"] = f"{obj['metadata']['name']}-{uuid.uuid4().hex[:4]}"
    if copied["kind"] == "ServiceAccount":
        copied["metadata"]["name"] = obj["metadata"]["name"]  # workloads refer to it by name
    return copied


def _create_or_exists(dynamic: DynamicClient, obj: dict[str, Any]) -> None:
    try:
        _create(dynamic, obj)
    except DynamicApiError as exc:
        if exc.status != 409:
            raise


@pytest.mark.parametrize("path", sorted((WORKLOADS / "nonconforming").glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_example_is_refused_with_its_violations(webhook, dynamic, path):
    expected = [line.split()[2:4] for line in path.read_text().splitlines() if line.startswith("# expect:")]
    docs = [d for d in _docs(path) if _servable(dynamic, d)]
    violating = [d for d in docs if d["kind"] not in ("ServiceAccount", "Role", "Namespace")]
    if not violating:
        pytest.skip(f"{path.name}: its objects are not served by this API server")
    for doc in docs:
        if doc not in violating:
            _create_or_exists(dynamic, doc)
    target = violating[-1]
    decision = next(
        c.decision
        for c in check(load_documents([EXAMPLES / "platform", path]), datetime.now(UTC)).checked
        if c.document.obj == target
    )
    if decision.allowed:  # the namespace's domain is in warn or audit mode: admitted, the violations reported
        assert decision.mode in ("warn", "audit")
        _create(dynamic, _unique(target))
        return
    with pytest.raises(DynamicApiError) as caught:
        _create(dynamic, _unique(target))
    message = json.loads(caught.value.body)["message"]
    assert (
        'admission webhook "workloads.iotsec.io" denied the request' in message
        or 'admission webhook "bindings.iotsec.io" denied the request' in message
    ), message
    for rule, control in expected:
        assert f"[{control} {rule}]" in message, message


def test_good_examples_are_admitted(webhook, dynamic):
    created = 0
    for path in sorted((WORKLOADS / "conforming").glob("*.yaml")):
        for doc in _docs(path):
            if _servable(dynamic, doc):
                _create_or_exists(dynamic, doc)
                created += 1
    assert created >= 15


def test_warn_domain_admits_with_kubectl_warnings(webhook, dynamic):
    deployment = next(
        d for d in _docs(WORKLOADS / "nonconforming" / "privileged-container.yaml") if d["kind"] == "Deployment"
    )
    deployment = _unique(deployment)
    deployment["metadata"]["namespace"] = "monitoring"  # the operations domain is in warn mode
    response = dynamic.request(
        "post", "/apis/apps/v1/namespaces/monitoring/deployments", body=deployment, serialize=False
    )
    assert response.status == 201
    warnings = response.headers.get("Warning", "")  # what kubectl prints as "Warning: ..."
    assert "[X1369-9.4.3-1 no-privileged]" in warnings, dict(response.headers)


def test_warnings_for_ten_bare_containers_reach_the_client_whole(webhook, dynamic):
    """Issue 16: in warn mode a Deployment of ten bare containers got 50 warnings, of which the API server passed
    on 22, 3 of them cut before the fix. Now one warning per rule and fix, each passed on whole, none dropped."""
    containers = [{"name": f"c{i}", "image": "registry.example.com/iot/app:1.4.2"} for i in range(10)]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"bare-{uuid.uuid4().hex[:4]}", "namespace": "monitoring"},  # operations: warn mode
        "spec": {
            "selector": {"matchLabels": {"app": "bare"}},
            "template": {"metadata": {"labels": {"app": "bare"}}, "spec": {"containers": containers}},
        },
    }
    response = dynamic.request(
        "post", "/apis/apps/v1/namespaces/monitoring/deployments", body=deployment, serialize=False, dry_run="All"
    )
    assert response.status == 201
    received = [_warning_text(h) for h in response.headers.getlist("Warning")]
    expected = _decision_of(deployment).warnings  # what `iotsec check` says with the same domains
    assert 0 < len(expected) < 10, "grouped: one warning per rule and fix, not one per container"
    assert [w for w in received if w.startswith("[X1369-")] == list(expected), received
    assert all(len(w) <= 256 for w in received)
    assert any("containers c0, c1, c2, c3, c4, c5, c6, c7, c8, c9" in w for w in received), received


def _decision_of(obj: dict[str, Any]) -> Any:
    """The decision `iotsec check` gives obj with the example platform as its context."""
    documents = [*load_documents([EXAMPLES / "platform"]), Document("e2e", 0, obj)]
    return next(c.decision for c in check(documents, datetime.now(UTC)).checked if c.document.obj is obj)


def _warning_text(header: str) -> str:
    """`299 - "text"` (quotes and backslashes escaped; http.client hands header bytes over as Latin-1) → text."""
    code, _agent, quoted = header.split(" ", 2)
    assert code == "299", header
    return re.sub(r"\\(.)", r"\1", quoted[1:-1]).encode("latin-1").decode("utf-8")


def test_a_pod_in_a_namespace_created_a_moment_ago_gets_its_domains_verdict(webhook, api_client):
    """Issue 15: the webhook re-listed the cluster every 10 s, so a pod created right after its namespace was judged
    as in no domain. It now follows watches, and waits for a namespace it has not seen yet: the pod created at once
    after its namespace is judged by the domain that names it."""
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    name = f"fresh-{uuid.uuid4().hex[:6]}"
    domain = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {"name": name},
        "spec": {"zone": "core", "namespaces": [name], "enforcement": "enforce", "podSecurity": "restricted"},
    }
    custom.create_cluster_custom_object("iotsec.io", "v1alpha1", "securitydomains", domain)

    def reconciled() -> bool:
        found = custom.get_cluster_custom_object("iotsec.io", "v1alpha1", "securitydomains", name)
        return any(c["type"] == "Ready" for c in (found.get("status") or {}).get("conditions") or [])

    try:
        eventually(reconciled, timeout=60, what=f"SecurityDomain {name} reconciled")
        core.create_namespace({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})
        # a Deployment: a bare Pod would first wait for the namespace's default ServiceAccount (admitted before us)
        labels = {"app.kubernetes.io/name": "at-once"}
        container = {"name": "c", "image": "registry.example.com/app:1.0", "securityContext": {"privileged": True}}
        deployment = {
            "metadata": {"name": "at-once", "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        }
        with pytest.raises(ApiException) as denied:
            client.AppsV1Api(api_client).create_namespaced_deployment(name, deployment)
        message = denied.value.body or ""
        assert "domain-membership" not in message, message
        assert "privileged" in message, message
    finally:
        _remove_domain(custom, name)
        core.delete_namespace(name)


def test_webhook_down_refuses_member_namespaces_but_not_excluded_ones(webhook, dynamic):
    pod = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"probe-{uuid.uuid4().hex[:4]}"},
        "data": {"a": "b"},
    }
    webhook.stop()
    member = {**pod, "metadata": {**pod["metadata"], "namespace": "iot-ingest"}}
    with pytest.raises(DynamicApiError) as caught:
        _create(dynamic, member)
    assert "failed calling webhook" in json.loads(caught.value.body)["message"]
    excluded = {**pod, "metadata": {**pod["metadata"], "namespace": SYSTEM}}
    _create(dynamic, excluded)
