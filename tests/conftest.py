from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _private_cache_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`iotsec check` and `validate` keep the CEL parser in $XDG_CACHE_HOME/iotsec: tests (and the processes they
    start) use a folder of their own, never the user's home."""
    import os

    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


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


def run_together(calls: list[Callable[[], Any]], timeout: float = 120.0) -> list[Any]:
    """Run every call in its own thread, all released at once (a barrier), and return their results in order;
    fails with every error a call raised, or when a thread is still running after `timeout` seconds."""
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []
    start = threading.Barrier(len(calls))

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            start.wait(timeout=30)
            results[index] = call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive()
    assert not errors, errors
    return results
