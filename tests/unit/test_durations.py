from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iotsec.api.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90d", 90 * 86400),
        ("12h", 43200),
        ("1h30m", 5400),
        ("2w", 14 * 86400),
        ("45s", 45),
        ("1d12h", 129600),
    ],
)
def test_parses(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "90", "d", "1y", "1.5h", "-1h", "1h 30m", "0d", "0h0m"])
def test_rejects(text):
    with pytest.raises(ValueError, match=r"duration|zero"):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=10**9))
def test_format_round_trips(seconds):
    delta = timedelta(seconds=seconds)
    assert parse_duration(format_duration(delta)) == delta
