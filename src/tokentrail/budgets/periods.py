"""Budget periods: `call`, `session`, calendar `hour` / `day` / `week` / `month` in a time zone,
and `rolling:<duration>` burn-rate windows.

Calendar periods start at the local wall-clock boundary of the budget's time zone (zoneinfo, so
DST is handled: a local day may last 23 or 25 hours, an hour repeated at the autumn change is two
distinct periods, a midnight that does not exist starts the day at the first local time that
does). Bounds are UTC microseconds since the epoch, start inclusive, end exclusive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from tokentrail.events import from_micros, ts_micros
from tokentrail.exceptions import ConfigError
from tokentrail.timespec import zone

CALENDAR = ("hour", "day", "week", "month")
KINDS = ("call", "session", *CALENDAR, "rolling")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_US = 1_000_000


@dataclass(frozen=True, slots=True)
class Period:
    """A parsed period. `window_us` is set for rolling windows only."""

    kind: str
    text: str
    window_us: int = 0

    @property
    def calendar(self) -> bool:
        return self.kind in CALENDAR

    @property
    def rolling(self) -> bool:
        return self.kind == "rolling"


def parse_period(text: str) -> Period:
    """`call`, `session`, `hour`, `day`, `week`, `month`, or `rolling:<duration>` (30s, 5m, 1h, 1d)."""
    if not isinstance(text, str):
        raise ConfigError(f"period must be a string, not {type(text).__name__}")
    spec = text.strip().lower()
    if spec in KINDS and spec != "rolling":
        return Period(spec, spec)
    if spec.startswith("rolling:"):
        m = _DURATION.fullmatch(spec[len("rolling:") :].strip())
        if m:
            seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
            if 1 <= seconds <= 366 * 86400:
                return Period("rolling", f"rolling:{m.group(1)}{m.group(2)}", int(seconds * _US))
            raise ConfigError(f"period {text!r}: a rolling window lasts from 1s to 366d")
    raise ConfigError(
        f"unknown period {text!r}: use call, session, hour, day, week, month, or rolling:<duration> "
        "such as rolling:5m (units s, m, h, d, w)"
    )


def check_tz(tz: str | None) -> tzinfo:
    try:
        return zone(tz)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def bounds(period: Period, at: datetime, tz: str | tzinfo | None) -> tuple[int, int]:
    """(start_us, end_us) of the calendar period holding `at` in `tz`."""
    where = tz if isinstance(tz, tzinfo) else check_tz(tz)
    start = floor_local(period.kind, at, where)
    end = floor_local(period.kind, _next_local(period.kind, start, where), where)
    return ts_micros(start), ts_micros(end)


def bounds_us(period: Period, at_us: int, tz: str | tzinfo | None) -> tuple[int, int]:
    return bounds(period, from_micros(at_us), tz)


def floor_local(kind: str, at: datetime, where: tzinfo) -> datetime:
    """The UTC instant at which the local `kind` period holding `at` began."""
    local = at.astimezone(where)
    if kind == "hour":
        # keep `fold`, so the repeated hour of an autumn change is its own period
        start = local.replace(minute=0, second=0, microsecond=0)
        # offsets like +05:30 or a 30-minute DST shift: the hour began where the local clock read :00
        return _existing(start, where)
    if kind == "day":
        day = local.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
        return _existing(day, where)
    if kind == "week":
        monday = (local - timedelta(days=local.weekday())).replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
        return _existing(monday, where)
    if kind == "month":
        first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0, fold=0)
        return _existing(first, where)
    raise ValueError(f"{kind} is not a calendar period")


def _existing(local: datetime, where: tzinfo) -> datetime:
    """A local wall time as a UTC instant. A wall time skipped by a DST change (a midnight that
    never happened) maps to the first instant whose local time is past it: the change itself."""
    utc = local.astimezone(UTC)
    wall = local.replace(tzinfo=None)
    if utc.astimezone(where).replace(tzinfo=None) == wall:
        return utc
    # nonexistent: the change lies between the two readings of the wall time; find it (whole minutes)
    lo = min(utc, local.replace(fold=1 - local.fold).astimezone(UTC))
    hi = max(utc, local.replace(fold=1 - local.fold).astimezone(UTC))
    probe = lo.replace(second=0, microsecond=0)
    while probe < hi and probe.astimezone(where).replace(tzinfo=None) < wall:
        probe += timedelta(minutes=1)
    return probe


def _next_local(kind: str, start: datetime, where: tzinfo) -> datetime:
    """An instant inside the next period after the one that began at `start`."""
    local = start.astimezone(where)
    if kind == "hour":
        return start + timedelta(hours=1, minutes=1)
    if kind == "day":
        return (local.replace(hour=12, fold=0) + timedelta(days=1)).astimezone(UTC)
    if kind == "week":
        return (local.replace(hour=12, fold=0) + timedelta(days=7)).astimezone(UTC)
    if kind == "month":
        y, m = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        return local.replace(year=y, month=m, day=15, hour=12, fold=0).astimezone(UTC)
    raise ValueError(kind)


def parse_duration_s(text: str) -> float:
    """`30s`, `5m`, `1.5h` as seconds."""
    m = _DURATION.fullmatch(text.strip().lower())
    if not m:
        raise ConfigError(f"cannot read the duration {text!r}: use e.g. 30s, 5m, 1h")
    return float(m.group(1)) * _UNIT_S[m.group(2)]
