"""`tokentrail copy`: a whole SQLite ledger into another store (PostgreSQL, or SQLite), twice."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import tokentrail as tt
from tokentrail.cli import copy as copy_cli
from tokentrail.events import GENESIS_HASH, chain_hash
from tokentrail.pricing import PriceBook
from tokentrail.store import open_store
from tokentrail.store.economics import OUTCOME_COLUMNS
from tokentrail.store.rollup_columns import ROLLUP_DIMENSIONS, ROLLUP_MEASURES

OUTCOME_COLS = ", ".join(OUTCOME_COLUMNS)
ROLLUP_COLS = ", ".join(("hour_us", *ROLLUP_DIMENSIONS, *ROLLUP_MEASURES))


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """(a group, so that `copy` is a subcommand as in the real CLI)"""

    copy_cli.register(app)
    return app


@pytest.fixture
def source(tmp_path: Path, prices: PriceBook) -> Iterator[str]:
    """An SQLite ledger with model calls, tool calls, errors, an unpriced model and outcomes."""
    url = f"sqlite:///{tmp_path / 'source.db'}"
    ledger = tt.Ledger(url, prices=prices)
    for s in range(12):
        with tt.session(agent=f"agent-{s % 3}", team=("legal", "support")[s % 2], ledger=ledger, tags={"n": str(s)}):
            for i in range(40):
                ledger.record_llm(
                    provider="openai", model="gpt-4o", input_tokens=500 + i, output_tokens=i, cache_read_tokens=i % 5
                )
            ledger.record_llm(provider="anthropic", model="claude-sonnet-4-6", input_tokens=100, status="error")
            ledger.record_llm(provider="acme", model="unknown-model", input_tokens=10)
            ledger.record_tool("web_search", {"q": s}, cost_usd=Decimal("0.002"), latency_ms=12.5)
            tt.current().session.outcome("contract_reviewed")  # type: ignore[union-attr]
    ledger.close()
    yield url


def _chain(store: Any) -> list[tuple[Any, ...]]:
    return [(seq, prev, h, tuple(row)) for seq, prev, h, row in store.chain()]


def _snapshot(url: str) -> dict[str, Any]:
    store = open_store(url)
    try:
        return {
            "chain": _chain(store),
            "outcomes": sorted(tuple(r) for r in store.query(f"SELECT {OUTCOME_COLS} FROM outcomes")),
            "rollup": sorted(
                tuple(int(v) if isinstance(v, Decimal) else v for v in r)
                for r in store.query(f"SELECT {ROLLUP_COLS} FROM rollup_hourly")
            ),
        }
    finally:
        store.close()


def test_copy_twice_into_another_backend(cli: typer.Typer, source: str, db_url: str) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["copy", "--from", source, "--to", db_url])
    assert first.exit_code == 0, first.output
    assert "Copied 516 event(s) and 12 outcome(s)" in first.output
    assert "already there" not in first.output

    src, dst = _snapshot(source), _snapshot(db_url)
    assert len(src["chain"]) == 516
    # Into an empty ledger the re-chained links come out identical, row for row.
    assert dst["chain"] == src["chain"]
    assert dst["outcomes"] == src["outcomes"]
    assert dst["rollup"] == src["rollup"]

    again = runner.invoke(cli, ["copy", "--from", source, "--to", db_url, "--batch", "7"])
    assert again.exit_code == 0, again.output
    assert "Copied 0 event(s) and 0 outcome(s)" in again.output
    assert "516 event(s) and 12 outcome(s) were already there" in again.output
    assert _snapshot(db_url) == dst


def test_copy_into_a_ledger_that_has_events_rechains_them(
    cli: typer.Typer, source: str, db_url: str, prices: PriceBook
) -> None:
    ledger = tt.Ledger(db_url, prices=prices)
    own = ledger.record_llm(provider="openai", model="gpt-4o", input_tokens=1)
    ledger.close()
    result = CliRunner().invoke(cli, ["copy", "--from", source, "--to", db_url])
    assert result.exit_code == 0, result.output
    dst = _snapshot(db_url)
    assert dst["chain"][0][3][0] == own.event_id
    assert len(dst["chain"]) == 517
    prev = GENESIS_HASH
    for seq, prev_hash, h, row in dst["chain"]:
        assert prev_hash == prev and h == chain_hash(seq, prev_hash, row)
        prev = h


def test_a_broken_source_chain_is_not_laundered(cli: typer.Typer, source: str, tmp_path: Path) -> None:
    path = source.removeprefix("sqlite:///")
    with sqlite3.connect(path) as c:
        c.execute("DROP TRIGGER events_no_update")
        c.execute("UPDATE events SET input_tokens = 1 WHERE seq = 100")
    dest = f"sqlite:///{tmp_path / 'dest.db'}"
    result = CliRunner().invoke(cli, ["copy", "--from", source, "--to", dest])
    assert result.exit_code == 1  # a finding about the ledger, like a failed `audit verify`
    assert "broken at seq 100" in result.output
    assert len(_snapshot(dest)["chain"]) == 99
    forced = CliRunner().invoke(cli, ["copy", "--from", source, "--to", dest, "--no-verify"])
    assert forced.exit_code == 0, forced.output
    assert len(_snapshot(dest)["chain"]) == 516


def test_a_missing_source_is_an_error(cli: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["copy", "--from", f"sqlite:///{tmp_path / 'nope.db'}", "--to", f"sqlite:///{tmp_path / 'x.db'}"]
    )
    assert result.exit_code == 2
    assert "no ledger at" in result.output
    assert not (tmp_path / "nope.db").exists()


def test_budgets_keys_alerts_and_quarantine_travel_with_the_ledger(tmp_path: Path) -> None:
    from tokentrail.cli.copy import copy_ledger
    from tokentrail.store import open_store

    src_url, dst_url = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    with tt.Ledger(src_url) as led:
        led.budgets.set("legal-monthly", scope={"team": "legal"}, period="month", limit_usd=500)
        led.quarantine("api", "bad event", "{}")
        led.flush()
    src, dst = open_store(src_url), open_store(dst_url)
    try:
        first = copy_ledger(src, dst)
        again = copy_ledger(src, dst)
    finally:
        src.close()
        dst.close()
    assert (first["budgets"], first["quarantine"]) == (1, 1)
    assert (again["budgets"], again["quarantine"]) == (0, 0)  # twice: nothing twice
    with tt.Ledger(dst_url) as led:
        assert [b.name for b in led.budgets.list()] == ["legal-monthly"]
