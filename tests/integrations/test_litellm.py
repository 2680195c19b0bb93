"""LiteLLM (the real package, no network: its local cost map) against FakeUpstream, through
tokentrail's CustomLogger: OpenAI and Anthropic models, plain and streamed, sync and async, each
call one event with tokentrail's prices, with or without tt.instrument() underneath."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from decimal import Decimal
from typing import Any

import pytest

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is imported: no fetch of its cost map

import litellm

import tokentrail as tt
from tests._events import stored
from tokentrail.integrations import seen_calls
from tokentrail.integrations.litellm import TokentrailLogger
from tokentrail.pricing import PriceBook
from tokentrail.testing import FakeUpstream, Reply, capture_events

# LiteLLM's own TypedDicts make pydantic warn as it builds their schemas on first use
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
]

M: Any = [{"role": "user", "content": "What is the capital of France?"}]
MODELS = {"openai": "openai/gpt-4o-mini", "anthropic": "anthropic/claude-sonnet-4-5"}
# the fake's counts, inclusive; Anthropic also writes to its cache
SCRIPTED = {
    "openai": {"input_tokens": 1200, "cached_tokens": 1000, "output_tokens": 40, "reasoning_tokens": 10},
    "anthropic": {"input_tokens": 1200, "cached_tokens": 1000, "cache_write_tokens": 100, "output_tokens": 40},
}
COUNTS = {
    "openai": {"input_tokens": 1200, "cache_read_tokens": 1000, "output_tokens": 40, "reasoning_tokens": 10},
    "anthropic": {"input_tokens": 1200, "cache_read_tokens": 1000, "cache_write_tokens": 100, "output_tokens": 40},
}


@pytest.fixture(autouse=True)
def _close_idle_loops() -> Iterator[None]:
    """LiteLLM's sync path leaves an event loop of its own (never run, never closed) in the main
    thread: close such idle loops after each test, before the garbage collector warns in another."""
    yield
    for o in gc.get_objects():
        if isinstance(o, asyncio.BaseEventLoop) and not o.is_running() and not o.is_closed():
            o.close()


@pytest.fixture
def logger(any_ledger: tt.Ledger) -> Iterator[TokentrailLogger]:
    handler = TokentrailLogger(any_ledger)
    saved = litellm.callbacks
    litellm.callbacks = [handler]
    seen_calls.forget_all()  # FakeUpstream's ids repeat from one server to the next
    yield handler
    litellm.callbacks = saved
    tt.uninstrument()


def base_url(up: FakeUpstream, provider: str) -> str:
    return up.openai_base_url if provider == "openai" else up.anthropic_base_url


def call(up: FakeUpstream, ledger: tt.Ledger, provider: str, *, stream: bool, use_async: bool, **extra: Any) -> None:
    logger = next(c for c in litellm.callbacks if isinstance(c, TokentrailLogger))
    """One LiteLLM call, its stream read to the end."""
    options: dict[str, Any] = {"api_base": base_url(up, provider), "api_key": "sk-test", "max_retries": 0, **extra}
    if stream:
        options.setdefault("stream_options", {"include_usage": True})

    async def acall() -> None:
        handled_before = logger.handled
        response = await litellm.acompletion(model=MODELS[provider], messages=M, stream=stream, **options)
        if stream:
            async for _ in response:
                pass
        for _ in range(1000):  # LiteLLM logs from a worker task in this loop: let it run (bounded)
            if logger.handled > handled_before:
                break
            await asyncio.sleep(0.01)
        await litellm.close_litellm_async_clients()  # its cached clients belong to this loop

    # the wrapper (under tt.instrument()) records on the session's ledger: the test's, never the default
    with tt.session(ledger=ledger) if tt.current().session is None else nullcontext():
        if use_async:
            asyncio.run(acall())
            return
        response = litellm.completion(model=MODELS[provider], messages=M, stream=stream, **options)
        if stream:
            for _ in response:
                pass


def handled(logger: TokentrailLogger, n: int) -> None:
    """Wait (bounded) until the logger has handled n log events: LiteLLM logs sync calls from a thread."""
    for _ in range(1000):
        if logger.handled >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"LiteLLM logged {logger.handled} call(s), not {n}")


def price(prices: PriceBook, provider: str, counts: dict[str, int]) -> Decimal:
    c = tt.price(provider=provider, model=MODELS[provider].split("/")[1], book=prices, **counts)
    assert c is not None
    return c.total_usd.quantize(Decimal("1e-9"))


@pytest.mark.parametrize("instrumented", [False, True], ids=["logger-only", "with-instrument"])
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_each_call_is_one_event_at_our_prices(
    provider: str,
    stream: bool,
    use_async: bool,
    instrumented: bool,
    up: FakeUpstream,
    any_ledger: tt.Ledger,
    logger: TokentrailLogger,
    prices: PriceBook,
) -> None:
    if instrumented:
        tt.instrument()
    up.push(Reply(text="Paris.", **SCRIPTED[provider]))
    with capture_events() as seen:
        call(up, any_ledger, provider, stream=stream, use_async=use_async)
        handled(logger, 1)
    (event,) = stored(any_ledger)
    assert len(seen) == 1
    assert (event.provider, event.model, event.status, event.streamed) == (
        provider,
        MODELS[provider].split("/")[1],  # without LiteLLM's provider prefix
        "ok",
        stream,
    )
    counts = {k: getattr(event, k) for k in COUNTS[provider]}
    assert counts == COUNTS[provider]
    assert event.cost_usd == price(prices, provider, COUNTS[provider])  # ours, not LiteLLM's response_cost
    # through the openai SDK the wrapper meters it (its event has the request hash); else the logger
    assert (event.request_hash is not None) == (instrumented and provider == "openai")


@pytest.mark.parametrize("instrumented", [False, True], ids=["logger-only", "with-instrument"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_failure_is_one_error_event(
    provider: str, instrumented: bool, up: FakeUpstream, any_ledger: tt.Ledger, logger: TokentrailLogger
) -> None:
    if instrumented:
        tt.instrument()
    up.push(Reply(status=500))
    with pytest.raises(litellm.InternalServerError):
        call(up, any_ledger, provider, stream=False, use_async=False)
    handled(logger, 1)
    (event,) = stored(any_ledger)
    assert event.status == "error" and event.provider == provider and event.input_tokens == 0
    assert event.cost_usd == 0  # the provider refused it: it did no work


def test_a_stream_without_usage_is_never_zero_cost(
    up: FakeUpstream, any_ledger: tt.Ledger, logger: TokentrailLogger, prices: PriceBook
) -> None:
    """An OpenAI stream reports usage only when asked: without it the call is recorded as missing
    its usage (unpriced, visible), never as $0. Under tt.instrument() the wrapper asks for it."""
    up.push(Reply(text="Paris.", input_tokens=300, output_tokens=7))
    call(up, any_ledger, "openai", stream=True, use_async=False, stream_options=None)
    handled(logger, 1)
    (event,) = stored(any_ledger)
    assert event.status == "invalid_usage:missing_usage" and event.cost_usd is None

    tt.instrument()
    up.push(Reply(text="Paris.", input_tokens=300, output_tokens=7))
    call(up, any_ledger, "openai", stream=True, use_async=False, stream_options=None)
    handled(logger, 2)
    second = stored(any_ledger)[1]
    assert (second.input_tokens, second.output_tokens, second.status) == (300, 7, "ok")
    assert second.cost_usd == price(prices, "openai", {"input_tokens": 300, "output_tokens": 7})


def test_attribution_from_the_session_and_litellm_metadata(
    up: FakeUpstream, any_ledger: tt.Ledger, logger: TokentrailLogger
) -> None:
    with tt.session("support-bot", session_id="outer", org="acme", ledger=any_ledger):
        up.push(Reply(input_tokens=50, output_tokens=5))
        call(up, any_ledger, "anthropic", stream=False, use_async=False)
        up.push(Reply(input_tokens=60, output_tokens=6))
        metadata = {"team": "search", "session_id": "chat-7", "tags": ["env:prod", "beta"], "task_type": "qa"}
        call(up, any_ledger, "anthropic", stream=True, use_async=False, metadata=metadata, user="end-user-9")
        up.push(Reply(input_tokens=70, output_tokens=7))
        proxy_key = {"user_api_key_team_alias": "platform", "user_api_key_project_alias": "p1"}
        call(up, any_ledger, "openai", stream=False, use_async=True, metadata=proxy_key)
    handled(logger, 3)
    plain, tagged, keyed = sorted(stored(any_ledger), key=lambda e: e.input_tokens)
    assert (plain.session_id, plain.agent, plain.org, plain.team) == ("outer", "support-bot", "acme", None)
    # a session LiteLLM names is a child of the session current at the call
    assert (tagged.session_id, tagged.parent_session_id, tagged.agent, tagged.org) == (
        "chat-7",
        "outer",
        "support-bot",
        "acme",
    )
    assert (tagged.team, tagged.task_type, tagged.user) == ("search", "qa", "end-user-9")
    assert dict(tagged.tags) == {"env": "prod", "beta": "true"}
    assert (keyed.team, keyed.project, keyed.session_id) == ("platform", "p1", "outer")


def test_hostile_payloads_are_recorded_as_invalid_never_raised(any_ledger: tt.Ledger) -> None:
    """A payload from a proxy is caller data: impossible counts, odd types, NULs."""
    handler = TokentrailLogger(any_ledger)
    base = {"custom_llm_provider": "anthropic", "model": "claude-sonnet-4-5", "status": "success"}
    payloads: list[Any] = [
        {**base, "metadata": {"usage_object": {"prompt_tokens": 10, "completion_tokens": -1}}},
        {**base, "metadata": {"usage_object": {"prompt_tokens": "10", "completion_tokens": 1}}},
        {
            **base,
            "metadata": {
                "usage_object": {"prompt_tokens": 10, "completion_tokens": 1, "cache_creation_input_tokens": 50}
            },
        },
        {**base, "model": "x\x00y", "request_tags": ["a\x00", 7, None], "metadata": "nope"},
        "not a mapping",
    ]
    for i, payload in enumerate(payloads):
        handler.log_success_event({"litellm_call_id": f"c{i}", "standard_logging_object": payload}, None, None, None)
    assert handler.handled == len(payloads)
    statuses = [e.status for e in stored(any_ledger)]
    assert statuses == [
        "invalid_usage:negative:completion_tokens",
        "invalid_usage:non_integer:prompt_tokens",
        "invalid_usage:cache_exceeds_input",
        "invalid_usage:missing_usage",
    ]
    # a call logged twice (a stream's handlers) is one event
    handler.log_success_event({"litellm_call_id": "c0", "standard_logging_object": payloads[0]}, None, None, None)
    assert len(stored(any_ledger)) == 4


def test_import_tokentrail_does_not_import_litellm() -> None:
    code = "import sys, tokentrail; print('litellm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_litellm_the_import_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['litellm'] = None\n"
        "try:\n    import tokentrail.integrations.litellm\nexcept ImportError as e:\n    print(e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'tokentrail[litellm]'" in out.stdout
