"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): it loads the JSON
API and shows spend by team, agent and model over time, sessions and budgets; with auth on, a team
key sees only its team. The tests click, type and resize as a user would."""

from __future__ import annotations

import itertools
import json
import math
import re
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest
from playwright.sync_api import Browser, Page, Route, expect

import tokentrail as tt
from tests._browser import make_event, open_dashboard, post_events, texts
from tests._server import serving
from tokentrail.server.keys import create_key

ADMIN = "dashboard-admin-key-0123"


def _fill(url: str) -> None:
    events = []
    for team, agent, model, n in [("legal", "a1", "gpt-4o", 3), ("cx", "b1", "claude-sonnet-4-6", 2)]:
        for i in range(n):
            events.append(
                {
                    "event_id": str(uuid.uuid4()),
                    "provider": "anthropic" if "claude" in model else "openai",
                    "model": model,
                    "input_tokens": 10_000,
                    "output_tokens": 2_000,
                    "team": team,
                    "agent": agent,
                    "session_id": f"{team}-session-{i}",
                }
            )
    r = httpx2.post(url + "/api/v1/events", json=events, headers={"X-Tokentrail-Key": ADMIN})
    assert r.json()["accepted"] == 5


def test_dashboard_shows_spend_sessions_and_budgets(page: Page, ledger: tt.Ledger, tmp_path: Path) -> None:
    ledger.budgets.set("legal-month", scope={"team": "legal"}, period="month", limit_usd=1)
    legal_key, _ = create_key(ledger.store, role="read", attribution={"team": "legal"})  # type: ignore[arg-type]
    with serving(ledger, admin_key=ADMIN) as s:
        _fill(s.url)
        open_dashboard(page, s.url + "/")
        assert page.evaluate("document.body.dataset.loaded") == "error"  # auth is on: it asks for a key
        expect(page.get_by_placeholder("tokentrail key")).to_be_visible()
        assert page.locator("main .loading").count() == 0  # nothing left spinning
        # the user types the key and uses it
        page.get_by_placeholder("tokentrail key").fill(ADMIN)
        page.get_by_role("button", name="Use key").click()
        page.wait_for_function("() => document.body.dataset.loaded === 'true'")
        assert texts(page, "#by-team tbody td:first-child") == ["legal", "cx"]  # the costlier first
        assert page.locator("#chart rect.bar-seg").count() >= 2
        assert page.locator("#sessions tbody tr").count() == 5
        expect(page.locator("#budgets")).to_contain_text("legal-month")
        expect(page.locator("[data-total=calls] b")).to_have_text("5")
        page.screenshot(path=str(tmp_path / "dashboard.png"))
        # drill into a session
        page.locator("#sessions a[data-session]").first.click()
        expect(page.locator("#session-box")).to_be_visible()
        expect(page.locator("#session")).to_contain_text("llm")
        # a team key: only its team
        page.evaluate("localStorage.clear()")
        open_dashboard(page, s.url + "/", key=legal_key)
        assert texts(page, "#by-team tbody td:first-child") == ["legal"]
        assert page.locator("#sessions tbody tr").count() == 3
        main = page.locator("main").text_content() or ""
        assert "cx" not in main.replace("legal", "")


# -- what a newcomer saw: a blank page, an empty chart, tables that scroll, odd money ------------


def _chart(page: Page) -> dict[str, Any]:
    """What the spend chart drew: its bucket, plot area, slots, bars and y-axis ticks."""
    out: dict[str, Any] = page.evaluate(
        """(() => { const svg = document.getElementById('chart'), d = svg.dataset;
        return {bucket: d.bucket, slots: Number(d.slots), left: Number(d.plotLeft), right: Number(d.plotRight),
          width: svg.clientWidth,
          bars: [...svg.querySelectorAll('rect.bar-seg')].map(r => ({slot: Number(r.dataset.slot),
            x: Number(r.getAttribute('x')), w: Number(r.getAttribute('width')), h: Number(r.getAttribute('height'))})),
          ticks: [...svg.querySelectorAll('text.y-tick')].map(t => [Number(t.dataset.value), t.textContent])}; })()"""
    )
    return out


def _round_ticks(ticks: list[list[Any]]) -> None:
    """A few y-axis labels, evenly spaced at a 1, 2 or 5 times a power of ten, labelled plainly."""
    values = [v for v, _ in ticks]
    assert 3 <= len(values) <= 7, ticks
    assert values[0] == 0 and ticks[0][1] == "$0"
    step = values[1] - values[0]
    assert all(abs((b - a) - step) < step * 1e-6 for a, b in itertools.pairwise(values)), ticks
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(abs(mantissa - m) < 1e-6 for m in (1, 2, 5)), ticks
    for v, text in ticks[1:]:
        assert re.fullmatch(r"\$[\d,]+(\.\d+)?", text), text
        assert Decimal(text[1:].replace(",", "")) == Decimal(str(v)), text  # the value itself, e.g. "$0.50"


def test_the_layout_and_a_loading_state_show_before_any_data(page: Page, ledger: tt.Ledger) -> None:
    with serving(ledger) as s:
        post_events(s.url, [make_event("legal", "0.5")])
        held: list[Route] = []
        page.route("**/api/**", lambda route: held.append(route))  # hold every API answer
        page.goto(s.url + "/")
        page.wait_for_function("() => document.readyState === 'complete'")
        for _ in range(200):  # bounded: the page asks for /api/v1/me first
            if held:
                break
            page.wait_for_timeout(50)
        assert held, "the page asked the API for nothing"
        assert page.evaluate("document.body.dataset.loaded") is None
        expect(page.locator("main")).to_have_attribute("aria-busy", "true")
        expect(page.locator("#status")).to_have_class("loading")
        boxes = page.evaluate(
            """[...document.querySelectorAll('main > section:not([hidden]), main > .cards')].map(e => {
               const r = e.getBoundingClientRect(); return [e.id || e.className, r.top, r.width, r.height]; })"""
        )
        assert len(boxes) == 13, (
            boxes
        )  # cards, chart, forecast, budgets, 3 tables, sessions, economics, export, alerts, anomalies, advice
        assert all(w > 300 and h > 40 for _, _, w, h in boxes[:3]), boxes  # laid out, above the fold
        assert all(top < 1000 for _, top, _, _ in boxes[:3]), boxes
        for table in ("budgets", "by-team", "by-agent", "by-model", "sessions", "econ-agents", "econ-orgs", "alerts"):
            assert page.locator(f"#{table} td.loading").count() == 1, table
        assert page.locator("#totals .card b.loading").count() == 6
        expect(page.locator("#chart")).to_contain_text("loading")
        # let the answers through: the page fills in
        for _ in range(400):  # bounded
            if page.evaluate("document.body.dataset.loaded"):
                break
            while held:
                held.pop().continue_()
            page.wait_for_timeout(50)
        page.unroute("**/api/**")
        assert page.evaluate("document.body.dataset.loaded") == "true"
        expect(page.locator("main")).to_have_attribute("aria-busy", "false")
        expect(page.locator("[data-total=cost] b")).to_have_text("$0.50")


def test_spend_in_one_day_is_charted_by_hour(page: Page, browser: Browser, ledger: tt.Ledger) -> None:
    """All of `tokentrail demo` lands in one hour: the chart shows it by hour, with round labels."""
    with serving(ledger) as s:
        post_events(
            s.url, [make_event("legal"), make_event("legal", ago=timedelta(hours=3)), make_event("cx", "0.0042")]
        )
        open_dashboard(page, s.url + "/")
        c = _chart(page)
        assert c["bucket"] == "hour"
        assert 24 <= c["slots"] <= 26  # at least a day of hours around the spend, for context
        assert {b["slot"] for b in c["bars"]} == {c["slots"] - 4, c["slots"] - 1}  # 3 hours ago, and now
        assert all(b["h"] > 1 for b in c["bars"])
        assert c["right"] - c["left"] > 0.85 * c["width"]  # the slots span the plot's whole width
        _round_ticks(c["ticks"])
        assert page.evaluate("document.getElementById('chart-note').textContent").startswith("by hour")
        legend = page.evaluate("[...document.querySelectorAll('#legend > span')].map(e => e.textContent)")
        assert legend[1] == "cx $0.0042" and legend[0].startswith("legal $0.0")
        # hours are the viewer's own, even half an hour off UTC
        adelaide = browser.new_context(viewport={"width": 1400, "height": 1000}, timezone_id="Australia/Adelaide")
        page = adelaide.new_page()
        open_dashboard(page, s.url + "/")
        c = _chart(page)
        assert page.evaluate("document.getElementById('chart-note').textContent") == "by hour · Australia/Adelaide"
        assert {b["slot"] for b in c["bars"]} == {c["slots"] - 4, c["slots"] - 1}
        labels = page.evaluate("[...document.querySelectorAll('#chart text.x-tick')].map(t => t.textContent)")
        assert labels and all(re.fullmatch(r"\d\d:00", t) for t in labels), labels
        adelaide.close()


def test_spend_over_several_days_is_charted_by_day_across_the_width(page: Page, ledger: tt.Ledger) -> None:
    with serving(ledger) as s:
        days = [timedelta(days=d) for d in (6, 4, 2, 0)]  # whole days ago: the same slots in any time zone
        post_events(
            s.url, [make_event("legal", "1.008756", ago=d) for d in days] + [make_event("cx", "0.25", ago=days[1])]
        )
        open_dashboard(page, s.url + "/")
        c = _chart(page)
        assert (c["bucket"], c["slots"]) == ("day", 7)
        slot = (c["right"] - c["left"]) / c["slots"]
        assert {b["slot"] for b in c["bars"]} == {0, 2, 4, 6}
        assert min(b["x"] for b in c["bars"]) < c["left"] + slot  # from the left edge …
        assert max(b["x"] + b["w"] for b in c["bars"]) > c["right"] - slot  # … to the right one
        assert c["right"] - c["left"] > 0.85 * c["width"]
        _round_ticks(c["ticks"])
        assert [t for _, t in c["ticks"]] == ["$0", "$0.50", "$1.00", "$1.50"]
        # the last 24 hours: by hour again
        page.get_by_label("Range").select_option(label="last 24 hours")
        page.wait_for_function("() => document.body.dataset.loaded")
        c = _chart(page)
        assert c["bucket"] == "hour" and {b["slot"] for b in c["bars"]} == {c["slots"] - 1}


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("-4.570606", "-$4.57"),
        ("4.570606", "$4.57"),
        ("1234.5", "$1,234.50"),
        ("1", "$1.00"),
        ("0.17915", "$0.17915"),
        ("0.179150000", "$0.17915"),
        ("0.02", "$0.02"),
        ("0.0022997", "$0.0022997"),
        ("0.001042050", "$0.00104205"),
        ("-0.0023", "-$0.0023"),
        ("0.000000001", "$0.000000001"),
        ("0.000000123", "$0.000000123"),
        ("0", "$0.00"),
        ("0.000000000", "$0.00"),
        (None, "unpriced"),
    ],
)
def test_money_is_shown_by_one_rule(page: Page, ledger: tt.Ledger, value: str | None, shown: str) -> None:
    with serving(ledger) as s:
        open_dashboard(page, s.url + "/")
        assert page.evaluate(f"money({json.dumps(value)})") == shown


def test_negative_and_unpriced_totals(page: Page, ledger: tt.Ledger) -> None:
    from tokentrail.corrections import adjust

    with serving(ledger) as s:
        legal = make_event("legal", "0.429394")
        unpriced = [make_event("research", model="acme-private"), make_event("research", model="acme-private")]
        post_events(s.url, [legal, make_event("cx", "0.02"), *unpriced])
        adjust(ledger, legal["event_id"], reason="refund", cost_usd=Decimal("-5"), allow_negative=True)
        open_dashboard(page, s.url + "/")
        cost = page.evaluate(
            """Object.fromEntries([...document.querySelectorAll('#by-team tbody tr')].map(
               tr => [tr.cells[0].textContent, tr.cells[tr.cells.length - 1].textContent]))"""
        )
        assert cost == {"cx": "$0.02", "research": "unpriced", "legal": "-$4.57"}
        model = page.evaluate(
            """Object.fromEntries([...document.querySelectorAll('#by-model tbody tr')].map(
               tr => [tr.cells[0].textContent, tr.cells[tr.cells.length - 1].textContent]))"""
        )
        assert model["acme-private"] == "unpriced"
        assert page.evaluate("document.querySelector('[data-total=cost] b').textContent") == "-$4.55"
        assert page.evaluate("document.querySelector('[data-total=\"unpriced calls\"] b').textContent") == "2"
        sessions = texts(page, "#sessions tbody td:nth-child(8)")
        assert sessions.count("unpriced") == 2 and "$0.00" not in sessions
        # either way the server says "no price": null, or "0" with every call unpriced
        for row in (
            '{"cost_usd": null, "calls": 2, "unpriced_calls": 2}',
            '{"cost_usd": "0.000000000", "calls": 2, "unpriced_calls": 2, "tool_runs": 0}',
        ):
            assert page.evaluate(f"isUnpriced({row})") is True
        assert page.evaluate('isUnpriced({"cost_usd": "0.5", "calls": 2, "unpriced_calls": 1})') is False
        assert page.evaluate('isUnpriced({"cost_usd": "0", "calls": 0, "unpriced_calls": 0, "tool_runs": 3})') is False


def test_a_locked_or_suspended_budget_shows_on_the_page(page: Page, ledger: tt.Ledger) -> None:
    from tokentrail.context import Attribution

    b = ledger.budgets
    b.set("legal-day", scope={"team": "legal"}, period="day", limit_usd=10)
    b.set("cx-month", scope={"team": "cx"}, period="month", limit_usd=100, limit_tokens=1_000_000)
    hold = b.reserve(cost_usd="1", attribution=Attribution(team="legal"))
    b.post(hold, cost_usd=Decimal(3))  # past what it reserved: an overage locks the budget
    b.suspend({"agent": "ci-fixer"}, reason="runaway loop")
    with serving(ledger) as s:
        open_dashboard(page, s.url + "/")
        row = "document.querySelector('#budgets tr[data-budget=\"legal-day\"]')"
        assert page.evaluate(f"{row}.querySelector('[data-state]').dataset.state") == "locked"
        assert "an overage blocks calls until" in page.evaluate(f"{row}.textContent")
        assert (
            page.evaluate("document.querySelector('#budgets tr[data-budget=\"cx-month\"] [data-state]').dataset.state")
            == "ok"
        )
        assert page.evaluate("document.getElementById('budget-flags').textContent") == "1 locked "
        assert "agent=ci-fixer" in page.evaluate("document.querySelector('[data-suspended]').textContent")
        assert "runaway loop" in page.evaluate("document.getElementById('suspensions').textContent")


_OVERFLOW = """[...document.querySelectorAll('main .wrap')].filter(w => w.offsetParent !== null)
    .filter(w => w.scrollWidth > w.clientWidth + 1).map(w => w.querySelector('table').id)"""


def test_every_column_fits_and_narrow_screens_degrade(page: Page, ledger: tt.Ledger) -> None:
    long_agent = "contract-analyzer-for-the-very-long-named-enterprise-workflow-v2"
    b = ledger.budgets
    b.set("legal-monthly-spend-for-the-contracts-team", scope={"team": "legal"}, period="month", limit_usd=1000)
    b.set("tokens-per-agent", scope={"agent": "*"}, period="day", limit_usd=50, limit_tokens=10_000_000, action="alert")
    with serving(ledger) as s:
        events = [make_event("legal", "1234.567891", agent=long_agent, model="claude-sonnet-4-6-20260101-preview")]
        events += [make_event(f"team-{i}", f"0.00{i}2997") for i in range(6)]
        post_events(s.url, events)
        open_dashboard(page, s.url + "/")
        assert page.evaluate(_OVERFLOW) == []
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        box = page.evaluate("document.getElementById('budgets-box').getBoundingClientRect().right")
        heads = page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('#budgets th')]"
            ".map(th => [th.textContent, th.getBoundingClientRect().right]))"
        )
        assert {"spent", "limit", "remaining", "state"} <= set(heads) and max(heads.values()) <= box
        main = page.evaluate("document.querySelector('main').getBoundingClientRect().width")
        assert page.evaluate("document.getElementById('budgets-box').getBoundingClientRect().width") > 0.9 * main
        tops = page.evaluate("[...document.querySelectorAll('section.third')].map(e => e.getBoundingClientRect().top)")
        assert len(set(tops)) == 1  # the three tables side by side
        # a long name is cut short (its cell says it in full on hover), never the table
        assert page.evaluate(
            "(td => td.scrollWidth > td.clientWidth && td.title)(document.querySelector('#by-agent td.name'))"
        )
        for width in (900, 420):  # a small laptop, a phone: nothing scrolls sideways, nothing is cut
            page.set_viewport_size({"width": width, "height": 1000})
            page.wait_for_function(f"() => innerWidth === {width}")
            assert page.evaluate("document.documentElement.scrollWidth <= innerWidth"), width
            assert page.evaluate(_OVERFLOW) == [], width
            right = page.evaluate("document.getElementById('budgets-box').getBoundingClientRect().right")
            shown = page.evaluate(
                """Object.fromEntries([...document.querySelectorAll('#budgets tbody tr:first-child td')]
                   .filter(td => td.offsetParent).map(td => [td.dataset.label, td.getBoundingClientRect().right]))"""
            )
            assert {"budget", "used", "limit", "remaining", "state"} <= set(shown), (width, shown)
            assert max(shown.values()) <= right, (width, shown)


def test_the_page_scripts_are_served_and_nothing_else(ledger: tt.Ledger) -> None:
    """The page loads its scripts from /dashboard/<name>: those, and no other file of the package."""
    with serving(ledger, admin_key=ADMIN) as s:
        page = httpx2.get(s.url + "/").text
        names = re.findall(r'<script src="/dashboard/([\w.]+)"', page)
        assert names and "<script>" not in page  # no inline script: the CSP can forbid them
        for name in names:
            r = httpx2.get(f"{s.url}/dashboard/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript"), name
            assert r.text.startswith("// ") and '"use strict";' in r.text
        for path in ("/dashboard/index.html", "/dashboard/__init__.py", "/dashboard/..%2Fapp.py", "/dashboard/x.js"):
            r = httpx2.get(s.url + path)
            assert r.status_code == 404 and r.json()["error"]["status"] == 404, path  # never the file
