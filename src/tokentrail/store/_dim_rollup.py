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
from tokentrail.store.migrations import DAY_US

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
_BASE = tuple(COL[c] for c in SCOPE_COLUMNS)
_DIMS = tuple(COL[c] for c in DIM_COLUMNS.values())
_TAGS = COL["tags"]
_NAMES = tuple(DIM_COLUMNS)
KEY_WIDTH = 1 + len(SCOPE_COLUMNS) + 2  # time, org, team, project, dim, value


def aggregate_dims(rows: Iterable[tuple[Any, ...]], tag_keys: Sequence[str]) -> list[tuple[Any, ...]]:
    """Hourly dimension-rollup rows of a batch; a missing value (or tag) becomes ''."""
    cols = (*_BASE, *_DIMS, *((_TAGS,) if tag_keys else ()))
    groups = aggregate(rows, cols)
    acc: dict[tuple[Any, ...], list[int]] = {}
    n_dims = len(_DIMS)
    parsed: dict[str, dict[str, Any]] = {}
    for g in groups:
        base = g[:4]
        values = g[4 : 4 + n_dims]
        measures = g[4 + n_dims + (1 if tag_keys else 0) :]
        keys = [(*base, name, v) for name, v in zip(_NAMES, values, strict=True)]
        if tag_keys:
            text = g[4 + n_dims]
            tags = parsed.get(text)
            if tags is None:
                tags = parsed[text] = _tags(text)
            keys += [(*base, f"tag.{k}", _tag_value(tags.get(k))) for k in tag_keys]
        for key in keys:
            m = acc.get(key)
            if m is None:
                acc[key] = list(measures)
            else:
                acc[key] = [a + b for a, b in zip(m, measures, strict=True)]
    return [(*k, *v) for k, v in acc.items()]


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
