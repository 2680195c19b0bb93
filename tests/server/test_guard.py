"""What a web page could make a browser send is refused (issue 9, item 3): cross-origin writes,
simple-request content types on the server's own write routes, foreign Host names on loopback
(DNS rebinding); `serve` on a public address needs auth or an explicit flag. And the dashboard's
security headers (item 20): a CSP that still lets the page run, and no framing."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from importlib import resources
from typing import Any

import httpx2
import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tests._events import stored
from tests._server import serving
from tokentrail.cli import _load, app
from tokentrail.server.guard import Guard, is_loopback
from tokentrail.testing import FakeUpstream, Reply

EVIL = "https://evil.example"
M: Any = [{"role": "user", "content": "hi"}]


def event(**kw: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 999_999_999,
        "output_tokens": 1,
        **kw,
    }


def test_cross_origin_writes_are_refused_and_nothing_is_written(any_ledger: tt.Ledger, up: FakeUpstream) -> None:
    with serving(any_ledger, up) as s:
        events = s.url + "/api/v1/events"
        refused = [
            # what a page on another origin can send without a preflight
            httpx2.post(events, content=json.dumps([event()]), headers={"Content-Type": "text/plain", "Origin": EVIL}),
            httpx2.post(events, json=[event()], headers={"Origin": EVIL}),
            httpx2.post(events, json=[event()], headers={"Origin": "null"}),  # a sandboxed frame
            httpx2.post(events, json=[event()], headers={"Sec-Fetch-Site": "cross-site"}),
            httpx2.post(s.url + "/v1/traces", content=b"{}", headers={"Content-Type": "text/plain", "Origin": EVIL}),
            httpx2.post(
                s.url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": M}, headers={"Origin": EVIL}
            ),
        ]
        # a browser that sends no Origin: the content types it may send without a preflight
        simple = [
            httpx2.post(events, content=json.dumps([event()]), headers={"Content-Type": ctype})
            for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x")
        ]
        same_origin = httpx2.post(events, json=[event(team="same")], headers={"Origin": s.url})
        no_origin = httpx2.post(events, json=[event(team="cli")])
        up.push(Reply(input_tokens=7))
        gateway = httpx2.post(s.url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": M})
    assert [r.status_code for r in refused] == [403] * 6
    assert "another origin" in refused[0].json()["error"]["message"]
    assert refused[-1].json()["error"]["type"] == "permission_error"  # in the provider's own format
    assert [r.status_code for r in simple] == [415] * 3
    assert (same_origin.status_code, no_origin.status_code, gateway.status_code) == (200, 200, 200)
    assert len(up.requests) == 1  # the refused gateway call never went upstream
    assert sorted((e.team or "", e.input_tokens) for e in stored(any_ledger)) == [
        ("", 7),
        ("cli", 999_999_999),
        ("same", 999_999_999),
    ]


def test_a_foreign_host_name_on_loopback_is_refused(ledger: tt.Ledger, up: FakeUpstream) -> None:
    """DNS rebinding: attacker.example made to resolve to 127.0.0.1 reaches the server with that
    Host; loopback names with any port are served."""
    with serving(ledger, up) as s:
        port = s.port
        foreign = [
            httpx2.get(s.url + path, headers={"Host": host})
            for path in ("/api/v1/report", "/", "/metrics", "/v1/models")
            for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.evil.example")
        ]
        served = [
            httpx2.get(s.url + "/api/v1/report", headers={"Host": host})
            for host in (f"localhost:{port}", "localhost", f"127.0.0.1:{port}", f"[::1]:{port}", "app.localhost")
        ]
    assert [r.status_code for r in foreign] == [403] * len(foreign)
    assert "DNS rebinding" in foreign[0].json()["error"]["message"]
    assert [r.status_code for r in served] == [200] * len(served)
    assert up.requests == []


def test_allowed_hosts_and_non_loopback_connections() -> None:
    def scope(host: str, server: str, method: str = "GET") -> dict[str, Any]:
        return {"method": method, "headers": [(b"host", host.encode())], "server": (server, 8787)}

    assert Guard().refusal(scope("tt.corp.example", "127.0.0.1"), own=True) is not None
    assert Guard(["tt.corp.example"]).refusal(scope("tt.corp.example:443", "127.0.0.1"), own=True) is None
    assert Guard(["*"]).refusal(scope("anything.example", "::1"), own=True) is None
    # a connection to a public address (auth is on there): its Host is not checked
    assert Guard().refusal(scope("tt.corp.example", "10.0.0.5"), own=True) is None
    assert is_loopback("127.0.0.2") and is_loopback("::ffff:127.0.0.1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("localhost.evil.example")


def test_serve_on_a_public_address_without_auth_refuses_to_start(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _load()
    monkeypatch.delenv("TOKENTRAIL_ADMIN_KEY", raising=False)
    started: list[tuple[str, int]] = []
    monkeypatch.setattr("tokentrail.server.serve", lambda app, host, port, **kw: started.append((host, port)))
    runner = CliRunner()
    refused = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--db", sqlite_url])
    assert refused.exit_code == 2, refused.output
    assert "TOKENTRAIL_ADMIN_KEY" in refused.output and "--allow-unauthenticated" in refused.output
    assert started == []
    allowed = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--allow-unauthenticated", "--db", sqlite_url])
    assert allowed.exit_code == 0, allowed.output
    monkeypatch.setenv("TOKENTRAIL_ADMIN_KEY", "admin-secret-key-0123456789")
    assert runner.invoke(app, ["serve", "--host", "0.0.0.0", "--db", sqlite_url]).exit_code == 0
    monkeypatch.delenv("TOKENTRAIL_ADMIN_KEY")
    assert runner.invoke(app, ["serve", "--host", "127.0.0.1", "--db", sqlite_url]).exit_code == 0
    assert started == [("0.0.0.0", 8787), ("0.0.0.0", 8787), ("127.0.0.1", 8787)]


# -- the dashboard's headers ------------------------------------------------------------------------


def _directives(policy: str) -> dict[str, list[str]]:
    out = {}
    for part in policy.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


def test_the_dashboard_has_a_csp_that_lets_it_run_and_no_framing(ledger: tt.Ledger) -> None:
    page = resources.files("tokentrail.server.dashboard").joinpath("index.html").read_bytes()
    with serving(ledger) as s:
        r = httpx2.get(s.url + "/")
    assert r.status_code == 200 and r.content == page
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    csp = _directives(r.headers["content-security-policy"])
    assert csp["frame-ancestors"] == ["'none'"] and csp["default-src"] == ["'none'"]
    assert "'unsafe-inline'" not in csp["script-src"] and "'unsafe-eval'" not in csp["script-src"]
    # every inline script of the page is allowed by its hash, and the page runs nothing else
    scripts = re.findall(rb"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts
    for attrs, body in scripts:
        src = re.search(rb"\bsrc\s*=\s*[\"']?([^\"'\s>]*)", attrs)
        if src is not None:  # a script file of this server's own, never one from elsewhere
            assert not re.match(rb"(?i)([a-z]+:)?//", src.group(1)) and "'self'" in csp["script-src"]
            continue
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        assert f"'sha256-{digest}'" in csp["script-src"]
    assert not re.search(rb"<[^>]+\son[a-z]+\s*=", page)  # no inline event handlers (a hash cannot allow them)
    assert b"javascript:" not in page
    assert csp["connect-src"] == ["'self'"]  # the page fetches its own API
    # the page's code (inline and its own script files) fetches only relative URLs
    code = page + b"".join(
        f.read_bytes() for f in resources.files("tokentrail.server.dashboard").iterdir() if f.name.endswith(".js")
    )
    assert b"fetch(" in code and not re.search(rb"fetch\(\s*[\"'`]https?:", code)
    assert "'unsafe-inline'" in csp["style-src"]  # its <style> and the style="" of the bars it draws
