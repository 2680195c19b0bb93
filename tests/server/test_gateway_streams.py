"""The gateway's response half, however a call ends: a stream the caller abandons before its usage
is billed (estimated, posted to the budget, so a budget cannot be outrun that way); an upstream
that cuts a stream fails the caller's stream as the provider's would; a caller who hangs up before
the headers stops the upstream call and frees its reservation; and the last byte of a response
leaves only once the call's event is durable."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

import tokentrail as tt
from tests._events import stored
from tests._server import serving
from tokentrail.events import COLUMNS, from_row
from tokentrail.exceptions import StoreError
from tokentrail.testing import FakeUpstream, Reply

GPT = "gpt-4o-mini"
M: Any = [{"role": "user", "content": "What is the capital of France?"}]
TEXT = "w0 w1 w2 "


def oai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0)


def outcome(fn: Callable[[], Any]) -> type[BaseException] | None:
    try:
        fn()
    except Exception as e:
        return type(e)
    return None


def until(check: Callable[[], Any], seconds: float = 10.0) -> Any:
    """Poll `check` until it returns something truthy (bounded); its last answer."""
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def live_holds(ledger: tt.Ledger) -> int:
    p = ledger.store.dialect.param
    now_us = int(time.time() * 1_000_000)
    return int(ledger.store.query(f"SELECT COUNT(*) FROM budget_holds WHERE expires_us > {p}", (now_us,))[0][0])


def hang_up_after_the_content(c: openai.OpenAI) -> str:
    text = ""
    stream = c.chat.completions.create(model=GPT, messages=M, stream=True, max_tokens=20)
    for chunk in stream:
        text += chunk.choices[0].delta.content or "" if chunk.choices else ""
        if chunk.choices and chunk.choices[0].finish_reason:
            break
    stream.close()
    return text


# -- 8: a stream abandoned before its usage ---------------------------------------------------------------


def test_a_stream_abandoned_before_its_usage_is_billed_and_the_budget_holds(
    any_ledger: tt.Ledger, up: FakeUpstream
) -> None:
    ledger = any_ledger
    ledger.budgets.set("tiny", period="day", limit_usd="0.0001")
    with serving(ledger, up) as s:
        c = oai(s.url)
        for _ in range(40):
            up.push(Reply(text=TEXT, stream_chunks=3, chunk_delay_s=0.1))
            try:
                assert hang_up_after_the_content(c) == TEXT
            except openai.APIStatusError as e:
                assert e.status_code == 402  # the budget is spent: refused
                break
        events = until(lambda: [e for e in stored(ledger) if e.status == "cancelled"])
    assert events, "no call was recorded"
    assert all(e.usage_estimated and e.input_tokens > 0 and e.output_tokens > 0 for e in events)
    assert all(e.cost_usd is not None and e.cost_usd > 0 for e in events)
    assert len(events) < 40, "the budget never stopped the abandoned streams"
    ledger.budgets.flush()
    [st] = ledger.budgets.status()
    assert st.posted_usd == sum(e.cost_usd or 0 for e in events) and st.reserved_usd == 0


# -- 10: an upstream that cuts a stream ------------------------------------------------------------------


def test_an_upstream_cut_fails_the_callers_stream_as_the_provider_would(ledger: tt.Ledger, up: FakeUpstream) -> None:
    # chunk_delay_s: the text arrives before the cut (aiohttp drops what arrives with the cut itself)
    cut = Reply(text=TEXT, stream_chunks=3, cut_stream_after=3, chunk_delay_s=0.05)
    up.push(cut)
    direct = outcome(lambda: list(oai(up.url).chat.completions.create(model=GPT, messages=M, stream=True)))
    assert direct is not None and issubclass(direct, openai.APIConnectionError)
    up.push(cut)
    with serving(ledger, up) as s:
        pieces: list[str] = []

        def read() -> None:
            for chunk in oai(s.url).chat.completions.create(model=GPT, messages=M, stream=True):
                pieces.extend(ch.delta.content or "" for ch in chunk.choices)

        via = outcome(read)
    assert via is direct  # never a clean end of a truncated answer
    assert "".join(pieces) != TEXT
    [ev] = stored(ledger)
    assert (ev.status, ev.usage_estimated) == ("error", True)
    assert ev.input_tokens > 0 and ev.output_tokens > 0 and ev.cost_usd and ev.cost_usd > 0


# -- 9: a 200 that is not JSON --------------------------------------------------------------------------


def test_a_200_that_is_not_json_passes_through_and_is_an_error(ledger: tt.Ledger, up: FakeUpstream) -> None:
    up.push(Reply(raw_body=b"<html>upstream proxy says hi</html>"))
    with serving(ledger, up) as s:
        r = httpx2.post(s.url + "/v1/chat/completions", json={"model": GPT, "messages": M})
    assert (r.status_code, r.content) == (200, b"<html>upstream proxy says hi</html>")
    [ev] = stored(ledger)
    assert (ev.status, ev.note, ev.usage_estimated) == ("error", "unreadable_body", True)
    assert ev.cost_usd is not None and ev.cost_usd > 0  # never `ok` at $0


# -- 19: a caller who hangs up before the headers ------------------------------------------------------------


def test_hanging_up_before_the_headers_cancels_the_upstream_call_and_frees_the_hold(
    any_ledger: tt.Ledger, up: FakeUpstream
) -> None:
    ledger = any_ledger
    ledger.budgets.set("day", period="day", limit_usd=5)
    up.push(Reply(delay_s=30))
    with serving(ledger, up) as s:
        with pytest.raises(httpx2.TimeoutException):
            httpx2.post(
                s.url + "/v1/chat/completions", json={"model": GPT, "messages": M, "max_tokens": 9}, timeout=0.5
            )
        # the upstream sees the gateway hang up long before its 30 s reply (the read timeout is 300 s)
        assert until(lambda: up.disconnects), "the upstream call was left running"
        assert until(lambda: stored(ledger))
    [ev] = stored(ledger)
    assert ev.status == "cancelled"
    ledger.budgets.flush()
    assert live_holds(ledger) == 0
    [st] = ledger.budgets.status()
    assert st.reserved_usd == 0


# -- 11: durable before the last byte ------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_the_event_is_durable_before_the_last_byte(
    any_ledger: tt.Ledger, up: FakeUpstream, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    """A slow store (each commit 0.3 s): when the caller has the whole response, the call's event
    is already committed, without any flush."""
    ledger = any_ledger
    write = ledger.store.write_events

    def slow(rows: Any) -> int:
        time.sleep(0.3)
        return write(rows)

    monkeypatch.setattr(ledger.store, "write_events", slow)
    up.push(Reply(text=TEXT, input_tokens=12, output_tokens=3))
    with serving(ledger, up) as s:
        c = oai(s.url)
        if stream:
            text = "".join(
                ch.delta.content or ""
                for chunk in c.chat.completions.create(model=GPT, messages=M, stream=True)
                for ch in chunk.choices
            )
        else:
            text = c.chat.completions.create(model=GPT, messages=M).choices[0].message.content or ""
        # no flush: straight to the store
        rows = ledger.store.query(f"SELECT {', '.join(COLUMNS)} FROM events")
    assert text == TEXT
    [ev] = [from_row(r) for r in rows]
    assert (ev.status, ev.input_tokens, ev.output_tokens, ev.usage_estimated) == ("ok", 12, 3, False)


def test_with_the_store_down_the_event_is_spooled_before_the_last_byte(
    any_ledger: tt.Ledger, up: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = any_ledger
    assert ledger.spool is not None

    def down(rows: Any) -> int:
        time.sleep(0.3)
        raise StoreError("the store is down (test)")

    monkeypatch.setattr(ledger.store, "write_events", down)
    up.push(Reply(text=TEXT, input_tokens=12, output_tokens=3))
    with serving(ledger, up) as s:
        assert oai(s.url).chat.completions.create(model=GPT, messages=M).choices[0].message.content == TEXT
        spooled = sum(events for _, _, events, _ in ledger.spool.status())  # no flush
    assert spooled == 1
    monkeypatch.undo()
    [ev] = until(lambda: stored(ledger))  # replayed once the store is back
    assert (ev.status, ev.input_tokens) == ("ok", 12)
