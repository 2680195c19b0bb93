"""Budgets and alerts as the server shows them, scoped by the caller's team.

A team key sees a budget's row only when that row is about its team: a budget scoped to the
team, or the team's bucket of a `team=*` budget. Budgets over every team are admin-only.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any


def _bucket_dims(bucket: str) -> dict[str, str]:
    out = {}
    for part in bucket.split(", "):
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
    return out


def budget_statuses(ledger: Any, team: str | None) -> list[Any]:
    """BudgetStatus rows of every budget's current period that `team` (None: all) may see."""
    rows = ledger.budgets.status()
    if team is None:
        return list(rows)
    return [s for s in rows if _bucket_dims(s.bucket).get("team") == team]


def budget_ratios(ledger: Any, team: str | None) -> Iterator[tuple[str, float]]:
    """(budget name, the largest share of its limit used by any of its buckets)."""
    best: dict[str, float] = {}
    for s in budget_statuses(ledger, team):
        name = s.budget.name
        best[name] = max(best.get(name, 0.0), float(s.used))
    yield from sorted(best.items())


def alerts(
    ledger: Any,
    team: str | None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    budget: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Alerts, newest first; a team key sees those whose scope names its team."""
    from tokentrail.alerts import list_alerts

    found = list_alerts(ledger.store, since=since, until=until, budget=budget, limit=limit if team is None else 5000)
    out = []
    for a in found:
        d = a.to_dict()
        if team is not None and _bucket_dims(str(d.get("scope", ""))).get("team") != team:
            continue
        out.append(d)
        if len(out) >= limit:
            break
    return out
