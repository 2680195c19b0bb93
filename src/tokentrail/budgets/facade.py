"""`Budgets`, which is `ledger.budgets`: settings, reservations, settling, charges, the engine and
the budget thread of this process, and status (how budgets work: the package docstring)."""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from tokentrail import context as ctx
from tokentrail.budgets import charges
from tokentrail.budgets.alerts import Alert, CallbackSink, Dispatcher, WebhookSink
from tokentrail.budgets.book import BudgetDefinitions
from tokentrail.budgets.definitions import Rule, Suspension
from tokentrail.budgets.engine import Engine
from tokentrail.budgets.estimate import Estimate, estimate
from tokentrail.budgets.holds import applicable, new_hold
from tokentrail.budgets.keeper import Keeper
from tokentrail.budgets.models import ModelNames
from tokentrail.budgets.ops import BARRIER, POST, RESERVE, VOID, Hold, Op
from tokentrail.budgets.periods import parse_duration_s
from tokentrail.budgets.refusals import refuse_unpriced
from tokentrail.budgets.status import BudgetStatus
from tokentrail.events import usd_to_nano
from tokentrail.exceptions import BudgetExceeded, ConfigError, LedgerUnavailable
from tokentrail.store.budgets import BudgetSQL, KeepsBudgets

if TYPE_CHECKING:
    from tokentrail.events import UsageEvent
    from tokentrail.pricing import PriceBook
    from tokentrail.types import Store

log = logging.getLogger("tokentrail")


__all__ = ["Budgets"]

DEFAULT_HOLD_TIMEOUT_S = 120.0
DEFAULT_CACHE_TTL_S = 1.0
_running_loop = asyncio._get_running_loop  # a C function: is this thread running an event loop?


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class BudgetHost(Protocol):
    """What budgets need of the ledger they are kept in (a Ledger; for_store's stand-in)."""

    @property
    def store(self) -> Store: ...
    @property
    def prices(self) -> PriceBook: ...
    @property
    def display_url(self) -> str: ...


class Budgets(BudgetDefinitions):
    """The budgets kept in one ledger (`ledger.budgets`); see the module docstring.

    `fail_closed` (default False, or TOKENTRAIL_FAIL_CLOSED=1, or `fail_closed = true` in the
    budgets file): when the ledger cannot be reached to reserve, refuse the call with
    `LedgerUnavailable` instead of letting it through unbudgeted. `hold_timeout` (seconds, default
    120, TOKENTRAIL_HOLD_TIMEOUT): how long an unrenewed reservation counts."""

    def __init__(self, ledger: BudgetHost) -> None:
        self.ledger = ledger
        self.store = ledger.store
        self.prices = ledger.prices
        self.fail_closed = _env_flag("TOKENTRAIL_FAIL_CLOSED")
        timeout = os.environ.get("TOKENTRAIL_HOLD_TIMEOUT")
        self.hold_timeout = parse_duration_s(timeout) if timeout else DEFAULT_HOLD_TIMEOUT_S
        self.cache_ttl = DEFAULT_CACHE_TTL_S
        self.alerts = Dispatcher()
        hook = os.environ.get("TOKENTRAIL_ALERT_WEBHOOK")
        if hook:
            self.alerts.add(WebhookSink(hook, slack=_env_flag("TOKENTRAIL_ALERT_WEBHOOK_SLACK")))
        self._file = os.environ.get("TOKENTRAIL_BUDGETS") or None
        self._pid = os.getpid()
        self._sql: BudgetSQL | None = None
        self._rules: tuple[Rule, ...] = ()
        self._suspended: tuple[Suspension, ...] = ()
        self._version = -1
        self._next_check = 0.0
        self._refresh_lock = threading.RLock()
        self._refresh_task: asyncio.Task[None] | None = None  # an event loop's read (book.py)
        self._live: dict[str, Hold] = {}  # reserved, unsettled holds of this process (renewed)
        self._engine: Engine | None = None
        self._keeper: Keeper | None = None
        self._closed = False
        self._warned_at = 0.0
        self.fail_open_errors = 0  # budget-path errors that fail-open let pass (the calls went ahead)
        self._charged: OrderedDict[str, None] = OrderedDict()  # ids of the events charged lately
        self.models = ModelNames(self.prices)
        # charges waiting for the definitions (bounded: a store down for long drops the oldest)
        self._pending_charges: deque[tuple[UsageEvent, int, int]] = deque(maxlen=100_000)
        self._charge_lock = threading.Lock()  # not the refresh lock: a charge never waits for the store
        # held by whoever posts the waiting charges: status() waits for a pass under way, so a charge
        # already taken off the queue (but not yet posted) is never missed
        self._charge_run = threading.Lock()

    @classmethod
    def for_store(cls, store: Store, prices: PriceBook | None = None) -> Budgets:
        """Budgets of a store opened without a Ledger (the CLI): definitions, status, kill switch."""
        from types import SimpleNamespace

        from tokentrail.pricing import default_price_book

        shim = SimpleNamespace(
            store=store,
            prices=prices or default_price_book(),
            display_url=getattr(store, "display_url", store.url),
            _closed=False,
        )
        return cls(shim)

    # -- settings -------------------------------------------------------------------------------

    def configure(
        self,
        *,
        fail_closed: bool | None = None,
        hold_timeout: float | None = None,
        cache_ttl: float | None = None,
    ) -> Budgets:
        if fail_closed is not None:
            self.fail_closed = bool(fail_closed)
        if hold_timeout is not None:
            if hold_timeout <= 0:
                raise ConfigError("hold_timeout must be positive")
            self.hold_timeout = float(hold_timeout)
        if cache_ttl is not None:
            self.cache_ttl = max(0.0, float(cache_ttl))
        return self

    def on_alert(self, fn: Callable[[Alert], object]) -> CallbackSink:
        """Call `fn(alert)` for every alert this process fires (in the alert thread)."""
        return self.alerts.add(CallbackSink(fn))  # type: ignore[return-value]

    # -- definitions ----------------------------------------------------------------------------

    def _backend(self) -> BudgetSQL:
        if self._pid != os.getpid():  # a forked child: its own connection, none of the parent's holds
            self._pid = os.getpid()
            self._sql = None
            self._live.clear()
            self._pending_charges.clear()
            # a lock the parent held at the fork stays held in the child, with no thread to free it
            self._charge_lock, self._charge_run = threading.Lock(), threading.Lock()
            self._refresh_lock = threading.RLock()
            self.store = self.ledger.store
            self._engine = self._keeper = None
        if self._sql is None:
            sql = self.store.budget_sql() if isinstance(self.store, KeepsBudgets) else None
            if sql is None:
                raise ConfigError(
                    f"the ledger {self.store.url} cannot keep budgets (an SQLite or PostgreSQL store can)"
                )
            self._sql = sql
        return self._sql

    # -- enforcement ------------------------------------------------------------------------------

    def reserve_call(
        self,
        *,
        provider: str,
        model: str | None,
        body: Any,
        kind: str = "llm",
        attribution: ctx.Attribution | None = None,
        owner: object | None = None,
    ) -> Hold | None:
        """Reserve the most a call with this request can cost on every budget it falls in, or raise
        BudgetExceeded / BudgetThrottled / LedgerUnavailable. None: no budget applies. `owner`: an
        object whose death without a settle() voids the hold (the Exchange)."""
        hold = self._call_hold(provider, model, body, kind, attribution)
        if hold is None:
            return None
        op = None
        if hold.enforced:
            try:
                op = self._engine_of().call(Op(RESERVE, hold))
            except Exception as e:
                self._unreachable(e, "reserve budget in")
        return self._reserved(hold, op, owner)

    async def areserve_call(
        self,
        *,
        provider: str,
        model: str | None,
        body: Any,
        kind: str = "llm",
        attribution: ctx.Attribution | None = None,
        owner: object | None = None,
    ) -> Hold | None:
        """reserve_call() for a coroutine: the event loop runs on while the budget thread decides
        (and, should the definitions be due, while a worker thread reads them)."""
        if time.monotonic() >= self._next_check:
            try:
                await self._arefresh()
            except Exception as e:
                self._unreachable(e, "read the budgets of")
        hold = self._call_hold(provider, model, body, kind, attribution, read=False)
        if hold is None:
            return None
        op = None
        if hold.enforced:
            try:
                op = await self._engine_of().acall(Op(RESERVE, hold))
            except asyncio.CancelledError:
                self._engine_of().submit(Op(VOID, hold))  # after the reservation, should it land
                raise
            except Exception as e:
                self._unreachable(e, "reserve budget in")
        return self._reserved(hold, op, owner)

    def reserve(
        self,
        *,
        cost_usd: Decimal | float | str = 0,
        tokens: int = 0,
        provider: str | None = None,
        model: str | None = None,
        attribution: ctx.Attribution | None = None,
    ) -> Hold | None:
        """Reserve an amount you estimated yourself (for calls tokentrail does not meter); settle it
        with post() or void(). None: no budget applies."""
        if not self._active():
            return None
        a = attribution or ctx.current()
        rules = self._applicable(a, provider, model)
        if not rules:
            return None
        nusd = usd_to_nano(Decimal(str(cost_usd))) or 0
        hold = self._hold(rules, nusd, int(tokens), a, None)
        op = None
        if hold.enforced:
            try:
                op = self._engine_of().call(Op(RESERVE, hold))
            except Exception as e:
                self._unreachable(e, "reserve budget in")
        return self._reserved(hold, op, None)

    def _call_hold(
        self,
        provider: str,
        model: str | None,
        body: Any,
        kind: str,
        attribution: ctx.Attribution | None,
        *,
        read: bool = True,
    ) -> Hold | None:
        """The hold a metered call needs (per-call caps checked), or None: no budget applies.
        `read` False: the caller has just had the definitions read (or their error handled)."""
        if not (self._active() if read else (self._rules or self._suspended)):
            return None
        self.run_charges()  # spend recorded before this call counts against it
        a = attribution or ctx.current()
        rules = self._applicable(a, provider, model)
        if not rules:
            return None
        try:
            priced = self.models.priced(provider, model)  # an alias: the model it was answered as
            est = estimate(provider=provider, model=priced, body=body, prices=self.prices, kind=kind)
        except Exception as e:  # never a silent pass: fail-closed refuses, fail-open posts what it spends
            self.failed(e, f"could not estimate the cost of a {provider} call")
            hold = self._hold(rules, 0, 0, a, None)
            hold.charge = True  # nothing reserved: its spend is posted in full, not as an overage
        else:
            refuse_unpriced(rules, est, model, a.session_id)
            hold = self._hold(rules, est.cost_nusd, est.tokens, a, est)
        hold.provider, hold.model, hold.attribution = provider, model, a
        return hold

    def _active(self) -> bool:
        try:
            if time.monotonic() >= self._next_check:
                self._refresh()
        except Exception as e:
            self._unreachable(e, "read the budgets of")
        return bool(self._rules or self._suspended)

    def _unreachable(self, e: BaseException, what: str) -> None:
        self.failed(e, f"cannot {what} the ledger {self.ledger.display_url}")

    def failed(self, e: BaseException, what: str) -> None:
        """The budget path failed (`what` says how): fail-closed raises LedgerUnavailable; fail-open
        counts the call in `fail_open_errors`, logs a warning (at most once a minute) and returns."""
        if isinstance(e, BudgetExceeded):
            raise e
        if self.fail_closed:
            raise LedgerUnavailable(
                f"tokentrail: {what} ({type(e).__name__}: {str(e)[:200]}); the call was refused (fail-closed)"
            ) from e
        self.fail_open_errors += 1
        now = time.monotonic()
        if now - self._warned_at > 60:
            self._warned_at = now
            log.warning(
                "tokentrail: %s (%s: %s); calls go ahead unbudgeted (fail-open; %d so far)",
                what,
                type(e).__name__,
                str(e)[:200],
                self.fail_open_errors,
            )

    def _applicable(
        self, a: ctx.Attribution, provider: str | None, model: str | None, *, charge: bool = False
    ) -> builtins.list[tuple[Rule, Any]]:
        return applicable(self._rules, () if charge else self._suspended, self.models, a, provider, model)

    def _hold(
        self, rules: builtins.list[tuple[Rule, Any]], nusd: int, tokens: int, a: ctx.Attribution, est: Estimate | None
    ) -> Hold:
        return new_hold(rules, nusd, tokens, a, est, self.hold_timeout)

    def _reserved(self, hold: Hold, op: Op | None, owner: object | None) -> Hold:
        """The hold once the engine answered `op` (None: nothing to reserve, or the ledger could
        not be reached and the call goes ahead unbudgeted; its spend is still posted)."""
        if op is not None:
            if op.error is not None:
                self._unreachable(op.error, "reserve budget in")
            elif op.result is not None:
                raise op.result
            elif not op.done:
                self._unreachable(RuntimeError("the budget engine is busy in this thread"), "reserve budget in")
        if owner is not None:
            hold.finalizer = weakref.finalize(owner, self._abandoned, hold)
        if hold.reserved:
            self._live[hold.hold_id] = hold
            self._start_keeper()
        return hold

    # -- charges: spend that happened without a reservation --------------------------------------

    def charge(self, event: UsageEvent) -> None:
        """Post spend that already happened unreserved (record_llm, record_tool, the event API, OTLP;
        an adjustment posts its delta) in full on every budget the event falls in, in the period
        current when it is recorded. It cannot be refused: a block budget it spends refuses the next
        reservation. Never raises (a failure is logged)."""
        charges.charge(self, event)

    def run_charges(self) -> None:
        """Post the charges waiting for the definitions to be read (the budget thread, or a
        reservation, which must see them). Never raises."""
        if self._pid != os.getpid():
            return  # a forked child has none of the parent's charges (its own begin at _backend())
        if self._pending_charges or self._charge_run.locked():
            charges.run_pending(self)

    # -- settling ---------------------------------------------------------------------------------

    def settle(self, hold: Hold | None, event: UsageEvent | None) -> None:
        """Resolve a hold with the call's event: post its cost and tokens (what it consumed, even when
        it failed or was cancelled part-way), or void the hold when it consumed nothing. Never raises."""
        if hold is None:
            return
        nusd = (usd_to_nano(event.cost_usd) or 0) if event is not None else 0
        tokens = event.input_tokens + event.output_tokens if event is not None else 0
        self.post(hold, nusd=nusd, tokens=tokens)
        if event is not None and event.model and hold.model and event.model != hold.model and hold.provider:
            # answered as another model: remember the alias, and charge the budgets of that model too
            try:
                self.models.learn(hold.provider, hold.model, event.model)
                if (nusd or tokens) and hold.attribution is not None:
                    held = {c.budget for c in hold.counters}  # posted there already (in its own bucket)
                    a = hold.attribution
                    charges.charge_budgets(self, a, hold.provider, event.model, nusd, tokens, held)
            except Exception as e:
                log.warning("tokentrail: could not charge a call's model to its budgets: %s", e)

    def void(self, hold: Hold | None) -> None:
        """Release a hold without spending anything. Never raises."""
        if hold is not None:
            self.post(hold, nusd=0, tokens=0)

    def post(
        self, hold: Hold | None, *, cost_usd: Decimal | None = None, nusd: int | None = None, tokens: int = 0
    ) -> None:
        """Post what a call really cost (`cost_usd`, or nano-dollars `nusd`) and used; the rest returns.
        Waits until it is durable, except in a thread running an event loop (queued: the loop must
        not wait for a commit). Never raises: a post the store refuses is retried in the background."""
        if hold is None or hold.settled:
            return
        hold.settled = True
        if hold.finalizer is not None:
            hold.finalizer.detach()
        self._live.pop(hold.hold_id, None)
        amount = nusd if nusd is not None else (usd_to_nano(cost_usd) or 0)
        if not hold.reserved and not (hold.counters or hold.call_rules):
            return
        if not hold.reserved and not (amount or tokens):
            return  # nothing reserved, nothing spent
        op = Op(POST if amount or tokens else VOID, hold, amount, tokens)
        try:
            engine = self._engine_of()
            if _running_loop() is not None:
                engine.submit(op)
            else:
                engine.call(op)
        except Exception as e:
            log.warning("tokentrail: could not post a call's spend to its budgets: %s", e)

    def _abandoned(self, hold: Hold) -> None:
        """The call's Exchange died without settling (a refused retry, a stream never read): void
        the hold later, in a batch (this runs inside the garbage collector: no lock may be taken)."""
        if not hold.settled:
            hold.settled = True
            self._live.pop(hold.hold_id, None)
            engine = self._engine
            if engine is not None and hold.reserved:
                engine.submit(Op(VOID, hold), wake=False)

    # -- the engine and its thread ------------------------------------------------------------------

    def _engine_of(self) -> Engine:
        self._backend()  # a forked child gets an engine of its own
        engine = self._engine
        if engine is None:
            with self._refresh_lock:
                if self._engine is None:
                    self._engine = Engine(self._backend, lambda: self.hold_timeout, self._deliver, self._start_keeper)
                engine = self._engine
        return engine

    def _deliver(self, alerts: builtins.list[Alert]) -> None:
        self.alerts.dispatch(alerts)

    def _start_keeper(self) -> None:
        keeper = self._keeper
        if keeper is None:
            engine = self._engine_of()
            with self._refresh_lock:
                if self._keeper is None:
                    self._keeper = Keeper(
                        engine,
                        self._live,
                        lambda: self.hold_timeout,
                        lambda: self._closed or getattr(self.ledger, "_closed", False),
                        upkeep=self._upkeep,
                    )
                keeper = self._keeper
        keeper.start()

    def _upkeep(self) -> None:
        self._refresh_ahead()
        self.run_charges()

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every post and void queued so far is applied (those the store refused are
        retried once more), and deliver queued alerts (tests, shutdown)."""
        self.run_charges()
        engine = self._engine
        if engine is not None and self._pid == os.getpid():
            if engine.retry:
                engine.retry_due()
            engine.call(Op(BARRIER))
        self.alerts.flush(timeout)

    def close(self) -> None:
        """Give back the reservations of this process's calls still running (they are over), finish
        the queued work and alerts, and stop the budget thread."""
        if self._closed:
            return
        for hold in list(self._live.values()):
            self.void(hold)
        try:
            self.flush(5.0)
        except Exception:
            log.debug("tokentrail: flushing budgets at close failed", exc_info=True)
        self._closed = True
        if self._keeper is not None:
            self._keeper.join(5.0)
        if self._sql is not None:
            self._sql.close()
            self._sql = None

    # -- status -----------------------------------------------------------------------------------

    def status(self, name: str | None = None) -> builtins.list[BudgetStatus]:
        """Each budget's current period (each bucket of a `*` budget): limit, posted, reserved."""
        from tokentrail.budgets.status import status

        self.run_charges()
        if self._engine is not None and self._pid == os.getpid():
            self._engine.call(Op(BARRIER))  # this process's queued posts and voids count
        return status(self, name)
