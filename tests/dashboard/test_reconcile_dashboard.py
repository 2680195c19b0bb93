"""The dashboard's reconciliation panel: an org-wide key sees the latest runs with their
coverage and differences; a team key never sees the panel (the API refuses it the runs)."""

from __future__ import annotations

from playwright.sync_api import Page

import tokentrail as tt
from tests._browser import open_dashboard, texts
from tests._reconcile_data import FIXTURES, seed
from tests._server import serving
from tests.analytics.test_reconcile import FILES
from tokentrail.analytics.reconcile import reconcile
from tokentrail.analytics.reconcile_files import read_file
from tokentrail.server.keys import create_key
from tokentrail.store.reconcile import save_run

ADMIN = "admin-key-for-tests-0123"
LOADED = "() => document.getElementById('reconcile-box').dataset.loaded === 'true'"


def test_panel_shows_runs_to_org_keys_only(page: Page, ledger: tt.Ledger) -> None:
    seed(ledger, "google")
    r = reconcile(ledger.store, "google", [read_file("google", FIXTURES / f) for f in FILES["google"]])
    save_run(ledger.store, r.to_dict(), source="test")
    team, _ = create_key(ledger.store, role="read", attribution={"team": "legal"})
    with serving(ledger, admin_key=ADMIN) as s:
        open_dashboard(page, s.url, key=ADMIN)
        page.wait_for_function(LOADED)
        assert page.locator("#reconcile-box").is_visible()
        assert texts(page, "#reconciliations tbody td:first-child") == ["google"]
        row = " ".join(texts(page, "#reconciliations tbody td"))
        assert f"{r.coverage * 100:.2f}%" in row and "2026-01-01 → 2026-01-31" in row
        assert "3 missing from ledger · 1 token mismatch · 7 price drift" in row
        open_dashboard(page, s.url, key=team)
        page.wait_for_function(LOADED)
        assert not page.locator("#reconcile-box").is_visible()
