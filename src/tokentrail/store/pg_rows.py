"""Event rows as the PostgreSQL ledger stores them: ids as canonical UUID text, latency as a float,
no NUL characters, each event once per batch. The chain hashes the row a reader will get back."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from tokentrail.events import COL
from tokentrail.exceptions import StoreError
from tokentrail.types import Row

_LATENCY = COL["latency_ms"]
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_id(value: object) -> str:
    """An event id as PostgreSQL gives it back (lower-case UUID text); StoreError if not a UUID."""
    if type(value) is str and _CANONICAL_UUID.fullmatch(value):
        return value
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise StoreError(f"event_id {value!r} is not a UUID; the PostgreSQL ledger stores UUIDs") from None


def canonical_rows(rows: Sequence[Row]) -> list[Row]:
    """Rows as PostgreSQL will give them back, so the chain hashes what a reader sees: event_id as
    canonical lower-case UUID text, latency_ms as a float (a DOUBLE PRECISION column)."""
    out = []
    for r in rows:
        eid, lat = r[0], r[_LATENCY]
        if (type(eid) is str and _CANONICAL_UUID.fullmatch(eid)) and (lat is None or type(lat) is float):
            out.append(tuple(r))
            continue
        fixed = list(r)
        fixed[0] = canonical_id(eid)
        if lat is not None:
            fixed[_LATENCY] = float(lat)
        out.append(tuple(fixed))
    return out


def first_of_each(rows: list[Row]) -> list[Row]:
    """The first row of each event_id, in order (a batch may repeat an event)."""
    seen: set[str] = set()
    out = []
    for r in rows:
        if r[0] not in seen:
            seen.add(r[0])
            out.append(r)
    return out


def without_nul(row: Row) -> Row:
    """PostgreSQL text cannot hold NUL characters (SQLite can): U+FFFD in their place."""
    return tuple(v.replace("\x00", "\ufffd") if type(v) is str else v for v in row)
