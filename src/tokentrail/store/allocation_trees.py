"""SQL of the sub_agents allocation (both backends): what each owner spent in a set of sessions.

The owner column comes from a fixed map (never the caller's text); session ids are parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokentrail._report_sql import COLUMNS
from tokentrail.types import Store

CHUNK = 500  # ids per IN (...) list


def owner_costs(store: Store, session_ids: Sequence[str], dimension: str) -> dict[str | None, int]:
    """Priced cost (nano-dollars) of these sessions' events, by their `dimension` value (None:
    events without one). Unpriced events have no cost to weigh and are left out."""
    column = COLUMNS[dimension]
    p = store.dialect.param
    out: dict[str | None, int] = {}
    ids = list(dict.fromkeys(session_ids))
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        rows = store.query(
            f"SELECT {column}, SUM(cost_nusd) FROM events WHERE session_id IN ({', '.join(p for _ in chunk)}) "
            f"AND cost_nusd IS NOT NULL GROUP BY {column}",
            chunk,
        )
        for owner, cost in rows:
            key = None if owner is None else str(owner)
            out[key] = out.get(key, 0) + int(cost or 0)
    return out


__all__ = ["owner_costs"]
