"""Benchmark: closed-loop throughput of `iotsec webhook` against an allow-all aiohttp TLS webhook (issue 18).

Both servers run as their own process pinned to CPU 0 (os.sched_setaffinity), the load generator pinned to CPU 1:
`wrk -t1 -c32` when installed (apt-get install wrk), otherwise an aiohttp client with 32 keep-alive TLS
connections. Each request posts the same ~11 KB AdmissionReview of a conforming Deployment (the example
telemetry-ingest, with the metadata the API server sends: managedFields, kubectl's last-applied annotation, status),
which `iotsec webhook` judges against the example platform (its SecurityDomains and namespaces) and allows.
A third server splits the gap: iotsec's own serving stack (the bounded TLS server, the handler, the metrics) with
the review replaced by the allow-all server's (json.loads, allow), so its ratio to the allow-all server is what
serving costs, and the rest of the gap is what judging costs.
Rounds alternate between the two servers so that a noisy neighbour hurts both alike. Prints per round and the
median: req/s of each, their ratio, p50/p99 latency, the server's CPU time per request (from /proc: on a shared
machine req/s swings with the neighbours' load, CPU per request much less) and its ratio, and the servers' RSS (now
and peak). Asserts nothing.

Run: .venv/bin/python benchmarks/webhook_throughput.py [--seconds 10] [--rounds 5] [--python]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from admission import ALLOW_ALL, free_port  # the sibling benchmark's allow-all server, not a copy of it
from figures import record

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU, LOAD_CPU = 0, 1
CONNECTIONS = 32


def deployment_review() -> bytes:
    """The example telemetry-ingest Deployment as the API server sends it on CREATE (about 11 KB)."""
    documents = yaml.safe_load_all((ROOT / "examples/workloads/conforming/telemetry-ingest.yaml").read_text())
    deployment = next(d for d in documents if d and d.get("kind") == "Deployment")
    applied = json.dumps(deployment, separators=(",", ":"))
    meta = deployment["metadata"]
    meta.update(
        uid="5f0c7c1e-4d1a-4a8e-9d7e-2f1f1f6a0b11",
        resourceVersion="184467",
        generation=1,
        creationTimestamp="2026-12-03T10:00:00Z",
        annotations={"kubectl.kubernetes.io/last-applied-configuration": applied + "\n"},
        managedFields=[
            {
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "apiVersion": "apps/v1",
                "time": "2026-12-03T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": _fields_of(copy.deepcopy(deployment["spec"])),
            }
        ],
    )
    spec = deployment["spec"]
    spec.update(
        progressDeadlineSeconds=600,
        revisionHistoryLimit=10,
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
    )
    pod = spec["template"]["spec"]
    pod.update(dnsPolicy="ClusterFirst", restartPolicy="Always", schedulerName="default-scheduler")
    pod["terminationGracePeriodSeconds"] = 30
    for container in (*pod.get("initContainers", []), *pod["containers"]):
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
    deployment["status"] = {}
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b4c3a2e-7f6d-4e5c-8b9a-1d2e3f4a5b6c",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": meta["name"],
            "namespace": meta["namespace"],
            "operation": "CREATE",
            "userInfo": {
                "username": "kubernetes-admin",
                "groups": ["system:masters", "system:authenticated"],
            },
            "object": deployment,
            "oldObject": None,
            "dryRun": False,
            "options": {
                "kind": "CreateOptions",
                "apiVersion": "meta.k8s.io/v1",
                "fieldManager": "kubectl-client-side-apply",
            },
        },
    }
    return json.dumps(review).encode()


def _fields_of(value: Any) -> Any:
    """A managedFields-like shape of `value`: every key as "f:key", leaves as {}."""
    if isinstance(value, dict):
        return {f"f:{key}": _fields_of(item) for key, item in value.items()}
    if isinstance(value, list):
        return {
            f'k:{{"name":"{item.get("name", i)}"}}': _fields_of(item)
            for i, item in enumerate(value)
            if isinstance(item, dict)
        }
    return {}


def pin_to(cpu: int) -> Callable[[], None]:
    def pin() -> None:
        if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {cpu})

    return pin


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int

    def rss_mib(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) in MiB."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def cpu_seconds(self) -> float:
        """User and system CPU the server has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start(name: str, command: list[str], port: int, cafile: Path) -> Server:
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin_to(SERVER_CPU), cwd=ROOT
    )
    context = ssl.create_default_context(cafile=str(cafile))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=1) as raw,
                context.wrap_socket(raw, server_hostname="localhost"),
            ):
                return Server(name, process, port)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{name} did not start: {command}")


STACK_ALLOW_ALL = """
import asyncio, json, sys
from pathlib import Path
from iotsec.pki.tls import ReloadingTLS
from iotsec.servers.webhook import server
from iotsec.servers.webhook.review import ReviewResult

def allow_all(body, snapshot, now):  # the allow-all server's work, in iotsec's serving stack
    review = json.loads(body)
    answer = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "response": {"uid": review["request"]["uid"], "allowed": True}}
    return ReviewResult(200, answer, verdict="allowed")

server.review = allow_all
tls = ReloadingTLS(Path(sys.argv[2]), Path(sys.argv[3]))
asyncio.run(server.serve(server.StaticSnapshot(None), "127.0.0.1", int(sys.argv[1]), tls))
"""


def iotsec_command(port: int, folder: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "iotsec",
        "webhook",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--tls-cert-file",
        str(folder / "tls.crt"),
        "--tls-key-file",
        str(folder / "tls.key"),
        "--context",
        str(ROOT / "examples" / "platform"),
        "--metrics-port",
        "0",
    ]


@dataclass
class Round:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_us: float = 0.0  # the server's CPU time per request: steadier than req/s on a shared machine


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = file:read("*a")
file:close()
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"p50_us\\": %d, \\"p99_us\\": %d, \\"non2xx\\": %d, \\"errors\\": %d}\\n",
    latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def measure_wrk(port: int, folder: Path, seconds: int) -> Round:
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(folder / "post.lua")]
    output = subprocess.run(
        [*command, f"https://localhost:{port}/validate"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BENCH_BODY": str(folder / "body.json")},
        preexec_fn=pin_to(LOAD_CPU),
    ).stdout
    rate = float(next(line.split()[1] for line in output.splitlines() if line.startswith("Requests/sec:")))
    summary = json.loads(next(line[5:] for line in output.splitlines() if line.startswith("JSON ")))
    requests = int(next(line.split()[0] for line in output.splitlines() if " requests in " in line))
    errors = summary["non2xx"] + summary["errors"]
    return Round(rate, summary["p50_us"] / 1000, summary["p99_us"] / 1000, errors, requests)


def measure_python(port: int, folder: Path, seconds: int) -> Round:
    command = [sys.executable, __file__, "--load", str(port), str(folder / "ca.crt"), str(seconds)]
    result = subprocess.run(
        command, input=(folder / "body.json").read_bytes(), capture_output=True, check=True, preexec_fn=pin_to(LOAD_CPU)
    )
    summary = json.loads(result.stdout)
    return Round(summary["rate"], summary["p50_ms"], summary["p99_ms"], summary["errors"], summary["requests"])


async def closed_loop(port: int, cafile: str, seconds: int, body: bytes) -> dict[str, float]:
    import aiohttp

    connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=cafile), limit=CONNECTIONS)
    url = f"https://localhost:{port}/validate"
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as answer:
                        await answer.read()
                        errors += answer.status != 200
                except (TimeoutError, aiohttp.ClientError):
                    errors += 1
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "rate": len(latencies) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
        "errors": errors,
        "requests": len(latencies),
    }


def check_answers(servers: list[Server], cafile: Path, body: bytes) -> None:
    """Both servers allow the review (otherwise the comparison is of different work)."""
    context = ssl.create_default_context(cafile=str(cafile))
    for server in servers:
        with (
            socket.create_connection(("127.0.0.1", server.port)) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(
                b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
        payload = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        if not payload["response"]["allowed"]:
            raise RuntimeError(f"{server.name} does not allow the benchmark's review: {payload}")


def main() -> None:
    from iotsec.pki import certs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--python", action="store_true", help="use the aiohttp load generator even if wrk is there")
    args = parser.parse_args()
    body = deployment_review()
    folder = Path(tempfile.mkdtemp(prefix="iotsec-throughput-"))
    ca = certs.new_ca("bench", datetime.now(UTC))
    serving = certs.new_serving_cert(ca, ["localhost"], ["127.0.0.1"], datetime.now(UTC))
    (folder / "ca.crt").write_text(ca.cert_pem)
    (folder / "tls.crt").write_text(serving.cert_pem)
    (folder / "tls.key").write_text(serving.key_pem)
    (folder / "body.json").write_bytes(body)
    (folder / "post.lua").write_text(WRK_SCRIPT)
    measure = measure_python if args.python or not shutil.which("wrk") else measure_wrk
    tool = "aiohttp client" if measure is measure_python else "wrk -t1"
    ours_port, theirs_port, stack_port = free_port(), free_port(), free_port()
    ours = start("iotsec webhook", iotsec_command(ours_port, folder), ours_port, folder / "ca.crt")
    theirs = start(
        "allow-all",
        [sys.executable, "-c", ALLOW_ALL, str(theirs_port), str(folder / "tls.crt"), str(folder / "tls.key")],
        theirs_port,
        folder / "ca.crt",
    )
    print(
        f"body {len(body) / 1024:.1f} KiB Deployment review; {tool}, {CONNECTIONS} keep-alive TLS connections, "
        f"{args.rounds} alternated rounds of {args.seconds} s; servers on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}"
    )
    stack = start(
        "iotsec stack",
        [sys.executable, "-c", STACK_ALLOW_ALL, str(stack_port), str(folder / "tls.crt"), str(folder / "tls.key")],
        stack_port,
        folder / "ca.crt",
    )
    servers = (ours, theirs, stack)
    results: dict[str, list[Round]] = {server.name: [] for server in servers}
    try:
        check_answers(list(servers), folder / "ca.crt", body)
        for index in range(args.rounds):
            order = servers if index % 2 == 0 else servers[::-1]
            for server in order:
                cpu = server.cpu_seconds()
                result = measure(server.port, folder, args.seconds)
                result.cpu_us = (server.cpu_seconds() - cpu) / max(result.requests, 1) * 1e6
                results[server.name].append(result)
                print(
                    f"  round {index + 1} {server.name:>14}: {result.rate:8,.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
                    f"p99 {result.p99_ms:6.2f} ms  CPU {result.cpu_us:4.0f} us/request  errors {result.errors}"
                )
            ratio = results[ours.name][-1].rate / results[theirs.name][-1].rate
            print(f"  round {index + 1} ratio {ratio:.2f}")
        for server in servers:
            rounds = results[server.name]
            rss, peak = server.rss_mib()
            print(
                f"{server.name:>14}: median {statistics.median(r.rate for r in rounds):8,.0f} req/s  "
                f"p50 {statistics.median(r.p50_ms for r in rounds):6.2f} ms  "
                f"p99 {statistics.median(r.p99_ms for r in rounds):6.2f} ms  "
                f"CPU {statistics.median(r.cpu_us for r in rounds):4.0f} us/request  "
                f"errors {sum(r.errors for r in rounds)}  RSS {rss:.0f} MiB (peak {peak:.0f} MiB)"
            )
        ratios = [o.rate / t.rate for o, t in zip(results[ours.name], results[theirs.name], strict=True)]
        listed = ", ".join(f"{r:.2f}" for r in ratios)
        print(f"ratio iotsec/allow-all: median {statistics.median(ratios):.2f} (rounds: {listed})")
        by_cpu = [t.cpu_us / o.cpu_us for o, t in zip(results[ours.name], results[theirs.name], strict=True)]
        listed = ", ".join(f"{r:.2f}" for r in by_cpu)
        print(f"ratio by CPU per request (allow-all/iotsec): median {statistics.median(by_cpu):.2f} (rounds: {listed})")
        stack_ratios = [s.rate / t.rate for s, t in zip(results[stack.name], results[theirs.name], strict=True)]
        stack_cpu = [t.cpu_us / s.cpu_us for s, t in zip(results[stack.name], results[theirs.name], strict=True)]
        print(
            f"ratio iotsec stack (the allow-all review in iotsec's server)/allow-all: median "
            f"{statistics.median(stack_ratios):.2f}, by CPU {statistics.median(stack_cpu):.2f}: what serving costs; "
            f"the rest of the gap is judging"
        )
        ours_rounds = results[ours.name]
        label = f"11 KB Deployment review, {tool} -c{CONNECTIONS}, median of {args.rounds} alternated rounds"
        record(
            f"webhook closed-loop req/s ÷ allow-all aiohttp TLS webhook, same core ({label})",
            f"{statistics.median(ratios):.2f} ({statistics.median(r.rate for r in ours_rounds):,.0f} req/s)",
            "≥ 0.9",
        )
        record(
            f"webhook CPU per request, allow-all's ÷ iotsec's ({label})",
            f"{statistics.median(by_cpu):.2f} ({statistics.median(r.cpu_us for r in ours_rounds):.0f} µs)",
            "≥ 0.9 (the req/s ratio's goal)",
        )
        record(
            f"webhook closed-loop: iotsec's serving stack with the allow-all server's review ÷ allow-all ({label})",
            f"{statistics.median(stack_ratios):.2f} (by CPU {statistics.median(stack_cpu):.2f})",
            "what serving costs; the rest of the gap is judging",
        )
        record(f"webhook closed-loop p99 ({label})", f"{statistics.median(r.p99_ms for r in ours_rounds):.1f} ms")
        record("webhook RSS after the closed-loop rounds", f"{ours.rss_mib()[0]:.0f} MiB", "≤ 120 MiB")
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        figures = asyncio.run(closed_loop(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.stdin.buffer.read()))
        print(json.dumps(figures))
    else:
        main()
