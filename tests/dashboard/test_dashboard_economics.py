"""The dashboard's unit economics (by agent and task type, by org) and the agent tree of a session,
in a real Chromium: the numbers the API computes (docs/metrics.md), shown as a user sees them."""

from __future__ import annotations

import httpx2
from playwright.sync_api import Page, expect

import tokentrail as tt
from tests._browser import make_event, open_dashboard, post_events, texts
from tests._server import serving


def test_unit_economics_tables_and_the_agent_tree(page: Page, ledger: tt.Ledger) -> None:
    with serving(ledger) as s:
        post_events(
            s.url,
            [
                make_event("legal", "0.30", session_id="root", agent="orchestrator", task_type="review", org="acme"),
                make_event("legal", "0.20", session_id="kid", agent="researcher", task_type="review", org="acme",
                           parent_session_id="root"),
                make_event("legal", "0.10", session_id="grandkid", agent="checker", task_type="review", org="acme",
                           parent_session_id="kid", latency_ms=250),
                make_event("ops", "0.40", session_id="solo", agent="orchestrator", task_type="triage", org="globex"),
            ],
        )  # fmt: skip
        outcomes = [
            {"outcome_id": "o1", "session_id": "root", "name": "reviewed", "value_usd": "3"},
            {"outcome_id": "o2", "session_id": "solo", "name": "triaged", "success": False},
        ]
        assert httpx2.post(s.url + "/api/v1/outcomes", json={"outcomes": outcomes}).json()["accepted"] == 2
        open_dashboard(page, s.url + "/")
        page.wait_for_function("() => document.body.dataset.economics === 'loaded'")
        rows = page.evaluate(
            """[...document.querySelectorAll('#econ-agents tbody tr')].map(tr =>
                Object.fromEntries([...tr.cells].map(td => [td.dataset.label, td.textContent.trim()])))"""
        )
        by = {(r["agent"], r["task_type"]): r for r in rows}
        orch = by[("orchestrator", "review")]
        assert (orch["sessions"], orch["cost"], orch["per action"], orch["ROI"]) == ("1", "$0.30", "$0.30", "10.00")
        triage = by[("orchestrator", "triage")]
        assert triage["per action"] == "–" and "1 failed" in triage["outcomes"]  # no success: no cost per action
        assert by[("checker", "review")]["latency p50"] == "250 ms"
        assert by[("total", "")]["cost"] == "$1.00" and by[("total", "")]["per session"] == "$0.25"
        orgs = page.evaluate(
            """[...document.querySelectorAll('#econ-orgs tbody tr')].map(tr =>
                [tr.cells[0].textContent.trim(), tr.cells[2].textContent.trim()])"""
        )
        assert orgs == [["acme", "$0.60"], ["globex", "$0.40"], ["total", "$1.00"]]

        # the session view: the root's tree of sessions (own and total cost), each opening its calls
        expect(page.locator("#tree-box")).to_be_hidden()
        page.get_by_role("link", name="root", exact=True).click()
        page.wait_for_function("() => document.body.dataset.tree === 'root'")
        expect(page.locator("#tree-box")).to_be_visible()
        assert texts(page, "#tree tbody tr td.name") == ["root", "kid", "grandkid"]
        assert texts(page, "#tree tbody td.own") == ["$0.30", "$0.20", "$0.10"]
        assert texts(page, "#tree tbody td.total") == ["$0.60", "$0.30", "$0.10"]
        assert page.evaluate("[...document.querySelectorAll('#tree tbody tr')].map(tr => tr.dataset.depth)") == [
            "0", "1", "2",
        ]  # fmt: skip
        page.locator("#tree a[data-tree-session=grandkid]").click()
        expect(page.locator("#session-title")).to_contain_text("Session grandkid")
        expect(page.locator("#session tbody tr")).to_have_count(1)


def test_a_team_key_sees_only_its_teams_economics_and_tree(page: Page, ledger: tt.Ledger) -> None:
    from tokentrail.server.keys import create_key

    legal = create_key(ledger.store, role="read", attribution={"team": "legal"})[0]  # type: ignore[arg-type]
    with serving(ledger, admin_key="admin-key-for-tests-0123") as s:
        events = [
            make_event("legal", "0.30", session_id="root", org="acme"),
            make_event("ops", "0.50", session_id="spy", org="acme", parent_session_id="root"),
        ]
        r = httpx2.post(s.url + "/api/v1/events", json=events, headers={"X-Tokentrail-Key": "admin-key-for-tests-0123"})
        assert r.json()["accepted"] == 2
        open_dashboard(page, s.url + "/", key=legal)
        page.wait_for_function("() => document.body.dataset.economics === 'loaded'")
        assert page.evaluate("document.querySelector('#econ-orgs tbody tr').cells[2].textContent") == "$0.30"
        page.get_by_role("link", name="root", exact=True).click()
        page.wait_for_function("() => document.body.dataset.tree === 'root'")
        assert texts(page, "#tree tbody td.total") == ["$0.30"]  # the other team's sub-agent is not summed
