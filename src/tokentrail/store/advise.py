"""SQL of the savings advisor (tokentrail.analytics.advise): dismissed recommendations and the
outcomes of the sessions it judges. The events themselves are read with store.export.events_in."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokentrail.types import Store

_CHUNK = 500


def dismissed(store: Store, advice_ids: Iterable[str]) -> set[str]:
    """Which of these recommendation ids were dismissed."""
    ids = list(dict.fromkeys(advice_ids))
    p = store.dialect.param
    out: set[str] = set()
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        rows = store.query(
            f"SELECT advice_id FROM advice_dismissals WHERE advice_id IN ({', '.join(p for _ in chunk)})", chunk
        )
        out.update(str(r[0]) for r in rows)
    return out


def dismiss(
    store: Store,
    advice_id: str,
    kind: str,
    who: Sequence[str | None],
    dismissed_us: int,
    dismissed_by: str | None,
) -> bool:
    """Store a dismissal (`who`: team, agent, task type); whether it was new (dismissing twice is a no-op)."""
    p = store.dialect.param
    team, agent, task_type = who
    n = store.execute_write(
        "INSERT INTO advice_dismissals (advice_id, kind, team, agent, task_type, dismissed_us, dismissed_by) "
        f"VALUES ({', '.join([p] * 7)}) ON CONFLICT (advice_id) DO NOTHING",
        (advice_id, kind, team, agent, task_type, dismissed_us, dismissed_by),
    )
    return n > 0


def successful_sessions(store: Store, session_ids: Iterable[str]) -> set[str]:
    """Of these sessions, those with at least one successful outcome and no failed one."""
    ids = list(dict.fromkeys(session_ids))
    p = store.dialect.param
    out: set[str] = set()
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        rows = store.query(
            f"SELECT session_id FROM outcomes WHERE session_id IN ({', '.join(p for _ in chunk)}) "
            "GROUP BY session_id HAVING MIN(success) = 1",
            chunk,
        )
        out.update(str(r[0]) for r in rows)
    return out
