"""`make bench`: every benchmark in turn, then one table of their headline figures (figure, value, goal).

Each benchmark runs as its own process with IOTSEC_BENCH_FIGURES naming the file its `record()` calls append to
(benchmarks/figures.py); its whole output goes to build/bench/<name>.log. The ones that need the testenv run when
KUBECONFIG reaches an API server: those that start their own operator only while the chart's is not installed,
failover only while it is (make image testenv-install). Any other appears in the table as not run, with why.

The default is a quick pass of every benchmark at a smaller scale (about 10 minutes here, 2026-12-04); --full
runs each at the scale its issue names (about 45 minutes: the 10-minute soak and 1,000 tenants take most). --only
NAME... runs some; --markdown FILE also writes the table as markdown headed by the date and the machine.
Run: .venv/bin/python benchmarks/run_all.py [--full] [--only NAME ...] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from figures import FIGURES_ENV

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "build" / "bench"
RELEASE_NAMESPACE, OPERATOR = "iotsec-system", "iotsec-operator"


@dataclass(frozen=True)
class Bench:
    name: str
    quick: list[str]
    full: list[str]
    needs: str = ""  # "", "api" (an API server, no chart operator beside its own), "chart" (the chart installed)
    env: dict[str, str] = field(default_factory=dict)
    full_env: dict[str, str] = field(default_factory=dict)


BENCHES = [
    Bench("admission", [], [], env={"BENCH_SECONDS": "10"}, full_env={"BENCH_SECONDS": "60"}),
    Bench("webhook_throughput", ["--seconds", "5", "--rounds", "3"], []),
    Bench("webhook_soak", [], ["--minutes", "10"]),
    Bench("slow_clients", ["500"], []),
    Bench("cli_check_speed", [], []),
    Bench("cli_small_file", ["5"], []),
    Bench("render_domains", [], []),
    Bench("tenants", [], []),
    Bench("report_scale", ["200", "20", "20"], []),
    Bench("secret_names", [], []),
    Bench("audit_chain", ["--events", "20000"], []),
    Bench("backup", [], [], env={"BENCH_SMALL": "1"}),
    Bench("operator_api_requests", [], [], needs="api"),
    Bench("apiserver_costs", ["200"], [], needs="api"),
    Bench("operator_scale", [], ["--tenants", "1000", "--domains", "200"], needs="api"),
    Bench("failover", ["3"], ["10"], needs="chart"),
]


@dataclass
class Outcome:
    bench: Bench
    rows: list[dict[str, str]]
    seconds: float
    problem: str = ""  # why it did not run, or how it failed


def cluster_state() -> str:
    """'' when no API server answers, else 'chart' when the chart's operator is installed, else 'api'."""
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if not kubeconfig or not Path(kubeconfig).is_file():
        return ""
    try:
        from kubernetes import client, config
        from kubernetes.client.rest import ApiException

        api = config.new_client_from_config(config_file=kubeconfig)
        client.VersionApi(api).get_code(_request_timeout=5)
    except Exception:
        return ""
    try:
        client.AppsV1Api(api).read_namespaced_deployment(OPERATOR, RELEASE_NAMESPACE, _request_timeout=5)
    except ApiException:
        return "api"
    return "chart"


def why_not(bench: Bench, state: str) -> str:
    if not (ROOT / "benchmarks" / f"{bench.name}.py").is_file():
        return "not run: no such benchmark in this checkout"
    if bench.needs and not state:
        return "not run: no API server (KUBECONFIG; start ../shared/k8s-testenv)"
    if bench.needs == "api" and state == "chart":
        return f"not run: the chart's operator is installed (helm uninstall iotsec -n {RELEASE_NAMESPACE})"
    if bench.needs == "chart" and state != "chart":
        return "not run: needs the chart on the testenv's node (make image testenv-install)"
    return ""


def run(bench: Bench, full: bool, state: str) -> Outcome:
    reason = why_not(bench, state)
    if reason:
        return Outcome(bench, [], 0.0, reason)
    LOGS.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as handle:
        figures_file = Path(handle.name)
    env = {**os.environ, **bench.env, **(bench.full_env if full else {}), FIGURES_ENV: str(figures_file)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "operator"), env.get("PYTHONPATH")]))
    command = [sys.executable, str(ROOT / "benchmarks" / f"{bench.name}.py"), *(bench.full if full else bench.quick)]
    started = time.perf_counter()
    with (LOGS / f"{bench.name}.log").open("w") as log:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - started
    rows = [json.loads(line) for line in figures_file.read_text().splitlines() if line.strip()]
    figures_file.unlink()
    problem = f"failed: exit {done.returncode}, see build/bench/{bench.name}.log" if done.returncode else ""
    if not problem and not rows:
        problem = "ran, but recorded no figure"
    return Outcome(bench, rows, seconds, problem)


def table(outcomes: list[Outcome]) -> list[tuple[str, str, str, str]]:
    lines = []
    for outcome in outcomes:
        for row in outcome.rows:
            lines.append((outcome.bench.name, row["figure"], row["value"], row["goal"] or "-"))
        if outcome.problem:
            lines.append((outcome.bench.name, outcome.problem, "-", "-"))
    return lines


def text_table(lines: list[tuple[str, str, str, str]]) -> str:
    header = ("benchmark", "figure", "value", "goal")
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(4)]

    def render(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()

    return "\n".join([render(header), render(tuple("-" * w for w in widths)), *map(render, lines)])


def machine() -> str:
    cpu = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpu if "model name" in line), platform.processor() or "?")
    memory = Path("/proc/meminfo").read_text().splitlines()
    memory_kib = next(int(line.split()[1]) for line in memory if line.startswith("MemTotal"))
    return (
        f"{os.cpu_count()} x {model}, {memory_kib / 2**20:.0f} GiB, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def markdown(lines: list[tuple[str, str, str, str]], full: bool) -> str:
    head = [
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()} (`make bench{' BENCH=--full' if full else ''}`):",
        "",
        "| benchmark | figure | value | goal |",
        "|---|---|---|---|",
    ]
    return "\n".join(head + [f"| {' | '.join(cell.replace('|', '/') for cell in row)} |" for row in lines]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="each benchmark at its issue's scale (about 45 minutes)")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=[b.name for b in BENCHES])
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the table as markdown")
    args = parser.parse_args()
    state = cluster_state()
    outcomes = []
    for bench in BENCHES:
        if args.only and bench.name not in args.only:
            continue
        print(f"== {bench.name} ...", end=" ", flush=True)
        outcome = run(bench, args.full, state)
        print(outcome.problem or f"{len(outcome.rows)} figures in {outcome.seconds:.0f} s", flush=True)
        outcomes.append(outcome)
    lines = table(outcomes)
    print()
    print(text_table(lines))
    if args.markdown:
        args.markdown.write_text(markdown(lines, args.full))
        print(f"\nmarkdown: {args.markdown}")
    if any(o.problem.startswith(("failed", "ran,")) for o in outcomes):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
