"""Reading what a test's ledger stored."""

from __future__ import annotations

from tokentrail.events import COLUMNS, UsageEvent, from_row
from tokentrail.ledger import Ledger

TOKEN_COUNTS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")


def stored(ledger: Ledger) -> list[UsageEvent]:
    """Every event of the ledger, in chain order, once the writer has flushed."""
    ledger.flush()
    return [from_row(r) for r in ledger.store.query(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY seq")]


def counts_of(ev: UsageEvent) -> dict[str, int]:
    """The event's non-zero token counts."""
    return {k: getattr(ev, k) for k in TOKEN_COUNTS if getattr(ev, k)}
