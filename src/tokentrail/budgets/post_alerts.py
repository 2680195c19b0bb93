"""The alerts a post fires: thresholds crossed (once per period per budget) and overages."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tokentrail.budgets.alerts import Alert, overage_message, threshold_message
from tokentrail.budgets.definitions import Rule
from tokentrail.events import from_micros, nano_to_usd, new_event_id, ts_micros
from tokentrail.store.budgets import FOREVER_US, Counter

if TYPE_CHECKING:
    from tokentrail.budgets.ops import Hold


def alerts_for(
    c: Counter, hold: Hold, nusd: int, tokens: int, now: datetime, blocks: dict[str, int]
) -> list[tuple[tuple[Any, ...], int]]:
    r: Rule = c.extra
    b = r.budget
    out: list[tuple[tuple[Any, ...], int]] = []
    start, end = (from_micros(c.start_us) if c.start_us else None), (from_micros(c.end_us) if c.end_us else None)
    if c.key in blocks:
        until = blocks[c.key]
        alert = Alert(
            alert_id=new_event_id(),
            kind="overage",
            ts=now,
            budget=b.name,
            scope=c.bucket,
            period=b.period,
            period_start=start,
            period_end=end,
            threshold=None,
            posted_usd=nano_to_usd(c.posted_nusd),
            limit_usd=b.limit_usd,
            posted_tokens=c.posted_tokens,
            limit_tokens=b.limit_tokens,
            session_id=hold.session_id,
            message=overage_message(
                b.name,
                c.bucket,
                b.period,
                actual_usd=nano_to_usd(nusd) or Decimal(0),
                reserved_usd=hold.cost_usd,
                actual_tokens=tokens,
                reserved_tokens=hold.tokens,
                session_id=hold.session_id,
                until=None if until >= FOREVER_US else from_micros(until),
            ),
        )
        out.append((alert.to_row(f"{c.key}\x1foverage\x1f{hold.hold_id}"), 0))
    used = 0.0
    if r.limit_nusd:
        used = c.posted_nusd / r.limit_nusd
    if r.limit_tokens:
        used = max(used, c.posted_tokens / r.limit_tokens)
    for i, t in enumerate(b.alert_at):
        if used < t - 1e-12:
            break
        if not r.period.rolling and (c.alerted >> i) & 1:
            continue
        key = f"{c.key}\x1f{t!r}"
        if r.period.rolling:  # at most once per window length
            key += f"\x1f{ts_micros(now) // r.period.window_us}"
        alert = Alert(
            alert_id=new_event_id(),
            kind="threshold",
            ts=now,
            budget=b.name,
            scope=c.bucket,
            period=b.period,
            period_start=start,
            period_end=end,
            threshold=t,
            posted_usd=nano_to_usd(c.posted_nusd) if r.limit_nusd is not None else None,
            limit_usd=b.limit_usd,
            posted_tokens=c.posted_tokens if r.limit_tokens is not None else None,
            limit_tokens=b.limit_tokens,
            session_id=hold.session_id,
            message=threshold_message(
                b.name,
                c.bucket,
                b.period,
                t,
                posted_usd=nano_to_usd(c.posted_nusd),
                limit_usd=b.limit_usd,
                posted_tokens=c.posted_tokens,
                limit_tokens=b.limit_tokens,
                session_id=hold.session_id,
            ),
        )
        out.append((alert.to_row(key), 1 << i))
    return out


def cap_overage(r: Rule, hold: Hold, nusd: int, tokens: int, now: datetime) -> tuple[Any, ...]:
    """The alert row of a call that cost more than a per-call budget (`period="call"`) allows."""
    b = r.budget
    bucket = b.scope_text
    alert = Alert(
        alert_id=new_event_id(),
        kind="overage",
        ts=now,
        budget=b.name,
        scope=bucket,
        period="call",
        period_start=None,
        period_end=None,
        threshold=None,
        posted_usd=nano_to_usd(nusd),
        limit_usd=b.limit_usd,
        posted_tokens=tokens,
        limit_tokens=b.limit_tokens,
        session_id=hold.session_id,
        message=overage_message(
            b.name,
            bucket,
            "call",
            actual_usd=nano_to_usd(nusd) or Decimal(0),
            reserved_usd=hold.cost_usd,
            actual_tokens=tokens,
            reserved_tokens=hold.tokens,
            session_id=hold.session_id,
            until=None,
        ),
    )
    return alert.to_row(f"{b.name}\x1fcall-overage\x1f{hold.hold_id}")
