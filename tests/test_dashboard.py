"""The dashboard in a real headless Chromium (Chrome DevTools protocol over a websocket): it loads
the JSON API and shows spend by team, agent and model over time, sessions and budgets; with auth
on, a team key sees only its team."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

import tokentrail as tt
from tests._server import _collect_clients, serving  # noqa: F401 (an autouse fixture)
from tokentrail.server.keys import create_key

ADMIN = "dashboard-admin-key-0123"


def _browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no Chromium: .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("no Chromium installed (apt-get install chromium) for the dashboard test")
    return found


class Page:
    """One tab, driven over the DevTools protocol."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self._conn = connect(ws_url, max_size=50 * 1024 * 1024)
        self.ws = self._conn.__enter__()
        self.ids = itertools.count(1)

    def close(self) -> None:
        self._conn.__exit__(None, None, None)

    def call(self, method: str, **params: Any) -> Any:
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == n:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg.get("result")

    def js(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return r["result"].get("value")

    def open(self, url: str, *, key: str | None = None) -> None:
        self.call("Page.navigate", url=url)
        self.wait("document.readyState === 'complete'")
        if key is not None:
            self.js(f"localStorage.setItem('tokentrail-key', {json.dumps(key)})")
            self.call("Page.reload")
        self.wait("document.body && document.body.dataset.loaded")

    def wait(self, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.js(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {expression}")


@pytest.fixture(scope="module")
def chromium() -> Iterator[str]:
    """A headless Chromium; yields its DevTools HTTP endpoint."""
    binary = _browser()
    profile = tempfile.mkdtemp(prefix="tt-chromium-")
    proc = subprocess.Popen(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        endpoint = None
        deadline = time.monotonic() + 30
        while endpoint is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://([^/]+)/", line)
            if m:
                endpoint = f"http://{m.group(1)}"
            elif not line and proc.poll() is not None:
                break
        assert endpoint, "Chromium did not start its DevTools endpoint"
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(chromium: str) -> Iterator[Page]:
    target = httpx2.put(chromium + "/json/new?about:blank").json()
    p = Page(target["webSocketDebuggerUrl"])
    p.call("Page.enable")
    p.call("Runtime.enable")
    yield p
    p.close()
    httpx2.get(chromium + f"/json/close/{target['id']}")


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
        page.open(s.url + "/")
        assert page.js("document.body.dataset.loaded") == "error"  # auth is on: it asks for a key
        assert page.js("!document.getElementById('keybox').hidden")
        page.open(s.url + "/", key=ADMIN)
        assert page.js("document.body.dataset.loaded") == "true", page.js(
            "document.getElementById('error').textContent"
        )
        teams = page.js("[...document.querySelectorAll('#by-team tbody td:first-child')].map(e => e.textContent)")
        assert teams == ["legal", "cx"]  # the costlier first
        assert page.js("document.querySelectorAll('#chart rect.bar-seg').length") >= 2
        assert page.js("document.querySelectorAll('#sessions tbody tr').length") == 5
        assert "legal-month" in page.js("document.getElementById('budgets').textContent")
        assert page.js("document.querySelector('[data-total=calls] b').textContent") == "5"
        shot = page.call("Page.captureScreenshot", format="png")
        (tmp_path / "dashboard.png").write_bytes(base64.b64decode(shot["data"]))
        # drill into a session
        page.js("document.querySelector('#sessions a[data-session]').click()")
        page.wait("!document.getElementById('session-box').hidden")
        assert "llm" in page.wait("document.getElementById('session').textContent")
        # a team key: only its team
        page.js("localStorage.clear()")
        page.open(s.url + "/", key=legal_key)
        teams = page.js("[...document.querySelectorAll('#by-team tbody td:first-child')].map(e => e.textContent)")
        assert teams == ["legal"]
        assert page.js("document.querySelectorAll('#sessions tbody tr').length") == 3
        assert "cx" not in page.js("document.querySelector('main').textContent").replace("legal", "")
