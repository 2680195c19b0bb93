"""Helpers of the dashboard tests: finding Debian's Chromium (never a downloaded browser) for
Playwright (the `browser` and `page` fixtures are in conftest), opening the dashboard, and events to show."""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from playwright.sync_api import Page


def chromium_path() -> str:
    """Debian's chromium (never a downloaded browser); make test installs it."""
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no Chromium: make test installs it (scripts/ensure-chromium)")
        pytest.skip("no Chromium for the dashboard tests: sudo apt-get install chromium")
    return found


ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def open_dashboard(page: Page, url: str, *, key: str | None = None) -> None:
    """Go to the dashboard (with a key in its storage) and wait until it has loaded."""
    page.goto(url)
    if key is not None:
        page.evaluate("k => localStorage.setItem('tokentrail-key', k)", key)
        page.reload()
    page.wait_for_function("() => document.body && document.body.dataset.loaded")


def texts(page: Page, selector: str) -> list[str]:
    return page.locator(selector).all_text_contents()


def post_events(url: str, events: list[dict[str, Any]]) -> None:
    r = httpx2.post(url + "/api/v1/events", json=events)
    assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text


def make_event(team: str, cost: str | None = None, *, ago: timedelta = timedelta(0), **kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1000,
        "output_tokens": 100,
        "team": team,
        "agent": f"{team}-agent",
        "session_id": f"{team}-{uuid.uuid4().hex[:6]}",
        "ts": (datetime.now(UTC) - ago).isoformat(),
        **kw,
    }
    if cost is not None:
        e["cost_usd"] = cost
    return e
