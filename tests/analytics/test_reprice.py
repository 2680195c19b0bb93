"""`tokentrail reprice`: a what-if against hand-computed costs, and pricing unpriced calls by
audited adjustments that leave the old events untouched and the chain verifying."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tokentrail import audit, cli
from tokentrail.analytics import reports
from tokentrail.analytics.reprice import reprice_unpriced, what_if
from tokentrail.events import COLUMNS
from tokentrail.pricing import PriceBook

if not any(c.name == "reprice" for c in cli.app.registered_commands):
    cli._load()

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PRICES = """
[[prices]]
provider = "acme"
model = "house-llm"
input_mtok = "1.00"
output_mtok = "4.00"

[[prices]]
provider = "openai"
model = "cheap-mini"
input_mtok = "0.10"
output_mtok = "0.40"
"""


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "300"})


@pytest.fixture
def led(db_url: str, prices: PriceBook) -> Iterator[tt.Ledger]:
    ledger = tt.Ledger(db_url, prices=prices)
    yield ledger
    ledger.close()


@pytest.fixture
def price_file(tmp_path: Path) -> Path:
    p = tmp_path / "prices.toml"
    p.write_text(PRICES)
    return p


def seed(led: tt.Ledger) -> None:
    with tt.session(agent="triage-bot", team="ops", ledger=led):
        for i in range(3):
            led.record_llm(
                provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=100, ts=T0 + timedelta(minutes=i)
            )
    with tt.session(agent="writer", team="docs", ledger=led):
        led.record_llm(provider="acme", model="house-llm", input_tokens=10_000, output_tokens=2_000, ts=T0)
        led.record_llm(
            provider="acme", model="house-llm", input_tokens=500, output_tokens=50, ts=T0 + timedelta(hours=1)
        )
    led.flush()


def test_what_if_model_map_against_hand_computed_costs(led: tt.Ledger, price_file: Path) -> None:
    seed(led)
    book = PriceBook(overrides=str(price_file))
    diff = what_if(led.store, book, by=["agent"], model_map={"gpt-4o": "cheap-mini"})
    rows = {r.group[0][1]: r for r in diff.rows}
    bot = rows["triage-bot"]
    # gpt-4o at genai-prices: 3 × (1000 × $2.50 + 100 × $10) / 1M = $0.0105 recorded
    assert bot.old_nusd == 10_500_000
    # on cheap-mini: 3 × (1000 × 0.10 + 100 × 0.40) / 1M = $0.00042
    assert bot.new_nusd == 420_000 and bot.calls == 3
    writer = rows[
        "writer"
    ]  # unpriced when recorded, priced by the file: (10000 × $1 + 2000 × $4 + 500 × $1 + 50 × $4) / 1M = $0.0187
    assert writer.old_nusd == 0 and writer.unpriced_before == 2
    assert writer.new_nusd == 18_700_000 and writer.unpriced_after == 0
    assert diff.totals.new_nusd == 420_000 + 18_700_000
    assert reports.report(led.store).totals.unpriced_calls == 2  # nothing written


def test_reprice_unpriced_writes_adjustments_only(led: tt.Ledger, price_file: Path) -> None:
    seed(led)
    before = led.store.query(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY seq")
    book = PriceBook(overrides=str(price_file))
    dry = reprice_unpriced(led.store, book)
    assert (dry.priced, dry.cost_nusd, dry.adjustments) == (2, 18_700_000, [])
    done = reprice_unpriced(led.store, book, ledger=led)
    assert done.priced == 2 and len(done.adjustments) == 2
    after = led.store.query(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY seq")
    assert after[: len(before)] == before  # the old events untouched
    adjustments = led.store.query("SELECT cost_nusd, note FROM events WHERE kind = 'adjustment' ORDER BY seq")
    assert sorted(int(c) for c, _ in adjustments) == [700_000, 18_000_000]
    assert all(n.startswith("reprice: override/") for _, n in adjustments)
    assert reports.report(led.store).totals.cost_usd == Decimal("0.0292")
    assert audit.verify(led.store).ok
    again = reprice_unpriced(led.store, book, ledger=led)  # idempotent: adjusted calls are left alone
    assert again.priced == 0 and again.already == 2


def test_cli_reprice(led: tt.Ledger, price_file: Path) -> None:
    seed(led)
    url = led.store.url
    res = invoke(
        "reprice",
        "--db",
        url,
        "--dry-run",
        "--prices",
        str(price_file),
        "--model-map",
        "gpt-4o=cheap-mini",
        "-f",
        "json",
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["totals"]["repriced_usd"] == "0.01912" and data["unpriced_to_price"]["priced"] == 2
    plain = json.loads(invoke("reprice", "--db", url, "--dry-run", "--prices", "", "-f", "json").stdout)
    house = next(r for r in plain["rows"] if r["model"] == "house-llm")
    assert house["cost_usd"] is None and house["repriced_usd"] is None and house["delta_usd"] is None  # never $0
    table = invoke("reprice", "--db", url, "--dry-run", "--prices", str(price_file), "--by", "agent")
    assert table.exit_code == 0 and "triage-bot" in table.output
    bad = invoke("reprice", "--db", url, "--model-map", "gpt-4o=cheap-mini")
    assert bad.exit_code == 2 and "--dry-run" in bad.output
    led.close()
    res = invoke("reprice", "--db", url, "--prices", str(price_file))
    assert res.exit_code == 0 and "priced 2 unpriced calls" in res.output
