"""The ledger: priced events in the caller's thread, durable after flush(), idempotent,
clear errors, and it never drops what it accepted."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

import tokentrail as tt
from tests.unprivileged import run_as_nobody
from tokentrail.events import UsageEvent, new_event_id
from tokentrail.exceptions import ConfigError, FlushTimeout, InvalidUsage, StoreError
from tokentrail.pricing import PriceBook
from tokentrail.testing import capture_events


def count(ledger: tt.Ledger, where: str = "1=1") -> int:
    ledger.flush()
    return ledger.store.query(f"SELECT count(*) FROM events WHERE {where}")[0][0]


def test_record_llm_prices_and_returns_the_event(ledger: tt.Ledger) -> None:
    e = ledger.record_llm(
        provider="openai",
        model="gpt-4o",
        input_tokens=1000,
        output_tokens=500,
        cache_read_tokens=200,
        tool_calls=[("call_1", "search", {"q": "x"})],
    )
    expected = tt.price(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=500, cache_read_tokens=200)
    assert expected is not None
    assert e.cost_usd == expected.total_usd
    assert e.price_source == "genai-prices" and e.price_version == expected.price_version
    assert e.unit_prices and e.unit_prices["input_mtok"] == "2.5"
    assert e.event_id.count("-") == 4 and e.event_id[14] == "7"  # UUIDv7, generated here
    assert e.ts.tzinfo is not None and e.ts.utcoffset().total_seconds() == 0
    assert e.tool_calls[0].name == "search" and e.tool_calls[0].id == "call_1"
    stored = ledger.store.get_event(e.event_id) if count(ledger) else None
    assert stored is not None


def test_unknown_model_is_unpriced_stored_null_and_warned_once(
    ledger: tt.Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tokentrail"):
        for _ in range(3):
            e = ledger.record_llm(provider="acme", model="acme-secret-model", input_tokens=10)
    assert e.cost_usd is None and e.unpriced
    assert sum("acme-secret-model" in r.message for r in caplog.records) == 1
    assert count(ledger, "cost_nusd IS NULL") == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_tokens": -1},
        {"input_tokens": 10, "cache_read_tokens": 11},
        {"input_tokens": "10"},
        {"output_tokens": 5, "reasoning_tokens": 6},
        {"input_tokens": 10**12},
        {"kind": "tool"},
        {"model": ""},
    ],
)
def test_record_llm_refuses_impossible_input(ledger: tt.Ledger, kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"provider": "openai", "model": "gpt-4o", **kwargs}
    with pytest.raises(InvalidUsage):
        ledger.record_llm(**args)  # type: ignore[arg-type]
    assert count(ledger) == 0


@pytest.mark.parametrize("cost", [-0.01, float("nan"), "ten", True, 10**9])
def test_record_tool_refuses_bad_cost(ledger: tt.Ledger, cost: object) -> None:
    with pytest.raises(InvalidUsage):
        ledger.record_tool("web_search", {"q": "x"}, cost_usd=cost)  # type: ignore[arg-type]


def test_tool_run_links_to_the_model_call_that_asked_for_it(ledger: tt.Ledger) -> None:
    with tt.session(agent="a"):
        asked = ledger.record_llm(
            provider="openai", model="gpt-4o-mini", input_tokens=5, tool_calls=[("call_9", "lookup", '{"id": 3}')]
        )
        ran = ledger.record_tool("lookup", {"id": 3}, cost_usd="0.002", latency_ms=12.5)
        other = ledger.record_tool("lookup", {"id": 4})
    assert (ran.kind, ran.tool_call_id, ran.parent_span_id) == ("tool", "call_9", asked.span_id)
    assert ran.tool_args_hash == asked.tool_calls[0].args_hash
    assert ran.cost_usd == Decimal("0.002")
    assert other.tool_call_id is None and other.parent_span_id != asked.span_id


def test_tool_decorator_records_latency_and_errors(ledger: tt.Ledger) -> None:
    @tt.tool
    def add(a: int, b: int) -> int:
        return a + b

    @tt.tool(name="explode")
    def boom() -> None:
        raise RuntimeError("no")

    with tt.session(agent="a", ledger=ledger), capture_events() as events:
        assert add(2, b=3) == 5
        with pytest.raises(RuntimeError):
            boom()
    assert [(e.tool_name, e.status) for e in events] == [("add", "ok"), ("explode", "error")]
    assert events[0].latency_ms is not None and events[0].latency_ms >= 0


def test_reinserting_an_event_is_idempotent(ledger: tt.Ledger) -> None:
    e = ledger.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=3)
    ledger.record(e)
    ledger.flush()
    ledger.record(e)
    assert count(ledger) == 1
    assert ledger.store.query("SELECT sum(calls) FROM rollup_hourly")[0][0] == 1


def test_events_are_durable_after_flush_even_if_the_process_dies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    script = textwrap.dedent(
        f"""
        import os, tokentrail as tt
        led = tt.Ledger({url!r})
        ids = [led.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=i + 1).event_id for i in range(500)]
        led.flush()
        print(",".join(ids), flush=True)
        os._exit(0)  # no atexit, no close: only what flush() made durable survives
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    ids = out.strip().split(",")
    with tt.Ledger(url) as fresh:
        stored = {r[0] for r in fresh.store.query("SELECT event_id FROM events")}
    assert stored == set(ids)


def test_flush_times_out_honestly_while_the_store_is_locked_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    led = tt.Ledger(f"sqlite:///{path}", prices=PriceBook(overrides=""))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        for i in range(50):
            led.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=i + 1)
        with pytest.raises(FlushTimeout, match="not durable"):
            led.flush(timeout=0.5)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    led.flush(timeout=30)
    assert led.store.query("SELECT count(*), sum(input_tokens) FROM events")[0] == (50, sum(range(1, 51)))
    led.close()


def test_unwritable_path_names_the_path(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    tmp_path.chmod(0o755)
    locked.chmod(0o755)  # owned by root: 'nobody' may read it but not create a file in it
    target = locked / "ledger.db"
    outcome = run_as_nobody(lambda: tt.Ledger(f"sqlite:///{target}"))
    assert isinstance(outcome, StoreError), outcome
    assert str(target) in str(outcome)


def test_bad_database_url_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="mysql"):
        tt.Ledger("mysql://x")
    with pytest.raises(ConfigError, match="sqlite:///"):
        tt.Ledger("sqlite://relative.db")


def test_a_directory_in_the_way_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match=r"dir\.db"):
        tt.Ledger(f"sqlite:///{tmp_path / 'dir.db'}")


def test_a_forked_child_records_through_its_own_writer(ledger: tt.Ledger) -> None:
    ledger.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=1)
    ledger.flush()
    pid = os.fork()
    if pid == 0:  # child
        try:
            ledger.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=2)
            ledger.flush(timeout=10)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert ledger.store.query("SELECT sum(input_tokens) FROM events")[0][0] == 3


def test_configure_sets_the_default_and_closes_the_previous(tmp_path: Path) -> None:
    first = tt.configure(db=f"sqlite:///{tmp_path / 'a.db'}")
    assert tt.get_ledger() is first
    e = tt.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=4)
    second = tt.configure(db=f"sqlite:///{tmp_path / 'b.db'}")
    try:
        assert tt.get_ledger() is second
        with tt.Ledger(f"sqlite:///{tmp_path / 'a.db'}") as check:
            assert check.store.get_event(e.event_id) is not None  # the first was flushed on close
        with pytest.raises(ConfigError):
            tt.configure(db="sqlite:///x.db", ledger=second)
    finally:
        second.close()


def test_default_ledger_comes_from_tokentrail_db(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    script = (
        "import tokentrail as tt\n"
        "tt.record_llm(provider='openai', model='gpt-4o-mini', input_tokens=1)\n"
        "print(tt.get_ledger().url)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TOKENTRAIL_DB": url},
    ).stdout
    assert out.strip().endswith("env.db")
    with tt.Ledger(url) as check:  # flushed at exit
        assert check.store.query("SELECT count(*) FROM events")[0][0] == 1


def test_event_row_round_trip(ledger: tt.Ledger) -> None:
    with tt.session(agent="a", tags={"k": "v"}):
        e = ledger.record_llm(
            provider="openai",
            model="gpt-4o",
            input_tokens=1234,
            output_tokens=56,
            tool_calls=[("c", "f", {"a": 1})],
            latency_ms=12.25,
        )
    ledger.flush()
    from tokentrail.events import from_row

    row = ledger.store.get_event(e.event_id)
    assert row is not None and from_row(row) == e


def test_outcomes_are_stored(ledger: tt.Ledger) -> None:
    with tt.session(agent="a", ledger=ledger) as s:
        s.outcome("contract_reviewed")
        s.outcome("page_fixed", count=2)
        with pytest.raises(InvalidUsage):
            s.outcome("", count=0)
    ledger.flush()
    assert ledger.store.query("SELECT name, count, session_id FROM outcomes ORDER BY name") == [
        ("contract_reviewed", 1, s.session_id),
        ("page_fixed", 2, s.session_id),
    ]


def test_record_after_close_is_refused(tmp_path: Path) -> None:
    led = tt.Ledger(f"sqlite:///{tmp_path / 'c.db'}")
    led.close()
    with pytest.raises(ConfigError, match="closed"):
        led.record(UsageEvent(event_id=new_event_id()))


def test_record_llm_takes_a_known_cost_and_checks_the_event_id(ledger: tt.Ledger) -> None:
    e = ledger.record_llm(provider="acme", model="house-llm", input_tokens=10, cost_usd="0.0042")
    assert (e.cost_usd, e.price_source) == (Decimal("0.0042"), "caller")
    with pytest.raises(InvalidUsage, match="not a UUID"):
        ledger.record_llm(provider="openai", model="gpt-4o", event_id="order-17")
    with pytest.raises(InvalidUsage, match="cost_usd"):
        ledger.record_llm(provider="openai", model="gpt-4o", cost_usd="-1")
