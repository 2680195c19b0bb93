"""What the budget engine is asked to do: a `Hold` (one call's reservation on every budget counter
it charges) and an `Op` (one request to the engine and, once done, its answer), with their kinds."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tokentrail.budgets.definitions import Rule
from tokentrail.budgets.estimate import Estimate
from tokentrail.events import nano_to_usd
from tokentrail.store.budgets import Counter

RESERVE, POST, VOID, RENEW, SWEEP, BARRIER = range(6)


@dataclass(eq=False, slots=True)
class Hold:
    """A reservation: what one call may spend, on every budget counter it charges."""

    hold_id: str
    counters: list[Counter]  # sorted by key
    call_rules: list[Rule]
    nusd: int
    tokens: int
    session_id: str | None
    expires_us: int
    reserved: bool  # rows were written (some budget enforces); False: post-only (alert budgets)
    estimate: Estimate | None = None
    charge: bool = False  # spend that happened unreserved: posted in full, never an overage
    provider: str | None = None  # the call's, as reserved (None: a hold reserved by hand)
    model: str | None = None
    attribution: Any = None
    settled: bool = False
    renewed_at: float = field(default_factory=time.monotonic)
    finalizer: Any = None

    @property
    def cost_usd(self) -> Decimal:
        return nano_to_usd(self.nusd) or Decimal(0)

    @property
    def enforced(self) -> list[Counter]:
        """The counters this hold reserves on (those of budgets that enforce), in key order."""
        return [c for c in self.counters if c.enforce]


class Op:
    """One request to the engine, and, once `done`, its answer: `result` (a reservation's refusal,
    or None) or `error` (the store failed)."""

    __slots__ = ("done", "error", "future", "hold", "holds", "kind", "loop", "nusd", "result", "tokens", "waiter")

    def __init__(
        self, kind: int, hold: Hold | None = None, nusd: int = 0, tokens: int = 0, holds: list[Hold] | None = None
    ) -> None:
        self.kind = kind
        self.hold = hold
        self.nusd = nusd
        self.tokens = tokens
        self.holds = holds
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        self.waiter: Any = None  # a lock the calling thread waits on
        self.future: asyncio.Future[Op] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None


__all__ = ["BARRIER", "POST", "RENEW", "RESERVE", "SWEEP", "VOID", "Hold", "Op"]
