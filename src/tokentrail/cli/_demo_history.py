"""14 days of back-dated history for the demo fleet, so the anomaly detectors' baselines (an
agent's usual session, its 14-day output ratio and cache share) exist on a fresh machine.

The history is the fleet's own live sessions, copied back day by day with their tokens and cost
varied (about ±15 %); sessions the detectors flag (the runaway agent's) are not copied, so the
past is normal and today's runaway stands out against it."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from tokentrail.events import from_row, new_event_id, quantize_usd, to_row
from tokentrail.store.event_reads import session_calls_since

if TYPE_CHECKING:
    from tokentrail.types import Store

DAYS = 14


def write_history(store: Store, rng: random.Random, since: datetime) -> int:
    """Copy the normal sessions recorded from `since` back over the DAYS days before; how many events."""
    from tokentrail.analytics.anomalies import replay

    flagged = {a.session_id for a in replay(store, since)}
    rows = session_calls_since(store, int(since.timestamp() * 1_000_000))
    live = [from_row(r) for r in rows]
    live = [e for e in live if e.session_id not in flagged]
    out = []
    for day in range(1, DAYS + 1):
        shifts: dict[str, tuple[str, timedelta]] = {}  # a session keeps its calls' order
        for e in live:
            key = str(e.session_id)
            if key not in shifts:
                # an id of its own, random from its start: `<live id>-d14` (or a UUIDv7 minted in
                # the same millisecond) needs ~36 characters to tell apart in `tokentrail sessions`
                shifts[key] = (str(uuid.uuid4()), timedelta(days=day, minutes=rng.uniform(-30, 30)))
            sid, shift = shifts[key]
            f = rng.lognormvariate(0, 0.15)
            ts = e.ts - shift
            out.append(
                to_row(
                    replace(
                        e,
                        event_id=new_event_id(),
                        ts=ts,
                        session_id=sid,
                        input_tokens=int(e.input_tokens * f),
                        output_tokens=int(e.output_tokens * f),
                        cache_read_tokens=int(e.cache_read_tokens * f),
                        cache_write_tokens=int(e.cache_write_tokens * f),
                        reasoning_tokens=min(int(e.reasoning_tokens * f), int(e.output_tokens * f)),
                        cost_usd=None if e.cost_usd is None else quantize_usd(e.cost_usd * Decimal(repr(f))),
                        span_id=None,
                        parent_span_id=None,
                    )
                )
            )
    store.write_events(out)
    return len(out)
