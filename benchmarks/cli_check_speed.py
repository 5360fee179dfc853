"""Benchmark: `iotsec check` over ~3,500 generated objects, as a user runs it (one process, files on disk).

Prints objects per second for YAML and for the same objects as JSON (rounds alternate YAML and JSON; the medians
are recorded), then where the time goes, in-process, as CPU seconds (best of the rounds): reading the files
(`load_documents`) with iotsec's loop over libyaml's events (iotsec.model.fastyaml) and with PyYAML's CSafeLoader,
and judging the objects (`check`). Run: .venv/bin/python benchmarks/cli_check_speed.py [copies] [rounds]
Not a test: it asserts nothing about speed; it reports figures for the closing notes and for regressions.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from figures import record

from iotsec.admission import snapshot
from iotsec.model import fastyaml, manifests

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def objects(copies: int) -> list[dict[str, Any]]:
    """The example workloads (conforming and not), renamed `copies` times: a platform's worth of Helm output."""
    base = [
        doc
        for path in sorted((EXAMPLES / "workloads").rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict)
    ]
    generated = []
    for copy in range(copies):
        for doc in base:
            clone = json.loads(json.dumps(doc))
            clone["metadata"]["name"] = f"{clone['metadata'].get('name', 'x')}-{copy}"
            generated.append(clone)
    return generated


def run(paths: list[Path]) -> tuple[float, float]:
    """Wall and CPU seconds of one `iotsec check` (CPU time is the steadier figure on a shared machine)."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "iotsec", "check", str(EXAMPLES / "platform"), *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode not in (0, 1):
        raise SystemExit(done.stderr[-2000:])
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)


def cpu_seconds(work: Callable[[], object], rounds: int) -> float:
    """The least CPU time of `rounds` runs of `work` in this process (the least is the one least disturbed)."""
    times = []
    for _ in range(rounds):
        started = time.process_time()
        work()
        times.append(time.process_time() - started)
    return min(times)


def stages(paths: dict[str, Path], rounds: int) -> None:
    """Where one check's time goes, in this process: reading each file, and judging what was read."""
    platform = [str(EXAMPLES / "platform")]
    for label, path in paths.items():
        seconds = cpu_seconds(lambda path=path: list(manifests.load_documents([*platform, str(path)])), rounds)
        print(f"  read {label}: {seconds:.2f} s CPU")
    fast = fastyaml.load_all
    try:
        setattr(fastyaml, "load_all", lambda text: None)  # noqa: B010 - PyYAML's CSafeLoader reads every file
        seconds = cpu_seconds(lambda: list(manifests.load_documents([*platform, str(paths["YAML"])])), rounds)
    finally:
        setattr(fastyaml, "load_all", fast)  # noqa: B010
    print(f"  read YAML with PyYAML's CSafeLoader instead: {seconds:.2f} s CPU")
    documents = list(manifests.load_documents([*platform, str(paths["JSON"])]))
    seconds = cpu_seconds(lambda: snapshot.check(documents, datetime.now(UTC)), rounds)
    print(f"  judge the {len(documents)} objects (iotsec.admission.snapshot.check): {seconds:.2f} s CPU")


def main() -> None:
    copies = int(sys.argv[1]) if len(sys.argv) > 1 else 76
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    generated = objects(copies)
    loader = "libyaml's events, iotsec.model.fastyaml" if getattr(yaml, "__with_libyaml__", False) else "PyYAML"
    with tempfile.TemporaryDirectory() as folder:
        paths = {"YAML": Path(folder) / "all.yaml", "JSON": Path(folder) / "all.json"}
        paths["YAML"].write_text(yaml.safe_dump_all(generated, sort_keys=False))
        paths["JSON"].write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": generated}))
        runs: dict[str, list[tuple[float, float]]] = {label: [] for label in paths}
        for _ in range(rounds):  # alternated, so a busy moment on this shared machine hits both alike
            for label, path in paths.items():
                runs[label].append(run([path]))
        for label, path in paths.items():
            wall = statistics.median(w for w, _ in runs[label])
            cpu = statistics.median(c for _, c in runs[label])
            walls = ", ".join(f"{w:.2f}" for w, _ in runs[label])
            size = path.stat().st_size / 1e6
            print(
                f"iotsec check, {label} ({loader if label == 'YAML' else 'json'}): {len(generated)} objects, "
                f"{size:.1f} MB; median of {rounds}: {wall:.2f} s wall ({walls}), {cpu:.2f} s CPU "
                f"= {len(generated) / wall:,.0f} objects/s ({len(generated) / cpu:,.0f} per CPU second)"
            )
            record(
                f"iotsec check of {len(generated):,} objects from {label} (median of {rounds}, wall)",
                f"{len(generated) / wall:,.0f} objects/s ({len(generated) / cpu:,.0f} per CPU second)",
                "≥ 2,000 objects/s" if label == "YAML" else "",
            )
        print("where the time goes (in this process):")
        stages(paths, rounds)


if __name__ == "__main__":
    main()
