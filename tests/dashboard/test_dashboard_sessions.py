"""The dashboard's first hour (issue 11, items 19-25), in a real Chromium as a user sees it: the
sessions list pages and filters, whole session ids, a session view as full as the CLI's, context
growth with its sign, unpriced never $0, amounts aligned and never wrapped on a phone, and an
optional auto-refresh."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from playwright.sync_api import Page, expect

import tokentrail as tt
from tests._browser import make_event, open_dashboard, post_events, texts
from tests._server import serving

ROWS = "#sessions tbody tr"


def _session_rows(page: Page) -> list[dict[str, str]]:
    out: list[dict[str, str]] = page.evaluate(
        f"""[...document.querySelectorAll('{ROWS}')].map(tr => ({{
            id: tr.cells[0].textContent, agent: tr.cells[1].textContent, team: tr.cells[2].textContent}}))"""
    )
    return out


def test_context_growth_shows_its_sign_as_the_cli_does(page: Page, ledger: tt.Ledger) -> None:
    """Item 19: a context that shrank by 178 tokens reads -178, never +-178."""
    with serving(ledger) as s:
        calls = [(1000, 3), (822, 2), (2056, 1)]  # input tokens, minutes ago
        post_events(
            s.url,
            [make_event("legal", session_id="growth", input_tokens=n, ago=timedelta(minutes=m)) for n, m in calls],
        )
        open_dashboard(page, s.url + "/")
        page.get_by_role("link", name="growth").click()
        expect(page.locator("#session-box")).to_be_visible()
        expect(page.locator("#session tbody tr")).to_have_count(3)
        assert texts(page, "#session tbody td.growth") == ["", "-178", "+1,234"]
        assert "+-" not in (page.locator("#session").text_content() or "")


def test_an_unpriced_model_is_unpriced_in_the_chart_legend(page: Page, ledger: tt.Ledger) -> None:
    """Item 20: a group none of whose calls has a price shows "unpriced" in the legend, never $0.00."""
    with serving(ledger) as s:
        post_events(s.url, [make_event("legal", "0.25"), make_event("research", model="acme-private")])
        open_dashboard(page, s.url + "/")
        legend = texts(page, "#legend > span")
        assert legend == ["legal $0.25", "research unpriced"], legend
        page.get_by_label("Group by").select_option("model")
        page.wait_for_function("() => document.body.dataset.loaded")
        expect(page.locator("#legend > span", has_text="acme-private")).to_have_text("acme-private unpriced")
        assert not any("$0.00" in t for t in texts(page, "#legend > span"))


def test_whole_session_ids_are_shown_whole(page: Page, ledger: tt.Ledger) -> None:
    """Item 21: an id is shown as it is, with no "…" that says it was cut."""
    ids = ["s-1", "legal-session-0", "0b5f3c2e-7d41-4c7a-9a55-2f0e8c1d9b63"]
    with serving(ledger) as s:
        post_events(s.url, [make_event("legal", session_id=i) for i in ids])
        open_dashboard(page, s.url + "/")
        shown = texts(page, "#sessions a[data-session]")
        assert sorted(shown) == sorted(ids)
        assert not any("…" in t for t in shown)
        page.get_by_role("link", name="legal-session-0").click()
        expect(page.locator("#session-title")).to_contain_text("Session legal-session-0")


def _many_sessions() -> list[dict[str, Any]]:
    """27 sessions of the last half hour (agents agent-0..3, teams legal/cx, customers acme/globex),
    and two more that started three hours ago."""
    out = []
    for i in range(27):
        out.append(
            make_event(
                "legal" if i % 3 else "cx",
                session_id=f"s-{i:02d}",
                agent=f"agent-{i % 4}",
                customer="acme" if i % 5 < 2 else "globex",
                ago=timedelta(minutes=30 - i),
            )
        )
    for i in (1, 2):
        out.append(make_event("legal", session_id=f"old-{i}", agent="agent-1", ago=timedelta(hours=3, minutes=i)))
    return out


def test_the_sessions_list_pages_and_filters(page: Page, ledger: tt.Ledger) -> None:
    """Item 22: 29 sessions: 20 a page, older → and ← newer; filters by agent, team, customer and
    start time, typed or picked as a user would."""
    with serving(ledger) as s:
        post_events(s.url, _many_sessions())
        open_dashboard(page, s.url + "/")
        expect(page.locator(ROWS)).to_have_count(20)
        first = [r["id"] for r in _session_rows(page)]
        assert first == [f"s-{i:02d}" for i in range(26, 6, -1)]  # newest first
        expect(page.locator("#s-page")).to_have_text("1–20")
        expect(page.get_by_role("button", name="← newer")).to_be_disabled()
        page.get_by_role("button", name="older →").click()
        expect(page.locator("#s-page")).to_have_text("21–29")
        second = [r["id"] for r in _session_rows(page)]
        assert second == [f"s-{i:02d}" for i in range(6, -1, -1)] + ["old-1", "old-2"]
        expect(page.get_by_role("button", name="older →")).to_be_disabled()
        page.get_by_role("button", name="← newer").click()
        expect(page.locator("#s-page")).to_have_text("1–20")
        assert [r["id"] for r in _session_rows(page)] == first

        # type an agent's name: only its sessions (fewer than a page: no next page)
        agent = page.get_by_label("agent", exact=True)
        agent.fill("agent-1")
        expect(page.locator(ROWS)).to_have_count(9)  # s-01, s-05, … s-25, and the two old ones
        assert {r["agent"] for r in _session_rows(page)} == {"agent-1"}
        expect(page.get_by_role("button", name="older →")).to_be_disabled()
        # and only those that started in the last hour
        page.get_by_label("started").select_option(label="in the last hour")
        expect(page.locator(ROWS)).to_have_count(7)
        assert not any(r["id"].startswith("old-") for r in _session_rows(page))
        # a team and a customer as well
        page.get_by_label("team", exact=True).fill("cx")
        page.get_by_label("customer").fill("acme")
        wanted = [f"s-{i:02d}" for i in range(27) if i % 4 == 1 and i % 3 == 0 and i % 5 < 2]
        assert wanted == ["s-21"]  # the team alone leaves two: s-09 and s-21
        expect(page.locator(ROWS)).to_have_count(1)
        assert sorted(r["id"] for r in _session_rows(page)) == wanted
        assert {r["team"] for r in _session_rows(page)} == {"cx"}
        # a filter nothing matches says so
        page.get_by_label("customer").fill("nobody")
        expect(page.locator(ROWS)).to_have_text(["no sessions match these filters"])
        # cleared: the whole list again, from its first page
        for name in ("agent", "team", "customer"):
            page.get_by_label(name, exact=True).fill("")
        page.get_by_label("started").select_option(label="in the range above")
        expect(page.locator("#s-page")).to_have_text("1–20")
        assert [r["id"] for r in _session_rows(page)] == first


# Every amount of money in the page: its text, the number of lines it takes, and whether a box
# that hides its overflow cuts it short.
_MONEY = r"""(() => {
  const out = [], walk = document.createTreeWalker(document.querySelector('main'), NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const text = n.textContent.trim();
    if (!/^[-+]?\$[\d,]+\.\d+$/.test(text) || !n.parentElement.offsetParent) continue;
    const r = document.createRange(); r.selectNodeContents(n);
    const lines = new Set([...r.getClientRects()].filter(b => b.width > 0).map(b => Math.round(b.top)));
    const box = r.getBoundingClientRect();
    let cut = false;
    for (let e = n.parentElement; e && e !== document.body; e = e.parentElement) {
      const s = getComputedStyle(e), b = e.getBoundingClientRect();
      if (s.overflowX !== "visible" && (box.right > b.right + 1 || box.left < b.left - 1)) cut = true;
    }
    out.push([text, lines.size, cut]);
  }
  return out; })()"""


def test_costs_never_wrap_at_phone_width(page: Page, ledger: tt.Ledger) -> None:
    """Item 23: at 375 px every amount stays on one line, in every table and the session view."""
    b = ledger.budgets
    b.set("legal-monthly-spend", scope={"team": "legal"}, period="month", limit_usd=100_000)
    with serving(ledger) as s:
        costs = ["12345.678912", "0.0022997", "1.000000001", "0.000000123"]
        post_events(
            s.url,
            [make_event("legal", c, session_id=f"phone-{i}", agent="contract-analyzer") for i, c in enumerate(costs)]
            + [make_event("legal", "0.000004", session_id="phone-0", agent="contract-analyzer")]
            + [make_event("cx", "0.000000001")],  # the total shows all nine decimals
        )
        page.set_viewport_size({"width": 375, "height": 800})
        open_dashboard(page, s.url + "/")
        page.get_by_role("link", name="phone-0").click()
        expect(page.locator("#session tbody tr")).to_have_count(2)
        found = page.evaluate(_MONEY)
        assert [t for t, lines, _ in found if lines != 1] == [], found  # wrapped
        assert [t for t, _, cut in found if cut] == [], found  # cut short
        assert len(found) >= 15, found  # cards, tables, budgets, sessions, the session view
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")


def test_the_session_view_shows_what_the_cli_shows(page: Page, ledger: tt.Ledger) -> None:
    """Item 24: times, tokens in / out / cached, latency and status, per call and in total."""
    with serving(ledger) as s:
        post_events(
            s.url,
            [
                make_event(
                    "legal",
                    "0.0125",
                    session_id="full",
                    input_tokens=5000,
                    output_tokens=321,
                    cache_read_tokens=4096,
                    latency_ms=1234.4,
                    ago=timedelta(seconds=90),
                ),
                make_event(
                    "legal",
                    session_id="full",
                    status="error",
                    input_tokens=7,
                    output_tokens=0,
                    latency_ms=88,
                    ago=timedelta(seconds=30),
                ),
                make_event("legal", session_id="full", model="acme-private", input_tokens=10),  # no price
            ],
        )
        open_dashboard(page, s.url + "/")
        page.get_by_role("link", name="full").click()
        expect(page.locator("#session tbody tr")).to_have_count(3)
        meta = page.locator("#session-meta").text_content() or ""
        for part in ("took 1m", "3 calls", "5,017 in", "421 out", "4,096 cached", "1 unpriced", "1 errors"):
            assert part in meta, (part, meta)
        heads = texts(page, "#session thead th")
        assert heads[:7] == ["time", "call", "in", "context growth", "out", "cached", "cost"], heads
        first, second = (texts(page, f"#session tbody tr:nth-child({n}) td") for n in (1, 2))
        assert re.fullmatch(r"\d\d:\d\d:\d\d", first[0]), first
        assert first[2:6] == ["5,000", "", "321", "4,096"], first
        assert first[7:] == ["1,234 ms", "ok"], first
        assert second[2:4] == ["7", "-4,993"] and second[-1] == "error", second
        assert (first[6], second[6]) == ("$0.0125000", "$0.0000175")  # one column, aligned
        third = texts(page, "#session tbody tr:nth-child(3) td")
        assert third[1] == "llm: openai/acme-private" and third[6] == "unpriced", third  # never $0


def test_auto_refresh_picks_up_new_spend(page: Page, ledger: tt.Ledger) -> None:
    """Item 25: with auto-refresh on, a call recorded after the page loaded shows by itself."""
    with serving(ledger) as s:
        post_events(s.url, [make_event("legal", "0.5", session_id="before")])
        open_dashboard(page, s.url + "/")
        expect(page.locator("[data-total=calls] b")).to_have_text("1")
        page.get_by_label("Auto-refresh").select_option(label="every 5 s")
        post_events(s.url, [make_event("cx", "0.25", session_id="after")])
        calls = page.locator("[data-total=calls] b")
        expect(calls).to_have_text("2", timeout=30_000)  # no click, no reload
        expect(page.locator("#sessions a[data-session=after]")).to_be_visible()
        expect(page.locator("[data-total=cost] b")).to_have_text("$0.75")
        # remembered: a reload keeps refreshing by itself
        page.reload()
        expect(page.get_by_label("Auto-refresh")).to_have_value("5")


def test_money_in_a_column_is_aligned_and_a_total_keeps_its_rows_decimals(page: Page, ledger: tt.Ledger) -> None:
    """One rule with the CLI: a column shows as many decimals as its row that needs the most,
    and a total is never rounded to cents when its rows need more."""
    with serving(ledger) as s:
        post_events(s.url, [make_event("legal", "1.008756"), make_event("cx", "0.0042")])
        open_dashboard(page, s.url + "/")
        cost = dict(
            zip(texts(page, "#by-team tbody td:first-child"), texts(page, "#by-team tbody td.cost"), strict=True)
        )
        assert cost == {"legal": "$1.0088", "cx": "$0.0042"}
        expect(page.locator("[data-total=cost] b")).to_have_text("$1.0130")  # not "$1.01"
        assert sorted(texts(page, "#sessions tbody td.cost")) == ["$0.0042", "$1.0088"]
        # the rule itself: never fewer decimals than an amount needs on its own, nor "$0" for a price
        assert page.evaluate("[money('0.0042', 2), money('1.5', 4), money('-0.0000000001', 2), money(null, 4)]") == [
            "$0.0042",
            "$1.5000",
            "-$0.0000000001",
            "unpriced",
        ]
