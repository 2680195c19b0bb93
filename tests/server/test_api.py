"""The JSON API: the CLI's reports over HTTP, the OpenAPI schema, and team scoping: a team key
never sees another team's rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

import tokentrail as tt
from tokentrail.analytics import reports
from tokentrail.server import create_app
from tokentrail.server.keys import create_key

ADMIN = "admin-key-for-tests-0123"


def _event(team: str, agent: str, session: str, tokens: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": tokens,
        "output_tokens": 10,
        "team": team,
        "agent": agent,
        "session_id": session,
    }


@pytest.fixture
def filled(ledger: tt.Ledger) -> Iterator[tuple[TestClient, dict[str, str]]]:
    keys = {
        "legal": create_key(ledger.store, role="read", attribution={"team": "legal"})[0],  # type: ignore[arg-type]
        "cx": create_key(ledger.store, role="read", attribution={"team": "cx"})[0],  # type: ignore[arg-type]
        "all": create_key(ledger.store, role="read")[0],  # type: ignore[arg-type]
    }
    ledger.budgets.set("legal-month", scope={"team": "legal"}, period="month", limit_usd=100)
    ledger.budgets.set("cx-month", scope={"team": "cx"}, period="month", limit_usd=100)
    with TestClient(create_app(ledger, admin_key=ADMIN)) as c:
        events = [_event("legal", "a1", "s-legal", 1000), _event("legal", "a2", "s-legal", 500)]
        events += [
            _event("cx", "b1", "s-cx", 3000),
            _event("cx", "b1", "s-mixed", 1),
            _event("legal", "a1", "s-mixed", 1),
        ]
        r = c.post("/api/v1/events", json=events, headers={"X-Tokentrail-Key": ADMIN})
        assert r.json()["accepted"] == 5
        yield c, keys


def get(c: TestClient, key: str, path: str, **params: Any) -> Any:
    return c.get(path, params=params, headers={"X-Tokentrail-Key": key})


def test_report_is_the_cli_report(filled: tuple[TestClient, dict[str, str]], ledger: tt.Ledger) -> None:
    c, keys = filled
    r = get(c, keys["all"], "/api/v1/report", by="team,agent", since="7d")
    assert r.status_code == 200
    direct = reports.report(ledger.store, by=("team", "agent"), since=None)
    assert r.json()["rows"] == [row.to_dict() | {} for row in _json(direct.rows)]
    assert get(c, keys["all"], "/api/v1/report", by="nonsense").status_code == 400
    assert get(c, keys["all"], "/api/v1/report", since="yesterday-ish").status_code == 400


def _json(rows: Any) -> Any:
    import json

    from starlette.responses import JSONResponse

    class Row:
        def __init__(self, d: dict[str, Any]) -> None:
            self.d = d

        def to_dict(self) -> dict[str, Any]:
            return self.d

    return [Row(json.loads(JSONResponse(r.to_dict()).body)) for r in rows]


def test_a_team_key_never_sees_another_teams_rows(filled: tuple[TestClient, dict[str, str]]) -> None:
    c, keys = filled
    legal = keys["legal"]
    rows = get(c, legal, "/api/v1/report", by="team,agent").json()["rows"]
    assert {r["team"] for r in rows} == {"legal"}
    assert get(c, legal, "/api/v1/report", by="team").json()["totals"]["input_tokens"] == 1501
    assert get(c, legal, "/api/v1/report", by="team", where="team=cx").status_code == 403
    assert get(c, legal, "/api/v1/report", by="agent", where="agent=b1").json()["rows"] == []
    sessions = get(c, legal, "/api/v1/sessions").json()["sessions"]
    assert {s["session_id"] for s in sessions} <= {"s-legal", "s-mixed"}
    assert all(s["team"] == "legal" for s in sessions)
    assert get(c, legal, "/api/v1/sessions/s-legal").status_code == 200
    assert get(c, legal, "/api/v1/sessions/s-cx").status_code == 404  # never revealed
    mixed = get(c, legal, "/api/v1/sessions/s-mixed").json()  # session ids are per team: legal's part only
    assert mixed["team"] == "legal" and mixed["totals"]["input_tokens"] == 1
    assert [b["budget"] for b in get(c, legal, "/api/v1/budgets").json()["budgets"]] == ["legal-month"]
    assert get(c, legal, "/api/v1/unpriced").status_code == 403
    everything = get(c, keys["all"], "/api/v1/report", by="team").json()
    assert {r["team"] for r in everything["rows"]} == {"legal", "cx"}
    assert get(c, keys["cx"], "/api/v1/sessions/s-cx").json()["totals"]["input_tokens"] == 3000
    assert get(c, legal, "/metrics").status_code == 403  # metrics carry every team's labels


def test_openapi_and_me(filled: tuple[TestClient, dict[str, str]]) -> None:
    c, keys = filled
    doc = c.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.") and "/api/v1/events" in doc["paths"]
    assert get(c, keys["legal"], "/api/v1/me").json() == {
        "role": "read",
        "team": "legal",
        "attribution": {"team": "legal"},
        "auth_required": True,
    }
    assert get(c, keys["all"], "/api/v1/alerts").json() == {"alerts": []}


def test_budgets_say_when_an_overage_locked_them_and_what_is_suspended(
    filled: tuple[TestClient, dict[str, str]], ledger: tt.Ledger
) -> None:
    from decimal import Decimal

    from tokentrail.context import Attribution

    c, keys = filled
    b = ledger.budgets
    hold = b.reserve(cost_usd="1", attribution=Attribution(team="legal"))
    b.post(hold, cost_usd=Decimal(101))  # past its limit and what it reserved: locked until the month ends
    b.suspend({"team": "cx"}, reason="runaway")
    b.suspend({"agent": "a1"})
    rows = {r["budget"]: r for r in get(c, keys["all"], "/api/v1/budgets").json()["budgets"]}
    assert rows["legal-month"]["locked"] is True
    assert rows["legal-month"]["blocked_until"] == rows["legal-month"]["period_end"] is not None
    assert (rows["cx-month"]["locked"], rows["cx-month"]["blocked_until"]) == (False, None)
    everything = get(c, ADMIN, "/api/v1/budgets").json()["suspensions"]
    assert sorted((s["scope"], s["reason"]) for s in everything) == [("agent=a1", None), ("team=cx", "runaway")]
    assert all(s["since"] for s in everything)
    assert get(c, keys["legal"], "/api/v1/budgets").json()["suspensions"] == []  # another team's kill switch
    assert [s["scope"] for s in get(c, keys["cx"], "/api/v1/budgets").json()["suspensions"]] == ["team=cx"]
    # what the OpenAPI document promises is what the answer holds
    doc = c.get("/api/v1/openapi.json").json()
    promised = doc["paths"]["/api/v1/budgets"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    answer = get(c, ADMIN, "/api/v1/budgets").json()
    assert set(answer) == set(promised["properties"])
    budget_keys = set(promised["properties"]["budgets"]["items"]["properties"])
    assert all(set(row) == budget_keys for row in answer["budgets"])
    suspension_keys = set(promised["properties"]["suspensions"]["items"]["properties"])
    assert all(set(row) == suspension_keys for row in answer["suspensions"])


def test_an_unpriced_session_costs_null_never_a_string(ledger: tt.Ledger) -> None:
    with TestClient(create_app(ledger)) as c:
        events = [
            {**_event("legal", "a1", "s-unpriced", 10), "model": "acme-private"},
            _event("legal", "a1", "s-ok", 10),
        ]
        assert c.post("/api/v1/events", json=events).json()["accepted"] == 2
        found = {s["session_id"]: s for s in c.get("/api/v1/sessions").json()["sessions"]}
    assert found["s-unpriced"]["unpriced_calls"] == 1
    assert found["s-unpriced"]["cost_usd"] in (None, "0", "0.000000000")  # null: unpriced, never "None"
    assert found["s-ok"]["cost_usd"] not in (None, "None") and float(found["s-ok"]["cost_usd"]) > 0


_param = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(
        ["/api/v1/report", "/api/v1/sessions", "/api/v1/alerts", "/api/v1/sessions/x", "/api/v1/budgets"]
    ),
    params=st.dictionaries(
        st.sampled_from(["by", "since", "until", "tz", "where", "limit", "offset", "agent", "customer"]),
        _param,
        max_size=4,
    ),
)
def test_property_no_500_and_clear_4xx(
    filled: tuple[TestClient, dict[str, str]], path: str, params: dict[str, str]
) -> None:
    c, keys = filled
    for key in (keys["legal"], keys["all"]):
        r = get(c, key, path, **params)
        assert r.status_code < 500, (path, params, r.text)
        if r.status_code >= 400:
            assert r.json()["error"]["message"]


def test_sessions_page_and_filter_by_agent_team_customer(any_ledger: tt.Ledger) -> None:
    """27 sessions: pages of a bounded size that never overlap and end with more=false; filters
    by agent, team and customer; a team key filtering on another team is refused, not widened."""
    legal = create_key(any_ledger.store, role="read", attribution={"team": "legal"})[0]  # type: ignore[arg-type]
    with TestClient(create_app(any_ledger, admin_key=ADMIN)) as c:
        events = []
        for i in range(27):
            team = "legal" if i % 3 else "cx"
            e = _event(team, f"agent-{i % 4}", f"s-{i:02d}", 100 + i)
            e["customer"] = "acme" if i % 2 else "globex"
            e["ts"] = f"2026-01-01T00:{i:02d}:00+00:00"
            events.append(e)
        assert c.post("/api/v1/events", json=events, headers={"X-Tokentrail-Key": ADMIN}).json()["accepted"] == 27
        seen: list[str] = []
        offset = 0
        for _ in range(10):  # bounded: 27 sessions in pages of 10 take three
            page = get(c, ADMIN, "/api/v1/sessions", limit=10, offset=offset).json()
            assert page["offset"] == offset and page["limit"] == 10
            seen += [s["session_id"] for s in page["sessions"]]
            if not page["more"]:
                break
            offset += 10
        assert seen == [f"s-{i:02d}" for i in reversed(range(27))]  # newest first, each once
        assert len(page["sessions"]) == 7
        assert get(c, ADMIN, "/api/v1/sessions", limit=10, offset=20).json()["more"] is False
        ids = lambda **q: {s["session_id"] for s in get(c, ADMIN, "/api/v1/sessions", **q).json()["sessions"]}  # noqa: E731
        assert ids(agent="agent-1") == {f"s-{i:02d}" for i in range(27) if i % 4 == 1}
        assert ids(customer="acme") == {f"s-{i:02d}" for i in range(27) if i % 2}
        assert ids(customer="acme", team="cx") == {f"s-{i:02d}" for i in range(27) if i % 2 and not i % 3}
        assert ids(customer="nobody") == set()
        # a team key: its own team's sessions only, whatever the filters say
        assert ids(customer="acme") != ids(customer="acme", team="cx")
        mine = {s["session_id"] for s in get(c, legal, "/api/v1/sessions", customer="acme").json()["sessions"]}
        assert mine == {f"s-{i:02d}" for i in range(27) if i % 2 and i % 3}
        assert get(c, legal, "/api/v1/sessions", team="cx").status_code == 403
        # bounded: a page size and an offset past their limits are a clear 400
        for bad in ({"limit": 1001}, {"limit": 0}, {"offset": -1}, {"offset": 100_001}, {"offset": "x"}):
            r = get(c, ADMIN, "/api/v1/sessions", **bad)
            assert r.status_code == 400 and ("limit" in r.text or "offset" in r.text), (bad, r.text)
