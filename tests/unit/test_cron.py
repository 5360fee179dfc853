import pytest

from iotsec.api.cron import CronError, validate_cron


@pytest.mark.parametrize(
    "schedule",
    [
        "0 2 * * *",
        "*/15 * * * *",
        "0 0 1 1 *",
        "30 4 * * SUN",
        "0 6 1 * *",
        "0 0-23/2 * JAN-MAR MON-FRI",
        "@daily",
        "@hourly",
        "5,35 * * * 0",
        "0 12 ? * 7",
    ],
)
def test_accepts_schedules_cronjobs_accept(schedule):
    validate_cron(schedule)


@pytest.mark.parametrize(
    ("schedule", "fragment"),
    [
        ("61 2 * * *", "minute: 61 is outside 0-59"),
        ("0 24 * * *", "hour: 24 is outside 0-23"),
        ("0 0 0 * *", "day of month: 0 is outside 1-31"),
        ("0 0 * 13 *", "month: 13 is outside 1-12"),
        ("0 0 * * 8", "day of week: 8 is outside 0-7"),
        ("0 2 * *", "expected 5 fields"),
        ("0 2 * * * *", "expected 5 fields"),
        ("*/0 * * * *", "step '0'"),
        ("5-1 * * * *", "runs backwards"),
        ("x * * * *", "'x' is not a number"),
        ("0 0 * FOO *", "'FOO' is not a number or a name"),
        ("@fortnightly", "unknown descriptor"),
        ("CRON_TZ=UTC 0 2 * * *", "timeZone field"),
    ],
)
def test_rejects_with_the_offending_field(schedule, fragment):
    with pytest.raises(CronError, match=None) as caught:
        validate_cron(schedule)
    assert fragment in str(caught.value)
