"""The background writer: drains the ledger's queue in batches, one durable transaction each.

Group commit: whatever accumulated while the last batch was committing goes in the next one.
A batch the store cannot take (down, locked, full) is fsynced to the spool instead and
replayed later, oldest first; rows the store refuses for good (a bad value) are split off
and quarantined with the reason, so one bad row never blocks the rest.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from tokentrail.events import UsageEvent, new_event_id, to_row
from tokentrail.spool import Batch, Spool
from tokentrail.types import Store

log = logging.getLogger("tokentrail")

MAX_BATCH = 2000
_RETRY_MAX_S = 2.0
_REPLAY_EVERY_S = 1.0  # how often a spool waiting for the store tries again


class _Marker:
    """A flush marker in the queue: set once every item before it is durable (then `callback`)."""

    __slots__ = ("callback", "done")

    def __init__(self, callback: Callable[[], None] | None = None) -> None:
        self.done = threading.Event()
        self.callback = callback

    def set(self) -> None:
        self.done.set()
        if self.callback is not None:
            try:
                self.callback()
            except Exception:
                log.exception("tokentrail: a durability callback failed")


class Side:
    """A row for a side table (outcomes, quarantine) travelling through the writer's queue."""

    __slots__ = ("row", "table")

    def __init__(self, table: str, row: tuple[Any, ...]) -> None:
        self.table = table
        self.row = row


def _error_text(error: BaseException) -> str:
    """An error's message without the row it may quote (PostgreSQL's 'Failing row contains …')."""
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None)
    return str(primary) if primary else str(error).split("\nDETAIL:")[0]


def _transient(store: Store, error: BaseException) -> bool:
    """Whether an error may pass (the store is down, locked or full) rather than refuse the data."""
    check = getattr(store, "is_transient", None)
    return True if check is None else bool(check(error))


class Writer:
    """One thread writing one store; `put()` is all a recording thread pays."""

    def __init__(self, store: Store, spool: Spool | None, display_url: str) -> None:
        self.store = store
        self.spool = spool
        self.display_url = display_url
        self.queue: deque[Any] = deque()
        self.last_error: BaseException | None = None
        self._wake = threading.Event()
        self._idle = False
        self._closed = False
        self._replay_at = 0.0
        # called with the rows of each batch once durable (online anomaly detection); never raises here
        self.on_durable: Callable[[list[Any]], None] | None = None
        self._thread = threading.Thread(target=self._write_loop, name="tokentrail-writer", daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        self.queue.append(item)
        if self._idle:  # wake the writer only when it sleeps: a few ns when it is busy
            self._wake.set()

    def notify(self, callback: Callable[[], None]) -> None:
        """Call `callback` (in the writer thread) once everything put so far is durable."""
        self.queue.append(_Marker(callback))
        self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Whether everything put so far became durable within `timeout` seconds."""
        marker = _Marker()
        self.queue.append(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    @property
    def pending(self) -> int:
        """Events queued and not yet durable."""
        return sum(1 for item in list(self.queue) if isinstance(item, UsageEvent))

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop after the queue drains (or the close gives up on it) and release the spool."""
        self._closed = True
        self._wake.set()
        stop_waiting = getattr(self.store, "stop_waiting", None)
        if stop_waiting is not None:  # a write waiting for another process's lock spools instead
            stop_waiting()
        self._thread.join(timeout=5)
        if self.spool is not None:
            self.spool.close()

    def _write_loop(self) -> None:
        queue = self.queue
        limit = getattr(self.store, "max_batch", MAX_BATCH)  # COPY-based stores like bigger batches
        while True:
            if not queue:
                if self._closed:
                    return
                self._idle = True
                if not queue:  # re-check after announcing idleness (see put())
                    self._wake.wait(0.5)
                self._idle = False
                self._wake.clear()
                self._replay_when_due()
                continue
            batch, markers = self._take(queue, limit)
            if batch.events or batch.outcomes or batch.quarantine:
                self._commit(batch)
                if batch.events and self.on_durable is not None:
                    try:
                        self.on_durable(batch.events)
                    except Exception:  # what reads the events never breaks writing them
                        log.exception("tokentrail: a durable-batch hook failed")
            for m in markers:
                m.set()

    def _take(self, queue: deque[Any], limit: int) -> tuple[Batch, list[_Marker]]:
        """The next batch, at most `limit` events, and the markers among them: each is set once the
        batch, so everything before it, is durable. A marker does not end a batch: a gateway puts
        one after every call, and one commit still takes all the calls that arrived meanwhile."""
        batch, markers = Batch([], [], []), []
        while queue and len(batch.events) < limit:
            item = queue.popleft()
            if isinstance(item, _Marker):
                markers.append(item)
                continue
            if isinstance(item, Side):
                (batch.outcomes if item.table == "outcomes" else batch.quarantine).append(item.row)
                continue
            try:
                batch.events.append(to_row(item))
            except Exception as e:  # an event that cannot even be serialised is kept, not lost
                batch.quarantine.append(quarantine_row("ledger", f"unserialisable event: {e}", repr(item)))
        return batch, markers

    def _commit(self, batch: Batch) -> None:
        """Make a batch durable: in the store, else fsynced in the spool; else keep retrying."""
        delay = 0.05
        while True:
            if self._closed and self.last_error is not None and self.spool is not None:
                # closing while the store fails: spool at once rather than make every queued batch
                # wait out the store's timeouts again (the process may exit before they end)
                try:
                    self.spool.append(batch)
                    return
                except Exception as e:
                    log.error("tokentrail: cannot spool to %s either: %s", self.spool.folder, e)
            try:
                if self.spool is not None and self.spool.pending:
                    self.spool.replay(self.store, self._write_isolating)  # older batches first: order kept
                self._write_isolating(batch)
                self.last_error = None
                return
            except Exception as e:
                if self.last_error is None or type(e) is not type(self.last_error):
                    log.warning("tokentrail: cannot write to %s: %s", self.display_url, e)
                self.last_error = e
                self._replay_at = time.monotonic() + _REPLAY_EVERY_S
            if self.spool is not None:
                try:
                    self.spool.append(batch)
                    return
                except Exception as e:  # a full disk, or a row even JSON cannot hold: keep it in memory
                    log.error("tokentrail: cannot spool to %s either: %s", self.spool.folder, e)
            if self._closed:
                log.error("tokentrail: ledger closed with %d event(s) not durable", len(batch.events))
                return
            time.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)

    def _write_isolating(self, batch: Batch) -> None:
        """Write a batch. A store that refuses some rows for good (not a transient outage) gets
        them split off and quarantined with its reason, so one bad row never blocks the rest."""
        try:
            batch.write_to(self.store)
            return
        except Exception as e:
            if _transient(self.store, e):
                raise
            error = e
        if len(batch.events) > 1:
            mid = len(batch.events) // 2
            self._write_isolating(Batch(batch.events[:mid], batch.outcomes, batch.quarantine))
            self._write_isolating(Batch(batch.events[mid:], [], []))
            return
        reason = f"the store refused it: {type(error).__name__}: {_error_text(error)}"[:1000]
        rows = [quarantine_row("store", reason, json.dumps(r, default=str)) for r in batch.events]
        rows += [quarantine_row("store", reason, json.dumps(r, default=str)) for r in batch.outcomes]
        log.error("tokentrail: quarantined %d row(s): %s", len(rows), reason)
        self.store.write_quarantine([*batch.quarantine, *rows])

    def _replay_when_due(self) -> None:
        spool = self.spool
        if spool is None or not spool.pending or time.monotonic() < self._replay_at:
            return
        try:
            n = spool.replay(self.store, self._write_isolating)
            if n:
                log.warning("tokentrail: replayed %d spooled batch(es) into %s", n, self.display_url)
            self.last_error = None
        except Exception as e:
            self.last_error = e
            self._replay_at = time.monotonic() + _REPLAY_EVERY_S


def quarantine_row(source: str, reason: str, payload: str) -> tuple[Any, ...]:
    return (new_event_id(), int(time.time() * 1_000_000), source, reason[:1000], payload[:1_000_000])
