"""Projected exhaustion of budgets: in `budget status`, the API's rows, and a once-per-period
forecast alert through the alert channels; on both backends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tokentrail import cli
from tokentrail.analytics import budget_forecast
from tokentrail.analytics.budget_forecast import project_status
from tokentrail.budgets.alerts import CallbackSink, list_alerts
from tokentrail.budgets.definitions import Budget
from tokentrail.budgets.status import BudgetStatus
from tokentrail.pricing import PriceBook

ENV = {"COLUMNS": "250", "TOKENTRAIL_DB": None, "TOKENTRAIL_PRICES": None}
if not any(c.name == "forecast" for c in cli.app.registered_commands):
    cli._load()


def _history(led: tt.Ledger, team: str, last_day: date, days: int, usd: str) -> None:
    for k in range(days):
        d = last_day - timedelta(days=k)
        with tt.session(team=team, agent=f"{team}-bot", ledger=led):
            led.record_llm(
                provider="openai",
                model="gpt-4o",
                input_tokens=10,
                output_tokens=1,
                cost_usd=usd,
                ts=datetime(d.year, d.month, d.day, 12, tzinfo=UTC),
            )


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    budget_forecast._models.clear()
    yield
    budget_forecast._models.clear()


def _status(budget: Budget, start: datetime, end: datetime, posted: str, bucket: str) -> BudgetStatus:
    return BudgetStatus(budget, bucket, start, end, Decimal(posted), Decimal(0), 0, 0)


def test_projected_exhaustion_date_and_not_within_period(db_url: str) -> None:
    with tt.Ledger(db_url, prices=PriceBook(overrides="")) as led:
        _history(led, "legal", date(2026, 3, 10), 60, "10")  # $10 a day up to Mar 10
        _history(led, "cx", date(2026, 3, 10), 60, "1")
        led.flush()
        start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
        now = datetime(2026, 3, 11, 0, 30, tzinfo=UTC)
        b = Budget.build("legal-monthly", scope={"team": "legal"}, period="month", limit_usd="200")
        p = project_status(led.store, _status(b, start, end, "100", "team=legal"), now)
        assert p is not None
        # $100 used, $10 a day from Mar 11: $200 reached on Mar 20
        assert p.exhaustion.expected == date(2026, 3, 20)
        assert p.exhaustion.earliest is not None and p.exhaustion.earliest <= date(2026, 3, 20)
        assert p.projected_usd == pytest.approx(310.0, rel=0.02)
        assert p.to_dict()["date"] == "2026-03-20" and "Mar 20" in p.text()
        big = Budget.build("legal-big", scope={"team": "legal"}, period="month", limit_usd="5000")
        q = project_status(led.store, _status(big, start, end, "100", "team=legal"), now)
        assert q is not None and q.exhaustion.expected is None and q.text() == "not within this period"
        # a `team=*` budget projects each bucket from its own team's history
        star = Budget.build("per-team", scope={"team": "*"}, period="month", limit_usd="50")
        cx = project_status(led.store, _status(star, start, end, "10", "team=cx"), now)
        assert cx is not None and cx.projected_usd == pytest.approx(31.0, rel=0.05)
        assert cx.exhaustion.expected is None
        # a scope with no spend before today has no forecast (never "not within this period")
        new = Budget.build("new-team", scope={"team": "new"}, period="month", limit_usd="5")
        assert project_status(led.store, _status(new, start, end, "4", "team=new"), now) is None
        # periods a daily model cannot speak for have none
        hourly = Budget.build("h", scope={"team": "legal"}, period="hour", limit_usd="5")
        assert project_status(led.store, _status(hourly, start, end, "0", "team=legal"), now) is None


def test_status_api_row_and_one_alert_per_period(db_url: str) -> None:
    today = datetime.now(UTC).date()
    month_start = today.replace(day=1)
    with tt.Ledger(db_url, prices=PriceBook(overrides="")) as led:
        _history(led, "legal", month_start - timedelta(days=1), 40, "10")  # before this period
        led.flush()
        got = []
        led.budgets.alerts.add(CallbackSink(got.append))
        led.budgets.set("legal-monthly", scope={"team": "legal"}, period="month", limit_usd="5", action="alert")
        for _ in range(2):
            (row,) = led.budgets.status("legal-monthly")
            d = row.to_dict()["projected_exhaustion"]
            assert d is not None and d["date"] == today.isoformat()  # $10 a day against $5 left
        led.budgets.alerts.flush()
        found = list_alerts(led.store, kind="forecast")
        assert len(found) == 1, "once per budget per period"
        assert "on track to exceed by" in found[0].message and found[0].budget == "legal-monthly"
        assert [a.kind for a in got] == ["forecast"]
        code = CliRunner().invoke(cli.app, ["budget", "status", "--db", db_url], env=ENV)
        assert code.exit_code == 0, code.stderr
        assert "projected exhaustion" in code.stdout
        assert f"{today:%b} {today.day}" in code.stdout
        out = CliRunner().invoke(cli.app, ["budget", "status", "--format", "json", "--db", db_url], env=ENV)
        assert json.loads(out.stdout)[0]["projected_exhaustion"]["date"] == today.isoformat()
        listed = CliRunner().invoke(cli.app, ["alerts", "--kind", "forecast", "--db", db_url], env=ENV)
        assert listed.exit_code == 0, listed.stderr
        assert "on track to exceed" in listed.stdout
