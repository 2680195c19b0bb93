"""The one exception tree of tokentrail, rooted at TokentrailError."""

from __future__ import annotations


class TokentrailError(Exception):
    """Base class of every error tokentrail raises."""


class ConfigError(TokentrailError, ValueError):
    """A setting, a URL or a configuration file is wrong; the message says which and where."""


class StoreError(TokentrailError):
    """The ledger store could not be opened or written (path, permissions, schema)."""


class DefaultLedgerUnavailable(StoreError):
    """The default ledger could not be opened. Logged once; metered calls then go ahead unmetered,
    counted in `tokentrail.ledger_status()`."""


class FlushTimeout(TokentrailError):
    """`flush()` ran out of time before every event so far was durable."""


class InvalidUsage(TokentrailError, ValueError):
    """Usage handed directly to record_llm / record_tool is impossible (negative, cached > input, ...)."""


class BudgetExceeded(TokentrailError):
    """A budget refused a call before it was sent (a hard stop)."""

    def __init__(self, message: str, *, budget: str | None = None) -> None:
        super().__init__(message)
        self.budget = budget


class BudgetThrottled(BudgetExceeded):
    """A burn-rate budget refused a call for now; retry after `retry_after` seconds."""

    def __init__(self, message: str, *, budget: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message, budget=budget)
        self.retry_after = retry_after


class LedgerUnavailable(BudgetExceeded):
    """Fail-closed mode: the ledger could not be reached to reserve budget, so the call was refused."""
