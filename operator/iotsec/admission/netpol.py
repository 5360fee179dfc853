"""NetworkPolicies written by others than iotsec: refused where they widen what the namespace's domain allows."""

from __future__ import annotations

from typing import Any

from iotsec.admission.context import Context
from iotsec.admission.model import Finding


def check_network_policy(obj: dict[str, Any], ctx: Context, out: list[Finding]) -> None:
    """Findings for a NetworkPolicy that opens more than the domain's own policies (being built, issue 16)."""
