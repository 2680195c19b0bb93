"""A bound on the server's heavy reads: the routes whose work grows with the ledger (advice, export,
reprice, economics, agent trees, one session's events) each hold up to hundreds of MB while they
run, so one server runs at most TOKENTRAIL_HEAVY_RUNS of them at once (default 2).

A request past the bound waits for a slot at most WAIT_S seconds (the dashboard asks for advice and
economics at once), with at most WAITING_PER_RUN × the bound waiting; past either, a 429 with
`Retry-After` and a JSON message. Waiting costs no thread: a released slot wakes the waiters' loops.
A slot is taken after auth (export and reprice: after their input checks too) and given back when
the work really ends (success, error, or a client that hung up): work already running in a thread
still holds memory, so the slot stays taken until that thread is done, not until the caller goes.
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
WAIT_S = 10.0  # the longest a request waits for a slot
WAITING_PER_RUN = 4  # requests that may wait, per slot: more are refused at once

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
        self._runs._changed()


class HeavyRuns:
    """At most `limit` heavy runs at once in this server (thread-safe: runs end in worker threads)."""

    def __init__(self, limit: int = DEFAULT_RUNS, *, wait_s: float = WAIT_S, max_waiting: int | None = None) -> None:
        if not 1 <= limit <= MAX_RUNS:
            raise ValueError(f"{ENV} must be a whole number from 1 to {MAX_RUNS}, not {limit}")
        self.limit = limit
        self.wait_s = wait_s
        self.max_waiting = WAITING_PER_RUN * limit if max_waiting is None else max_waiting
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._in_use = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

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

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiters)

    def try_take(self) -> Slot | None:
        with self._lock:
            return self._take()

    def _take(self) -> Slot | None:  # under the lock
        if self._in_use >= self.limit:
            return None
        self._in_use += 1
        self._changed()
        return Slot(self)

    async def take(self) -> Slot | None:
        """A slot, waiting for one at most `wait_s` seconds; None when none came (or too many wait)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        first = True
        while True:
            with self._lock:
                slot = self._take()
                if slot is not None:
                    return slot
                if first and len(self._waiters) >= self.max_waiting:
                    return None
                first = False
                waiter = (loop, loop.create_future())
                self._waiters.append(waiter)
                self._changed()
            try:
                left = deadline - loop.time()
                if left <= 0:
                    return None
                try:
                    await asyncio.wait_for(waiter[1], left)
                except TimeoutError:
                    return None
            finally:  # also when the caller hung up while waiting: it holds nothing
                with self._lock:
                    self._waiters.remove(waiter)
                    self._changed()

    def _changed(self) -> None:  # under the lock: wake the waiting requests and wait_until
        self._cond.notify_all()
        if self._in_use < self.limit:
            for loop, fut in self._waiters:
                try:
                    loop.call_soon_threadsafe(_wake, fut)
                except RuntimeError:  # its loop is closed: nobody waits there any more
                    pass

    def wait_until(self, test: Callable[[int, int], bool], timeout: float) -> bool:
        """Block until `test(in_use, waiting)` holds (checked on each change), False after `timeout`
        seconds: for tests and shutdown."""
        with self._cond:
            return self._cond.wait_for(lambda: test(self._in_use, len(self._waiters)), timeout)

    def wait_idle(self, timeout: float) -> bool:
        return self.wait_until(lambda in_use, waiting: in_use == 0, timeout)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def busy(what: str, runs: HeavyRuns) -> Response:
    """The 429 of a full server: what was refused, why, and when to retry."""
    message = (
        f"{what}: this server already runs {runs.limit} heavy read(s) at once ({ENV}) and none ended "
        f"in time; retry in {RETRY_AFTER_S} s, or narrow the range or filters"
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
