"""Reading the decoded data of a Secret iotsec keeps; every error names what was being read (pure)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any


def optional(data: Mapping[str, str], key: str, what: str) -> str | None:
    """The value under `key`, or None when absent or blank."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} secret data key {key!r} must be a string, got {type(value).__name__}")
    return value if value.strip() else None


def required(data: Mapping[str, str], key: str, what: str) -> str:
    value = optional(data, key, what)
    if value is None:
        raise ValueError(f"{what} secret data is missing key {key!r}")
    return value


def decode(secret: Mapping[str, Any] | None) -> dict[str, str]:
    """A Secret's `data`, base64-decoded to text; {} for no Secret. ValueError when a value is not base64 UTF-8."""
    return {key: base64.b64decode(value).decode() for key, value in ((secret or {}).get("data") or {}).items()}
