"""The Helm chart, rendered and linted by the real helm binary, checked against upstream schemas and our tables."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from iotsec.build import rbac
from iotsec.build.webhook import OBJECT_RESOURCES, client_config, validating_webhook_configuration
from iotsec.model.config import Config
from iotsec.model.workloads import BUILT_IN
from tests.conftest import ROOT

CHART = ROOT / "charts" / "iotsec-operator"
# A server that has ValidatingAdmissionPolicy: the chart then renders the operator fence's policy too.
FENCE_POLICY_FLAGS = (
    "--kube-version",
    "1.31.0",
    "--api-versions",
    "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy",
)
NON_DEFAULT = {
    "image": {
        "repository": "registry.example.com/iotsec/iotsec",
        "tag": "0.1.0",
        "pullPolicy": "Always",
        "digest": "sha256:" + "a" * 64,
    },
    "certificates": {"provider": "cert-manager", "certManagerSecret": "iotsec-tls"},
    "webhook": {"replicas": 3, "excludedNamespaces": ["monitoring"], "unassigned": "warn"},
    "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    "networkPolicy": {"enabled": False},
}


def _helm() -> str:
    found = shutil.which("helm") or str(Path(sys.executable).parent / "helm")
    if not Path(found).is_file():
        pytest.fail("no helm binary: `make test` installs it (tools/install_helm.py)", pytrace=False)
    return found


def helm(*args: str, values: dict[str, Any] | None = None, tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [_helm(), *args]
    if values is not None and tmp is not None:
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        command += ["-f", str(path)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def render(tmp: Path, values: dict[str, Any] | None = None, *extra: str) -> list[dict[str, Any]]:
    """The chart as `helm template` renders it; `extra`: more flags (--kube-version, --api-versions)."""
    result = helm("template", "iotsec", str(CHART), "--namespace", "iotsec-system", *extra, values=values, tmp=tmp)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize("values", [None, NON_DEFAULT], ids=["defaults", "non-default"])
def test_helm_lint_strict(tmp_path, values):
    result = helm("lint", "--strict", str(CHART), values=values, tmp=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", [None, NON_DEFAULT], ids=["defaults", "non-default"])
def test_every_rendered_object_is_valid_kubernetes(tmp_path, values):
    docs = render(tmp_path, values)
    version = kubernetes_validate.latest_version()
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # prometheus-operator kinds are not in the upstream Kubernetes schema
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"webhook": {"replicas": 1}}, "minimum"),
        ({"webhook": {"timeoutSeconds": 30}}, "maximum"),
        ({"webhook": {"unassigned": "block"}}, "unassigned"),
        ({"image": {"repository": "r", "tag": "t", "pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"operatr": {}}, "operatr"),
        ({"metrics": {"port": "8001"}}, "port"),
    ],
)
def test_invalid_values_are_rejected_by_the_schema(tmp_path, values, message):
    result = helm("template", "iotsec", str(CHART), values=values, tmp=tmp_path)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize("name", ["iotsec-operator", "iotsec-webhook"])
def test_both_pods_meet_the_restricted_pod_security_standard(tmp_path, name):
    pod = one(render(tmp_path), "Deployment", name)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert set(container["resources"]["limits"]) == {"cpu", "memory"}
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    from iotsec.admission.context import Context, DomainPolicy
    from iotsec.admission.engine import decide

    deployment = one(render(tmp_path), "Deployment", name)
    verdict = decide(deployment, Context(DomainPolicy("support", "support"), now=__import__("datetime").datetime.now()))
    assert [v.rule for v in verdict.violations] == [], "iotsec's own pods pass iotsec's admission"


def test_an_elected_reconciler_and_a_highly_available_webhook(tmp_path):
    docs = render(tmp_path, None, "--api-versions", "policy/v1")
    operator = one(docs, "Deployment", "iotsec-operator")["spec"]
    assert operator["replicas"] == 2
    assert operator["strategy"] == {"type": "RollingUpdate"}, "a new pod stands by until the old one lets go"
    args = operator["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--leader-election") + 1] == "iotsec-system/iotsec-operator"
    assert operator["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert one(docs, "PodDisruptionBudget", "iotsec-operator")["spec"]["minAvailable"] == 1
    single = one(
        render(tmp_path, {"operator": {"replicas": 1}}, "--api-versions", "policy/v1"), "Deployment", "iotsec-operator"
    )
    assert single["spec"]["strategy"] == {"type": "Recreate"}
    assert "--leader-election" not in single["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [
        d
        for d in render(tmp_path, {"operator": {"replicas": 1}})
        if d["kind"] == "PodDisruptionBudget" and "operator" in d["metadata"]["name"]
    ]
    webhook = one(docs, "Deployment", "iotsec-webhook")["spec"]
    assert webhook["replicas"] >= 2
    assert webhook["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert one(docs, "PodDisruptionBudget", "iotsec-webhook")["spec"]["minAvailable"] == 1


def _rules(docs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return one(docs, "ClusterRole", name)["rules"]


def test_cluster_roles_grant_exactly_the_table(tmp_path):
    docs = render(tmp_path)
    assert _rules(docs, "iotsec-operator") == rbac.cluster_role_rules(rbac.OPERATOR + rbac.OPERATOR_WEBHOOK_CA)
    assert _rules(docs, "iotsec-operator-namespace") == rbac.cluster_role_rules(rbac.OPERATOR_NAMESPACED)
    for privilege, rules in rbac.tenant_class_rules().items():
        assert _rules(docs, f"iotsec-tenant-{privilege}") == rules
    assert _rules(docs, "iotsec-webhook") == rbac.cluster_role_rules(rbac.WEBHOOK)
    assert _rules(docs, "iotsec-audit-sink") == rbac.cluster_role_rules(rbac.AUDIT_SINK)
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "Role"}
    assert roles["iotsec-system", "iotsec-operator"]["rules"] == rbac.cluster_role_rules(rbac.OPERATOR_NAMESPACE)
    assert roles["iotsec-audit", "iotsec-operator"]["rules"] == rbac.cluster_role_rules(rbac.OPERATOR_AUDIT_NAMESPACE)
    assert not [key for key in roles if key[1] == "iotsec-audit-sink"], "the sink's one Role is its canary grant"
    assert (
        subprocess.run(
            [sys.executable, "-m", "iotsec", "rbac", "--check", str(CHART / "files")], check=False
        ).returncode
        == 0
    ), "regenerate with make crds"


def _in(docs: list[dict[str, Any]], namespace: str) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs if d["metadata"].get("namespace") == namespace}


@pytest.mark.parametrize(
    ("values", "audit"),
    [(None, "iotsec-audit"), ({"audit": {"namespace": "trail"}}, "trail")],
    ids=["default", "audit.namespace"],
)
def test_the_audit_sinks_get_a_namespace_of_their_own(tmp_path, values, audit):
    docs = render(tmp_path, values)
    namespace = one(docs, "Namespace", audit)
    assert namespace["metadata"]["labels"]["kubernetes.io/metadata.name"] == audit, "1.20 does not set it"
    for mode in ("enforce", "audit", "warn"):
        assert namespace["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"
    assert ("ServiceAccount", "iotsec-audit-sink") in _in(docs, audit)
    assert ("ServiceAccount", "iotsec-audit-sink") not in _in(docs, "iotsec-system")
    assert {("Role", "iotsec-operator"), ("RoleBinding", "iotsec-operator")} <= _in(docs, audit)
    subjects = one(docs, "ClusterRoleBinding", "iotsec-audit-sink")["subjects"]
    assert subjects == [{"kind": "ServiceAccount", "name": "iotsec-audit-sink", "namespace": audit}]
    binding = next(d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == audit)
    assert binding["subjects"][0]["namespace"] == "iotsec-system", "the operator itself stays in the release namespace"
    for deployment in ("iotsec-operator", "iotsec-webhook"):
        env = one(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "IOTSEC_AUDIT_NAMESPACE", "value": audit} in env, deployment
    configuration = one(docs, "ValidatingWebhookConfiguration", "iotsec")
    for webhook in configuration["webhooks"]:
        excluded = [
            value
            for expression in (webhook.get("namespaceSelector") or {}).get("matchExpressions", [])
            for value in expression.get("values", [])
        ]
        assert audit not in excluded, f"{webhook['name']}: the sinks pass iotsec's own admission"
    assert ("NetworkPolicy", "iotsec-default-deny") in _in(docs, audit)


def test_the_audit_namespace_cannot_be_the_release_namespace(tmp_path):
    result = helm(
        "template",
        "iotsec",
        str(CHART),
        "--namespace",
        "iotsec-system",
        values={"audit": {"namespace": "iotsec-system"}},
        tmp=tmp_path,
    )
    assert result.returncode != 0
    assert "audit.namespace must differ from the release namespace" in result.stderr


def test_the_operator_runs_routes_and_binds_nothing_in_the_release_namespace(tmp_path):
    roles = [d for d in render(tmp_path) if d["kind"] == "Role" and d["metadata"]["name"] == "iotsec-operator"]
    (role,) = [r for r in roles if r["metadata"]["namespace"] == "iotsec-system"]
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert resources == {"secrets", "configmaps", "leases"}, (
        "no deployments, services, networkpolicies, roles or claims"
    )
    lease_rules = [rule for rule in role["rules"] if rule["resources"] == ["leases"]]
    assert {tuple(r["verbs"]): r.get("resourceNames") for r in lease_rules} == {
        ("get", "update"): ["iotsec-operator"],  # leader election: its own Lease only
        ("create",): None,  # RBAC cannot limit create by name
    }


def test_no_wildcards_and_no_escalation_beyond_what_the_table_explains(tmp_path):
    docs = render(tmp_path)
    for role in (d for d in docs if d["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], role["metadata"]["name"]
            assert "impersonate" not in rule["verbs"]
            assert "escalate" not in rule["verbs"], "no escalate anywhere: RBAC's own check stays in force"
            if "bind" in rule["verbs"]:
                assert rule["resources"] == ["clusterroles"]
                assert rule["resourceNames"] == [
                    "iotsec-operator-namespace",
                    "iotsec-tenant-admin",
                    "iotsec-tenant-operator",
                    "iotsec-tenant-viewer",
                ], "bind only the ClusterRoles the chart ships"
            if role["metadata"]["name"].startswith("iotsec-tenant-"):
                written = {
                    r
                    for rule in role["rules"]
                    if set(rule["verbs"]) & {"create", "patch", "update", "delete"}
                    for r in rule["resources"]
                }
                assert "networkpolicies" not in written, "tenants never write NetworkPolicies"
        if role["metadata"]["name"].startswith("iotsec-tenant-"):
            continue  # a tenant admin manages the Secrets in its own namespaces; iotsec reads them by name only
        secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
        assert not any("list" in r["verbs"] or "watch" in r["verbs"] for r in secret_rules), "Secrets by name only"
    (webhook_patch,) = [
        r
        for r in _rules(docs, "iotsec-operator")
        if "validatingwebhookconfigurations" in r["resources"] and "patch" in r["verbs"]
    ]
    assert webhook_patch["resourceNames"] == ["iotsec"], "it may edit its own webhook configuration only"
    tls = one(docs, "Role", "iotsec-webhook-tls")["rules"]
    assert tls == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["iotsec-webhook-tls"]}
    ]


def test_every_permission_has_a_reason():
    assert all(len(p.reason) > 20 for p in rbac.OPERATOR + rbac.OPERATOR_NAMESPACED + rbac.WEBHOOK)


def test_the_operator_writes_cluster_wide_only_what_its_fence_confines(tmp_path):
    """Everything the operator may write in any namespace is RBAC it cannot widen, or is fenced by admission."""
    writes = {"create", "update", "patch", "delete", "deletecollection", "bind", "escalate", "impersonate"}
    cluster_wide = {
        (group, resource, verb)
        for rule in _rules(render(tmp_path), "iotsec-operator")
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in set(rule["verbs"]) & writes
    }
    fenced = {("rbac.authorization.k8s.io", "rolebindings", "create"), ("", "namespaces", "create")}
    fenced |= {("", "namespaces", v) for v in ("patch", "delete")}
    fenced |= {("rbac.authorization.k8s.io", "clusterroles", "bind")}  # by resourceNames, tested above
    fenced |= {
        ("iotsec.io", r, "patch") for r in ("securitydomains", "tenantisolations", "backuppolicies", "auditpolicies")
    }
    harmless = {(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")}
    harmless |= {
        ("iotsec.io", f"{r}/status", "patch")
        for r in ("securitydomains", "tenantisolations", "backuppolicies", "auditpolicies")
    }
    harmless |= {("admissionregistration.k8s.io", "validatingwebhookconfigurations", "patch")}  # resourceNames
    harmless |= {("storage.k8s.io", "storageclasses", v) for v in ("create", "patch", "delete")}
    harmless |= {  # the background scan's reports, by resourceNames iotsec-scan (test_scan_rbac_...)
        ("wgpolicyk8s.io", r, v)
        for r in ("policyreports", "clusterpolicyreports")
        for v in ("create", "patch", "delete")
    }
    assert cluster_wide - fenced - harmless == set(), "a cluster-wide write nobody confines"
    secrets = [r for r in _rules(render(tmp_path), "iotsec-operator") if "secrets" in r["resources"]]
    assert secrets == [], "no Secret is readable cluster-wide: only in the namespaces the operator was granted"


WIDGET = {"group": "apps.example.com", "kind": "Widget", "resource": "widgets", "podSpecPaths": ["spec.pods[*].spec"]}
GADGET = {"kind": "Gadget", "resource": "gadgets", "podSpecPaths": ["spec.template.spec"]}  # the core group


def test_the_chart_registers_exactly_the_workload_table_and_the_checked_objects(tmp_path):
    (workloads, *_) = one(render(tmp_path), "ValidatingWebhookConfiguration", "iotsec")["webhooks"]
    registered = {
        (group, r, rule["scope"])
        for rule in workloads["rules"]
        for group in rule["apiGroups"]
        for r in rule["resources"]
    }
    expected = {(c.group, c.resource, "Namespaced" if c.namespaced else "Cluster") for c in BUILT_IN}
    expected |= {(g, r, "Namespaced") for g, names in OBJECT_RESOURCES.items() for r in names}
    assert registered == expected
    assert ("argoproj.io", "rollouts", "Namespaced") in registered


def test_workload_kinds_from_values_are_registered_and_passed_to_the_webhook(tmp_path):
    values = {"webhook": {"excludedNamespaces": ["monitoring"], "workloadKinds": [WIDGET, GADGET]}}
    docs = render(tmp_path, values)
    shipped = one(docs, "ValidatingWebhookConfiguration", "iotsec")
    (container,) = one(docs, "Deployment", "iotsec-webhook")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    config = Config.from_env(env)  # the webhook reads what the chart passes, and refuses nothing of it
    assert [(c.group, c.kind, c.resource, c.pod_spec_paths) for c in config.workload_kinds] == [
        ("apps.example.com", "Widget", "widgets", ("spec.pods[*].spec",)),
        ("", "Gadget", "gadgets", ("spec.template.spec",)),
    ]
    built = validating_webhook_configuration(
        "iotsec",
        client_config(service=("iotsec-system", "iotsec-webhook", 443)),
        "iotsec-system",
        ["monitoring"],
        workload_kinds=config.workload_kinds,
    )
    assert json.loads(json.dumps(shipped["webhooks"])) == built["webhooks"]
    rules = shipped["webhooks"][0]["rules"]
    assert {"apiGroups": [""], "resources": ["gadgets"]}.items() <= rules[-1].items()
    assert rules[-2]["apiGroups"] == ["apps.example.com"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**WIDGET, "podSpecPaths": ["spec..pods"]}, "podSpecPaths"),
        ({**WIDGET, "podSpecPaths": []}, "podSpecPaths"),
        ({**WIDGET, "kind": "widget"}, "kind"),
        ({k: v for k, v in WIDGET.items() if k != "resource"}, "resource"),
        ({**WIDGET, "paths": ["spec"]}, "paths"),
    ],
)
def test_malformed_workload_kinds_are_refused_by_the_schema(tmp_path, entry, message):
    result = helm("template", "iotsec", str(CHART), values={"webhook": {"workloadKinds": [entry]}}, tmp=tmp_path)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


def test_the_shipped_webhook_configuration_is_the_builders(tmp_path):
    shipped = one(
        render(tmp_path, {"webhook": {"excludedNamespaces": ["monitoring"]}}),
        "ValidatingWebhookConfiguration",
        "iotsec",
    )
    built = validating_webhook_configuration(
        "iotsec", client_config(service=("iotsec-system", "iotsec-webhook", 443)), "iotsec-system", ["monitoring"]
    )
    assert json.loads(json.dumps(shipped["webhooks"])) == built["webhooks"]


def test_cert_manager_mode_hands_the_ca_bundle_to_cert_manager(tmp_path):
    docs = render(tmp_path, NON_DEFAULT)
    configuration = one(docs, "ValidatingWebhookConfiguration", "iotsec")
    assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "iotsec-system/iotsec-tls"
    env = {
        e["name"]: e["value"]
        for e in one(docs, "Deployment", "iotsec-operator")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["IOTSEC_WEBHOOK_SECRET_NAME"] == "", "the operator leaves certificates to cert-manager"
    assert (
        "--tls-secret-ref=iotsec-system/iotsec-tls"
        in one(docs, "Deployment", "iotsec-webhook")["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_chart_crds_are_the_generated_ones():
    for path in (ROOT / "crds").glob("*.yaml"):
        assert (CHART / "crds" / path.name).read_text() == path.read_text()


def test_dashboard_is_valid_json_and_notes_explain_the_install(tmp_path):
    docs = render(tmp_path)
    dashboard = json.loads(one(docs, "ConfigMap", "iotsec-dashboard")["data"]["iotsec.json"])
    assert {p["title"] for p in dashboard["panels"]} >= {"Violations by X.1369 control", "Admission latency p99"}
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "kubectl replace -f crds/" in notes


def dockerfile_stages() -> tuple[dict[str, str], list[tuple[str, list[str]]]]:
    """The Dockerfile's global ARG defaults and its stages as (FROM image with ARGs resolved, lines)."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    first_from = next(i for i, line in enumerate(lines) if line.startswith("FROM "))
    defaults = dict(
        line.split()[1].split("=", 1) for line in lines[:first_from] if line.startswith("ARG ") and "=" in line
    )
    stages: list[tuple[str, list[str]]] = []
    for line in lines[first_from:]:
        if line.startswith("FROM "):
            image = line.split()[1]
            for name, value in defaults.items():
                image = image.replace("${" + name + "}", value)
            stages.append((image, []))
        stages[-1][1].append(line)
    return defaults, stages


def test_dockerfile_runs_as_a_non_root_user_on_a_pinned_base():
    _, stages = dockerfile_stages()
    bases = [image for image, _ in stages]
    assert all("$" not in base for base in bases), f"every FROM resolves from an ARG default: {bases}"
    assert all("@sha256:" in base or base.split(":")[-1][0].isdigit() for base in bases if base != "scratch"), bases
    final = stages[-1][1]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users, "the final stage sets a USER"
    assert users[-1].split(":")[0].isdigit()
    assert int(users[-1].split(":")[0]) >= 10000
    assert "restic" in "\n".join(final), "backups need restic in the final image"
    assert "gcc" not in "\n".join(final), "no compilers in the final image"
    assert "build-essential" not in "\n".join(final), "no compilers in the final image"
    assert 'ENTRYPOINT ["iotsec"]' in final


def test_dockerfile_final_stage_has_an_ssh_client_for_sftp_targets():
    """restic's sftp: backend runs `ssh`; Debian's restic does not pull it in (issue 14). Text-level: the image is
    built by `make image`, not here."""
    _, stages = dockerfile_stages()
    final = "\n".join(stages[-1][1])
    install = next(line for line in stages[-1][1] if "apt-get" in line and " install " in line)
    packages = install.replace(";", " ").replace("\\", " ").split()
    assert "openssh-client" in packages, "the final stage installs openssh-client beside restic"
    assert "restic" in packages
    assert "command -v ssh" in final, "a base without ssh gets it installed (one with it skips apt)"
    assert "openssh-server" not in final, "the image is a client only"


def test_dockerfile_builds_on_any_bookworm_base_into_a_venv_on_path():
    defaults, stages = dockerfile_stages()
    assert defaults.get("BASE") == "python:3.11.14-slim-bookworm", "the official base stays the default"
    from_lines = [lines[0] for _, lines in stages]
    assert all(line.split()[1] == "${BASE}" for line in from_lines), "every stage builds on the chosen BASE"
    build, final = "\n".join(stages[0][1]), "\n".join(stages[-1][1])
    # PEP 668: Debian's python3 refuses pip into the system; the venv works on both bases
    assert "python3 -m venv /opt/iotsec" in build
    assert "COPY --from=build /opt/iotsec /opt/iotsec" in final
    assert any(line.startswith("ENV PATH=/opt/iotsec/bin:") for line in stages[-1][1])
    assert "pip uninstall -y pip" in build, "the final venv carries no pip"


def test_dockerfile_takes_mirror_settings_at_build_time_only():
    _, stages = dockerfile_stages()
    build, final = stages[0][1], stages[-1][1]
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "APT_MIRROR"):
        assert any(line.startswith(f"ARG {name}") for line in build), f"{name} is a build argument"
    env = " ".join(line for line in final if line.startswith("ENV "))
    assert "PIP_" not in env, "no pip settings in the final image's environment"
    assert "MIRROR" not in env
    assert not any(line.startswith("ARG ") for line in final), "no build setting reaches the final stage's history"
    assert all("/etc/apt/sources.list" not in line for line in build + final), "apt sources are never rewritten"
    assert "--mount=type=secret,id=ca-bundle" in "\n".join(build), "a CA bundle comes in as a secret, not a file"


def test_the_readme_rbac_table_is_the_table():
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- rbac-table:start -->\n", "<!-- rbac-table:end -->"
    assert start in readme
    assert end in readme
    shown = readme.split(start, 1)[1].split(end, 1)[0]
    assert shown == rbac.markdown_table(), (
        "regenerate: python -c 'from iotsec.build import rbac; print(rbac.markdown_table(), end=\"\")'"
    )


@pytest.mark.parametrize(("kube_version", "failure"), [("1.27.0", "Ignore"), ("1.31.0", "Fail")])
def test_the_fence_fails_closed_where_match_conditions_exist(tmp_path, kube_version, failure):
    configuration = one(
        render(tmp_path, None, "--kube-version", kube_version), "ValidatingWebhookConfiguration", "iotsec"
    )
    (fence,) = [w for w in configuration["webhooks"] if w["name"] == "platform.iotsec.io"]
    assert fence["failurePolicy"] == failure
    assert ("matchConditions" in fence) == (failure == "Fail")


def test_with_cert_manager_the_operator_cannot_touch_any_webhook_configuration(tmp_path):
    rules = _rules(render(tmp_path, NON_DEFAULT), "iotsec-operator")
    assert rules == rbac.cluster_role_rules(rbac.OPERATOR)
    assert not [r for r in rules if "admissionregistration.k8s.io" in r["apiGroups"]]


def test_the_operator_can_write_the_webhooks_own_certificate_before_the_webhook_runs(tmp_path):
    """Review finding: a fail-closed fence over every Secret deadlocked the install on >= 1.28 (the webhook needs
    the serving certificate the operator writes into the release namespace)."""
    configuration = one(render(tmp_path, None, "--kube-version", "1.30.0"), "ValidatingWebhookConfiguration", "iotsec")
    closed = [w for w in configuration["webhooks"] if w["failurePolicy"] == "Fail"]
    for webhook in closed:
        if any("secrets" in rule["resources"] for rule in webhook["rules"]):
            (expression,) = webhook["namespaceSelector"]["matchExpressions"]
            assert expression["operator"] == "NotIn"
            assert "iotsec-system" in expression["values"]
    assert any(w["name"] == "secrets.platform.iotsec.io" for w in closed)


def test_the_admission_policy_is_valid_kubernetes_where_it_is_rendered(tmp_path):
    docs = render(tmp_path, None, *FENCE_POLICY_FLAGS)
    policies = [d for d in docs if d["kind"].startswith("ValidatingAdmissionPolicy")]
    assert [p["kind"] for p in policies] == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    for doc in policies:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    assert all(v["reason"] == "Forbidden" for v in policies[0]["spec"]["validations"]), "403, like the webhook"


def test_every_port_names_its_protocol_so_server_side_apply_accepts_the_chart(tmp_path):
    """Ports are associative lists keyed by (port, protocol): server-side apply (helm 4's default) refuses an
    element without `protocol` ("associative list with keys has an element that omits key field protocol")."""

    def port_lists(node: Any) -> list[list[dict[str, Any]]]:
        if isinstance(node, dict):
            own = [node["ports"]] if isinstance(node.get("ports"), list) else []
            return own + [found for value in node.values() for found in port_lists(value)]
        if isinstance(node, list):
            return [found for item in node for found in port_lists(item)]
        return []

    for values in (None, NON_DEFAULT):
        for doc in render(tmp_path, values):
            if doc["kind"] in ("Service", "Deployment"):
                for ports in port_lists(doc):
                    assert all("protocol" in p for p in ports), (doc["kind"], doc["metadata"]["name"], ports)


@pytest.mark.parametrize("values", [None, NON_DEFAULT], ids=["defaults", "non-default"])
def test_the_chart_gives_its_pods_settings_iotsec_reads(tmp_path, values):
    """Every IOTSEC_* variable the chart sets is a setting with a valid value, and names what the chart made."""
    docs = render(tmp_path, values)
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    for deployment in ("iotsec-operator", "iotsec-webhook"):
        container = one(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
        env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
        settings = Config.from_env(env)
        assert settings.unknown(env) == [], deployment
        assert settings.platform.namespace == "iotsec-system", deployment
        assert settings.platform.operator_service_account in accounts, deployment
        assert settings.platform.sink_service_account in accounts, deployment
        if deployment == "iotsec-operator":
            assert settings.image == container["image"], "the operator's Jobs and sinks run the chart's image"


def test_the_webhook_admits_every_network_policy_the_chart_installs_from_an_administrator(tmp_path):
    """`helm upgrade` goes through iotsec's own webhook: the chart's policies must pass it (one in the audit
    namespace was refused in CI)."""
    from datetime import UTC, datetime

    from iotsec.admission.context import Snapshot
    from iotsec.admission.engine import decide
    from iotsec.model.platform import Platform

    snapshot = Snapshot(platform=Platform())
    judged = [  # the release namespace is left out of the webhook's namespaceSelector: it never sees those
        o
        for o in render(tmp_path)
        if o.get("kind") == "NetworkPolicy" and o["metadata"]["namespace"] != snapshot.platform.namespace
    ]
    assert {o["metadata"]["namespace"] for o in judged} == {snapshot.platform.audit_namespace}
    policies = judged
    for obj in policies:
        namespace = obj["metadata"]["namespace"]
        decision = decide(obj, snapshot.context(namespace, datetime.now(UTC), "kubernetes-admin"))
        assert decision.allowed, (obj["metadata"], decision.message)


# ---------------------------------------------------------------- the background scan (issue 17)

POLICY_REPORT_CRDS = {"policyreports.wgpolicyk8s.io", "clusterpolicyreports.wgpolicyk8s.io"}


def _crds(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}


def test_scan_policyreport_crds_installed_when_absent_and_kept_on_uninstall(tmp_path):
    """helm template has no cluster: lookup finds nothing, so auto installs them, annotated keep."""
    crds = _crds(render(tmp_path))
    assert set(crds) >= POLICY_REPORT_CRDS
    for name in POLICY_REPORT_CRDS:
        assert crds[name]["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert crds[name]["spec"]["versions"][0]["name"] == "v1alpha2"


@pytest.mark.parametrize(
    "values",
    [
        {"scan": {"installPolicyReportCRDs": False}},
        {"scan": {"installPolicyReportCRDs": "false"}},
        {"scan": {"enabled": False}},
    ],
    ids=["false", "false-string", "scan-off"],
)
def test_scan_policyreport_crds_not_installed_when_told(tmp_path, values):
    assert not POLICY_REPORT_CRDS & set(_crds(render(tmp_path, values)))


def test_scan_policyreport_crd_template_is_guarded_by_a_lookup_of_each_crd():
    template = (CHART / "templates" / "policyreport-crds.yaml").read_text()
    assert 'lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" $crd.metadata.name' in template


def _operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    (container,) = one(docs, "Deployment", "iotsec-operator")["spec"]["template"]["spec"]["containers"][:1]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_scan_interval_and_exclusions_reach_the_operator(tmp_path):
    env = _operator_env(render(tmp_path))
    assert Config.from_env(env).scan_interval == 300
    env = _operator_env(render(tmp_path, {"scan": {"interval": "2m"}, "webhook": {"excludedNamespaces": ["a", "b"]}}))
    settings = Config.from_env(env)
    assert (settings.scan_interval, settings.excluded_namespaces) == (120, ("a", "b"))
    assert Config.from_env(_operator_env(render(tmp_path, {"scan": {"enabled": False}}))).scan_interval == 0


@pytest.mark.parametrize(
    "values",
    [{"scan": {"interval": "soon"}}, {"scan": {"installPolicyReportCRDs": "maybe"}}, {"scan": {"typo": 1}}],
    ids=["interval", "install", "unknown"],
)
def test_scan_values_schema_refuses_nonsense(tmp_path, values):
    result = helm("template", "iotsec", str(CHART), values=values, tmp=tmp_path)
    assert result.returncode != 0
    assert "scan" in result.stderr


def test_scan_rbac_reads_every_scanned_kind_and_writes_only_reports_named_iotsec_scan(tmp_path):
    from iotsec.admission.scan import SCANNED_KINDS
    from iotsec.model.workloads import CHECKED_OBJECT_KINDS

    rules = _rules(render(tmp_path), "iotsec-operator")
    listable = {
        (g, r) for rule in rules if "list" in rule["verbs"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    plural = {c.key: c.resource for c in BUILT_IN}
    plural |= {
        ("", "Service"): "services",
        ("", "PersistentVolumeClaim"): "persistentvolumeclaims",
        ("", "ConfigMap"): "configmaps",
        ("networking.k8s.io", "Ingress"): "ingresses",
        ("networking.k8s.io", "NetworkPolicy"): "networkpolicies",
        ("rbac.authorization.k8s.io", "RoleBinding"): "rolebindings",
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"): "clusterrolebindings",
    }
    assert set(plural) >= {c.key for c in BUILT_IN} | CHECKED_OBJECT_KINDS
    for versions, kind in SCANNED_KINDS:
        group = versions[0].rpartition("/")[0]
        assert (group, plural[(group, kind)]) in listable, kind
    writes = [r for r in rules if "wgpolicyk8s.io" in r["apiGroups"] and set(r["verbs"]) - {"list", "watch"}]
    assert writes == [
        {
            "apiGroups": ["wgpolicyk8s.io"],
            "resources": ["policyreports", "clusterpolicyreports"],
            "verbs": ["get", "create", "patch", "delete"],
            "resourceNames": ["iotsec-scan"],
        }
    ]


def test_scan_alert_for_objects_that_bypassed_admission(tmp_path):
    rule = one(render(tmp_path, {"metrics": {"prometheusRule": {"enabled": True}}}), "PrometheusRule", "iotsec")
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    alert = alerts["IoTSecBackgroundViolations"]
    assert alert["expr"] == 'iotsec_background_violations{mode="enforce"} > 0'
    assert alert["for"] == "10m"
    description = alert["annotations"]["description"]
    for reason in ("bypassed admission", "webhook was unavailable", "tightened", "joined"):
        assert reason in description


def test_the_operator_outlasts_a_control_plane_restart_and_never_hangs_when_it_stops(tmp_path, monkeypatch):
    """kopf stops the whole operator when one of its own requests fails its last retry, and a stopping operator
    whose handler threads are mid-request used to hang for kopf's 10 minutes with its liveness endpoint closed
    (CI, issue 17: after the audit test restarted the control plane, kubelet killed the pod 70 s later)."""
    import dataclasses

    import kopf

    from iotsec.controllers import runtime

    monkeypatch.setattr(runtime, "_loaded", dataclasses.replace(runtime.config(), metrics_port=0))
    settings = kopf.OperatorSettings()
    assert sum(settings.networking.error_backoffs) < 60  # kopf's own budget: shorter than a restart
    runtime.configure(settings=settings)
    assert sum(settings.networking.error_backoffs) >= 240, "a control plane down for four minutes is outlasted"
    assert max(settings.networking.error_backoffs) <= 30, "and found again within half a minute of its return"
    operator = one(render(tmp_path), "Deployment", "iotsec-operator")["spec"]["template"]["spec"]
    grace = operator.get("terminationGracePeriodSeconds", 30)  # the Kubernetes default when the chart sets none
    assert settings.process.ultimate_exiting_timeout is not None
    assert settings.process.ultimate_exiting_timeout < grace, "the operator exits itself before kubelet has to"
