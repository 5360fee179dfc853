"""Benchmark: the audit chain (hash chain, a signed checkpoint and an fsync per batch, Ed25519 seals) from the
store to HTTPS and back.

Prints figures (not a test; it asserts only that every batch was stored and every chain verifies):
1. store-level sustained ingest (AuditStore.append, hashing and signing on, fsync per batch) of realistic
   audit.k8s.io/v1 events (~1.2 KB, Metadata/RequestResponse mix as the API server sends them) in batches of
   400 (the API server's --audit-webhook-batch-max-size) and 50, with 64 MiB segments (the default) and 4 MiB
   (many seals): events/s, MB/s, batches/s, per-batch latency p50/p99/max, seals and the latency of the batches
   that sealed. Event generation is excluded: the time is the time spent inside append (canonical JSON,
   SHA-256, the batch's Ed25519 checkpoint, write, fsync, and the seal when a segment fills: the segment is
   read back once to check it holds what the store wrote); B/record includes the checkpoint lines;
2. end to end over real HTTPS: the sink (`serve`) in a thread with the anomaly rules of
   examples/platform/40-audit.yaml, bearer-token auth, and http.client keep-alive connections posting EventList
   batches from 1 and from 4 concurrent connections: events/s and per-batch latency p50/p99 (client side);
3. verify(): records/s and MB/s over every store written above, every checkpoint and seal checked (segments
   still in the page cache: CPU-bound);
4. peak RSS of the process (client, server and stores all live in it).

Run: .venv/bin/python benchmarks/audit_chain.py [--events 200000] [--batch 400 50] [--segment-mib 64 4]
     [--http-events N]   (--events 20000 for a quick run; TMPDIR picks the disk measured)
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import math
import os
import platform
import random
import resource
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from figures import record

from iotsec.api.quantities import quantity_bytes
from iotsec.api.validation import parse_resource
from iotsec.audittrail import chain
from iotsec.audittrail.anomaly import AnomalyDetector
from iotsec.audittrail.store import AuditStore
from iotsec.audittrail.verify import verify
from iotsec.pki import certs
from iotsec.pki.tls import ReloadingTLS
from iotsec.servers.auditsink.server import Authentication, Sink, serve

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "platform" / "40-audit.yaml"
LIMIT = 2**40  # the disk, not the configured limit, is what may stop the benchmark
TOKEN = "bench-" + uuid.uuid4().hex
EVENT_RATE = 4000  # simulated events per second of cluster time: the event timestamps advance at this pace
START = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
THROTTLE_QPS = 10  # kube-apiserver --audit-webhook-batch-throttle-qps default


# ---------------------------------------------------------------------------------------------- events


NODES = [f"iot-edge-{n:02d}" for n in range(16)]
CONTROLLERS = [
    "endpointslice-controller",
    "replicaset-controller",
    "deployment-controller",
    "generic-garbage-collector",
    "namespace-controller",
    "daemon-set-controller",
]
APPS = [(f"tenant-{t}", f"ingest-{a}") for t in range(6) for a in range(4)]
IOTSEC_KINDS = ["securitydomains", "tenantisolations", "deviceidentities", "auditpolicies", "backuppolicies"]


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _service_account(rng: random.Random, namespace: str, name: str) -> dict[str, Any]:
    node = rng.choice(NODES)
    return {
        "username": f"system:serviceaccount:{namespace}:{name}",
        "uid": _uid(rng),
        "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
        "extra": {
            "authentication.kubernetes.io/credential-id": [f"JTI={_uid(rng)}"],
            "authentication.kubernetes.io/node-name": [node],
            "authentication.kubernetes.io/node-uid": [_uid(rng)],
            "authentication.kubernetes.io/pod-name": [f"{name}-{rng.getrandbits(40):010x}"],
            "authentication.kubernetes.io/pod-uid": [_uid(rng)],
        },
    }


def _node(node: str) -> dict[str, Any]:
    return {"username": f"system:node:{node}", "groups": ["system:nodes", "system:authenticated"]}


def _person(name: str, groups: list[str]) -> dict[str, Any]:
    return {"username": f"{name}@example.com", "groups": [*groups, "system:authenticated"]}


def _rbac(binding: str, role: str, subject: str) -> dict[str, str]:
    return {
        "authorization.k8s.io/decision": "allow",
        "authorization.k8s.io/reason": f'RBAC: allowed by ClusterRoleBinding "{binding}" of ClusterRole "{role}" '
        f"to {subject}",
    }


def _event(
    verb: str,
    uri: str,
    user: dict[str, Any],
    ip: str,
    agent: str,
    ref: dict[str, Any],
    code: int = 200,
    *,
    level: str = "Metadata",
    stage: str = "ResponseComplete",
    annotations: dict[str, str] | None = None,
    request: Any = None,
    response: Any = None,
    failure: tuple[str, str] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"metadata": {}, "code": code}
    if failure:
        status.update(status="Failure", reason=failure[0], message=failure[1])
    event: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": level,
        "auditID": "",
        "stage": stage,
        "requestURI": uri,
        "verb": verb,
        "user": user,
        "sourceIPs": [ip],
        "userAgent": agent,
        "objectRef": ref,
        "responseStatus": status,
    }
    if request is not None:
        event["requestObject"] = request
    if response is not None:
        event["responseObject"] = response
    event["requestReceivedTimestamp"] = ""
    event["stageTimestamp"] = ""
    if annotations:
        event["annotations"] = annotations
    return event


def _lease(rng: random.Random) -> dict[str, Any]:
    node = rng.choice(NODES)
    return _event(
        "update",
        f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}?timeout=10s",
        _node(node),
        f"10.20.0.{NODES.index(node) + 10}",
        "kubelet/v1.30.4 (linux/arm64) kubernetes/a51b3b7",
        {
            "resource": "leases",
            "namespace": "kube-node-lease",
            "name": node,
            "uid": _uid(rng),
            "apiGroup": "coordination.k8s.io",
            "apiVersion": "v1",
            "resourceVersion": str(rng.randint(10**6, 10**7)),
        },
        annotations={"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""},
    )


def _controller(rng: random.Random, watch: bool = False) -> dict[str, Any]:
    name = rng.choice(CONTROLLERS)
    namespace, app = rng.choice(APPS)
    resource_, group = rng.choice([("pods", ""), ("replicasets", "apps"), ("endpointslices", "discovery.k8s.io")])
    prefix = f"/apis/{group}/v1" if group else "/api/v1"
    verb = "watch" if watch else rng.choice(["get", "list", "update", "patch"])
    suffix = "?allowWatchBookmarks=true&resourceVersion=8812345&watch=true" if watch else f"/{app}"
    ref = {"resource": resource_, "namespace": namespace, "apiVersion": "v1"}
    if group:
        ref["apiGroup"] = group
    if not watch:
        ref["name"] = app
    return _event(
        verb,
        f"{prefix}/namespaces/{namespace}/{resource_}{suffix}",
        _service_account(rng, "kube-system", name),
        "10.20.0.2",
        f"kube-controller-manager/v1.30.4 (linux/amd64) kubernetes/a51b3b7/system:serviceaccount:kube-system:{name}",
        ref,
        stage="ResponseStarted" if watch else "ResponseComplete",
        annotations=_rbac(
            f"system:controller:{name}", f"system:controller:{name}", f'ServiceAccount "{name}/kube-system"'
        ),
    )


def _kubelet(rng: random.Random) -> dict[str, Any]:
    node = rng.choice(NODES)
    namespace, app = rng.choice(APPS)
    resource_ = rng.choice(["configmaps", "secrets", "pods"])
    verb = "patch" if resource_ == "pods" else "get"
    path = f"/api/v1/namespaces/{namespace}/{resource_}/{app}" + ("/status" if verb == "patch" else "")
    ref = {"resource": resource_, "namespace": namespace, "name": app, "apiVersion": "v1"}
    if verb == "patch":
        ref["subresource"] = "status"
    return _event(
        verb,
        path,
        _node(node),
        f"10.20.0.{NODES.index(node) + 10}",
        "kubelet/v1.30.4 (linux/arm64) kubernetes/a51b3b7",
        ref,
        annotations={"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""},
    )


def _operator(rng: random.Random) -> dict[str, Any]:
    """The iotsec operator patching status of its own resources: RequestResponse per 40-audit.yaml."""
    kind = rng.choice(IOTSEC_KINDS)
    name = f"{kind[:-1]}-{rng.randint(1, 40)}"
    conditions = [
        {
            "type": condition,
            "status": "True",
            "reason": "Reconciled",
            "message": f"{condition} as of generation {rng.randint(1, 50)}: all owned objects match the spec",
            "lastTransitionTime": "2026-11-28T00:59:12Z",
            "observedGeneration": rng.randint(1, 50),
        }
        for condition in ("Ready", "Applied", "Compliant")
    ]
    request = {"status": {"observedGeneration": rng.randint(1, 50), "conditions": conditions}}
    return _event(
        "patch",
        f"/apis/iotsec.io/v1alpha1/{kind}/{name}/status",
        _service_account(rng, "iotsec-system", "iotsec-operator"),
        "10.20.1.17",
        "kopf/1.37.2",
        {"resource": kind, "name": name, "apiGroup": "iotsec.io", "apiVersion": "v1alpha1", "subresource": "status"},
        level="RequestResponse",
        annotations=_rbac("iotsec-operator", "iotsec-operator", 'ServiceAccount "iotsec-operator/iotsec-system"'),
        request=request,
        response={
            "apiVersion": "iotsec.io/v1alpha1",
            "kind": kind.title().rstrip("s"),
            "metadata": {"name": name, "uid": _uid(rng), "resourceVersion": str(rng.randint(10**6, 10**7))},
            **request,
        },
    )


def _admin(rng: random.Random) -> dict[str, Any]:
    namespace, app = rng.choice(APPS)
    user = _person(rng.choice(["alice", "bob"]), ["platform:sre"])
    if rng.random() < 0.25:
        data = {f"setting-{n}": f"value-{rng.getrandbits(32):08x}" for n in range(6)}
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{app}-cfg"}, "data": data}
        return _event(
            "create",
            f"/api/v1/namespaces/{namespace}/configmaps?fieldManager=kubectl-client-side-apply",
            user,
            "192.0.2.44",
            "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
            {"resource": "configmaps", "namespace": namespace, "name": f"{app}-cfg", "apiVersion": "v1"},
            201,
            level="RequestResponse",
            annotations=_rbac("platform-sre", "cluster-admin", 'Group "platform:sre"'),
            request=body,
        )
    return _event(
        rng.choice(["get", "list"]),
        f"/apis/apps/v1/namespaces/{namespace}/deployments/{app}",
        user,
        "192.0.2.44",
        "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
        {"resource": "deployments", "namespace": namespace, "name": app, "apiGroup": "apps", "apiVersion": "v1"},
        annotations=_rbac("platform-sre", "cluster-admin", 'Group "platform:sre"'),
    )


def _app_secret(rng: random.Random) -> dict[str, Any]:
    namespace, app = rng.choice(APPS)
    return _event(
        "get",
        f"/api/v1/namespaces/{namespace}/secrets/{app}-mqtt",
        _service_account(rng, namespace, app),
        f"10.42.{rng.randint(0, 15)}.{rng.randint(2, 250)}",
        "ingest/2.4.1 (linux/arm64)",
        {"resource": "secrets", "namespace": namespace, "name": f"{app}-mqtt", "apiVersion": "v1"},
        annotations={
            "authorization.k8s.io/decision": "allow",
            "authorization.k8s.io/reason": f'RBAC: allowed by RoleBinding "{app}/{namespace}" of Role "{app}" '
            f'to ServiceAccount "{app}/{namespace}"',
        },
    )


def _unauthorized(rng: random.Random) -> dict[str, Any]:
    return _event(
        "get",
        "/api/v1/namespaces/kube-system/secrets",
        {"username": "system:anonymous", "groups": ["system:unauthenticated"]},
        f"203.0.113.{rng.randint(1, 254)}",
        "python-requests/2.31.0",
        {"resource": "secrets", "namespace": "kube-system", "apiVersion": "v1"},
        401,
        failure=("Unauthorized", "Unauthorized"),
    )


def _forbidden(rng: random.Random) -> dict[str, Any]:
    namespace, _ = rng.choice(APPS)
    return _event(
        "list",
        f"/api/v1/namespaces/{namespace}/secrets",
        _person("dave", ["developers"]),
        "192.0.2.81",
        "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
        {"resource": "secrets", "namespace": namespace, "apiVersion": "v1"},
        403,
        annotations={"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": ""},
        failure=(
            "Forbidden",
            f'secrets is forbidden: User "dave@example.com" cannot list resource "secrets" in '
            f'API group "" in the namespace "{namespace}"',
        ),
    )


def _exec(rng: random.Random) -> dict[str, Any]:
    namespace, app = rng.choice(APPS)
    pod = f"{app}-{rng.getrandbits(24):06x}"
    return _event(
        "create",
        f"/api/v1/namespaces/{namespace}/pods/{pod}/exec?command=sh&container=main&stdin=true&tty=true",
        _person("dave", ["developers"]),
        "192.0.2.81",
        "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
        {"resource": "pods", "namespace": namespace, "name": pod, "apiVersion": "v1", "subresource": "exec"},
        101,
        annotations=_rbac("developers-exec", "exec", 'Group "developers"'),
    )


def _denied(rng: random.Random) -> dict[str, Any]:
    namespace, app = rng.choice(APPS)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": f"{app}-", "namespace": namespace, "labels": {"app": app}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": f"registry.example.com/iot/{app}:latest",
                    "securityContext": {"privileged": True},
                    "env": [{"name": f"SETTING_{n}", "value": f"value-{n}"} for n in range(6)],
                }
            ],
            "hostNetwork": True,
        },
    }
    return _event(
        "create",
        f"/api/v1/namespaces/{namespace}/pods",
        _service_account(rng, "kube-system", "replicaset-controller"),
        "10.20.0.2",
        "kube-controller-manager/v1.30.4 (linux/amd64) kubernetes/a51b3b7",
        {"resource": "pods", "namespace": namespace, "apiVersion": "v1"},
        403,
        level="RequestResponse",
        annotations={
            "authorization.k8s.io/decision": "allow",
            "authorization.k8s.io/reason": "",
            "pods.validate.iotsec.io/violations": "privileged container main; hostNetwork; image tag latest",
        },
        request=pod,
        failure=("Forbidden", 'admission webhook "pods.validate.iotsec.io" denied the request: 3 violations'),
    )


# (builder, weight): mostly node and controller chatter at Metadata, some RequestResponse, rare failures.
MIX = [
    (_lease, 30),
    (_controller, 25),
    (lambda rng: _controller(rng, watch=True), 4),
    (_kubelet, 16),
    (_operator, 6),
    (_admin, 7),
    (_app_secret, 4),
    (_unauthorized, 0.8),
    (_forbidden, 0.6),
    (_exec, 0.2),
    (_denied, 0.4),
]


class EventSource:
    """Events drawn from a pool of templates, each with a fresh auditID and timestamps advancing at EVENT_RATE."""

    def __init__(self, seed: int = 1369, pool: int = 4000) -> None:
        rng = random.Random(seed)
        builders, weights = zip(*MIX, strict=True)
        self.templates = [builder(rng) for builder in rng.choices(builders, weights, k=pool)]
        self.rng = rng
        self.count = 0

    def batch(self, size: int) -> list[dict[str, Any]]:
        events = []
        for template in self.rng.choices(self.templates, k=size):
            event = dict(template)
            micros = self.count * 1_000_000 // EVENT_RATE
            received = START + timedelta(microseconds=micros)
            event["auditID"] = str(uuid.uuid4())
            event["requestReceivedTimestamp"] = received.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            event["stageTimestamp"] = (received + timedelta(microseconds=1800)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            events.append(event)
            self.count += 1
        return events


def event_list(events: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": events}, separators=(",", ":")
    ).encode()


# ---------------------------------------------------------------------------------------------- figures


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def segment_bytes_on_disk(root: Path) -> int:
    return sum(path.stat().st_size for path in chain.segment_files(root))


@dataclass
class Ingest:
    label: str
    root: Path
    events: int
    batches: int
    seconds: float
    stored_bytes: int
    seals: int
    latencies: list[float]
    sealing: list[float]


def store_ingest(root: Path, key: Ed25519PrivateKey, events: int, batch: int, segment_mib: int) -> Ingest:
    source = EventSource()
    store = AuditStore(root, key, limit_bytes=LIMIT, segment_bytes=segment_mib * 2**20)
    before = store.bytes_used
    latencies: list[float] = []
    sealing: list[float] = []  # batches that filled a segment and sealed it (read back, digest, sign)
    remaining = events
    while remaining:
        items = source.batch(min(batch, remaining))
        sealed = store.last_sealed
        started = time.perf_counter()
        store.append(items)
        latencies.append(time.perf_counter() - started)
        if store.last_sealed is not sealed:
            sealing.append(latencies[-1])
        remaining -= len(items)
    seals = len(sealing)
    store.seal()  # the last, partly filled segment: not counted, not timed
    label = f"batch {batch:>3}, segments {segment_mib:>2} MiB"
    stored = store.bytes_used - before
    return Ingest(label, root, events, len(latencies), sum(latencies), stored, seals, latencies, sealing)


# ---------------------------------------------------------------------------------------------- HTTPS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningSink:
    """`serve` on its own event loop in a thread, as `iotsec audit serve` runs it, with the policy's rules."""

    def __init__(self, folder: Path, key: Ed25519PrivateKey) -> None:
        spec = parse_resource(yaml.safe_load(POLICY.read_text())).spec
        self.rules = spec.anomaly_rules or []
        now = datetime.now(UTC)
        ca = certs.new_ca("bench-sink-ca", now)
        serving = certs.new_serving_cert(ca, ["localhost"], ["127.0.0.1"], now)
        for name, text in {"ca.crt": ca.cert_pem, "tls.crt": serving.cert_pem, "tls.key": serving.key_pem}.items():
            (folder / name).write_text(text)
        self.folder, self.port = folder, free_port()
        storage = spec.sink.storage
        self.segment_bytes = quantity_bytes(storage.segment_size)
        self.store = AuditStore(folder / "store", key, limit_bytes=LIMIT, segment_bytes=self.segment_bytes)
        self.hits: list[Any] = []
        self.sink = Sink(
            self.store,
            AnomalyDetector(self.rules, spec.trusted_admin_groups),
            warn_at_percent=storage.warn_at_percent,
            on_hits=self.hits.extend,
        )
        self.tls = ReloadingTLS(folder / "tls.crt", folder / "tls.key")
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        auth = Authentication("bearerToken", TOKEN)
        self.loop.run_until_complete(
            serve(self.sink, auth, host="127.0.0.1", port=self.port, tls=self.tls, stop=self.stop)
        )

    def connect(self) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=str(self.folder / "ca.crt"))
        return http.client.HTTPSConnection("localhost", self.port, context=context, timeout=60)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                connection = self.connect()
                connection.request("GET", "/healthz")
                connection.getresponse().read()
                connection.close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("the sink did not start")

    def close(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop.set)
            self.thread.join(timeout=30)


def post_batches(running: RunningSink, bodies: list[bytes], connections: int) -> tuple[float, list[float]]:
    """(wall seconds, per-batch latencies) of posting every body over `connections` keep-alive connections."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    gate = threading.Barrier(connections + 1)
    latencies: list[list[float]] = [[] for _ in range(connections)]
    failures: list[str] = []

    def client(index: int) -> None:
        connection = running.connect()
        connection.request("GET", "/healthz")  # TLS handshake and keep-alive before the clock starts
        connection.getresponse().read()
        gate.wait()
        for body in bodies[index::connections]:
            started = time.perf_counter()
            connection.request("POST", "/audit", body, headers)
            response = connection.getresponse()
            answer = response.read()
            latencies[index].append(time.perf_counter() - started)
            if response.status != 200:
                failures.append(f"{response.status} {answer[:200]!r}")
        connection.close()

    threads = [threading.Thread(target=client, args=(index,)) for index in range(connections)]
    for thread in threads:
        thread.start()
    gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} batches failed, first: {failures[0]}")
    return seconds, [value for values in latencies for value in values]


# ---------------------------------------------------------------------------------------------- main


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per store-level run (default 200000)")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[400, 50], help="batch sizes; the first is used over HTTPS too"
    )
    parser.add_argument("--segment-mib", type=int, nargs="+", default=[64, 4], help="segment sizes in MiB")
    parser.add_argument("--http-events", type=int, help="events per HTTPS run (default: 40%% of --events)")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    http_events = args.http_events or max(args.batch[0], args.events * 2 // 5)
    logging.getLogger("iotsec.audittrail").setLevel(logging.ERROR)  # anomaly hits are counted, not logged
    work = Path(tempfile.mkdtemp(prefix="iotsec-bench-audit-"))
    key = Ed25519PrivateKey.generate()
    header(work)
    started = time.perf_counter()
    try:
        verified = store_phase(work, key, args.events, args.batch, args.segment_mib)
        sink_store, held = https_phase(work / "sink", key, http_events, args.batch[0])
        verified.append(sink_store)
        print("\n3. verify() over the stores above (every record hashed and linked, every seal; files in page cache)")
        print(f"{'store':<28} {'records':>9} {'MB':>7} {'seconds':>8} {'records/s':>10} {'MB/s':>6}")
        for label, records, size, seconds in verified:
            print(
                f"{label:<28} {records:>9,} {size / 1e6:>7.1f} {seconds:>8.2f} "
                f"{records / seconds:>10,.0f} {size / 1e6 / seconds:>6.1f}"
            )
        print(
            f"\n4. peak RSS {peak_rss_mib():,.0f} MiB: client, sink and stores share the process; "
            f"the client held {held:,.0f} MiB of pre-encoded request bodies"
        )
        print(f"   total {time.perf_counter() - started:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def header(work: Path) -> None:
    sample = EventSource().batch(2000)
    sizes = [len(json.dumps(event, separators=(",", ":"))) for event in sample]
    detailed = sum(event["level"] == "RequestResponse" for event in sample) / len(sample)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"audit chain benchmark: {os.cpu_count()} CPUs ({usable} usable), {platform.python_implementation()} "
        f"{platform.python_version()} on {platform.machine()}, temp folder {work.parent}"
    )
    print(
        f"events: mean {sum(sizes) / len(sizes):,.0f} B (p50 {percentile(sizes, 50):,.0f} B, "
        f"max {max(sizes):,} B), {detailed:.0%} RequestResponse, the rest Metadata"
    )


Verified = tuple[str, int, int, float]


def store_phase(
    work: Path, key: Ed25519PrivateKey, events: int, batches: list[int], segments: list[int]
) -> list[Verified]:
    print(f"\n1. store ingest (AuditStore.append, hashing and signing on), {events:,} events per run")
    print("   time inside append only; MB/s = record bytes written; latency per batch includes its fsync;")
    print("   seal ms = mean latency of the batches that filled a segment and sealed it")
    print(
        f"{'run':<28} {'events/s':>9} {'MB/s':>6} {'batches/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'seals':>5} {'seal ms':>7} {'B/record':>8}"
    )
    verified = []
    for batch in batches:
        for segment_mib in segments:
            run = store_ingest(work / f"store-{batch}-{segment_mib}", key, events, batch, segment_mib)
            lat, seconds = run.latencies, run.seconds
            seal = f"{sum(run.sealing) / len(run.sealing) * 1e3:>7.1f}" if run.sealing else f"{'-':>7}"
            print(
                f"{run.label:<28} {run.events / seconds:>9,.0f} {run.stored_bytes / 1e6 / seconds:>6.1f} "
                f"{run.batches / seconds:>9,.0f} {percentile(lat, 50) * 1e3:>7.2f} {percentile(lat, 99) * 1e3:>7.2f} "
                f"{max(lat) * 1e3:>7.2f} {run.seals:>5} {seal} {run.stored_bytes / run.events:>8,.0f}"
            )
            record(f"audit store ingest, {run.label}", f"{run.events / seconds:,.0f} events/s")
            verified.append(check(run.label, run.root, key, run.events))
            shutil.rmtree(run.root)
    print(f"   peak RSS after the store runs: {peak_rss_mib():,.0f} MiB")
    return verified


def https_phase(folder: Path, key: Ed25519PrivateKey, events: int, batch: int) -> tuple[Verified, float]:
    folder.mkdir()
    running = RunningSink(folder, key)
    rules = ", ".join(f"{rule.name} ({rule.type})" for rule in running.rules)
    print(
        f"\n2. HTTPS end to end: `serve` in a thread, bearer token, {running.segment_bytes // 2**20} MiB segments; "
        f"EventList batches of {batch}, {events:,} events per run"
    )
    print(f"   anomaly rules of {POLICY.name}: {rules}")
    print("   latency per batch: POST sent to answer read, on keep-alive connections")
    print(f"{'connections':<12} {'events/s':>9} {'batches/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'MB/s':>6}")
    source = EventSource(seed=9631)
    held = 0.0
    try:
        running.start()
        for connections in (1, 4):
            sizes = [min(batch, events - start) for start in range(0, events, batch)]
            bodies = [event_list(source.batch(size)) for size in sizes]  # encoded before the clock starts
            seconds, lat = post_batches(running, bodies, connections)
            print(
                f"{connections:<12} {events / seconds:>9,.0f} {len(bodies) / seconds:>9,.1f} "
                f"{percentile(lat, 50) * 1e3:>7.2f} {percentile(lat, 99) * 1e3:>7.2f} {max(lat) * 1e3:>7.2f} "
                f"{sum(map(len, bodies)) / 1e6 / seconds:>6.1f}"
            )
            record(f"audit sink over HTTPS, {connections} connection(s)", f"{events / seconds:,.0f} events/s")
            held = max(held, sum(map(len, bodies)) / 2**20)
            del bodies
    finally:
        running.close()
    hits = sorted({hit.rule for hit in running.hits})
    print(
        f"   stored {running.store.records:,} records; {len(running.hits):,} anomaly hits ({', '.join(hits) or 'none'})"
    )
    print(
        f"   for scale: the API server's webhook sends at most {THROTTLE_QPS} batches/s by default "
        f"(--audit-webhook-batch-throttle-qps) = {THROTTLE_QPS * batch:,} events/s"
    )
    running.store.seal()
    return check("HTTPS sink store", running.store.root, key, 2 * events), held


def check(label: str, root: Path, key: Ed25519PrivateKey, records: int) -> Verified:
    size = segment_bytes_on_disk(root)
    started = time.perf_counter()
    report = verify(root, key.public_key())
    seconds = time.perf_counter() - started
    if not report.ok or report.records != records or report.sealed != report.segments:
        raise SystemExit(f"{label}: verify failed: {report.as_dict()}")
    return label, report.records, size, seconds


if __name__ == "__main__":
    main()
