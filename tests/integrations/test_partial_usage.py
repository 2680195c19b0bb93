"""Every billed token is counted: a call the provider took but never reported usage for (a stream
the caller abandoned or the upstream cut before its usage, an unreadable 200) records an estimate
of what the provider billed, flagged `usage_estimated`, priced and posted to the budgets; never $0.
The flag is stored on both backends, counted in the reports, and covered by the audit chain
without breaking the chain of a ledger written before it existed."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

import tokentrail as tt
from tests._events import stored
from tokentrail import audit
from tokentrail.analytics import reports
from tokentrail.events import (
    COLUMNS,
    GENESIS_HASH,
    V1_COLUMNS,
    UsageEvent,
    canonical_bytes,
    chain_hash,
    to_row,
    upgraded_row,
)
from tokentrail.pricing import PriceBook
from tokentrail.spool import Batch, Spool, folder_for
from tokentrail.store import open_store
from tokentrail.store.rollup_check import rebuild_rollups
from tokentrail.testing import FakeUpstream, Reply, capture_events
from tokentrail.usage import Usage

GPT = "gpt-4o-mini"
CLAUDE = "claude-sonnet-4-6"
M: Any = [{"role": "user", "content": "What is the capital of France?"}]
TEXT = "w0 w1 w2 "


def oai(up: FakeUpstream, ledger: tt.Ledger) -> openai.OpenAI:
    return tt.wrap(openai.OpenAI(base_url=up.openai_base_url, api_key="sk-test", max_retries=0), ledger=ledger)


def read_all_content_then_hang_up(c: openai.OpenAI) -> str:
    """Read every content chunk (up to the one with finish_reason), then close: the usage chunk
    that follows it has not arrived yet (chunk_delay_s)."""
    text = ""
    stream = c.chat.completions.create(model=GPT, messages=M, stream=True)
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            if chunk.choices[0].finish_reason:
                break
    stream.close()
    return text


def test_openai_stream_abandoned_before_its_usage_is_estimated_priced_and_posted(
    up: FakeUpstream, any_ledger: tt.Ledger
) -> None:
    ledger = any_ledger
    ledger.budgets.set("day", period="day", limit_usd=1)
    up.push(Reply(text=TEXT, stream_chunks=3, chunk_delay_s=0.2))
    with oai(up, ledger) as c, capture_events() as events:
        assert read_all_content_then_hang_up(c) == TEXT  # the caller got the whole answer
    (ev,) = events
    assert (ev.status, ev.streamed, ev.usage_estimated) == ("cancelled", True, True)
    assert ev.input_tokens > 0  # estimated from the request, as the budget reservation counts it
    assert ev.output_tokens >= len(TEXT.split())  # at least a token a word of what was relayed
    assert ev.cost_usd is not None and ev.cost_usd > 0
    # stored with the flag, counted in the reports, and the chain covers it
    (row,) = stored(ledger)
    assert row.usage_estimated and row.cost_usd == ev.cost_usd
    rep = reports.report(ledger.store, by=["model"])
    assert rep.totals.estimated_calls == 1 and rep.rows[0].estimated_calls == 1
    assert audit.verify(ledger.store).ok
    # posted to the budget like any settled call: the estimate is spent, nothing stays reserved
    ledger.budgets.flush()
    [st] = ledger.budgets.status()
    assert st.posted_usd == ev.cost_usd and st.reserved_usd == 0


def test_anthropic_stream_abandoned_keeps_the_input_message_start_reported(
    up: FakeUpstream, ledger: tt.Ledger, prices: PriceBook
) -> None:
    up.push(Reply(text=TEXT, stream_chunks=3, chunk_delay_s=0.2, input_tokens=1500, cached_tokens=1000))
    c = tt.wrap(anthropic.Anthropic(base_url=up.anthropic_base_url, api_key="sk-ant", max_retries=0), ledger=ledger)
    with c, capture_events() as events, c.messages.stream(model=CLAUDE, max_tokens=100, messages=M) as s:
        text = ""
        for event in s:
            if event.type == "content_block_stop":
                break  # every text delta read; message_delta (the output count) not yet
            if event.type == "text":
                text += event.text
    assert text == TEXT
    (ev,) = events
    assert (ev.status, ev.usage_estimated) == ("cancelled", True)
    assert (ev.input_tokens, ev.cache_read_tokens) == (1500, 1000)  # what message_start said
    assert ev.output_tokens >= len(TEXT.split())
    assert (
        ev.cost_usd is not None
        and ev.cost_usd
        > tt.price(provider="anthropic", model=CLAUDE, book=prices, input_tokens=1500, cache_read_tokens=1000).total_usd
    )


def test_stream_cut_by_the_upstream_is_an_error_with_estimated_usage(up: FakeUpstream, ledger: tt.Ledger) -> None:
    up.push(Reply(text=TEXT, stream_chunks=3, cut_stream_after=3))  # the role chunk and two pieces
    with oai(up, ledger) as c, capture_events() as events, pytest.raises(openai.APIError):
        list(c.chat.completions.create(model=GPT, messages=M, stream=True))
    (ev,) = events
    assert (ev.status, ev.usage_estimated) == ("error", True)
    assert ev.input_tokens > 0 and ev.output_tokens > 0 and ev.cost_usd and ev.cost_usd > 0


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b"", b'["not", "an object"]'])
def test_a_200_that_is_not_json_is_an_error_never_ok_at_zero(up: FakeUpstream, ledger: tt.Ledger, body: bytes) -> None:
    up.push(Reply(raw_body=body))
    with oai(up, ledger) as c, capture_events() as events:
        try:
            c.chat.completions.create(model=GPT, messages=M)
        except openai.APIError:
            pass  # whatever the SDK makes of it, the call is metered
    (ev,) = events
    assert (ev.status, ev.note, ev.usage_estimated) == ("error", "unreadable_body", True)
    assert ev.output_tokens == 0 and ev.input_tokens > 0  # the prompt reached the provider
    assert ev.cost_usd is not None and ev.cost_usd > 0


def test_a_complete_call_is_not_estimated(up: FakeUpstream, ledger: tt.Ledger) -> None:
    up.push(Reply(text=TEXT, input_tokens=12, output_tokens=3))
    with oai(up, ledger) as c, capture_events() as events:
        list(c.chat.completions.create(model=GPT, messages=M, stream=True))
    (ev,) = events
    assert (ev.status, ev.usage_estimated, ev.input_tokens, ev.output_tokens) == ("ok", False, 12, 3)


# -- the flag in the store and the audit chain --------------------------------------------------------


def test_the_flag_enters_the_canonical_event_only_when_set() -> None:
    row = to_row(UsageEvent(provider="openai", model=GPT, input_tokens=5))
    assert (
        len(row) == len(COLUMNS) == V1_COLUMNS + 6
    )  # usage_estimated, the three of 0013, parent_session_id (0014), prefix_hash (0016)
    # an event without the flag hashes exactly as it did before the column existed
    assert canonical_bytes(row) == canonical_bytes(row[:V1_COLUMNS])
    assert upgraded_row(row[:V1_COLUMNS]) == row and upgraded_row(row) == row  # an older spool's row
    flagged = to_row(UsageEvent(provider="openai", model=GPT, input_tokens=5, usage_estimated=True))
    assert canonical_bytes(flagged) != canonical_bytes(flagged[:V1_COLUMNS])  # tampering with it shows


def test_a_ledger_written_before_the_column_still_verifies(
    db_url: str, monkeypatch: pytest.MonkeyPatch, prices: PriceBook
) -> None:
    """An event chained by the previous schema (41 columns), then the migration that adds
    usage_estimated: the old chain verifies, and new events, flagged or not, chain onto it."""
    import tokentrail.store.pg_schema as pg_module
    import tokentrail.store.sqlite as sqlite_module

    module = pg_module if db_url.startswith("postgresql") else sqlite_module
    with monkeypatch.context() as m:
        m.setattr(module, "MIGRATIONS", [mig for mig in module.MIGRATIONS if mig[0] < "0010"])
        old = open_store(db_url)
        row = to_row(UsageEvent(provider="openai", model=GPT, input_tokens=5))[:V1_COLUMNS]
        h = chain_hash(1, GENESIS_HASH, row)
        p = old.dialect.param
        cols = ", ".join(COLUMNS[:V1_COLUMNS])
        marks = ", ".join([p] * (V1_COLUMNS + 3))
        old.execute_write(
            f"INSERT INTO events (seq, {cols}, prev_hash, hash) VALUES ({marks})", (1, *row, GENESIS_HASH, h)
        )
        if old.dialect.name == "postgresql":
            old.execute_write("INSERT INTO event_ids (event_id) VALUES (%s)", (row[0],))
            old.execute_write("UPDATE chain_head SET seq = 1, hash = %s WHERE id = 1", (h,))
        else:
            old.execute_write("INSERT INTO chain_head (id, seq, hash) VALUES (1, 1, ?)", (h,))
        old.close()
    with tt.Ledger(db_url, prices=prices) as led:  # migrates to 0010 and on
        # the row went in by hand, past the rollups: rebuild them, so verify judges the chain alone
        rebuild_rollups(led.store)
        first = audit.verify(led.store)
        assert first.ok and first.count == 1, (first.problem, first.rollups)
        led.record(led.build_call(provider="openai", model=GPT, usage=None, status="error", usage_estimated=True))
        led.record_llm(provider="openai", model=GPT, input_tokens=3)
        events = stored(led)
        assert [e.usage_estimated for e in events] == [False, True, False]
        result = audit.verify(led.store)
        assert result.ok and result.count == 3, result.problem


def test_a_spool_written_before_the_column_replays(db_url: str, tmp_path: Path, prices: PriceBook) -> None:
    """Rows an older version spooled (41 columns) replay into the new schema unchanged."""
    old_row = to_row(UsageEvent(provider="openai", model=GPT, input_tokens=7))[:V1_COLUMNS]
    folder = folder_for(tmp_path, "old")
    dead = Spool(folder)
    dead.append(Batch([old_row], [], []))
    dead.close()  # as if its process had died: the file stays for the next one
    store = open_store(db_url)
    try:
        assert Spool(folder).replay(store) == 1
        (back,) = store.query("SELECT event_id, input_tokens, usage_estimated FROM events")
        assert (str(back[0]), back[1], back[2]) == (old_row[0], 7, 0)
        assert audit.verify(store).ok
    finally:
        store.close()


def test_estimated_calls_in_the_cli_report_and_sessions(any_ledger: tt.Ledger) -> None:
    from typer.testing import CliRunner

    from tokentrail import cli

    if not cli.app.registered_commands:
        cli._load()
    led = any_ledger
    with tt.session("agent-1", session_id="s-1", ledger=led):
        estimated = led.build_call(
            provider="openai",
            model=GPT,
            usage=Usage(input_tokens=40, output_tokens=9),
            status="cancelled",
            usage_estimated=True,
        )
        led.record(estimated)
        led.record_llm(provider="openai", model=GPT, input_tokens=3)
    led.flush()
    runner = CliRunner()
    out = runner.invoke(cli.app, ["report", "--db", led.url, "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["totals"]["estimated_calls"] == 1
    table = runner.invoke(cli.app, ["report", "--db", led.url])
    assert "estimated" in table.stdout
    csv = runner.invoke(cli.app, ["sessions", "--db", led.url, "--format", "csv"])
    header, line = csv.stdout.strip().splitlines()[:2]
    assert dict(zip(header.split(","), line.split(","), strict=False))["estimated_calls"] == "1"
    assert Decimal(0) < (reports.report(led.store).totals.cost_usd or 0)


def test_the_output_estimate_never_passes_the_requests_max_tokens(up: FakeUpstream, ledger: tt.Ledger) -> None:
    """Counting bytes overestimates; the provider bills at most max_tokens, and the estimate
    (posted to the budgets) must not pass what the reservation allowed."""
    up.push(Reply(text="a much longer answer than two tokens", stream_chunks=3, chunk_delay_s=0.2))
    with oai(up, ledger) as c, capture_events() as events:
        stream = c.chat.completions.create(model=GPT, messages=M, stream=True, max_tokens=2)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].finish_reason:
                break
        stream.close()
    (ev,) = events
    assert (ev.status, ev.usage_estimated, ev.output_tokens) == ("cancelled", True, 2)
