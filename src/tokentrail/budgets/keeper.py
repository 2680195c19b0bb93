"""The budget thread of a process: it runs what coroutines and finalizers queue on the engine,
renews the reservations of calls still running, retries posts the store refused, and sweeps
expired reservations away.

A reservation counts until its expiry (`hold_timeout`, default 120 s); a call that runs longer
keeps its hold alive because this thread pushes the expiry back every third of the timeout. A
killed process renews nothing, so its reservations stop counting on their own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable

from tokentrail.budgets.engine import Engine
from tokentrail.budgets.ops import RENEW, SWEEP, Hold, Op

log = logging.getLogger("tokentrail")

SWEEP_EVERY_S = 60.0


class Keeper:
    """Runs `engine`'s queue when woken, and its upkeep every few seconds, until `stopped()`."""

    def __init__(
        self,
        engine: Engine,
        live: dict[str, Hold],
        hold_timeout: Callable[[], float],
        stopped: Callable[[], bool],
        upkeep: Callable[[], None] | None = None,
    ) -> None:
        """`upkeep`: more work for each round (the charges waiting for the budget definitions)."""
        self.engine = engine
        self.upkeep = upkeep
        self.live = live
        self.hold_timeout = hold_timeout
        self.stopped = stopped
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # held through each round: a fork waits for the round to end, so the child never inherits
        # a store call (an SQLite mutex, a lock) that the budget thread was in the middle of
        self.round = threading.Lock()
        _KEEPERS.add(self)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="tokentrail-budgets", daemon=True)
                self._thread.start()

    def join(self, timeout: float) -> None:
        self.engine.wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        engine = self.engine
        next_sweep = time.monotonic() + SWEEP_EVERY_S
        while not self.stopped():
            engine.wake.wait(max(0.05, min(self.hold_timeout() / 4, 10.0)))
            engine.wake.clear()
            sweep = time.monotonic() >= next_sweep
            if sweep:
                next_sweep = time.monotonic() + SWEEP_EVERY_S
            try:
                with self.round:
                    self._round(engine, sweep)
            except Exception as e:
                log.debug("tokentrail: budget upkeep failed: %s", e)
        try:
            engine.run_queued()  # whatever was handed over while stopping
        except Exception as e:
            log.debug("tokentrail: budget upkeep failed: %s", e)

    def _round(self, engine: Engine, sweep: bool) -> None:
        if self.upkeep is not None:
            self.upkeep()
        engine.run_queued()
        self._renew()
        if engine.retry:
            engine.retry_due()
        if sweep:
            engine.call(Op(SWEEP))
        elif engine.pending:
            engine.run_queued()

    def _renew(self) -> None:
        now = time.monotonic()
        due = [h for h in list(self.live.values()) if now - h.renewed_at > self.hold_timeout() / 3]
        if due:
            self.engine.call(Op(RENEW, holds=due))


_KEEPERS: weakref.WeakSet[Keeper] = weakref.WeakSet()


def _before_fork() -> None:
    for k in list(_KEEPERS):
        k.round.acquire()


def _after_fork() -> None:
    for k in list(_KEEPERS):
        if k.round.locked():
            k.round.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)
