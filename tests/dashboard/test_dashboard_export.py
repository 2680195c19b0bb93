"""The dashboard downloads an export of its current range (FOCUS by default), in a real Chromium."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path

from playwright.sync_api import Page, expect

import tokentrail as tt
from tests._browser import make_event, open_dashboard, post_events
from tests._server import serving
from tokentrail.analytics import reports


def test_the_dashboard_downloads_a_focus_export_of_its_range(page: Page, ledger: tt.Ledger, tmp_path: Path) -> None:
    with serving(ledger) as s:
        post_events(s.url, [make_event("legal", "0.25"), make_event("research", "0.125")])
        open_dashboard(page, s.url + "/")
        expect(page.locator("#export-box")).to_be_visible()
        with page.expect_download() as info:
            page.locator("#export-download").click()
        download = info.value
        assert download.suggested_filename.startswith("tokentrail-focus-")
        target = tmp_path / "export.csv"
        download.save_as(target)
        rows = list(csv.DictReader(io.StringIO(target.read_text())))
        assert sum(Decimal(r["BilledCost"]) for r in rows) == reports.report(ledger.store).totals.cost_usd
        assert {r["SubAccountId"] for r in rows} == {"legal", "research"}
        page.wait_for_function("() => document.getElementById('export-note').dataset.done === 'true'")
