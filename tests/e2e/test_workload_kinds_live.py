"""Pod templates inside workload CRDs through the real API server (issue 16): a minimal Argo Rollout CRD and a
custom kind a SecurityDomain adds, registered as `iotsec webhook-config` registers them, judged by `iotsec webhook`.

The configuration selects one throw-away namespace only, so that other tests' writes never reach this webhook.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from iotsec.build.webhook import client_config, validating_webhook_configuration
from iotsec.model.workloads import parse_workload_kinds
from iotsec.pki import certs
from tests.e2e.conftest import eventually
from tests.e2e.processes import _free_port, terminate

SUFFIX = uuid.uuid4().hex[:5]
NAMESPACE = f"iotsec-kinds-{SUFFIX}"
CONFIGURATION = f"iotsec-kinds-{SUFFIX}"
WIDGET_GROUP = f"e2e{SUFFIX}.example.com"
WIDGET = {"group": WIDGET_GROUP, "kind": "Widget", "resource": "widgets", "podSpecPaths": ["spec.pods[*].spec"]}
RISKY_POD = {
    "hostNetwork": True,
    "containers": [{"name": "broker", "image": "eclipse-mosquitto:2.0.18", "securityContext": {"privileged": True}}],
}


def _crd(group: str, kind: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def kinds(api_client) -> Iterator[None]:
    """The Rollout CRD (left alone when a real Argo Rollouts is installed) and a Widget CRD of a unique group."""
    extensions = client.ApiextensionsV1Api(api_client)
    created = []
    for crd in (_crd("argoproj.io", "Rollout", "rollouts"), _crd(WIDGET_GROUP, "Widget", "widgets")):
        try:
            extensions.create_custom_resource_definition(crd)
            created.append(crd["metadata"]["name"])
        except ApiException as exc:
            if exc.status != 409:
                raise
        eventually(lambda crd=crd: _established(extensions, crd["metadata"]["name"]), what="CRD established")
    yield
    for name in created:
        extensions.delete_custom_resource_definition(name)


def _established(extensions: client.ApiextensionsV1Api, name: str) -> bool:
    conditions = extensions.read_custom_resource_definition(name).status.conditions or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


@pytest.fixture(scope="module")
def webhook(api_client, kinds, tmp_path_factory) -> Iterator[None]:
    """`iotsec webhook --context` with a SecurityDomain for the namespace that adds Widgets, registered with a url
    client config for that namespace only."""
    folder = tmp_path_factory.mktemp("kinds")
    tls, _ = certs.ensure_webhook_tls(None, ["localhost"], ["127.0.0.1"], datetime.now(UTC))
    data = tls.to_secret_data()
    (folder / "tls.crt").write_text(data[certs.KEY_TLS_CERT])
    (folder / "tls.key").write_text(data[certs.KEY_TLS_KEY])
    (folder / "ca.crt").write_text(tls.bundle())
    domain = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {"name": f"kinds-{SUFFIX}"},
        "spec": {"zone": "core", "namespaces": [NAMESPACE], "workloadKinds": [WIDGET]},
    }
    (folder / "context.yaml").write_text(yaml.safe_dump(domain))
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": NAMESPACE, "labels": {"kubernetes.io/metadata.name": NAMESPACE}}})
    port = _free_port()
    command = [sys.executable, "-m", "iotsec", "webhook", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--tls-cert-file", str(folder / "tls.crt"), "--tls-key-file", str(folder / "tls.key")]
    command += ["--context", str(folder / "context.yaml"), "--metrics-port", "0"]
    log = (folder / "webhook.log").open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    admission = client.AdmissionregistrationV1Api(api_client)
    try:
        eventually(lambda: _ready(process, port, folder), timeout=60, what="webhook /readyz")
        admission.create_validating_webhook_configuration(_configuration(port, tls.bundle()))
        # the API server learns of a new configuration through its informer, a moment after the create returns
        eventually(lambda: _webhook_called(api_client), timeout=30, what="the API server calls the new webhook")
        yield
    finally:
        terminate(process, timeout=15)
        log.close()
        try:
            admission.delete_validating_webhook_configuration(CONFIGURATION)
        except ApiException as exc:
            if exc.status != 404:
                raise
        core.delete_namespace(NAMESPACE)


def _ready(process: subprocess.Popen[bytes], port: int, folder: Path) -> bool:
    import ssl
    import urllib.request

    assert process.poll() is None, (folder / "webhook.log").read_text()[-4000:]
    context = ssl.create_default_context(cafile=str(folder / "ca.crt"))
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", timeout=2, context=context) as answer:
            return answer.status == 200
    except OSError:
        return False


def _configuration(port: int, bundle: str) -> dict[str, Any]:
    """iotsec's workloads hook with the Widget added (as webhook.workloadKinds would add it), for NAMESPACE only."""
    made = validating_webhook_configuration(
        CONFIGURATION,
        client_config(url=f"https://127.0.0.1:{port}/validate", ca_bundle=bundle),
        "iotsec-system",
        workload_kinds=parse_workload_kinds(json.dumps([WIDGET])),
    )
    (workloads,) = [copy.deepcopy(w) for w in made["webhooks"] if w["name"] == "workloads.iotsec.io"]
    workloads["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}
    return {**made, "webhooks": [workloads]}


def _webhook_called(api_client) -> bool:
    risky = {"selector": {"matchLabels": {"app": "p"}}, "template": {"spec": RISKY_POD}}
    return _create(api_client, "argoproj.io", "rollouts", "Rollout", risky, dry_run=True) is not None


def _create(
    api_client, group: str, plural: str, kind: str, spec: dict[str, Any], dry_run: bool = False
) -> ApiException | None:
    body = {
        "apiVersion": f"{group}/v1alpha1",
        "kind": kind,
        "metadata": {"name": f"x-{uuid.uuid4().hex[:5]}", "namespace": NAMESPACE},
        "spec": spec,
    }
    try:
        objects = client.CustomObjectsApi(api_client)
        extra = {"dry_run": "All"} if dry_run else {}
        objects.create_namespaced_custom_object(group, "v1alpha1", NAMESPACE, plural, body, **extra)
    except ApiException as exc:
        return exc
    return None


def test_a_privileged_host_network_rollout_is_denied_by_the_api_server(api_client, webhook):
    spec = {"selector": {"matchLabels": {"app": "b"}}, "template": {"spec": RISKY_POD}}
    refused = _create(api_client, "argoproj.io", "rollouts", "Rollout", spec)
    assert refused is not None
    assert refused.status == 403
    # the denial names paths as patterns ([*]) where one line covers several containers
    assert re.search(r"spec\.template\.spec\.containers\[(0|\*)\]\.securityContext\.privileged", refused.body)
    assert "spec.template.spec.hostNetwork" in refused.body


def test_a_kind_the_domain_adds_is_denied_at_its_real_path(api_client, webhook):
    refused = _create(api_client, WIDGET_GROUP, "widgets", "Widget", {"pods": [{"spec": RISKY_POD}]})
    assert refused is not None
    assert refused.status == 403
    assert re.search(r"spec\.pods\[(0|\*)\]\.spec\.hostNetwork", refused.body)


def test_the_operator_adds_and_removes_the_domain_kinds_webhook_by_server_side_apply(api_client, monkeypatch):
    """The API server merges the operator's apply into the chart's configuration (webhooks is a map keyed by name):
    the chart's webhooks keep their rules, the added one carries the domains' kinds, and goes with the last one."""
    import dataclasses

    from iotsec.controllers import runtime, webhook_tls
    from iotsec.k8s.kube import Kube

    name = f"iotsec-domainkinds-{SUFFIX}"
    made = validating_webhook_configuration(name, client_config(url="https://127.0.0.1:9/validate"), "iotsec-system")
    for hook in made["webhooks"]:
        hook["objectSelector"] = {"matchLabels": {"iotsec.io/e2e-never-matches": SUFFIX}}  # harmless to others
    admission = client.AdmissionregistrationV1Api(api_client)
    admission.create_validating_webhook_configuration(made)
    monkeypatch.setattr(runtime, "_loaded", dataclasses.replace(runtime.config(), webhook_configuration=name))
    kinds = [(WIDGET_GROUP, "widgets"), ("argoproj.io", "rollouts")]
    monkeypatch.setattr(webhook_tls, "domain_kinds", lambda api: kinds)
    bundle, _ = certs.ensure_webhook_tls(None, ["localhost"], [], datetime.now(UTC))
    try:
        assert webhook_tls._inject(Kube(api_client), bundle.bundle())
        hooks = {h.name: h for h in admission.read_validating_webhook_configuration(name).webhooks}
        added = hooks[webhook_tls.DOMAIN_KINDS_HOOK]
        assert [(r.api_groups, r.resources) for r in added.rules] == [([WIDGET_GROUP], ["widgets"])]
        assert added.client_config.ca_bundle
        assert added.object_selector.match_labels == {"iotsec.io/e2e-never-matches": SUFFIX}
        assert len(hooks["workloads.iotsec.io"].rules) == len(made["webhooks"][0]["rules"])
        assert not webhook_tls._inject(Kube(api_client), bundle.bundle()), "nothing changed: nothing applied"
        kinds.clear()
        assert webhook_tls._inject(Kube(api_client), bundle.bundle())
        hooks = {h.name: h for h in admission.read_validating_webhook_configuration(name).webhooks}
        assert webhook_tls.DOMAIN_KINDS_HOOK not in hooks
        assert set(hooks) == {w["name"] for w in made["webhooks"]}
        assert all(h.client_config.ca_bundle for h in hooks.values())
    finally:
        admission.delete_validating_webhook_configuration(name)
