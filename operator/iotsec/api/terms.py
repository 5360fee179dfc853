"""Words of the API that code outside the models needs, kept free of pydantic: `iotsec check` of a file without
custom resources, and the webhook's hot path, import these and never the models (issue 18)."""

from __future__ import annotations

from typing import Literal

Zone = Literal["access", "core", "management", "interface", "support"]
EXPOSABLE_ZONES: tuple[Zone, ...] = ("access", "interface")
Enforcement = Literal["enforce", "warn", "audit"]
ESCALATING_VERBS = ("escalate", "bind", "impersonate", "*")
NAMESPACED_KINDS = {"SecurityDomain": False, "TenantIsolation": False, "BackupPolicy": True, "AuditPolicy": False}
"""Whether each iotsec kind is namespaced: the API's kind table (api.kinds) takes its scopes from here."""
