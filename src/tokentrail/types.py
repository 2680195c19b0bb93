"""Protocols for every seam: the store, price sources, detectors and alert sinks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from datetime import datetime

    from tokentrail.alerts import Alert
    from tokentrail.pricing import Price
    from tokentrail.store.migrations import Dialect

Row = tuple[Any, ...]


@runtime_checkable
class Store(Protocol):
    """Where the ledger lives. Rows are `tokentrail.events.COLUMNS` tuples."""

    url: str
    dialect: Dialect

    def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied."""
        ...

    def write_events(self, rows: Sequence[Row]) -> int:
        """Append rows durably in one transaction, chained and rolled up; rows whose event_id
        is already stored are skipped. Returns how many were new."""
        ...

    def write_outcomes(self, rows: Sequence[Row]) -> int:
        """Append outcome rows (outcome_id, ts_us, name, count, session_id, dims...), idempotently."""
        ...

    def write_quarantine(self, rows: Sequence[Row]) -> int:
        """Append quarantine rows (quarantine_id, ts_us, source, reason, payload), idempotently."""
        ...

    def execute_write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement in its own transaction (admin paths); returns the rows it changed."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a read query written for `self.dialect`."""
        ...

    def chain(self, from_seq: int = 1) -> Iterator[tuple[int, bytes, bytes, Row]]:
        """(seq, prev_hash, hash, row) in seq order, for audit verification and copying."""
        ...

    def close(self) -> None: ...


class PriceSource(Protocol):
    """Anything that can say what a model cost at a moment (a PriceBook is one)."""

    def lookup(self, provider: str, model: str, at: datetime | None = None) -> Price | None: ...


class AlertSink(Protocol):
    """Somewhere budget alerts go (tokentrail.alerts has the log, webhook and callback sinks).
    `send` runs in the alert thread (the log sink: in the caller's)."""

    def send(self, alert: Alert) -> None: ...
