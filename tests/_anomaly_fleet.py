"""A seeded, labelled fleet for the anomaly detectors: normal sessions of several agents with
realistic variance over 15 days, plus injected anomalies of every kind (their labels say which
kind and which session, or which agent's hour or day, each one is)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tokentrail.events import ToolCall, UsageEvent, args_hash, new_event_id

WINDOW = 128_000
# agent -> (task type, input tokens per call, output tokens per call, cache-read share)
AGENTS = {
    "ci-fixer": ("fix", 3000, 400, 0.6),
    "support-bot": ("ticket", 1800, 250, 0.5),
    "researcher": ("research", 6000, 900, 0.7),
    "summarizer": ("summary", 4000, 300, 0.4),
}
DAYS = 15
SESSIONS_PER_DAY = 8  # per agent, all in one busy hour (so the hourly detectors have calls to judge)


@dataclass
class Label:
    kind: str
    session_id: str | None = None
    agent: str | None = None  # agent-level kinds: the agent (and `window_us`: its hour or day)


@dataclass
class Fleet:
    events: list[UsageEvent] = field(default_factory=list)
    normal: set[str] = field(default_factory=set)  # session ids of the normal sessions
    labels: list[Label] = field(default_factory=list)
    start: datetime = datetime(2000, 1, 1, tzinfo=UTC)


def build(seed: int = 7, now: datetime | None = None) -> Fleet:
    rnd = random.Random(seed)
    now = now or datetime.now(UTC)
    day0 = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
    f = Fleet(start=day0)
    counter = [0]

    def sid(tag: str) -> str:
        counter[0] += 1
        return f"{tag}-{seed}-{counter[0]:05d}"

    def call(agent: str, session: str | None, ts: datetime, **kw: object) -> UsageEvent:
        task, base_in, base_out, share = AGENTS[agent]
        inp = int(kw.pop("input_tokens", base_in * rnd.lognormvariate(0, 0.2)))  # type: ignore[call-overload]
        out = int(kw.pop("output_tokens", base_out * rnd.lognormvariate(0, 0.2)))  # type: ignore[call-overload]
        cache = int(kw.pop("cache_read_tokens", inp * min(0.95, max(0.0, rnd.gauss(share, 0.05)))))  # type: ignore[call-overload]
        args = {
            "provider": "openai",
            "model": "gpt-4o",
            "input_tokens": inp,
            "output_tokens": out,
            "cache_read_tokens": cache,
            "context_window_tokens": WINDOW,
            "cost_usd": Decimal(inp * 25 + out * 100) / Decimal(10_000_000),
            "output_limit": 2048,
            "system_permille": rnd.randint(80, 400),
            "request_hash": f"{rnd.getrandbits(128):032x}",
            "tool_calls": (ToolCall(f"c{rnd.getrandbits(32)}", "search", args_hash({"q": rnd.random()})),),
            **kw,
        }
        return UsageEvent(
            event_id=new_event_id(), kind="llm", ts=ts, agent=agent, team="platform", task_type=task,
            session_id=session, **args,  # type: ignore[arg-type]
        )  # fmt: skip

    def tool(agent: str, session: str, ts: datetime, name: str, args: object) -> UsageEvent:
        task = AGENTS[agent][0]
        return UsageEvent(
            kind="tool", ts=ts, agent=agent, team="platform", task_type=task, session_id=session,
            tool_name=name, tool_args_hash=args_hash(args), latency_ms=12.0,
        )  # fmt: skip

    # -- normal sessions: 2 to 4 calls each, a tool run with fresh arguments after each call
    for day in range(DAYS):
        for agent in AGENTS:
            for i in range(SESSIONS_PER_DAY):
                s = sid("n")
                f.normal.add(s)
                ts = day0 + timedelta(days=day, hours=10, minutes=i * 7)
                for k in range(rnd.randint(2, 4)):
                    f.events.append(call(agent, s, ts + timedelta(seconds=20 * k)))
                    f.events.append(tool(agent, s, ts + timedelta(seconds=20 * k + 5), "search", {"n": rnd.random()}))

    # -- injected anomalies, on the last days, in hours of their own
    def at(day: int, hour: int, minute: int = 0) -> datetime:
        return day0 + timedelta(days=DAYS - day, hours=hour, minutes=minute)

    s = sid("retry-run")
    for k in range(6):
        f.events.append(call("ci-fixer", s, at(2, 14, k)))
        f.events.append(tool("ci-fixer", s, at(2, 14, k) + timedelta(seconds=30), "run_tests", {"path": "tests/"}))
    f.labels.append(Label("retry_loop", s))

    s = sid("retry-ask")  # the model asks for the same tool call again and again
    same = ToolCall("x", "deploy", args_hash({"env": "prod"}))
    for k in range(4):
        f.events.append(call("support-bot", s, at(2, 15, k), tool_calls=(same,)))
    f.labels.append(Label("retry_loop", s))

    s = sid("retry-req")  # the same model request sent again
    for k in range(3):
        f.events.append(call("summarizer", s, at(3, 16, k), request_hash="ab" * 16))
    f.labels.append(Label("retry_loop", s))

    s = sid("spike")
    for k in range(3):
        f.events.append(call("researcher", s, at(2, 17, k), input_tokens=60_000, cache_read_tokens=40_000))
    f.labels.append(Label("token_spike", s))

    s = sid("growth")
    for k in range(6):
        f.events.append(call("support-bot", s, at(3, 18, k), input_tokens=1000 + 1200 * k))
    f.labels.append(Label("context_growth", s))

    s = sid("saturation")
    f.events.append(call("summarizer", s, at(2, 19), input_tokens=int(WINDOW * 0.95)))
    f.labels.append(Label("context_saturation", s))

    s = sid("limit")
    f.events.append(call("ci-fixer", s, at(3, 19), output_tokens=2048, stopped_on_limit=True))
    f.labels.append(Label("output_ratio", s))

    s = sid("system")
    for k in range(3):
        f.events.append(call("summarizer", s, at(4, 12, k), system_permille=920))
    f.labels.append(Label("system_overhead", s))

    # agent-level: an hour of verbose output (researcher), an hour of cache misses (summarizer),
    # a day of calls without an output limit (support-bot); each over 5 sessions of 5 flat calls
    for kind, agent, extra in (
        ("output_ratio", "researcher", {"output_tokens": 4500}),
        ("cache_miss", "summarizer", {"cache_read_tokens": 0}),
        ("no_max_tokens", "support-bot", {"output_limit": -1}),
    ):
        for j in range(5):
            s = sid(kind)
            for k in range(5):
                f.events.append(call(agent, s, at(1, 13, j * 6 + k), **extra))
        f.labels.append(Label(kind, agent=agent))

    f.events.sort(key=lambda e: e.ts)
    return f
