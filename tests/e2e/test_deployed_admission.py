"""Issue 16 as deployed: the chart's webhook, called by the real API server through its Service, judges what
platform teams really apply — a workload CRD's pod template, a NetworkPolicy that would void default deny, a
password in a ConfigMap — with messages that fit what kubectl shows, and `iotsec check` says the same offline.

Requests go through kubectl (the client users have) with --dry-run=server: the API server runs every admission
webhook on a dry run (iotsec declares sideEffects None) and persists nothing, so a denial here is the denial a
real apply gets. Needs the install `make testenv-install` made (skips without it, fails under
IOTSEC_DEPLOYED_REQUIRED=1).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e.conftest import eventually
from tests.e2e.deployed import domain_name, domain_namespace, require_install

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = str(Path(sys.executable).parent / "kubectl")
IOTSEC = str(Path(sys.executable).parent / "iotsec")
IMAGE = "registry.example.com/iot/app:1.4.2"
RUNNABLE_IMAGE = "localhost/testenv/busybox:1.35"  # made by the testenv's images.sh on the node
ROLLOUT_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "rollouts.argoproj.io"},
    "spec": {
        "group": "argoproj.io",
        "scope": "Namespaced",
        "names": {"plural": "rollouts", "singular": "rollout", "kind": "Rollout", "listKind": "RolloutList"},
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
def installed(api_client) -> None:
    require_install(api_client)


@pytest.fixture(scope="module")
def rollouts(api_client, installed) -> Iterator[None]:
    """Argo Rollouts' CRD (its schema reduced to 'anything'), as a platform that runs Argo has it."""
    extensions = client.ApiextensionsV1Api(api_client)
    try:
        extensions.create_custom_resource_definition(ROLLOUT_CRD)
        created = True
    except ApiException as exc:
        if exc.status != 409:
            raise
        created = False

    def established() -> bool:
        found = extensions.read_custom_resource_definition("rollouts.argoproj.io")
        return any(c.type == "Established" and c.status == "True" for c in found.status.conditions or ())

    eventually(established, timeout=30, what="the Rollout CRD established")
    yield
    if created:
        extensions.delete_custom_resource_definition("rollouts.argoproj.io")


@pytest.fixture
def enforced(core, custom, installed) -> Iterator[str]:
    with domain_namespace(core, custom, prefix="adm16") as name:
        yield name


@pytest.fixture
def warned(core, custom, installed) -> Iterator[str]:
    with domain_namespace(core, custom, prefix="adm16w", enforcement="warn") as name:
        yield name


def _dry_run(manifest: dict[str, Any], namespace: str, *as_user: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL, "apply", "--dry-run=server", "-n", namespace, *as_user, "-f", "-"],
        input=json.dumps(manifest),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _conforming_container(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": IMAGE,
        "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def _pod_spec(*containers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"automountServiceAccountToken": False, "containers": list(containers), **extra}


def _rollout(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
            "strategy": {"canary": {"steps": [{"setWeight": 20}]}},
        },
    }


def test_a_privileged_host_network_argo_rollout_is_denied(rollouts, enforced):
    container = _conforming_container("app")
    container["securityContext"]["privileged"] = True
    denied = _dry_run(_rollout("edge", _pod_spec(container, hostNetwork=True)), enforced)
    assert denied.returncode != 0, denied.stdout
    for expected in ("X1369-9.4.3-1", "no-privileged", "X1369-9.3.1-4", "no-host-namespaces", "spec.template.spec"):
        assert expected in denied.stderr, denied.stderr

    admitted = _dry_run(_rollout("edge", _pod_spec(_conforming_container("app"))), enforced)
    assert admitted.returncode == 0, admitted.stderr
    assert "Warning" not in admitted.stderr


def test_a_policy_that_opens_the_namespace_to_all_is_denied_and_a_narrowing_one_admitted(enforced):
    allow_all = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-all"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]},
    }
    denied = _dry_run(allow_all, enforced)
    assert denied.returncode != 0, denied.stdout
    assert "network-policy" in denied.stderr, denied.stderr
    assert "X1369-" in denied.stderr, denied.stderr

    deny_egress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "no-egress"},
        "spec": {"podSelector": {"matchLabels": {"app": "sensor"}}, "policyTypes": ["Egress"]},
    }
    admitted = _dry_run(deny_egress, enforced)
    assert admitted.returncode == 0, admitted.stderr


def test_a_password_in_a_config_map_is_denied(enforced):
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "platform-settings"},
        "data": {
            "SPRING_DATASOURCE_URL": "jdbc:postgresql://db:5432/iot",
            "SPRING_DATASOURCE_PASSWORD": "Pl4tf0rm-db-2024",
            "JWT_TOKEN_EXPIRATION_TIME": "9000",
        },
    }
    denied = _dry_run(config, enforced)
    assert denied.returncode != 0, denied.stdout
    assert "SPRING_DATASOURCE_PASSWORD" in denied.stderr, denied.stderr
    assert "no-literal-secrets" in denied.stderr, denied.stderr
    assert "JWT_TOKEN_EXPIRATION_TIME" not in denied.stderr, "a duration is not a secret"
    assert "Pl4tf0rm-db-2024" not in denied.stderr, "the message never repeats the secret"

    del config["data"]["SPRING_DATASOURCE_PASSWORD"]
    admitted = _dry_run(config, enforced)
    assert admitted.returncode == 0, admitted.stderr


def test_warnings_for_ten_bare_containers_fit_what_the_api_server_passes_on(warned):
    """PSA-style grouping: one warning per rule, fix first, each under 256 characters, all under 4,096."""
    containers = [{"name": f"c{i}", "image": IMAGE} for i in range(10)]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bare"},
        "spec": {
            "selector": {"matchLabels": {"app": "bare"}},
            "template": {"metadata": {"labels": {"app": "bare"}}, "spec": {"containers": containers}},
        },
    }
    admitted = _dry_run(deployment, warned)
    assert admitted.returncode == 0, admitted.stderr
    warnings = [line for line in admitted.stderr.splitlines() if line.startswith("Warning: ")]
    assert warnings, admitted.stderr
    assert all(len(line) - len("Warning: ") <= 256 for line in warnings), warnings
    assert sum(len(line) - len("Warning: ") for line in warnings) <= 4096
    text = "\n".join(warnings)
    for rule in ("no-privilege-escalation", "run-as-non-root", "drop-capabilities", "read-only-root-fs"):
        assert rule in text, f"{rule} missing from the warnings: {text}"
    assert "resource-limits" in text, text
    assert "c9" in text, "every container is named, the last one included"
    assert "more" not in text, "ten containers need no cut"


def test_check_offline_says_what_the_webhook_says_for_a_host_network_pod(custom, enforced, tmp_path):
    """The API server defaults hostPort to containerPort under hostNetwork; `iotsec check -n` applies the same."""
    container = _conforming_container("gateway")
    container["ports"] = [{"containerPort": 8883}, {"containerPort": 1883}]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gateway"},
        "spec": _pod_spec(container, hostNetwork=True),
    }
    denied = _dry_run(pod, enforced)
    assert denied.returncode != 0, denied.stdout
    live_rules = {rule for rule in ("no-host-namespaces", "no-host-ports") if rule in denied.stderr}
    assert live_rules == {"no-host-namespaces", "no-host-ports"}, denied.stderr

    domain = custom.get_cluster_custom_object("iotsec.io", "v1alpha1", "securitydomains", enforced)
    context = {key: domain[key] for key in ("apiVersion", "kind", "spec")}
    context["metadata"] = {"name": enforced}
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump_all([context, pod]))
    offline = subprocess.run(
        [IOTSEC, "check", "-n", enforced, "-o", "json", str(manifest)], capture_output=True, text=True, timeout=60
    )
    assert offline.returncode == 1, offline.stderr
    (checked,) = [c for c in json.loads(offline.stdout) if c["object"].startswith("Pod")]
    assert checked["namespace"] == enforced
    paths = sorted(v["path"] for v in checked["violations"] if v["rule"] in ("no-host-namespaces", "no-host-ports"))
    assert paths == [
        "spec.containers[0].ports[0].hostPort",
        "spec.containers[0].ports[1].hostPort",
        "spec.hostNetwork",
    ], checked["violations"]
    for path in paths:
        assert path in denied.stderr or "hostPort" in denied.stderr, denied.stderr


def test_an_excepted_deployments_replicaset_and_pod_inherit_the_waiver_and_run(api_client, core, custom, installed):
    """The waiver reaches what the Deployment and ReplicaSet controllers create (their controller ownerReferences,
    written by a system identity): the pod runs on the node. A person's pod that claims the ReplicaSet as its
    parent gets no waiver."""
    exception = {
        "rule": "read-only-root-fs",
        "target": {"kind": "Deployment", "name": "legacy"},
        "justification": "the vendor binary writes under /opt until release 4.2 of the gateway",
        "approver": "ciso@example.com",
        "expires": "2099-01-01T00:00:00Z",
    }
    name = domain_name("adm16x")
    exception["target"]["namespace"] = name
    with domain_namespace(core, custom, name=name, imagePinning="any", exceptions=[exception]) as namespace:
        container = {**_conforming_container("app"), "image": RUNNABLE_IMAGE, "command": ["sh", "-c", "sleep 3600"]}
        container["securityContext"] = {**container["securityContext"], "readOnlyRootFilesystem": False}
        container["securityContext"]["runAsUser"] = 10002
        labels = {"app": "legacy"}
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "legacy", "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": _pod_spec(container)},
            },
        }
        apps = client.AppsV1Api(api_client)
        apps.create_namespaced_deployment(namespace, deployment)

        def running() -> list[client.V1Pod]:
            pods = core.list_namespaced_pod(namespace, label_selector="app=legacy").items
            return [p for p in pods if p.status.phase == "Running"]

        (pod,) = eventually(running, timeout=120, what="the excepted Deployment's pod Running on the node")
        owner = pod.metadata.owner_references[0]
        assert (owner.kind, owner.controller) == ("ReplicaSet", True)

        forged = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{owner.name}-debug",
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": owner.name,
                        "uid": owner.uid,
                        "controller": True,
                    }
                ],
            },
            "spec": _pod_spec(container),
        }
        person = ("--as=alice@acme.example", "--as-group=system:masters")  # a person, whatever her rights
        denied = _dry_run(forged, namespace, *person)
        assert denied.returncode != 0, denied.stdout
        assert "read-only-root-fs" in denied.stderr, denied.stderr
