"""The shape of an RBAC PolicyRule as iotsec writes it (chart ClusterRoles, tenant Roles)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def policy_rule(
    api_groups: Sequence[str], resources: Sequence[str], verbs: Sequence[str], resource_names: Sequence[str] = ()
) -> dict[str, Any]:
    """A `rules[]` entry; `resourceNames` only when it narrows the rule."""
    rule: dict[str, Any] = {"apiGroups": list(api_groups), "resources": list(resources), "verbs": list(verbs)}
    if resource_names:
        rule["resourceNames"] = list(resource_names)
    return rule
