"""Cron schedule syntax as Kubernetes CronJobs accept it (five fields or an @descriptor)."""

from __future__ import annotations

DESCRIPTORS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
MONTHS: dict[str, int] = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
WEEKDAYS: dict[str, int] = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
NO_NAMES: dict[str, int] = {}
# (field name, lowest value, highest value, the names that stand for values)
FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, NO_NAMES),
    ("hour", 0, 23, NO_NAMES),
    ("day of month", 1, 31, NO_NAMES),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, WEEKDAYS),
)


class CronError(ValueError):
    """A schedule that a CronJob would refuse."""


def validate_cron(schedule: str) -> None:
    """Raise CronError naming the offending field when `schedule` is not a valid cron expression."""
    text = schedule.strip()
    if text.upper().startswith(("TZ=", "CRON_TZ=")):
        raise CronError("time zones are not allowed inside the schedule: set the timeZone field instead")
    if text.startswith("@"):
        if text not in DESCRIPTORS:
            raise CronError(f"unknown descriptor {text!r}: use one of {', '.join(sorted(DESCRIPTORS))}")
        return
    parts = text.split()
    if len(parts) != len(FIELDS):
        raise CronError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)} in {schedule!r}"
        )
    for part, (name, low, high, names) in zip(parts, FIELDS, strict=True):
        for item in part.split(","):
            _check_item(item, name, low, high, names)


def _check_item(item: str, name: str, low: int, high: int, names: dict[str, int]) -> None:
    base, _, step = item.partition("/")
    if step and (not step.isdigit() or int(step) == 0):
        raise CronError(f"{name}: step {step!r} in {item!r} must be a positive number")
    if base in ("*", "?"):
        return
    start, _, end = base.partition("-")
    first = _value(start, name, low, high, names)
    if end:
        last = _value(end, name, low, high, names)
        if last < first:
            raise CronError(f"{name}: range {base!r} runs backwards")


def _value(token: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    if token.upper() in names:
        return names[token.upper()]
    if not token.isdigit():
        raise CronError(f"{name}: {token!r} is not a number" + (" or a name" if names else ""))
    value = int(token)
    if not low <= value <= high:
        raise CronError(f"{name}: {value} is outside {low}-{high}")
    return value
