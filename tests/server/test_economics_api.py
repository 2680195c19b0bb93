"""Unit economics and agent trees over HTTP: the API routes under a key's scope, outcomes posted by
callers without the SDK, and the gateway's X-Tokentrail-Parent-Session / X-Tokentrail-Outcome headers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from starlette.testclient import TestClient

import tokentrail as tt
from tests._events import stored
from tests._server import serving
from tokentrail.analytics.economics import unit_economics
from tokentrail.server import create_app
from tokentrail.server.keys import create_key
from tokentrail.testing import FakeUpstream

ADMIN = "admin-key-for-tests-0123"
M: Any = [{"role": "user", "content": "hi"}]


def _event(team: str, session: str, parent: str | None, tokens: int) -> dict[str, Any]:
    e = {
        "event_id": str(uuid.uuid4()),
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": tokens,
        "output_tokens": 10,
        "team": team,
        "agent": f"{team}-bot",
        "session_id": session,
    }
    return {**e, "parent_session_id": parent} if parent else e


@pytest.fixture
def client(ledger: tt.Ledger) -> Iterator[tuple[TestClient, dict[str, str]]]:
    keys = {
        "legal": create_key(ledger.store, role="read", attribution={"team": "legal"})[0],  # type: ignore[arg-type]
        "legal_in": create_key(ledger.store, role="ingest", attribution={"team": "legal"})[0],  # type: ignore[arg-type]
    }
    with TestClient(create_app(ledger, admin_key=ADMIN)) as c:
        events = [
            _event("legal", "root", None, 1000),
            _event("legal", "kid", "root", 2000),
            _event("legal", "grandkid", "kid", 3000),
            _event("cx", "foreign", "kid", 4000),  # another team's sub-agent under legal's tree
        ]
        r = c.post("/api/v1/events", json=events, headers={"X-Tokentrail-Key": ADMIN})
        assert r.json()["accepted"] == 4
        yield c, keys


def get(c: TestClient, key: str, path: str, **params: Any) -> Any:
    return c.get(path, params=params, headers={"X-Tokentrail-Key": key})


def test_trees_over_the_api_sum_only_the_keys_scope(
    client: tuple[TestClient, dict[str, str]], ledger: tt.Ledger
) -> None:
    c, keys = client
    assert [r[0] for r in ledger.store.query("SELECT parent_session_id FROM events ORDER BY seq")] == [
        None, "root", "kid", "kid",
    ]  # fmt: skip
    everything = get(c, ADMIN, "/api/v1/trees/root").json()
    legal = get(c, keys["legal"], "/api/v1/trees/root").json()
    costs = {s: Decimal(v) for s, v in ledger.store.query("SELECT session_id, cost_nusd FROM events")}
    assert Decimal(everything["total_cost_usd"]) == sum(costs.values()) / Decimal(10**9)
    assert Decimal(legal["total_cost_usd"]) == (costs["root"] + costs["kid"] + costs["grandkid"]) / Decimal(10**9)
    assert legal["children"][0]["children"][0]["session_id"] == "grandkid"
    assert get(c, keys["legal"], "/api/v1/trees/nothing").status_code == 404
    rolled = get(c, keys["legal"], "/api/v1/economics", by="session", tree="true").json()
    assert [r["session"] for r in rolled["rows"]] == ["root"] and rolled["rows"][0]["cost_usd"] == legal[
        "total_cost_usd"
    ]
    assert get(c, keys["legal"], "/api/v1/economics", where="team=cx").status_code == 403
    assert get(c, keys["legal"], "/api/v1/economics", by="nonsense").status_code == 400
    assert get(c, keys["legal"], "/api/v1/economics", tree="maybe").status_code == 400


def test_outcomes_posted_count_once_and_only_in_scope(
    client: tuple[TestClient, dict[str, str]], ledger: tt.Ledger
) -> None:
    c, keys = client
    body = {"outcomes": [
        {"outcome_id": "o-1", "session_id": "root", "name": "reviewed", "value_usd": "3.5"},
        {"outcome_id": "o-2", "session_id": "kid", "name": "reviewed", "success": False},
    ]}  # fmt: skip
    h = {"X-Tokentrail-Key": keys["legal_in"]}
    assert c.post("/api/v1/outcomes", json=body, headers=h).json() == {"accepted": 2, "duplicate": 0}
    assert c.post("/api/v1/outcomes", json=body, headers=h).json() == {"accepted": 0, "duplicate": 2}
    other = {"outcomes": [{"outcome_id": "o-3", "session_id": "root", "name": "x", "team": "cx"}]}
    r = c.post("/api/v1/outcomes", json=other, headers=h)
    assert r.status_code == 400 and "team=legal" in r.json()["error"]["message"]
    assert (
        c.post("/api/v1/outcomes", json={"outcomes": [{"outcome_id": "o-4", "name": "x"}]}, headers=h).status_code
        == 400
    )
    assert c.post("/api/v1/outcomes", json=body, headers={"X-Tokentrail-Key": keys["legal"]}).status_code == 403
    assert ledger.store.query("SELECT team, success, value_nusd FROM outcomes ORDER BY outcome_id") == [
        ("legal", 1, 3_500_000_000), ("legal", 0, None),
    ]  # fmt: skip
    api = get(c, keys["legal"], "/api/v1/economics", by="team").json()["totals"]
    direct = unit_economics(ledger.store, by=["team"], scope={"team": "legal"}).totals
    assert api["cost_per_action"] == format(direct.cost_per_action, "f") and direct.successful_outcomes == 1
    assert api["failed_outcomes"] == 1 and api["roi"] == pytest.approx(direct.roi)


def test_gateway_headers_link_parent_and_record_outcomes(ledger: tt.Ledger, up: FakeUpstream) -> None:
    headers = {"X-Tokentrail-Session": "child", "X-Tokentrail-Parent-Session": "orchestrator"}
    with serving(ledger, up) as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-test", max_retries=0, default_headers=headers)
        client.chat.completions.create(model="gpt-4o-mini", messages=M)
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=M,
            extra_headers={"X-Tokentrail-Outcome": "answered", "X-Tokentrail-Outcome-Value": "0.75"},
        )
        with pytest.raises(openai.BadRequestError, match="Outcome-Success"):
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=M,
                extra_headers={"X-Tokentrail-Outcome": "x", "X-Tokentrail-Outcome-Success": "perhaps"},
            )
        lone = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-test", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="X-Tokentrail-Session"):
            lone.chat.completions.create(model="gpt-4o-mini", messages=M, extra_headers={"X-Tokentrail-Outcome": "x"})
    events = stored(ledger)
    assert [(e.session_id, e.parent_session_id) for e in events] == [("child", "orchestrator")] * 2
    assert len(up.requests) == 2  # the refused requests never went upstream
    assert ledger.store.query("SELECT session_id, name, success, value_nusd FROM outcomes") == [
        ("child", "answered", 1, 750_000_000)
    ]
