"""`tokentrail export`: FOCUS 1.2 / CSV / Parquet lines whose costs add up to the ledger's total
for the window to the nano-dollar, on both backends, over odd windows and time zones."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tokentrail import cli
from tokentrail.analytics import focus, reports
from tokentrail.analytics.export import lines, share, split_group
from tokentrail.analytics.export_write import write
from tokentrail.corrections import adjust
from tokentrail.pricing import PriceBook

if not any(c.name == "export" for c in cli.app.registered_commands):
    cli._load()

T0 = datetime(2026, 3, 30, 21, 7, tzinfo=UTC)  # near a month end and a DST change in Europe


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "300"})


@pytest.fixture
def led(db_url: str, prices: PriceBook) -> Iterator[tt.Ledger]:
    ledger = tt.Ledger(db_url, prices=prices)
    yield ledger
    ledger.close()


def seed(led: tt.Ledger) -> None:
    """Priced calls with cache use over two days and many teams, a tool run, an unpriced model, an adjustment."""
    for i in range(60):
        ts = T0 + timedelta(minutes=37 * i)
        team = ("legal", "platform", "search", None)[i % 4]
        with tt.session(
            team=team, agent=f"bot-{i % 3}", customer="acme" if i % 2 else None, tags={"env": "prod"}, ledger=led
        ):
            led.record_llm(
                provider="openai",
                model=("gpt-4o", "gpt-4o-mini")[i % 2],
                input_tokens=1000 + 7 * i,
                output_tokens=300 + i,
                cache_read_tokens=128 * (i % 3),
                ts=ts,
            )
            if i % 10 == 0:
                led.record_llm(provider="acme", model="house-llm", input_tokens=10, output_tokens=1, ts=ts)
            if i % 15 == 0:
                led.record_tool("web_search", {"q": i}, cost_usd="0.002")
    led.flush()
    first = led.store.query("SELECT event_id FROM events WHERE model = 'gpt-4o' ORDER BY seq")[0][0]
    adjust(led, str(first), cost_usd="-0.000001234", reason="credit")


def ledger_total(led: tt.Ledger, since: datetime | None, until: datetime | None) -> Decimal:
    rep = reports.report(led.store, since=since, until=until, rollup=False)
    return rep.totals.cost_usd or Decimal(0)


WINDOWS = [
    (None, None, None),
    (T0 + timedelta(minutes=13), T0 + timedelta(hours=29, minutes=41), "Asia/Kathmandu"),
    (T0 - timedelta(days=1), T0 + timedelta(hours=7, seconds=3), "America/St_Johns"),
    (T0 + timedelta(hours=2), None, "Europe/Paris"),
    (T0, T0 + timedelta(days=3), "America/Los_Angeles"),  # local days across the month end
]


@pytest.mark.parametrize("window", range(len(WINDOWS)))
@pytest.mark.parametrize("fmt", ["focus", "csv", "parquet", "focus-parquet"])
def test_export_totals_equal_the_ledger(led: tt.Ledger, fmt: str, window: int, tmp_path: Path) -> None:
    seed(led)
    since, until, tz = WINDOWS[window]
    out = tmp_path / f"x.{fmt}"
    with out.open("wb") as f:
        written = write(
            lines(led.store, since=since, until=until, tz=tz, granularity="hour" if window < 3 else "day"), fmt, f
        )
    rows = read_back(out, fmt)
    cost = "BilledCost" if fmt.startswith("focus") else "cost_usd"
    total = sum((Decimal(str(r[cost])) for r in rows if r[cost] not in (None, "")), Decimal(0))
    assert total == ledger_total(led, since, until)
    assert len(rows) == written.rows
    if fmt.startswith("focus"):
        assert written.skipped.total > 0 or (window == 2 and not written.skipped.total)
        for r in rows:
            assert focus.column_problems(r) == [], r
    else:  # unpriced rows keep a null cost
        unpriced = [r for r in rows if str(r["unpriced"]).lower() == "true"]
        assert all(r["cost_usd"] in (None, "") for r in unpriced)


def read_back(path: Path, fmt: str) -> list[dict[str, Any]]:
    if fmt.endswith("parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if fmt == "focus-parquet":
            assert str(table.schema.field("BilledCost").type) == "decimal128(38, 9)"
            assert not table.schema.field("BilledCost").nullable
            rows = table.to_pylist()
            for r in rows:  # typed columns back to the text forms the checks read
                for k in ("ChargePeriodStart", "ChargePeriodEnd", "BillingPeriodStart", "BillingPeriodEnd"):
                    r[k] = r[k].strftime("%Y-%m-%dT%H:%M:%SZ")
            return rows
        return table.to_pylist()
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_focus_rows_carry_ai_usage(led: tt.Ledger, tmp_path: Path) -> None:
    seed(led)
    buf = io.BytesIO()
    write(lines(led.store, since=None, until=None), "focus", buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue().decode())))
    assert set(focus.NAMES) <= set(rows[0])
    classes = {r["x_TokenClass"] for r in rows}
    assert {"input", "cached_input", "output", "tool", "adjustment"} <= classes
    usage = next(r for r in rows if r["x_TokenClass"] == "cached_input")
    assert usage["ChargeCategory"] == "Usage" and usage["ConsumedUnit"] == "Tokens"
    assert usage["ServiceCategory"] == "AI and Machine Learning" and usage["ProviderName"] == "OpenAI"
    assert usage["SkuId"].startswith("openai/gpt-4o") and usage["SkuId"].endswith("/cached_input")
    assert usage["SkuPriceId"].endswith("/cached_input") and usage["PricingUnit"] == "1M Tokens"
    tags = json.loads(usage["Tags"])
    assert tags["env"] == "prod" and "agent" in tags
    adj = [r for r in rows if r["ChargeCategory"] == "Adjustment"]
    assert [Decimal(r["BilledCost"]) for r in adj] == [Decimal("-0.000001234")]
    assert not any(r["x_Unpriced"] == "true" for r in rows)
    assert "house-llm" not in buf.getvalue().decode()  # unpriced: left out of FOCUS


def test_include_unpriced_marks_them(led: tt.Ledger) -> None:
    seed(led)
    buf = io.BytesIO()
    written = write(lines(led.store, since=None, until=None), "focus", buf, include_unpriced=True)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue().decode())))
    unpriced = [r for r in rows if r["x_Unpriced"] == "true"]
    assert unpriced and all(r["SkuId"].startswith("acme/house-llm") and Decimal(r["BilledCost"]) == 0 for r in unpriced)
    assert written.skipped.total == 0


def test_cli_export_says_what_it_left_out(led: tt.Ledger, tmp_path: Path) -> None:
    seed(led)
    out = tmp_path / "f.csv"
    res = invoke("export", "--db", led.store.url, "-f", "focus", "-o", str(out))
    assert res.exit_code == 0, res.output
    assert "6 unpriced calls" in res.output and "acme/house-llm" in res.output
    bad = invoke("export", "--db", led.store.url, "-f", "xml")
    assert bad.exit_code == 2 and "--format" in bad.output


def test_share_is_exact_and_deterministic() -> None:
    assert share(10, [1, 1, 1]) == [4, 3, 3]
    assert share(-10, [1, 1, 1]) == [-4, -3, -3]
    assert share(7, [0, 0]) == [7, 0]
    assert sum(share(1_000_000_007, [Decimal("0.3"), Decimal("0.7"), 3])) == 1_000_000_007


def test_split_group_by_unit_prices() -> None:
    sums = {
        "events": 2,
        "input_tokens": 3000,
        "output_tokens": 1000,
        "cache_read_tokens": 1000,
        "cache_write_tokens": 0,
    }
    prices = {"input_mtok": "2.5", "cache_read_mtok": "1.25", "output_mtok": "10"}
    # input 2000 × 2.5 = 5000, cached 1000 × 1.25 = 1250, output 1000 × 10 = 10000 (weights)
    parts = split_group("llm", sums, 16_250, prices)
    assert [(c, cost) for c, _, _, cost, _ in parts] == [("input", 5000), ("cached_input", 1250), ("output", 10000)]
    assert [calls for _, calls, _, _, _ in parts] == [2, 0, 0]


def test_a_tool_run_without_cost_is_no_charge_and_not_unpriced(ledger: tt.Ledger) -> None:
    ledger.record_tool("fetch", {"u": 1})  # no cost given: not provider work, not an unpriced call
    ledger.flush()
    buf = io.BytesIO()
    written = write(lines(ledger.store, since=None, until=None), "focus", buf)
    assert written.skipped.total == 0 and written.rows == 0
    plain = io.BytesIO()
    assert write(lines(ledger.store, since=None, until=None), "csv", plain).unpriced_rows == 0


def test_parquet_without_pyarrow_names_the_extra(ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from tokentrail.exceptions import ConfigError

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ConfigError, match=r"tokentrail\[export\]"):
        write(iter(()), "parquet", io.BytesIO())
