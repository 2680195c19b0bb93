"""The trail of one cost: the event, the price it used, where it sits in its session, the tool
calls around it, its adjustments and its place in the audit chain. Plain data, no formatting."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokentrail.corrections import adjustments_of, find_event, made_at
from tokentrail.events import UsageEvent, chain_hash, from_row
from tokentrail.store.sessions import session_events
from tokentrail.types import Store

_MAX_DEPTH = 64  # parent spans walked at most (a cycle or a forged chain of spans stops here)


@dataclass(frozen=True, slots=True)
class Parent:
    """A parent span: an event of the session (a model call a tool answered, …), or a span that
    is no event (a step or the session itself), named by `span_id` only."""

    span_id: str
    event: UsageEvent | None = None


@dataclass(frozen=True, slots=True)
class Trail:
    """Everything the ledger knows about one event.

    `intact`: the row still hashes to its stored hash (`tokentrail audit verify` checks every
    link). `asked_by`: on a tool run, the model call that asked for it; `ran`: on a model call,
    the tool runs that answered the tool calls it asked for. `cost_usd` is the event's own cost
    plus its adjustments (None when unpriced and never adjusted)."""

    event: UsageEvent
    seq: int
    hash: bytes
    prev_hash: bytes
    intact: bool
    made_at: datetime | None
    parents: tuple[Parent, ...]
    asked_by: UsageEvent | None
    ran: tuple[UsageEvent, ...]
    adjustments: tuple[UsageEvent, ...]
    adjusts: UsageEvent | None
    cost_usd: Decimal | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event.to_dict(),
            "chain": {
                "seq": self.seq,
                "hash": self.hash.hex(),
                "prev_hash": self.prev_hash.hex(),
                "intact": self.intact,
            },
            "made_at": self.made_at.isoformat() if self.made_at else None,
            "parents": [{"span_id": p.span_id, "event": p.event.to_dict() if p.event else None} for p in self.parents],
            "asked_by": self.asked_by.to_dict() if self.asked_by else None,
            "ran": [e.to_dict() for e in self.ran],
            "adjustments": [{**a.to_dict(), "made_at": _iso(made_at(a.event_id))} for a in self.adjustments],
            "adjusts": self.adjusts.to_dict() if self.adjusts else None,
            "cost_usd": None if self.cost_usd is None else str(self.cost_usd),
        }


def trail(store: Store, event_id: str) -> Trail:
    """The trail of one event; LookupError if the ledger has no such event."""
    found = find_event(store, event_id)
    if found is None:
        raise LookupError(f"no event {event_id!r} in the ledger")
    seq, prev_hash, h, row = found
    e = from_row(row)
    session = _session_events(store, e)
    by_span: dict[str | None, UsageEvent] = {x.span_id: x for x in session if x.span_id and x.kind != "adjustment"}
    adjustments = tuple(adjustments_of(store, e.event_id))
    cost = e.cost_usd
    for a in adjustments:
        cost = (cost or Decimal(0)) + (a.cost_usd or Decimal(0))
    adjusts = None
    if e.kind == "adjustment" and e.adjusts_event_id:
        target = find_event(store, e.adjusts_event_id)
        adjusts = from_row(target[3]) if target else None
    return Trail(
        event=e,
        seq=seq,
        hash=h,
        prev_hash=prev_hash,
        intact=chain_hash(seq, prev_hash, row) == h,
        made_at=made_at(e.event_id),
        parents=_parents(e, by_span),
        asked_by=_asked_by(e, session, by_span) if e.kind == "tool" else None,
        ran=_ran(e, session) if e.kind in ("llm", "embedding") else (),
        adjustments=adjustments,
        adjusts=adjusts,
        cost_usd=cost,
    )


def _session_events(store: Store, e: UsageEvent) -> list[UsageEvent]:
    return [from_row(r) for r in session_events(store, e.session_id)] if e.session_id else []


def _parents(e: UsageEvent, by_span: dict[str | None, UsageEvent]) -> tuple[Parent, ...]:
    """Walk parent_span_id within the session, up to a span that is no event (a step, the session)."""
    out: list[Parent] = []
    seen = {e.span_id}
    span = e.parent_span_id
    while span and span not in seen and len(out) < _MAX_DEPTH:
        seen.add(span)
        parent = by_span.get(span)
        out.append(Parent(span, parent))
        if parent is None:
            break
        span = parent.parent_span_id
    return tuple(out)


def _asked_by(e: UsageEvent, session: list[UsageEvent], by_span: dict[str | None, UsageEvent]) -> UsageEvent | None:
    parent = by_span.get(e.parent_span_id)
    if parent is not None and parent.kind in ("llm", "embedding"):
        return parent
    if e.tool_call_id:
        for x in session:
            if x.kind in ("llm", "embedding") and any(tc.id == e.tool_call_id for tc in x.tool_calls):
                return x
    return None


def _ran(e: UsageEvent, session: list[UsageEvent]) -> tuple[UsageEvent, ...]:
    ids = {tc.id for tc in e.tool_calls if tc.id}
    return tuple(
        x
        for x in session
        if x.kind == "tool" and ((e.span_id and x.parent_span_id == e.span_id) or (x.tool_call_id in ids))
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


__all__ = ["Parent", "Trail", "trail"]
