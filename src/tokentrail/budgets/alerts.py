"""Budget alerts: what they say, where they are kept, and how they are delivered.

A budget alerts once per threshold per period (per bucket, for a `*` scope): the `alerts` table's
unique `alert_key` makes that so across every process sharing the ledger, since the row is
inserted in the same transaction that posts the spend crossing the threshold, and only the
process whose insert succeeded delivers it. Overages (a call that cost more than it reserved) are
alerts too.

Delivery never blocks the agent: the log sink writes at once (a log call is cheap), every other
sink (webhook, Python callback) runs in one background thread, and a webhook that fails is retried
with backoff, then given up on (logged); the alert stays in the table either way.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokentrail.events import from_micros, nano_to_usd, ts_micros
from tokentrail.store.alerts import ALERT_COLUMNS, alert_rows
from tokentrail.types import AlertSink, Store

log = logging.getLogger("tokentrail.alerts")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: a threshold crossed, or an overage."""

    alert_id: str
    kind: str  # "threshold" | "overage"
    ts: datetime
    budget: str
    scope: str  # e.g. "team=legal" ("all" for an empty scope)
    period: str
    period_start: datetime | None
    period_end: datetime | None
    threshold: float | None
    posted_usd: Decimal | None
    limit_usd: Decimal | None
    posted_tokens: int | None
    limit_tokens: int | None
    session_id: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, Decimal):
                out[k] = str(v)
            elif isinstance(v, datetime):
                out[k] = v.isoformat()
        return out

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> Alert:
        d = dict(zip(ALERT_COLUMNS, r, strict=True))
        return cls(
            alert_id=d["alert_id"],
            kind=d["kind"],
            ts=from_micros(int(d["ts_us"])),
            budget=d["budget"],
            scope=d["scope"],
            period=d["period"],
            period_start=from_micros(int(d["period_start_us"])) if d["period_start_us"] is not None else None,
            period_end=from_micros(int(d["period_end_us"])) if d["period_end_us"] is not None else None,
            threshold=float(d["threshold"]) if d["threshold"] is not None else None,
            posted_usd=nano_to_usd(int(d["posted_nusd"])) if d["posted_nusd"] is not None else None,
            limit_usd=nano_to_usd(int(d["limit_nusd"])) if d["limit_nusd"] is not None else None,
            posted_tokens=int(d["posted_tokens"]) if d["posted_tokens"] is not None else None,
            limit_tokens=int(d["limit_tokens"]) if d["limit_tokens"] is not None else None,
            session_id=d["session_id"],
            message=d["message"],
        )

    def to_row(self, alert_key: str) -> tuple[Any, ...]:
        return (
            self.alert_id,
            alert_key,
            ts_micros(self.ts),
            self.kind,
            self.budget,
            self.scope,
            self.period,
            ts_micros(self.period_start) if self.period_start else None,
            ts_micros(self.period_end) if self.period_end else None,
            self.threshold,
            int(self.posted_usd.scaleb(9)) if self.posted_usd is not None else None,
            int(self.limit_usd.scaleb(9)) if self.limit_usd is not None else None,
            self.posted_tokens,
            self.limit_tokens,
            self.session_id,
            self.message,
        )


# -- the words ------------------------------------------------------------------------------------


def money(value: Decimal) -> str:
    """$400.12; amounts under a cent keep their significant digits ($0.0042)."""
    if value != 0 and abs(value) < Decimal("0.01"):
        return f"${value.normalize():f}"
    return f"${value:,.2f}"


def threshold_message(
    budget: str,
    scope: str,
    period: str,
    threshold: float,
    *,
    posted_usd: Decimal | None,
    limit_usd: Decimal | None,
    posted_tokens: int | None,
    limit_tokens: int | None,
    session_id: str | None,
) -> str:
    """`Budget 'legal-monthly' (team=legal, month) reached 80%: $400.12 of $500.00`."""
    parts = []
    if limit_usd is not None and posted_usd is not None:
        parts.append(f"{money(posted_usd)} of {money(limit_usd)}")
    if limit_tokens is not None and posted_tokens is not None:
        parts.append(f"{posted_tokens:,} of {limit_tokens:,} tokens")
    text = f"Budget '{budget}' ({scope}, {period}) reached {threshold * 100:g}%: {'; '.join(parts)}"
    return text + (f" (session {session_id})" if session_id else "")


def overage_message(
    budget: str,
    scope: str,
    period: str,
    *,
    actual_usd: Decimal,
    reserved_usd: Decimal,
    actual_tokens: int,
    reserved_tokens: int,
    session_id: str | None,
    until: datetime | None,
) -> str:
    refuse = f"; the scope refuses calls until {until.isoformat()}" if until else ""
    text = (
        f"Budget '{budget}' ({scope}, {period}) overage: a call cost {money(actual_usd)} / {actual_tokens:,} tokens, "
        f"more than the {money(reserved_usd)} / {reserved_tokens:,} tokens it reserved{refuse}"
    )
    return text + (f" (session {session_id})" if session_id else "")


# -- sinks ----------------------------------------------------------------------------------------


class LogSink:
    """The default: a WARNING on the `tokentrail.alerts` logger."""

    def send(self, alert: Alert) -> None:
        log.warning("%s", alert.message)


class CallbackSink:
    """A Python function called with each Alert (in the alert thread)."""

    def __init__(self, fn: Callable[[Alert], object]) -> None:
        self.fn = fn

    def send(self, alert: Alert) -> None:
        self.fn(alert)


class WebhookSink:
    """JSON POST of each alert to `url`: the alert's fields, or with `slack=True` a body Slack
    (and Mattermost, Discord's /slack endpoint, …) accept: {"text": message}. Each attempt times out
    after `timeout` seconds; a failure is retried `retries` times with exponential backoff."""

    def __init__(
        self,
        url: str,
        *,
        slack: bool = False,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 1.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL {url!r} must start with http:// or https://")
        self.url = url
        self.slack = slack
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.headers = headers or {}

    def body(self, alert: Alert) -> bytes:
        if self.slack:
            return json.dumps({"text": alert.message}).encode()
        return json.dumps({"type": "tokentrail.budget_alert", **alert.to_dict()}).encode()

    def send(self, alert: Alert) -> None:
        data = self.body(alert)
        delay = self.backoff
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(
                self.url,
                data=data,
                method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "tokentrail", **self.headers},
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    resp.read()
                return
            except (urllib.error.URLError, OSError, ValueError) as e:
                if attempt == self.retries:
                    raise RuntimeError(f"webhook {self.url} failed after {attempt + 1} attempt(s): {e}") from None
                time.sleep(delay)
                delay *= 2


# -- delivery -------------------------------------------------------------------------------------


class Dispatcher:
    """Delivers alerts to the sinks without ever blocking the caller."""

    def __init__(self, sinks: Sequence[AlertSink[Alert]] | None = None) -> None:
        self.sinks: list[AlertSink[Alert]] = list(sinks) if sinks is not None else [LogSink()]
        self._queue: queue.Queue[tuple[AlertSink[Alert], Alert] | threading.Event] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.delivered = 0
        self.failed = 0

    def add(self, sink: AlertSink[Alert]) -> AlertSink[Alert]:
        self.sinks.append(sink)
        return sink

    def remove(self, sink: AlertSink[Alert]) -> None:
        self.sinks.remove(sink)

    def dispatch(self, alerts: Sequence[Alert]) -> None:
        for alert in alerts:
            for sink in list(self.sinks):
                if isinstance(sink, LogSink):
                    try:
                        sink.send(alert)
                        self.delivered += 1
                    except Exception:
                        self.failed += 1
                    continue
                self._start()
                self._queue.put((sink, alert))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every alert queued so far was delivered (or given up on)."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="tokentrail-alerts", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            sink, alert = item
            try:
                sink.send(alert)
                self.delivered += 1
            except Exception as e:
                self.failed += 1
                log.error("tokentrail: could not deliver alert %s to %s: %s", alert.alert_id, type(sink).__name__, e)


# -- reading them back ----------------------------------------------------------------------------


def list_alerts(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    budget: str | None = None,
    kind: str | None = None,
    limit: int = 1000,
) -> list[Alert]:
    """Alerts in the ledger, newest first."""
    rows = alert_rows(
        store,
        since_us=None if since is None else ts_micros(since),
        until_us=None if until is None else ts_micros(until),
        budget=budget,
        kind=kind,
        limit=limit,
    )
    return [Alert.from_row(r) for r in rows]
