"""Budget periods: calendar boundaries in a time zone (DST, month and year ends), rolling windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tokentrail.budgets.periods import bounds, parse_period
from tokentrail.exceptions import ConfigError


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def span(kind: str, at: datetime, tz: str) -> tuple[datetime, datetime]:
    start, end = bounds(parse_period(kind), at, tz)
    return datetime.fromtimestamp(start / 1e6, UTC), datetime.fromtimestamp(end / 1e6, UTC)


def test_day_in_utc_and_in_a_zone() -> None:
    assert span("day", utc(2026, 3, 10, 23, 30), "UTC") == (utc(2026, 3, 10), utc(2026, 3, 11))
    # 23:30 UTC is already the 11th in Paris (UTC+1 in March before the change)
    assert span("day", utc(2026, 3, 10, 23, 30), "Europe/Paris") == (utc(2026, 3, 10, 23), utc(2026, 3, 11, 23))


def test_spring_forward_day_lasts_23_hours() -> None:
    start, end = span("day", utc(2026, 3, 29, 12), "Europe/Paris")  # clocks go 02:00 -> 03:00
    assert (start, end) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))
    assert end - start == timedelta(hours=23)


def test_fall_back_day_lasts_25_hours() -> None:
    start, end = span("day", utc(2026, 10, 25, 12), "Europe/Paris")
    assert end - start == timedelta(hours=25)
    assert start == utc(2026, 10, 24, 22)


def test_the_repeated_hour_of_a_fall_back_is_two_periods() -> None:
    tz = "America/New_York"  # 2026-11-01: 01:00-02:00 EDT then 01:00-02:00 EST again
    first = span("hour", utc(2026, 11, 1, 5, 30), tz)  # 01:30 EDT
    second = span("hour", utc(2026, 11, 1, 6, 30), tz)  # 01:30 EST
    assert first == (utc(2026, 11, 1, 5), utc(2026, 11, 1, 6))
    assert second == (utc(2026, 11, 1, 6), utc(2026, 11, 1, 7))


def test_a_midnight_that_does_not_exist_starts_the_day_at_the_change() -> None:
    # Santiago moves its clocks from 00:00 to 01:00 on 2026-09-06: the day begins at 01:00 local
    tz = "America/Santiago"
    start, end = span("day", utc(2026, 9, 6, 15), tz)
    assert start.astimezone(ZoneInfo(tz)).replace(tzinfo=None) == datetime(2026, 9, 6, 1, 0)
    assert end.astimezone(ZoneInfo(tz)).replace(tzinfo=None) == datetime(2026, 9, 7, 0, 0)
    assert end - start == timedelta(hours=23)


def test_half_hour_offsets() -> None:
    start, end = span("hour", utc(2026, 1, 1, 4, 45), "Asia/Kolkata")  # 10:15 IST
    assert (start, end) == (utc(2026, 1, 1, 4, 30), utc(2026, 1, 1, 5, 30))


def test_month_end_and_year_end() -> None:
    assert span("month", utc(2026, 2, 28, 23, 59), "UTC") == (utc(2026, 2, 1), utc(2026, 3, 1))
    assert span("month", utc(2028, 2, 29, 12), "UTC") == (utc(2028, 2, 1), utc(2028, 3, 1))  # leap year
    assert span("month", utc(2026, 12, 31, 23, 59, 59), "UTC") == (utc(2026, 12, 1), utc(2027, 1, 1))
    # 23:30 UTC on Jan 31 is February in Tokyo
    assert span("month", utc(2026, 1, 31, 23, 30), "Asia/Tokyo") == (utc(2026, 1, 31, 15), utc(2026, 2, 28, 15))


def test_week_starts_on_monday_local() -> None:
    start, end = span("week", utc(2026, 11, 25, 12), "Europe/Paris")  # a Wednesday
    assert start == utc(2026, 11, 22, 23) and end == utc(2026, 11, 29, 23)
    assert start.astimezone(ZoneInfo("Europe/Paris")).weekday() == 0


def test_every_instant_falls_in_exactly_its_period() -> None:
    tz = "Europe/London"
    t = utc(2026, 3, 28)
    while t < utc(2026, 4, 2):
        for kind in ("hour", "day", "week", "month"):
            s, e = bounds(parse_period(kind), t, tz)
            us = int(t.timestamp() * 1_000_000)
            assert s <= us < e, (kind, t)
            # the next period starts where this one ends
            assert bounds(parse_period(kind), datetime.fromtimestamp(e / 1e6, UTC), tz)[0] == e
        t += timedelta(minutes=37)


def test_parse_periods() -> None:
    assert parse_period("rolling:5m").window_us == 300_000_000
    assert parse_period(" Rolling:90s ").window_us == 90_000_000
    assert parse_period("month").calendar and parse_period("session").kind == "session"
    for bad in ("fortnight", "rolling:", "rolling:0s", "rolling:5y", "rolling:400d"):
        with pytest.raises(ConfigError):
            parse_period(bad)
