"""Find a session or an event by the start of its id, as the dashboard and tables show them.

An exact id always wins; otherwise the prefix must match exactly one id. Both backends: the
prefix is compared with SUBSTR (not LIKE, whose `%` psycopg reads as a placeholder, nor a
range, which a non-C collation orders differently)."""

from __future__ import annotations

from tokentrail.exceptions import TokentrailError
from tokentrail.types import Store

SHOWN = 10  # matches listed when a prefix is ambiguous


class AmbiguousId(TokentrailError, ValueError):
    """A prefix that matches several ids; `matches` holds the first few, sorted."""

    def __init__(self, what: str, prefix: str, matches: list[str]) -> None:
        more = " …" if len(matches) > SHOWN else ""
        listed = "\n  ".join(matches[:SHOWN])
        super().__init__(
            f"{what} id {prefix!r} is ambiguous: {'more than ' if more else ''}{min(len(matches), SHOWN)} "
            f"{what}s start with it; give more of it:\n  {listed}{more}"
        )
        self.matches = matches[:SHOWN]


def session_id(store: Store, prefix: str) -> str:
    """The session id `prefix` names: itself, or the one session id that starts with it.
    LookupError when none does, AmbiguousId (a ValueError) when several do."""
    p = store.dialect.param
    if store.query(f"SELECT 1 FROM events WHERE session_id = {p} LIMIT 1", [prefix]):
        return prefix
    return _one(
        "session",
        prefix,
        store.query(
            f"SELECT DISTINCT session_id FROM events WHERE SUBSTR(session_id, 1, {len(prefix)}) = {p} "
            f"ORDER BY session_id LIMIT {SHOWN + 1}",
            [prefix],
        )
        if prefix
        else [],
    )


def event_id(store: Store, prefix: str) -> str:
    """The event id `prefix` names (any case: event ids are UUIDs), as `session_id` does for
    sessions. An id that is not a prefix of a UUID is returned as it is, for the caller to miss."""
    p = store.dialect.param
    text = prefix.strip().lower()
    if not text or len(text) >= 36 or any(c not in "0123456789abcdef-" for c in text):
        return prefix  # a whole id (any spelling) or no UUID at all: looked up as given
    if store.dialect.name == "postgresql":  # a uuid column, and the one table that lists every id
        sql = f"SELECT CAST(event_id AS TEXT) AS id FROM event_ids WHERE SUBSTR(CAST(event_id AS TEXT), 1, {len(text)})"
    else:
        sql = f"SELECT event_id AS id FROM events WHERE SUBSTR(event_id, 1, {len(text)})"
    rows = store.query(f"{sql} = {p} ORDER BY id LIMIT {SHOWN + 1}", [text])
    return _one("event", prefix, rows) if rows else prefix


def _one(what: str, prefix: str, rows: list[tuple[object, ...]]) -> str:
    ids = [str(r[0]) for r in rows]
    if not ids:
        raise LookupError(f"no {what} {prefix!r} in the ledger (nor any {what} id starting with it)")
    if len(ids) > 1:
        raise AmbiguousId(what, prefix, ids)
    return ids[0]
