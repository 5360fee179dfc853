"""Human durations used across the API: `90d`, `12h`, `1h30m`, `2w`."""

from __future__ import annotations

import re
from datetime import timedelta

UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"([0-9]+)(w|d|h|m|s)")
LONGEST = timedelta(days=36500)


def parse_duration(text: str) -> timedelta:
    """Parse a duration made of number+unit parts (w, d, h, m, s); zero is an error."""
    position, seconds = 0, 0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        seconds += int(match.group(1)) * UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise ValueError(f"{text!r} is not a duration such as 90d, 12h or 1h30m (units: w, d, h, m, s)")
    if seconds == 0:
        raise ValueError(f"{text!r} is zero: a duration must be positive")
    if seconds > LONGEST.total_seconds():  # a date that far ahead overflows (year 9999), and nothing needs it
        raise ValueError(f"{text!r} is longer than {LONGEST.days}d")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest `parse_duration` spelling of a whole number of seconds."""
    remaining = int(delta.total_seconds())
    parts = []
    for unit, size in UNITS.items():
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
