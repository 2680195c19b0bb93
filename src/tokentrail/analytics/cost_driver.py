"""What drives a session's cost: long context, many tool calls, reasoning loops, or output
verbosity, whichever explains most of it.

Each model call's cost is split by its tokens at the usual relative prices (uncached input 1,
cache read 0.1, cache write 1.25, output 4): reasoning tokens are `reasoning loops`, the rest of the
output `output verbosity`; input goes to `many tool calls` when the call is a turn of a tool loop
(the session's previous model call asked for a tool), else to `long context`. A priced call's
shares are scaled to its real cost, so an expensive model weighs more than a cheap one."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from tokentrail.events import UsageEvent

DRIVERS = ("long context", "many tool calls", "reasoning loops", "output verbosity")


def cost_driver(events: Iterable[UsageEvent]) -> str | None:
    """The driver of most of the session's cost, or None for a session without model calls."""
    shares = dict.fromkeys(DRIVERS, 0.0)
    tool_turn = False
    for e in sorted(events, key=lambda e: e.ts):
        if e.kind != "llm":
            continue
        fresh = max(0, e.input_tokens - e.cache_read_tokens - e.cache_write_tokens)
        parts = {
            "input": fresh + 0.1 * e.cache_read_tokens + 1.25 * e.cache_write_tokens,
            "reasoning loops": 4.0 * e.reasoning_tokens,
            "output verbosity": 4.0 * max(0, e.output_tokens - e.reasoning_tokens),
        }
        weight = sum(parts.values())
        if weight <= 0:
            tool_turn = bool(e.tool_calls)
            continue
        scale = float(e.cost_usd) / weight if e.cost_usd is not None and e.cost_usd > Decimal(0) else 1e-6
        shares["many tool calls" if tool_turn else "long context"] += parts["input"] * scale
        shares["reasoning loops"] += parts["reasoning loops"] * scale
        shares["output verbosity"] += parts["output verbosity"] * scale
        tool_turn = bool(e.tool_calls)
    best = max(DRIVERS, key=lambda d: shares[d])
    return best if shares[best] > 0 else None
