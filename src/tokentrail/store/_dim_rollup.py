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
from typing import Any

from tokentrail.events import COL
from tokentrail.store._rollup import aggregate
from tokentrail.store.rollup_columns import DAY_US, ROLLUP_DIMENSIONS

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
_NAMES = tuple(DIM_COLUMNS)
KEY_WIDTH = 1 + len(SCOPE_COLUMNS) + 2  # time, org, team, project, dim, value
Row = tuple[Any, ...]


def aggregate_both(rows: Sequence[tuple[Any, ...]], tag_keys: Sequence[str] | None) -> tuple[list[Row], list[Row]]:
    """The main hourly rollup rows of a batch and its dimension rows (none when `tag_keys` is None:
    a ledger without dimension rollups), from one pass over the events: grouped first by every
    column either reads, then each group is added to its main key and to each dimension's key."""
    if tag_keys is None:
        return aggregate(rows), []
    cols = (*_MAIN, *_DIMS, *((_TAGS,) if tag_keys else ()))
    groups = aggregate(rows, cols)
    main: dict[tuple[Any, ...], list[tuple[int, ...]]] = {}
    acc: dict[tuple[Any, ...], list[tuple[int, ...]]] = {}
    n_main = 1 + len(_MAIN)
    n_dims = len(_DIMS)
    first = n_main + n_dims + (1 if tag_keys else 0)
    parsed: dict[str, dict[str, Any]] = {}
    for g in groups:
        measures = g[first:]
        key = g[:n_main]
        lst = main.get(key)
        if lst is None:
            main[key] = [measures]
        else:
            lst.append(measures)
        base = (g[0], g[_ORG_AT], g[_TEAM_AT], g[_PROJECT_AT])
        keys = [(*base, name, v) for name, v in zip(_NAMES, g[n_main : n_main + n_dims], strict=True)]
        if tag_keys:
            text = g[n_main + n_dims]
            tags = parsed.get(text)
            if tags is None:
                tags = parsed[text] = _tags(text)
            keys += [(*base, f"tag.{k}", _tag_value(tags.get(k))) for k in tag_keys]
        for k in keys:
            lst = acc.get(k)
            if lst is None:
                acc[k] = [measures]
            else:
                lst.append(measures)
    return _summed(main), _summed(acc)


def _summed(acc: dict[tuple[Any, ...], list[tuple[int, ...]]]) -> list[Row]:
    """Rows `(*key, *measures)`, the measures of each key summed column by column (in C: zip, sum)."""
    return [(*k, *(v[0] if len(v) == 1 else map(sum, zip(*v, strict=True)))) for k, v in acc.items()]


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
