"""Benchmark: the operator at platform scale against the real API server (issue 18).

On the API server KUBECONFIG names (the testenv's kube-apiserver 1.20; no node needed): D SecurityDomains and T
TenantIsolations of 3 namespaces and 5 applications each (tenant i in domain i mod D, its namespaces claimed by the
domain's namespaceSelector), all created before `iotsec run` starts in a subprocess with the chart's defaults
(watch cache, namespace grants, resync 60 s). It measures:
- cold reconcile: seconds from the operator's start until every domain and tenant is Ready=True;
- writes and reads per tenant (and per domain) during that, from iotsec_api_requests_by_controller_total;
- steady state: writes over one resync period once everything is Ready (every resource resynced, nothing changed);
- API requests per second, from the operator's own counters (its requests, not kopf's) and from the API server's
  apiserver_request_total (every client's; 429s among them: API priority and fairness rejecting);
- the operator's peak RSS (VmHWM) and CPU seconds from /proc.
Everything it created (custom resources, namespaces, the platform keys in the release namespace, events) is deleted
at the end. Run with no other operator on the cluster:
    KUBECONFIG=... PYTHONPATH=.:operator .venv/bin/python benchmarks/operator_scale.py [--tenants 1000 --domains 200]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from figures import record
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from tests.e2e.conftest import install_crds

from iotsec.build.tenant import BUILT_IN_PRIVILEGES, privilege_rules
from iotsec.model.labels import DOMAIN_CLAIM_LABEL, TENANT_LABEL

GROUP, VERSION = "iotsec.io", "v1alpha1"
RELEASE = "iotsec-system"
BENCH_LABEL = "iotsec.io/bench"
ZONES = ("access", "core", "management", "interface", "support")
READS = ("get", "list", "look", "review", "discover")
WRITES = ("apply", "write", "set", "create", "grant", "delete", "post", "replace", "withdraw")


# ---------------------------------------------------------------- the platform


def domain(suffix: str, index: int, domains: int) -> dict[str, Any]:
    name = f"s{suffix}-d{index}"
    previous = f"s{suffix}-d{(index - 1) % domains}"
    spec = {
        "zone": ZONES[index % len(ZONES)],
        "namespaceSelector": {"matchLabels": {DOMAIN_CLAIM_LABEL: name}},
        "intraDomainTraffic": "domain" if index % 2 else "namespace",
        "allowedPorts": [{"port": 8080}, {"port": 9090}],
        "allow": [{"name": "from-previous", "from": [{"domain": previous}], "ports": [{"port": 8080}]}],
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SecurityDomain",
        "metadata": {"name": name, "labels": {BENCH_LABEL: suffix}},
        "spec": spec,
    }


def tenant(suffix: str, index: int, domains: int) -> dict[str, Any]:
    """As benchmarks/tenants.py's: 3 namespaces, 5 applications, two user classes, a device class, a provisioner
    (so a StorageClass and a volume key of its own)."""
    tenant_id = f"s{suffix}t{index}"
    namespaces = [f"s{suffix}-t{index}-{n}" for n in range(3)]
    spec = {
        "tenantID": tenant_id,
        "securityDomain": f"s{suffix}-d{index % domains}",
        "namespaces": namespaces,
        "userClasses": [
            {"name": "admins", "privilege": "admin", "groups": [f"{tenant_id}:admins"]},
            {"name": "viewers", "privilege": "viewer", "groups": [f"{tenant_id}:viewers"]},
        ],
        # not the core group "": the testenv's 1.20 server turns "" in custom resources into null
        "applicationClasses": [
            {"name": "ingest", "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]}
        ],
        "applications": [
            {
                "name": f"app-{a}",
                "class": "ingest",
                "namespace": namespaces[a % 3],
                "keyAlgorithm": "ed25519" if a % 2 else "hmac-sha256",
            }
            for a in range(5)
        ],
        "deviceClasses": [{"name": "meter"}],
        "storage": {"provisioner": "driver.longhorn.io", "parameters": {"encrypted": "true"}},
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TenantIsolation",
        "metadata": {"name": f"s{suffix}-t{index}", "labels": {BENCH_LABEL: suffix}},
        "spec": spec,
    }


def prerequisites(api: client.ApiClient) -> list[str]:
    """CRDs, the release namespace and the chart's tenant ClusterRoles; returns the ClusterRoles made here."""
    install_crds(api)
    with contextlib.suppress(ApiException):  # 409: there already, and then left there
        client.CoreV1Api(api).create_namespace({"metadata": {"name": RELEASE}})
    rbac, made = client.RbacAuthorizationV1Api(api), []
    for privilege in BUILT_IN_PRIVILEGES:
        role = {"metadata": {"name": f"iotsec-tenant-{privilege}"}, "rules": privilege_rules(privilege)}
        try:
            rbac.create_cluster_role(role)
            made.append(role["metadata"]["name"])
        except ApiException as exc:
            if exc.status != 409:
                raise
    return made


def create_all(custom: client.CustomObjectsApi, suffix: str, tenants: int, domains: int) -> float:
    started = time.monotonic()
    for d in range(domains):
        custom.create_cluster_custom_object(GROUP, VERSION, "securitydomains", domain(suffix, d, domains))
    for t in range(tenants):
        custom.create_cluster_custom_object(GROUP, VERSION, "tenantisolations", tenant(suffix, t, domains))
    return time.monotonic() - started


def not_ready(custom: client.CustomObjectsApi, suffix: str, tenants: int, domains: int) -> dict[str, int]:
    """Per plural, how many of the benchmark's resources are not Ready=True for their current generation; a domain
    also not until it holds all its tenants' namespaces (a domain is Ready with the members it has: without this,
    "all Ready" came while domains were still isolating the namespaces the tenants had made)."""
    waiting = {}
    for plural in ("securitydomains", "tenantisolations"):
        items = custom.list_cluster_custom_object(
            GROUP, VERSION, plural, label_selector=f"{BENCH_LABEL}={suffix}", resource_version="0"
        )["items"]
        waiting[plural] = sum(1 for item in items if not _ready(item) or not _complete(item, plural, tenants, domains))
    return waiting


def _complete(item: dict[str, Any], plural: str, tenants: int, domains: int) -> bool:
    if plural != "securitydomains":
        return True
    index = int(item["metadata"]["name"].rsplit("-d", 1)[1])
    members = 3 * sum(1 for t in range(tenants) if t % domains == index)
    return int((item.get("status") or {}).get("namespaceCount") or 0) == members


def _ready(item: dict[str, Any]) -> bool:
    status = item.get("status") or {}
    if status.get("observedGeneration") != item["metadata"].get("generation"):
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or ())


# ---------------------------------------------------------------- the operator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    """`iotsec run` with the chart's settings but the metrics on a free local port."""

    def __init__(self, log_path: Path, resync: float, env: dict[str, str]):
        self.log_path, self.resync = log_path, resync
        self.metrics_port, self.liveness_port = _free_port(), _free_port()
        self.env = {**os.environ, "IOTSEC_METRICS_HOST": "127.0.0.1", "IOTSEC_WEBHOOK_NAMESPACE": RELEASE, **env}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "iotsec",
            "run",
            "--resync-seconds",
            str(self.resync),
            "--metrics-port",
            str(self.metrics_port),
            "--liveness",
            f"http://127.0.0.1:{self.liveness_port}/healthz",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            return str(response.read().decode())

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def memory(self, field: str) -> float:
        """VmRSS or VmHWM (the peak) in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


# ---------------------------------------------------------------- figures


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    found = []
    for line in text.splitlines():
        match = re.match(rf"{name}(?:\{{(.*)\}})? ([0-9.e+-]+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
            found.append((labels, float(match.group(2))))
    return found


class Snapshot:
    """The operator's counters at one moment, and the API server's."""

    def __init__(self, operator: Operator, api: client.ApiClient):
        self.at = time.monotonic()
        text = operator.metrics()
        self.by_controller: dict[tuple[str, str], float] = {
            (labels.get("controller", ""), labels.get("verb", "")): value
            for labels, value in samples(text, "iotsec_api_requests_by_controller_total")
        }
        self.reconciles: dict[str, float] = {}
        for labels, value in samples(text, "iotsec_reconcile_total"):
            self.reconciles[labels.get("kind", "")] = self.reconciles.get(labels.get("kind", ""), 0) + value
        self.skipped = sum(value for _, value in samples(text, "iotsec_api_applies_skipped_total"))
        self.cpu = operator.cpu_seconds()
        self.server = server_requests(api)
        self.control_plane_cpu = control_plane_cpu()

    def count(self, verbs: tuple[str, ...], controller: str | None = None) -> float:
        return sum(v for (c, verb), v in self.by_controller.items() if verb in verbs and controller in (None, c))

    def total(self) -> float:
        return sum(self.by_controller.values())


CONTROL_PLANE = ("kube-apiserver", "etcd")


def control_plane_cpu() -> float:
    """CPU seconds the API server and etcd used so far, when they run on this machine (the testenv): what the
    cluster side of a reconcile costs, on the same two cores as the operator. 0 when they are not found."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, _, rest = text.partition("(")[2].rpartition(")")
        if name in CONTROL_PLANE:
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def server_requests(api: client.ApiClient) -> dict[str, float]:
    """The API server's request counters: all, 429s (APF or max-inflight rejections), and APF's rejections."""
    response = api.call_api(*api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"]))
    response.read()
    text = response.data.decode()
    found = {"all": 0.0, "429": 0.0, "apf rejected": 0.0}
    for labels, value in samples(text, "apiserver_request_total"):
        found["all"] += value
        if labels.get("code") == "429":
            found["429"] += value
        if labels.get("verb") not in ("WATCH", "CONNECT"):
            resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
            key = f"{labels.get('verb')} {resource}"
            found[key] = found.get(key, 0.0) + value
    for _, value in samples(text, "apiserver_flowcontrol_rejected_requests_total"):
        found["apf rejected"] += value
    return found


def delta(after: Snapshot, before: Snapshot | None, verbs: tuple[str, ...], controller: str | None = None) -> float:
    return after.count(verbs, controller) - (before.count(verbs, controller) if before else 0.0)


# ---------------------------------------------------------------- clean-up


def cleanup(api: client.ApiClient, suffix: str, made_roles: list[str]) -> None:
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    selector = f"{BENCH_LABEL}={suffix}"
    for plural in ("tenantisolations", "securitydomains"):
        for item in custom.list_cluster_custom_object(GROUP, VERSION, plural, label_selector=selector)["items"]:
            name = item["metadata"]["name"]
            with contextlib.suppress(ApiException):
                custom.patch_cluster_custom_object(GROUP, VERSION, plural, name, {"metadata": {"finalizers": None}})
                custom.delete_cluster_custom_object(GROUP, VERSION, plural, name)
    prefix = f"s{suffix}"
    for kind in ("secret", "config_map"):  # the platform keys and registries: unowned, in the release namespace
        listed = getattr(core, f"list_namespaced_{kind}")(RELEASE, label_selector=TENANT_LABEL)
        for item in listed.items:
            if (item.metadata.labels or {}).get(TENANT_LABEL, "").startswith(prefix):
                with contextlib.suppress(ApiException):
                    getattr(core, f"delete_namespaced_{kind}")(item.metadata.name, RELEASE)
    storage = client.StorageV1Api(api)  # owned by their tenants, but the garbage collector may be slow or absent
    for item in storage.list_storage_class(label_selector=TENANT_LABEL).items:
        if (item.metadata.labels or {}).get(TENANT_LABEL, "").startswith(prefix):
            with contextlib.suppress(ApiException):
                storage.delete_storage_class(item.metadata.name)
    for event in core.list_namespaced_event("default").items:  # events about the cluster-scoped resources
        if (event.involved_object.name or "").startswith(f"{prefix}-"):
            with contextlib.suppress(ApiException):
                core.delete_namespaced_event(event.metadata.name, "default")
    ours = [ns.metadata.name for ns in core.list_namespace().items if ns.metadata.name.startswith(f"{prefix}-")]
    for name in ours:
        with contextlib.suppress(ApiException):
            core.delete_namespace(name)
    rbac = client.RbacAuthorizationV1Api(api)
    for name in made_roles:
        with contextlib.suppress(ApiException):
            rbac.delete_cluster_role(name)
    deadline = time.monotonic() + 300
    left = ours
    while left and time.monotonic() < deadline:
        time.sleep(5)
        left = [ns.metadata.name for ns in core.list_namespace().items if ns.metadata.name.startswith(f"{prefix}-")]
    print(f"clean-up: {len(ours)} namespaces deleted" + (f", {len(left)} still terminating" if left else ""))


# ---------------------------------------------------------------- the run


@contextlib.contextmanager
def profiling(pid: int, output: str | None) -> Iterator[None]:
    """py-spy record of the operator (collapsed stacks) while the block runs, when asked for."""
    if not output:
        yield
        return
    spy = subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--output", output, "--rate", "50", "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(timeout=30)


def run(args: argparse.Namespace, api: client.ApiClient, suffix: str) -> None:
    custom = client.CustomObjectsApi(api)
    tenants, domains = args.tenants, args.domains
    seconds = create_all(custom, suffix, tenants, domains)
    print(f"created {domains} SecurityDomains and {tenants} TenantIsolations in {seconds:.1f} s")
    folder = Path(tempfile.mkdtemp(prefix="iotsec-scale-"))
    operator = Operator(folder / "operator.log", args.resync, dict(item.split("=", 1) for item in args.env))
    server_before = server_requests(api)
    control_plane_before = control_plane_cpu()
    started = time.monotonic()
    operator.start()
    peak_rss = 0.0
    try:
        with profiling(operator.pid, args.profile):
            waiting: dict[str, int] = {}
            shown = started
            while True:
                if time.monotonic() - shown >= 30:  # a run that misses the goal still says how far it got
                    shown = time.monotonic()
                    print(f"  {shown - started:.0f} s: not Ready yet {waiting}; RSS {operator.memory('VmRSS'):.0f} MiB")
                assert operator.running(), f"the operator exited:\n{operator.tail()}"
                peak_rss = max(peak_rss, operator.memory("VmRSS"))
                with contextlib.suppress(OSError):
                    waiting = not_ready(custom, suffix, tenants, domains)
                    if not any(waiting.values()):
                        break
                if time.monotonic() - started > args.timeout:
                    break
                time.sleep(5)  # each poll lists every resource: the API server and this process pay for it
            cold_seconds = time.monotonic() - started
            cold = Snapshot(operator, api)
        finished = not any(waiting.values())
        print(
            f"cold reconcile: {cold_seconds:.1f} s"
            + ("" if finished else f" - NOT all Ready, still waiting: {waiting} (log {operator.log_path})")
            + f"; operator CPU {cold.cpu:.1f} s"
            + f"; API server and etcd CPU {cold.control_plane_cpu - control_plane_before:.1f} s"
        )
        report_cold(cold, server_before, cold_seconds, tenants, domains, finished)
        report_isolation(api, suffix, tenants, domains)
        record(
            f"operator / API server and etcd CPU during the cold reconcile, {tenants:,} tenants x {domains} domains",
            f"{cold.cpu:.0f} s / {cold.control_plane_cpu - control_plane_before:.0f} s in {cold_seconds:.0f} s",
        )
        time.sleep(args.resync + 10 if args.settle is None else args.settle)
        before = Snapshot(operator, api)
        time.sleep(args.resync + 5)
        after = Snapshot(operator, api)
        peak_rss = max(peak_rss, operator.memory("VmHWM"))
        report_steady(before, after, tenants, domains, args.resync)
        print(f"operator RSS: peak {peak_rss:.0f} MiB, now {operator.memory('VmRSS'):.0f} MiB; log {operator.log_path}")
        scale = f"{tenants:,} tenants x {domains} domains"
        record(f"operator peak RSS, {scale}", f"{peak_rss:.0f} MiB")
    finally:
        operator.stop()


def report_cold(
    cold: Snapshot, server_before: dict[str, float], seconds: float, tenants: int, domains: int, finished: bool
) -> None:
    scale = f"{tenants:,} tenants x {domains} domains"
    per_tenant = (cold.count(WRITES, "TenantIsolation") / tenants, cold.count(READS, "TenantIsolation") / tenants)
    per_domain = (cold.count(WRITES, "SecurityDomain") / domains, cold.count(READS, "SecurityDomain") / domains)
    other = cold.total() - sum(cold.count(WRITES + READS, c) for c in ("TenantIsolation", "SecurityDomain"))
    server = {key: cold.server[key] - server_before.get(key, 0.0) for key in cold.server}
    print(
        f"  operator requests: {cold.total():.0f} ({cold.total() / seconds:.0f}/s); per tenant reconcile work "
        f"{per_tenant[0]:.1f} writes, {per_tenant[1]:.1f} reads; per domain {per_domain[0]:.1f} writes, "
        f"{per_domain[1]:.1f} reads; outside reconciles {other:.0f}; reconciles {cold.reconciles}"
    )
    print(
        f"  API server: {server['all']:.0f} requests from every client ({server['all'] / seconds:.0f}/s), "
        f"{server['429']:.0f} answered 429, APF rejected {server['apf rejected']:.0f}"
    )
    busiest = sorted(((value, key) for key, value in server.items() if " " in key and value >= tenants), reverse=True)
    print(
        "  API server requests per tenant, every client, by verb and resource: "
        + ", ".join(f"{key} {value / tenants:.1f}" for value, key in busiest)
    )
    by_verb = {f"{controller or '-'}:{verb}": value for (controller, verb), value in sorted(cold.by_controller.items())}
    print(f"  by controller:verb: {by_verb}")
    value = f"{seconds:.0f} s" + ("" if finished else " (not all Ready: stopped waiting)")
    record(f"cold reconcile until all Ready, {scale} (testenv API server)", value, "≤ 180 s at 1,000 x 200")
    record(
        f"cold writes / reads per tenant, {scale}",
        f"{per_tenant[0]:.1f} / {per_tenant[1]:.1f}",
        "≤ 50 writes, ≤ 5 reads",
    )
    record(f"operator API requests/s during the cold reconcile, {scale}", f"{cold.total() / seconds:.0f}/s")
    record(f"API server 429 answers during the cold reconcile, {scale}", f"{server['429']:.0f}")


def report_isolation(api: client.ApiClient, suffix: str, tenants: int, domains: int) -> None:
    """How long each tenant namespace lived without its domain's NetworkPolicies: from its creation to the first
    one the domain applied in it (API timestamps, one-second resolution)."""
    created = {
        ns.metadata.name: ns.metadata.creation_timestamp
        for ns in client.CoreV1Api(api).list_namespace().items
        if ns.metadata.name.startswith(f"s{suffix}-t")
    }
    first: dict[str, Any] = {}
    for policy in client.NetworkingV1Api(api).list_network_policy_for_all_namespaces().items:
        namespace, at = policy.metadata.namespace, policy.metadata.creation_timestamp
        if namespace in created and (namespace not in first or at < first[namespace]):
            first[namespace] = at
    waits = sorted((first[ns] - created[ns]).total_seconds() for ns in created if ns in first)
    if not waits:
        print("  isolation: no tenant namespace holds a domain NetworkPolicy")
        return
    quantile = lambda q: waits[min(len(waits) - 1, int(q * len(waits)))]  # noqa: E731
    print(
        f"  isolation: {len(waits)} of {len(created)} tenant namespaces hold a domain NetworkPolicy; from the "
        f"namespace's creation to its first one p50 {quantile(0.5):.0f} s, p90 {quantile(0.9):.0f} s, "
        f"max {waits[-1]:.0f} s"
    )
    record(
        f"tenant namespace unisolated after creation (p50 / p90 / max), {tenants:,} tenants x {domains} domains",
        f"{quantile(0.5):.0f} / {quantile(0.9):.0f} / {waits[-1]:.0f} s",
    )


def report_steady(before: Snapshot, after: Snapshot, tenants: int, domains: int, resync: float) -> None:
    scale = f"{tenants:,} tenants x {domains} domains"
    writes, reads = delta(after, before, WRITES), delta(after, before, READS)
    reconciles = {kind: after.reconciles.get(kind, 0) - before.reconciles.get(kind, 0) for kind in after.reconciles}
    window = after.at - before.at
    requests = after.total() - before.total()
    print(
        f"steady state over {window:.0f} s (resync {resync:.0f} s): {writes:.0f} writes, {reads:.0f} reads, "
        f"{requests / window:.1f} requests/s; reconciles {reconciles}; applies skipped "
        f"{after.skipped - before.skipped:.0f}; operator CPU {after.cpu - before.cpu:.1f} s"
    )
    changed = {
        f"{controller or '-'}:{verb}": value - before.by_controller.get((controller, verb), 0)
        for (controller, verb), value in sorted(after.by_controller.items())
        if value != before.by_controller.get((controller, verb), 0)
    }
    print(f"  steady requests by controller:verb: {changed}")
    record(f"steady-state writes per resync ({resync:.0f} s), {scale}", f"{writes:.0f}", "0")
    record(f"steady-state reads per resync, {scale}", f"{reads:.0f}")
    record(f"steady-state operator CPU per resync, {scale}", f"{after.cpu - before.cpu:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--domains", type=int, default=20)
    parser.add_argument("--resync", type=float, default=60.0, help="the operator's resync interval (the default)")
    parser.add_argument("--timeout", type=float, default=900.0, help="stop waiting for Ready after this")
    parser.add_argument(
        "--settle",
        type=float,
        help="seconds between Ready and the steady window (default: one resync and 10 s, so that every resource "
        "has had its first resync, which still records the keys its creation made, before the window)",
    )
    parser.add_argument("--profile", help="py-spy record the operator's cold reconcile into this file (raw)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the operator's environment")
    args = parser.parse_args()
    api = config.new_client_from_config(config_file=os.environ.get("KUBECONFIG") or None)
    made = prerequisites(api)
    suffix = uuid.uuid4().hex[:4]
    print(
        f"{args.tenants} TenantIsolations (3 namespaces, 5 applications) and {args.domains} SecurityDomains; s{suffix}"
    )
    try:
        run(args, api, suffix)
    finally:
        cleanup(api, suffix, made)


if __name__ == "__main__":
    main()
