"""Issue 16, pod-spec rules: Windows pods, image references as the runtime normalises them, per-domain image
pinning, and fixes that clear a real workload in one round."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from iotsec.admission import images
from iotsec.admission.context import DomainPolicy
from iotsec.admission.engine import decide
from iotsec.api.securitydomain import SecurityDomainSpec
from tests.unit.test_policy import DIGEST, container, ctx, pod, rules_of

# ---------------------------------------------------------------- Windows


def windows_pod(**spec: Any) -> dict[str, Any]:
    """A Windows pod as the API server accepts one: none of the Linux-only security fields are set."""
    app = container(image=f"registry.example.com/iot/win-agent@{DIGEST}", securityContext={})
    base = pod(os={"name": "windows"}, securityContext={"runAsNonRoot": True}, containers=[app])
    base["spec"].update(spec)
    return base


def test_pod_level_host_process_is_refused_at_the_pod_path():
    obj = windows_pod(securityContext={"runAsNonRoot": True, "windowsOptions": {"hostProcess": True}})
    paths = {v.path for v in decide(obj, ctx()).violations if v.rule == "no-host-process"}
    assert paths == {"spec.securityContext.windowsOptions.hostProcess"}


def test_pod_level_host_process_is_refused_in_a_deployment_too():
    template = windows_pod(securityContext={"runAsNonRoot": True, "windowsOptions": {"hostProcess": True}})
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "agent", "namespace": "iot"},
        "spec": {"template": {"metadata": template["metadata"], "spec": template["spec"]}},
    }
    paths = {v.path for v in decide(deployment, ctx()).violations if v.rule == "no-host-process"}
    assert paths == {"spec.template.spec.securityContext.windowsOptions.hostProcess"}


def test_a_windows_pod_is_not_held_to_the_linux_only_controls():
    # PSS v1.25+: Privilege Escalation, Seccomp and Capabilities are Linux only; readOnlyRootFilesystem cannot be
    # set on Windows at all
    assert decide(windows_pod(), ctx()).violations == ()


def test_the_same_pod_without_os_windows_is_judged_as_linux():
    for os_field in (None, {"name": "linux"}):
        obj = windows_pod()
        obj["spec"].pop("os")
        if os_field:
            obj["spec"]["os"] = os_field
        assert rules_of(obj) >= {
            "no-privilege-escalation",
            "drop-capabilities",
            "seccomp-profile",
            "read-only-root-fs",
        }


def test_a_windows_pod_keeps_the_controls_that_apply_to_windows():
    obj = windows_pod(securityContext={}, hostNetwork=True)
    obj["spec"]["containers"][0].pop("resources")
    assert rules_of(obj) == {"run-as-non-root", "no-host-namespaces", "resource-limits"}


# ---------------------------------------------------------------- image references


def registries(*allowed: str, pinning: str = "any") -> Any:
    spec = SecurityDomainSpec.model_validate(
        {"zone": "core", "namespaces": ["iot"], "allowedRegistries": list(allowed), "imagePinning": pinning}
    )
    return ctx(spec)


def image_rules(image: Any, context: Any) -> set[str]:
    return rules_of(pod(containers=[container(image=image)]), context)


@pytest.mark.parametrize(
    "image",
    [
        "index.docker.io/eclipse/mosquitto:2.0.18",
        "eclipse/mosquitto:2.0.18",
        "docker.io/eclipse/mosquitto:2.0.18",
        "registry-1.docker.io/eclipse/mosquitto:2.0.18",
        "Docker.IO/eclipse/mosquitto:2.0.18",
        f"eclipse/mosquitto:2.0.18@{DIGEST}",
    ],
)
def test_docker_hub_spellings_are_one_registry(image):
    for allowed in ("docker.io/eclipse", "index.docker.io/eclipse", "DOCKER.IO/eclipse", "eclipse", "docker.io"):
        assert "allowed-registry" not in image_rules(image, registries(allowed)), (image, allowed)


@pytest.mark.parametrize(
    "image",
    ["ghcr.io/eclipse/mosquitto:2.0.18", "docker.io/eclipsefoo/mosquitto:2.0.18", "mosquitto:2.0.18"],
)
def test_other_places_are_not_the_eclipse_namespace(image):
    assert "allowed-registry" in image_rules(image, registries("docker.io/eclipse"))


def test_official_images_live_under_library():
    official = registries("docker.io/library")
    for image in ("nginx:1.25.3", "library/nginx:1.25.3", "index.docker.io/library/nginx:1.25.3"):
        assert "allowed-registry" not in image_rules(image, official), image
    assert "allowed-registry" in image_rules("eclipse/mosquitto:2.0.18", official)


def test_registry_hosts_compare_case_insensitively_with_ports():
    allowed = registries("Registry.Example.com:5000/iot")
    assert "allowed-registry" not in image_rules("registry.example.com:5000/iot/app:1.2.3", allowed)
    assert "allowed-registry" in image_rules("registry.example.com/iot/app:1.2.3", allowed)
    assert "allowed-registry" in image_rules("registry.example.com:5001/iot/app:1.2.3", allowed)


@pytest.mark.parametrize(
    ("image", "registry", "repository", "tag", "digest"),
    [
        (f"nginx:1.25.3@{DIGEST}", "docker.io", "library/nginx", "1.25.3", DIGEST),
        ("localhost:5000/app:1.0.0", "localhost:5000", "app", "1.0.0", None),
        ("[::1]:5000/iot/app:1.0.0", "[::1]:5000", "iot/app", "1.0.0", None),
        ("Registry.Example.COM/iot/app", "registry.example.com", "iot/app", None, None),
        ("index.docker.io/nginx", "docker.io", "library/nginx", None, None),
        ("Eclipse/mosquitto:2.0.18", "eclipse", "mosquitto", "2.0.18", None),  # upper case: a host, as runc reads it
        ("minio/minio:RELEASE.2024-01-16T16-07-38Z", "docker.io", "minio/minio", "RELEASE.2024-01-16T16-07-38Z", None),
    ],
)
def test_references_normalise_as_the_runtime_does(image, registry, repository, tag, digest):
    ref = images.parse_image(image)
    assert ref.problem is None
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


@pytest.mark.parametrize(
    ("image", "why"),
    [
        ("eclipse/Mosquitto:2.0.18", "lowercase"),
        ("nginx:", "tag"),
        ("nginx:1.25.3@sha256:abc", "digest"),
        ("nginx@md5:" + "a" * 32, "digest"),
        ("nginx:bad tag", "tag"),
        ("registry.example.com/iot//app:1.0.0", "repository path"),
        ("a" * 64, "image ID"),
        ("", "no image"),
        (" nginx:1.25.3", "spaces"),
        ("registry.example.com/" + "x" * 300 + ":1.0.0", "longer"),
        ("x" * 10_000_000, "characters long"),
    ],
)
def test_unpullable_references_are_a_clear_finding(image, why):
    ref = images.parse_image(image)
    assert ref.problem is not None
    assert why in ref.problem
    decision = decide(pod(containers=[container(image=image)]), registries("registry.example.com"))
    lines = [v.line() for v in decision.violations if v.rule == "image-pinned"]
    assert len(lines) == 1
    assert "not a valid reference" in lines[0]
    assert why in lines[0]
    assert all(len(v.line()) < 400 for v in decision.violations)
    assert "allowed-registry" in {v.rule for v in decision.violations}


def test_a_non_string_image_is_a_finding_not_a_crash():
    assert "image-pinned" in image_rules(12345, registries("registry.example.com"))


# ---------------------------------------------------------------- image pinning


def pinning(mode: str | None, zone: str = "core") -> Any:
    spec: dict[str, Any] = {"zone": zone, "namespaces": ["iot"]}
    if mode:
        spec["imagePinning"] = mode
    return ctx(SecurityDomainSpec.model_validate(spec))


FLOATING = ["postgres:12", "valkey/valkey:8.0", "busybox:1.35", "nginx:stable", "node:lts", "alpine", "nginx:alpine"]
FLOATING += ["postgres:16-alpine", "redis:7.2-bookworm", "traefik:v3", "nginx:latest", "nginx", "eclipse/x:8.0-rc"]
VERSIONED = [
    "nginx:1.25.3",
    "eclipse-mosquitto:2.0.18",
    "traefik:v3.0.4",
    "nginx:1.25.3-alpine",
    "bitnami/postgresql:16.1.0-debian-12-r3",
    "eclipse-temurin:17.0.9_9-jdk-jammy",
    "grafana/grafana:10.2.3-ubuntu",
    "homeassistant/home-assistant:2024.1.5",
    "example/app:2024.01.15",
    "minio/minio:RELEASE.2024-01-16T16-07-38Z",
    "ubuntu:jammy-20240111",
    "ghcr.io/cloudnative-pg/postgresql:16.1-202401151200-standard-bookworm",
    "ghcr.io/example/app:sha-3f9c2a1",
    "registry.example.com/iot/app:1.2.3.4",
]


@pytest.mark.parametrize("image", FLOATING)
def test_floating_tags_fail_version_pinning(image):
    assert "image-pinned" in image_rules(image, pinning("version"))


@pytest.mark.parametrize("image", VERSIONED)
def test_full_versions_dated_builds_and_commits_pass_version_pinning(image):
    assert "image-pinned" not in image_rules(image, pinning("version"))


def test_the_message_names_the_mode_the_domain_and_why_the_tag_fails():
    (violation,) = list(decide(pod(containers=[container(image="postgres:12")]), pinning(None)).violations)
    assert violation.rule == "image-pinned"
    assert "(imagePinning: version in domain core)" in violation.message
    assert "'12'" in violation.message
    assert "not a full major.minor.patch version" in violation.message
    assert "postgres:12.<minor>.<patch>" in violation.fix
    assert "postgres:12@sha256:<digest>" in violation.fix
    channel = decide(pod(containers=[container(image="valkey/valkey:stable")]), pinning(None)).violations[0]
    assert "moving channel" in channel.message
    line = decide(pod(containers=[container(image="valkey/valkey:8.0")]), pinning(None)).violations[0]
    assert "valkey/valkey:8.0.<patch>" in line.fix


def test_digest_pinning_is_the_management_default_and_refuses_version_tags():
    management = pinning(None, zone="management")
    assert management.domain.image_pinning == "digest"
    (violation,) = decide(
        pod(containers=[container(image="registry.example.com/iot/app:1.2.3")]), management
    ).violations
    assert "imagePinning: digest" in violation.message
    assert violation.fix == "pin it by digest: registry.example.com/iot/app:1.2.3@sha256:<digest>"
    for image in (f"registry.example.com/iot/app@{DIGEST}", f"registry.example.com/iot/app:1.2.3@{DIGEST}"):
        assert "image-pinned" not in image_rules(image, management)


def test_any_pinning_refuses_only_latest_and_no_tag():
    anything = pinning("any")
    for image in ("postgres:12", "nginx:stable", "valkey/valkey:8.0"):
        assert "image-pinned" not in image_rules(image, anything), image
    for image in ("nginx", "nginx:latest"):
        assert "image-pinned" in image_rules(image, anything), image


def test_version_tag_and_pinning_problem_directly():
    assert not any(images.version_tag(t) for t in ("12", "8.0", "1.35", "stable", "lts", "alpine", "v1.2", "16-alpine"))
    assert all(images.version_tag(t) for t in ("1.2.3", "v1.2.3", "1.2.3-rc.1", "release-1.2.3", "20240115"))
    assert images.pinning_problem(images.parse_image(f"nginx@{DIGEST}"), "digest") is None


def test_the_unassigned_default_is_version():
    unassigned = ctx(domain=DomainPolicy.unassigned())
    messages = [v.message for v in decide(pod(containers=[container(image="postgres:12")]), unassigned).violations]
    assert any("(imagePinning: version outside any SecurityDomain)" in m for m in messages)


# ---------------------------------------------------------------- one round of fixes


def test_both_missing_limits_are_named_in_the_fix():
    obj = pod(containers=[container(resources={})])
    (violation,) = decide(obj, ctx()).violations
    assert violation.fix == "set resources.limits.cpu and resources.limits.memory"


def postgres_statefulset() -> dict[str, Any]:
    """A PostgreSQL StatefulSet shaped like the common charts render it (a bitnami-style volume-permissions init
    container running as root, the official image, a headless service name, a claim template): written here."""
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "telemetry-db", "namespace": "iot", "labels": {"app.kubernetes.io/name": "postgresql"}},
        "spec": {
            "serviceName": "telemetry-db-hl",
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "postgresql"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "postgresql"}},
                "spec": {
                    "securityContext": {"fsGroup": 999},
                    "initContainers": [
                        {
                            "name": "init-chmod-data",
                            "image": "bitnami/os-shell:12",
                            "command": ["/bin/sh", "-ec", "chown -R 999:999 /var/lib/postgresql/data"],
                            "securityContext": {"runAsUser": 0},
                            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
                        }
                    ],
                    "containers": [
                        {
                            "name": "postgresql",
                            "image": "postgres:16.1",
                            "ports": [{"name": "tcp-postgresql", "containerPort": 5432}],
                            "env": [
                                {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
                                {"name": "POSTGRES_USER", "value": "telemetry"},
                                {
                                    "name": "POSTGRES_PASSWORD",
                                    "valueFrom": {"secretKeyRef": {"name": "telemetry-db", "key": "password"}},
                                },
                            ],
                            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
                            "livenessProbe": {"exec": {"command": ["pg_isready", "-U", "telemetry"]}},
                            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
                        }
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "8Gi"}}},
                }
            ],
        },
    }


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _walk(obj: Any, path: str) -> tuple[Any, str]:
    """The node that holds the last step of `path`, and that step; missing objects are created."""
    steps = [int(index) if index else name for name, index in _STEP.findall(path)]
    node = obj
    for step in steps[:-1]:
        node = node[step] if isinstance(step, int) else node.setdefault(step, {})
    return node, steps[-1]


def apply_fix(obj: dict[str, Any], rule: str, path: str, fix: str) -> None:
    """Does what the fix says, mechanically, reading the values from the fix text."""
    node, last = _walk(obj, path)
    if rule == "resource-limits":
        for resource in re.findall(r"resources\.limits\.(\w+)", fix):
            node.setdefault(last, {})[resource] = {"cpu": "1", "memory": "1Gi"}[resource]
    elif rule == "image-pinned":
        (pinned,) = re.findall(r"(\S+)@sha256:<digest>", fix)
        node[last] = f"{pinned.lstrip('(')}@{DIGEST}"
    elif rule == "no-default-token":
        node["automountServiceAccountToken"] = False
    elif rule == "run-as-non-root" and last == "runAsUser":
        node[last] = int(re.search(r"e\.g\. (\d+)", fix).group(1))
    else:
        match = re.match(r"set ([\w.]+): (\[?\w+\]?)", fix)
        assert match, f"no mechanical reading of {fix!r}"
        field, value = match.groups()
        parsed: Any = {"true": True, "false": False}.get(value, value)
        if value.startswith("["):
            parsed = [value.strip("[]")]
        # the fix's field is relative to the securityContext the path lies in
        context, _ = _walk(obj, path[: path.rindex("securityContext") + len("securityContext")] + ".x")
        *parents, leaf = field.split(".")
        for parent in parents:
            context = context.setdefault(parent, {})
        context[leaf] = parsed


def test_one_round_of_fixes_clears_a_real_postgresql_statefulset():
    domain = SecurityDomainSpec.model_validate(
        {
            "zone": "core",
            "namespaces": ["iot"],
            "allowedPorts": [{"port": 5432}],
            "allowedRegistries": ["docker.io/library", "docker.io/bitnami"],
        }
    )
    context = ctx(domain)
    manifest = postgres_statefulset()
    first = decide(manifest, context).violations
    assert {v.rule for v in first} >= {"resource-limits", "image-pinned", "run-as-non-root", "read-only-root-fs"}
    fixed = copy.deepcopy(manifest)
    for violation in first:
        apply_fix(fixed, violation.rule, violation.path, violation.fix)
    assert [v.line() for v in decide(fixed, context).violations] == []
