"""SQL of the sub_agents allocation (both backends): what each owner spent in a set of sessions.

The owner column comes from a fixed map (never the caller's text); session ids are parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokentrail.store.reports import COLUMNS, by_ids
from tokentrail.types import Store


def owner_costs(store: Store, session_ids: Sequence[str], dimension: str) -> dict[str | None, int]:
    """Priced cost (nano-dollars) of these sessions' events, by their `dimension` value (None:
    events without one). Unpriced events have no cost to weigh and are left out."""
    column = COLUMNS[dimension]
    out: dict[str | None, int] = {}
    select = f"SELECT {column}, SUM(cost_nusd) FROM events"
    for owner, cost in by_ids(
        store, select, "session_id", session_ids, ["cost_nusd IS NOT NULL"], (), f" GROUP BY {column}"
    ):
        key = None if owner is None else str(owner)
        out[key] = out.get(key, 0) + int(cost or 0)
    return out


__all__ = ["owner_costs"]
