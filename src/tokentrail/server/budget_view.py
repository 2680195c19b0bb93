"""Budgets and alerts as the server shows them, scoped by the caller's team.

A team key sees a budget's row only when that row is about its team: a budget scoped to the
team, or the team's bucket of a `team=*` budget. Budgets over every team are admin-only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any


def bucket_team(text: str, keys: Sequence[str]) -> str | None:
    """The team of a bucket shown as `text` ("k1=v1, k2=v2", the budget's scope keys in order),
    or None unless the text reads exactly one way: a value holding ", team=…" could otherwise
    pass one team's bucket off as another's."""
    if "team" not in keys:
        return None
    found: list[str | None] = []
    for values in _readings(text, tuple(keys)):
        found.append(values[keys.index("team")])
        if len(found) > 1:
            return None
    return found[0] if found else None


def _readings(text: str, keys: tuple[str, ...]) -> Iterator[list[str]]:
    """Every way `text` splits into values of `keys` (memoised by where a value may start, so a
    text full of ", k=" look-alikes stays cheap; the caller stops after two)."""
    dead: set[tuple[int, int]] = set()

    def walk(pos: int, i: int) -> Iterator[list[str]]:
        head = ("" if i == 0 else ", ") + keys[i] + "="
        if (pos, i) in dead or not text.startswith(head, pos):
            return
        start = pos + len(head)
        any_found = False
        if i == len(keys) - 1:
            any_found = True
            yield [text[start:]]
        else:
            sep = ", " + keys[i + 1] + "="
            at = text.find(sep, start)
            while at != -1:
                for rest in walk(at, i + 1):
                    any_found = True
                    yield [text[start:at], *rest]
                at = text.find(sep, at + 1)
        if not any_found:
            dead.add((pos, i))

    return walk(0, 0) if keys else iter(())


def budget_statuses(ledger: Any, team: str | None) -> list[Any]:
    """BudgetStatus rows of every budget's current period that `team` (None: all) may see."""
    rows = ledger.budgets.status()
    if team is None:
        return list(rows)
    return [s for s in rows if bucket_team(s.bucket, [k for k, _ in s.budget.scope]) == team]


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
    keys: dict[str, list[str] | None] = {}  # budget -> its scope keys (None: no longer defined)
    out = []
    for a in found:
        d = a.to_dict()
        if team is not None:
            if a.budget not in keys:
                b = ledger.budgets.get(a.budget)
                keys[a.budget] = None if b is None else [k for k, _ in b.scope]
            known = keys[a.budget]
            if known is None or bucket_team(a.scope, known) != team:
                continue
        out.append(d)
        if len(out) >= limit:
            break
    return out
