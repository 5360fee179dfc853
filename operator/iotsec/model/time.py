"""Time as iotsec writes and reads it: timezone-aware UTC, RFC 3339 with a `Z` (pure, standard library only).

Every timestamp iotsec writes (status conditions, audit records, backup results, device registries) goes through
`rfc3339`; every one it reads through `parse_rfc3339`. Precision is the caller's choice because some formats are
fixed on disk (the audit chain hashes microsecond stamps; a backup result carries milliseconds).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

from iotsec.model.text import quoted

Precision = Literal["seconds", "milliseconds", "microseconds", "auto"]
"""`auto`: microseconds when there are any, else whole seconds (what `datetime.isoformat` does)."""
_BEYOND_MICROSECONDS = re.compile(r"(\.\d{6})\d+")  # restic and Go write nanoseconds; datetime reads six digits


def utc(moment: datetime, what: str = "now") -> datetime:
    """`moment` in UTC; ValueError for a naive datetime, whose zone would be a guess."""
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")
    return moment.astimezone(UTC)


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime, precision: Precision = "seconds") -> str:
    """`2026-12-03T07:03:00Z`; with precision, `…:00.123Z` or `…:00.123456Z` (digits beyond it are cut, not rounded)."""
    return utc(moment, "a timestamp").isoformat(timespec=precision).replace("+00:00", "Z")


def parse_rfc3339(text: str, what: str = "timestamp", *, naive_is_utc: bool = False) -> datetime:
    """An aware datetime from RFC 3339 text (`Z` or an offset, any fraction); ValueError naming `what`.

    A time without a zone is refused, unless `naive_is_utc` (for what a person types: `2026-11-01` is UTC midnight).
    """
    try:
        moment = datetime.fromisoformat(_BEYOND_MICROSECONDS.sub(r"\1", text.strip()).upper().replace("Z", "+00:00"))
    except (ValueError, AttributeError) as error:
        raise ValueError(f"{what} {quoted(text)} is not an RFC 3339 time") from error
    if moment.tzinfo is None:
        if not naive_is_utc:
            raise ValueError(f"{what} {quoted(text)} has no time zone")
        moment = moment.replace(tzinfo=UTC)
    return moment
