"""The demo fleet: a few agents of three teams doing multi-step work through the real
openai, anthropic and google-genai SDKs, against a local FakeUpstream, metered by tokentrail.

One agent (ci-fixer) is stuck: it re-runs the same tool with the same arguments while its
context grows, which is what runaway agents look like in a ledger.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tokentrail as tt
from tokentrail.testing import FakeUpstream, ReceivedRequest, Reply, ToolCall

AGENT_HEADER = "x-demo-agent"
CUSTOMERS = ("acme", "globex", "initech", "umbrella")


@dataclass(frozen=True)
class Agent:
    name: str
    team: str
    model: str
    style: str  # how it works: see Fleet.run_session
    sessions: int
    task_type: str


FLEET = (
    Agent("support-bot", "cx", "gpt-4o-mini", "openai_tools", 6, "support_ticket"),
    Agent("triage-bot", "cx", "claude-haiku-4-5", "anthropic", 5, "triage"),
    Agent("contract-analyzer", "legal", "claude-sonnet-4-6", "anthropic_cached_stream", 4, "contract_review"),
    Agent("clause-extractor", "legal", "gemini-2.5-flash", "gemini", 5, "extraction"),
    Agent("code-reviewer", "eng", "o4-mini", "openai_responses", 4, "code_review"),
    Agent("docs-writer", "eng", "acme-llama-70b", "openai_stream", 2, "docs"),  # self-hosted: no price
    Agent("ci-fixer", "eng", "gpt-4.1", "runaway", 1, "fix_ci"),
)
RUNAWAY_TURNS = 30
# Budgets of the demo: the runaway agent is stopped by its session budget, and the legal team
# crosses the 80% alert of its monthly budget (an alert-only budget: it never blocks anyone).
DEMO_BUDGETS: tuple[dict[str, Any], ...] = (
    {"name": "ci-fixer-session", "scope": {"agent": "ci-fixer"}, "period": "session", "limit_usd": "0.25"},
    {"name": "legal-monthly", "scope": {"team": "legal"}, "period": "month", "limit_usd": "0.24", "action": "alert"},
)


def set_budgets(ledger: tt.Ledger) -> None:
    for budget in DEMO_BUDGETS:
        ledger.budgets.set(**budget)


def total_sessions() -> int:
    return sum(a.sessions for a in FLEET)


def responder(rng: random.Random) -> Callable[[ReceivedRequest], Reply]:
    """How the fake models answer: ask for a tool when tools are offered and none has run yet,
    answer in prose otherwise; the stuck agent always asks for the same tool again."""

    def reply(request: ReceivedRequest) -> Reply:
        agent = request.headers.get(AGENT_HEADER, "")
        body = request.json if isinstance(request.json, dict) else {}
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 120)))
        if agent == "ci-fixer":
            return Reply(text="", tool_calls=[ToolCall("run_tests", {"suite": "integration", "retry": True})])
        if agent == "contract-analyzer":
            # the long contract sits in a cached system prompt: most of the input is a cache read
            return Reply(text=text, cached_tokens=3000, cache_write_tokens=0 if rng.random() < 0.8 else 500)
        if agent == "code-reviewer":
            return Reply(text=text, reasoning_tokens=rng.randint(200, 900))
        if body.get("tools") and not _has_tool_result(body):
            name = body["tools"][0].get("function", body["tools"][0]).get("name", "lookup")
            return Reply(text="", tool_calls=[ToolCall(name, {"id": rng.randint(1000, 9999)})])
        return Reply(text=text)

    return reply


def _has_tool_result(body: dict[str, Any]) -> bool:
    return any(isinstance(m, dict) and m.get("role") == "tool" for m in body.get("messages", []))


WORDS = tuple(
    "the order shipped on tuesday and the customer asked for a refund while the clause limits liability "
    "to direct damages under this agreement the test suite fails because the fixture expects a timezone".split(" ")
)

LOOKUP_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Find an order by id",
        "parameters": {"type": "object", "properties": {"id": {"type": "integer"}}},
    },
}
RUN_TESTS_TOOL = {
    "type": "function",
    "function": {
        "name": "run_tests",
        "description": "Run a test suite",
        "parameters": {"type": "object", "properties": {"suite": {"type": "string"}, "retry": {"type": "boolean"}}},
    },
}


@tt.tool
def lookup_order(id: int) -> dict[str, Any]:
    return {"id": id, "status": "shipped"}


@tt.tool
def run_tests(suite: str, retry: bool) -> str:
    return "FAILED test_timezone_fixture (expected UTC) " * 40


class Fleet:
    """Runs the demo sessions; each agent gets its own wrapped client."""

    def __init__(
        self,
        upstream: FakeUpstream,
        ledger: tt.Ledger,
        rng: random.Random,
        *,
        base_urls: dict[str, str],
        via_gateway: bool = False,
    ):
        """`via_gateway`: the base URLs are a tokentrail gateway's; the clients are not wrapped, and
        each call carries its session's attribution in X-Tokentrail-* headers instead."""
        import anthropic
        import httpx2
        import openai
        from google import genai

        self.ledger = ledger
        self.rng = rng
        self.stopped: list[tuple[str, int, str]] = []  # (agent, calls it made, why a budget stopped it)

        def headers(agent: Agent) -> dict[str, str]:
            return {AGENT_HEADER: agent.name}

        http: Any = httpx2.Client(event_hooks={"request": [_attribution_headers]}) if via_gateway else None
        extra: dict[str, Any] = {"http_client": http} if via_gateway else {}
        self.clients: dict[str, Any] = {}
        for agent in FLEET:
            if agent.style.startswith("openai") or agent.style == "runaway":
                client: Any = openai.OpenAI(
                    base_url=base_urls["openai"],
                    api_key="sk-demo",
                    default_headers=headers(agent),
                    max_retries=0,
                    **extra,
                )
            elif agent.style.startswith("anthropic"):
                client = anthropic.Anthropic(
                    base_url=base_urls["anthropic"],
                    api_key="sk-ant-demo",
                    default_headers=headers(agent),
                    max_retries=0,
                    **extra,
                )
            else:
                options: dict[str, Any] = {"base_url": base_urls["gemini"], "headers": headers(agent)}
                if via_gateway:
                    options["httpx_client"] = http
                client = genai.Client(api_key="demo", http_options=options)  # type: ignore[arg-type]
            self.clients[agent.name] = client if via_gateway else tt.wrap(client, ledger=ledger)

    def run_session(self, agent: Agent, n: int) -> tt.Session:
        rng = self.rng
        with tt.session(
            agent=agent.name,
            team=agent.team,
            project="demo",
            user=f"u-{rng.randint(1, 40)}",
            customer=rng.choice(CUSTOMERS),
            task_type=agent.task_type,
            tags={"env": "demo"},
            ledger=self.ledger,
        ) as s:
            getattr(self, f"_{agent.style}")(agent, self.clients[agent.name])
            if agent.style != "runaway":
                s.outcome(agent.task_type + "_done")
        return s

    def _question(self) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(30, 200)))

    def _openai_tools(self, agent: Agent, client: Any) -> None:
        messages: list[dict[str, Any]] = [{"role": "user", "content": self._question()}]
        with tt.step("plan"):
            client.chat.completions.create(model=agent.model, messages=messages, max_tokens=300)
        with tt.step("act"):
            r = client.chat.completions.create(model=agent.model, messages=messages, tools=[LOOKUP_TOOL])
            call = r.choices[0].message.tool_calls[0]
            result = lookup_order(**json.loads(call.function.arguments))
            messages += [
                {"role": "assistant", "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)},
            ]
        with tt.step("answer"):
            client.chat.completions.create(model=agent.model, messages=messages, tools=[LOOKUP_TOOL])

    def _openai_stream(self, agent: Agent, client: Any) -> None:
        for part in ("outline", "draft"):
            with tt.step(part):
                for _ in client.chat.completions.create(
                    model=agent.model, messages=[{"role": "user", "content": self._question()}], stream=True
                ):
                    pass

    def _openai_responses(self, agent: Agent, client: Any) -> None:
        with tt.step("review"):
            client.responses.create(model=agent.model, input=self._question(), reasoning={"effort": "medium"})
        with tt.step("summarise"):
            client.responses.create(model=agent.model, input=self._question())

    def _anthropic(self, agent: Agent, client: Any) -> None:
        with tt.step("classify"):
            client.messages.create(
                model=agent.model, max_tokens=200, messages=[{"role": "user", "content": self._question()}]
            )

    def _anthropic_cached_stream(self, agent: Agent, client: Any) -> None:
        system = [{"type": "text", "text": "CONTRACT " * 2000, "cache_control": {"type": "ephemeral"}}]
        for part in ("read", "flag-risks", "summarise"):
            with (
                tt.step(part),
                client.messages.stream(
                    model=agent.model,
                    max_tokens=1024,
                    system=system,
                    messages=[{"role": "user", "content": self._question()}],
                ) as stream,
            ):
                stream.get_final_message()

    def _gemini(self, agent: Agent, client: Any) -> None:
        with tt.step("extract"):
            client.models.generate_content(model=agent.model, contents=self._question())
        with tt.step("check"):
            for _ in client.models.generate_content_stream(model=agent.model, contents=self._question()):
                pass

    def _runaway(self, agent: Agent, client: Any) -> None:
        import openai

        messages: list[dict[str, Any]] = [{"role": "user", "content": "CI is red on main, fix it."}]
        for turn in range(RUNAWAY_TURNS):
            with tt.step("fix-loop"):
                try:
                    r = client.chat.completions.create(
                        model=agent.model, messages=messages, tools=[RUN_TESTS_TOOL], max_tokens=500
                    )
                except (tt.BudgetExceeded, openai.APIStatusError) as e:
                    if isinstance(e, openai.APIStatusError) and e.status_code != 402:  # 402: the gateway's stop
                        raise
                    self.stopped.append((agent.name, turn, str(e)))
                    return
                call = r.choices[0].message.tool_calls[0]
                log = run_tests(**json.loads(call.function.arguments))
                messages += [
                    {"role": "assistant", "tool_calls": [call.model_dump()]},
                    {"role": "tool", "tool_call_id": call.id, "content": log},
                ]


def _attribution_headers(request: Any) -> None:
    """Carry the current session's attribution to a gateway (httpx event hook)."""
    from tokentrail.context import current

    a = current()
    fields = {
        "Session": a.session_id,
        "Agent": a.agent,
        "Team": a.team,
        "Project": a.project,
        "User": a.user,
        "Customer": a.customer,
        "Workflow": a.workflow,
        "Task-Type": a.task_type,
        "Step": a.step,
        **{f"Tag-{k}": v for k, v in a.tags.items()},
    }
    for name, value in fields.items():
        if value:
            request.headers[f"X-Tokentrail-{name}"] = value
