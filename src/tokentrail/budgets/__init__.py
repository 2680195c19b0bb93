"""Budgets that cannot be overspent: reserve before the call, post after it, void on failure
(docs/rules.md §Budgets). `ledger.budgets` is a `Budgets` (tokentrail.budgets.facade).

    ledger.budgets.set("legal-monthly", scope={"team": "legal"}, period="month", limit_usd=500)
    ledger.budgets.set("per-agent-daily", scope={"agent": "*"}, period="day", limit_usd=20, tz="Europe/Paris")
    ledger.budgets.set("burn", period="rolling:1m", limit_tokens=200_000, action="throttle")
    ledger.budgets.suspend({"agent": "ci-fixer"})        # kill switch, until resume()

Before a metered call is sent, its maximum cost (tokentrail.budgets.estimate) is reserved on every budget
whose scope it falls in, atomically (all or none): refused, it raises `BudgetExceeded` (or
`BudgetThrottled`) and nothing is sent. After the call its actual cost is posted and the rest of
the reservation returns; a call that fails or is cancelled posts what it consumed, or nothing.
A reservation nobody resolves (the process was killed) stops counting at its expiry; live ones
are renewed by the budget thread while their call runs (tokentrail.budgets.keeper).

Overage: a call that cost more than it reserved is posted in full and recorded as an overage
alert, and the budget's counter then refuses every call until its period ends. That is the only
way posted spend can pass a limit.

Reservations, posts and voids of one process go through its budget engine
(tokentrail.budgets.engine), which applies whatever is pending in one transaction: one commit for
many concurrent calls. Coroutines (the gateway) reserve with `areserve_call`, which never blocks
the event loop; a post or void from a thread running an event loop is queued, not waited for.

A process with no budgets pays one monotonic-clock comparison per call: the definitions are
cached and re-read only when the ledger's budget version moves (checked at most every
`cache_ttl` seconds). The budget thread re-reads them half a `cache_ttl` early; a coroutine that
still finds them due awaits a read in a worker thread, so the event loop never reads the store.

The package's modules (docs/architecture.md): `facade` (the `Budgets` class: reserve, settle,
post, void, charge, suspend), `definitions` (what a budget is), `budget_file` (the TOML file),
`book` (create/list/remove and the cached definitions), `periods`, `estimate` (a call's maximum
cost from its request), `holds` (which budgets a call falls in, the hold it needs), `ops` (`Hold`,
`Op`), `engine` (batched decisions, one per process), `batch` (one batch's transaction), `keeper`
(the budget thread), `refusals`, `charges`, `models`, `status`, `buckets`, `post_alerts` (the
alerts a post fires) and `alerts` (alert records and their sinks). Their SQL is in
tokentrail.store.budgets and tokentrail.store.alerts.
"""

from tokentrail.budgets.alerts import Alert
from tokentrail.budgets.definitions import Budget, Suspension
from tokentrail.budgets.facade import Budgets
from tokentrail.budgets.ops import Hold
from tokentrail.budgets.status import BudgetStatus

__all__ = ["Alert", "Budget", "BudgetStatus", "Budgets", "Hold", "Suspension"]
