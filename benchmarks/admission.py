"""Benchmark: admission decisions in-process and the webhook over HTTPS on loopback, in one run.

Prints figures (not a test):
1. in-process decision time for a ~10 KB Pod with every check on (p50, p99) and its ratio to a bare json.loads
   of the same AdmissionReview (parsing is the floor); then both again with the CPU caches evicted before each
   call, as a server's TLS and HTTP work between requests leaves them;
2. `iotsec webhook` at a fixed request rate (default 500/s for 60 s, open loop: latency counts from the
   scheduled send time), with p50/p99/max latency, errors and the server's peak RSS;
3. maximum throughput of `iotsec webhook` and of an allow-all aiohttp TLS webhook on the same core, and the ratio.

The servers run pinned to CPU 0 and the load generator to CPU 1 (taskset), so they do not share a core.
Run: .venv/bin/python benchmarks/admission.py   (BENCH_SECONDS=10 for a quick run)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from figures import record

ROOT = Path(__file__).resolve().parent.parent
RATE = int(os.environ.get("BENCH_RATE", "500"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "60"))
THROUGHPUT_SECONDS = int(os.environ.get("BENCH_THROUGHPUT_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))

ALLOW_ALL = """
import json, ssl, sys
from aiohttp import web
async def validate(request):
    review = json.loads(await request.read())
    return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                              "response": {"uid": review["request"]["uid"], "allowed": True}})
app = web.Application(client_max_size=6 * 1024 * 1024)
app.add_routes([web.post("/validate", validate), web.get("/healthz", lambda r: web.Response(text="ok"))])
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2], sys.argv[3])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), ssl_context=context, access_log=None, print=None)
"""


def pod_review() -> bytes:
    """A realistic ~10 KB AdmissionReview: a 3-container pod with init container, env, volumes, probes."""
    digest = "sha256:" + "ab" * 32

    def container(name: str) -> dict:
        return {
            "name": name,
            "image": f"registry.example.com/iot/{name}@{digest}",
            "ports": [{"containerPort": 8080, "protocol": "TCP", "name": "http"}],
            "env": [{"name": f"SETTING_{i}", "value": f"value-{i}"} for i in range(12)]
            + [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
            "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}},
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
                "runAsNonRoot": True,
            },
            "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}, {"name": "tmp", "mountPath": "/tmp"}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10},
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 5},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
        }

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "ingest-7d9f8b-x2x4z",
            "namespace": "iot-ingest",
            "labels": {
                "app.kubernetes.io/name": "ingest",
                "iotsec.io/security-level": "standard",
                "pod-template-hash": "7d9f8b",
            },
            "annotations": {f"example.com/note-{i}": "x" * 40 for i in range(20)},
        },
        "spec": {
            "serviceAccountName": "ingest",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "initContainers": [container("migrate")],
            "containers": [container("ingest"), container("sidecar"), container("exporter")],
            "volumes": [{"name": "config", "configMap": {"name": "ingest"}}, {"name": "tmp", "emptyDir": {}}],
        },
    }
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-000000000000",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "iot-ingest",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "dryRun": False,
        },
    }
    return json.dumps(review).encode()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def in_process(body: bytes, what: str) -> None:
    from iotsec.admission.snapshot import snapshot_from_objects
    from iotsec.model.manifests import load_documents
    from iotsec.servers.webhook.review import review

    snapshot = snapshot_from_objects(
        [d.obj for d in load_documents([ROOT / "examples" / "platform"])], assume_named_namespaces_exist=True
    )
    now = datetime.now(UTC)
    outcome = review(body, snapshot, lambda: now)
    assert outcome.status == 200, outcome.body
    assert outcome.body["response"]["allowed"], outcome.body
    decide_times, parse_times = [], []
    for _ in range(2000):  # warm-up
        review(body, snapshot, lambda: now)
    for _ in range(20000):
        started = time.perf_counter()
        review(body, snapshot, lambda: now)
        decide_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        json.loads(body)
        parse_times.append(time.perf_counter() - started)
    p50, p99 = percentile(decide_times, 0.5) * 1000, percentile(decide_times, 0.99) * 1000
    parse = percentile(parse_times, 0.5) * 1000
    print(
        f"[in-process] {what}, body {len(body) / 1024:.1f} KiB: decision p50 {p50:.3f} ms, p99 {p99:.3f} ms; "
        f"json.loads p50 {parse:.3f} ms; ratio {p50 / parse:.2f}x"
    )
    evicted, evicted_parse = (
        _after_eviction(lambda: review(body, snapshot, lambda: now)),
        _after_eviction(lambda: json.loads(body)),
    )
    print(
        f"[in-process] the same with the CPU caches evicted before each call (as between requests when serving): "
        f"decision p50 {evicted * 1000:.3f} ms, json.loads p50 {evicted_parse * 1000:.3f} ms; "
        f"ratio {evicted / evicted_parse:.2f}x"
    )
    size = f"{len(body) / 1024:.0f} KB {what}"
    record(f"admission decision in-process, {size}: p50 / p99", f"{p50:.3f} / {p99:.3f} ms", "≤ 0.3 / 2 ms")
    record(f"admission decision in-process, {size}: ÷ json.loads of the same bytes", f"{p50 / parse:.2f}x", "≤ 3x")


def _after_eviction(call: Callable[[], object], rounds: int = 3000) -> float:
    """Median seconds of `call` right after 8 MiB were written (more than this machine's L2 per core, 1-2 MiB):
    a hot loop keeps the checks' code and data in cache, a server's TLS and HTTP work between requests does not."""
    scratch = bytearray(8 * 2**20)
    times = []
    for _ in range(rounds):
        scratch[::64] = bytes(len(scratch) // 64)
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if shutil.which("taskset") else command


def start(command: list[str], port: int, cafile: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(pinned(0, command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    context = ssl.create_default_context(cafile=str(cafile))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=1) as raw,
                context.wrap_socket(raw, server_hostname="localhost"),
            ):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not start: {command}")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(mode: str, port: int, cafile: Path, body: bytes) -> dict:
    """Run the load generator in a child pinned to CPU 1; it prints a JSON summary."""
    command = [sys.executable, __file__, "--load", mode, str(port), str(cafile)]
    result = subprocess.run(pinned(1, command), input=body, capture_output=True, check=True)
    return json.loads(result.stdout)


async def generate(mode: str, port: int, cafile: str, body: bytes) -> dict:
    import aiohttp

    context = ssl.create_default_context(cafile=cafile)
    connector = aiohttp.TCPConnector(ssl=context, limit=64)
    url = f"https://localhost:{port}/validate"
    latencies: list[float] = []
    errors = 0

    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(scheduled: float) -> None:
            nonlocal errors
            try:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                    answer = await response.read()
                    if response.status != 200 or (b'"allowed": true' not in answer and b'"allowed":true' not in answer):
                        errors += 1
            except (TimeoutError, aiohttp.ClientError):
                errors += 1
            latencies.append(time.perf_counter() - scheduled)

        loop_start = time.perf_counter()
        if mode == "rate":
            tasks = []
            for i in range(RATE * SECONDS):
                scheduled = loop_start + i / RATE
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(scheduled)))
            await asyncio.gather(*tasks)
        else:  # closed loop, 32 in flight, for THROUGHPUT_SECONDS
            deadline = loop_start + THROUGHPUT_SECONDS

            async def worker() -> None:
                while time.perf_counter() < deadline:
                    await one(time.perf_counter())

            await asyncio.gather(*(worker() for _ in range(32)))
        elapsed = time.perf_counter() - loop_start
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies) * 1000,
    }


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = file:read("*a")
file:close()
"""


def max_throughput_wrk(port: int, folder: Path, body: bytes) -> tuple[float, int]:
    """wrk, 32 connections"""
    (folder / "body.json").write_bytes(body)
    (folder / "post.lua").write_text(WRK_SCRIPT)
    command = pinned(
        1,
        [
            "wrk",
            "-t1",
            "-c32",
            f"-d{THROUGHPUT_SECONDS}s",
            "-s",
            str(folder / "post.lua"),
            f"https://localhost:{port}/validate",
        ],
    )
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, env={**os.environ, "BENCH_BODY": str(folder / "body.json")}
    ).stdout
    rate = float(next(line.split()[1] for line in output.splitlines() if line.startswith("Requests/sec:")))
    errors = sum(
        int(line.split()[-1])
        for line in output.splitlines()
        if line.strip().startswith(("Non-2xx", "Socket errors")) and line.split()[-1].isdigit()
    )
    return rate, errors


def max_throughput_python(port: int, folder: Path, body: bytes) -> tuple[float, int]:
    """aiohttp client, 32 in flight"""
    result = load("max", port, folder / "ca.crt", body)
    return result["requests"] / result["seconds"], result["errors"]


def main() -> None:
    from webhook_throughput import deployment_review  # here: that module imports this one

    from iotsec.pki import certs

    body = pod_review()
    in_process(body, "Pod review")
    in_process(deployment_review(), "Deployment review")
    folder = Path(tempfile.mkdtemp(prefix="iotsec-bench-"))
    ca = certs.new_ca("bench", datetime.now(UTC))
    serving = certs.new_serving_cert(ca, ["localhost"], ["127.0.0.1"], datetime.now(UTC))
    (folder / "ca.crt").write_text(ca.cert_pem)
    (folder / "tls.crt").write_text(serving.cert_pem)
    (folder / "tls.key").write_text(serving.key_pem)
    iotsec_port, plain_port = free_port(), free_port()
    iotsec = start(
        [
            sys.executable,
            "-m",
            "iotsec",
            "webhook",
            "--host",
            "127.0.0.1",
            "--port",
            str(iotsec_port),
            "--tls-cert-file",
            str(folder / "tls.crt"),
            "--tls-key-file",
            str(folder / "tls.key"),
            "--context",
            str(ROOT / "examples" / "platform"),
            "--metrics-port",
            "0",
        ],
        iotsec_port,
        folder / "ca.crt",
    )
    allow_all = start(
        [sys.executable, "-c", ALLOW_ALL, str(plain_port), str(folder / "tls.crt"), str(folder / "tls.key")],
        plain_port,
        folder / "ca.crt",
    )
    try:
        fixed = load("rate", iotsec_port, folder / "ca.crt", body)
        print(
            f"[fixed rate] {RATE}/s for {SECONDS} s over HTTPS: {fixed['requests']} requests, "
            f"{fixed['errors']} errors, p50 {fixed['p50_ms']:.2f} ms, p99 {fixed['p99_ms']:.2f} ms, "
            f"max {fixed['max_ms']:.1f} ms; server peak RSS {peak_rss_mib(iotsec.pid):.0f} MiB"
        )
        record(
            f"webhook at a fixed {RATE} req/s for {SECONDS} s, evenly spaced (admission.py): p99",
            f"{fixed['p99_ms']:.1f} ms ({fixed['errors']} errors)",
            "p99 ≤ 25 ms at 1,000 req/s in bursts of 25: webhook_soak.py",
        )
        record(
            "webhook peak RSS after the fixed-rate run (admission.py)",
            f"{peak_rss_mib(iotsec.pid):.0f} MiB",
            "≤ 120 MiB",
        )
        measure = max_throughput_wrk if shutil.which("wrk") else max_throughput_python
        rounds: dict[int, list[tuple[float, int]]] = {iotsec_port: [], plain_port: []}
        for _ in range(ROUNDS):  # interleaved, so a noisy neighbour hurts both sides alike
            for port in (iotsec_port, plain_port):
                rounds[port].append(measure(port, folder, body))
        ours = statistics.median(rate for rate, _ in rounds[iotsec_port])
        theirs = statistics.median(rate for rate, _ in rounds[plain_port])
        errors = sum(e for _, e in rounds[iotsec_port])
        tool = "wrk" if measure is max_throughput_wrk else "aiohttp client"
        print(
            f"[max throughput] {tool}, 32 connections, median of {ROUNDS} interleaved {THROUGHPUT_SECONDS} s rounds: "
            f"iotsec webhook {ours:,.0f} req/s ({errors} errors), allow-all aiohttp TLS webhook {theirs:,.0f} req/s; "
            f"ratio {ours / theirs:.2f}"
        )
        record(
            f"webhook closed-loop req/s ÷ allow-all aiohttp TLS webhook, {len(body) / 1024:.0f} KB Pod review "
            f"({tool}, admission.py)",
            f"{ours / theirs:.2f} ({ours:,.0f} vs {theirs:,.0f} req/s)",
            "≥ 0.9",
        )
    finally:
        for process in (iotsec, allow_all):
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        summary = asyncio.run(generate(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.stdin.buffer.read()))
        print(json.dumps(summary))
    else:
        main()
