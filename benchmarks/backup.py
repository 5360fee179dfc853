"""Benchmark: backup, verify and restore through the backup Runner versus plain restic on the same tree.

Generates a tree in a temporary folder (default 20,000 files of 1-8 KB of random bytes in folders of 200, plus
3 files of 50 MB), then measures in one run, each side with fresh repositories and caches:

- backup: `restic backup --tag ...` + `restic forget --prune --keep-last 7` vs Runner.backup (same retention);
- verify: `restic check --read-data-subset=100%` vs Runner.verify(read_data_subset="100%");
- restore: `restic restore latest --tag ... --verify` vs Runner.restore (which also lists and compares the files).

Prints seconds, MB/s and files/s for each pair and the wrapper overhead in percent, plus how many restic processes
each side started (every one pays restic's key derivation, calibrated to ~0.5 s at `restic init`).
Not a test: it asserts only that every operation succeeded.

Run: .venv/bin/python benchmarks/backup.py [small_files] [big_files] [big_mb]   (BENCH_SMALL=1: 2,000 + 1 x 10 MB)
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from figures import record

from iotsec.servers.backupjob.operations import Runner
from iotsec.servers.backupjob.restic import Retention, Target

RESTIC = shutil.which("restic") or "restic"
TAG = "bench"
KEEP = Retention(keep_last=7)


class CountCommands(logging.Handler):
    """Counts the restic processes the Runner starts (it logs each at DEBUG)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.DEBUG and record.getMessage().split(": ", 1)[-1].startswith(RESTIC):
            self.count += 1


def sizes() -> tuple[int, int, int]:
    if os.environ.get("BENCH_SMALL") == "1":
        small, big, big_mb = 2000, 1, 10
    else:
        small, big, big_mb = 20000, 3, 50
    args = [int(arg) for arg in sys.argv[1:4]]
    return (*args, *(small, big, big_mb)[len(args) :])  # type: ignore[return-value]


def generate(root: Path, small: int, big: int, big_mb: int) -> tuple[int, int]:
    rng = random.Random(1369)
    total = 0
    for index in range(small):
        folder = root / f"d{index // 200:03d}"
        if index % 200 == 0:
            folder.mkdir(parents=True)
        size = rng.randint(1024, 8192)
        (folder / f"f{index:05d}.bin").write_bytes(rng.randbytes(size))
        total += size
    root.mkdir(parents=True, exist_ok=True)
    for index in range(big):
        with (root / f"big{index}.bin").open("wb") as handle:
            for _ in range(big_mb):
                handle.write(os.urandom(1 << 20))
        total += big_mb << 20
    return small + big, total


def plain(env: dict[str, str], cache: Path, *args: str) -> None:
    done = subprocess.run(
        [RESTIC, "--cache-dir", str(cache), *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"restic {args[0]} failed: {done.stderr.strip()}")


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def succeeded(result: object) -> None:
    if not getattr(result, "succeeded", False):
        raise SystemExit(f"runner failed: {getattr(result, 'errors', result)}")


def main() -> None:
    small, big, big_mb = sizes()
    work = Path(tempfile.mkdtemp(prefix="iotsec-bench-backup-"))
    password = secrets.token_urlsafe(24)
    counter = CountCommands()
    logger = logging.getLogger("iotsec.servers.backupjob")
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        tree = work / "tree"
        started = time.perf_counter()
        files, total = generate(tree, small, big, big_mb)
        print(
            f"tree: {files:,} files, {total / 1e6:,.1f} MB ({small:,} of 1-8 KB + {big} x {big_mb} MB), "
            f"generated in {time.perf_counter() - started:.1f}s; restic {restic_version()}, {os.cpu_count()} CPUs"
        )

        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
        plain_repo, runner_repo = work / "repo-plain", work / "repo-runner"
        env_plain = dict(env, RESTIC_PASSWORD=password, RESTIC_REPOSITORY=str(plain_repo))
        plain(env_plain, work / "cache-plain", "init")
        target = Target("primary", str(runner_repo))
        runner = Runner(password, restic=RESTIC, tags=(TAG,), cache_dir=str(work / "cache-runner"))
        runner.init(target)
        counter.count = 0

        rows = []

        def plain_backup() -> None:
            plain(env_plain, work / "cache-plain", "backup", "--json", "--quiet", "--tag", TAG, str(tree))
            plain(
                env_plain,
                work / "cache-plain",
                "forget",
                "--prune",
                "--group-by",
                "paths,tags",
                "--tag",
                TAG,
                *KEEP.flags(),
            )

        phases: list[tuple[str, Callable[[], None], int, Callable[[], None]]] = [
            ("backup", plain_backup, 2, lambda: succeeded(runner.backup([str(tree)], [target], KEEP))),
            (
                "verify 100%",
                lambda: plain(env_plain, work / "cache-plain", "check", "--read-data-subset=100%"),
                1,
                lambda: succeeded(runner.verify([target], "100%")),
            ),
            (
                "restore",
                lambda: plain(
                    env_plain,
                    work / "cache-plain",
                    "restore",
                    "latest",
                    "--tag",
                    TAG,
                    "--target",
                    str(work / "out-plain"),
                    "--verify",
                ),
                1,
                lambda: succeeded(runner.restore(target, str(work / "out-runner"))),
            ),
        ]
        for name, plain_action, plain_calls, runner_action in phases:
            plain_seconds = timed(plain_action)
            counter.count = 0
            runner_seconds = timed(runner_action)
            rows.append((name, plain_seconds, plain_calls, runner_seconds, counter.count))

        print()
        print(f"{'operation':<12} {'side':<7} {'seconds':>8} {'MB/s':>9} {'files/s':>10} {'restic runs':>12}")
        for name, plain_seconds, plain_calls, runner_seconds, runner_calls in rows:
            for side, seconds, calls in (
                ("restic", plain_seconds, plain_calls),
                ("runner", runner_seconds, runner_calls),
            ):
                print(
                    f"{name:<12} {side:<7} {seconds:>8.2f} {total / 1e6 / seconds:>9.1f} "
                    f"{files / seconds:>10,.0f} {calls:>12}"
                )
            overhead = (runner_seconds - plain_seconds) / plain_seconds * 100
            print(f"{name:<12} {'overhead':<7} {runner_seconds - plain_seconds:>+8.2f} s = {overhead:+.1f}%")
            record(
                f"{name} of {files:,} files through the Runner vs plain restic",
                f"{runner_seconds:.1f} s vs {plain_seconds:.1f} s ({overhead:+.0f}%)",
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def restic_version() -> str:
    done = subprocess.run([RESTIC, "version"], capture_output=True, text=True, check=False)
    return done.stdout.split()[1] if done.returncode == 0 and len(done.stdout.split()) > 1 else "?"


if __name__ == "__main__":
    main()
