"""Charges: spend that happened without a reservation, posted in full to the budgets it falls in.

`record_llm`, `record_tool`, the event API and OTLP record calls tokentrail never reserved, and an
adjustment changes what a call cost: each is *charged* when it is recorded, in the period current
then, on every budget its attribution, provider and model fall in. A charge cannot be refused and
is no overage (nothing was reserved to go past), but a budget it spends refuses the next
reservation as usual. An event sent again (an OTLP retry, a replayed batch) is charged once per
process: the last `CHARGED_MEMORY` ids are remembered.
"""

from __future__ import annotations

import builtins
import logging
import time
from typing import TYPE_CHECKING

from tokentrail import context as ctx
from tokentrail.budgets.ops import POST, Op
from tokentrail.events import UsageEvent, usd_to_nano
from tokentrail.exceptions import ConfigError

if TYPE_CHECKING:
    from tokentrail.budgets.facade import Budgets

log = logging.getLogger("tokentrail")

CHARGED_MEMORY = 100_000  # event ids remembered so that one sent again is not charged twice


def charge(budgets: Budgets, event: UsageEvent) -> None:
    """Budgets.charge: post `event`'s cost and tokens (an adjustment: its delta). Never raises and
    never waits for the store: with the definitions cached, the post is computed here and queued;
    with them stale, the event waits for the budget thread (or the next reservation) to read them."""
    try:
        nusd = usd_to_nano(event.cost_usd) or 0
        tokens = 0 if event.kind == "adjustment" else event.input_tokens + event.output_tokens
        if not (nusd or tokens) or not _keeps_budgets(budgets):
            return
        with budgets._charge_lock:
            seen = budgets._charged
            if event.event_id in seen:
                return
            seen[event.event_id] = None
            if len(seen) > CHARGED_MEMORY:
                seen.popitem(last=False)
        budgets._pending_charges.append((event, nusd, tokens))
        if budgets._version >= 0 and time.monotonic() < budgets._next_check:
            run_pending(budgets, read=False, wait=False)  # the definitions are fresh: nothing to read
        else:
            budgets._engine_of().wake_keeper()
    except Exception as e:
        log.warning("tokentrail: could not charge event %s to its budgets: %s", event.event_id, e)


def run_pending(budgets: Budgets, *, read: bool = True, wait: bool = True) -> None:
    """Post the charges waiting, reading the definitions first if they are stale (`read`). One pass
    at a time: with `wait` False (a charge, which never waits) and a pass under way, that pass or
    the budget thread takes them. Never raises."""
    if not budgets._charge_run.acquire(blocking=wait):
        budgets._engine_of().wake_keeper()  # the pass under way may have looked at the queue already
        return
    try:
        _run(budgets, read)
    finally:
        budgets._charge_run.release()


def _run(budgets: Budgets, read: bool) -> None:
    q = budgets._pending_charges
    while q:
        try:
            event, nusd, tokens = q.popleft()
        except IndexError:  # another thread took the last one
            return
        try:
            if budgets._active() if read else (budgets._rules or budgets._suspended):
                charge_budgets(budgets, attribution_of(event), event.provider, event.model, nusd, tokens, set())
        except Exception as e:
            log.warning("tokentrail: could not charge event %s to its budgets: %s", event.event_id, e)


def charge_budgets(
    budgets: Budgets,
    a: ctx.Attribution,
    provider: str | None,
    model: str | None,
    nusd: int,
    tokens: int,
    held: builtins.set[str],
) -> None:
    """Post (nusd, tokens) as a charge on the budgets a call falls in, but those named in `held`."""
    rules = [
        (r, b)
        for r, b in budgets._applicable(a, provider, model, charge=True)
        if r.period.kind != "call" and r.budget.name not in held
    ]
    if rules:
        hold = budgets._hold(rules, 0, 0, a, None)
        hold.charge = True
        hold.settled = True
        budgets._engine_of().submit(Op(POST, hold, nusd, tokens))  # queued: a charge never waits


def attribution_of(event: UsageEvent) -> ctx.Attribution:
    return ctx.Attribution(
        org=event.org,
        team=event.team,
        project=event.project,
        agent=event.agent,
        user=event.user,
        customer=event.customer,
        workflow=event.workflow,
        task_type=event.task_type,
        session_id=event.session_id,
        tags=event.tags or {},
    )


def _keeps_budgets(budgets: Budgets) -> bool:
    """False for a store that cannot keep budgets (so it has none to charge)."""
    try:
        budgets._backend()
    except ConfigError:
        return False
    return True
