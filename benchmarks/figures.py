"""The figures a benchmark reports for `make bench`'s one table (benchmarks/run_all.py).

A benchmark prints what it prints, and calls `record(figure, value, goal)` for each headline figure. When the
environment names a file in IOTSEC_BENCH_FIGURES (run_all.py sets it), each call appends one JSON line there;
otherwise it does nothing, so a benchmark run by hand behaves as before.
"""

from __future__ import annotations

import json
import os

FIGURES_ENV = "IOTSEC_BENCH_FIGURES"


def record(figure: str, value: str, goal: str = "") -> None:
    """One row of the table: what was measured, its value with its unit, and the goal it is held to ("" if none)."""
    path = os.environ.get(FIGURES_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps({"figure": figure, "value": value, "goal": goal}) + "\n")
