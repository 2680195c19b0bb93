"""Why a budget refuses a call: the decision against a counter's figures, and what the refusal says.

Every refusal names the budget, its scope, period and limit, what is spent and reserved, and the
session (docs/rules.md §Budgets), so the `BudgetExceeded` an agent sees explains itself.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tokentrail.budgets.alerts import money
from tokentrail.budgets.definitions import Rule, Suspension, scope_text
from tokentrail.events import from_micros, nano_to_usd
from tokentrail.exceptions import BudgetExceeded, BudgetThrottled
from tokentrail.store.budgets import FOREVER_US

if TYPE_CHECKING:
    from tokentrail.budgets.estimate import Estimate
    from tokentrail.store.budgets import Counter


def decide(
    counters: list[Counter], nusd: int, tokens: int, now_us: int, session_id: str | None
) -> BudgetExceeded | None:
    """The refusal of the first counter (in key order) that cannot take (nusd, tokens) on top of
    what it has posted and reserved, or that an overage blocks; None when every one can."""
    for c in counters:
        r: Rule = c.extra
        b = r.budget
        head = f"Budget '{b.name}' ({c.bucket}, {b.period})"
        if c.blocked_until_us is not None and now_us < c.blocked_until_us:
            until = "the session ends" if c.blocked_until_us >= FOREVER_US else from_micros(c.blocked_until_us)
            msg = (
                f"{head} refused the call: an earlier call went past its reservation (overage), so the "
                f"budget refuses every call until {until}; limit {limits(r)}, "
                f"spent {amounts(c.posted_nusd, c.posted_tokens, r)}"
            )
            return refusal(r, c, msg + session_note(session_id), now_us, never_fits=False)
        over_usd = r.limit_nusd is not None and c.posted_nusd + c.reserved_nusd + nusd > r.limit_nusd
        over_tokens = r.limit_tokens is not None and c.posted_tokens + c.reserved_tokens + tokens > r.limit_tokens
        if over_usd or over_tokens:
            never = (r.limit_nusd is not None and nusd > r.limit_nusd) or (
                r.limit_tokens is not None and tokens > r.limit_tokens
            )
            msg = (
                f"{head} refused the call: limit {limits(r)}, spent {amounts(c.posted_nusd, c.posted_tokens, r)}"
                f" + reserved {amounts(c.reserved_nusd, c.reserved_tokens, r)}, this call may cost up to "
                f"{amounts(nusd, tokens, r)}"
            )
            return refusal(r, c, msg + session_note(session_id), now_us, never_fits=never)
    return None


def refusal(r: Rule, c: Counter, msg: str, now_us: int, *, never_fits: bool) -> BudgetExceeded:
    """A throttle budget's refusal is BudgetThrottled (retry when the window or period moves on),
    unless the call could never fit; every other refusal is a hard stop."""
    e: BudgetExceeded
    if r.budget.action == "throttle" and not never_fits:
        if r.period.rolling:
            retry = (c.oldest_us + r.period.window_us - now_us) / 1e6 if c.oldest_us is not None else 1.0
        else:
            retry = ((c.end_us or now_us) - now_us) / 1e6
        retry = max(0.05, retry)
        e = BudgetThrottled(f"{msg}; retry after {retry:.1f}s", budget=r.budget.name, retry_after=retry)
    else:
        e = BudgetExceeded(msg, budget=r.budget.name)
    e.scope = c.bucket  # type: ignore[attr-defined]
    e.period = r.budget.period  # type: ignore[attr-defined]
    return e


def check_cap(r: Rule, bucket: Any, nusd: int, tokens: int, session_id: str | None, *, estimated: bool) -> None:
    """Raise the refusal of a per-call budget (`period="call"`) the call may go past."""
    over_usd = r.limit_nusd is not None and nusd > r.limit_nusd
    over_tokens = r.limit_tokens is not None and tokens > r.limit_tokens
    if over_usd or over_tokens:
        hint = " (set max_tokens to bound the call)" if estimated else ""
        e = BudgetExceeded(
            f"Budget '{r.budget.name}' ({scope_text(bucket)}, call) refused the call: it may cost up to "
            f"{amounts(nusd, tokens, r)}, over the per-call limit of {limits(r)}{hint}" + session_note(session_id),
            budget=r.budget.name,
        )
        e.scope = scope_text(bucket)  # type: ignore[attr-defined]
        raise e


def refuse_unpriced(rules: list[tuple[Rule, Any]], est: Estimate, model: str | None, session_id: str | None) -> None:
    """Raise the refusal of the first enforcing USD budget a call with no price (its estimate has no
    cost) falls in, unless that budget allows unpriced calls: a USD limit cannot bound what it cannot price."""
    if est.cost_usd is not None:
        return
    for r, bucket in rules:
        b = r.budget
        if r.enforce and r.limit_nusd is not None and not b.allow_unpriced:
            what = f"model {model!r}" if model else "a request whose model it cannot read"
            e = BudgetExceeded(
                f"Budget '{b.name}' ({scope_text(bucket)}, {b.period}) refused the call: tokentrail has no price "
                f"for {what}, so its USD limit cannot bound the call; add the model to the TOKENTRAIL_PRICES "
                "overrides file, or set the budget with allow_unpriced=True (--allow-unpriced)"
                + session_note(session_id),
                budget=b.name,
            )
            e.scope = scope_text(bucket)  # type: ignore[attr-defined]
            raise e


def suspended(s: Suspension, session_id: str | None) -> BudgetExceeded:
    """The refusal of a call in a suspended scope (the kill switch)."""
    e = BudgetExceeded(
        f"scope {s.scope_text} is suspended (kill switch{': ' + s.reason if s.reason else ''}); "
        f"every call in it is refused until `tokentrail budget resume --scope "
        f"{','.join(f'{k}={v}' for k, v in s.scope)}`" + session_note(session_id),
        budget=None,
    )
    e.scope = s.scope_text  # type: ignore[attr-defined]
    return e


def block_until(c: Counter, now_us: int) -> int:
    """Until when an overage on counter `c` refuses calls: the end of its period."""
    if c.end_us is not None:
        return c.end_us
    if c.window_us:
        return now_us + c.window_us
    return FOREVER_US  # a session: until it ends (its counter is never used again)


def limits(r: Rule) -> str:
    parts = []
    if r.budget.limit_usd is not None:
        parts.append(money(r.budget.limit_usd))
    if r.limit_tokens is not None:
        parts.append(f"{r.limit_tokens:,} tokens")
    return " / ".join(parts)


def amounts(nusd: int, tokens: int, r: Rule) -> str:
    parts = []
    if r.limit_nusd is not None:
        parts.append(money(nano_to_usd(nusd) or Decimal(0)))
    if r.limit_tokens is not None:
        parts.append(f"{tokens:,} tokens")
    return " / ".join(parts)


def session_note(session_id: str | None) -> str:
    return f" (session {session_id})" if session_id else " (no session)"
