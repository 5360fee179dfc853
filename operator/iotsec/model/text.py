"""How iotsec quotes a value it was given in an error message (pure)."""

from __future__ import annotations

QUOTE_LIMIT = 80


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`value` as Python quotes it, cut to about `limit` characters: a megabyte of input is one short line."""
    text = str(value)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
