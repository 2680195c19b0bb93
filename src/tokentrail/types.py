"""Protocols for every seam: the store, price sources, alert sinks, outcome recorders, budgets.

The bottom layer (docs/architecture.md): Protocols only, importing nothing of tokentrail, so
every module may name these types without depending on the modules that implement them.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from datetime import datetime
    from decimal import Decimal
    from os import PathLike

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
    """Somewhere budget alerts go (tokentrail.budgets.alerts has the log, webhook and callback sinks, each
    an `AlertSink[tokentrail.budgets.alerts.Alert]`). `send` runs in the alert thread (the log sink: in
    the caller's)."""

    def send(self, alert: _Alert_contra) -> None: ...


class OutcomeRecorder(Protocol):
    """Where a session records its outcomes (a Ledger is one): the context layer names it without
    importing the ledger above it."""

    def record_outcome(
        self, attribution: Any, name: str, *, count: int = 1, success: bool = True, value_usd: Any = None
    ) -> None: ...


class LedgerBudgets(Protocol):
    """The budgets kept in a ledger (`ledger.budgets`; tokentrail.budgets.Budgets is the one
    implementation, docs/architecture.md). The ledger depends on this Protocol, not on the budgets
    package above it: it charges what it records without a reservation and closes them with itself;
    the metering, the server and the CLI reach them through it. Objects of the layers above this
    one (holds, events, attributions, budgets, statuses, alert sinks) are `Any` here:
    tokentrail.budgets has their classes."""

    fail_closed: bool
    hold_timeout: float
    cache_ttl: float
    fail_open_errors: int
    alerts: Any  # a tokentrail.budgets.alerts.Dispatcher: add(sink), dispatch(alerts), flush()

    # -- definitions (tokentrail.budgets.book) --
    def set(
        self,
        name: str,
        *,
        scope: Mapping[str, Any] | None = ...,
        period: str = ...,
        limit_usd: Decimal | float | int | str | None = ...,
        limit_tokens: int | None = ...,
        alert_at: Iterable[float] | None = ...,
        action: str = ...,
        tz: str = ...,
        source: str = ...,
        allow_unpriced: bool = ...,
    ) -> Any: ...
    def get(self, name: str) -> Any: ...
    def list(self) -> builtins.list[Any]: ...
    def rm(self, name: str) -> bool: ...
    def load(self, path: str | PathLike[str]) -> builtins.list[Any]: ...
    def suspend(self, scope: Mapping[str, Any], reason: str | None = None) -> Any: ...
    def resume(self, scope: Mapping[str, Any]) -> bool: ...
    def suspensions(self) -> builtins.list[Any]: ...
    def configure(
        self, *, fail_closed: bool | None = None, hold_timeout: float | None = None, cache_ttl: float | None = None
    ) -> LedgerBudgets: ...
    def on_alert(self, fn: Callable[[Any], object]) -> Any: ...
    def status(self, name: str | None = None) -> builtins.list[Any]: ...

    # -- enforcement: reserve before a call, settle or void after it, charge what was never reserved --
    def reserve_call(
        self,
        *,
        provider: str,
        model: str | None,
        body: Any,
        kind: str = "llm",
        attribution: Any = None,
        owner: object | None = None,
    ) -> Any: ...
    async def areserve_call(
        self,
        *,
        provider: str,
        model: str | None,
        body: Any,
        kind: str = "llm",
        attribution: Any = None,
        owner: object | None = None,
    ) -> Any: ...
    def reserve(
        self,
        *,
        cost_usd: Decimal | float | str = 0,
        tokens: int = 0,
        provider: str | None = None,
        model: str | None = None,
        attribution: Any = None,
    ) -> Any: ...
    def failed(self, e: BaseException, what: str) -> None: ...
    def settle(self, hold: Any, event: Any) -> None: ...
    def void(self, hold: Any) -> None: ...
    def post(self, hold: Any, *, cost_usd: Decimal | None = None, nusd: int | None = None, tokens: int = 0) -> None: ...
    def charge(self, event: Any) -> None: ...
    def flush(self, timeout: float = 30.0) -> None: ...
    def close(self) -> None: ...
