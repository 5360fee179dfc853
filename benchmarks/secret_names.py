"""Benchmark: precision and recall of the literal-secret decision on real environment variables.

The corpus (tests/data/env_names.yaml) holds environment variables as public charts, manifests and documented
defaults use them, each labelled: is the literal value a secret? Every 3rd entry (index % 3 == 2) is held out.
Prints precision, recall and counts for the tuning part, the held-out part, the fresh part (entries gathered after
the decision was written) and the whole corpus, and the decision's cost per call. Misclassified entries are listed
for the tuning part only (`--show-held-out` lists the held-out and fresh ones too): those are there to be looked at
last.

Run: PYTHONPATH=operator .venv/bin/python benchmarks/secret_names.py [--show-held-out]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from figures import record

from iotsec.admission.secrets import literal_secret, secret_name

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "env_names.yaml"
FRESH_FROM = 233  # entries from here on were gathered after the decision was written, labelled before it ran on them
Decision = Callable[[str, object], bool]


def load(path: Path = CORPUS) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = yaml.safe_load(path.read_text())
    return entries


def parts(entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The fixed split: every 3rd entry held out."""
    return {
        "tuning": [entry for index, entry in enumerate(entries) if index % 3 != 2],
        "held-out": [entry for index, entry in enumerate(entries) if index % 3 == 2],
        "fresh": entries[FRESH_FROM:],
        "all": entries,
    }


def decide(name: str, value: object) -> bool:
    """The decision as admission applies it to an env var: the name gates, then name and value decide."""
    return secret_name(name) and literal_secret(name, value)


def figures(entries: Iterable[dict[str, Any]], decision: Decision = decide) -> dict[str, Any]:
    true_pos = false_pos = false_neg = true_neg = 0
    wrong: list[dict[str, Any]] = []
    for entry in entries:
        flagged = decision(entry["name"], entry["value"])
        if flagged and entry["secret"]:
            true_pos += 1
        elif flagged:
            false_pos += 1
            wrong.append(entry)
        elif entry["secret"]:
            false_neg += 1
            wrong.append(entry)
        else:
            true_neg += 1
    precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else 1.0
    recall = true_pos / (true_pos + false_neg) if true_pos + false_neg else 1.0
    return {
        "precision": precision,
        "recall": recall,
        "tp": true_pos,
        "fp": false_pos,
        "fn": false_neg,
        "tn": true_neg,
        "wrong": wrong,
    }


def cost_per_call(entries: list[dict[str, Any]], rounds: int = 200) -> float:
    """Microseconds per decision, names cached as in admission (the cache is warm after the first round)."""
    started = time.perf_counter()
    for _ in range(rounds):
        for entry in entries:
            decide(entry["name"], entry["value"])
    return (time.perf_counter() - started) / (rounds * len(entries)) * 1e6


def _pair(result: dict[str, Any]) -> str:
    return f"{result['precision']:.3f} / {result['recall']:.3f}"


def report(show_held_out: bool = False) -> None:
    entries = load()
    secrets = sum(entry["secret"] for entry in entries)
    print(f"corpus: {len(entries)} entries, {secrets} secret, {len(entries) - secrets} not secret")
    for part, chosen in parts(entries).items():
        result = figures(chosen)
        print(
            f"{part:>8}: precision {result['precision']:.3f}  recall {result['recall']:.3f}  "
            f"tp {result['tp']} fp {result['fp']} fn {result['fn']} tn {result['tn']}  (n={len(chosen)})"
        )
        if part == "tuning" or (part in ("held-out", "fresh") and show_held_out):
            for entry in result["wrong"]:
                kind = "missed" if entry["secret"] else "false alarm"
                print(f"          {kind}: {entry['name']}={entry['value']!r}")
        if part == "held-out":
            record("literal-secret decision, held-out corpus: precision / recall", _pair(result))
        if part == "all":
            record("literal-secret decision, whole corpus: precision / recall", _pair(result))
    print(f"cost: {cost_per_call(entries):.2f} µs per env var (name cached)")


if __name__ == "__main__":
    report(show_held_out="--show-held-out" in sys.argv[1:])
