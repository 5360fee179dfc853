"""model.time: the one place iotsec formats and parses RFC 3339 times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from iotsec.model.time import Precision, now, parse_rfc3339, rfc3339, utc

MOMENT = datetime(2026, 12, 3, 7, 3, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-03T07:03:00Z", datetime(2026, 12, 3, 7, 3, tzinfo=UTC)),
        ("2026-12-03t07:03:00z", datetime(2026, 12, 3, 7, 3, tzinfo=UTC)),
        ("2026-12-03T08:03:00+01:00", datetime(2026, 12, 3, 7, 3, tzinfo=UTC)),
        ("2026-12-03T02:33:00-04:30", datetime(2026, 12, 3, 7, 3, tzinfo=UTC)),
        ("2026-12-03T07:03:00.123Z", datetime(2026, 12, 3, 7, 3, 0, 123000, tzinfo=UTC)),
        ("2026-12-03T07:03:00.123456789Z", MOMENT),  # nanoseconds (Go, restic): cut to microseconds
        (" 2026-12-03T07:03:00Z\n", datetime(2026, 12, 3, 7, 3, tzinfo=UTC)),
    ],
)
def test_parse_accepts_z_offsets_and_any_fraction(text: str, expected: datetime) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == expected
    assert parsed.utcoffset() is not None


def test_parse_keeps_the_offset_it_read() -> None:
    assert parse_rfc3339("2026-12-03T08:03:00+01:00").utcoffset() == timedelta(hours=1)


def test_parse_refuses_a_time_without_zone_naming_what() -> None:
    with pytest.raises(ValueError, match=r"^lastSuccess '2026-12-03T07:03:00' has no time zone$"):
        parse_rfc3339("2026-12-03T07:03:00", "lastSuccess")


@pytest.mark.parametrize("text", ["yesterday", "", "2026-13-01T00:00:00Z", "2026-12-03T07:03:00+25:00"])
def test_parse_refuses_what_is_not_a_time_naming_what(text: str) -> None:
    with pytest.raises(ValueError, match=r"^sealedAt .* is not an RFC 3339 time$"):
        parse_rfc3339(text, "sealedAt")


def test_parse_reads_a_naive_time_as_utc_only_when_asked() -> None:
    assert parse_rfc3339("2026-11-01", naive_is_utc=True) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_rfc3339("2026-11-01T01:00:00+01:00", naive_is_utc=True) == datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("precision", "expected"),
    [
        ("seconds", "2026-12-03T07:03:00Z"),
        ("milliseconds", "2026-12-03T07:03:00.123Z"),
        ("microseconds", "2026-12-03T07:03:00.123456Z"),
        ("auto", "2026-12-03T07:03:00.123456Z"),
    ],
)
def test_rfc3339_precisions(precision: Precision, expected: str) -> None:
    assert rfc3339(MOMENT, precision) == expected


def test_rfc3339_default_is_whole_seconds_and_auto_drops_a_zero_fraction() -> None:
    whole = MOMENT.replace(microsecond=0)
    assert rfc3339(MOMENT) == "2026-12-03T07:03:00Z"
    assert rfc3339(whole, "auto") == "2026-12-03T07:03:00Z"
    assert rfc3339(whole, "microseconds") == "2026-12-03T07:03:00.000000Z"


def test_rfc3339_writes_utc_whatever_the_zone() -> None:
    eastern = MOMENT.astimezone(timezone(timedelta(hours=-5)))
    assert rfc3339(eastern, "microseconds") == "2026-12-03T07:03:00.123456Z"


def test_rfc3339_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="a timestamp must be a timezone-aware datetime"):
        rfc3339(datetime(2026, 12, 3, 7, 3))


def test_round_trip_is_exact_at_microseconds() -> None:
    assert parse_rfc3339(rfc3339(MOMENT, "microseconds")) == MOMENT
    assert parse_rfc3339(rfc3339(MOMENT, "auto")) == MOMENT


def test_utc_names_what_and_now_is_aware() -> None:
    with pytest.raises(ValueError, match=r"^created must be a timezone-aware datetime$"):
        utc(datetime(2026, 1, 1), "created")
    assert utc(MOMENT.astimezone(timezone(timedelta(hours=2)))).tzinfo is UTC
    assert now().tzinfo is UTC
