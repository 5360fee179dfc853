"""Issue 16, messages: grouped as Pod Security Admission does (one line per rule and fix, the containers listed),
the fix first, every line and the whole answer within what the API server passes on, cuts counted."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.admission.context import Context, DomainPolicy
from iotsec.admission.engine import decide
from iotsec.admission.model import (
    MAX_LINE,
    MESSAGE_BUDGET,
    WARNINGS_BUDGET,
    Decision,
    Violation,
    grouped_lines,
    summarise_membership,
    warning_lines,
)
from iotsec.admission.rules import RULES
from iotsec.api.securitydomain import SecurityDomainSpec

NOW = datetime(2026, 12, 3, tzinfo=UTC)
DIGEST = "sha256:" + "b" * 64
API_SERVER_WARNINGS = 4096  # k8s.io/apiserver filters/warning.go: truncateAtTotalRunes
API_SERVER_WARNING = 256  # truncateItemRunes


def context(mode: str = "enforce") -> Context:
    spec = SecurityDomainSpec.model_validate({"zone": "core", "namespaces": ["iot"], "enforcement": mode})
    return Context(domain=DomainPolicy.of("core", spec), now=NOW)


def bare_deployment(count: int = 10, name: str = "c{}") -> dict[str, Any]:
    containers = [{"name": name.format(i), "image": f"registry.example.com/iot/app@{DIGEST}"} for i in range(count)]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bare", "namespace": "iot"},
        "spec": {
            "selector": {"matchLabels": {"app": "bare"}},
            "template": {"metadata": {"labels": {"app": "bare"}}, "spec": {"containers": containers}},
        },
    }


def head_of(line: str) -> str:
    return line.split(" — ", 1)[0]


def assert_every_rule_and_fix_is_said(decision: Decision, lines: list[str]) -> None:
    for violation in decision.violations:
        expected = f"[{violation.control} {violation.rule}] {violation.fix}"
        assert any(head_of(line) == expected for line in lines), f"{expected} missing from {lines}"


# ---------------------------------------------------------------- ten containers without a securityContext


def test_ten_bare_containers_are_denied_in_one_line_per_rule_that_names_every_container():
    decision = decide(bare_deployment(), context("enforce"))
    assert not decision.allowed
    message = decision.message
    lines = message.splitlines()
    assert lines[0] == f"iotsec: {len(decision.violations)} X.1369 violations"
    assert len(decision.violations) >= 50, "the violations themselves stay one by one (JSON, audit, metrics)"
    assert len(message) < API_SERVER_WARNINGS
    assert all(len(line) < API_SERVER_WARNING for line in lines), [len(line) for line in lines]
    assert_every_rule_and_fix_is_said(decision, lines[1:])
    assert len(lines) - 1 == len({(v.rule, v.fix) for v in decision.violations}), "one line per rule and fix"
    escalation = next(line for line in lines if "no-privilege-escalation" in line)
    assert escalation.startswith("[X1369-9.4.3-1 no-privilege-escalation] set allowPrivilegeEscalation: false — ")
    assert "containers c0, c1, c2, c3, c4, c5, c6, c7, c8, c9" in escalation
    assert escalation.endswith("(spec.template.spec.containers[*].securityContext.allowPrivilegeEscalation)")
    assert " more" not in message, "ten containers need no cut"


def test_ten_bare_containers_in_warn_mode_get_warnings_the_api_server_passes_on_whole():
    decision = decide(bare_deployment(), context("warn"))
    assert decision.allowed
    warnings = decision.warnings
    assert all(len(w) < API_SERVER_WARNING for w in warnings), [len(w) for w in warnings]
    assert sum(len(w) for w in warnings) <= WARNINGS_BUDGET < API_SERVER_WARNINGS
    assert_every_rule_and_fix_is_said(decision, list(warnings))
    assert list(warnings) == decision.message.splitlines()[1:], "the warnings are the message's lines"
    assert all("c9" in w for w in warnings if "containers c0" in w), "every container named, the last one too"


def test_long_container_names_shorten_the_list_not_the_fix():
    decision = decide(bare_deployment(10, name="telemetry-ingest-sidecar-for-the-mqtt-broker-{}"), context("warn"))
    assert all(len(w) <= MAX_LINE for w in decision.warnings)
    assert_every_rule_and_fix_is_said(decision, list(decision.warnings))
    listing = [w for w in decision.warnings if "containers telemetry-ingest" in w]
    assert len(listing) == len({(v.rule, v.fix) for v in decision.violations if "containers[" in v.path})
    for warning in listing:
        shown = warning.count("telemetry-ingest-sidecar-for-the-mqtt-broker-")
        more = re.search(r" and (\d+) more", warning)
        assert shown + (int(more[1]) if more else 0) == 10, warning


def test_a_fix_per_image_is_said_in_one_line_and_leaves_room_for_every_other_rule():
    deployment = bare_deployment()
    for i, container in enumerate(deployment["spec"]["template"]["spec"]["containers"]):
        container["image"] = f"registry.example.com/iot/service-{i}:latest"
    decision = decide(deployment, context("warn"))
    pinned = [v for v in decision.violations if v.rule == "image-pinned"]
    assert len({v.fix for v in pinned}) == 10, "each fix names its own image"
    lines = [w for w in decision.warnings if "image-pinned" in w]
    assert lines == [
        f"[X1369-9.3.2-1 image-pinned] {RULES['image-pinned'].title} — containers c0, c1, c2, c3, c4, c5, c6, c7, c8, "
        "c9 (spec.template.spec.containers[*].image)"
    ]
    others = [v for v in decision.violations if v.rule != "image-pinned"]
    assert_every_rule_and_fix_is_said(Decision(True, "warn", tuple(others)), list(decision.warnings))
    assert not any(" more" in w for w in decision.warnings)


# ---------------------------------------------------------------- more than fits


def host_port_pods(count: int) -> dict[str, Any]:
    """`count` containers with a hostPort each: `count` distinct violations of one rule, and more rules besides."""
    containers = [
        {
            "name": f"gateway-{i}",
            "image": "registry.example.com/iot/gw:latest",
            "ports": [{"containerPort": 10000 + i, "hostPort": 10000 + i}],
        }
        for i in range(count)
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gw", "namespace": "iot"},
        "spec": {"containers": containers},
    }


def test_more_than_120_distinct_violations_are_listed_as_many_as_fit_and_counted():
    decision = decide(host_port_pods(130), context("warn"))
    assert len([v for v in decision.violations if v.rule == "no-host-ports"]) == 130
    line = next(w for w in decision.warnings if "no-host-ports" in w)
    assert line.startswith("[X1369-9.3.1-4 no-host-ports] remove hostPort; use a Service — ")
    assert len(line) <= MAX_LINE
    shown = set(re.findall(r"gateway-\d+", line))
    more = re.search(r" and (\d+) more", line)
    assert more, line
    assert len(shown) >= 3, line
    assert len(shown) + int(more[1]) == 130, line
    assert len(decision.message) <= MESSAGE_BUDGET
    assert all(len(w) <= MAX_LINE for w in decision.warnings)


def many_rules_pod() -> dict[str, Any]:
    """A pod that breaks nearly every rule, in many containers with long names: far more than fits."""
    names = [f"device-registry-protocol-adapter-number-{i:02d}-with-a-long-name" for i in range(14)]
    containers = [
        {
            "name": name,
            "image": f"docker.io/someone/image-{i}:latest",
            "ports": [{"containerPort": 20000 + i, "hostPort": 20000 + i}],
            "env": [{"name": "MQTT_PASSWORD", "value": f"s3cr3t-{i}-passw0rd"}],
            "securityContext": {
                "privileged": True,
                "procMount": "Unmasked",
                "capabilities": {"add": ["SYS_ADMIN", "CHOWN"]},
                "seLinuxOptions": {"type": "spc_t", "user": "system_u", "role": "system_r", "level": "s0"},
                "seccompProfile": {"type": "Unconfined"},
                "runAsUser": 0,
            },
        }
        for i, name in enumerate(names)
    ]
    spec = {
        "hostNetwork": True,
        "hostPID": True,
        "hostIPC": True,
        "securityContext": {"runAsUser": 0, "sysctls": [{"name": "kernel.msgmax", "value": "1"}]},
        "volumes": [{"name": f"host-{i}", "hostPath": {"path": f"/var/{i}"}} for i in range(5)],
        "containers": containers,
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "everything", "namespace": "iot"}, "spec": spec}


@pytest.mark.parametrize("mode", ["enforce", "warn"])
def test_what_does_not_fit_is_cut_at_a_line_and_counted(mode):
    decision = decide(many_rules_pod(), context(mode))
    total = len(decision.violations)
    assert total > 120
    lines = decision.message.splitlines()[1:] if mode == "enforce" else list(decision.warnings)
    budget = MESSAGE_BUDGET if mode == "enforce" else WARNINGS_BUDGET
    assert len(decision.message) <= MESSAGE_BUDGET
    assert sum(len(line) for line in lines) <= budget
    assert all(len(line) <= MAX_LINE for line in lines)
    cut = lines[-1]
    match = re.fullmatch(r"… and (\d+) more violations \(([^)]*)\): run iotsec check for all", cut)
    assert match, cut
    groups = grouped_lines(decision.violations, decision.names)
    assert [g.text for g in groups[: len(lines) - 1]] == lines[:-1], "whole lines, most severe first"
    assert sum(g.violations for g in groups[: len(lines) - 1]) + int(match[1]) == total
    named = re.fullmatch(r"(.*?)(?: and (\d+) more)?", match[2])
    left = list(dict.fromkeys(g.rule for g in groups[len(lines) - 1 :]))
    assert named[1].split(", ") == left[: len(named[1].split(", "))]  # type: ignore[index]
    assert len(named[1].split(", ")) + int(named[2] or 0) == len(left)  # type: ignore[index]
    assert [RULES[g.rule].severity for g in groups] == sorted(
        (RULES[g.rule].severity for g in groups), key=["critical", "high", "medium", "low"].index
    ), "the most severe first, so a cut drops the least"


# ---------------------------------------------------------------- whatever the violations, the lines fit

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=120)
_VIOLATIONS = st.lists(
    st.builds(
        lambda rule, where, index, message, fix: Violation(
            RULES[rule].control, rule, RULES[rule].severity, f"spec.{where}[{index}].x", message, fix or "do it"
        ),
        st.sampled_from(sorted(RULES)),
        st.sampled_from(["containers", "initContainers", "volumes"]),
        st.integers(0, 40),
        _TEXT,
        _TEXT,
    ),
    max_size=200,
    unique=True,
)


@settings(max_examples=150, deadline=None)
@given(_VIOLATIONS, st.dictionaries(st.just("spec.containers[0]"), _TEXT.filter(bool)))
def test_any_violations_give_lines_the_api_server_keeps(violations, names):
    warnings = warning_lines(violations, names)
    assert sum(len(w) for w in warnings) <= WARNINGS_BUDGET
    for warning in warnings:
        assert len(warning) <= MAX_LINE
        assert not any(ord(c) < 32 or ord(c) == 127 for c in warning), "a control character drops the warning"
        warning.encode("utf-8")
    if not violations:
        return
    message = Decision(False, "enforce", tuple(violations), names=names).message
    assert len(message) <= MESSAGE_BUDGET
    said = {head_of(w)[1:].split("]")[0].split(" ")[-1] for w in warnings if w.startswith("[")}
    cut = warnings[-1] if warnings[-1].startswith("… and ") else ""
    assert {v.rule for v in violations} <= said | set(re.findall(r"[a-z][a-z-]+", cut.split("(", 1)[-1]))


# ---------------------------------------------------------------- one round of fixes reaches a clean result

# Modelled on how prometheus-operator renders a Prometheus server for an IoT platform's monitoring (a StatefulSet
# with an init config reloader, the server, the config reloader and a Thanos sidecar), the securityContext only
# partly set, as charts often leave it.
MONITORING = """
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: prometheus-iot
  namespace: iot
  labels: {app.kubernetes.io/name: prometheus, app.kubernetes.io/part-of: iot-platform}
spec:
  serviceName: prometheus-operated
  replicas: 2
  selector:
    matchLabels: {app.kubernetes.io/name: prometheus}
  template:
    metadata:
      labels: {app.kubernetes.io/name: prometheus}
    spec:
      serviceAccountName: prometheus-iot
      automountServiceAccountToken: false
      securityContext: {fsGroup: 2000, runAsUser: 1000}
      initContainers:
        - name: init-config-reloader
          image: quay.io/prometheus-operator/prometheus-config-reloader@{digest}
          args: [--watch-interval=0, --config-file=/etc/prometheus/config/prometheus.yaml.gz]
          resources: {limits: {cpu: 100m, memory: 50Mi}}
          securityContext: {readOnlyRootFilesystem: true}
          volumeMounts: [{name: config, mountPath: /etc/prometheus/config}]
      containers:
        - name: prometheus
          image: quay.io/prometheus/prometheus@{digest}
          args: [--config.file=/etc/prometheus/config_out/prometheus.env.yaml, --storage.tsdb.retention.time=15d]
          ports: [{name: web, containerPort: 9090}]
          resources: {limits: {cpu: "2", memory: 4Gi}}
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
          volumeMounts: [{name: data, mountPath: /prometheus}]
        - name: config-reloader
          image: quay.io/prometheus-operator/prometheus-config-reloader@{digest}
          ports: [{name: reloader-web, containerPort: 8080}]
          resources: {limits: {cpu: 100m, memory: 50Mi}}
          volumeMounts: [{name: config, mountPath: /etc/prometheus/config}]
        - name: thanos-sidecar
          image: quay.io/thanos/thanos@{digest}
          args: [sidecar, --prometheus.url=http://localhost:9090/, --grpc-address=:10901]
          ports: [{name: grpc, containerPort: 10901}, {name: http, containerPort: 10902}]
          resources: {limits: {cpu: 500m, memory: 512Mi}}
          securityContext: {readOnlyRootFilesystem: true, runAsNonRoot: true}
      volumes:
        - {name: config, secret: {secretName: prometheus-iot}}
        - {name: data, emptyDir: {}}
""".replace("{digest}", DIGEST)

SETTING = re.compile(r"^\[(?P<control>\S+) (?P<rule>[\w-]+)\] set (?P<field>[\w.]+): (?P<value>\S+)")
KIND_WORDS = re.compile(r"^(?:init |ephemeral )?containers? ")


def apply_fixes(obj: dict[str, Any], message: str) -> dict[str, Any]:
    """Do what each line says, as a person following it would: `set <field>: <value>` in every container the line
    lists (found by name in the pod), at the path the line gives; nothing else."""
    fixed = copy.deepcopy(obj)
    pod = fixed["spec"]["template"]["spec"]
    by_name = {c["name"]: c for group in ("initContainers", "containers") for c in pod.get(group, ())}
    for line in message.splitlines()[1:]:
        setting = SETTING.match(line)
        assert setting, f"not a setting to apply: {line}"
        said = line.split(" — ", 1)[1]
        subjects, pattern = said.rsplit(" (", 1)
        assert " more" not in subjects, "a cut list cannot be followed"
        inside = pattern.rstrip(")").split("[*].", 1)[-1]  # e.g. securityContext.seccompProfile
        field = setting["field"].split(".")
        steps = [*inside[: inside.rindex(field[0])].strip(".").split("."), *field[:-1]]
        for name in (KIND_WORDS.sub("", s) for s in subjects.split(": ", 1)[0].split(", ")):
            node = by_name[name]
            for step in filter(None, steps):
                node = node.setdefault(step, {})
            node[field[-1]] = yaml.safe_load(setting["value"])
    return fixed


def test_one_round_of_the_message_fixes_a_real_shaped_stateful_set():
    statefulset = yaml.safe_load(MONITORING)
    before = decide(statefulset, context("enforce"))
    assert not before.allowed
    rules = {v.rule for v in before.violations}
    assert {"no-privilege-escalation", "drop-capabilities", "seccomp-profile", "read-only-root-fs"} <= rules
    assert "run-as-non-root" in rules
    assert len(before.message.splitlines()) - 1 < len(before.violations), "grouped"
    after = decide(apply_fixes(statefulset, before.message), context("enforce"))
    assert after.violations == (), after.message


# ---------------------------------------------------------------- domain-membership once per namespace


class _Checked:
    def __init__(self, namespace: str | None, decision: Decision) -> None:
        self.namespace, self.decision = namespace, decision


def test_membership_is_said_once_per_namespace_for_many_objects():
    unassigned = Context(domain=DomainPolicy.unassigned(), now=NOW)
    checked = []
    for namespace, count in (("telemetry", 3), ("dashboards", 2)):
        for i in range(count):
            deployment = bare_deployment(1)
            deployment["metadata"] = {"name": f"app-{i}", "namespace": namespace}
            checked.append(_Checked(namespace, decide(deployment, unassigned)))
    checked.append(_Checked("iot", decide(bare_deployment(1), context())))  # in a domain: nothing to say
    lines = summarise_membership(checked)
    assert lines == [
        "[X1369-9.4.1-1 domain-membership] add the namespace to a SecurityDomain (spec.namespaces or "
        "namespaceSelector) — namespace dashboards belongs to no SecurityDomain (2 objects)",
        "[X1369-9.4.1-1 domain-membership] add the namespace to a SecurityDomain (spec.namespaces or "
        "namespaceSelector) — namespace telemetry belongs to no SecurityDomain (3 objects)",
    ]
    assert all(any(v.rule == "domain-membership" for v in c.decision.violations) for c in checked[:5]), (
        "each object's own violations keep it (JSON output, audit)"
    )
