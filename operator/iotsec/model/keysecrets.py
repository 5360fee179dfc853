"""The rule for key Secrets iotsec keeps (webhook TLS, audit signing key): never replaced behind anyone's back (pure).

A key Secret that exists but cannot be used (damaged data, or someone else's Secret) is left exactly as it is:
iotsec reports it (`KeyUnreadable`) and replaces it only once a person annotates it `iotsec.io/replace-unreadable:
"true"`; the annotation does nothing to a Secret iotsec can use. Replacing silently would cut off every client
that trusts the old CA, or end an audit chain's key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iotsec.model.labels import REPLACE_UNREADABLE

REASON = "KeyUnreadable"


class KeyUnreadableError(ValueError):
    """A key Secret exists but iotsec cannot (or may not) use it; the message says why."""


def replacement_requested(secret: Mapping[str, Any] | None) -> bool:
    """True when a person asked iotsec to replace this Secret. Callers honour it only for a Secret they cannot use:
    on a readable one it is ignored (and said so), since replacing it would cut off its clients for nothing."""
    annotations = ((secret or {}).get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(REPLACE_UNREADABLE, "")).lower() == "true"


def secret_ref(namespace: str, name: str) -> str:
    """The `secret` label value of iotsec_key_unreadable."""
    return f"{namespace}/{name}"


def advice(namespace: str, name: str) -> str:
    """What a person does about an unreadable key Secret."""
    return (
        f"iotsec leaves it alone: repair it, or have iotsec replace it with "
        f"`kubectl annotate secret -n {namespace} {name} {REPLACE_UNREADABLE}=true`"
    )
