"""Benchmark: `iotsec check` of ONE small file, as a user runs it (a new process each time), and the import time.

For a file of Deployments only and for a file of SecurityDomains (whose CEL rules need celpy and its parser), prints
the wall time of N runs (min / median / max) and their CPU time (the steadier figure on a shared machine), then the
time a fresh interpreter takes to import what `iotsec check` imports. The median wall of each file is recorded.
Run: .venv/bin/python benchmarks/cli_small_file.py [runs]
Not a test: it asserts nothing about speed; it reports figures for the closing notes and for regressions.
"""

from __future__ import annotations

import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from figures import record

ROOT = Path(__file__).resolve().parent.parent
FILES = {
    "Deployment only": ROOT / "examples" / "workloads" / "conforming" / "mqtt-gateway.yaml",
    "SecurityDomains (CEL)": ROOT / "examples" / "platform" / "10-securitydomains.yaml",
}
IMPORT_PROBE = (
    "import time; started = time.perf_counter(); import iotsec.cli.main, iotsec.cli.check; "
    "print(time.perf_counter() - started)"
)


def command() -> list[str]:
    """The console script next to this interpreter, as installed; else `python -m iotsec`."""
    script = Path(sys.executable).with_name("iotsec")
    if script.exists():
        return [str(script)]
    found = shutil.which("iotsec")
    return [found] if found else [sys.executable, "-m", "iotsec"]


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one process."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(done.stderr[-2000:])
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)


def spread(values: list[float]) -> str:
    return f"min {min(values):.3f} s, median {statistics.median(values):.3f} s, max {max(values):.3f} s"


def import_seconds(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True)
        times.append(float(done.stdout))
    return times


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    cli = command()
    timed([*cli, "--version"])  # warm the file cache and the bytecode
    for label, path in FILES.items():
        walls, cpus = zip(*(timed([*cli, "check", str(path)]) for _ in range(runs)), strict=True)
        print(f"iotsec check {path.relative_to(ROOT)} ({label}), {runs} runs:")
        print(f"  wall {spread(list(walls))}")
        print(f"  CPU  {spread(list(cpus))}")
        record(
            f"iotsec check of one small file, {label} (median of {runs}, wall)",
            f"{statistics.median(walls):.3f} s ({statistics.median(cpus):.3f} s CPU)",
            "≤ 0.3 s",
        )
    print(f"import iotsec.cli.main + iotsec.cli.check, {runs} runs: {spread(import_seconds(runs))}")


if __name__ == "__main__":
    main()
