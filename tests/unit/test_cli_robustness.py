"""`iotsec check|validate|render` on hostile and odd input: bounded, one line, the right exit code, never a crash.

Each command runs in a child process under resource limits (address space 1 GiB, 60 s of CPU): a regression that
expands a YAML bomb or recurses without bound is killed or fails there, instead of a timed assertion here.
"""

from __future__ import annotations

import copy
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from iotsec.admission.defaults import apply_api_defaults, is_namespaced
from iotsec.admission.rules import RULES
from iotsec.cli.rules import KINDS
from iotsec.model import manifests
from tests.conftest import EXAMPLES, ROOT

COMMANDS = ("check", "validate", "render")
MEMORY_LIMIT = 1 << 30
CPU_SECONDS = 60


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))


def iotsec(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iotsec", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        preexec_fn=_limits,
        timeout=300,
        check=False,
    )


def assert_one_line_usage_error(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr[-2000:]
    assert len(done.stderr) < 400
    assert expected in done.stderr


def write(path: Path, *objects: Any) -> Path:
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return path


def deployment(name: str, pod: dict[str, Any], namespace: str | None = "iot-processing") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod},
        },
    }


def privileged_pod_spec() -> dict[str, Any]:
    return {"containers": [{"name": "app", "image": "registry.example.com/iot/app:1.0", "securityContext": {}}]}


def host_network_pod(name: str = "gateway") -> dict[str, Any]:
    ports = [{"name": "mqtts", "containerPort": 8883}, {"name": "metrics", "containerPort": 9090}]
    container = {"name": "gateway", "image": "registry.example.com/iot/gateway:1.0", "ports": ports}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "iot-gateway"},
        "spec": {"hostNetwork": True, "containers": [container]},
    }


# ---------------------------------------------------------------- bounded parsing


BOMB = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\ndata:\n  a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n"
for _level, _previous in zip("bcdefghi", "abcdefgh", strict=True):
    BOMB += f"  {_level}: &{_level} [" + ",".join([f"*{_previous}"] * 9) + "]\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_yaml_bomb_fails_fast_with_one_line(tmp_path, command):
    assert len(BOMB) < 500
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    assert_one_line_usage_error(iotsec(command, bomb), "once aliases are expanded")


def test_many_documents_each_below_the_alias_limit_add_up(tmp_path):
    document = BOMB.split("  g:")[0]  # 6 levels: 531,441 values expanded, below the per-document limit
    many = tmp_path / "many.yaml"
    many.write_text("---\n".join([document] * 5))
    assert_one_line_usage_error(iotsec("check", many), "aliases add more than 1,000,000 values to the input in all")
    single = tmp_path / "one.yaml"
    single.write_text(document)
    assert iotsec("check", single).returncode == 0, "one such document is still read"


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("name", "text"),
    [("deep.json", "[" * 100_000 + "]" * 100_000), ("deep.yaml", "a: " + "[" * 100_000 + "]" * 100_000)],
)
def test_100k_levels_of_nesting_fail_with_one_line(tmp_path, command, name, text):
    path = tmp_path / name
    path.write_text(text)
    done = iotsec(command, path)
    assert_one_line_usage_error(done, str(path))
    assert "nest" in done.stderr


def test_nesting_below_the_recursion_limit_but_beyond_any_object_is_refused(tmp_path):
    nested = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}}
    node = nested["data"]
    for _ in range(manifests.MAX_DEPTH + 5):
        node["x"] = {}
        node = node["x"]
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(nested))
    assert_one_line_usage_error(iotsec("check", path), f"nested deeper than {manifests.MAX_DEPTH} levels")


def test_a_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: &d {a: *d}\n")
    assert_one_line_usage_error(iotsec("check", path), "recursive alias")


def test_shared_aliases_within_the_bounds_still_load(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        "- {apiVersion: v1, kind: ConfigMap, metadata: {name: x, namespace: iot-ingest, labels: &l {app: x}}}\n"
        "- {apiVersion: v1, kind: Service, metadata: {name: x, namespace: iot-ingest, labels: *l}, spec: {}}\n"
    )
    [_config_map, service] = [d.obj for d in manifests.load_documents([path])]
    assert service["metadata"]["labels"] == {"app": "x"}
    assert iotsec("check", EXAMPLES / "platform", path).returncode == 0


TEN_MB = "x" * 10_000_000


def test_a_10_mb_field_is_never_printed_back_whole(tmp_path):
    domain = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {"name": "huge"},
        "spec": {"zone": TEN_MB, "namespaces": ["x"]},
    }
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": TEN_MB}, "spec": {"containers": TEN_MB}}
    path = write(tmp_path / "huge.yaml", domain, pod)
    for command, code in (("check", 2), ("validate", 1), ("render", 1)):
        done = iotsec(command, path)
        assert done.returncode == code, done.stderr[-1000:]
        assert "Traceback" not in done.stderr
        assert len(done.stdout) + len(done.stderr) < 5_000, command
        assert "xxx..." in done.stdout + done.stderr, "the value is quoted, cut short"


def test_violations_quoting_a_10_mb_value_are_cut(tmp_path):
    container = {"name": TEN_MB, "image": f"registry.example.com/{TEN_MB}:latest", "env": [{"name": TEN_MB}]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [container]}}
    path = write(tmp_path / "big.yaml", pod)
    for output, bound in (("text", 10_000), ("json", 100_000)):
        done = iotsec("check", "-o", output, "-n", "iot-processing", EXAMPLES / "platform", path)
        assert done.returncode == 1, done.stderr[-1000:]
        assert len(done.stdout) + len(done.stderr) < bound, output
    assert "run-as-non-root" in done.stdout


def test_a_yaml_error_quoting_a_huge_token_is_cut(tmp_path):
    path = tmp_path / "alias.yaml"
    path.write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\ndata: *{'a' * 1_000_000}\n")
    done = iotsec("check", path)
    assert_one_line_usage_error(done, "invalid YAML")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_value_its_type_cannot_hold_fails_with_one_line(tmp_path, command):
    path = tmp_path / "date.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: 2001-02-30}\n")
    assert_one_line_usage_error(iotsec(command, path), "invalid YAML: day is out of range for month")


def test_the_c_loader_is_used_when_libyaml_is_present():
    assert yaml.__with_libyaml__
    assert manifests._LOADER is yaml.CSafeLoader


# ---------------------------------------------------------------- malformed objects among good ones

MALFORMED = [
    deployment("strings-for-containers", {"containers": "x"}),
    {"apiVersion": "v1", "kind": "Pod", "metadata": "gateway", "spec": {}},
    {"apiVersion": "v1", "metadata": {"name": "kindless"}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "labelled", "labels": "env=prod"}},
]


def test_a_malformed_object_is_invalid_and_the_others_are_still_checked(tmp_path):
    good = deployment("rule-engine", privileged_pod_spec())
    path = write(tmp_path / "mixed.yaml", good, *MALFORMED, {**good, "metadata": {**good["metadata"], "name": "last"}})
    done = iotsec("check", EXAMPLES / "platform", path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    invalid = [line for line in done.stderr.splitlines() if line.startswith("INVALID")]
    assert len(invalid) == len(MALFORMED), done.stderr
    for index in range(1, len(MALFORMED) + 1):
        assert any(f"mixed.yaml#{index})" in line for line in invalid), (index, invalid)
    assert "containers must be a list" in done.stderr
    assert "kind is missing" in done.stderr
    assert "metadata must be an object" in done.stderr
    assert "DENIED Deployment iot-processing/rule-engine" in done.stdout, "the object before is reported"
    assert "DENIED Deployment iot-processing/last" in done.stdout, "and the object after"
    assert f"{len(MALFORMED)} invalid (exit 2)" in done.stdout


@pytest.mark.parametrize("command", ["validate", "render"])
def test_validate_and_render_report_documents_that_are_no_objects(tmp_path, command):
    path = tmp_path / "mixed.yaml"
    path.write_text("just a string\n---\n" + (EXAMPLES / "platform" / "10-securitydomains.yaml").read_text())
    done = iotsec(command, path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "INVALID" in done.stderr
    assert "mixed.yaml#0" in done.stderr
    assert "not an object but a string" in done.stderr


def test_validate_still_validates_the_rest(tmp_path):
    path = tmp_path / "mixed.yaml"
    path.write_text("42\n---\n" + (EXAMPLES / "platform" / "10-securitydomains.yaml").read_text())
    done = iotsec("validate", path)
    assert "ok      SecurityDomain device-gateway" in done.stdout
    assert "1 not Kubernetes objects (exit 2)" in done.stdout


# ---------------------------------------------------------------- what is found, what is not checked


def test_an_empty_folder_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for command in COMMANDS:
        assert_one_line_usage_error(iotsec(command, tmp_path / "empty"), "no manifests")


def test_files_without_objects_are_a_usage_error(tmp_path):
    path = tmp_path / "comments.yaml"
    path.write_text("# nothing rendered\n---\n---\n")
    assert_one_line_usage_error(iotsec("check", path), "no Kubernetes objects found")
    assert_one_line_usage_error(iotsec("check", "-", stdin=""), "no Kubernetes objects found")


@pytest.mark.parametrize("text", ["just a string\n", "- a\n- list\n", "42\n"])
def test_a_document_that_is_no_object_is_invalid(tmp_path, text):
    path = tmp_path / "scalar.yaml"
    path.write_text(text)
    done = iotsec("check", path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "INVALID" in done.stderr
    assert "every document must be a Kubernetes object" in done.stderr


def test_upper_case_suffixes_are_found_in_folders(tmp_path):
    write(tmp_path / "POD.YAML", deployment("upper", privileged_pod_spec()))
    write(tmp_path / "Other.Yml", deployment("mixed-case", privileged_pod_spec()))
    (tmp_path / "LIST.JSON").write_text(json.dumps(deployment("json", privileged_pod_spec())))
    done = iotsec("check", EXAMPLES / "platform", tmp_path)
    assert done.returncode == 1, done.stderr
    for name in ("upper", "mixed-case", "json"):
        assert f"DENIED Deployment iot-processing/{name}" in done.stdout


def test_a_pipe_is_read_as_a_file(tmp_path):
    """`iotsec check <(helm template ...)`: the shell passes /dev/fd/N, which is no regular file."""
    path = write(tmp_path / "pod.yaml", deployment("piped", privileged_pod_spec()))
    done = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m iotsec check "{EXAMPLES / "platform"}" <(cat "{path}")'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "DENIED Deployment iot-processing/piped" in done.stdout


def test_a_list_nested_in_a_list_is_flattened(tmp_path):
    inner = {"apiVersion": "v1", "kind": "List", "items": [deployment("nested", privileged_pod_spec())]}
    outer = {"apiVersion": "v1", "kind": "List", "items": [inner, deployment("outer", privileged_pod_spec())]}
    path = write(tmp_path / "lists.yaml", outer)
    done = iotsec("check", EXAMPLES / "platform", path)
    assert done.returncode == 1, done.stderr
    assert "DENIED Deployment iot-processing/nested" in done.stdout
    assert "DENIED Deployment iot-processing/outer" in done.stdout
    assert [d.index for d in manifests.load_documents([path])] == [0, 1]


def test_kinds_the_webhook_does_not_judge_are_not_counted_clean(tmp_path):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "iot-ingest"}}
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "a", "namespace": "iot-ingest"}}
    done = iotsec("check", EXAMPLES / "platform", write(tmp_path / "x.yaml", secret, secret, account))
    assert done.returncode == 0, done.stderr
    assert "0 objects checked: 0 clean" in done.stdout
    assert "not checked (kind Secret: 2, kind ServiceAccount: 1)" in done.stdout
    rows = json.loads(iotsec("check", "-o", "json", EXAMPLES / "platform", tmp_path / "x.yaml").stdout)
    assert {"kind": "Secret", "objects": 2, "checked": False} in rows


def test_objects_in_namespaces_the_webhook_leaves_out_are_not_checked(tmp_path):
    path = write(tmp_path / "system.yaml", deployment("dns", privileged_pod_spec(), namespace="kube-system"))
    path2 = write(tmp_path / "release.yaml", deployment("operator", privileged_pod_spec(), namespace=None))
    done = iotsec("check", "-n", "iotsec-system", path, path2)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 objects checked" in done.stdout
    assert "namespace iotsec-system: 1, namespace kube-system: 1" in done.stdout


# ---------------------------------------------------------------- exit codes


def test_warn_mode_findings_exit_zero_and_strict_makes_them_count():
    warned = EXAMPLES / "workloads" / "nonconforming" / "host-path-volume.yaml"
    done = iotsec("check", EXAMPLES / "platform", warned)
    assert "ADMITTED (warn mode) Deployment monitoring/log-shipper" in done.stdout
    assert done.returncode == 0, "admitted: the webhook lets it in"
    assert iotsec("check", "--strict", EXAMPLES / "platform", warned).returncode == 1


@pytest.mark.parametrize("command", COMMANDS)
def test_the_exit_codes_are_documented_in_help(command):
    done = iotsec(command, "--help")
    assert done.returncode == 0
    assert "exit codes:" in done.stdout
    for code in ("0  ", "1  ", "2  "):
        assert code in done.stdout


# ---------------------------------------------------------------- -n and defaulting as the API server does


def _checked(rows: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    [row] = [r for r in rows if r.get("checked") and r["object"].startswith(prefix)]
    return row


def test_objects_without_a_namespace_are_judged_in_the_namespace_given(tmp_path):
    path = write(tmp_path / "helm.yaml", deployment("router", privileged_pod_spec(), namespace=None))
    given = json.loads(iotsec("check", "-o", "json", "-n", "iot-processing", EXAMPLES / "platform", path).stdout)
    row = _checked(given, "Deployment")
    assert row["namespace"] == "iot-processing"
    assert row["domain"] == "ingestion", "the SecurityDomain of the namespace helm installs into"
    assert "domain-membership" not in {v["rule"] for v in row["violations"]}

    default = json.loads(iotsec("check", "-o", "json", EXAMPLES / "platform", path).stdout)
    row = _checked(default, "Deployment")
    assert row["namespace"] == "default", "as kubectl and helm without -n"
    assert "domain-membership" in {v["rule"] for v in row["violations"]}


def test_cluster_scoped_kinds_get_no_namespace(tmp_path):
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "contractors"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "Group", "name": "contractors"}],
    }
    rows = json.loads(iotsec("check", "-o", "json", "-n", "iot-ingest", write(tmp_path / "b.yaml", binding)).stdout)
    assert _checked(rows, "ClusterRoleBinding")["namespace"] is None
    assert not is_namespaced("ClusterRoleBinding")
    assert not is_namespaced("SecurityDomain")
    assert is_namespaced("Deployment")
    assert is_namespaced("BackupPolicy")


def test_the_namespace_given_is_judged_as_the_webhook_judges_it(tmp_path):
    """The same object with the namespace written in gets the same verdict as without it under -n."""
    written = deployment("router", privileged_pod_spec(), namespace="iot-processing")
    omitted = deployment("router", privileged_pod_spec(), namespace=None)
    with_ns = json.loads(
        iotsec("check", "-o", "json", EXAMPLES / "platform", write(tmp_path / "a.yaml", written)).stdout
    )
    under_n = json.loads(
        iotsec(
            "check", "-o", "json", "-n", "iot-processing", EXAMPLES / "platform", write(tmp_path / "b.yaml", omitted)
        ).stdout
    )
    first, second = _checked(with_ns, "Deployment"), _checked(under_n, "Deployment")
    assert first["violations"] == second["violations"]
    assert (first["allowed"], first["domain"], first["mode"]) == (second["allowed"], second["domain"], second["mode"])


def test_a_host_network_pod_gets_the_violations_it_gets_live(tmp_path):
    """The API server defaults hostPort = containerPort under hostNetwork: 3 violations live, so 3 offline."""
    rows = json.loads(
        iotsec("check", "-o", "json", EXAMPLES / "platform", write(tmp_path / "pod.yaml", host_network_pod())).stdout
    )
    host = [
        v["path"] for v in _checked(rows, "Pod")["violations"] if v["rule"] in ("no-host-namespaces", "no-host-ports")
    ]
    assert sorted(host) == [
        "spec.containers[0].ports[0].hostPort",
        "spec.containers[0].ports[1].hostPort",
        "spec.hostNetwork",
    ]


def test_pod_templates_get_host_ports_only_from_servers_before_1_28(tmp_path):
    pod = host_network_pod()
    path = write(tmp_path / "d.yaml", {**deployment("gateway", pod["spec"]), "metadata": pod["metadata"]})

    def host_rules(*options: str) -> list[str]:
        rows = json.loads(iotsec("check", "-o", "json", *options, EXAMPLES / "platform", path).stdout)
        found = _checked(rows, "Deployment")["violations"]
        return sorted(v["rule"] for v in found if v["rule"] in ("no-host-namespaces", "no-host-ports"))

    assert host_rules() == ["no-host-namespaces"]
    assert host_rules("--kube-version", "1.27") == ["no-host-namespaces", "no-host-ports", "no-host-ports"]
    assert host_rules("--kube-version", "1.28") == ["no-host-namespaces"]
    assert iotsec("check", "--kube-version", "2.1", path).returncode == 2
    assert iotsec("check", "-n", "Not_A_Namespace", path).returncode == 2


def test_api_defaults_are_pure_and_copying():
    pod = host_network_pod()
    pod["spec"]["initContainers"] = [{"name": "init", "image": "i:1", "ports": [{"containerPort": 80}]}]
    pod["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "d:1", "ports": [{"containerPort": 81}]}]
    pod["spec"]["containers"][0]["ports"].append({"containerPort": 1883, "hostPort": 31883, "protocol": "UDP"})
    del pod["metadata"]["namespace"]
    before = copy.deepcopy(pod)
    stored = apply_api_defaults(pod, "iot-gateway")
    assert pod == before, "the input is not changed"
    assert stored["metadata"]["namespace"] == "iot-gateway"
    ports = stored["spec"]["containers"][0]["ports"]
    assert [(p["hostPort"], p["protocol"]) for p in ports] == [(8883, "TCP"), (9090, "TCP"), (31883, "UDP")]
    assert stored["spec"]["initContainers"][0]["ports"][0]["hostPort"] == 80
    assert "hostPort" not in stored["spec"]["ephemeralContainers"][0]["ports"][0], "as defaultHostNetworkPorts"
    foreign = {**host_network_pod(), "apiVersion": "example.com/v1"}
    assert apply_api_defaults(foreign) is foreign, "a custom kind named Pod gets no core defaults"
    plain = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "y"}}
    assert apply_api_defaults(plain) is plain, "nothing to default: the same object"


# ---------------------------------------------------------------- iotsec rules


def test_rules_lists_every_rule_with_control_level_severity_and_kinds():
    done = iotsec("rules", "-o", "json")
    assert done.returncode == 0
    rows = {row["id"]: row for row in json.loads(done.stdout)}
    assert set(rows) == set(RULES)
    assert set(KINDS) >= set(RULES), "every rule has its kinds in iotsec.cli.rules.KINDS"
    assert rows["no-privileged"]["level"] == "pss-baseline"
    assert rows["run-as-non-root"]["level"] == "pss-restricted"
    assert rows["image-pinned"]["level"] == "iotsec"
    assert rows["no-privileged"]["control"] == "X1369-9.4.3-1"
    assert rows["no-privileged"]["severity"] == "critical"
    assert {"Pod", "Deployment", "CronJob"} <= set(rows["no-privileged"]["kinds"])
    assert rows["ingress-tls"]["kinds"] == ["Ingress"]
    text = iotsec("rules").stdout
    assert "no-host-ports" in text
    assert "pss-baseline" in text
    assert f"{len(RULES)} rules" in text
    assert iotsec("check", "--list-rules").stdout == text
    assert json.loads(iotsec("check", "--list-rules", "-o", "json").stdout) == list(rows.values())


def test_check_decides_on_the_stored_object_and_reports_the_one_written():
    from datetime import UTC, datetime

    from iotsec.admission.snapshot import check

    pod = host_network_pod()
    del pod["metadata"]["namespace"]
    before = copy.deepcopy(pod)
    documents = [*manifests.load_documents([EXAMPLES / "platform"]), manifests.Document("helm", 0, pod)]
    [checked] = [
        c for c in check(documents, datetime.now(UTC), namespace="iot-gateway").checked if c.document.obj is pod
    ]
    assert pod == before, "callers find their object as they wrote it"
    assert checked.namespace == "iot-gateway"
    assert checked.title == "Pod iot-gateway/gateway"
    assert [v.rule for v in checked.decision.violations].count("no-host-ports") == 2
