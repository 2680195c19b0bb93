"""The ledger: prices and attributes events in the caller's thread, writes them in the background.

`record()` costs the caller a few microseconds: it appends to an in-memory queue. A writer
thread drains the queue in batches, one durable transaction per batch (group commit), and
`flush()` returns only once everything recorded before it is durable.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokentrail import capture
from tokentrail import context as ctx
from tokentrail.events import (
    ToolCall,
    UsageEvent,
    args_hash,
    bound_text,
    new_event_id,
    quantize_usd,
    usd_to_nano,
)
from tokentrail.exceptions import ConfigError, FlushTimeout, InvalidUsage
from tokentrail.ledger_checks import attributed, caller_cost, check_latency, check_text
from tokentrail.pricing import PriceBook, canonical_provider, default_price_book
from tokentrail.spool import Spool, default_dir, folder_for
from tokentrail.store import open_store
from tokentrail.types import LedgerBudgets, Store
from tokentrail.usage import Usage, UsageProblem, from_counts
from tokentrail.writer import Side, Writer, quarantine_row

log = logging.getLogger("tokentrail")


# Process-wide listeners (capture_events): called with every event any ledger records.
_listeners: list[Callable[[UsageEvent], None]] = []
# What makes a ledger's budgets: the budgets package sits above the ledger, so `import tokentrail`
# hands its factory down (keep_budgets_with) instead of the ledger importing it.
_budgets_factory: Callable[[Ledger], LedgerBudgets] | None = None


def keep_budgets_with(factory: Callable[[Ledger], LedgerBudgets]) -> None:
    """Set what `Ledger.budgets` is made with (tokentrail/__init__.py: tokentrail.budgets.Budgets)."""
    global _budgets_factory
    _budgets_factory = factory


class Ledger:
    """Where events are recorded. `Ledger("sqlite:///ledger.db")` or `Ledger("postgresql://…")`."""

    def __init__(
        self,
        url: str | None = None,
        *,
        store: Store | None = None,
        prices: PriceBook | None = None,
        capture_content: bool | None = None,
        redact: Callable[[str], str] | None = None,
        spool: bool | str | os.PathLike[str] = True,
        anomalies: Any = None,
        otel: Any = None,
    ) -> None:
        """`spool`: where batches wait, fsynced, while the store is unreachable, locked or full
        (True: TOKENTRAIL_SPOOL_DIR or ~/.tokentrail/spool; a path; False: keep them in memory
        and retry, so flush() raises FlushTimeout until the store is back).
        `capture_content`: keep each metered call's prompt and completion in the event's `content`,
        redacted by `redact` (None: TOKENTRAIL_CAPTURE_CONTENT, default off).
        `anomalies`: online anomaly detection (True, an AnomalyConfig, False; None:
        TOKENTRAIL_ANOMALIES, default off), see tokentrail.analytics.anomaly_watch.
        `otel`: export every event as an OpenTelemetry span and metrics (True, an OtelExport, False;
        None: TOKENTRAIL_OTEL_EXPORT, default off), see tokentrail.integrations.otel_export."""
        self.store: Store = store if store is not None else open_store(url)
        self.url = self.store.url
        # the URL without a password, for messages and logs
        self.display_url: str = getattr(self.store, "display_url", self.url)
        self.prices = prices or default_price_book()
        # `redact` replaces the default redactor (capture.redact_text), which it may call itself
        self.capture_content: bool = capture.enabled_from_env() if capture_content is None else bool(capture_content)
        self.redact: Callable[[str], str] = redact if redact is not None else capture.redact_text
        self._closed = False
        self._pid = os.getpid()
        self._warned_unpriced: set[tuple[str, str]] = set()
        self._spool_root = None if spool is False else default_dir() if spool is True else Path(spool)
        # called with every event this ledger records (after the process-wide ones); never raising
        self.listeners: list[Callable[[UsageEvent], None]] = []
        self.otel_export: Any = None
        strict = otel is not None  # asked for in code: a missing extra is an error, not a log line
        if otel is None and _otel_from_env():
            otel = True
        if otel is not None and otel is not False:
            from tokentrail.integrations.otel_export import start

            try:
                self.otel_export = start(self, otel, strict=strict)
            except ConfigError:
                self.store.close()
                raise
        self.anomaly_watch: Any = None
        if anomalies is None and os.environ.get("TOKENTRAIL_ANOMALIES"):
            from tokentrail.analytics.anomaly_watch import config_from_env

            anomalies = config_from_env()
        if anomalies is not None and anomalies is not False:
            from tokentrail.analytics.anomaly_watch import AnomalyConfig, AnomalyWatch

            self.anomaly_watch = AnomalyWatch(self, AnomalyConfig() if anomalies is True else anomalies)
        self._writer = self._start_writer()
        self._budgets: LedgerBudgets | None = None
        _live_ledgers.add(self)

    # -- recording ----------------------------------------------------------------------------

    def record(self, event: UsageEvent, *, session: ctx.Session | None = None) -> UsageEvent:
        """Queue an already-built event for durable storage and tell the listeners. `session`
        (default: the current one) gets the event counted into its running totals."""
        if self._closed:
            raise ConfigError(f"the ledger {self.display_url} is closed")
        if self._pid != os.getpid():
            self._after_fork()
        self._writer.put(event)
        s = session or ctx.current().session
        if s is not None and s.session_id == event.session_id:
            s.add(event)
        for listener in (*_listeners, *self.listeners) if self.listeners else _listeners:
            try:
                listener(event)
            except Exception:  # a listener must never break a call
                log.exception("tokentrail: an event listener failed")
        return event

    def record_llm(
        self,
        *,
        provider: str,
        model: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        kind: str = "llm",
        operation: str | None = None,
        status: str = "ok",
        latency_ms: float | None = None,
        streamed: bool = False,
        tool_calls: list[tuple[str | None, str, Any]] | None = None,
        ts: datetime | None = None,
        event_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        cost_usd: Decimal | str | int | None = None,
    ) -> UsageEvent:
        """Meter a model call by hand (inclusive counts). Raises InvalidUsage on impossible input.

        `tool_calls` are (id, name, arguments) the model asked for. `cost_usd`: what the call
        cost when you know it better than the price book (e.g. a provider's invoice line); it is
        stored with price_source "caller"."""
        if kind not in ("llm", "embedding"):
            raise InvalidUsage(f"record_llm: kind must be 'llm' or 'embedding', not {kind!r}")
        if not isinstance(provider, str) or not provider or not isinstance(model, str) or not model:
            raise InvalidUsage("record_llm: provider and model must be non-empty strings")
        check_text("record_llm", provider=provider, model=model, operation=operation, status=status)
        check_latency("record_llm", latency_ms)
        if ts is not None and (not isinstance(ts, datetime) or ts.utcoffset() is None):
            raise InvalidUsage(f"record_llm: ts must be a datetime with a time zone, not {ts!r}")
        if event_id is not None:
            try:
                event_id = str(uuid.UUID(str(event_id)))
            except ValueError:
                raise InvalidUsage(f"record_llm: event_id {event_id!r} is not a UUID") from None
        given_cost = caller_cost("record_llm", cost_usd)
        try:
            usage = from_counts(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read_tokens=cache_read_tokens,
                cache_write_tokens=cache_write_tokens,
                reasoning_tokens=reasoning_tokens,
            )
        except UsageProblem as e:
            raise InvalidUsage(f"record_llm({provider}/{model}): impossible usage: {e.reason}") from None
        calls = tuple(ToolCall(i, str(n), args_hash(a)) for i, n, a in tool_calls or ())
        for c in calls:
            check_text("record_llm", tool_call_name=c.name, tool_call_id=c.id)
        event = self.build_call(
            provider=provider,
            model=model,
            usage=usage,
            kind=kind,
            operation=operation,
            status=status,
            latency_ms=latency_ms,
            streamed=streamed,
            tool_calls=calls,
            ts=ts,
            event_id=event_id,
            tags=tags,
        )
        if event.status.startswith("invalid_usage"):
            raise InvalidUsage(f"record_llm({provider}/{model}): {event.status}")
        if given_cost is not None:
            event = replace(event, cost_usd=given_cost, price_source="caller", price_version=None, unit_prices=None)
        self.record(event)
        self.charge(event)
        return event

    def build_call(
        self,
        *,
        provider: str,
        model: str | None,
        usage: Usage | None,
        kind: str = "llm",
        operation: str | None = None,
        status: str = "ok",
        problem: str | None = None,
        latency_ms: float | None = None,
        streamed: bool = False,
        tool_calls: tuple[ToolCall, ...] = (),
        ts: datetime | None = None,
        event_id: str | None = None,
        span_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        request_hash: str | None = None,
        content: str | None = None,
        note: str | None = None,
        attribution: ctx.Attribution | None = None,
        usage_estimated: bool = False,
    ) -> UsageEvent:
        """A priced, attributed model-call event. `problem` (an impossible-usage reason) makes it
        `invalid_usage:<reason>` with no cost; an unknown model makes it unpriced (no cost).
        `usage_estimated`: the counts are tokentrail's estimate, the provider never reported them."""
        a = attribution or ctx.current()
        ts = ts or datetime.now(UTC)
        provider = bound_text(canonical_provider(provider)) or ""
        model = bound_text(model)
        operation = bound_text(operation)
        status = bound_text(status) or "ok"
        u = usage or Usage()
        cost: Decimal | None = None
        price = self.prices.lookup(provider, model, ts) if model else None
        if problem is None and price is not None:
            try:
                cost = quantize_usd(self.prices.cost(price, u).total_usd)
            except UsageProblem as e:
                problem = e.reason
        if problem is not None:
            status, cost = f"invalid_usage:{problem}", None
        elif price is None and status != "ok" and u.total_tokens == 0:
            cost = Decimal(0)  # a failed call that used nothing cost nothing, price or not
        elif price is None and model and (provider, model) not in self._warned_unpriced:
            self._warned_unpriced.add((provider, model))
            log.warning(
                "tokentrail: no price for %s/%s; its calls are recorded as unpriced "
                "(add it to the TOKENTRAIL_PRICES overrides file)",
                provider,
                model,
            )
        return UsageEvent(
            event_id=event_id or new_event_id(),
            kind=kind,
            ts=ts,
            latency_ms=latency_ms,
            status=status,
            provider=provider,
            model=model,
            operation=operation,
            streamed=streamed,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_tokens,
            cache_write_tokens=u.cache_write_tokens,
            reasoning_tokens=u.reasoning_tokens,
            context_window_tokens=price.context_window if price else None,
            cost_usd=cost,
            price_source=price.source if price and cost is not None else None,
            price_version=price.version if price and cost is not None else None,
            unit_prices=price.unit_prices if price and cost is not None else None,
            **attributed(a, tags),
            span_id=span_id or ctx.new_span_id(),
            tool_calls=tool_calls,
            request_hash=request_hash,
            content=content,
            note=note,
            usage_estimated=usage_estimated,
        )

    def record_tool(
        self,
        name: str,
        args: Any = None,
        *,
        tool_call_id: str | None = None,
        cost_usd: Decimal | float | str | None = None,
        latency_ms: float | None = None,
        status: str = "ok",
        tags: Mapping[str, Any] | None = None,
    ) -> UsageEvent:
        """Record a tool that ran, linked to the model call that asked for it when there was one."""
        if not isinstance(name, str) or not name:
            raise InvalidUsage("record_tool: name must be a non-empty string")
        check_text("record_tool", name=name, tool_call_id=tool_call_id, status=status)
        cost = caller_cost(f"record_tool({name})", cost_usd)
        check_latency(f"record_tool({name})", latency_ms)
        a = ctx.current()
        h = args_hash(args)
        parent = a.span_id
        if a.session is not None:
            requested = a.session.requested_tools.get((name, h))
            if requested is not None:
                tool_call_id = tool_call_id or requested[0]
                parent = requested[1] or parent
        event = UsageEvent(
            kind="tool",
            latency_ms=latency_ms,
            status=bound_text(status) or "ok",
            cost_usd=cost,
            price_source="caller" if cost is not None else None,
            **{**attributed(a, tags), "parent_span_id": parent},
            span_id=ctx.new_span_id(),
            tool_name=bound_text(name),
            tool_call_id=bound_text(tool_call_id),
            tool_args_hash=h,
        )
        self.record(event)
        self.charge(event)
        return event

    def charge(self, event: UsageEvent) -> None:
        """Post the spend of an event recorded without a reservation to the budgets it falls in
        (tokentrail.budgets.Budgets.charge). Never raises."""
        if event.cost_usd or event.input_tokens or event.output_tokens:
            self.budgets.charge(event)

    def record_outcome(
        self,
        attribution: ctx.Attribution,
        name: str,
        *,
        count: int = 1,
        success: bool = True,
        value_usd: Decimal | float | str | None = None,
    ) -> None:
        """Record that a session reached an outcome (cost per action; a failed one, `success=False`,
        counts against it; `value_usd` gives ROI)."""
        if not isinstance(name, str) or not name or type(count) is not int or count < 1:
            raise InvalidUsage("outcome: name must be a non-empty string and count a positive integer")
        if not isinstance(success, bool):
            raise InvalidUsage("outcome: success must be True or False")
        value = caller_cost(f"outcome({name}) value_usd", value_usd)
        check_text("outcome", name=name)
        a = attribution
        row = (
            new_event_id(),
            int(time.time() * 1_000_000),
            bound_text(name),
            count,
            a.session_id,
            a.org,
            a.team,
            a.project,
            a.agent,
            a.user,
            a.customer,
            a.workflow,
            a.task_type,
            1 if success else 0,
            usd_to_nano(value),
        )
        self._writer.put(Side("outcomes", row))

    # -- durability ---------------------------------------------------------------------------

    def flush(self, timeout: float = 30) -> None:
        """Return once every event recorded so far is durable; else raise FlushTimeout."""
        if self._pid != os.getpid():
            self._after_fork()
        if not self._writer.flush(timeout):
            why = f" (last error: {self.last_error})" if self.last_error else ""
            raise FlushTimeout(
                f"{self.pending} event(s) recorded to {self.display_url} are not durable after {timeout:g}s{why}"
            )
        if self.anomaly_watch is not None:
            self.anomaly_watch.drain(timeout)  # and the anomalies they raise are raised

    async def adurable(self, timeout: float = 30) -> bool:
        """Wait, without blocking the event loop, until every event recorded so far is durable
        (committed, or fsynced to the spool); False when that takes longer than `timeout`."""
        import asyncio  # lazily: `import tokentrail` stays fast

        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not done.done():
                done.set_result(None)

        def on_durable() -> None:  # in the writer thread
            try:
                loop.call_soon_threadsafe(resolve)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        if self._closed:
            return False
        if self._pid != os.getpid():
            self._after_fork()
        self._writer.notify(on_durable)
        try:
            await asyncio.wait_for(done, timeout)
        except TimeoutError:
            return False
        return True

    @property
    def pending(self) -> int:
        """Events queued and not yet durable."""
        return self._writer.pending

    @property
    def closed(self) -> bool:
        """True once close() ran: recording raises ConfigError."""
        return self._closed

    @property
    def last_error(self) -> BaseException | None:
        """Why the store last refused a write, while it still does (None once writes succeed)."""
        return self._writer.last_error

    def close(self, timeout: float = 30) -> None:
        """Close the budgets (their queued posts applied, alerts delivered, this process's live
        reservations given back), flush, stop the writer and close the store. Events that cannot be
        made durable in `timeout` are reported in the log."""
        if self._closed:
            return
        if self._budgets is not None:
            try:
                self._budgets.close()
            except Exception:
                log.exception("tokentrail: closing the budgets failed")
        try:
            self.flush(timeout)
        except FlushTimeout as e:
            log.error("tokentrail: closing with events not durable: %s", e)
        self._closed = True
        if self.otel_export is not None:
            try:
                self.otel_export.shutdown()
            except Exception:
                log.exception("tokentrail: closing the OpenTelemetry export failed")
        self._writer.stop()
        if self.anomaly_watch is not None:
            self.anomaly_watch.stop()
        self.store.close()
        _live_ledgers.discard(self)

    @property
    def budgets(self) -> LedgerBudgets:
        """The budgets kept in this ledger (tokentrail.budgets.Budgets), loaded on first use."""
        if self._budgets is None:
            if _budgets_factory is None:
                raise ConfigError("no budgets package was registered (import tokentrail registers it)")
            self._budgets = _budgets_factory(self)
        return self._budgets

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer ---------------------------------------------------------------------------

    def _start_writer(self) -> Writer:
        spool = None if self._spool_root is None else Spool(folder_for(self._spool_root, self.url))
        writer = Writer(self.store, spool, self.display_url)
        if self.anomaly_watch is not None:
            writer.on_durable = self.anomaly_watch.fold
        return writer

    @property
    def spool(self) -> Spool | None:
        return self._writer.spool

    def _after_fork(self) -> None:
        """A forked child has no writer thread and must not share the parent's connections or spool file."""
        self._pid = os.getpid()
        self.store = open_store(self.url)
        self._writer = self._start_writer()

    def quarantine(self, source: str, reason: str, payload: str) -> None:
        """Keep something submitted from outside that failed validation, with the reason why."""
        self._writer.put(Side("quarantine", quarantine_row(source, reason, payload)))


def _otel_from_env() -> bool:
    return os.environ.get("TOKENTRAIL_OTEL_EXPORT", "").strip().lower() in ("1", "true", "yes", "on")


# every open ledger, closed at exit
_live_ledgers: weakref.WeakSet[Ledger] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for ledger in list(_live_ledgers):
        try:
            ledger.close(timeout=10)
        except Exception:
            log.exception("tokentrail: closing a ledger at exit failed")
