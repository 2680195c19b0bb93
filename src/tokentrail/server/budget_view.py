"""Budgets and alerts as the server shows them, scoped by the caller's key.

A scoped key (a team key) sees a budget's row only when that row is about its scope: a budget
scoped to its team, or its team's bucket of a `team=*` budget; a key that also pins, say, an agent
sees only rows that pin that agent too. Budgets over every team are for keys of no scope.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from tokentrail.budgets.buckets import bucket_team, bucket_values, visible

__all__ = ["alerts", "bucket_team", "bucket_values", "budget_ratios", "budget_statuses", "visible"]


def budget_statuses(ledger: Any, scope: Mapping[str, str] | None) -> list[Any]:
    """BudgetStatus rows of every budget's current period that a key of `scope` (None or empty:
    no scope) may see."""
    rows = ledger.budgets.status()
    return [s for s in rows if visible(s.bucket, [k for k, _ in s.budget.scope], scope or {})]


def budget_ratios(ledger: Any, team: str | None) -> Iterator[tuple[str, float]]:
    """(budget name, the largest share of its limit used by any of its buckets)."""
    best: dict[str, float] = {}
    for s in budget_statuses(ledger, None if team is None else {"team": team}):
        name = s.budget.name
        best[name] = max(best.get(name, 0.0), float(s.used))
    yield from sorted(best.items())


def alerts(
    ledger: Any,
    scope: Mapping[str, str] | None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    budget: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Alerts, newest first; a scoped key sees those whose bucket lies in its scope (read with the
    budget's scope keys: alerts of a budget since removed only by keys of no scope)."""
    from tokentrail.budgets.alerts import list_alerts

    found = list_alerts(ledger.store, since=since, until=until, budget=budget, limit=5000 if scope else limit)
    keys: dict[str, list[str] | None] = {}  # budget -> its scope keys (None: no longer defined)
    out = []
    for a in found:
        if scope:
            if a.budget not in keys:
                b = ledger.budgets.get(a.budget)
                keys[a.budget] = None if b is None else [k for k, _ in b.scope]
            known = keys[a.budget]
            if known is None or not visible(a.scope, known, scope):
                continue
        out.append(a.to_dict())
        if len(out) >= limit:
            break
    return out
