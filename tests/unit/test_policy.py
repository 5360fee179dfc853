"""The admission policy: every rule has a conforming and a violating case; kinds, levels, modes, exceptions."""

from __future__ import annotations

import contextlib
import copy
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.admission.context import Context, DomainPolicy
from iotsec.admission.engine import MalformedObjectError, decide
from iotsec.admission.images import parse_image
from iotsec.admission.rules import RULES
from iotsec.admission.snapshot import check
from iotsec.api.securitydomain import SecurityDomainSpec
from iotsec.model.manifests import load_documents
from tests.conftest import EXAMPLES

NOW = datetime(2026, 11, 27, tzinfo=UTC)
DIGEST = "sha256:" + "a" * 64
CORE = SecurityDomainSpec.model_validate(
    {
        "zone": "core",
        "namespaces": ["iot"],
        "allowedPorts": [{"port": 8080}, {"port": 9000, "endPort": 9010}],
        "allowedRegistries": ["registry.example.com"],
        "securityLevels": ["standard", "high"],
    }
)


def ctx(spec: SecurityDomainSpec = CORE, **overrides: Any) -> Context:
    fields = {
        "domain": DomainPolicy.of("core", spec),
        "now": NOW,
        "encrypted_storage_classes": frozenset({"encrypted-ssd"}),
    }
    return Context(**{**fields, **overrides})


def container(**overrides: Any) -> dict[str, Any]:
    base = {
        "name": "app",
        "image": f"registry.example.com/iot/app@{DIGEST}",
        "ports": [{"containerPort": 8080}],
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return {**base, **overrides}


def pod(**spec_overrides: Any) -> dict[str, Any]:
    spec = {
        "serviceAccountName": "app",
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container()],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "namespace": "iot", "labels": {"iotsec.io/security-level": "high"}},
        "spec": {**spec, **spec_overrides},
    }


def rules_of(obj: dict[str, Any], context: Context | None = None) -> set[str]:
    return {v.rule for v in decide(obj, context or ctx()).violations}


def with_container(**overrides: Any) -> dict[str, Any]:
    return pod(containers=[container(**overrides)])


def with_sc(**sc: Any) -> dict[str, Any]:
    return with_container(securityContext={**container()["securityContext"], **sc})


def test_the_conforming_pod_is_clean():
    assert decide(pod(), ctx()).violations == ()


VIOLATING = {
    "no-host-namespaces": pod(hostNetwork=True),
    "no-privileged": with_sc(privileged=True),
    "no-host-path": pod(volumes=[{"name": "h", "hostPath": {"path": "/var/run"}}]),
    "no-host-ports": with_container(ports=[{"containerPort": 8080, "hostPort": 8080}]),
    "no-host-process": with_sc(windowsOptions={"hostProcess": True}),
    "apparmor-profile": with_sc(appArmorProfile={"type": "Unconfined"}),
    "selinux-options": with_sc(seLinuxOptions={"type": "spc_t"}),
    "proc-mount": with_sc(procMount="Unmasked"),
    "safe-sysctls": pod(
        securityContext={**pod()["spec"]["securityContext"], "sysctls": [{"name": "kernel.msgmax", "value": "1"}]}
    ),
    "drop-capabilities": with_sc(capabilities={"drop": ["ALL"], "add": ["NET_ADMIN"]}),
    "seccomp-profile": pod(securityContext={"runAsNonRoot": True, "runAsUser": 10001}),
    "volume-types": pod(volumes=[{"name": "n", "nfs": {"server": "nfs", "path": "/"}}]),
    "no-privilege-escalation": with_sc(allowPrivilegeEscalation=True),
    "run-as-non-root": pod(securityContext={"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}}),
    "image-pinned": with_container(image="registry.example.com/iot/app:latest"),
    "allowed-registry": with_container(image=f"docker.io/library/nginx@{DIGEST}"),
    "read-only-root-fs": with_sc(readOnlyRootFilesystem=False),
    "allowed-ports": with_container(ports=[{"containerPort": 23}]),
    "resource-limits": with_container(resources={"requests": {"cpu": "1"}}),
    "no-literal-secrets": with_container(env=[{"name": "MQTT_PASSWORD", "value": "hunter22"}]),
    "no-weak-algorithms": with_container(env=[{"name": "TOKEN_HASH_ALGORITHM", "value": "md5"}]),
    "no-default-token": pod(serviceAccountName=None, automountServiceAccountToken=None),
    "security-level": {
        **pod(),
        "metadata": {"name": "app", "namespace": "iot", "labels": {"iotsec.io/security-level": "secret"}},
    },
}


@pytest.mark.parametrize("rule", sorted(VIOLATING))
def test_each_pod_rule_fires_exactly_on_its_violation(rule):
    assert rules_of(VIOLATING[rule]) == {rule}
    violation = next(v for v in decide(VIOLATING[rule], ctx()).violations if v.rule == rule)
    assert violation.control == RULES[rule].control
    assert violation.path.startswith(("spec.", "metadata."))
    assert violation.fix


def test_every_rule_has_a_test_case():
    covered = set(VIOLATING) | set(OBJECT_CASES) | {"domain-membership", "ingress-tls-management", "data-class"}
    covered |= {"operator-confinement", "managed-object-integrity"}  # tests/unit/test_operator_fence.py
    covered |= {"network-policy-scope"}  # tests/unit/test_netpol_admission.py
    covered |= {"pod-spec-patch"}  # tests/unit/test_workload_kinds.py
    assert covered == set(RULES)


@pytest.mark.parametrize(
    ("sc", "expected"),
    [
        ({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}, set()),
        ({"capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}, {"drop-capabilities"}),
        ({"capabilities": {"drop": ["NET_RAW"]}}, {"drop-capabilities"}),
        ({"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}, set()),
        ({"seccompProfile": {"type": "Unconfined"}}, {"seccomp-profile"}),
        ({"runAsNonRoot": False}, {"run-as-non-root"}),
        ({"runAsUser": 0}, {"run-as-non-root"}),
        ({"seLinuxOptions": {"type": "container_t", "level": "s0:c1"}}, set()),
        ({"seLinuxOptions": {"user": "system_u"}}, {"selinux-options"}),
    ],
)
def test_security_context_details(sc, expected):
    assert rules_of(with_sc(**sc)) == expected


@pytest.mark.parametrize(
    ("env", "secret"),
    [
        ({"name": "API_KEY", "value": "k-12345"}, True),
        ({"name": "DB_PASSWORD_FILE", "value": "/etc/secrets/pw"}, False),
        ({"name": "TOKEN_SIGNING_KEY_FILE", "value": "/etc/keys/signing.key"}, False),
        ({"name": "CLIENT_SECRET", "value": "$(SECRET_FROM_ENV)"}, False),
        ({"name": "MQTT_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "mqtt", "key": "password"}}}, False),
        ({"name": "LOG_LEVEL", "value": "debug"}, False),
    ],
)
def test_literal_secret_detection_in_env(env, secret):
    assert ("no-literal-secrets" in rules_of(with_container(env=[env]))) is secret


@pytest.mark.parametrize(
    ("args", "secret"),
    [
        (["--api-key=wx_live_9f8e7d"], True),
        (["--password=s3cr3t!"], True),
        (["--tls-key=/etc/tls/tls.key"], False),
        (["--token-file=/var/run/token"], False),
        (["--listen=:8080"], False),
    ],
)
def test_literal_secret_detection_in_args(args, secret):
    assert ("no-literal-secrets" in rules_of(with_container(args=args))) is secret


POD_SPEC_PREFIX = {
    "Deployment": "spec.template.spec",
    "StatefulSet": "spec.template.spec",
    "DaemonSet": "spec.template.spec",
    "ReplicaSet": "spec.template.spec",
    "Job": "spec.template.spec",
    "CronJob": "spec.jobTemplate.spec.template.spec",
    "ReplicationController": "spec.template.spec",
}


def wrap(kind: str, pod_obj: dict[str, Any]) -> dict[str, Any]:
    template = {"metadata": pod_obj["metadata"], "spec": pod_obj["spec"]}
    meta = {"name": "w", "namespace": "iot"}
    if kind == "CronJob":
        return {
            "kind": kind,
            "metadata": meta,
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}},
        }
    return {"kind": kind, "metadata": meta, "spec": {"template": template}}


@pytest.mark.parametrize("kind", sorted(POD_SPEC_PREFIX))
def test_every_workload_kind_has_its_pod_template_checked(kind):
    assert decide(wrap(kind, pod()), ctx()).violations == ()
    paths = {v.path for v in decide(wrap(kind, with_sc(privileged=True)), ctx()).violations}
    assert f"{POD_SPEC_PREFIX[kind]}.containers[0].securityContext.privileged" in paths


@pytest.mark.parametrize("group", ["initContainers", "ephemeralContainers"])
def test_init_and_ephemeral_containers_are_checked(group):
    bad = container(name="debug", securityContext={"privileged": True})
    obj = pod(**{group: [bad]})
    paths = {v.path for v in decide(obj, ctx()).violations}
    assert f"spec.{group}[0].securityContext.privileged" in paths


def test_ephemeral_containers_need_no_limits():
    debug = container(name="debug", resources={})
    assert "resource-limits" not in rules_of(pod(ephemeralContainers=[debug]))


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("restricted", {"no-privileged", "run-as-non-root", "no-privilege-escalation"}),
        ("baseline", {"no-privileged"}),
        ("privileged", set()),
    ],
)
def test_pod_security_level_of_the_domain(level, expected):
    spec = CORE.model_copy(update={"pod_security": level})
    obj = pod(
        securityContext={"seccompProfile": {"type": "RuntimeDefault"}},
        containers=[
            container(
                securityContext={**container()["securityContext"], "privileged": True, "allowPrivilegeEscalation": None}
            )
        ],
    )
    assert rules_of(obj, ctx(spec)) == expected


@pytest.mark.parametrize(
    ("image", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", None, None),
        ("nginx:1.27", "docker.io", "library/nginx", "1.27", None),
        ("registry.example.com:5000/iot/app:2.1@" + DIGEST, "registry.example.com:5000", "iot/app", "2.1", DIGEST),
        ("localhost/app", "localhost", "app", None, None),
        ("ghcr.io/org/app@" + DIGEST, "ghcr.io", "org/app", None, DIGEST),
    ],
)
def test_image_references(image, registry, repository, tag, digest):
    ref = parse_image(image)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


def test_registry_prefix_is_a_path_boundary():
    assert parse_image("registry.example.com/iot/app").from_registry("registry.example.com")
    assert parse_image("registry.example.com/iot/app").from_registry("registry.example.com/iot")
    assert not parse_image("registry.example.com.evil.io/iot/app").from_registry("registry.example.com")
    assert not parse_image("registry.example.com/iotx/app").from_registry("registry.example.com/iot")


# ---------------------------------------------------------------- other kinds


def _obj(kind: str, spec: dict[str, Any] | None = None, namespace: str | None = "iot", **extra: Any) -> dict[str, Any]:
    meta = {"name": "x", **({"namespace": namespace} if namespace else {}), **extra.pop("metadata", {})}
    return {"kind": kind, "metadata": meta, **({"spec": spec} if spec is not None else {}), **extra}


INGRESS_TLS = {"tls": [{"hosts": ["api.example.com"], "secretName": "t"}], "rules": [{"host": "api.example.com"}]}
OBJECT_CASES = {
    "exposure-zone": (_obj("Service", {"type": "ClusterIP"}), _obj("Service", {"type": "NodePort"})),
    "ingress-tls": (
        _obj("Ingress", INGRESS_TLS, metadata={"annotations": {"iotsec.io/rate-limit": "100rps"}}),
        _obj(
            "Ingress", {"rules": [{"host": "api.example.com"}]}, metadata={"annotations": {"iotsec.io/rate-limit": "1"}}
        ),
    ),
    "ingress-rate-limit": (
        _obj("Ingress", INGRESS_TLS, metadata={"annotations": {"nginx.ingress.kubernetes.io/limit-rps": "50"}}),
        _obj("Ingress", INGRESS_TLS),
    ),
    "encrypted-storage": (
        _obj(
            "PersistentVolumeClaim",
            {"storageClassName": "encrypted-ssd"},
            metadata={"labels": {"iotsec.io/data-class": "confidential"}},
        ),
        _obj(
            "PersistentVolumeClaim",
            {"storageClassName": "standard"},
            metadata={"labels": {"iotsec.io/data-class": "secret"}},
        ),
    ),
    "no-keys-in-configmap": (
        _obj("ConfigMap", data={"ca.crt": "-----BEGIN CERTIFICATE-----"}),
        _obj("ConfigMap", data={"key.pem": "-----BEGIN EC PRIVATE KEY-----\nMHc..."}),
    ),
    "trusted-admin-binding": (
        _obj(
            "ClusterRoleBinding",
            namespace=None,
            roleRef={"kind": "ClusterRole", "name": "cluster-admin"},
            subjects=[{"kind": "Group", "name": "system:masters"}],
        ),
        _obj(
            "ClusterRoleBinding",
            namespace=None,
            roleRef={"kind": "ClusterRole", "name": "cluster-admin"},
            subjects=[{"kind": "Group", "name": "contractors"}],
        ),
    ),
}
INTERFACE = SecurityDomainSpec.model_validate({"zone": "interface", "namespaces": ["iot"]})


@pytest.mark.parametrize("rule", sorted(OBJECT_CASES))
def test_each_object_rule_has_a_good_and_a_bad_case(rule):
    good, bad = OBJECT_CASES[rule]
    context = ctx(INTERFACE) if rule.startswith("ingress") else ctx()
    assert rules_of(good, context) == set()
    assert rule in rules_of(bad, context)


def test_the_installations_own_operator_binding_is_admitted_and_nothing_beside_it():
    """`helm upgrade` of the chart was refused by its own bindings webhook: the operator's ClusterRoleBinding binds
    an escalating ClusterRole (it holds bind) to a ServiceAccount. That one pair is the installation; any other
    subject, namespace or role stays refused."""
    from iotsec.model.platform import Platform

    platform = Platform()
    context = ctx(
        escalating_cluster_roles=frozenset({"cluster-admin", "iotsec-operator"}), own_grants=platform.own_grants
    )

    def binding(role: str, namespace: str, account: str) -> dict[str, Any]:
        subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
        return _obj(
            "ClusterRoleBinding", namespace=None, roleRef={"kind": "ClusterRole", "name": role}, subjects=[subject]
        )

    assert rules_of(binding("iotsec-operator", "iotsec-system", "iotsec-operator"), context) == set()
    for role, namespace, account in [
        ("cluster-admin", "iotsec-system", "iotsec-operator"),  # a wider role for the operator's account
        ("iotsec-operator", "tenant-a", "iotsec-operator"),  # the operator's role for a look-alike account
        ("iotsec-operator", "iotsec-system", "default"),  # for another account of the release namespace
    ]:
        assert "trusted-admin-binding" in rules_of(binding(role, namespace, account), context), (
            role,
            namespace,
            account,
        )


def test_a_private_key_in_a_configmaps_binary_data_is_found():
    """Issue 16: binaryData is base64, so the PEM marker was never seen there."""
    import base64

    pem = b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE...\n-----END EC PRIVATE KEY-----\n"
    found = _obj("ConfigMap", binaryData={"device.key": base64.b64encode(pem).decode()})
    assert "no-keys-in-configmap" in rules_of(found, ctx())
    certificate = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMII...\n").decode()
    assert rules_of(_obj("ConfigMap", binaryData={"ca.crt": certificate, "junk": "%%%"}), ctx()) == set()


def test_exposure_is_fine_in_access_and_interface_zones():
    for zone in ("access", "interface"):
        spec = SecurityDomainSpec.model_validate({"zone": zone, "namespaces": ["iot"]})
        assert "exposure-zone" not in rules_of(_obj("Service", {"type": "LoadBalancer"}), ctx(spec))


def test_management_ingress_without_tls_names_the_https_control():
    spec = SecurityDomainSpec.model_validate({"zone": "management", "namespaces": ["iot"]})
    assert rules_of(_obj("Ingress", {"rules": [{"host": "a"}]}), ctx(spec)) == {
        "exposure-zone",
        "ingress-tls-management",
    }


def test_statefulset_claim_templates_are_checked():
    claim = {"metadata": {"name": "data", "labels": {"iotsec.io/data-class": "confidential"}}, "spec": {}}
    sts = wrap("StatefulSet", pod())
    sts["spec"]["volumeClaimTemplates"] = [claim]
    assert {v.path for v in decide(sts, ctx()).violations} == {"spec.volumeClaimTemplates[0].spec.storageClassName"}
    assert decide(sts, ctx(default_storage_class="encrypted-ssd")).violations == ()


def test_unassigned_namespace_gets_restricted_defaults_and_its_own_violation():
    context = ctx(domain=DomainPolicy.unassigned())
    assert rules_of(pod(), context) == {"domain-membership"}
    assert rules_of(with_sc(privileged=True), context) == {"domain-membership", "no-privileged"}


# ---------------------------------------------------------------- modes and exceptions


@pytest.mark.parametrize(
    ("mode", "allowed", "warnings"), [("enforce", False, 0), ("warn", True, 1), ("audit", True, 0)]
)
def test_modes(mode, allowed, warnings):
    spec = CORE.model_copy(update={"enforcement": mode})
    decision = decide(with_sc(privileged=True), ctx(spec))
    assert decision.allowed is allowed
    assert len(decision.warnings) == warnings
    assert [v.rule for v in decision.violations] == ["no-privileged"]
    line = decision.message.splitlines()[1]
    assert line.startswith("[X1369-9.4.3-1 no-privileged] set privileged: false — container app: ")
    assert line.endswith("(spec.containers[*].securityContext.privileged)")
    assert decision.warnings == ((line,) if mode == "warn" else ())


def _exception(**overrides: Any) -> dict[str, Any]:
    base = {
        "rule": "read-only-root-fs",
        "target": {"namespace": "iot", "kind": "Deployment", "name": "legacy"},
        "justification": "vendor binary writes to /opt; fix due in 4.2",
        "approver": "ciso@example.com",
        "expires": (NOW + timedelta(days=30)).isoformat(),
        "ticket": "RISK-1",
    }
    return {**base, **overrides}


def _with_exceptions(*exceptions: dict[str, Any]) -> Context:
    spec = CORE.model_copy(
        update={
            "exceptions": [
                SecurityDomainSpec.model_validate(
                    {"zone": "core", "namespaces": ["iot"], "exceptions": [e]}
                ).exceptions[0]
                for e in exceptions
            ]
        }
    )
    return ctx(spec)


def _legacy(kind: str = "Deployment", name: str = "legacy") -> dict[str, Any]:
    obj = wrap(kind, with_sc(readOnlyRootFilesystem=False)) if kind != "Pod" else with_sc(readOnlyRootFilesystem=False)
    obj["metadata"] = {**obj["metadata"], "name": name, "namespace": "iot"}
    return obj


def test_a_valid_exception_waives_its_rule_and_is_recorded():
    decision = decide(_legacy(), _with_exceptions(_exception()))
    assert decision.violations == ()
    assert [u.rule for u in decision.exceptions_used] == ["read-only-root-fs"]
    assert "approved by ciso@example.com, ticket RISK-1" in decision.exceptions_used[0].line()


@pytest.mark.parametrize(
    "change",
    [
        {"expires": (NOW - timedelta(seconds=1)).isoformat()},
        {"rule": "no-privileged"},
        {"target": {"namespace": "other", "kind": "Deployment", "name": "legacy"}},
        {"target": {"namespace": "iot", "kind": "StatefulSet", "name": "legacy"}},
        {"target": {"namespace": "iot", "kind": "Deployment", "name": "legacy-v2"}},
    ],
)
def test_an_exception_applies_only_to_its_rule_target_and_time(change):
    decision = decide(_legacy(), _with_exceptions(_exception(**change)))
    assert [v.rule for v in decision.violations] == ["read-only-root-fs"]
    assert decision.exceptions_used == ()


def test_a_wildcard_exception_covers_every_rule_of_its_target():
    obj = _legacy()
    obj["spec"]["template"]["spec"]["hostNetwork"] = True
    assert decide(obj, _with_exceptions(_exception(rule="*"))).violations == ()


def test_pods_of_an_excepted_deployment_are_excepted_too():
    pod_obj = _legacy("Pod", "legacy-7d9f8b-x2x4z")
    pod_obj["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "legacy-7d9f8b", "controller": True}
    ]
    assert decide(pod_obj, _with_exceptions(_exception())).violations == ()
    del pod_obj["metadata"]["ownerReferences"]  # a bare pod does not borrow a deployment's waiver by its name
    assert decide(pod_obj, _with_exceptions(_exception())).violations != ()


# ---------------------------------------------------------------- the examples


def test_check_reports_exactly_what_each_example_was_written_to_have():
    report = check(load_documents([EXAMPLES]), NOW)
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for checked in report.checked:
        found[checked.document.source] |= {(v.rule, v.control) for v in checked.decision.violations}
    files = sorted((EXAMPLES / "workloads").rglob("*.yaml"))
    assert len(files) >= 30
    for path in files:
        expected = {tuple(line.split()[2:4]) for line in path.read_text().splitlines() if line.startswith("# expect:")}
        assert found.get(str(path), set()) == expected, path.name
    assert report.invalid == []


def test_check_cli_exit_codes_and_json(capsys, tmp_path):
    from iotsec.cli.main import main

    assert main(["check", str(EXAMPLES / "platform"), str(EXAMPLES / "workloads" / "conforming")]) == 0
    assert main(["check", "-o", "json", str(EXAMPLES / "workloads" / "nonconforming" / "telnet-port.yaml")]) == 1
    out = capsys.readouterr().out
    report = json.loads(out[out.index("[") :])
    assert report[0]["domain"] is None, "without domain files the namespace is in no domain"
    assert [v["rule"] for v in report[0]["violations"]] == ["domain-membership"]
    assert report[0]["allowed"] is False
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: iotsec.io/v1alpha1\nkind: SecurityDomain\nmetadata: {name: x}\nspec: {zone: dmz}\n"
    )
    assert main(["check", str(tmp_path)]) == 2


# ---------------------------------------------------------------- robustness

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
POD_KEYS = [
    "containers",
    "initContainers",
    "securityContext",
    "volumes",
    "hostNetwork",
    "serviceAccountName",
    "automountServiceAccountToken",
]
CONTAINER_KEYS = ["image", "securityContext", "ports", "env", "args", "resources", "name"]


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(POD_KEYS), value=json_values, c_key=st.sampled_from(CONTAINER_KEYS), c_value=json_values)
def test_mutated_pods_get_a_decision_or_a_malformed_error_never_a_crash(key, value, c_key, c_value):
    for obj in (pod(**{key: value}), with_container(**{c_key: c_value})):
        for kind in ("Pod", "Deployment", "CronJob"):
            candidate = obj if kind == "Pod" else wrap(kind, copy.deepcopy(obj))
            with contextlib.suppress(MalformedObjectError):
                decide(candidate, ctx())


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["kind", "metadata", "spec", "roleRef", "subjects", "data"]), json_values))
def test_random_objects_never_crash(obj):
    with contextlib.suppress(MalformedObjectError):
        decide(obj, ctx())


def test_examples_folder_has_readme_for_workloads():
    assert (Path(EXAMPLES) / "workloads" / "README.md").is_file()


def test_a_tenants_data_classes_decide_what_its_claims_may_carry():
    from iotsec.admission.context import TenantStorage

    acme = TenantStorage("acme", ("internal", "confidential"), "confidential")
    context = ctx(tenant=acme)
    claim = _obj(
        "PersistentVolumeClaim",
        {"storageClassName": "encrypted-ssd"},
        metadata={"labels": {"iotsec.io/data-class": "public"}},
    )
    assert rules_of(claim, context) == {"data-class"}
    unlabelled = _obj("PersistentVolumeClaim", {"storageClassName": "standard"})
    assert rules_of(unlabelled, context) == {"encrypted-storage"}, "unlabelled counts as the tenant's default"
    assert rules_of(_obj("PersistentVolumeClaim", {"storageClassName": "encrypted-ssd"}), context) == set()
    assert rules_of(unlabelled, ctx()) == set(), "outside a tenant an unlabelled claim is unclassified"


def test_check_maps_tenant_namespaces_to_their_data_classes():
    report = check(load_documents([EXAMPLES / "platform"]), NOW)
    assert report.invalid == []
    from iotsec.admission.snapshot import snapshot_from_objects

    snapshot = snapshot_from_objects(
        [d.obj for d in load_documents([EXAMPLES / "platform"])], assume_named_namespaces_exist=True
    )
    tenant = snapshot.context("acme-meters", NOW).tenant
    assert tenant is not None
    assert tenant.data_classes == ("internal", "confidential", "secret")
    assert tenant.default_data_class == "confidential"
