"""The dashboard's savings advice panel in a real Chromium, under the page's strict CSP: the ranked
recommendations with their monthly saving, a narrow screen that scrolls nothing sideways, and
"Dismiss", which hides a recommendation for good."""

from __future__ import annotations

from datetime import UTC, datetime

from playwright.sync_api import Page, expect

import tokentrail as tt
from tests._advice_fleet import planted, record
from tests._browser import open_dashboard
from tests._server import serving

_ROWS = """[...document.querySelectorAll('#advice tbody tr[data-advice]')].map(tr =>
    [tr.dataset.kind, tr.dataset.agent, tr.cells[1].textContent.trim()])"""
_OVERFLOW = "(w => w.scrollWidth > w.clientWidth + 1)(document.querySelector('#advice-box .wrap'))"


def test_the_advice_panel_ranks_and_dismisses(page: Page, ledger: tt.Ledger) -> None:
    record(ledger, planted(now=datetime.now(UTC)))
    problems: list[str] = []  # script errors, and anything the CSP refused
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    with serving(ledger) as s:
        open_dashboard(page, s.url + "/")
        page.wait_for_function("() => document.getElementById('advice-box').dataset.loaded")
        rows = page.evaluate(_ROWS)  # one column, one number of decimals (the page's money rule)
        assert rows == [
            ["runaway_output", "writer", "$0.1920"],
            ["model_routing", "tagger", "$0.0705"],
            ["prompt_caching", "faq-bot", "$0.0600"],
            ["redundant_calls", "fetcher", "$0.0600"],
            ["unused_reasoning", "planner", "$0.0495"],
            ["context_trimming", "chat-bot", "$0.0450"],
        ]
        first = page.locator("#advice tbody tr").first
        expect(first).to_contain_text("set max_tokens=200 (the agent's p95 output)")
        expect(first).to_contain_text("× 30/30")
        for width in (900, 420):
            page.set_viewport_size({"width": width, "height": 1000})
            page.wait_for_function(f"() => innerWidth === {width}")
            assert page.evaluate(_OVERFLOW) is False, width
        page.set_viewport_size({"width": 1400, "height": 1000})
        first.get_by_role("button", name="Dismiss").click()
        expect(page.locator("#advice-note")).to_have_text("1 dismissed")
        assert [r[1] for r in page.evaluate(_ROWS)] == ["tagger", "faq-bot", "fetcher", "planner", "chat-bot"]
        page.reload()
        page.wait_for_function("() => document.getElementById('advice-box').dataset.loaded")
        assert "writer" not in [r[1] for r in page.evaluate(_ROWS)]  # stays dismissed
    assert problems == []
