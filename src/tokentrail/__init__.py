"""tokentrail: token accounting for AI agents."""

from tokentrail import _cli_interrupt  # noqa: F401  (first: Ctrl-C in the CLI before the slow imports)
from tokentrail import ledger as _ledger
from tokentrail.context import Session, attributes, current, session, step, with_context
from tokentrail.default_ledger import configure, get_ledger, ledger_status, record_llm, record_tool
from tokentrail.events import ToolCall, UsageEvent
from tokentrail.exceptions import (
    BudgetExceeded,
    BudgetThrottled,
    ConfigError,
    FlushTimeout,
    InvalidUsage,
    LedgerUnavailable,
    StoreError,
    TokentrailError,
)
from tokentrail.integrations import instrument, uninstrument, wrap
from tokentrail.ledger import Ledger
from tokentrail.pricing import Cost, Price, PriceBook, price
from tokentrail.tools import tool
from tokentrail.types import LedgerBudgets


def _budgets_of(ledger: Ledger) -> LedgerBudgets:
    from tokentrail.budgets import Budgets  # lazily: `import tokentrail` stays fast

    return Budgets(ledger)


# the ledger depends on the LedgerBudgets Protocol; its budgets are made by the package above it
_ledger.keep_budgets_with(_budgets_of)

__all__ = [
    "BudgetExceeded",
    "BudgetThrottled",
    "ConfigError",
    "Cost",
    "FlushTimeout",
    "InvalidUsage",
    "Ledger",
    "LedgerUnavailable",
    "Price",
    "PriceBook",
    "Session",
    "StoreError",
    "TokentrailError",
    "ToolCall",
    "UsageEvent",
    "attributes",
    "configure",
    "current",
    "get_ledger",
    "instrument",
    "ledger_status",
    "price",
    "record_llm",
    "record_tool",
    "session",
    "step",
    "tool",
    "uninstrument",
    "with_context",
    "wrap",
]
