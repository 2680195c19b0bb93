"""Online anomaly detection: the ledger's writer hands each durable batch to `AnomalyWatch.fold`,
which runs the detectors (analytics/detectors.py) over it and, for each anomaly not stored before,
stores it, raises it through the alert channels, counts it, and applies the kind's policy (suspend
the session or the agent through the kill switch). It never slows or breaks a write: any error is
logged and counted, never raised."""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tokentrail.analytics.anomalies import StoreBaselines, save
from tokentrail.analytics.config import KINDS, AnomalyConfig

__all__ = ["AnomalyConfig", "AnomalyWatch", "alert_of", "config_from_env"]
from tokentrail.analytics.detectors import Anomaly, Detectors

if TYPE_CHECKING:
    from tokentrail.ledger import Ledger

log = logging.getLogger("tokentrail")
ENV = "TOKENTRAIL_ANOMALIES"
MAX_PENDING = 200_000


def config_from_env() -> AnomalyConfig | None:
    """TOKENTRAIL_ANOMALIES: unset/off (no online detection), on, or the settings as JSON."""
    raw = os.environ.get(ENV, "").strip()
    if raw.lower() in ("", "0", "off", "false", "no"):
        return None
    if raw.lower() in ("1", "on", "true", "yes"):
        return AnomalyConfig()
    return AnomalyConfig.from_json(raw)


class AnomalyWatch:
    """The detectors' state for one ledger, fed by its writer thread."""

    def __init__(self, ledger: Ledger, config: AnomalyConfig) -> None:
        self.ledger = ledger
        self.config = config
        self.detectors = Detectors(config, StoreBaselines(ledger.store, config))
        self.counts: dict[str, int] = dict.fromkeys(KINDS, 0)  # anomalies raised, by kind (Prometheus)
        self.errors = 0  # folds that failed (logged, never raised)
        self.found: list[Anomaly] = []  # the latest raised (bounded), for tests and `tokentrail serve`
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._queue: deque[Sequence[tuple[Any, ...]]] = deque()
        self._waiting = 0  # rows handed over, not yet folded
        self._thread: threading.Thread | None = None
        self._closed = False
        self.dropped = 0  # rows skipped because detection fell MAX_PENDING rows behind

    def fold(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Hand a durable batch to the detectors' thread (the writer's only cost: an append). Past
        MAX_PENDING rows waiting, a batch is skipped and counted in `dropped`: detection falls
        behind, writing never does."""
        with self._cond:
            if self._waiting + len(rows) > MAX_PENDING:
                self.dropped += len(rows)
                return
            self._queue.append(rows)
            self._waiting += len(rows)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tokentrail-anomalies", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every batch handed over so far was folded (and its anomalies raised)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._waiting == 0, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self.drain(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue) or self._closed)
                if not self._queue:
                    return
                rows = self._queue.popleft()
            self.fold_now(rows)
            with self._cond:
                self._waiting -= len(rows)
                self._cond.notify_all()

    def fold_now(self, rows: Sequence[tuple[Any, ...]]) -> None:
        try:
            with self._lock:
                found = self.detectors.fold(rows)
            if found:
                self._raise(found)
        except Exception:
            self.errors += 1
            log.exception("tokentrail: anomaly detection failed on %d events (they are stored)", len(rows))

    def _raise(self, found: list[Anomaly]) -> None:
        new = save(self.ledger.store, found)
        for a in new:
            self.counts[a.kind] = self.counts.get(a.kind, 0) + 1
            self.found.append(a)
            del self.found[:-1000]
            self._act(a)
        if new:
            self.ledger.budgets.alerts.dispatch([alert_of(a) for a in new])

    def _act(self, a: Anomaly) -> None:
        policy = self.config.policies.get(a.kind)
        if policy is None:
            return
        if policy == "suspend-session" and a.session_id is not None:
            scope = {"session_id": a.session_id}
        elif a.agent is not None:
            scope = {"agent": a.agent, **({"team": a.team} if a.team else {})}
        else:
            return
        try:
            self.ledger.budgets.suspend(scope, reason=a.message[:500])
            log.warning("tokentrail: %s suspended %s", a.kind, ", ".join(f"{k}={v}" for k, v in scope.items()))
        except Exception:
            self.errors += 1
            log.exception("tokentrail: could not suspend %s after %s", scope, a.kind)


def alert_of(a: Anomaly) -> Any:
    """An anomaly as an alert of the existing channels (log, webhook, Slack): kind `anomaly`, the
    anomaly's kind in `budget`, its agent (and team) as the scope."""
    from tokentrail.budgets.alerts import Alert
    from tokentrail.events import from_micros, new_event_id

    scope = ", ".join(f"{k}={v}" for k, v in (("team", a.team), ("agent", a.agent)) if v) or "all"
    return Alert(
        alert_id=new_event_id(),
        kind="anomaly",
        ts=datetime.now(UTC) if a.ts_us is None else from_micros(a.ts_us),
        budget=a.kind,
        scope=scope,
        period="",
        period_start=None,
        period_end=None,
        threshold=a.threshold,
        posted_usd=None if a.cost_nusd is None else Decimal(a.cost_nusd).scaleb(-9),
        limit_usd=None,
        posted_tokens=None,
        limit_tokens=None,
        session_id=a.session_id,
        message=a.message,
    )
