"""A bound on the server's heavy reads: the routes whose work grows with the ledger (advice, export,
reprice, economics, agent trees, one session's events) each hold up to hundreds of MB while they
run, so one server runs at most TOKENTRAIL_HEAVY_RUNS of them at once (default 2).

A request past the bound is refused at once with a 429, `Retry-After` and a JSON message, never
queued: a queue would hold connections (and a caller could grow it) while a retry costs nothing.
A slot is taken after auth and input checks, and given back when the work really ends (success,
error, or a client that hung up): work already running in a thread still holds memory, so the slot
stays taken until that thread is done, never only until the caller goes away.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

ENV = "TOKENTRAIL_HEAVY_RUNS"
DEFAULT_RUNS = 2
MAX_RUNS = 64
RETRY_AFTER_S = 10

T = TypeVar("T")


class Slot:
    """One heavy run's place. `begin()` (in the worker) and `abandon()` (a run that never started)
    decide under one lock, so a slot is given back exactly once whichever comes first."""

    def __init__(self, runs: HeavyRuns) -> None:
        self._runs = runs
        self._state = "taken"  # -> running -> done, or taken -> done

    def begin(self) -> bool:
        with self._runs._lock:
            if self._state != "taken":
                return False
            self._state = "running"
            return True

    def abandon(self) -> None:
        """Give the slot back unless its work is running (that work gives it back when it ends)."""
        with self._runs._lock:
            if self._state == "taken":
                self._done()

    def release(self) -> None:
        with self._runs._lock:
            if self._state != "done":
                self._done()

    def _done(self) -> None:  # under the lock
        self._state = "done"
        self._runs._in_use -= 1
        self._runs._idle.notify_all()


class HeavyRuns:
    """At most `limit` heavy runs at once in this server (thread-safe: runs end in worker threads)."""

    def __init__(self, limit: int = DEFAULT_RUNS) -> None:
        if not 1 <= limit <= MAX_RUNS:
            raise ValueError(f"{ENV} must be a whole number from 1 to {MAX_RUNS}, not {limit}")
        self.limit = limit
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_use = 0

    @classmethod
    def from_env(cls) -> HeavyRuns:
        text = os.environ.get(ENV, "").strip()
        if not text:
            return cls()
        if not text.isdigit():
            raise ValueError(f"{ENV} must be a whole number from 1 to {MAX_RUNS}, not {text[:32]!r}")
        return cls(int(text))

    @property
    def in_use(self) -> int:
        with self._lock:
            return self._in_use

    def try_take(self) -> Slot | None:
        with self._lock:
            if self._in_use >= self.limit:
                return None
            self._in_use += 1
            return Slot(self)

    def wait_idle(self, timeout: float) -> bool:
        """True once no run holds a slot (for tests and shutdown), False after `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_use == 0, timeout)


def busy(what: str, runs: HeavyRuns) -> Response:
    """The 429 of a full server: what was refused, why, and when to retry."""
    message = (
        f"{what}: this server already runs {runs.limit} heavy read(s) at once ({ENV}); "
        f"retry in {RETRY_AFTER_S} s, or narrow the range or filters"
    )
    return JSONResponse(  # the shape of tokentrail.server.state.error (which imports this module)
        {"error": {"status": 429, "message": message, "retry_after_s": RETRY_AFTER_S}},
        status_code=429,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def run(slot: Slot, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` in a worker thread, holding `slot` until it returns or raises. If the
    caller is cancelled (hung up) before the thread started, the slot is given back at once."""

    def work() -> T:
        if not slot.begin():
            raise asyncio.CancelledError  # abandoned before it started: nothing to run
        try:
            return fn(*args, **kwargs)
        finally:
            slot.release()

    try:
        return await asyncio.to_thread(work)
    finally:
        slot.abandon()  # a no-op once the work began (its thread releases)


class HeldStream(StreamingResponse):
    """A streamed body that holds a slot until the stream ends, fails or the client hangs up
    (Starlette waits for a chunk being read in a thread before it returns, so the source is idle
    when it is closed here)."""

    def __init__(self, content: Iterable[Any], slot: Slot, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._source = content
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self._source, "close", None)
            try:
                if close is not None:
                    close()
            finally:
                self._slot.release()


__all__ = ["DEFAULT_RUNS", "ENV", "HeavyRuns", "HeldStream", "Slot", "busy", "run"]
