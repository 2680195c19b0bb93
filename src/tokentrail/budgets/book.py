"""The definitions side of `ledger.budgets` (tokentrail.budgets.Budgets): create, list, remove and
load budgets, the kill switch, and the cached copy of the definitions the hot path reads.

Every process caches the definitions and re-reads them only when the ledger's budget version moves
(checked at most every `cache_ttl` seconds), so a process with no budgets pays one clock comparison
per call.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokentrail.budgets.alerts import Dispatcher, WebhookSink
from tokentrail.budgets.budget_file import load_file
from tokentrail.budgets.definitions import DEFAULT_ALERT_AT, Budget, Rule, Suspension, normalise_scope
from tokentrail.budgets.periods import parse_duration_s
from tokentrail.events import from_micros, ts_micros
from tokentrail.exceptions import ConfigError
from tokentrail.store.budgets import BudgetSQL

log = logging.getLogger("tokentrail")


class BudgetDefinitions:
    """Budget definitions and suspensions kept in the ledger, and this process's cached copy."""

    fail_closed: bool
    hold_timeout: float
    cache_ttl: float
    alerts: Dispatcher
    _file: str | None
    _rules: tuple[Rule, ...]
    _suspended: tuple[Suspension, ...]
    _version: int
    _next_check: float
    _refresh_lock: threading.RLock
    _refresh_task: asyncio.Task[None] | None

    def _backend(self) -> BudgetSQL:
        raise NotImplementedError

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
        allow_unpriced: bool = False,
    ) -> Budget:
        """Create or replace the budget `name`. Spend already counted in its current period is kept.
        `allow_unpriced`: let calls to a model with no price through a USD limit (default: refused)."""
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
            allow_unpriced=allow_unpriced,
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
        its settings and webhooks to this process; see tokentrail.budgets.budget_file.load_file."""
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

    def _refresh(self, *, force: bool = False, early: float = 0.0) -> None:
        """Re-read the definitions if they changed (checked at most every cache_ttl seconds).
        `early`: the budget thread's read, that many seconds before they are due; when it fails
        they stay due, so the next call reads them itself and follows fail-open/fail-closed."""
        now = time.monotonic()
        if not force and now < self._next_check - early:
            return
        with self._refresh_lock:
            if not force and now < self._next_check - early:
                return
            read = False
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
                read = True
            finally:
                if read or not early:
                    self._next_check = time.monotonic() + self.cache_ttl

    def _refresh_ahead(self) -> None:
        """The budget thread, each round: once the definitions were read, read them again half a
        cache_ttl before they are due, so that a busy event loop finds them fresh and never waits
        for the store itself (areserve_call). Never raises."""
        if self._version < 0:
            return
        try:
            self._refresh(early=self.cache_ttl / 2)
        except Exception as e:
            log.debug("tokentrail: reading the budgets ahead failed (the next call reads them): %s", e)

    async def _arefresh(self) -> None:
        """The definitions are due on an event loop: read them in a worker thread (one read for
        every coroutine that finds them due meanwhile). Raises what `_refresh` raised."""
        loop = asyncio.get_running_loop()
        task = self._refresh_task
        if task is None or task.done() or task.get_loop() is not loop:
            task = self._refresh_task = loop.create_task(asyncio.to_thread(self._refresh))
        await asyncio.shield(task)


def _now_us() -> int:
    return ts_micros(datetime.now(UTC))
