"""Label selectors: matching (what the API server would select) and rendering to manifests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iotsec.api.common import LabelSelector


def matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy the selector; an empty selector matches everything, as in Kubernetes."""
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.match_expressions or ():
        present = requirement.key in labels
        actual = labels.get(requirement.key)
        values = requirement.values or []
        satisfied = {
            "In": present and actual in values,
            "NotIn": not present or actual not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[requirement.operator]
        if not satisfied:
            return False
    return True


def manifest(selector: LabelSelector | None) -> dict[str, Any]:
    """The selector as a Kubernetes manifest fragment ({} selects everything)."""
    if selector is None:
        return {}
    return selector.model_dump(by_alias=True, exclude_none=True)
