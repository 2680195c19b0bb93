"""Which rollup a report can read, or why it scans the raw events.

- the main rollup (`rollup_hourly`/`rollup_daily`): every grouping and filter dimension is one of
  its eight (org, team, project, agent, provider, model, task_type, kind);
- a dimension rollup (`rollup_dim_*`, tokentrail.store.dim_rollups): besides org, team and
  project, exactly one other dimension, rolled up there (customer, user, workflow, status, tool,
  step, or a tag key the ledger declares);
- otherwise a raw scan, with a note saying why (the report shows it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokentrail.store._dim_rollup import DIM_COLUMNS
from tokentrail.store.dim_rollups import TAGS_ENV, tag_keys
from tokentrail.store.rollup_columns import ROLLUP_DIMENSIONS
from tokentrail.types import Store

_SCOPE = frozenset(("org", "team", "project"))


@dataclass(frozen=True, slots=True)
class Plan:
    """`dim`: the dimension rollup to read (None with `scan` False: the main rollup); `scan`: raw
    events only, `note` says why."""

    dim: str | None = None
    scan: bool = False
    note: str | None = None


def choose(store: Store, dims: Sequence[str]) -> Plan:
    """The plan for a report grouped and filtered by `dims` (time buckets left out)."""
    used = set(dims)
    if used <= set(ROLLUP_DIMENSIONS):
        return Plan()
    extra = sorted(used - _SCOPE)
    if len(extra) > 1:
        names = ", ".join(extra)
        return Plan(scan=True, note=f"{names} together are not rolled up: the report scanned the raw events")
    (d,) = extra
    if d not in DIM_COLUMNS and not d.startswith("tag."):
        return Plan(scan=True, note=f"{d} is not rolled up (unbounded): the report scanned the raw events")
    keys = tag_keys(store)
    if keys is None:
        return Plan(scan=True, note="the ledger predates the dimension rollups (run `tokentrail migrate`)")
    if d.startswith("tag.") and d[4:] not in keys:
        return Plan(
            scan=True,
            note=f"tag key {d[4:]!r} is not rolled up (declare it in {TAGS_ENV}): the report scanned the raw events",
        )
    return Plan(dim=d)
