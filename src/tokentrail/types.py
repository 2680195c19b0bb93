"""Protocols for every seam: the store, price sources, alert sinks, outcome recorders.

The bottom layer (docs/architecture.md): Protocols only, importing nothing of tokentrail, so
every module may name these types without depending on the modules that implement them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from datetime import datetime

Row = tuple[Any, ...]
_Price_co = TypeVar("_Price_co", covariant=True)
_Alert_contra = TypeVar("_Alert_contra", contravariant=True)


class SQLDialect(Protocol):
    """The SQL spellings that differ between backends (tokentrail.store.dialect.Dialect)."""

    @property
    def name(self) -> str: ...  # "sqlite" | "postgresql"
    @property
    def param(self) -> str: ...  # the placeholder
    @property
    def bigint(self) -> str: ...
    @property
    def real(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def uuid(self) -> str: ...
    @property
    def blob(self) -> str: ...
    @property
    def json(self) -> str: ...
    @property
    def serial(self) -> str: ...

    def json_text(self, column: str) -> str: ...

    def json_key(self, key: str) -> str: ...


@runtime_checkable
class Store(Protocol):
    """Where the ledger lives. Rows are `tokentrail.events.COLUMNS` tuples."""

    url: str

    @property
    def dialect(self) -> SQLDialect: ...

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


class PriceSource(Protocol[_Price_co]):
    """Anything that can say what a model cost at a moment (a PriceBook is a
    `PriceSource[tokentrail.pricing.Price]`)."""

    def lookup(self, provider: str, model: str, at: datetime | None = None) -> _Price_co | None: ...


class AlertSink(Protocol[_Alert_contra]):
    """Somewhere budget alerts go (tokentrail.alerts has the log, webhook and callback sinks, each
    an `AlertSink[tokentrail.alerts.Alert]`). `send` runs in the alert thread (the log sink: in
    the caller's)."""

    def send(self, alert: _Alert_contra) -> None: ...


class OutcomeRecorder(Protocol):
    """Where a session records its outcomes (a Ledger is one): the context layer names it without
    importing the ledger above it."""

    def record_outcome(
        self, attribution: Any, name: str, *, count: int = 1, success: bool = True, value_usd: Any = None
    ) -> None: ...
