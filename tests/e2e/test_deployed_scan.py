"""Issue 17 as deployed: an object that got past admission while the webhook was down is found again.

The chart's operator pod runs the background scan; the chart's webhook pod is stopped and its fail-closed hook set to
Ignore, as an administrator does to unblock a cluster during a webhook outage. A Deployment that violates the
enforce-mode domain is created meanwhile, and admission restored. Within one scan interval the operator's
PolicyReport `iotsec-scan` names the object, the rule and the control, and `iotsec report --cluster` (the CLI users
run) marks the control not met for that namespace with the Deployment as evidence. Fixing the Deployment (judged by
the restored webhook) flips both. Needs `make testenv-install` (skips without it, fails under
IOTSEC_DEPLOYED_REQUIRED=1).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from iotsec.model.config import Config
from tests.e2e.conftest import eventually
from tests.e2e.deployed import NAMESPACE, RELEASE, domain_namespace, require_install

IOTSEC = str(Path(sys.executable).parent / "iotsec")
IMAGE = "registry.example.com/iot/app:1.4.2"
RULE, CONTROL = "no-privilege-escalation", "X1369-9.4.3-1"
WEBHOOK_CONFIG = "iotsec"  # the chart's ValidatingWebhookConfiguration
FAIL_CLOSED_HOOK = "workloads.iotsec.io"
REPORT_GROUP, REPORT_VERSION, REPORT_NAME = "wgpolicyk8s.io", "v1alpha2", "iotsec-scan"


@pytest.fixture(scope="module")
def apps(api_client) -> client.AppsV1Api:
    return require_install(api_client)


@pytest.fixture
def enforced(core, custom, apps) -> Iterator[str]:
    with domain_namespace(core, custom, prefix="scan17") as name:
        yield name


def _scan_interval(apps: client.AppsV1Api) -> float:
    operator = apps.read_namespaced_deployment(f"{RELEASE}-operator", NAMESPACE)
    env = {e.name: e.value for c in operator.spec.template.spec.containers for e in c.env or () if e.value}
    assert "IOTSEC_SCAN_INTERVAL" in env, "the chart runs the operator with a scan interval"
    return Config.from_env({"IOTSEC_SCAN_INTERVAL": env["IOTSEC_SCAN_INTERVAL"]}).scan_interval


def _container(escalation: bool) -> dict[str, Any]:
    return {
        "name": "app",
        "image": IMAGE,
        "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": escalation,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def _deployment(name: str, escalation: bool) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0,  # the object is what the scan judges; no pod needs to run
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"automountServiceAccountToken": False, "containers": [_container(escalation)]},
            },
        },
    }


def _hook_index(admission: client.AdmissionregistrationV1Api) -> int:
    config = admission.read_validating_webhook_configuration(WEBHOOK_CONFIG)
    return [w.name for w in config.webhooks].index(FAIL_CLOSED_HOOK)


def _set_failure_policy(admission: client.AdmissionregistrationV1Api, policy: str) -> None:
    index = _hook_index(admission)
    patch = [{"op": "replace", "path": f"/webhooks/{index}/failurePolicy", "value": policy}]
    admission.patch_validating_webhook_configuration(WEBHOOK_CONFIG, patch)


def _scale_webhook(apps: client.AppsV1Api, replicas: int) -> None:
    name = f"{RELEASE}-webhook"
    apps.patch_namespaced_deployment_scale(name, NAMESPACE, {"spec": {"replicas": replicas}})

    def settled() -> bool:
        found = apps.read_namespaced_deployment(name, NAMESPACE)
        return (found.status.ready_replicas or 0) == replicas and (found.status.replicas or 0) == replicas

    eventually(settled, timeout=120, what=f"{name} at {replicas} ready replicas")
    if replicas == 0:
        eventually(lambda: not _serving(apps.api_client, name), timeout=120, what=f"no pod of {name} serving")


def _serving(api_client, deployment: str) -> bool:
    """Whether a pod still serves the webhook: terminating pods serve out their grace period, behind the
    Service's endpoints until they are gone."""
    core = client.CoreV1Api(api_client)
    selector = client.AppsV1Api(api_client).read_namespaced_deployment(deployment, NAMESPACE).spec.selector
    labels = ",".join(f"{k}={v}" for k, v in (selector.match_labels or {}).items())
    return bool(core.list_namespaced_pod(NAMESPACE, label_selector=labels).items)


@pytest.fixture
def webhook_outage(api_client, apps) -> Iterator[Callable[[], None]]:
    """The webhook's pods gone and its fail-closed hook set to Ignore; the test calls the fixture's value to restore
    both (and teardown does, whatever happened)."""
    admission = client.AdmissionregistrationV1Api(api_client)
    replicas = apps.read_namespaced_deployment(f"{RELEASE}-webhook", NAMESPACE).spec.replicas
    _set_failure_policy(admission, "Ignore")
    _scale_webhook(apps, 0)
    restored = False

    def restore() -> None:
        nonlocal restored
        if not restored:
            restored = True
            _set_failure_policy(admission, "Fail")
            _scale_webhook(apps, replicas)

    try:
        yield restore
    finally:
        restore()


def _report_results(custom, namespace: str) -> list[dict[str, Any]]:
    found = custom.get_namespaced_custom_object(REPORT_GROUP, REPORT_VERSION, namespace, "policyreports", REPORT_NAME)
    return found.get("results") or []


def _names(result: dict[str, Any]) -> set[tuple[str, str]]:
    return {(r.get("kind"), r.get("name")) for r in result.get("resources") or ()}


def _conformance(namespace: str) -> dict[str, Any]:
    done = subprocess.run(
        [IOTSEC, "report", "--cluster", "-o", "json", "--namespace", namespace],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _assessments(document: dict[str, Any], control: str, namespace: str) -> list[dict[str, Any]]:
    [entry] = [c for c in document["controls"] if c["id"] == control]
    return [a for a in entry["assessments"] if (a["scope"]["kind"], a["scope"]["name"]) == ("namespace", namespace)]


def _evidence_names(assessment: dict[str, Any]) -> set[tuple[str, str]]:
    return {(o["kind"], o["name"]) for e in assessment["evidence"] for o in e["objects"]}


def test_a_deployment_created_while_the_webhook_was_down_is_reported_until_fixed(
    apps, custom, enforced, webhook_outage
):
    namespace, name = enforced, "slipped-past"
    interval = _scan_interval(apps)
    scan_wait = interval + 90  # one interval, plus listing, judging and the write on a loaded 2-core machine

    apps.create_namespaced_deployment(namespace, _deployment(name, escalation=True))  # admitted: nobody judged it
    webhook_outage()  # admission back before the scan finds it: the scan, not admission, must catch it

    def failing() -> list[dict[str, Any]]:
        return [
            r
            for r in _report_results(custom, namespace)
            if r["result"] == "fail" and r["rule"] == RULE and ("Deployment", name) in _names(r)
        ]

    [found] = eventually(failing, timeout=scan_wait, what=f"a fail result for Deployment {name} in {REPORT_NAME}")
    assert found["category"] == CONTROL
    assert found["properties"]["control"] == CONTROL
    assert found["properties"]["mode"] == "enforce"

    not_met = [a for a in _assessments(_conformance(namespace), CONTROL, namespace) if a["verdict"] == "not-met"]
    assert not_met, f"{CONTROL} is not met in {namespace}"
    assert ("Deployment", name) in set().union(*map(_evidence_names, not_met))

    # The fix goes through the restored webhook, which judges it.
    apps.replace_namespaced_deployment(name, namespace, _deployment(name, escalation=False))

    def passing() -> bool:
        results = _report_results(custom, namespace)
        mine = [r for r in results if ("Deployment", name) in _names(r)]
        return bool(mine) and all(r["result"] == "pass" for r in mine)

    eventually(passing, timeout=scan_wait, what=f"Deployment {name} passing in {REPORT_NAME}")
    after = _assessments(_conformance(namespace), CONTROL, namespace)
    assert after, f"{CONTROL} has no assessment for {namespace}"
    assert all(a["verdict"] != "not-met" for a in after), after
