"""Corrections: an adjustment is a new event that changes what an earlier one cost. Nothing is edited.

An adjustment (`kind="adjustment"`) stores the cost **delta** in `cost_usd`, so every report,
which sums costs, includes it with no special case. It copies the adjusted event's attribution
(org … step, tags, provider, model, tool) and its `ts`, so it lands in the same hour, day,
session and groups as the cost it corrects; `adjusts_event_id` names that event, `note` says
why, and its own UUIDv7 `event_id` records when the correction was made.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from tokentrail.context import new_span_id
from tokentrail.events import UsageEvent, from_row, quantize_usd
from tokentrail.exceptions import InvalidUsage
from tokentrail.store.event_reads import adjustment_rows, chained_event
from tokentrail.types import Store

if TYPE_CHECKING:
    from tokentrail.ledger import Ledger

MAX_REASON = 1000
_MAX_USD = Decimal(1_000_000)


def adjust(
    ledger: Ledger,
    event_id: str,
    *,
    reason: str,
    cost_usd: Decimal | int | str | None = None,
    new_cost_usd: Decimal | int | str | None = None,
    allow_negative: bool = False,
    timeout: float = 30,
) -> UsageEvent:
    """Correct the cost of a stored event and return the adjustment, once durable.

    `cost_usd` is the signed delta to add; `new_cost_usd` is what the event should cost in all
    (the delta is computed against its cost plus the adjustments so far). Give one of them.
    A correction that would leave the event costing less than zero is refused unless
    `allow_negative`. LookupError for an unknown event; InvalidUsage (a ValueError) for bad input."""
    if (cost_usd is None) == (new_cost_usd is None):
        raise InvalidUsage("adjust: give the delta (cost_usd) or the corrected cost (new_cost_usd), not both")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidUsage("adjust: a reason is required (it is kept with the adjustment)")
    found = find_event(ledger.store, event_id)
    if found is None:
        ledger.flush(timeout)  # an event this process recorded a moment ago may not be written yet
        found = find_event(ledger.store, event_id)
    if found is None:
        raise LookupError(f"no event {event_id!r} in the ledger {ledger.display_url}")
    event = from_row(found[3])
    if event.kind == "adjustment":
        raise InvalidUsage(
            f"event {event.event_id} is itself an adjustment (of {event.adjusts_event_id}): adjust that event instead"
        )
    if cost_usd is not None:
        delta = parse_usd(cost_usd, "cost_usd")
    else:
        delta = parse_usd(new_cost_usd, "new_cost_usd") - effective_cost(ledger.store, event)
    delta = quantize_usd(delta) or Decimal(0)  # the ledger keeps nano-dollars: less is nothing
    if delta == 0:
        raise InvalidUsage(
            f"adjust: the change to event {event.event_id} rounds to $0 (the ledger keeps costs to $0.000000001)"
        )
    total = effective_cost(ledger.store, event) + delta
    if total < 0 and not allow_negative:
        raise InvalidUsage(
            f"adjust: event {event.event_id} would cost {total} USD, below zero (a refund larger than the "
            "cost?); pass allow_negative=True (--allow-negative) if that is what you mean"
        )
    adjustment = UsageEvent(
        kind="adjustment",
        ts=event.ts,
        provider=event.provider,
        model=event.model,
        operation=event.operation,
        cost_usd=delta,
        org=event.org,
        team=event.team,
        project=event.project,
        agent=event.agent,
        session_id=event.session_id,
        trace_id=event.trace_id,
        span_id=new_span_id(),
        parent_span_id=event.span_id,
        user=event.user,
        customer=event.customer,
        workflow=event.workflow,
        task_type=event.task_type,
        step=event.step,
        tags=event.tags,
        tool_name=event.tool_name,
        adjusts_event_id=event.event_id,
        note=reason.strip()[:MAX_REASON],
    )
    ledger.record(adjustment, session=None)
    ledger.charge(adjustment)  # the budgets move by the delta too
    ledger.flush(timeout)
    return adjustment


def parse_usd(value: object, name: str = "cost_usd") -> Decimal:
    """A signed dollar amount (Decimal, int or text), exact, within ±$1,000,000."""
    if isinstance(value, (bool, float)):
        raise InvalidUsage(f"{name} must be a Decimal, an int or text, not {type(value).__name__} (floats are inexact)")
    try:
        amount = Decimal(str(value).strip().removeprefix("$"))
    except InvalidOperation:
        raise InvalidUsage(f"{name} {value!r} is not a number of dollars, e.g. 0.25 or -1.50") from None
    if not amount.is_finite() or abs(amount) > _MAX_USD:
        raise InvalidUsage(f"{name} {value!r} must be a finite amount within ±$1,000,000")
    return amount


def find_event(store: Store, event_id: str) -> tuple[int, bytes, bytes, tuple[Any, ...]] | None:
    """(seq, prev_hash, hash, row) of an event by id (any UUID spelling), or None."""
    spellings = [event_id]
    try:
        canonical = str(uuid.UUID(event_id.strip()))
    except (ValueError, AttributeError):
        canonical = None
    if canonical and canonical != event_id:
        spellings.append(canonical)
    return chained_event(store, spellings)


def adjustments_of(store: Store, event_id: str) -> list[UsageEvent]:
    """The adjustments of an event, in the order they were made."""
    return [from_row(r) for r in adjustment_rows(store, event_id)]


def effective_cost(store: Store, event: UsageEvent) -> Decimal:
    """What an event costs now: its own cost (0 when unpriced) plus its adjustments."""
    total = event.cost_usd or Decimal(0)
    for a in adjustments_of(store, event.event_id):
        total += a.cost_usd or Decimal(0)
    return total


def made_at(event_id: str) -> datetime | None:
    """When an event was made, from its UUIDv7 id (None for another kind of id)."""
    try:
        u = uuid.UUID(event_id)
    except ValueError:
        return None
    if u.version != 7:
        return None
    return datetime.fromtimestamp((u.int >> 80) / 1000, UTC)


__all__ = ["adjust", "adjustments_of", "effective_cost", "find_event", "made_at", "parse_usd"]
