"""What callers hand to the ledger's record_llm, record_tool and record_outcome, checked: text no
store can keep, latencies and caller-given costs out of range, and call tags merged into the
context's attribution. Each failure is an InvalidUsage that says where."""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from tokentrail import context as ctx
from tokentrail.events import bound_tags, quantize_usd, text_problem
from tokentrail.exceptions import InvalidUsage


def attributed(a: ctx.Attribution, tags: Mapping[str, Any] | None) -> dict[str, Any]:
    """The attribution fields of an event: the context's, with call tags merged (and bounded)."""
    fields = a.as_event_fields()
    if tags:
        try:
            fields["tags"] = bound_tags({**a.tags, **bound_tags(tags)})
        except ValueError as e:  # a NUL or a lone surrogate
            raise InvalidUsage(str(e)) from None
    return fields


def check_text(where: str, **given: object) -> None:
    """InvalidUsage when a text argument holds what no store can keep (a NUL, a lone surrogate)."""
    for name, value in given.items():
        if isinstance(value, str) and (why := text_problem(value)) is not None:
            raise InvalidUsage(f"{where}: {name} {value[:64]!r} {why}")


def check_latency(where: str, latency_ms: object) -> None:
    if latency_ms is None:
        return
    ok = isinstance(latency_ms, (int, float)) and not isinstance(latency_ms, bool)
    if not ok or not math.isfinite(latency_ms) or latency_ms < 0:  # type: ignore[arg-type,operator]
        raise InvalidUsage(f"{where}: latency_ms must be a finite non-negative number, not {latency_ms!r}")


def caller_cost(where: str, cost_usd: object) -> Decimal | None:
    if cost_usd is None:
        return None
    if isinstance(cost_usd, bool):
        raise InvalidUsage(f"{where}: cost_usd must be a number")
    try:
        cost = Decimal(str(cost_usd))
    except InvalidOperation:
        raise InvalidUsage(f"{where}: cost_usd {cost_usd!r} is not a number") from None
    if not cost.is_finite() or cost < 0 or cost > 1_000_000:
        raise InvalidUsage(f"{where}: cost_usd {cost_usd!r} must be between 0 and 1,000,000")
    return quantize_usd(cost)


__all__ = ["attributed", "caller_cost", "check_latency", "check_text"]
