"""Time specs for `--since` / `--until`: `30m`, `12h`, `7d`, `4w` ago, a date, or ISO-8601."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ACCEPTED = (
    "accepted: 30m, 12h, 7d, 4w (that long ago), now, a date YYYY-MM-DD (midnight in --tz, UTC by default), "
    "or ISO-8601 such as 2026-01-31T09:30:00+01:00 (without an offset: in --tz)"
)
_AGO = re.compile(r"(\d+)\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def zone(tz: str | None) -> tzinfo:
    """The time zone an IANA name names (None or '' is UTC); ValueError for an unknown name."""
    if not tz or tz.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}: use an IANA name such as Europe/Paris or UTC") from None


def parse_time(text: str, *, tz: str | None = None, now: datetime | None = None) -> datetime:
    """An aware UTC datetime for a time spec; ValueError saying what was wrong otherwise."""
    where = zone(tz)
    spec = text.strip()
    lowered = spec.lower()
    if not spec:
        raise ValueError(f"empty time; {ACCEPTED}")
    if lowered == "now":
        return _now(now)
    m = _AGO.fullmatch(lowered)
    if m:
        amount = int(m.group(1))
        try:
            return _now(now) - timedelta(**{_UNITS[m.group(2)]: amount})
        except OverflowError:
            raise ValueError(f"time {text!r} is too far back") from None
    if _DATE.fullmatch(spec):
        try:
            day = datetime.strptime(spec, "%Y-%m-%d")
        except ValueError:
            raise ValueError(f"{text!r} is not a real date; {ACCEPTED}") from None
        return day.replace(tzinfo=where).astimezone(UTC)
    if spec[:1].isdigit() and len(spec) > 10 and spec[10] in "Tt ":
        try:
            moment = datetime.fromisoformat(spec)
        except ValueError:
            raise ValueError(f"{text!r} is not a valid ISO-8601 time; {ACCEPTED}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=where)
        return moment.astimezone(UTC)
    raise ValueError(f"cannot read the time {text!r}; {ACCEPTED}")


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)
