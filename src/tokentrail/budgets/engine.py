"""The budget engine: one per process, it applies budget decisions in batches (group commit).

Every reserve, post and void of a process goes through its engine's queue. Whoever runs the engine
(a caller thread that finds it idle, else the process's budget thread, tokentrail.budgets.keeper)
takes everything queued, applies it in order inside ONE transaction, commits once and answers each
waiter: N calls cost one commit (one fsync) instead of N.

Inside that transaction the counters the batch touches are locked first (SQLite: `BEGIN IMMEDIATE`;
PostgreSQL: row locks in ascending key order), and what each has posted, is blocked until and has
reserved in live holds is read once. Each request is then decided in memory, in arrival order,
against those figures as the earlier requests of the batch left them, exactly as if each were its
own transaction: a reservation lands on every counter it needs or on none, and reserved + posted
never passes a limit except through a recorded overage. The writes (holds, counters, window rows,
alerts) go out at the end, and nothing of a batch is visible until all of it commits.

A sync caller waits on a lock the runner releases; a coroutine awaits a future the runner resolves
through its loop (`call_soon_threadsafe`), so the event loop never waits for a commit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from tokentrail.budgets.alerts import Alert
from tokentrail.budgets.batch import Batch
from tokentrail.budgets.ops import BARRIER, POST, RENEW, RESERVE, SWEEP, VOID, Op
from tokentrail.store.budgets import BudgetSQL

log = logging.getLogger("tokentrail")

MAX_BATCH = 512  # requests per transaction
POST_RETRY_FOR_S = 3600.0  # a post the store refused is retried this long


class Engine:
    """The queue of budget requests of one process, and the batches that apply them.

    `sql` gives the budget SQL of the ledger, `hold_timeout` the reservation timeout in seconds,
    `deliver` takes the alerts a committed batch fired, and `start` starts the budget thread that
    waits on `wake` (called whenever work is handed to it)."""

    def __init__(
        self,
        sql: Callable[[], BudgetSQL],
        hold_timeout: Callable[[], float],
        deliver: Callable[[list[Alert]], None],
        start: Callable[[], None],
    ) -> None:
        self._sql = sql
        self._hold_timeout = hold_timeout
        self._deliver = deliver
        self._start = start
        self._queue: deque[Op] = deque()
        self._busy = threading.Lock()  # held by whoever runs batches
        self._runner: int | None = None  # that thread
        self.wake = threading.Event()  # work for the budget thread
        self.retry: deque[tuple[float, Op]] = deque()  # posts the store refused, retried by the keeper

    # -- submitting -------------------------------------------------------------------------------

    def call(self, op: Op) -> Op:
        """Apply `op` and return it answered. An idle engine runs in this thread (taking whatever
        else is queued along); a busy one is waited for. From inside a batch (a finalizer the GC
        runs there) the op is only queued, and comes back not done."""
        me = threading.get_ident()
        if self._runner == me:
            if op.kind == RESERVE:
                raise RuntimeError("a budget reservation cannot be made from inside a budget batch")
            self._queue.append(op)
            return op
        waiter = op.waiter = threading.Lock()
        waiter.acquire()
        self._queue.append(op)
        if self._busy.acquire(blocking=False):
            try:
                self._runner = me
                self._drain(op)
            finally:
                self._runner = None
                self._busy.release()
            if self._queue:  # queued while we ran (by callers that are waiting now): hand over
                self._hand_over()
        if not op.done:
            waiter.acquire()
        return op

    def submit(self, op: Op, *, wake: bool = True) -> None:
        """Queue `op` without waiting for it. `wake=False` (a finalizer inside the garbage collector,
        where taking a lock could deadlock): it runs with the next batch, or the keeper's next round."""
        self._queue.append(op)
        if wake:
            self._hand_over()

    async def acall(self, op: Op) -> Op:
        """Apply `op` in the budget thread and await its answer; the event loop keeps running."""
        loop = asyncio.get_running_loop()
        op.loop = loop
        op.future = loop.create_future()
        self._queue.append(op)
        self._hand_over()
        await op.future
        return op

    def wake_keeper(self) -> None:
        """Have the budget thread run a round (its upkeep) even with nothing queued."""
        self._hand_over()

    def _hand_over(self) -> None:
        """Have the budget thread run the queue. When the flag is still set the thread has not
        cleared it yet, so it drains the queue after this op was appended: setting it again (a lock
        and a notify per call, from the event loop) would change nothing."""
        self._start()
        if not self.wake.is_set():
            self.wake.set()

    def run_queued(self) -> None:
        """Run everything queued (the budget thread)."""
        with self._busy:
            self._runner = threading.get_ident()
            try:
                self._drain(None)
            finally:
                self._runner = None

    def retry_due(self) -> None:
        """Queue again the posts the store refused; give up on those past their deadline."""
        for _ in range(len(self.retry)):
            deadline, op = self.retry.popleft()
            if time.monotonic() > deadline:
                log.error("tokentrail: gave up posting a call's spend to its budgets")
                continue
            op.done, op.error, op.waiter, op.future = False, None, None, None
            self._queue.append(op)

    @property
    def pending(self) -> int:
        return len(self._queue)

    # -- running ----------------------------------------------------------------------------------

    def _drain(self, until: Op | None) -> None:
        q = self._queue
        while q and not (until is not None and until.done):
            ops = [q.popleft()]
            while q and len(ops) < MAX_BATCH:
                ops.append(q.popleft())
            self._run(ops)

    def _run(self, ops: list[Op]) -> None:
        work = [op for op in ops if op.kind != BARRIER]
        if work:
            try:
                self._commit(work)
            except Exception as e:
                if len(work) == 1:
                    work[0].error = e
                else:  # whatever one request did to the store must not fail the others: one by one
                    log.debug("tokentrail: a budget batch failed (%s); applying its requests one by one", e)
                    for op in work:
                        try:
                            self._commit([op])
                        except Exception as e1:
                            op.error = e1
            for op in work:
                if op.kind == POST and op.error is not None:
                    log.warning("tokentrail: could not post a call's spend to its budgets (will retry): %s", op.error)
                    self.retry.append((time.monotonic() + POST_RETRY_FOR_S, op))
                elif op.error is not None and op.kind in (VOID, RENEW, SWEEP):
                    log.warning("tokentrail: budget upkeep failed (reservations expire anyway): %s", op.error)
        _answer(ops)

    def _commit(self, work: list[Op]) -> None:
        now = datetime.now(UTC)
        sql = self._sql()
        with sql.transaction(durable=any(op.kind == POST for op in work)) as x:
            batch = Batch(sql, x, now, int(self._hold_timeout() * 1_000_000))
            batch.load(work)
            results = [batch.apply(op) for op in work]
            batch.write()
        # committed: now the answers hold
        for op, result in zip(work, results, strict=True):
            op.result = result
        for hold in batch.new_holds.values():
            hold.reserved = True
        renewed = time.monotonic()
        for op in work:
            if op.kind == RENEW:
                for h in op.holds or ():
                    h.renewed_at = renewed
                    h.expires_us = batch.now_us + batch.timeout_us
        if batch.fired:
            try:
                self._deliver([Alert.from_row(row) for row in batch.fired])
            except Exception:
                log.exception("tokentrail: delivering budget alerts failed")


def _answer(ops: list[Op]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[Op]] = {}
    for op in ops:
        op.done = True
        if op.waiter is not None:
            op.waiter.release()
        elif op.loop is not None:
            by_loop.setdefault(op.loop, []).append(op)
    for loop, some in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, some)
        except RuntimeError:  # that loop is closed: nobody is waiting any more
            pass


def _resolve(ops: list[Op]) -> None:
    for op in ops:
        if op.future is not None and not op.future.done():
            op.future.set_result(op)
