"""Benchmark: `iotsec check` over ~3,500 generated objects, as a user runs it (one process, files on disk).

Prints objects per second for YAML (libyaml's CSafeLoader when present) and for the same objects as JSON, and the
loader used. Run: .venv/bin/python benchmarks/cli_check_speed.py [copies]
Not a test: it asserts nothing about speed; it reports figures for the closing notes and for regressions.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

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


def main() -> None:
    copies = int(sys.argv[1]) if len(sys.argv) > 1 else 76
    generated = objects(copies)
    loader = "CSafeLoader" if getattr(yaml, "__with_libyaml__", False) else "SafeLoader (pure Python)"
    with tempfile.TemporaryDirectory() as folder:
        as_yaml, as_json = Path(folder) / "all.yaml", Path(folder) / "all.json"
        as_yaml.write_text(yaml.safe_dump_all(generated, sort_keys=False))
        as_json.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": generated}))
        for label, path in (("YAML", as_yaml), ("JSON", as_json)):
            wall, cpu = run([path])
            size = path.stat().st_size / 1e6
            print(
                f"iotsec check, {label} ({loader if label == 'YAML' else 'json'}): {len(generated)} objects, "
                f"{size:.1f} MB in {wall:.2f} s ({cpu:.2f} s CPU) = {len(generated) / wall:,.0f} objects/s "
                f"({len(generated) / cpu:,.0f} per CPU second)"
            )


if __name__ == "__main__":
    main()
