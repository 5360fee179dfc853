"""Status conditions as the Kubernetes API conventions describe them (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from iotsec.model.time import now, rfc3339

_Condition = TypeVar("_Condition", bound=Mapping[str, Any])


def condition(
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    controls: Iterable[str] = (),
) -> dict[str, Any]:
    """A condition without its transition time (merge_conditions sets that)."""
    entry: dict[str, Any] = {"type": type_, "status": "True" if status else "False", "reason": reason}
    entry["message"] = message[:32768]
    if generation is not None:
        entry["observedGeneration"] = generation
    if controls:
        entry["controls"] = sorted(set(controls))
    return entry


def merge_conditions(
    previous: Sequence[dict[str, Any]] | None, current: Iterable[dict[str, Any]], timestamp: str | None = None
) -> list[dict[str, Any]]:
    """The new conditions, keeping lastTransitionTime where a condition's status did not change.

    Conditions of other types already present are kept as they are, so independent writers do not erase
    each other's observations.
    """
    before = {c.get("type"): c for c in previous or ()}
    stamp = timestamp or rfc3339(now())
    merged = []
    for entry in current:
        old = before.pop(entry["type"], None)
        kept = old.get("lastTransitionTime") if old is not None and old.get("status") == entry["status"] else None
        merged.append({**entry, "lastTransitionTime": kept or stamp})
    return merged + list(before.values())


def find(conditions: Iterable[_Condition] | None, type_: str) -> _Condition | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)
