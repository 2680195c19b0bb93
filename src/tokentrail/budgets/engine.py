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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokentrail.budgets.alerts import Alert
from tokentrail.budgets.definitions import Rule
from tokentrail.budgets.estimate import Estimate
from tokentrail.budgets.post_alerts import alerts_for, cap_overage
from tokentrail.budgets.refusals import block_until, decide
from tokentrail.events import nano_to_usd, ts_micros
from tokentrail.store.budgets import BudgetSQL, Counter, Exec, Later, Row

log = logging.getLogger("tokentrail")

MAX_BATCH = 512  # requests per transaction
POST_RETRY_FOR_S = 3600.0  # a post the store refused is retried this long

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
        """Have the budget thread run the queue."""
        self._start()
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
            batch = _Batch(sql, x, now, int(self._hold_timeout() * 1_000_000))
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


class _State:
    """One counter as the batch has it so far."""

    __slots__ = (
        "added_nusd",
        "added_tokens",
        "alerted",
        "blocked",
        "created",
        "dirty",
        "oldest",
        "posted_nusd",
        "posted_tokens",
        "reserved_nusd",
        "reserved_tokens",
        "win_nusd",
        "win_tokens",
        "window_us",
    )

    def __init__(self, row: Row, window_us: int) -> None:
        _, n, t, blocked, alerted, created = row
        self.created = bool(created)  # by this batch: dropped again if nothing lands on it
        self.posted_nusd, self.posted_tokens, self.blocked, self.alerted = int(n), int(t), blocked, int(alerted)
        self.reserved_nusd = self.reserved_tokens = 0
        self.window_us = window_us
        self.win_nusd = self.win_tokens = self.added_nusd = self.added_tokens = 0
        self.oldest: int | None = None
        self.dirty = False

    def show(self, c: Counter) -> None:
        """Put these figures on `c`, the counter as one request sees it (its own rule in c.extra)."""
        if self.window_us:
            c.posted_nusd, c.posted_tokens, c.oldest_us = self.win_nusd, self.win_tokens, self.oldest
        else:
            c.posted_nusd, c.posted_tokens = self.posted_nusd, self.posted_tokens
        c.reserved_nusd, c.reserved_tokens = self.reserved_nusd, self.reserved_tokens
        c.blocked_until_us, c.alerted = self.blocked, self.alerted


class _Batch:
    """The requests of one transaction, decided in memory against the counters they lock."""

    def __init__(self, sql: BudgetSQL, x: Exec, now: datetime, timeout_us: int) -> None:
        self.sql = sql
        self.x = x
        self.now = now
        self.now_us = ts_micros(now)
        self.timeout_us = timeout_us
        self.state: dict[str, _State] = {}
        self.live: dict[str, list[tuple[str, int, int]]] | None = None  # released holds that still count
        self.new_holds: dict[str, Hold] = {}  # reserved in this batch (and not released in it)
        self.deleted: list[str] = []
        self.renewed: list[str] = []
        self.sweep = False
        self.alerts: list[tuple[Row, Later]] = []  # inserted unless their key was there already
        self.fired: list[Row] = []  # those this batch inserted, to deliver

    def load(self, ops: list[Op]) -> None:
        """Lock every counter the batch touches, and read what the requests need of them."""
        counters: dict[str, Counter] = {}
        reserving: set[str] = set()
        released: list[str] = []
        for op in ops:
            hold = op.hold
            if hold is None:
                continue
            if op.kind == RESERVE:
                for c in hold.enforced:
                    counters.setdefault(c.key, c)
                    reserving.add(c.key)
            elif op.kind == POST:
                for c in hold.counters:
                    counters.setdefault(c.key, c)
            if op.kind in (POST, VOID) and hold.reserved:
                released.append(hold.hold_id)
        if not counters:
            return
        sql, x, now_us = self.sql, self.x, self.now_us
        # the lock first; the reads after it (pipelined: one round trip for them all)
        locked = sql.lock(x, sorted(counters.values(), key=_key), now_us)
        windows = {k: sql.window(x, k, c.window_us, now_us) for k, c in counters.items() if c.window_us}
        reserved = sql.reserved(x, sorted(reserving), now_us) if reserving else None
        # what releasing the holds before a reservation gives back to it
        live = sql.live_holds(x, released, now_us) if reserving and released else None
        for row in locked():
            self.state[row[0]] = _State(row, counters[row[0]].window_us)
        for key, later in windows.items():
            st = self.state[key]
            n, t, st.oldest = later()[0]
            st.win_nusd, st.win_tokens = int(n), int(t)
        if reserved is not None:
            for key, n, t in reserved():
                self.state[key].reserved_nusd, self.state[key].reserved_tokens = int(n), int(t)
        if live is not None:
            self.live = {}
            for hold_id, key, n, t in live():
                self.live.setdefault(hold_id, []).append((key, int(n), int(t)))

    def apply(self, op: Op) -> Any:
        kind, hold = op.kind, op.hold
        if kind == RESERVE and hold is not None:
            return self._reserve(hold)
        if kind == POST and hold is not None:
            self._post(hold, op.nusd, op.tokens)
        elif kind == VOID and hold is not None:
            self._release(hold)
        elif kind == RENEW:
            self.renewed += [h.hold_id for h in op.holds or ()]
        elif kind == SWEEP:
            self.sweep = True
        return None

    def _reserve(self, hold: Hold) -> Any:
        enforced = hold.enforced
        for c in enforced:
            self.state[c.key].show(c)
        refusal = decide(enforced, hold.nusd, hold.tokens, self.now_us, hold.session_id)
        if refusal is not None:
            return refusal
        for c in enforced:
            st = self.state[c.key]
            st.reserved_nusd += hold.nusd
            st.reserved_tokens += hold.tokens
        hold.expires_us = self.now_us + self.timeout_us
        self.new_holds[hold.hold_id] = hold
        return None

    def _post(self, hold: Hold, nusd: int, tokens: int) -> None:
        sql, x, now, now_us = self.sql, self.x, self.now, self.now_us
        for r in hold.call_rules:
            if hold.charge:
                break
            if (r.limit_nusd is not None and nusd > r.limit_nusd) or (
                r.limit_tokens is not None and tokens > r.limit_tokens
            ):
                row = cap_overage(r, hold, nusd, tokens, now)
                self.alerts.append((row, sql.insert_alert(x, row)))
        if hold.counters and (nusd or tokens):
            blocks: dict[str, int] = {}
            for c in hold.counters:
                r = c.extra
                if (
                    c.enforce
                    and not hold.charge
                    and (
                        (r.limit_nusd is not None and nusd > hold.nusd)
                        or (r.limit_tokens is not None and tokens > hold.tokens)
                    )
                ):
                    blocks[c.key] = block_until(c, now_us)
            for c in hold.counters:
                st = self.state[c.key]
                st.posted_nusd = max(0, st.posted_nusd + nusd)  # a credit never takes a budget below zero
                st.posted_tokens = max(0, st.posted_tokens + tokens)
                if st.window_us:
                    st.win_nusd += nusd
                    st.win_tokens += tokens
                    st.added_nusd += nusd
                    st.added_tokens += tokens
                    st.oldest = now_us if st.oldest is None else min(st.oldest, now_us)
                until = blocks.get(c.key)
                if until is not None and (st.blocked is None or st.blocked < until):
                    st.blocked = until
                st.dirty = True
                st.show(c)
                bits = 0
                for alert_row, bit in alerts_for(c, hold, nusd, tokens, now, blocks):
                    self.alerts.append((alert_row, sql.insert_alert(x, alert_row)))
                    bits |= bit
                st.alerted |= bits
        self._release(hold)

    def _release(self, hold: Hold) -> None:
        """Drop a hold: what it reserved no longer counts."""
        if self.new_holds.pop(hold.hold_id, None) is not None:  # reserved in this batch: never written
            for c in hold.enforced:
                st = self.state[c.key]
                st.reserved_nusd -= hold.nusd
                st.reserved_tokens -= hold.tokens
            return
        if not hold.reserved:
            return
        self.deleted.append(hold.hold_id)
        if self.live is not None:
            for key, n, t in self.live.pop(hold.hold_id, ()):
                left = self.state.get(key)
                if left is not None:
                    left.reserved_nusd -= n
                    left.reserved_tokens -= t

    def write(self) -> None:
        sql, x, now_us = self.sql, self.x, self.now_us
        used = {c.key for h in self.new_holds.values() for c in h.enforced}
        unused = [k for k, s in self.state.items() if s.created and not s.dirty and k not in used]
        if unused:
            sql.drop_counters(x, unused)
        if self.new_holds:
            sql.insert_holds(
                x,
                [
                    (h.hold_id, c.key, h.nusd, h.tokens, h.expires_us, h.session_id)
                    for h in self.new_holds.values()
                    for c in h.enforced
                ],
            )
        if self.deleted:
            sql.delete_holds(x, self.deleted)
        dirty = [
            (s.posted_nusd, s.posted_tokens, s.blocked, s.alerted, now_us, k) for k, s in self.state.items() if s.dirty
        ]
        if dirty:
            sql.update_counters(x, dirty)
        for key, st in self.state.items():
            if st.added_nusd or st.added_tokens:
                sql.add_window(x, key, now_us, st.added_nusd, st.added_tokens, st.window_us)
        if self.renewed:
            sql.renew(x, self.renewed, now_us + self.timeout_us, now_us)
        if self.sweep:
            sql.sweep(x, now_us)
        self.fired = [row for row, inserted in self.alerts if inserted()]


def _key(c: Counter) -> str:
    return c.key
