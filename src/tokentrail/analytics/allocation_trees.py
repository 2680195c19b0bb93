"""The sub_agents allocation: an orchestrator session's own cost goes to the owners of its
sub-agent sessions (agent trees), in proportion to what each owner spent in them::

    [[allocations]]
    name = "orchestrators"
    method = "sub_agents"
    from = { agent = "orchestrator" }   # optional: which parent sessions (default: any with children)
    by = "team"                         # the owner of a sub-agent session

A parent's own events (that session id's, not its children's) are split over the distinct `by`
values of its whole subtree (children, grandchildren, …), weighted by each owner's priced cost
in those sessions over the whole ledger (not only the export window: a run that crosses midnight
splits the same way on both days). A sub-agent that is itself a parent weighs with its own cost
before its own split. A parent with no priced sub-agent spend (or none with an owner) keeps its
cost; unpriced lines have no cost to split and stay. Splits are per line by the largest remainder
on nano-dollars (ties to the first owner by name), so totals are exact. sub_agents rules run
first, in file order, then the other rules on the result. The ledger is never changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokentrail.analytics.allocation import Rule, allocate, split_line
from tokentrail.analytics.export import Line, lines
from tokentrail.analytics.trees import session_tree
from tokentrail.store.allocation_trees import owner_costs
from tokentrail.store.economics import children
from tokentrail.types import Store

MAX_CACHED = 10_000  # parent sessions whose owner weights are remembered across periods


def allocated_lines(
    store: Store,
    rules: Iterable[Rule],
    *,
    since: datetime | None,
    until: datetime | None,
    granularity: str = "day",
    tz: str | None = None,
    where: Mapping[str, Any] | None = None,
    scope: Mapping[str, str] | None = None,
) -> Iterator[Line]:
    """The export lines of the window with every rule applied (sub_agents first).
    ValueError on bad input, at once."""
    rules = tuple(rules)
    trees = tuple(r for r in rules if r.method == "sub_agents")
    others = tuple(r for r in rules if r.method != "sub_agents")
    src = lines(
        store, since=since, until=until, granularity=granularity, tz=tz, where=where, scope=scope, sessions=bool(trees)
    )
    if trees:
        src = _by_trees(store, src, trees)
    return allocate(src, others)


def _by_trees(store: Store, src: Iterator[Line], rules: tuple[Rule, ...]) -> Iterator[Line]:
    cache: dict[tuple[str, str], tuple[list[str], list[int | Decimal]]] = {}
    period: list[Line] = []
    for line in src:
        if period and (line.start, line.end) != (period[0].start, period[0].end):
            yield from _period(store, period, rules, cache)
            period = []
        period.append(line)
    if period:
        yield from _period(store, period, rules, cache)


def _period(store: Store, period: list[Line], rules: tuple[Rule, ...], cache: dict[tuple[str, str], Any]) -> list[Line]:
    for rule in rules:
        parents = sorted({str(ln.extra["session_id"]) for ln in period if _candidate(ln, rule)})
        todo = [s for s in parents if (s, rule.dimension) not in cache]
        if len(cache) + len(todo) > MAX_CACHED:
            cache.clear()
            todo = parents
        with_children = {str(p) for p, _ in children(store, todo, "", [])} if todo else set()
        for sid in todo:
            cache[(sid, rule.dimension)] = _owners(store, sid, rule.dimension) if sid in with_children else ([], [])
        split = {sid: cache[(sid, rule.dimension)] for sid in parents}
        out: list[Line] = []
        for ln in period:
            targets, weights = split[str(ln.extra["session_id"])] if _candidate(ln, rule) else ([], [])
            out += split_line(ln, rule, targets, weights) if targets else [ln]
        period = out
    return _merged(period)


def _candidate(ln: Line, rule: Rule) -> bool:
    """A priced line of a session's own events that the rule's `from` picks."""
    return ln.extra.get("session_id") is not None and bool(ln.cost_nusd) and rule.matches(ln)


def _owners(store: Store, parent: str, dimension: str) -> tuple[list[str], list[int | Decimal]]:
    """The owners of a parent session's subtree (sorted: deterministic) and what each spent there."""
    tree = session_tree(store, parent)
    subtree = [n.session_id for n in tree.walk()[1:]] if tree else []
    spent = owner_costs(store, subtree, dimension) if subtree else {}
    names = sorted(o for o, c in spent.items() if o is not None and c > 0)
    return names, [spent[n] for n in names]


def _merged(period: list[Line]) -> list[Line]:
    """The lines summed back over sessions: an export keeps its shape (first-seen order)."""
    merged: dict[tuple[Any, ...], Line] = {}
    for ln in period:
        key = (
            ln.kind,
            ln.provider,
            ln.model,
            ln.token_class,
            tuple(sorted(ln.attribution.items(), key=str)),
            tuple(sorted(ln.tags.items())),
            ln.price_version,
            ln.unit_price_mtok,
            ln.allocated_from,
            ln.cost_nusd is None,
        )
        have = merged.get(key)
        if have is None:
            merged[key] = replace(ln, extra={})
        else:
            merged[key] = replace(
                have,
                calls=have.calls + ln.calls,
                tokens=have.tokens + ln.tokens,
                cost_nusd=None if have.cost_nusd is None else have.cost_nusd + (ln.cost_nusd or 0),
                estimated_calls=have.estimated_calls + ln.estimated_calls,
            )
    return list(merged.values())


__all__ = ["allocated_lines"]
