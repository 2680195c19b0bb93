"""Keys and auth: `tokentrail keys create|list|revoke`, 401 without a valid key, roles, virtual
keys holding a provider key on the server, and provider keys that appear nowhere."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tests._events import stored
from tests._server import serving
from tokentrail.cli import _load, app
from tokentrail.server.keys import create_key, list_keys, revoke_key
from tokentrail.testing import FakeUpstream, Reply

ADMIN = "admin-secret-key-0123456789"
M: Any = [{"role": "user", "content": "hello"}]


def test_keys_cli_create_list_revoke(sqlite_url: str) -> None:
    _load()
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "--team", "legal", "--role", "read", "--db", sqlite_url])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[0]
    assert key.startswith("tt-") and len(key) > 40
    listed = runner.invoke(app, ["keys", "list", "--json", "--db", sqlite_url])
    [row] = json.loads(listed.stdout)
    assert row["role"] == "read" and row["attribution"] == {"team": "legal"} and row["last4"] == key[-4:]
    assert key not in Path(sqlite_url[len("sqlite:///") :]).read_bytes().decode("latin-1")  # only a hash is kept
    assert runner.invoke(app, ["keys", "revoke", row["key_id"], "--db", sqlite_url]).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke", row["key_id"], "--db", sqlite_url]).exit_code == 2
    bad = runner.invoke(app, ["keys", "create", "--role", "root", "--db", sqlite_url])
    assert bad.exit_code == 2 and "role must be one of" in bad.output


def test_auth_on_needs_a_key_with_the_right_role(ledger: tt.Ledger, up: FakeUpstream) -> None:
    read, _ = create_key(ledger.store, role="read")  # type: ignore[arg-type]
    proxy, _ = create_key(ledger.store, role="proxy", attribution={"team": "legal"})  # type: ignore[arg-type]
    with serving(ledger, up, admin_key=ADMIN) as s:
        assert httpx2.get(s.url + "/api/v1/report").status_code == 401
        assert httpx2.get(s.url + "/api/v1/report", headers={"X-Tokentrail-Key": "tt-nope"}).status_code == 401
        assert httpx2.get(s.url + "/api/v1/report", headers={"X-Tokentrail-Key": read}).status_code == 200
        assert httpx2.get(s.url + "/api/v1/report", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
        assert httpx2.get(s.url + "/api/v1/report", headers={"X-Tokentrail-Key": proxy}).status_code == 403
        assert httpx2.get(s.url + "/healthz").status_code == 200
        assert httpx2.get(s.url + "/metrics").status_code == 401
        assert httpx2.get(s.url + "/metrics", headers={"X-Tokentrail-Key": read}).status_code == 200
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-own", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            c.chat.completions.create(model="gpt-4o-mini", messages=M)
        with pytest.raises(openai.PermissionDeniedError):  # a read key cannot proxy
            c.chat.completions.create(model="gpt-4o-mini", messages=M, extra_headers={"X-Tokentrail-Key": read})
        # the caller's own provider key is forwarded unchanged; its tokentrail key travels beside it
        c.chat.completions.create(model="gpt-4o-mini", messages=M, extra_headers={"X-Tokentrail-Key": proxy})
        with pytest.raises(openai.PermissionDeniedError):  # a legal key cannot bill another team
            c.chat.completions.create(
                model="gpt-4o-mini", messages=M, extra_headers={"X-Tokentrail-Key": proxy, "X-Tokentrail-Team": "cx"}
            )
    assert up.requests[-1].headers["authorization"] == "Bearer sk-own"
    assert "x-tokentrail-key" not in up.requests[-1].headers
    assert [e.team for e in stored(ledger)] == ["legal"]


def test_virtual_key_sends_the_servers_provider_key(
    ledger: tt.Ledger, up: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TT_TEST_OPENAI_KEY", "sk-held-by-the-server")
    virtual, _ = create_key(
        ledger.store,  # type: ignore[arg-type]
        role="proxy",
        attribution={"team": "legal", "agent": "contract-analyzer"},
        provider_key_env="TT_TEST_OPENAI_KEY",
    )
    with serving(ledger, up, admin_key=ADMIN) as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key=virtual, max_retries=0)
        c.chat.completions.create(model="gpt-4o-mini", messages=M)
    assert up.requests[-1].headers["authorization"] == "Bearer sk-held-by-the-server"
    [ev] = stored(ledger)
    assert (ev.team, ev.agent) == ("legal", "contract-analyzer")


def test_a_revoked_key_stops_working(ledger: tt.Ledger, up: FakeUpstream) -> None:
    key, record = create_key(ledger.store, role="read")  # type: ignore[arg-type]
    with serving(ledger, up, admin_key=ADMIN) as s:
        h = {"X-Tokentrail-Key": key}
        assert httpx2.get(s.url + "/api/v1/me", headers=h).status_code == 200
        assert revoke_key(ledger.store, record.key_id)  # type: ignore[arg-type]
        s.app.state.keys._loaded = float("-inf")  # what the next reload (within 5 s) does
        assert httpx2.get(s.url + "/api/v1/me", headers=h).status_code == 401
    assert list_keys(ledger.store) == []  # type: ignore[arg-type]


SECRET = "sk-proj-SECRETSECRET-0123456789abcdef"


def test_a_provider_key_appears_nowhere(
    ledger: tt.Ledger, up: FakeUpstream, caplog: pytest.LogCaptureFixture, sqlite_url: str
) -> None:
    """Through successful and failing calls (upstream error, unreachable upstream, a budget stop,
    a bad key, a Gemini ?key=), the provider key is in no stored row, log line, metric or error body."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="tokentrail")  # whatever level an earlier test left it at
    ledger.budgets.set("stop", scope={"team": "stopped"}, period="day", limit_usd="0.0000001")
    bodies: list[str] = []
    up.push(Reply(input_tokens=10), Reply(status=401, error_message="bad key"))
    with serving(ledger, up) as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key=SECRET, max_retries=0)
        c.chat.completions.create(model="gpt-4o-mini", messages=M)
        for extra in ({}, {"X-Tokentrail-Team": "stopped"}, {"X-Tokentrail-Key": "tt-unknown"}):
            with pytest.raises(openai.APIStatusError) as err:
                c.chat.completions.create(model="gpt-4o-mini", messages=M, extra_headers=extra)
            bodies.append(err.value.response.text)
        for _ in range(2):
            r = httpx2.post(
                s.url + f"/v1beta/models/gemini-2.5-flash:generateContent?key={SECRET}",
                json={"contents": [{"parts": [{"text": "hi"}]}]},
            )
            bodies.append(r.text)
        stream = c.chat.completions.create(model="gpt-4o-mini", messages=M, stream=True)
        list(stream)
        bodies.append(httpx2.get(s.url + "/metrics").text)
    with serving(ledger, urls={"openai": "http://127.0.0.1:9"}) as s:
        r = httpx2.post(
            s.url + "/v1/chat/completions",
            json={"model": "x", "messages": M},
            headers={"Authorization": f"Bearer {SECRET}"},
        )
        bodies.append(r.text)
    ledger.flush()
    db = Path(sqlite_url[len("sqlite:///") :])
    files = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    assert len(bodies) == 7
    # the SDK's own debug logs (the caller's side) print its headers; the server's never do
    server_logs = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith(("httpx", "httpcore", "openai"))
    )
    assert "upstream failed" in server_logs  # the unreachable upstream is logged, and without the key
    for where, text in [("db", files.decode("latin-1")), ("logs", server_logs), *(("body", b) for b in bodies)]:
        assert SECRET not in text, where
        assert SECRET[-12:] not in text, where
    assert stored(ledger)  # the calls were recorded all the same
