"""Which budgets a call falls in, and the hold it needs on them: the matching (a suspension
refuses at once; a scope naming a model matches any name the call's model goes by), the counter
of each budget's current period and bucket, and the per-call caps, checked before anything is
reserved."""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence
from typing import Any

from tokentrail import context as ctx
from tokentrail.budgets.definitions import Rule, Suspension, call_dims, matches, scope_text
from tokentrail.budgets.estimate import Estimate
from tokentrail.budgets.models import ModelNames
from tokentrail.budgets.ops import Hold
from tokentrail.budgets.refusals import check_cap, suspended
from tokentrail.events import new_event_id
from tokentrail.store.budgets import Counter


def team_session(bucket: Any, a: ctx.Attribution) -> str | None:
    """The session a session counter is for. Session ids are per team: unless the bucket already
    pins the team, the team is part of it, so another team's calls under the same id never charge
    (or lock) this team's session."""
    if a.session_id is None or a.team is None or any(k == "team" for k, _ in bucket):
        return a.session_id
    return f"{a.session_id}\x1fteam={a.team}"


def applicable(
    rules: Sequence[Rule],
    suspensions: Sequence[Suspension],
    models: ModelNames,
    a: ctx.Attribution,
    provider: str | None,
    model: str | None,
) -> builtins.list[tuple[Rule, Any]]:
    """(rule, bucket) of every budget the call falls in; raises the refusal of a suspension that
    covers it (a charge passes no suspensions: what happened is posted regardless)."""
    dims = call_dims(a, provider, model)
    names = models.names(provider, model)  # a scope's model matches any name it goes by
    others = [{**dims, "model": n} for n in names[1:]]
    for s in suspensions:
        if any(matches(s.scope, d, a.tags) is not None for d in (dims, *others)):
            raise suspended(s, a.session_id)
    out = []
    for r in rules:
        bucket = matches(r.budget.scope, dims, a.tags)
        for d in others if bucket is None and r.scopes_model else ():
            bucket = matches(r.budget.scope, d, a.tags)
            if bucket is not None:
                break
        if bucket is None or (r.period.kind == "session" and not a.session_id):
            continue
        out.append((r, bucket))
    return out


def new_hold(
    rules: builtins.list[tuple[Rule, Any]],
    nusd: int,
    tokens: int,
    a: ctx.Attribution,
    est: Estimate | None,
    hold_timeout: float,
) -> Hold:
    """A hold on the counters these rules charge; raises the refusal of a per-call cap."""
    now_us = time.time_ns() // 1000  # ts_micros(datetime.now(UTC)), the same clock, without the datetime
    counters: builtins.list[Counter] = []
    caps: builtins.list[Rule] = []
    for r, bucket in rules:
        if r.period.kind == "call":
            if r.enforce:
                check_cap(r, bucket, nusd, tokens, a.session_id, estimated=est is not None)
            caps.append(r)
            continue
        key, start, end = r.counter(bucket, team_session(bucket, a), now_us)
        counters.append(
            Counter(key, r.budget.name, scope_text(bucket), start, end, r.period.window_us, r.enforce, extra=r)
        )
    if len(counters) > 1:
        counters.sort(key=_key)
    return Hold(
        hold_id=new_event_id(),
        counters=counters,
        call_rules=caps,
        nusd=nusd,
        tokens=tokens,
        session_id=a.session_id,
        expires_us=now_us + int(hold_timeout * 1_000_000),
        reserved=False,
        estimate=est,
    )


def _key(c: Counter) -> str:
    return c.key


__all__ = ["applicable", "new_hold", "team_session"]
