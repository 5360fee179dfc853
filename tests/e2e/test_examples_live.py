"""Every example on a live cluster (issue 15): each custom resource reports Ready with a reason within 15 s of the
operator's start and again of its restart, the operator logs no handler exception, and `iotsec render` on the same
files is exactly what the operator applied.

The examples are applied as they are (`kubectl apply -f examples/platform/`: their names are the ones render is run
on); leftovers of an interrupted run are removed first, and everything this module created goes at its end. Besides
them, a SecurityDomain with CIDR peers in its ingress and egress rules, IPv4 and IPv6, each with an except: statuses
that mention CIDR peers were once refused by the CRD schema (issue 15).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.conftest import EXAMPLES
from tests.e2e import examples_live as ex
from tests.e2e.conftest import eventually
from tests.e2e.processes import Operator

EXAMPLE_FILES = sorted((EXAMPLES / "platform").glob("*.yaml"))
READY_WITHIN = 15.0  # seconds after the operator's start (issue 15)
AUDIT_NAMESPACE = "iotsec-audit"  # the operator's default sink namespace (Platform): the audit-store policy lives there
CIDR_DOMAIN = "edge-cidr-e2e"
CIDR_INPUT = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CIDR_DOMAIN}},
    {
        "apiVersion": f"{ex.GROUP}/{ex.VERSION}",
        "kind": "SecurityDomain",
        "metadata": {"name": CIDR_DOMAIN},
        "spec": {
            "zone": "interface",
            "description": "CIDR peers both ways, IPv4 and IPv6, each with an except.",
            "namespaces": [CIDR_DOMAIN],
            "enforcement": "enforce",
            "podSecurity": "restricted",
            "allowedPorts": [{"port": 8443}],
            "allow": [
                {
                    "name": "from-field-networks",
                    "from": [
                        {"cidr": "10.30.0.0/16", "except": ["10.30.9.0/24"]},
                        {"cidr": "2001:db8:abcd::/48", "except": ["2001:db8:abcd:ff::/64"]},
                    ],
                    "ports": [{"port": 8443}],
                }
            ],
            "egress": [
                {
                    "name": "to-offsite",
                    "to": [
                        {"cidr": "198.51.100.0/24", "except": ["198.51.100.7/32"]},
                        {"cidr": "2001:db8:5::/64"},
                    ],
                    "ports": [{"port": 443}],
                }
            ],
        },
    },
]
# Ready=False is the truth for these, and the spec says why: no batch/v1 CronJob before 1.21 (the schedule cannot be
# kept), and an audit sink whose image the node cannot pull (registry.example.com) has no endpoint yet.
EXPLAINED_NOT_READY = {"BackupPolicy": {"CronJobUnsupported"}, "AuditPolicy": {"AwaitingSink"}}


@dataclass
class Platform:
    inputs: list[Path]
    namespaces: list[dict[str, Any]]
    resources: list[dict[str, Any]]  # the iotsec custom resources
    storage_classes: list[dict[str, Any]]
    created_namespaces: list[str] = field(default_factory=list)
    created_storage_classes: list[str] = field(default_factory=list)


@dataclass
class Run:
    """One operator start: its log and how long the custom resources took to be Ready."""

    operator: Operator
    started_at: float  # time.monotonic() just before the start
    seconds_to_ready: float
    seconds_to_reconciled: float = 0.0


def _resources(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["apiVersion"] == f"{ex.GROUP}/{ex.VERSION}"]


def _who(doc: dict[str, Any]) -> str:
    meta = doc["metadata"]
    return f"{doc['kind']} {meta.get('namespace', '') + '/' if meta.get('namespace') else ''}{meta['name']}"


def _not_terminating(core: client.CoreV1Api, name: str) -> bool:
    try:
        return core.read_namespace(name).metadata.deletion_timestamp is None
    except ApiException as exc:
        return exc.status == 404


def _delete_retained_keys(core: client.CoreV1Api, resources: list[dict[str, Any]]) -> None:
    """Key Secrets a tenant with deletionPolicy Retain leaves behind, e.g. its device CA in iotsec-system."""
    owners = {(d["kind"], d["metadata"]["name"]) for d in resources}
    for secret in core.list_secret_for_all_namespaces(label_selector=f"{ex.MANAGED_BY}={ex.MANAGER}").items:
        labels = secret.metadata.labels or {}
        if (labels.get(ex.OWNER_KIND), labels.get(ex.OWNER_NAME)) in owners:
            with contextlib.suppress(ApiException):
                core.delete_namespaced_secret(secret.metadata.name, secret.metadata.namespace)


def _gone_namespace(core: client.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespace(name)
    except ApiException as exc:
        return exc.status == 404
    return False


def _remove_resources(custom: client.CustomObjectsApi, resources: list[dict[str, Any]], operator_runs: bool) -> None:
    for doc in resources:
        ex.delete_cr(custom, doc, release_finalizers=not operator_runs)
    for doc in resources:
        eventually(lambda d=doc: ex.read_cr(custom, d) is None, timeout=30, interval=0.2, what=f"{_who(doc)} deleted")


@pytest.fixture(scope="module")
def platform(api_client, crds, tmp_path_factory) -> Iterator[Platform]:
    """The examples' namespaces and StorageClass, and their custom resources (no operator runs yet)."""
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    storage = client.StorageV1Api(api_client)
    folder = tmp_path_factory.mktemp("examples-live")
    extra = folder / "cidr-domain.yaml"
    extra.write_text(yaml.safe_dump_all(CIDR_INPUT))
    inputs = [*EXAMPLE_FILES, extra]
    if ex.nulls_empty_strings(custom):
        print('this API server turns "" in a custom resource\'s list into null: RBAC rules name "apps", not ""')
        inputs = ex.without_empty_api_groups(inputs, folder / "served")
    docs = ex.documents(inputs)
    namespaces = [d for d in docs if d["kind"] == "Namespace"] + [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": AUDIT_NAMESPACE}}
    ]
    setup = Platform(inputs, namespaces, _resources(docs), [d for d in docs if d["kind"] == "StorageClass"])
    _remove_resources(custom, setup.resources, operator_runs=False)  # leftovers of an interrupted run
    # 1.20 does not label namespaces with their name (1.21+ does); the DNS policies select kube-system by it
    core.patch_namespace("kube-system", {"metadata": {"labels": {"kubernetes.io/metadata.name": "kube-system"}}})
    try:
        for namespace in namespaces:
            name = namespace["metadata"]["name"]
            eventually(lambda n=name: _not_terminating(core, n), timeout=60, what=f"namespace {name} gone")
            labels = {**(namespace["metadata"].get("labels") or {}), "kubernetes.io/metadata.name": name}
            try:
                core.create_namespace({"metadata": {"name": name, "labels": labels}})
                setup.created_namespaces.append(name)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                core.patch_namespace(name, {"metadata": {"labels": labels}})
        for storage_class in setup.storage_classes:
            try:
                storage.create_storage_class(storage_class)
                setup.created_storage_classes.append(storage_class["metadata"]["name"])
            except ApiException as exc:
                if exc.status != 409:
                    raise
        for doc in setup.resources:
            ex.create_cr(custom, doc)
        yield setup
    finally:
        _remove_resources(custom, setup.resources, operator_runs=False)
        _delete_retained_keys(core, setup.resources)
        for name in setup.created_namespaces:
            core.delete_namespace(name)
        for name in setup.created_namespaces:  # the operator's Job pods (an image the node cannot pull) hold them up
            core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
        for name in setup.created_namespaces:
            eventually(lambda n=name: _not_terminating(core, n) and _gone_namespace(core, n), timeout=90, what=name)
        for name in setup.created_storage_classes:
            storage.delete_storage_class(name)
        for sc in storage.list_storage_class(label_selector=f"{ex.MANAGED_BY}={ex.MANAGER}").items:
            if (sc.metadata.labels or {}).get(ex.OWNER_NAME) in {d["metadata"]["name"] for d in setup.resources}:
                storage.delete_storage_class(sc.metadata.name)  # a tenant's own StorageClass (Retain: left behind)


def _all_ready(custom: client.CustomObjectsApi, resources: list[dict[str, Any]], seen: dict[str, Any]) -> bool:
    for doc in resources:
        seen[_who(doc)] = ex.ready_condition(ex.read_cr(custom, doc))
    return all(c.get("reason") for c in seen.values())


def _start(platform: Platform, api_client, log: Path, seen: dict[str, Any]) -> Run:
    """Start the operator and measure the seconds until every resource has a Ready condition with a reason."""
    custom = client.CustomObjectsApi(api_client)
    operator = Operator(log)
    started = time.monotonic()
    operator.start()
    reached, _ = ex.wait_until(lambda: _all_ready(custom, platform.resources, seen), timeout=60)
    return Run(operator, started, time.monotonic() - started if reached else float("inf"))


@pytest.fixture(scope="module")
def first(platform, api_client, tmp_path_factory) -> Iterator[Run]:
    seen: dict[str, Any] = {}
    run = _start(platform, api_client, tmp_path_factory.mktemp("first") / "operator.log", seen)
    print(f"\nfirst start: every custom resource Ready with a reason after {run.seconds_to_ready:.1f} s")
    for who, condition in seen.items():
        print(f"  {who}: Ready={condition.get('status')} {condition.get('reason')}: {condition.get('message')}")
    try:
        yield run
    finally:
        if run.operator.process and run.operator.process.poll() is None:
            _remove_resources(client.CustomObjectsApi(api_client), platform.resources, operator_runs=True)
        run.operator.stop()


def _check_ready(platform: Platform, custom: client.CustomObjectsApi) -> None:
    for doc in platform.resources:
        condition = ex.ready_condition(ex.read_cr(custom, doc))
        assert condition.get("reason"), f"{_who(doc)}: no Ready condition with a reason: {condition}"
        if condition["status"] != "True":
            assert condition["reason"] in EXPLAINED_NOT_READY.get(doc["kind"], ()), f"{_who(doc)}: {condition}"


def test_every_example_is_ready_with_a_reason_within_15_s_of_the_start(first, platform, api_client, server_minor):
    _check_ready(platform, client.CustomObjectsApi(api_client))
    assert first.seconds_to_ready <= READY_WITHIN, f"{first.seconds_to_ready:.1f} s:\n{first.operator.log()}"


def test_the_first_start_logs_no_handler_exception(first):
    log = first.operator.log_path.read_text(errors="replace")
    assert ex.exception_lines(log) == [], log[-8000:]


def _rendered_and_live(platform: Platform, api_client) -> tuple[dict[ex.Key, Any], dict[ex.Key, Any], list[str]]:
    """render's objects and the live ones, by key; CronJobs left out where batch/v1 does not serve them."""
    rendered = ex.merged_by_key(ex.render(platform.inputs))
    skipped = []
    if not ex.serves(api_client, "batch/v1", "CronJob"):
        skipped = sorted("/".join(k[2:]) for k in rendered if k[:2] == ("batch/v1", "CronJob"))
        rendered = {k: v for k, v in rendered.items() if k[:2] != ("batch/v1", "CronJob")}
    owners = {(d["kind"], d["metadata"]["name"]) for d in platform.resources}
    domains = {name for kind, name in owners if kind == "SecurityDomain"}
    tenants = {d["spec"]["tenantID"] for d in platform.resources if d["kind"] == "TenantIsolation"}
    live = {
        **ex.live_managed(api_client, owners),
        **ex.live_namespaces(client.CoreV1Api(api_client), domains, tenants),
    }
    return rendered, live, skipped


def _render_mismatches(platform: Platform, api_client) -> list[str]:
    rendered, live, skipped = _rendered_and_live(platform, api_client)
    if skipped:
        print(f"batch/v1 CronJob is not served here (before 1.21): not compared: {', '.join(skipped)}")
    found = [f"rendered, not live: {k}" for k in sorted(rendered.keys() - live.keys())]
    found += [f"live, not rendered: {k}" for k in sorted(live.keys() - rendered.keys())]
    for key in sorted(rendered.keys() & live.keys()):
        found += [f"{key} {d}" for d in ex.object_differences(rendered[key], live[key])]
        if key[1] == "Namespace":  # the labels iotsec writes, both ways: a live one render lacks is a difference
            ours = [ex.iotsec_labels(obj["metadata"].get("labels") or {}) for obj in (rendered[key], live[key])]
            found += [f"{key} iotsec's labels: rendered {ours[0]}, live {ours[1]}"] if ours[0] != ours[1] else []
    _compared.append(len(rendered.keys() & live.keys()))
    return found


_compared: list[int] = []  # how many objects each comparison covered (for the report)


def test_render_is_what_the_operator_applied(first, platform, api_client):
    """Issue 15: the same input, through `iotsec render` and through the operator, gives the same objects (render's
    fields all present with the same values; what the server adds aside), as soon as everything is Ready: domains
    are planned with the labels their tenants give their namespaces, so no tenant namespace is ever planned
    domain-wide (open to the domain's other tenants) first. Seen before that fix in 2 of 7 runs: 21 differences for
    3.5-4.7 s after Ready."""
    mismatches = _render_mismatches(platform, api_client)
    print(f"render and live compared object for object: {_compared[-1]} objects")
    assert mismatches == [], "\n".join(mismatches)


@pytest.fixture(scope="module")
def restarted(first, platform, api_client, tmp_path_factory) -> Run:
    """The operator stopped and started again, with a fresh log: each resource's reconcile line in it is the
    proof of a reconcile by the new process."""
    first.operator.stop()
    custom = client.CustomObjectsApi(api_client)
    log = tmp_path_factory.mktemp("restart") / "operator.log"
    seen: dict[str, Any] = {}
    run = _start(platform, api_client, log, seen)
    first.operator = run.operator  # the first fixture's teardown now stops (and cleans up with) this one

    def reconciled() -> bool:
        text = log.read_text(errors="replace")
        return all(
            ex.reconcile_lines(text, d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"))
            for d in platform.resources
        )

    reached, _ = ex.wait_until(reconciled, timeout=60)
    run.seconds_to_reconciled = time.monotonic() - run.started_at if reached else float("inf")
    _check_ready(platform, custom)
    print(
        f"\nrestart: every custom resource Ready with a reason after {run.seconds_to_ready:.1f} s, "
        f"reconciled by the new process (its log line) after {run.seconds_to_reconciled:.1f} s"
    )
    return run


def test_a_restart_reconciles_everything_within_15_s(restarted, platform):
    text = restarted.operator.log_path.read_text(errors="replace")
    missing = [
        ex.key_of(d)
        for d in platform.resources
        if not ex.reconcile_lines(text, d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"))
    ]
    assert missing == [], text[-8000:]
    assert restarted.seconds_to_reconciled <= READY_WITHIN, text[-8000:]
    assert restarted.seconds_to_ready <= READY_WITHIN


def test_the_restart_logs_no_handler_exception(restarted):
    log = restarted.operator.log_path.read_text(errors="replace")
    assert ex.exception_lines(log) == [], log[-8000:]


def test_render_is_still_what_the_operator_applied_after_the_restart(restarted, platform, api_client):
    assert _render_mismatches(platform, api_client) == []
