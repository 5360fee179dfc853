"""Pod templates inside other kinds (issue 16): the workload-kind table matched by API group and kind, Argo
Workflows' assembled pods, and the kinds a chart's values or a SecurityDomain add."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from iotsec.admission.context import Context, DomainPolicy
from iotsec.admission.engine import decide, judges
from iotsec.admission.podspecs import pod_specs
from iotsec.admission.snapshot import snapshot_from_objects
from iotsec.api.validation import InvalidResourceError, parse_resource
from iotsec.build.webhook import client_config, validating_webhook_configuration
from iotsec.model.config import Config, ConfigError
from iotsec.model.workloads import BUILT_IN, POD, parse_path, parse_workload_kinds
from iotsec.servers.webhook.review import review

NOW = datetime(2026, 12, 3, tzinfo=UTC)
NAMESPACE = "sensors"
DOMAIN = {
    "apiVersion": "iotsec.io/v1alpha1",
    "kind": "SecurityDomain",
    "metadata": {"name": "field"},
    "spec": {"zone": "core", "namespaces": [NAMESPACE]},
}
RISKY_POD = {
    "hostNetwork": True,
    "containers": [
        {"name": "broker", "image": "eclipse-mosquitto:2.0.18", "securityContext": {"privileged": True}},
    ],
}
WIDGET = {"group": "apps.example.com", "kind": "Widget", "resource": "widgets", "podSpecPaths": ["spec.pods[*].spec"]}


def _ctx(**domain: Any) -> Context:
    return Context(DomainPolicy(name="field", zone="core", **domain), NOW)


def _rollout(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "broker", "namespace": NAMESPACE},
        "spec": {"template": {"metadata": {"labels": {"app": "broker"}}, "spec": copy.deepcopy(pod)}},
    }


def _paths(decision: Any, rule: str) -> set[str]:
    return {v.path for v in decision.violations if v.rule == rule}


WEBHOOK_CONFIG = [sys.executable, "-m", "iotsec.cli.main", "webhook-config", "--url", "https://127.0.0.1:9443/validate"]


def _review(obj: dict[str, Any], snapshot: Any) -> Any:
    group, _, version = obj["apiVersion"].rpartition("/")
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": group, "version": version, "kind": obj["kind"]},
            "namespace": obj["metadata"].get("namespace"),
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": obj,
        },
    }
    return review(json.dumps(body).encode(), snapshot, lambda: NOW)


# ------------------------------------------------------------------ the built-in table


def test_a_privileged_host_network_argo_rollout_is_denied_at_its_real_paths():
    decision = decide(_rollout(RISKY_POD), _ctx())
    assert not decision.allowed
    assert _paths(decision, "no-privileged") == {"spec.template.spec.containers[0].securityContext.privileged"}
    assert _paths(decision, "no-host-namespaces") == {"spec.template.spec.hostNetwork"}


def test_the_webhook_denies_the_rollout_by_its_group():
    snapshot = snapshot_from_objects([DOMAIN], assume_named_namespaces_exist=True)
    result = _review(_rollout(RISKY_POD), snapshot)
    assert result.verdict == "denied"
    assert "spec.template.spec.hostNetwork" in json.dumps(result.body)


def _place(obj: dict[str, Any], path: str, pod: dict[str, Any]) -> None:
    node = obj
    segments = parse_path(path)
    for segment in segments[:-1]:
        if segment.endswith("[*]"):
            items = node.setdefault(segment[:-3], [{}])
            node = items[0]
        else:
            node = node.setdefault(segment, {})
    node[segments[-1]] = copy.deepcopy(pod)


POD_KINDS = [c for c in BUILT_IN if c.shape == POD and c.kind != "Pod"]


@pytest.mark.parametrize("carrier", POD_KINDS, ids=lambda c: f"{c.group or 'core'}/{c.kind}")
def test_every_kind_with_a_pod_template_gives_the_verdict_of_the_same_pod(carrier):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": NAMESPACE},
        "spec": copy.deepcopy(RISKY_POD),
    }
    expected = decide(pod, _ctx())
    for path in carrier.pod_spec_paths:
        version = "v1" if not carrier.group else f"{carrier.group}/v1"
        obj: dict[str, Any] = {
            "apiVersion": version,
            "kind": carrier.kind,
            "metadata": {"name": "w", "namespace": NAMESPACE},
        }
        _place(obj, path, RISKY_POD)
        decision = decide(obj, _ctx())
        assert decision.allowed == expected.allowed
        prefix = path.replace("[*]", "[0]")
        assert {(v.rule, v.message, v.path.replace(prefix, "spec", 1)) for v in decision.violations} == {
            (v.rule, v.message, v.path) for v in expected.violations
        }, path


def test_the_table_holds_the_common_workload_crds_and_both_advanced_statefulset_versions():
    keys = {c.key for c in BUILT_IN}
    assert {
        ("argoproj.io", "Rollout"),
        ("argoproj.io", "Workflow"),
        ("argoproj.io", "CronWorkflow"),
        ("argoproj.io", "WorkflowTemplate"),
        ("argoproj.io", "ClusterWorkflowTemplate"),
        ("serving.knative.dev", "Service"),
        ("serving.knative.dev", "Configuration"),
        ("serving.knative.dev", "Revision"),
        ("apps.kruise.io", "CloneSet"),
        ("apps.kruise.io", "StatefulSet"),
        ("apps.kruise.io", "DaemonSet"),
        ("keda.sh", "ScaledJob"),
    } <= keys
    for version in ("apps.kruise.io/v1alpha1", "apps.kruise.io/v1beta1"):
        advanced = {"apiVersion": version, "kind": "StatefulSet", "metadata": {"name": "s"}}
        _place(advanced, "spec.template.spec", RISKY_POD)
        assert [p.path for p in pod_specs(advanced)] == ["spec.template.spec"]


def test_a_same_named_kind_of_another_group_is_not_judged_as_the_built_in():
    for kind in ("Pod", "Service", "ConfigMap"):
        obj = {
            "apiVersion": "example.com/v1",
            "kind": kind,
            "metadata": {"name": "x", "namespace": "nowhere"},
            "spec": copy.deepcopy(RISKY_POD),
            "data": {"password": "hunter2hunter2"},
        }
        assert pod_specs(obj) == []
        decision = decide(obj, Context(DomainPolicy.unassigned(), NOW))
        assert decision.violations == (), kind  # not even domain-membership: it is not ours to judge
    snapshot = snapshot_from_objects([DOMAIN], assume_named_namespaces_exist=True)
    foreign = {"apiVersion": "example.com/v1", "kind": "Pod", "metadata": {"name": "x", "namespace": NAMESPACE}}
    foreign["spec"] = copy.deepcopy(RISKY_POD)
    assert _review(foreign, snapshot).verdict == "skipped"
    core = {**foreign, "apiVersion": "v1"}
    assert _review(core, snapshot).verdict == "denied"


def test_the_engine_says_which_kinds_it_judges():
    ctx = _ctx(workload_kinds=tuple(parse_workload_kinds(json.dumps([WIDGET]))))
    assert judges({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout"}, ctx)
    assert judges({"apiVersion": "v1", "kind": "ConfigMap"}, ctx)
    assert judges({"apiVersion": "apps.example.com/v1", "kind": "Widget"}, ctx)
    assert not judges({"apiVersion": "apps.example.com/v1", "kind": "Widget"}, _ctx())
    assert not judges({"apiVersion": "example.com/v1", "kind": "Pod"}, ctx)
    assert not judges({"apiVersion": "v1", "kind": "Secret"}, ctx)


def test_a_knative_service_is_judged_by_its_pods_never_as_a_core_service():
    knative = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "ingest", "namespace": NAMESPACE},
        "spec": {"type": "NodePort", "template": {"spec": copy.deepcopy(RISKY_POD)}},
    }
    rules = {v.rule for v in decide(knative, _ctx()).violations}
    assert "no-privileged" in rules
    assert "exposure-zone" not in rules  # a core Service's rule, for a field a Knative Service does not have
    core = {"apiVersion": "v1", "kind": "Service", "metadata": knative["metadata"], "spec": {"type": "NodePort"}}
    assert "exposure-zone" in {v.rule for v in decide(core, _ctx()).violations}


def test_an_old_extensions_deployment_is_still_a_deployment():
    obj = {"apiVersion": "extensions/v1beta1", "kind": "Deployment", "metadata": {"name": "d"}}
    _place(obj, "spec.template.spec", RISKY_POD)
    assert [p.path for p in pod_specs(obj)] == ["spec.template.spec"]


# ------------------------------------------------------------------ Argo Workflows


def _workflow(kind: str = "Workflow") -> dict[str, Any]:
    spec = {
        "entrypoint": "main",
        "hostNetwork": True,
        "serviceAccountName": "ingest",
        "securityContext": {"runAsNonRoot": True},
        "volumes": [{"name": "data", "emptyDir": {}}],
        "templates": [
            {"name": "main", "steps": [[{"name": "a", "template": "ingest"}]]},
            {"name": "ingest", "container": {"image": "ghcr.io/acme/ingest:1.4.2"}},
            {
                "name": "export",
                "container": {"image": "ghcr.io/acme/export:1.0.0", "securityContext": {"privileged": True}},
                "volumes": [{"name": "node", "hostPath": {"path": "/var"}}],
                "securityContext": {"runAsUser": 0},
                "initContainers": [{"name": "fetch", "image": "busybox:1.36"}],
                "sidecars": [{"name": "mqtt", "image": "eclipse-mosquitto:2.0.18"}],
            },
            {"name": "report", "script": {"image": "python:3.12.1", "source": "print(1)"}},
            {
                "name": "many",
                "containerSet": {"containers": [{"name": "a", "image": "alpine:3.19.1"}]},
            },
        ],
    }
    if kind == "CronWorkflow":
        spec = {"schedule": "0 * * * *", "workflowSpec": spec}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "pipeline", "namespace": NAMESPACE},
        "spec": spec,
    }


def test_argo_templates_that_run_pods_are_checked_at_their_real_paths():
    decision = decide(_workflow(), _ctx())
    assert not decision.allowed
    assert _paths(decision, "no-privileged") == {"spec.templates[2].container.securityContext.privileged"}
    assert _paths(decision, "no-host-namespaces") == {"spec.hostNetwork"}  # one line, not one per template
    assert _paths(decision, "no-host-path") == {"spec.templates[2].volumes[0].hostPath"}
    # the template's securityContext replaces the workflow's (runAsNonRoot no longer holds for its containers)
    assert "spec.templates[2].securityContext.runAsUser" in _paths(decision, "run-as-non-root")
    assert "spec.templates[2].container.securityContext.runAsNonRoot" in _paths(decision, "run-as-non-root")
    pinned = {v.path for v in decision.violations}
    for container in (
        "spec.templates[1].container",
        "spec.templates[2].initContainers[0]",
        "spec.templates[2].sidecars[0]",
        "spec.templates[3].script",
        "spec.templates[4].containerSet.containers[0]",
    ):
        assert f"{container}.securityContext.readOnlyRootFilesystem" in pinned, container
    assert not any(v.path.startswith(("@pod", "spec.templates[0]")) for v in decision.violations)
    # the workflow's runAsNonRoot covers templates without their own securityContext
    assert "spec.templates[1].container.securityContext.runAsNonRoot" not in pinned
    assert "no-default-token" not in {v.rule for v in decision.violations}  # serviceAccountName: ingest


@pytest.mark.parametrize("kind", ["WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow"])
def test_every_argo_workflow_kind_is_checked(kind):
    decision = decide(_workflow(kind), _ctx())
    prefix = "spec.workflowSpec" if kind == "CronWorkflow" else "spec"
    assert _paths(decision, "no-privileged") == {f"{prefix}.templates[2].container.securityContext.privileged"}


def test_argo_containers_without_a_name_are_called_main_as_argo_calls_them():
    decision = decide(_workflow(), _ctx())
    message = next(v.message for v in decision.violations if v.path.startswith("spec.templates[1].container."))
    assert message.startswith("main ")
    assert "@pod" not in message


# ------------------------------------------------------------------ kinds added by the chart's values


def test_a_kind_from_the_chart_values_is_checked_by_the_engine_and_the_webhook():
    config = Config.from_env({"IOTSEC_WORKLOAD_KINDS": json.dumps([WIDGET])})
    snapshot = snapshot_from_objects([DOMAIN], assume_named_namespaces_exist=True, platform=config.platform)
    widget = {
        "apiVersion": "apps.example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": NAMESPACE},
        "spec": {"pods": [{"spec": {"containers": []}}, {"spec": copy.deepcopy(RISKY_POD)}]},
    }
    decision = decide(widget, snapshot.context(NAMESPACE, NOW))
    assert _paths(decision, "no-privileged") == {"spec.pods[1].spec.containers[0].securityContext.privileged"}
    assert _review(widget, snapshot).verdict == "denied"
    without = snapshot_from_objects([DOMAIN], assume_named_namespaces_exist=True)
    assert _review(widget, without).verdict == "skipped"


def test_a_kind_from_the_chart_values_is_registered():
    kinds = parse_workload_kinds(json.dumps([WIDGET]))
    configuration = validating_webhook_configuration(
        "iotsec",
        client_config(service=("iotsec-system", "iotsec-webhook", 443)),
        "iotsec-system",
        (),
        5,
        None,
        None,
        kinds,
    )
    rules = configuration["webhooks"][0]["rules"]
    assert rules[-1]["apiGroups"] == ["apps.example.com"]
    assert rules[-1]["resources"] == ["widgets"]
    done = subprocess.run(
        [*WEBHOOK_CONFIG, "--workload-kinds", json.dumps([WIDGET])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (printed,) = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert printed["webhooks"][0]["rules"][-1]["resources"] == ["widgets"]


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({**WIDGET, "podSpecPaths": ["spec..template"]}, "segment ''"),
        ({**WIDGET, "podSpecPaths": ["spec.pods[0].spec"]}, "segment 'pods[0]'"),
        ({**WIDGET, "podSpecPaths": []}, "podSpecPaths: must be a list of 1-16 paths"),
        ({k: v for k, v in WIDGET.items() if k != "resource"}, "resource: None is not a plural resource name"),
        ({**WIDGET, "kind": "widget"}, "kind: 'widget' is not a kind"),
        ({**WIDGET, "group": "Example.COM"}, "group: 'Example.COM' is not an API group"),
        ({**WIDGET, "group": "apps", "kind": "Deployment"}, "is built in; it cannot be redefined"),
        ({**WIDGET, "podSpecPath": ["spec"]}, "unknown field 'podSpecPath'"),
        ("spec.template.spec", "must be an object"),
    ],
)
def test_a_malformed_entry_is_refused_with_a_clear_message(entry, says):
    with pytest.raises(ValueError, match=r"^\[0\]") as caught:
        parse_workload_kinds(json.dumps([entry]))
    assert says in str(caught.value)
    with pytest.raises(ConfigError) as config_error:
        Config.from_env({"IOTSEC_WORKLOAD_KINDS": json.dumps([entry])})
    (problem,) = config_error.value.problems
    assert problem.startswith("IOTSEC_WORKLOAD_KINDS=")
    assert says in problem


@pytest.mark.parametrize("path", ["spec..template", "spec.pods[0].spec", "spec.[*]", "spec.template.spec ", ""])
def test_a_domain_with_a_malformed_path_is_refused_by_its_schema(path):
    domain = copy.deepcopy(DOMAIN)
    domain["spec"]["workloadKinds"] = [{**WIDGET, "podSpecPaths": [path]}]
    with pytest.raises(InvalidResourceError) as caught:
        parse_resource(domain)
    assert "podSpecPaths" in str(caught.value)
    with pytest.raises(ValueError, match="pod-spec path"):
        parse_path(path)  # the table's reader refuses the same paths
    assert parse_resource(_domain_with_widget())  # and a good one passes


def test_a_duplicate_or_a_non_list_is_refused():
    with pytest.raises(ValueError, match="listed twice"):
        parse_workload_kinds(json.dumps([WIDGET, WIDGET]))
    with pytest.raises(ValueError, match="JSON list"):
        parse_workload_kinds("{not json")
    with pytest.raises(ValueError, match="JSON list"):
        parse_workload_kinds(json.dumps(WIDGET))


def test_webhook_config_refuses_a_malformed_kind_with_exit_2():
    done = subprocess.run(
        [*WEBHOOK_CONFIG, "--workload-kinds", json.dumps([{**WIDGET, "podSpecPaths": ["spec.[*]"]}])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--workload-kinds: [0].podSpecPaths[0]" in done.stderr
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------ kinds added by a SecurityDomain


def _domain_with_widget() -> dict[str, Any]:
    domain = copy.deepcopy(DOMAIN)
    domain["spec"]["workloadKinds"] = [WIDGET]
    return domain


def test_a_kind_a_domain_adds_is_checked_in_its_namespaces_only():
    other = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {"name": "office"},
        "spec": {"zone": "support", "namespaces": ["office"]},
    }
    snapshot = snapshot_from_objects([_domain_with_widget(), other], assume_named_namespaces_exist=True)
    widget = {
        "apiVersion": "apps.example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": NAMESPACE},
        "spec": {"pods": [{"spec": copy.deepcopy(RISKY_POD)}]},
    }
    assert not decide(widget, snapshot.context(NAMESPACE, NOW)).allowed
    assert _review(widget, snapshot).verdict == "denied"
    elsewhere = {**widget, "metadata": {"name": "w", "namespace": "office"}}
    assert decide(elsewhere, snapshot.context("office", NOW)).violations == ()
    assert _review(elsewhere, snapshot).verdict == "skipped"


# ---------------------------------------------------------------- Argo podSpecPatch, templateDefaults, references

CONFORMING_MAIN = {
    "image": "registry.example.com/iot/etl:1.2.3",
    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    },
}
PRIVILEGED_PATCH = '{"containers":[{"name":"main","securityContext":{"privileged":true}}]}'
CPU_PARAMETER_PATCH = '{"containers":[{"name":"main","resources":{"limits":{"cpu":"{{inputs.parameters.cpu}}"}}}]}'


def _argo(**spec: Any) -> dict[str, Any]:
    body = {"serviceAccountName": "etl", "entrypoint": "run", **spec}
    body.setdefault("templates", [{"name": "run", "container": copy.deepcopy(CONFORMING_MAIN)}])
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "etl", "namespace": NAMESPACE},
        "spec": body,
    }


def _findings(obj: dict[str, Any]) -> set[tuple[str, str]]:
    return {(v.rule, v.path) for v in decide(obj, _ctx()).violations}


def test_a_conforming_workflow_is_admitted():
    assert _findings(_argo()) == set()


@pytest.mark.parametrize(
    ("where", "patch_path"), [("workflow", "spec.podSpecPatch"), ("template", "spec.templates[0].podSpecPatch")]
)
def test_a_pod_spec_patch_cannot_smuggle_privileges_past_admission(where, patch_path):
    workflow = _argo()
    node = workflow["spec"] if where == "workflow" else workflow["spec"]["templates"][0]
    node["podSpecPatch"] = PRIVILEGED_PATCH
    assert _findings(workflow) == {("no-privileged", f"{patch_path}.containers[0].securityContext.privileged")}
    node["podSpecPatch"] = "containers: [{name: main, securityContext: {privileged: {{inputs.parameters.p}}}}]"
    assert ("no-privileged", f"{patch_path}.containers[0].securityContext.privileged") in _findings(workflow), (
        "a parameter where a boolean belongs counts as set: its value is chosen at submit time"
    )


def test_a_parameterised_resources_patch_is_admitted():
    """Argo's documented use of podSpecPatch: limits from parameters."""
    workflow = _argo()
    workflow["spec"]["templates"][0]["podSpecPatch"] = CPU_PARAMETER_PATCH
    assert _findings(workflow) == set()


def test_a_container_a_patch_adds_is_judged_whole_at_the_patch():
    workflow = _argo(podSpecPatch='{"containers":[{"name":"debug","image":"busybox:latest"}]}')
    found = _findings(workflow)
    assert ("image-pinned", "spec.podSpecPatch.containers[0].image") in found
    assert ("read-only-root-fs", "spec.podSpecPatch.containers[0].securityContext.readOnlyRootFilesystem") in found
    assert all(path.startswith("spec.podSpecPatch") for _, path in found), found


def test_a_patch_adding_a_host_path_or_root_is_denied():
    workflow = _argo(podSpecPatch='{"volumes":[{"name":"node","hostPath":{"path":"/"}}]}')
    assert _findings(workflow) == {("no-host-path", "spec.podSpecPatch.volumes[0].hostPath")}
    workflow = _argo()
    workflow["spec"]["templates"][0]["podSpecPatch"] = "securityContext: {runAsUser: 0}"
    assert _findings(workflow) == {("run-as-non-root", "spec.templates[0].podSpecPatch.securityContext.runAsUser")}


@pytest.mark.parametrize(
    "patch",
    [
        '{"containers":[{"name":"main","securityContext":{"$patch":"delete"}}]}',  # removes the securityContext
        "{{{",
        '{"containers":"x"}',
        "a: &a [1]\nb: *a",
        "just text",
        "x" * (64 * 1024 + 1),
    ],
    ids=["directive", "garbage", "shape", "alias", "scalar", "oversized"],
)
def test_a_patch_that_cannot_be_verified_is_a_finding_of_its_own(patch):
    found = _findings(_argo(podSpecPatch=patch))
    assert found == {("pod-spec-patch", "spec.podSpecPatch")}


def test_template_defaults_are_merged_under_every_template():
    bare = {k: v for k, v in CONFORMING_MAIN.items() if k != "securityContext"}
    defaults = {"container": {"securityContext": CONFORMING_MAIN["securityContext"]}}
    assert _findings(_argo(templateDefaults=defaults, templates=[{"name": "run", "container": bare}])) == set()
    risky = {"container": {"securityContext": {"privileged": True}}}
    assert {rule for rule, _ in _findings(_argo(templateDefaults=risky))} == {"no-privileged"}


def test_a_workflow_that_references_a_template_answers_for_what_it_sets():
    reference = {"workflowTemplateRef": {"name": "etl"}, "templates": []}
    assert _findings(_argo(**reference)) == set()
    assert _findings(_argo(**reference, hostNetwork=True)) == {("no-host-namespaces", "spec.hostNetwork")}
    assert _findings(_argo(**reference, securityContext={"runAsUser": 0})) == {
        ("run-as-non-root", "spec.securityContext.runAsUser")
    }
    privileged = {("no-privileged", "spec.podSpecPatch.containers[0].securityContext.privileged")}
    assert _findings(_argo(**reference, podSpecPatch=PRIVILEGED_PATCH)) == privileged
    assert _findings(_argo(**reference, podSpecPatch=CPU_PARAMETER_PATCH)) == set(), (
        "what the referenced template's containers lack is judged with the WorkflowTemplate"
    )


# ---------------------------------------------------------------- red-team review: Argo as Argo reads it


@pytest.mark.parametrize(
    "patch",
    [
        '{"HostNetwork": true}',
        '{"containers":[{"name":"main","securityContext":{"Privileged":true}}]}',
        "HostPID: true",
        '{"ho\u017ftNetwork": true}',  # Go's encoding/json folds the long s to s
        '{"hostNetwor\u212a": true}',  # and the Kelvin sign to k
        "{ {{workflow.parameters.p}} }",
        '{"containers":[{"name":"main", {{inputs.parameters.extra}} }]}',
        '{"nodeSelector":{ {{inputs.parameters.where}} }}',
    ],
    ids=["HostNetwork", "Privileged", "yaml-HostPID", "long-s", "kelvin", "param-key", "param-key-in-item", "free-map"],
)
def test_a_patch_field_name_go_would_match_case_insensitively_or_a_parameter_key_is_unverifiable(patch):
    assert _findings(_argo(podSpecPatch=patch)) == {("pod-spec-patch", "spec.podSpecPatch")}


def test_the_keys_of_map_fields_in_a_patch_are_free():
    patch = (
        '{"nodeSelector":{"kubernetes.io/arch":"arm64"},"containers":[{"name":"main","resources":'
        '{"limits":{"cpu":"1","memory":"1Gi","nvidia.com/gpu":"1"},"requests":{"Memory-X":"1"}}}],'
        '"affinity":{"podAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":'
        '[{"topologyKey":"zone","labelSelector":{"matchLabels":{"app.kubernetes.io/name":"etl"}}}]}}}'
    )
    assert _findings(_argo(podSpecPatch=patch)) == set()


def _sidecar(name: str, **extra: Any) -> dict[str, Any]:
    return {**copy.deepcopy(CONFORMING_MAIN), "name": name, **extra}


def test_template_defaults_merge_lists_by_their_keys_as_argo_does():
    privileged = _sidecar("proxy")
    privileged["securityContext"]["privileged"] = True
    template = {"name": "run", "container": copy.deepcopy(CONFORMING_MAIN), "sidecars": [_sidecar("log")]}
    workflow = _argo(templateDefaults={"sidecars": [privileged]}, templates=[template])
    assert _findings(workflow) == {("no-privileged", "spec.templateDefaults.sidecars[0].securityContext.privileged")}
    with_ports = {**copy.deepcopy(CONFORMING_MAIN), "ports": [{"containerPort": 8080}]}
    host_port = {"container": {"ports": [{"containerPort": 80, "hostPort": 80}]}}
    workflow = _argo(templateDefaults=host_port, templates=[{"name": "run", "container": with_ports}])
    assert {rule for rule, _ in _findings(workflow)} == {"no-host-ports"}
    volumes = {"volumes": [{"name": "node", "hostPath": {"path": "/"}}]}
    template = {"name": "run", "container": copy.deepcopy(CONFORMING_MAIN), "volumes": [{"name": "d", "emptyDir": {}}]}
    workflow = _argo(templateDefaults=volumes, templates=[template])
    assert _findings(workflow) == {("no-host-path", "spec.templateDefaults.volumes[0].hostPath")}


def test_a_referencing_workflow_answers_for_its_template_defaults_and_its_nulls():
    reference = {"workflowTemplateRef": {"name": "etl"}, "templates": []}
    risky = {
        "container": {"securityContext": {"privileged": True}},
        "volumes": [{"name": "n", "hostPath": {"path": "/"}}],
    }
    assert _findings(_argo(**reference, templateDefaults=risky)) == {
        ("no-privileged", "spec.templateDefaults.container.securityContext.privileged"),
        ("no-host-path", "spec.templateDefaults.volumes[0].hostPath"),
    }
    sidecar = {"sidecars": [{"name": "proxy", "image": "envoy:v1.29.0", "securityContext": {"privileged": True}}]}
    assert ("no-privileged", "spec.templateDefaults.sidecars[0].securityContext.privileged") in _findings(
        _argo(**reference, templateDefaults=sidecar)
    )
    assert _findings(_argo(**reference, templateDefaults={"securityContext": {"runAsUser": 0}})) == {
        ("run-as-non-root", "spec.templateDefaults.securityContext.runAsUser")
    }
    nulled = _findings(_argo(**reference, podSpecPatch='{"containers":[{"name":"main","securityContext":null}]}'))
    assert nulled
    assert {path for _, path in nulled} == {"spec.podSpecPatch.containers[0].securityContext"}


def test_argo_names_the_main_container_main_whatever_the_template_calls_it():
    named = {**copy.deepcopy(CONFORMING_MAIN), "name": "worker"}
    named.pop("resources")
    patch = '{"containers":[{"name":"main","resources":{"limits":{"cpu":"{{inputs.parameters.cpu}}","memory":"1Gi"}}}]}'
    workflow = _argo(templates=[{"name": "run", "container": named, "podSpecPatch": patch}])
    assert _findings(workflow) == set()
    script = {**copy.deepcopy(CONFORMING_MAIN), "name": "py", "source": "print(1)"}
    escalating = '{"containers":[{"name":"main","securityContext":{"allowPrivilegeEscalation":true}}]}'
    workflow = _argo(templates=[{"name": "run", "script": script, "podSpecPatch": escalating}])
    assert _findings(workflow) == {
        (
            "no-privilege-escalation",
            "spec.templates[0].podSpecPatch.containers[0].securityContext.allowPrivilegeEscalation",
        )
    }


def _review_as(obj: dict[str, Any], group: str, version: str, kind: str, operation: str = "CREATE") -> Any:
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": group, "version": version, "kind": kind},
            "namespace": NAMESPACE,
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": obj,
        },
    }
    return review(
        json.dumps(body).encode(), snapshot_from_objects([DOMAIN], assume_named_namespaces_exist=True), lambda: NOW
    )


def test_the_webhook_judges_an_object_by_request_kind_not_by_what_the_object_claims():
    claims_custom = {
        "apiVersion": "example.com/v1",
        "kind": "Pod",
        "metadata": {"name": "broker", "namespace": NAMESPACE},
        "spec": copy.deepcopy(RISKY_POD),
    }
    result = _review_as(claims_custom, "", "v1", "Pod")
    assert result.verdict == "denied"
    assert {v.rule for v in result.decision.violations} >= {"no-privileged", "no-host-namespaces"}
    claims_core = {**claims_custom, "apiVersion": "v1"}
    assert _review_as(claims_core, "example.com", "v1", "Pod").verdict == "skipped"


def test_kubectl_debug_on_kubernetes_1_21_is_judged_by_its_ephemeral_containers():
    debug = {
        "apiVersion": "v1",
        "kind": "EphemeralContainers",
        "metadata": {"name": "broker", "namespace": NAMESPACE},
        "ephemeralContainers": [
            {"name": "debugger", "image": "busybox:1.36.1", "securityContext": {"privileged": True}},
        ],
    }
    result = _review_as(debug, "", "v1", "EphemeralContainers", operation="UPDATE")
    assert result.verdict == "denied"
    paths = {(v.rule, v.path) for v in result.decision.violations}
    assert ("no-privileged", "ephemeralContainers[0].securityContext.privileged") in paths
    assert all(path.startswith("ephemeralContainers[0].") for _, path in paths), "the pod's own fields are not judged"
    assert "debugger" in result.body["response"]["status"]["message"]
    conforming = copy.deepcopy(debug)
    conforming["ephemeralContainers"] = [{**copy.deepcopy(CONFORMING_MAIN), "name": "debugger"}]
    conforming["ephemeralContainers"][0].pop("resources")  # ephemeral containers may not set resources
    assert _review_as(conforming, "", "v1", "EphemeralContainers", operation="UPDATE").verdict == "allowed"


@pytest.mark.parametrize("api_version", [" apps/v1", "apps/v1/extra", "Apps/v1", "/v1", "apps", "v1/", "apps/v1 "])
def test_an_api_version_the_api_server_refuses_is_invalid_not_unchecked(api_version):
    from iotsec.admission.snapshot import check
    from iotsec.model.manifests import Document, shape_problem

    deployment = {
        "apiVersion": api_version,
        "kind": "Deployment",
        "metadata": {"name": "broker", "namespace": NAMESPACE},
        "spec": {"template": {"spec": copy.deepcopy(RISKY_POD)}},
    }
    assert "apiVersion" in (shape_problem(deployment) or "")
    report = check([Document("d.yaml", 0, deployment)], NOW)
    assert len(report.invalid) == 1
    for fine in ("apps/v1", "v1", "argoproj.io/v1alpha1", "batch/v1beta1"):
        assert shape_problem({**deployment, "apiVersion": fine}) is None


def test_check_for_a_server_before_1_24_judges_a_windows_pod_as_the_linux_pod_it_stores():
    from iotsec.admission.defaults import apply_api_defaults
    from iotsec.admission.snapshot import check
    from iotsec.model.manifests import Document

    container = {"name": "app", "image": "registry.example.com/app:1.2.3", "securityContext": {"runAsNonRoot": True}}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "w", "namespace": NAMESPACE},
        "spec": {"os": {"name": "windows"}, "serviceAccountName": "app", "containers": [container]},
    }
    assert "os" not in apply_api_defaults(pod, server_minor=23)["spec"]
    assert apply_api_defaults(pod, server_minor=24)["spec"]["os"] == {"name": "windows"}
    assert "os" in pod["spec"], "the input is not changed"
    domain = Document("d.yaml", 0, DOMAIN)
    rules = {
        minor: {
            v.rule
            for c in check([domain, Document("p.yaml", 0, pod)], NOW, server_minor=minor).checked
            for v in c.decision.violations
        }
        for minor in (21, 24)
    }
    assert "read-only-root-fs" in rules[21]
    assert "read-only-root-fs" not in rules[24]
