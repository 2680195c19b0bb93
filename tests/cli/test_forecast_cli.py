"""`tokentrail forecast` on a ledger, on both backends: --scope, --by, --as-of, table and json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tokentrail import cli
from tokentrail.analytics.forecast_ledger import daily_spend, forecast
from tokentrail.pricing import PriceBook

ENV = {"COLUMNS": "200", "TOKENTRAIL_DB": None, "TOKENTRAIL_PRICES": None}
FIRST = date(2026, 1, 1)
DAYS = 70  # Jan 1 .. Mar 11
PER_DAY = {"legal": 2, "cx": 1}  # dollars a day

if not any(c.name == "forecast" for c in cli.app.registered_commands):
    cli._load()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.app, list(args), env=ENV)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def history(db_url: str) -> Iterator[str]:
    with tt.Ledger(db_url, prices=PriceBook(overrides="")) as led:
        for i in range(DAYS):
            day = FIRST + timedelta(days=i)
            for team, usd in PER_DAY.items():
                with tt.session(team=team, agent=f"{team}-bot", ledger=led):
                    led.record_llm(
                        provider="openai",
                        model="gpt-4o",
                        input_tokens=10,
                        output_tokens=1,
                        cost_usd=str(usd),
                        ts=datetime(day.year, day.month, day.day, 12, tzinfo=UTC),
                    )
        led.flush()
    yield db_url


def test_json_projects_the_month_from_the_days_before_as_of(history: str) -> None:
    code, out, err = run("forecast", "--as-of", "2026-03-11", "--format", "json", "--db", history)
    assert code == 0, err
    data = json.loads(out)
    (f,) = data["forecasts"]
    assert (f["period_start"], f["period_end"], f["as_of"]) == ("2026-03-01", "2026-04-01", "2026-03-11")
    assert float(f["spent_usd"]) == pytest.approx(30.0)  # Mar 1..10 at $3 a day
    assert float(f["projected_usd"]) == pytest.approx(93.0, rel=0.02)  # 31 days at $3
    assert float(f["low_usd"]) <= float(f["projected_usd"]) <= float(f["high_usd"])
    assert float(f["naive_usd"]) == pytest.approx(93.0)
    assert len(f["days"]) == 21


def test_scope_and_by(history: str) -> None:
    code, out, err = run(
        "forecast", "--as-of", "2026-03-11", "--scope", "team=legal", "--format", "json", "--db", history
    )
    assert code == 0, err
    (f,) = json.loads(out)["forecasts"]
    assert float(f["projected_usd"]) == pytest.approx(62.0, rel=0.02)
    code, out, err = run("forecast", "--as-of", "2026-03-11", "--by", "team", "--db", history)
    assert code == 0, err
    assert "legal" in out and "cx" in out and "projected" in out
    lines = [line for line in out.splitlines() if "legal" in line or "cx" in line]
    assert lines[0].strip().startswith("legal")  # the largest first


def test_as_of_ignores_the_data_after_it(history: str) -> None:
    from tokentrail.store import open_store

    store = open_store(history)
    try:
        first, series = daily_spend(store, until=date(2026, 2, 1), days=31)
        assert first == FIRST and series[None] == [3.0] * 31
        (f,) = forecast(store, as_of=date(2026, 2, 1))
        assert f.projection.spent == 0.0  # the first of the month: nothing seen yet
        assert f.projection.expected == pytest.approx(84.0, rel=0.02)  # February: 28 days at $3
        (scoped,) = forecast(store, as_of=date(2026, 3, 11), scope={"team": "cx"}, where={"team": "legal"})
        assert scoped.projection.expected == 0.0  # a scope is AND-ed: legal inside cx is nothing
    finally:
        store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--as-of", "yesterday"), "--as-of"),
        (("--by", "day"), "--by day"),
        (("--by", "nonsense"), "nonsense"),
        (("--scope", "team"), "KEY=VALUE"),
        (("--format", "csv"), "csv"),
    ],
)
def test_usage_errors_exit_2(sqlite_url: str, args: tuple[str, ...], message: str) -> None:
    code, _, err = run("forecast", *args, "--db", sqlite_url)
    assert code == 2
    assert message in err


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31"])
def test_as_of_out_of_range_is_a_usage_error(sqlite_url: str, day: str) -> None:
    code, _, err = run("forecast", "--as-of", day, "--db", sqlite_url)
    assert code == 2
    assert "as-of" in err


def test_by_fits_only_the_largest_groups(history: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tokentrail.analytics import forecast_ledger
    from tokentrail.store import open_store

    monkeypatch.setattr(forecast_ledger, "MAX_GROUPS", 1)
    store = open_store(history)
    try:
        (only,) = forecast(store, as_of=date(2026, 3, 11), by="team")
        assert only.group == "legal"
    finally:
        store.close()
