"""Anomaly detection over the ledger: baselines read from the store, the batch replay of history
(`tokentrail anomalies`), and storing what was found, one row per (kind, session or agent window).
The detectors themselves are in analytics/detectors.py; the online mode in analytics/anomaly_watch.py."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from tokentrail.analytics.config import KINDS, AnomalyConfig
from tokentrail.analytics.detectors import DAY_US, Anomaly, Detectors, Stats, stats
from tokentrail.events import ts_micros
from tokentrail.store import anomalies as sql

if TYPE_CHECKING:
    from tokentrail.types import Store

__all__ = ["KINDS", "Anomaly", "AnomalyConfig", "StoreBaselines", "replay", "save"]
_MAX_CACHED = 4096


class StoreBaselines:
    """Baselines from the store, by day (the `baseline_days` days before the event's day), cached:
    one query per agent (and task type) and day."""

    def __init__(self, store: Store, config: AnomalyConfig) -> None:
        self.store = store
        self.config = config
        self._sessions: dict[tuple[str | None, str | None, int], Stats] = {}
        self._tokens: dict[tuple[str | None, int, int], tuple[int, int, int, int]] = {}

    def _window(self, day_us: int) -> tuple[int, int]:
        return day_us - self.config.baseline_days * DAY_US, day_us

    def sessions(self, agent: str | None, task_type: str | None, day_us: int) -> Stats:
        key = (agent, task_type, day_us)
        hit = self._sessions.get(key)
        if hit is None:
            if len(self._sessions) >= _MAX_CACHED:
                self._sessions.clear()
            totals = sql.session_totals(self.store, agent, task_type, *self._window(day_us))
            hit = self._sessions[key] = stats([float(t) for t in totals])
        return hit

    def _agent(self, agent: str | None, day_us: int, min_input: int) -> tuple[int, int, int, int]:
        key = (agent, day_us, min_input)
        hit = self._tokens.get(key)
        if hit is None:
            if len(self._tokens) >= _MAX_CACHED:
                self._tokens.clear()
            hit = self._tokens[key] = sql.agent_tokens(self.store, agent, *self._window(day_us), min_input)
        return hit

    def ratio(self, agent: str | None, day_us: int) -> tuple[int, int, int]:
        i, o, _, n = self._agent(agent, day_us, 1)
        return i, o, n

    def cache(self, agent: str | None, day_us: int) -> tuple[int, int, int]:
        i, _, c, n = self._agent(agent, day_us, self.config.cache_min_prompt)
        return i, c, n


def replay(
    store: Store, since: datetime, config: AnomalyConfig | None = None, until: datetime | None = None
) -> list[Anomaly]:
    """Every anomaly the detectors find in the events from `since` (to `until`), in the order found."""
    config = config or AnomalyConfig()
    detectors = Detectors(config, StoreBaselines(store, config))
    rows = sql.event_rows(store, ts_micros(since), None if until is None else ts_micros(until))
    return detectors.fold(rows)


def save(store: Store, anomalies: Iterable[Anomaly]) -> list[Anomaly]:
    """Store the anomalies; the ones that were new (not already stored for their kind and key)."""
    now = int(time.time() * 1_000_000)
    return [a for a in anomalies if sql.insert(store, a, now)]
