"""Budgets that cannot be overspent (docs/rules.md §Budgets): `ledger.budgets` is a `Budgets`.

The package's modules (docs/architecture.md): `facade` (the `Budgets` class: reserve, settle,
post, void, charge, suspend), `definitions` (what a budget is), `book` (create/list/remove and the
cached definitions), `periods`, `estimate` (a call's maximum cost from its request), `engine`
(batched decisions, one per process), `keeper` (the budget thread), `refusals`, `charges`,
`models`, `status`, `buckets`, `post_alerts` (the alerts a post fires) and `alerts` (alert records
and their sinks).
"""

from tokentrail.budgets.alerts import Alert
from tokentrail.budgets.definitions import Budget, Suspension
from tokentrail.budgets.engine import Hold
from tokentrail.budgets.facade import Budgets
from tokentrail.budgets.status import BudgetStatus

__all__ = ["Alert", "Budget", "BudgetStatus", "Budgets", "Hold", "Suspension"]
