"""The dashboard's forecast in a real headless Chromium: the month-end projection with its band,
and each budget's projected exhaustion under its bar; a team key sees its team's forecast only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from playwright.sync_api import Page, expect

import tokentrail as tt
from tests._browser import open_dashboard
from tests._server import serving
from tests.budgets.test_forecast_budgets import _history
from tokentrail.server.keys import create_key


def test_forecast_panel_and_budget_exhaustion(page: Page, ledger: tt.Ledger) -> None:
    today = datetime.now(UTC).date()
    _history(ledger, "legal", today - timedelta(days=1), 45, "10")  # $10 a day up to yesterday
    _history(ledger, "cx", today - timedelta(days=1), 45, "1")
    ledger.flush()
    ledger.budgets.set("legal-month", scope={"team": "legal"}, period="month", limit_usd="1", action="alert")
    ledger.budgets.set("cx-month", scope={"team": "cx"}, period="month", limit_usd="100000", action="alert")
    with serving(ledger) as s:
        open_dashboard(page, s.url + "/")
        assert page.evaluate("document.body.dataset.loaded") == "true"
        assert page.locator("#forecast polygon.band").count() == 1
        assert page.locator("#forecast polyline.projected").count() == 1
        projected = float(page.evaluate("document.getElementById('forecast').dataset.projected"))
        assert projected > 0
        expect(page.locator("#forecast-note")).to_contain_text("projected by the end of")
        legal = "#budgets tr[data-budget='legal-month'] [data-exhaustion]"
        assert page.locator(legal).get_attribute("data-exhaustion") == today.isoformat()
        expect(page.locator(legal)).to_contain_text("runs out ~")
        cx = "#budgets tr[data-budget='cx-month'] [data-exhaustion]"
        assert page.locator(cx).get_attribute("data-exhaustion") == "none"
        # the projected share of the limit is drawn behind the used bar
        width = page.evaluate("document.querySelector(\"#budgets tr[data-budget='legal-month'] .bar > s\").style.width")
        assert width == "100%"


def test_a_team_key_sees_its_own_forecast(page: Page, ledger: tt.Ledger) -> None:
    today = datetime.now(UTC).date()
    _history(ledger, "legal", today - timedelta(days=1), 30, "10")
    _history(ledger, "cx", today - timedelta(days=1), 30, "1000")
    ledger.flush()
    cx_key, _ = create_key(ledger.store, role="read", attribution={"team": "cx"})  # type: ignore[arg-type]
    legal_key, _ = create_key(ledger.store, role="read", attribution={"team": "legal"})  # type: ignore[arg-type]
    with serving(ledger, admin_key="forecast-admin-key-0123") as s:
        open_dashboard(page, s.url + "/", key=legal_key)
        legal = float(page.evaluate("document.getElementById('forecast').dataset.projected"))
        open_dashboard(page, s.url + "/", key=cx_key)
        cx = float(page.evaluate("document.getElementById('forecast').dataset.projected"))
        assert cx > 50 * legal > 0  # legal's forecast holds none of cx's spend
