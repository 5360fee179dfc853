"""Benchmark: `iotsec webhook` at a fixed rate in bursts, for minutes: latency, CPU and RSS over time (issue 18).

The webhook runs as its own process pinned to CPU 0, the load generator (an aiohttp client with keep-alive TLS
connections) pinned to CPU 1. Every 1/(rate/burst) seconds a burst of `--burst` requests is sent at once (default
1,000 req/s in bursts of 25 every 25 ms, as the API server's replica sets and rollouts send them), open loop: a
request's latency counts from its burst's scheduled time, so a server that falls behind is charged for the wait.
Each request posts the ~11 KB Deployment AdmissionReview of benchmarks/webhook_throughput.py with a uid of its own,
which the webhook allows. The server's RSS is sampled every second; drift is the mean RSS of the last minute less
that of the first minute (for runs under three minutes: the first and last third). Prints the figures per minute
and overall; asserts nothing.

Run: .venv/bin/python benchmarks/webhook_soak.py [--minutes 1] [--rate 1000] [--burst 25]
     .venv/bin/python benchmarks/webhook_soak.py --minutes 10     (the issue's soak)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from admission import ALLOW_ALL
from figures import record
from webhook_throughput import LOAD_CPU, Server, check_answers, deployment_review, free_port, iotsec_command, pin_to
from webhook_throughput import start as start_server

UID = b"0b4c3a2e-7f6d-4e5c-8b9a-1d2e3f4a5b6c"  # the review's request.uid, replaced per request
CONNECTIONS = 64  # keep-alive connections of the load generator: more than one burst needs


def percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def generate(port: int, cafile: str, seconds: float, rate: int, burst: int, body: bytes) -> dict:
    """Open-loop bursts for `seconds`; latencies from each burst's scheduled start, grouped by minute.

    A lean HTTP/1.1 client on asyncio streams (keep-alive TLS connections, one request at a time each): aiohttp's
    client costs more CPU per request than the server under test and would measure itself."""
    context = ssl.create_default_context(cafile=cafile)
    head = (
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    interval = burst / rate
    by_minute: list[list[float]] = []
    errors = 0
    queue: asyncio.Queue[tuple[float, int, list[float]] | None] = asyncio.Queue()

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
        while (job := await queue.get()) is not None:
            scheduled, index, minute = job
            uid = f"{index:036d}".encode()  # as long as the uid it replaces
            try:
                writer.write(head + body.replace(UID, uid))
                status = await reader.readuntil(b"\r\n\r\n")
                length = int(status.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                payload = await reader.readexactly(length)
                allowed = b'"allowed":true' in payload or b'"allowed": true' in payload  # orjson, json
                if not status.startswith(b"HTTP/1.1 200") or not allowed or uid not in payload:
                    errors += 1
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=context, server_hostname="localhost"
                )
            minute.append(time.perf_counter() - scheduled)
        writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(CONNECTIONS)]
    await asyncio.sleep(1.0)  # connections made before the clock starts
    started = time.perf_counter()
    sent = 0
    for number in range(int(seconds / interval)):
        scheduled = started + number * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        minute_index = int(number * interval // 60)
        while len(by_minute) <= minute_index:
            by_minute.append([])
        for _ in range(burst):
            queue.put_nowait((scheduled, sent, by_minute[minute_index]))
            sent += 1
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - started
    everything = sorted(latency for minute in by_minute for latency in minute)
    return {
        "requests": len(everything),
        "errors": errors,
        "seconds": elapsed,
        "client_cpu_us": time.process_time() / max(len(everything), 1) * 1e6,
        "p50_ms": percentile(everything, 0.5) * 1000,
        "p99_ms": percentile(everything, 0.99) * 1000,
        "p999_ms": percentile(everything, 0.999) * 1000,
        "max_ms": everything[-1] * 1000 if everything else float("nan"),
        "minutes": [_minute(sorted(m)) for m in by_minute],
    }


def _minute(ordered: list[float]) -> dict[str, float]:
    p50, p99 = percentile(ordered, 0.5) * 1000, percentile(ordered, 0.99) * 1000
    return {"requests": len(ordered), "p50_ms": p50, "p99_ms": p99}


@dataclass
class Sample:
    at: float  # seconds since the load started
    rss_mib: float
    cpu_seconds: float


def sample(server: Server, started: float) -> Sample:
    return Sample(time.monotonic() - started, server.rss_mib()[0], server.cpu_seconds())


def drift(samples: list[Sample], seconds: float) -> tuple[float, float, float]:
    """(mean RSS of the first window, of the last window, the window's length in seconds)."""
    window = 60.0 if seconds >= 180 else seconds / 3
    first = [s.rss_mib for s in samples if s.at <= window]
    last = [s.rss_mib for s in samples if s.at >= seconds - window]
    return statistics.mean(first), statistics.mean(last), window


def run(args: argparse.Namespace) -> None:
    from iotsec.pki import certs

    body = deployment_review()
    assert UID in body
    folder = Path(tempfile.mkdtemp(prefix="iotsec-soak-"))
    ca = certs.new_ca("bench", datetime.now(UTC))
    serving = certs.new_serving_cert(ca, ["localhost"], ["127.0.0.1"], datetime.now(UTC))
    (folder / "ca.crt").write_text(ca.cert_pem)
    (folder / "tls.crt").write_text(serving.cert_pem)
    (folder / "tls.key").write_text(serving.key_pem)
    port = free_port()
    if args.allow_all:  # the reference: what aiohttp and TLS alone cost under the same load
        command = [sys.executable, "-c", ALLOW_ALL, str(port), str(folder / "tls.crt"), str(folder / "tls.key")]
        server = start_server("allow-all", command, port, folder / "ca.crt")
    else:
        server = start_server("iotsec webhook", iotsec_command(port, folder), port, folder / "ca.crt")
    seconds = args.minutes * 60
    print(
        f"{server.name} on CPU 0, load on CPU {LOAD_CPU}: {args.rate} req/s in bursts of {args.burst} every "
        f"{args.burst / args.rate * 1000:.0f} ms for {args.minutes:g} min, {len(body) / 1024:.1f} KiB Deployment "
        "reviews, open loop (latency from the burst's scheduled time)"
    )
    try:
        check_answers([server], folder / "ca.crt", body)
        command = [sys.executable, __file__, "--load", str(port), str(folder / "ca.crt"), str(seconds)]
        command += [str(args.rate), str(args.burst)]
        started = time.monotonic()
        samples = [sample(server, started)]
        with tempfile.TemporaryFile() as out:
            load = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=out, preexec_fn=pin_to(LOAD_CPU), cwd=Path(__file__).parent
            )
            assert load.stdin is not None
            load.stdin.write(body)
            load.stdin.close()
            while load.poll() is None:
                time.sleep(1.0)
                samples.append(sample(server, started))
            if load.returncode != 0:
                raise RuntimeError(f"the load generator failed ({load.returncode})")
            out.seek(0)
            result = json.loads(out.read())
        report(args, server, samples, result, seconds)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def report(args: argparse.Namespace, server: Server, samples: list[Sample], result: dict, seconds: float) -> None:
    for index, minute in enumerate(result["minutes"]):
        in_minute = [s for s in samples if index * 60 <= s.at < (index + 1) * 60]
        rss = max((s.rss_mib for s in in_minute), default=float("nan"))
        cpu = (in_minute[-1].cpu_seconds - in_minute[0].cpu_seconds) / max(in_minute[-1].at - in_minute[0].at, 1e-9)
        print(
            f"  minute {index + 1:>2}: {minute['requests']:>6} requests  p50 {minute['p50_ms']:6.2f} ms  "
            f"p99 {minute['p99_ms']:6.2f} ms  server CPU {cpu * 100:4.0f}%  RSS max {rss:5.1f} MiB"
        )
    first, last, window = drift(samples, seconds)
    peak = max(s.rss_mib for s in samples)
    _, hwm = server.rss_mib()
    cpu = (samples[-1].cpu_seconds - samples[0].cpu_seconds) / max(result["requests"], 1) * 1e6
    rate = result["requests"] / result["seconds"]
    print(
        f"overall: {result['requests']} requests ({rate:,.0f} req/s), {result['errors']} errors; latency p50 "
        f"{result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, p99.9 {result['p999_ms']:.2f} ms, max "
        f"{result['max_ms']:.1f} ms; server CPU {cpu:.0f} us/request ({cpu * rate / 1e4:.0f}% of its core), load "
        f"generator {result['client_cpu_us']:.0f} us/request"
    )
    print(
        f"RSS: peak sampled {peak:.1f} MiB (VmHWM {hwm:.1f} MiB); mean of the first {window:.0f} s {first:.1f} MiB, "
        f"of the last {window:.0f} s {last:.1f} MiB: drift {last - first:+.1f} MiB"
    )
    if args.allow_all:
        return
    label = f"{args.rate} req/s, bursts of {args.burst}, {args.minutes:g} min"
    record(f"webhook fixed-rate p99 ({label})", f"{result['p99_ms']:.1f} ms ({result['errors']} errors)", "≤ 25 ms")
    record(f"webhook RSS peak ({label})", f"{hwm:.0f} MiB", "≤ 120 MiB")
    record(
        f"webhook RSS drift, last vs first {window:.0f} s ({label})", f"{last - first:+.1f} MiB", "≤ 10 MiB over 10 min"
    )
    record(f"webhook CPU per request at {args.rate} req/s", f"{cpu:.0f} µs ({cpu * rate / 1e4:.0f}% of a core)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to run (the issue's soak: 10)")
    parser.add_argument("--rate", type=int, default=1000, help="requests per second")
    parser.add_argument("--burst", type=int, default=25, help="requests sent at once")
    parser.add_argument("--allow-all", action="store_true", help="load the allow-all aiohttp webhook instead")
    run(parser.parse_args())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        port, cafile, seconds, rate, burst = sys.argv[2:7]
        body = sys.stdin.buffer.read()
        figures = asyncio.run(generate(int(port), cafile, float(seconds), int(rate), int(burst), body))
        print(json.dumps(figures))
    else:
        main()
