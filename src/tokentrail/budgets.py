"""Budgets that cannot be overspent: reserve before the call, post after it, void on failure (DESIGN §4).

    ledger.budgets.set("legal-monthly", scope={"team": "legal"}, period="month", limit_usd=500)
    ledger.budgets.set("per-agent-daily", scope={"agent": "*"}, period="day", limit_usd=20, tz="Europe/Paris")
    ledger.budgets.set("burn", period="rolling:1m", limit_tokens=200_000, action="throttle")
    ledger.budgets.suspend({"agent": "ci-fixer"})        # kill switch, until resume()

Before a metered call is sent, its maximum cost (tokentrail.estimate) is reserved on every budget
whose scope it falls in, atomically (all or none): refused, it raises `BudgetExceeded` (or
`BudgetThrottled`) and nothing is sent. After the call its actual cost is posted and the rest of
the reservation returns; a call that fails or is cancelled posts what it consumed, or nothing.
A reservation nobody resolves (the process was killed) stops counting at its expiry; live ones
are renewed by a background thread while their call runs.

Overage: a call that cost more than it reserved is posted in full and recorded as an overage
alert, and the budget's counter then refuses every call until its period ends. That is the only
way posted spend can pass a limit.

A process with no budgets pays one monotonic-clock comparison per call: the definitions are
cached and re-read only when the ledger's budget version moves (checked at most every
`cache_ttl` seconds).
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tokentrail import context as ctx
from tokentrail._budget_sql import FOREVER_US, BudgetSQL, Counter, backend_for
from tokentrail.alerts import Alert, CallbackSink, Dispatcher, WebhookSink
from tokentrail.budget_alerts import alerts_for, cap_overage
from tokentrail.budget_defs import (
    DEFAULT_ALERT_AT,
    Budget,
    Rule,
    Suspension,
    call_dims,
    load_file,
    matches,
    normalise_scope,
    scope_text,
)
from tokentrail.budget_status import BudgetStatus
from tokentrail.estimate import Estimate, estimate
from tokentrail.events import from_micros, nano_to_usd, new_event_id, ts_micros, usd_to_nano
from tokentrail.exceptions import BudgetExceeded, BudgetThrottled, ConfigError, LedgerUnavailable
from tokentrail.periods import parse_duration_s

if TYPE_CHECKING:
    from tokentrail.events import UsageEvent

log = logging.getLogger("tokentrail")

__all__ = ["Budget", "BudgetStatus", "Budgets", "Hold", "Suspension"]

DEFAULT_HOLD_TIMEOUT_S = 120.0
DEFAULT_CACHE_TTL_S = 1.0
_SWEEP_EVERY_S = 60.0
_POST_RETRY_FOR_S = 3600.0


@dataclass(eq=False, slots=True)
class Hold:
    """A reservation: what one call may spend, on every budget counter it charges."""

    hold_id: str
    counters: list[Counter]
    call_rules: list[Rule]
    nusd: int
    tokens: int
    session_id: str | None
    expires_us: int
    reserved: bool  # rows were written (some budget enforces); False: post-only (alert budgets)
    estimate: Estimate | None = None
    settled: bool = False
    renewed_at: float = field(default_factory=time.monotonic)
    finalizer: Any = None

    @property
    def cost_usd(self) -> Decimal:
        return nano_to_usd(self.nusd) or Decimal(0)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class Budgets:
    """The budgets kept in one ledger (`ledger.budgets`); see the module docstring.

    `fail_closed` (default False, or TOKENTRAIL_FAIL_CLOSED=1, or `fail_closed = true` in the
    budgets file): when the ledger cannot be reached to reserve, refuse the call with
    `LedgerUnavailable` instead of letting it through unbudgeted. `hold_timeout` (seconds, default
    120, TOKENTRAIL_HOLD_TIMEOUT): how long an unrenewed reservation counts."""

    def __init__(self, ledger: Any) -> None:
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
        self._live: dict[str, Hold] = {}
        self._deferred: deque[tuple[str, Hold, int, int]] = deque()
        self._retry: deque[tuple[float, Hold, int, int]] = deque()
        self._keeper: threading.Thread | None = None
        self._wake = threading.Event()
        self._closed = False
        self._warned_at = 0.0

    @classmethod
    def for_store(cls, store: Any, prices: Any = None) -> Budgets:
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
            self.store = self.ledger.store
            self._keeper = None
        if self._sql is None:
            sql = backend_for(self.store)
            if sql is None:
                raise ConfigError(
                    f"the ledger {self.store.url} cannot keep budgets (an SQLite or PostgreSQL store can)"
                )
            self._sql = sql
        return self._sql

    def set(
        self,
        name: str,
        *,
        scope: Mapping[str, Any] | None = None,
        period: str = "month",
        limit_usd: Decimal | float | int | str | None = None,
        limit_tokens: int | None = None,
        alert_at: Iterable[float] | None = DEFAULT_ALERT_AT,
        action: str = "block",
        tz: str = "UTC",
        source: str = "api",
    ) -> Budget:
        """Create or replace the budget `name`. Spend already counted in its current period is kept."""
        b = Budget.build(
            name,
            scope=scope,
            period=period,
            limit_usd=limit_usd,
            limit_tokens=limit_tokens,
            alert_at=tuple(alert_at) if alert_at is not None else (),
            action=action,
            tz=tz,
            source=source,
        )
        self._backend().put_budget(b.to_row(ts_micros(datetime.now(UTC))))
        self._refresh(force=True)
        return b

    def get(self, name: str) -> Budget | None:
        return next((b for b in self.list() if b.name == name), None)

    def list(self) -> builtins.list[Budget]:
        self._refresh(force=True)
        return [r.budget for r in self._rules]

    def rm(self, name: str) -> bool:
        """Remove a budget and its counters; False if there was none of that name."""
        found = self._backend().remove_budget(name)
        self._refresh(force=True)
        return found

    def suspend(self, scope: Mapping[str, Any], reason: str | None = None) -> Suspension:
        """Kill switch: refuse every call in `scope` (e.g. {"agent": "ci-fixer"}) until resume()."""
        pairs = normalise_scope(scope)
        if not pairs:
            raise ConfigError("suspend needs a scope, e.g. agent=ci-fixer")
        self._backend().put_suspension(json.dumps(dict(pairs), sort_keys=True), reason, _now_us())
        self._refresh(force=True)
        return Suspension(pairs, reason)

    def resume(self, scope: Mapping[str, Any]) -> bool:
        found = self._backend().remove_suspension(json.dumps(dict(normalise_scope(scope)), sort_keys=True))
        self._refresh(force=True)
        return found

    def suspensions(self) -> builtins.list[Suspension]:
        self._refresh(force=True)
        return list(self._suspended)

    def load(self, path: str | os.PathLike[str]) -> builtins.list[Budget]:
        """Store the budgets of a TOML file in the ledger (those unchanged are left alone) and apply
        its settings and webhooks to this process; see tokentrail.budget_defs.load_file."""
        cfg = load_file(path)
        if "fail_closed" in cfg.settings:
            self.fail_closed = bool(cfg.settings["fail_closed"])
        if "hold_timeout" in cfg.settings:
            v = cfg.settings["hold_timeout"]
            self.hold_timeout = parse_duration_s(v) if isinstance(v, str) else float(v)
        for h in cfg.webhooks:
            self.alerts.add(
                WebhookSink(str(h["url"]), slack=bool(h.get("slack")), timeout=float(h.get("timeout", 5.0)))
            )
        sql = self._backend()
        self._refresh(force=True)
        known = {r.budget.name: r.budget for r in self._rules}
        changed = False
        for b in cfg.budgets:
            old = known.get(b.name)
            if old is None or not old.same_definition(b):
                sql.put_budget(b.to_row(_now_us()))
                changed = True
        if changed:
            self._refresh(force=True)
        return cfg.budgets

    def _refresh(self, *, force: bool = False) -> None:
        """Re-read the definitions if they changed (checked at most every cache_ttl seconds)."""
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        with self._refresh_lock:
            if not force and now < self._next_check:
                return
            try:
                if self._file is not None:
                    path, self._file = self._file, None
                    self.load(path)
                sql = self._backend()
                version = sql.version()
                if version != self._version or force:
                    version, rows, susp = sql.load()
                    self._rules = tuple(Rule.of(Budget.from_row(r)) for r in rows)
                    self._suspended = tuple(
                        Suspension(tuple(sorted(json.loads(s[0]).items())), s[1], from_micros(int(s[2]))) for s in susp
                    )
                    self._version = version
            finally:
                self._next_check = time.monotonic() + self.cache_ttl

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
        if not self._active():
            return None
        a = attribution or ctx.current()
        rules = self._applicable(a, provider, model)
        if not rules:
            return None
        est = estimate(provider=provider, model=model, body=body, prices=self.prices, kind=kind)
        return self._reserve(rules, est.cost_nusd, est.tokens, a, owner, est)

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
        return self._reserve(rules, nusd, int(tokens), a, None, None)

    def _active(self) -> bool:
        try:
            if time.monotonic() >= self._next_check:
                self._refresh()
        except Exception as e:
            self._unreachable(e, "read the budgets of")
        return bool(self._rules or self._suspended)

    def _unreachable(self, e: BaseException, what: str) -> None:
        if isinstance(e, BudgetExceeded):
            raise e
        if self.fail_closed:
            raise LedgerUnavailable(
                f"cannot {what} the ledger {self.ledger.display_url} ({type(e).__name__}: {e}); "
                "the call was refused (fail-closed)"
            ) from e
        now = time.monotonic()
        if now - self._warned_at > 60:
            self._warned_at = now
            log.warning(
                "tokentrail: cannot %s the ledger %s (%s); calls go ahead unbudgeted (fail-open)",
                what,
                self.ledger.display_url,
                e,
            )

    def _applicable(
        self, a: ctx.Attribution, provider: str | None, model: str | None
    ) -> builtins.list[tuple[Rule, Any]]:
        dims = call_dims(a, provider, model)
        for s in self._suspended:
            if matches(s.scope, dims, a.tags) is not None:
                e = BudgetExceeded(
                    f"scope {s.scope_text} is suspended (kill switch{': ' + s.reason if s.reason else ''}); "
                    f"every call in it is refused until `tokentrail budget resume --scope "
                    f"{','.join(f'{k}={v}' for k, v in s.scope)}`" + _session_note(a.session_id),
                    budget=None,
                )
                e.scope = s.scope_text  # type: ignore[attr-defined]
                raise e
        out = []
        for r in self._rules:
            bucket = matches(r.budget.scope, dims, a.tags)
            if bucket is None or (r.period.kind == "session" and not a.session_id):
                continue
            out.append((r, bucket))
        return out

    def _reserve(
        self,
        rules: builtins.list[tuple[Rule, Any]],
        nusd: int,
        tokens: int,
        a: ctx.Attribution,
        owner: object | None,
        est: Estimate | None,
    ) -> Hold:
        now = datetime.now(UTC)
        now_us = ts_micros(now)
        counters: builtins.list[Counter] = []
        caps: builtins.list[Rule] = []
        for r, bucket in rules:
            if r.period.kind == "call":
                if r.enforce:
                    self._check_cap(r, bucket, nusd, tokens, a, est)
                caps.append(r)
                continue
            key, start, end = r.counter(bucket, a.session_id, now)
            counters.append(
                Counter(key, r.budget.name, scope_text(bucket), start, end, r.period.window_us, r.enforce, extra=r)
            )
        hold = Hold(
            hold_id=new_event_id(),
            counters=counters,
            call_rules=caps,
            nusd=nusd,
            tokens=tokens,
            session_id=a.session_id,
            expires_us=now_us + int(self.hold_timeout * 1_000_000),
            reserved=False,
            estimate=est,
        )
        enforced = [c for c in counters if c.enforce]
        if enforced:
            refusal: object = None
            try:
                self._drain()
                refusal = self._backend().reserve(
                    enforced,
                    hold.hold_id,
                    nusd,
                    tokens,
                    hold.expires_us,
                    a.session_id,
                    now_us,
                    lambda cs: self._decide(cs, nusd, tokens, now_us, a.session_id),
                )
            except Exception as e:
                self._unreachable(e, "reserve budget in")
                return hold  # fail-open: nothing reserved, the spend is still posted afterwards
            if isinstance(refusal, BaseException):
                raise refusal
            hold.reserved = True
        if owner is not None:
            hold.finalizer = weakref.finalize(owner, self._abandoned, hold)
        if hold.reserved:
            self._live[hold.hold_id] = hold
            self._start_keeper()
        return hold

    def _check_cap(
        self, r: Rule, bucket: Any, nusd: int, tokens: int, a: ctx.Attribution, est: Estimate | None
    ) -> None:
        over_usd = r.limit_nusd is not None and nusd > r.limit_nusd
        over_tokens = r.limit_tokens is not None and tokens > r.limit_tokens
        if over_usd or over_tokens:
            hint = " (set max_tokens to bound the call)" if est is not None else ""
            e = BudgetExceeded(
                f"Budget '{r.budget.name}' ({scope_text(bucket)}, call) refused the call: it may cost up to "
                f"{_amounts(nusd, tokens, r)}, over the per-call limit of {_limits(r)}{hint}"
                + _session_note(a.session_id),
                budget=r.budget.name,
            )
            e.scope = scope_text(bucket)  # type: ignore[attr-defined]
            raise e

    def _decide(
        self, counters: builtins.list[Counter], nusd: int, tokens: int, now_us: int, session_id: str | None
    ) -> object:
        for c in counters:
            r: Rule = c.extra
            b = r.budget
            head = f"Budget '{b.name}' ({c.bucket}, {b.period})"
            if c.blocked_until_us is not None and now_us < c.blocked_until_us:
                until = "the session ends" if c.blocked_until_us >= FOREVER_US else from_micros(c.blocked_until_us)
                msg = (
                    f"{head} refused the call: an earlier call went past its reservation (overage), so the "
                    f"budget refuses every call until {until}; limit {_limits(r)}, "
                    f"spent {_amounts(c.posted_nusd, c.posted_tokens, r)}"
                )
                return self._refusal(r, c, msg + _session_note(session_id), now_us, never_fits=False)
            over_usd = r.limit_nusd is not None and c.posted_nusd + c.reserved_nusd + nusd > r.limit_nusd
            over_tokens = r.limit_tokens is not None and c.posted_tokens + c.reserved_tokens + tokens > r.limit_tokens
            if over_usd or over_tokens:
                never = (r.limit_nusd is not None and nusd > r.limit_nusd) or (
                    r.limit_tokens is not None and tokens > r.limit_tokens
                )
                msg = (
                    f"{head} refused the call: limit {_limits(r)}, spent {_amounts(c.posted_nusd, c.posted_tokens, r)}"
                    f" + reserved {_amounts(c.reserved_nusd, c.reserved_tokens, r)}, this call may cost up to "
                    f"{_amounts(nusd, tokens, r)}"
                )
                return self._refusal(r, c, msg + _session_note(session_id), now_us, never_fits=never)
        return None

    def _refusal(self, r: Rule, c: Counter, msg: str, now_us: int, *, never_fits: bool) -> BudgetExceeded:
        e: BudgetExceeded
        if r.budget.action == "throttle" and not never_fits:
            if r.period.rolling:
                retry = (c.oldest_us + r.period.window_us - now_us) / 1e6 if c.oldest_us is not None else 1.0
            else:
                retry = ((c.end_us or now_us) - now_us) / 1e6
            retry = max(0.05, retry)
            e = BudgetThrottled(f"{msg}; retry after {retry:.1f}s", budget=r.budget.name, retry_after=retry)
        else:
            e = BudgetExceeded(msg, budget=r.budget.name)
        e.scope = c.bucket  # type: ignore[attr-defined]
        e.period = r.budget.period  # type: ignore[attr-defined]
        return e

    # -- settling ---------------------------------------------------------------------------------

    def settle(self, hold: Hold | None, event: UsageEvent | None) -> None:
        """Resolve a hold with the call's event: post its cost and tokens (what it consumed, even when
        it failed or was cancelled part-way), or void the hold when it consumed nothing. Never raises."""
        if hold is None:
            return
        nusd = (usd_to_nano(event.cost_usd) or 0) if event is not None else 0
        tokens = event.input_tokens + event.output_tokens if event is not None else 0
        self.post(hold, nusd=nusd, tokens=tokens)

    def void(self, hold: Hold | None) -> None:
        """Release a hold without spending anything. Never raises."""
        if hold is not None:
            self.post(hold, nusd=0, tokens=0)

    def post(
        self, hold: Hold | None, *, cost_usd: Decimal | None = None, nusd: int | None = None, tokens: int = 0
    ) -> None:
        """Post what a call really cost (`cost_usd`, or nano-dollars `nusd`) and used; the rest returns."""
        if hold is None or hold.settled:
            return
        hold.settled = True
        if hold.finalizer is not None:
            hold.finalizer.detach()
        self._live.pop(hold.hold_id, None)
        amount = nusd if nusd is not None else (usd_to_nano(cost_usd) or 0)
        sql = self._sql
        if sql is not None and getattr(sql, "owner", None) == threading.get_ident():
            # called back inside our own transaction (a stream's __del__ run by the GC): later
            self._deferred.append(("post", hold, amount, tokens))
            self._start_keeper()
            return
        try:
            self._post(hold, amount, tokens)
        except Exception as e:
            log.warning("tokentrail: could not post a call's spend to its budgets (will retry): %s", e)
            self._retry.append((time.monotonic() + _POST_RETRY_FOR_S, hold, amount, tokens))
            self._start_keeper()

    def _post(self, hold: Hold, nusd: int, tokens: int) -> None:
        sql = self._backend()
        now = datetime.now(UTC)
        now_us = ts_micros(now)
        for r in hold.call_rules:
            if (r.limit_nusd is not None and nusd > r.limit_nusd) or (
                r.limit_tokens is not None and tokens > r.limit_tokens
            ):
                cap_overage(self, sql, r, hold, nusd, tokens, now)
        if not hold.counters or (nusd == 0 and tokens == 0):
            if hold.reserved:
                sql.void([hold.hold_id])
            return
        blocks: dict[str, int] = {}
        for c in hold.counters:
            r = c.extra
            if c.enforce and (
                (r.limit_nusd is not None and nusd > hold.nusd) or (r.limit_tokens is not None and tokens > hold.tokens)
            ):
                blocks[c.key] = _block_until(c, now_us)
        fired = sql.post(
            hold.counters,
            hold.hold_id if hold.reserved else None,
            nusd,
            tokens,
            now_us,
            blocks,
            lambda c: alerts_for(c, hold, nusd, tokens, now, blocks),
        )
        if fired:
            self.alerts.dispatch([Alert.from_row(row) for row in fired])

    def _abandoned(self, hold: Hold) -> None:
        """The call's Exchange died without settling (a refused retry, a stream never read): void
        the hold later, from the keeper thread (this runs inside the garbage collector)."""
        if not hold.settled:
            hold.settled = True
            self._live.pop(hold.hold_id, None)
            self._deferred.append(("void", hold, 0, 0))
            self._wake.set()

    # -- the keeper: renews live holds, runs deferred work, sweeps expired holds ------------------------

    def _start_keeper(self) -> None:
        if self._keeper is not None and self._keeper.is_alive():
            if self._deferred:
                self._wake.set()
            return
        with self._refresh_lock:
            if self._keeper is None or not self._keeper.is_alive():
                self._keeper = threading.Thread(target=self._keep, name="tokentrail-budgets", daemon=True)
                self._keeper.start()

    def _keep(self) -> None:
        next_sweep = time.monotonic() + _SWEEP_EVERY_S
        while not self._closed and not getattr(self.ledger, "_closed", False):
            self._wake.wait(max(0.05, min(self.hold_timeout / 4, 10.0)))
            self._wake.clear()
            try:
                self._drain()
                now = time.monotonic()
                due = [h for h in list(self._live.values()) if now - h.renewed_at > self.hold_timeout / 3]
                if due:
                    self._backend().renew([h.hold_id for h in due], _now_us() + int(self.hold_timeout * 1e6))
                    for h in due:
                        h.renewed_at = now
                if self._retry:
                    self._retry_posts()
                if now >= next_sweep:
                    next_sweep = now + _SWEEP_EVERY_S
                    self._backend().sweep(_now_us())
            except Exception as e:
                log.debug("tokentrail: budget upkeep failed: %s", e)

    def _drain(self) -> None:
        """Run posts and voids that had to wait (deferred from a finalizer or our own transaction)."""
        while self._deferred:
            try:
                what, hold, nusd, tokens = self._deferred.popleft()
            except IndexError:
                return
            try:
                if what == "void":
                    if hold.reserved:
                        self._backend().void([hold.hold_id])
                else:
                    self._post(hold, nusd, tokens)
            except Exception as e:
                log.warning("tokentrail: could not resolve a budget reservation (it will expire): %s", e)

    def _retry_posts(self) -> None:
        for _ in range(len(self._retry)):
            deadline, hold, nusd, tokens = self._retry.popleft()
            try:
                self._post(hold, nusd, tokens)
            except Exception:
                if time.monotonic() < deadline:
                    self._retry.append((deadline, hold, nusd, tokens))
                else:
                    log.error("tokentrail: gave up posting a call's spend to its budgets")

    def flush(self, timeout: float = 30.0) -> None:
        """Finish deferred posts and voids, and deliver queued alerts (tests, shutdown)."""
        self._drain()
        if self._retry:
            self._retry_posts()
        self.alerts.flush(timeout)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        try:
            self.flush(5.0)
        except Exception:
            log.debug("tokentrail: flushing budgets at close failed", exc_info=True)
        for hold in list(self._live.values()):  # this process's calls are over: give their money back
            self.void(hold)
        if self._sql is not None:
            self._sql.close()
            self._sql = None

    # -- status -----------------------------------------------------------------------------------

    def status(self, name: str | None = None) -> builtins.list[BudgetStatus]:
        """Each budget's current period (each bucket of a `*` budget): limit, posted, reserved."""
        from tokentrail.budget_status import status

        return status(self, name)


def _now_us() -> int:
    return ts_micros(datetime.now(UTC))


def _block_until(c: Counter, now_us: int) -> int:
    if c.end_us is not None:
        return c.end_us
    if c.window_us:
        return now_us + c.window_us
    return FOREVER_US  # a session: until it ends (its counter is never used again)


def _limits(r: Rule) -> str:
    from tokentrail.alerts import money

    parts = []
    if r.budget.limit_usd is not None:
        parts.append(money(r.budget.limit_usd))
    if r.limit_tokens is not None:
        parts.append(f"{r.limit_tokens:,} tokens")
    return " / ".join(parts)


def _amounts(nusd: int, tokens: int, r: Rule) -> str:
    from tokentrail.alerts import money

    parts = []
    if r.limit_nusd is not None:
        parts.append(money(nano_to_usd(nusd) or Decimal(0)))
    if r.limit_tokens is not None:
        parts.append(f"{tokens:,} tokens")
    return " / ".join(parts)


def _session_note(session_id: str | None) -> str:
    return f" (session {session_id})" if session_id else " (no session)"
