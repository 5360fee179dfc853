from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SHARED = ROOT.parent / "shared"


def load_examples() -> list[dict[str, Any]]:
    """Every iotsec custom resource under examples/."""
    docs = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d["apiVersion"].startswith("iotsec.io/")]
    return docs


@pytest.fixture
def example():
    """A deep copy of the first example of a kind, optionally by name: example('SecurityDomain', 'ingestion')."""
    docs = load_examples()

    def pick(kind: str, name: str | None = None) -> dict[str, Any]:
        for doc in docs:
            if doc["kind"] == kind and name in (None, doc["metadata"]["name"]):
                return copy.deepcopy(doc)
        raise LookupError(f"no example {kind} {name or ''}")

    return pick
