"""Aggregate a batch of event rows into dimension-rollup deltas (the SQLite writer's, in Python).

A dimension rollup row is `(hour_us, org, team, project, dim, value, *measures)`: each event counts
once under each rolled-up dimension (customer, user, …, and each declared tag key). The batch is
first grouped by every column any of them reads (one dict operation per event, with the same
measure code as the main rollup), then each group is spread over the dimensions: a live batch
holds far fewer groups than events, so the per-dimension work is per group, not per event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any

from tokentrail.events import COL, COLUMNS
from tokentrail.store._rollup import aggregate, measures
from tokentrail.store.rollup_columns import DAY_US, HOUR_US, ROLLUP_DIMENSIONS

# Report dimension -> events column: the dimensions every ledger rolls up (besides the main rollup's).
DIM_COLUMNS: dict[str, str] = {
    "customer": "customer",
    "user": "user_id",
    "workflow": "workflow",
    "status": "status",
    "tool": "tool_name",
    "step": "step",
}
SCOPE_COLUMNS = ("org", "team", "project")  # every dimension row keeps these: scoped keys stay on the rollup
_MAIN = tuple(COL[c] for c in ROLLUP_DIMENSIONS)
# where org, team and project sit in a group's key (after its hour)
_ORG_AT, _TEAM_AT, _PROJECT_AT = (1 + ROLLUP_DIMENSIONS.index(c) for c in SCOPE_COLUMNS)
_DIMS = tuple(COL[c] for c in DIM_COLUMNS.values())
_TAGS = COL["tags"]
_TS, _KIND, _STATUS, _COST, _ESTIMATED = (COL[c] for c in ("ts_us", "kind", "status", "cost_nusd", "usage_estimated"))
# the token measures are these columns, in this order (asserted below: a slice of the row)
_TOKENS_FROM, _TOKENS_TO = COL["input_tokens"], COL["reasoning_tokens"] + 1
assert COLUMNS[_TOKENS_FROM:_TOKENS_TO] == (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
_NAMES = tuple(DIM_COLUMNS)
KEY_WIDTH = 1 + len(SCOPE_COLUMNS) + 2  # time, org, team, project, dim, value
Row = tuple[Any, ...]


def aggregate_both(rows: Sequence[tuple[Any, ...]], tag_keys: Sequence[str] | None) -> tuple[list[Row], list[Row]]:
    """The main hourly rollup rows of a batch and its dimension rows (none when `tag_keys` is None:
    a ledger without dimension rollups), from one pass over the events: grouped first by every
    column either reads, then the groups are added up by the main key and by each dimension's key."""
    if tag_keys is None:
        return aggregate(rows), []
    groups = _fine_groups(rows, bool(tag_keys))
    sums = [ms if type(ms) is tuple else tuple(map(sum, zip(*ms, strict=True))) for ms in groups.values()]
    # Column by column over the groups (zip makes the keys in C); NULL is grouped as ''.
    cols = [c if None not in c else [v or "" for v in c] for c in zip(*groups, strict=True)]
    n_main = 1 + len(_MAIN)
    main = [(*k, *s) for k, s in _added(zip(*cols[:n_main], strict=True), sums)]
    scope = (cols[0], cols[_ORG_AT], cols[_TEAM_AT], cols[_PROJECT_AT])
    dims: list[Row] = []
    for name, col in zip(_NAMES, cols[n_main : n_main + len(_DIMS)], strict=True):
        dims += [(*k[:4], name, k[4], *s) for k, s in _added(zip(*scope, col, strict=True), sums)]
    if tag_keys:
        parsed: dict[str, dict[str, Any]] = {}
        for text in cols[-1]:
            if text not in parsed:
                parsed[text] = _tags(text)
        tags = [parsed[text] for text in cols[-1]]
        for key in tag_keys:
            values = [_tag_value(t.get(key)) for t in tags]
            name = f"tag.{key}"
            dims += [(*k[:4], name, k[4], *s) for k, s in _added(zip(*scope, values, strict=True), sums)]
    return main, dims


def _fine_groups(rows: Sequence[Row], with_tags: bool) -> dict[tuple[Any, ...], Any]:
    """The events' measures grouped by (hour, every column the main and dimension keys read):
    one dict operation per event, its key and its measures made in C where they can be. A group
    of one event holds its measures' tuple, a bigger one a list of them: a list per event, alive
    for the whole batch, was what set off the garbage collector's passes over the whole heap."""
    fine = itemgetter(*_MAIN, *_DIMS, *((_TAGS,) if with_tags else ()))
    groups: dict[tuple[Any, ...], Any] = {}
    for r in rows:
        ts, kind, cost = r[_TS], r[_KIND], r[_COST]
        if kind == "llm" and cost is not None and r[_STATUS] == "ok":  # a priced, successful call
            m = (1, 0, *r[_TOKENS_FROM:_TOKENS_TO], cost, 0, 0, 0, 1 if r[_ESTIMATED] else 0)
        else:
            m = measures(r)
        key = (ts - ts % HOUR_US, *fine(r))
        had = groups.get(key)
        if had is None:
            groups[key] = m
        elif type(had) is tuple:
            groups[key] = [had, m]
        else:
            had.append(m)
    return groups


def _added(keys: Iterable[tuple[Any, ...]], sums: Sequence[tuple[int, ...]]) -> list[tuple[tuple[Any, ...], Any]]:
    """(key, measures) pairs: the measures of equal keys summed column by column (in C: zip, sum)."""
    acc: dict[tuple[Any, ...], Any] = {}
    for k, s in zip(keys, sums, strict=True):
        had = acc.get(k)
        if had is None:
            acc[k] = s  # one group: its tuple (no list per key, as in _fine_groups)
        elif type(had) is tuple:
            acc[k] = [had, s]
        else:
            had.append(s)
    return [(k, v if type(v) is tuple else map(sum, zip(*v, strict=True))) for k, v in acc.items()]


def _tags(text: str) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def _tag_value(v: Any) -> str:
    """A tag's value as the report's raw scan reads it (tags are text; anything else as JSON text)."""
    if v is None:
        return ""
    return v if isinstance(v, str) else json.dumps(v)


def dims_by_day(hourly: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The daily deltas of hourly dimension-rollup rows (UTC days)."""
    acc: dict[tuple[Any, ...], list[int]] = {}
    for r in hourly:
        key = (r[0] - r[0] % DAY_US, *r[1:KEY_WIDTH])
        m = acc.get(key)
        if m is None:
            acc[key] = list(r[KEY_WIDTH:])
        else:
            acc[key] = [a + b for a, b in zip(m, r[KEY_WIDTH:], strict=True)]
    return [(*k, *v) for k, v in acc.items()]
