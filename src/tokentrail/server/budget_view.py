"""Budgets and alerts as the server shows them, scoped by the caller's key.

A scoped key (a team key) sees a budget's row only when that row is about its scope: a budget
scoped to its team, or its team's bucket of a `team=*` budget; a key that also pins, say, an agent
sees only rows that pin that agent too. Budgets over every team are for keys of no scope.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any


def bucket_values(text: str, keys: Sequence[str]) -> dict[str, str] | None:
    """A bucket shown as `text` ("k1=v1, k2=v2", the budget's scope keys in order) as its values,
    or None unless the text reads exactly one way: a value holding ", team=…" could otherwise
    pass one team's bucket off as another's."""
    found: list[list[str]] = []
    for values in _readings(text, tuple(keys)):
        found.append(values)
        if len(found) > 1:
            return None
    return dict(zip(keys, found[0], strict=True)) if found else None


def bucket_team(text: str, keys: Sequence[str]) -> str | None:
    """The team of a bucket (see bucket_values), or None if it has none or reads two ways."""
    return (bucket_values(text, keys) or {}).get("team")


def visible(text: str, keys: Sequence[str], scope: Mapping[str, str]) -> bool:
    """Whether a key of `scope` may see the bucket: it pins every dimension of the scope to the
    key's value (with no scope: every bucket)."""
    if not scope:
        return True
    values = bucket_values(text, keys)
    return values is not None and all(values.get(d) == v for d, v in scope.items())


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
    from tokentrail.alerts import list_alerts

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
