"""A fleet for the savings advisor: the anomaly fleet's normal sessions (tests/_anomaly_fleet.py),
which must yield no recommendation, plus one agent per pattern with fixed token counts, so each
saving can be computed by hand (tests/analytics/test_advise.py does, at gpt-4o / o4-mini prices)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import tokentrail as tt
from tests import _anomaly_fleet
from tokentrail.context import Attribution
from tokentrail.events import ToolCall, UsageEvent, args_hash, new_event_id

TEAM = "platform"


@dataclass
class AdviceFleet:
    events: list[UsageEvent] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)  # sessions with a successful outcome
    start: datetime = datetime(2000, 1, 1)


def clean(seed: int = 7, now: datetime | None = None) -> AdviceFleet:
    """The normal sessions of the anomaly fleet: nothing to advise."""
    base = _anomaly_fleet.build(seed=seed, now=now)
    return AdviceFleet([e for e in base.events if e.session_id in base.normal], [], base.start)


def call(agent: str, task: str, session: str, ts: datetime, **kw: object) -> UsageEvent:
    args: dict[str, object] = {
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 2000,
        "output_tokens": 100,
        "output_limit": 512,
        "request_hash": new_event_id().replace("-", ""),
        **kw,
    }
    return UsageEvent(
        event_id=new_event_id(), kind="llm", ts=ts, team=TEAM, agent=agent, task_type=task, session_id=session,
        **args,  # type: ignore[arg-type]
    )  # fmt: skip


def planted(seed: int = 7, now: datetime | None = None) -> AdviceFleet:
    """The clean fleet plus every pattern, each in an agent of its own, on its last days."""
    f = clean(seed, now)
    t0 = f.start + timedelta(days=10, hours=3)

    def at(day: int, minute: int) -> datetime:
        return t0 + timedelta(days=day, minutes=minute)

    # prompt caching: 25 calls, one minute apart, repeating a 2,000-token prefix (half of 4,000)
    for k in range(25):
        f.events.append(
            call("faq-bot", "faq", f"faq-{k // 5}", at(0, k), input_tokens=4000, prefix_hash=f"{'ab' * 12}:500")
        )
    # model routing: 30 short calls on gpt-4o, no tools
    for k in range(30):
        f.events.append(call("tagger", "classify", f"tag-{k // 3}", at(0, 40 + k), input_tokens=800, output_tokens=50))
    # context trimming: 4 sessions whose input grows 1,000 -> 6,000 over 6 calls
    for s in range(4):
        for k in range(6):
            f.events.append(call("chat-bot", "chat", f"chat-{s}", at(1, s * 10 + k), input_tokens=1000 * (k + 1)))
    # runaway output: 100 calls without max_tokens, 4 of them running to 5,000 tokens
    for k in range(100):
        out = 5000 if k % 25 == 0 else 200
        f.events.append(call("writer", "draft", f"draft-{k // 10}", at(2, k), output_tokens=out, output_limit=-1))
    # redundant calls: 5 sessions of 5 calls, the 2nd and 3rd repeating the 1st; a tool run repeated
    for s in range(5):
        same = f"{s:02d}" * 16
        for k in range(5):
            h = same if k < 3 else new_event_id().replace("-", "")
            f.events.append(call("fetcher", "lookup", f"fetch-{s}", at(3, s * 10 + k), request_hash=h))
        for k in range(2):
            f.events.append(
                UsageEvent(
                    kind="tool",
                    ts=at(3, s * 10 + k),
                    team=TEAM,
                    agent="fetcher",
                    task_type="lookup",
                    session_id=f"fetch-{s}",
                    tool_name="http_get",
                    tool_args_hash=args_hash({"url": s}),
                )
            )
    # unused reasoning: o4-mini, 900 of 1,000 output tokens reasoning, sessions that succeeded
    for s in range(5):
        for k in range(5):
            f.events.append(
                call(
                    "planner",
                    "plan",
                    f"plan-{s}",
                    at(4, s * 10 + k),
                    model="o4-mini",
                    output_tokens=1000,
                    reasoning_tokens=900,
                )
            )
        f.succeeded.append(f"plan-{s}")
    f.events.sort(key=lambda e: e.ts)
    return f


def record(ledger: tt.Ledger, fleet: AdviceFleet) -> None:
    for e in fleet.events:
        ledger.record(e)
    for s in fleet.succeeded:
        ledger.record_outcome(Attribution(team=TEAM, agent="planner", task_type="plan", session_id=s), "planned")
    ledger.flush()


# Unit prices (USD per token) the hand computations use (genai-prices, as the test price book)
GPT4O_IN, GPT4O_CACHED, GPT4O_OUT = Decimal("2.5e-6"), Decimal("1.25e-6"), Decimal("10e-6")
MINI_IN, MINI_OUT = Decimal("0.15e-6"), Decimal("0.6e-6")
O4MINI_OUT = Decimal("4.4e-6")
__all__ = ["ToolCall"]
