"""Which days of the rollups `tokentrail audit verify` rechecks by default (without `--full`).

Recomputing every rollup row from every event grows with the ledger; the default checks a window
of whole UTC days instead:

- the days any event after the anchor seq falls in (the latest signed checkpoint, or the row
  before `--from-seq`): the rollup rows written since the last verified head;
- every day from the day before the newest event's on (the live days, and any row dated later);
- every day before the first event's (no events there: any rollup row there is forged);
- one week in seven of the rest, rotating with the UTC date: the weeks (day number // 7) whose
  number is the day number of today, mod 7. Run daily, the default rechecks every past day at
  least once in any 7 consecutive days, so a rollup row changed by hand cannot pass it for ever.

`--full` checks every row. The window is whole days (so whole hourly and daily rows alike),
merged into at most MAX_RANGES ranges (merging only widens what is checked).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from tokentrail.store.rollup_columns import DAY_US, floor_to
from tokentrail.types import Store

ROTATION = 7  # weeks in a cycle: one in ROTATION is rechecked on each UTC day
WEEK_DAYS = 7
MAX_RANGES = 64  # statements per check stay bounded however scattered the touched days are
Range = tuple[int | None, int | None]  # [start_us, end_us), day-aligned; None: unbounded
_LOW, _HIGH = -(2**63), 2**63  # unbounded ends, while merging


@dataclass(frozen=True, slots=True)
class Window:
    """The day ranges a default verification rechecks, and why (for the command's output)."""

    ranges: tuple[Range, ...]
    rotation: int  # today's rotation: the weeks w with w % ROTATION == rotation
    anchor_seq: int | None  # the days of the events after this seq are in


def today_rotation(now_s: float | None = None) -> int:
    """The rotation of a UTC day: its day number mod ROTATION."""
    day = int((time.time() if now_s is None else now_s) // 86_400)
    return day % ROTATION


def window(store: Store, *, anchor_seq: int | None, rotation: int | None = None, from_us: int | None = None) -> Window:
    """The window for this ledger now (see the module docstring). `from_us`: nothing before its UTC
    day (a walk from a later seq, e.g. after old partitions were archived: their rollup rows stay)."""
    r = today_rotation() if rotation is None else rotation % ROTATION
    span = store.query("SELECT MIN(ts_us), MAX(ts_us) FROM events")[0]
    if span[0] is None:
        return Window(((None, None),), r, anchor_seq)  # no events: every rollup row is forged
    first, last = _day(int(span[0])), _day(int(span[1]))
    ranges: list[Range] = [(None, first), (max(first, last - DAY_US), None)]
    ranges += rotation_ranges(first, last, r)
    if anchor_seq is not None:
        ranges += [(d, d + DAY_US) for d in touched_days(store, anchor_seq)]
    if from_us is not None:
        ranges = clip(ranges, _day(from_us))
    return Window(merge(ranges, MAX_RANGES), r, anchor_seq)


def clip(ranges: Iterable[Range], start: int) -> list[Range]:
    """The parts of `ranges` from `start` on."""
    return [(start if lo is None else max(start, lo), hi) for lo, hi in ranges if hi is None or hi > start]


def touched_days(store: Store, after_seq: int) -> list[int]:
    """The UTC days (their first µs) the events after `after_seq` fall in."""
    p = store.dialect.param
    rows = store.query(f"SELECT DISTINCT {floor_to('ts_us', DAY_US)} FROM events WHERE seq > {p}", [after_seq])
    return sorted(int(r[0]) for r in rows)


def rotation_ranges(first_day: int, last_day: int, r: int) -> list[Range]:
    """The weeks between two days (inclusive) whose number is r mod ROTATION, as ranges."""
    week_us = WEEK_DAYS * DAY_US
    w0, w1 = first_day // week_us, last_day // week_us
    start = w0 + (r - w0) % ROTATION
    return [(w * week_us, (w + 1) * week_us) for w in range(start, w1 + 1, ROTATION)]


def merge(ranges: Iterable[Range], cap: int) -> tuple[Range, ...]:
    """Sorted, overlapping and adjacent ranges joined; then the smallest gaps closed until at most
    `cap` remain (a wider check, never a narrower one)."""
    spans = sorted((_LOW if lo is None else lo, _HIGH if hi is None else hi) for lo, hi in ranges)
    out: list[tuple[int, int]] = []
    for lo, hi in spans:
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    if len(out) > cap:
        gaps = [out[i + 1][0] - out[i][1] for i in range(len(out) - 1)]
        limit = sorted(gaps)[len(out) - cap - 1]  # closing every gap up to it leaves <= cap
        joined = [out[0]]
        for gap, nxt in zip(gaps, out[1:], strict=True):
            joined[-1:] = [(joined[-1][0], nxt[1])] if gap <= limit else [joined[-1], nxt]
        out = joined
    return tuple((None if lo == _LOW else lo, None if hi == _HIGH else hi) for lo, hi in out)


def _day(ts_us: int) -> int:
    return ts_us - ts_us % DAY_US
