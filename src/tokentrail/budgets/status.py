"""Where each budget stands: limit, posted, reserved, remaining and period end (`budget status`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tokentrail.budgets.definitions import Rule
from tokentrail.budgets.periods import bounds
from tokentrail.events import from_micros, nano_to_usd, ts_micros
from tokentrail.store.budgets import FOREVER_US, Counter

if TYPE_CHECKING:
    from tokentrail.budgets.definitions import Budget
    from tokentrail.budgets.facade import Budgets

_MAX_BUCKETS = 200


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """Where one budget (one bucket of a `*` budget) stands in its current period."""

    budget: Budget
    bucket: str
    period_start: datetime | None
    period_end: datetime | None
    posted_usd: Decimal
    reserved_usd: Decimal
    posted_tokens: int
    reserved_tokens: int
    blocked_until: datetime | None = None  # None while locked: until the session ends
    locked: bool = False  # an overage refuses every call of this counter (until blocked_until)
    projection: Any = None  # analytics.budget_forecast.ProjectedExhaustion, when it has one

    @property
    def remaining_usd(self) -> Decimal | None:
        lim = self.budget.limit_usd
        return None if lim is None else max(Decimal(0), lim - self.posted_usd - self.reserved_usd)

    @property
    def remaining_tokens(self) -> int | None:
        lim = self.budget.limit_tokens
        return None if lim is None else max(0, lim - self.posted_tokens - self.reserved_tokens)

    @property
    def used(self) -> float:
        """Posted as a fraction of the limit (the larger of USD and tokens)."""
        parts = []
        if self.budget.limit_usd:
            parts.append(float(self.posted_usd / self.budget.limit_usd))
        if self.budget.limit_tokens:
            parts.append(self.posted_tokens / self.budget.limit_tokens)
        return max(parts) if parts else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget.name,
            "scope": self.bucket,
            "period": self.budget.period,
            "action": self.budget.action,
            "period_start": self.period_start.isoformat() if self.period_start else None,
            "period_end": self.period_end.isoformat() if self.period_end else None,
            "limit_usd": _s(self.budget.limit_usd),
            "posted_usd": _s(self.posted_usd),
            "reserved_usd": _s(self.reserved_usd),
            "remaining_usd": _s(self.remaining_usd),
            "limit_tokens": self.budget.limit_tokens,
            "posted_tokens": self.posted_tokens,
            "reserved_tokens": self.reserved_tokens,
            "remaining_tokens": self.remaining_tokens,
            "used": round(self.used, 6),
            "locked": self.locked,
            "blocked_until": self.blocked_until.isoformat() if self.blocked_until else None,
            "projected_exhaustion": self.projection.to_dict() if self.projection is not None else None,
        }


def _s(d: Decimal | None) -> str | None:
    return None if d is None else f"{d.normalize():f}"


def status(budgets: Budgets, name: str | None = None) -> list[BudgetStatus]:
    budgets._refresh(force=True)
    sql = budgets._backend()
    now = datetime.now().astimezone()
    now_us = ts_micros(now)
    out: list[BudgetStatus] = []
    for r in budgets._rules:
        b = r.budget
        if name is not None and b.name != name:
            continue
        start = end = None
        if r.period.calendar:
            start, end = bounds(r.period, now, r.zone)
        counters: list[Counter] = []
        for key, bucket, s_us, e_us, posted, tokens, blocked in sql.counters_of(b.name, _MAX_BUCKETS):
            if r.period.calendar and s_us != start:
                continue  # an earlier period
            c = Counter(key, b.name, bucket, s_us, e_us, r.period.window_us, r.enforce, extra=r)
            c.posted_nusd, c.posted_tokens, c.blocked_until_us = int(posted), int(tokens), blocked
            counters.append(c)
        sql.live(counters, now_us)
        if not counters and not b.wildcards and r.period.kind not in ("session",):
            counters.append(Counter("", b.name, b.scope_text, start, end, r.period.window_us, r.enforce, extra=r))
        for c in counters:
            blocked_until = c.blocked_until_us if c.blocked_until_us and c.blocked_until_us > now_us else None
            out.append(
                BudgetStatus(
                    budget=b,
                    bucket=c.bucket,
                    period_start=from_micros(start) if start is not None else None,
                    period_end=from_micros(end) if end is not None else None,
                    posted_usd=nano_to_usd(c.posted_nusd) or Decimal(0),
                    reserved_usd=nano_to_usd(c.reserved_nusd) or Decimal(0),
                    posted_tokens=c.posted_tokens,
                    reserved_tokens=c.reserved_tokens,
                    blocked_until=from_micros(blocked_until) if blocked_until and blocked_until < FOREVER_US else None,
                    locked=blocked_until is not None,
                )
            )
    from tokentrail.analytics.budget_forecast import with_exhaustion

    return with_exhaustion(budgets, out, now)


__all__ = ["BudgetStatus", "Rule", "status"]
