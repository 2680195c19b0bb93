"""Team isolation, attacked: a key of team alpha, on every route of the server, with every way of
spelling a parameter (case, duplicates, percent-encoding, `+`, spaces, Unicode), tags, session
ids and event ids, never reads, probes, shadows or writes team beta's data. On both backends.

Team beta's data carries a marker ("beta") in every attribute, so a leak shows as that text in an
answer alpha gets."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

import tokentrail as tt
from tests._events import stored
from tests._server import quarantined, serving
from tokentrail.integrations.otlp import span_event_id
from tokentrail.server import create_app
from tokentrail.server.keys import create_key
from tokentrail.testing import FakeUpstream

ADMIN = "admin-key-for-isolation-tests"
BETA_TOKENS = 987_651  # beta's input tokens: a number that shows if beta's totals leak
ALPHA_TOKENS = 1_234


@dataclass
class World:
    c: TestClient
    ledger: tt.Ledger
    keys: dict[str, str]  # "<team>-<role>" -> key; "all-read": a read key of no team
    beta_ids: list[str]  # event ids of beta's events


def _event(owner: str, session: str, tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": tokens,
        "output_tokens": 10,
        "team": owner,
        "agent": f"{owner}-agent",
        "user": f"{owner}-user",
        "session_id": session,
        "tags": {"env": f"{owner}-env", "team": f"{owner}-tag"},
        **extra,
    }


@pytest.fixture
def world(any_ledger: tt.Ledger) -> Iterator[World]:
    store: Any = any_ledger.store
    keys = {"all-read": create_key(store, role="read")[0]}
    for team in ("alpha", "beta"):
        for role in ("read", "ingest"):
            keys[f"{team}-{role}"] = create_key(store, role=role, attribution={"team": team})[0]
    for team in ("alpha", "beta"):
        any_ledger.budgets.set(f"{team}-month", scope={"team": team}, period="month", limit_tokens=2_000_000)
    any_ledger.budgets.set("per-team", scope={"team": "*"}, period="month", limit_tokens=1_000_000)
    with TestClient(create_app(any_ledger, admin_key=ADMIN)) as c:
        beta = [_event("beta", "sess-beta", BETA_TOKENS), _event("beta", "sess-shared", BETA_TOKENS)]
        alpha = [_event("alpha", "sess-alpha", ALPHA_TOKENS), _event("alpha", "sess-shared", ALPHA_TOKENS)]
        r = c.post("/api/v1/events", json=beta + alpha, headers={"X-Tokentrail-Key": ADMIN})
        assert r.status_code == 200 and r.json()["accepted"] == 4, r.text
        yield World(c, any_ledger, keys, [e["event_id"] for e in beta])


def _get(w: World, key: str, url: str, params: Any = None) -> Any:
    return w.c.get(url, params=params, headers={"X-Tokentrail-Key": w.keys[key]})


# Ways to ask for team beta, or to widen the filter to it, as `where` items.
HOSTILE_WHERE: list[Any] = [
    [("where", "team=beta")],
    [("where", "TEAM=beta")],
    [("where", "Team=beta")],
    [("where", "tEaM=beta")],
    [("where", " team =beta")],
    [("where", "team= beta ")],
    [("where", "team=alpha"), ("where", "team=beta")],
    [("where", "team=beta"), ("where", "team=alpha")],
    [("where", "team=alpha"), ("where", "TEAM=beta")],
    [("where", "Team=alpha"), ("where", "team=beta"), ("where", "tEaM=alpha")],
    [("where", "team=")],  # events of no team
    [("where", "team=alpha,beta")],
    [("where", "\uff54\uff45\uff41\uff4d=beta")],  # fullwidth "team"
    [("where", "team\u200b=beta")],  # a zero-width space
    [("where", "TEAM\u0307=beta")],
    [("where", "tag.team=beta-tag")],
    [("where", "TAG.TEAM=beta-tag")],
    [("where", "tag.env=beta-env")],
    [("where", "agent=beta-agent")],
    [("where", "AGENT=beta-agent")],
    [("where", "user=beta-user")],
    [("where", "session=sess-beta")],
    [("where", "Session=sess-shared")],
    [("where", "=beta")],
    [("where", "team")],
]
# The same, written into the query string by hand: percent-encoding and `+` for a space.
HOSTILE_RAW = [
    "where=%74eam%3Dbeta",
    "where=%54%45%41%4D=beta",
    "where=+team+=beta",
    "where=team%3Dalpha&where=%74eam%3Dbeta",
    "where=te%61m=beta&where=team=alpha",
    "where=%C5%BFession=sess-beta",  # a long s: case-folds to "session"
]
BY = ["team", "TEAM,agent", "team,agent,user,session", "tag.team", "TAG.env", "session,hour", "user,day"]


def _assert_alpha_only(r: Any, what: str) -> None:
    """The answer shows nothing of beta: a refusal (400, 403, 404) or an answer without it."""
    assert r.status_code in (200, 400, 403, 404), (what, r.status_code, r.text)
    if r.status_code == 200:
        text = r.text
        if r.headers["content-type"].startswith("application/json"):
            body = r.json()
            if isinstance(body, dict):
                body.pop("where", None)  # the request's own filters, echoed
            text = json.dumps(body)
        assert "beta" not in text.lower() and str(BETA_TOKENS) not in text, (what, text)


def test_reports_never_show_another_team(world: World) -> None:
    w = world
    for by in BY:
        r = _get(w, "alpha-read", "/api/v1/report", {"by": by})
        assert r.status_code == 200, (by, r.text)
        _assert_alpha_only(r, by)
        assert r.json()["totals"]["input_tokens"] == 2 * ALPHA_TOKENS
        for where in HOSTILE_WHERE:
            _assert_alpha_only(_get(w, "alpha-read", "/api/v1/report", [("by", by), *where]), f"{by} {where}")
        for raw in HOSTILE_RAW:
            _assert_alpha_only(_get(w, "alpha-read", f"/api/v1/report?by={by}&{raw}"), f"{by} {raw}")
    # the case variants are read as `team` and refused, not ignored or widened
    for spelling in ("TEAM", "Team", "tEaM", " team", "%74eam", "+team+"):
        r = _get(w, "alpha-read", f"/api/v1/report?by=team,agent&where={spelling}=beta")
        assert r.status_code == 403, (spelling, r.text)
    # and the same spellings for one's own team work
    r = _get(w, "alpha-read", "/api/v1/report?by=team&where=TEAM=alpha&where=Team=alpha")
    assert r.status_code == 200 and [row["team"] for row in r.json()["rows"]] == ["alpha"]
    # the hostile requests are not refused for the reason of being hostile: a key of no team sees beta
    everything = _get(w, "all-read", "/api/v1/report", {"by": "team", "where": "TEAM=beta"}).json()
    assert everything["totals"]["input_tokens"] == 2 * BETA_TOKENS


def test_session_lists_never_show_another_team(world: World) -> None:
    w = world
    extra = [[("team", "beta")], [("team", "alpha"), ("team", "beta")], [("team", "beta"), ("team", "alpha")]]
    extra += [[("agent", "beta-agent")], [("user", "beta-user")], [("Team", "beta")], [("TEAM", "beta")]]
    for params in [*HOSTILE_WHERE, *extra]:
        _assert_alpha_only(_get(w, "alpha-read", "/api/v1/sessions", params), str(params))
    for raw in HOSTILE_RAW:
        _assert_alpha_only(_get(w, "alpha-read", f"/api/v1/sessions?{raw}"), raw)
    for params in ([("team", "beta")], [("team", "alpha"), ("team", "beta")], [("where", "Team=beta")]):
        assert _get(w, "alpha-read", "/api/v1/sessions", params).status_code == 403, params
    found = _get(w, "alpha-read", "/api/v1/sessions").json()["sessions"]
    assert {s["session_id"]: s["tokens"] for s in found} == {
        "sess-alpha": ALPHA_TOKENS + 10,
        "sess-shared": ALPHA_TOKENS + 10,  # alpha's part of a session id both teams used
    }
    assert {s["team"] for s in found} == {"alpha"}


def test_a_session_of_another_team_is_not_found(world: World) -> None:
    w = world
    unknown = _get(w, "alpha-read", "/api/v1/sessions/sess-nobody")
    assert unknown.status_code == 404
    for sid in ("sess-beta", "SESS-BETA", "sess-beta%20", "sess-beta/", "%73ess-beta"):
        r = _get(w, "alpha-read", f"/api/v1/sessions/{sid}")
        assert r.status_code == 404, (sid, r.text)
        # the same answer as for an id nobody used, but for the id it names
        assert r.json()["error"]["message"].replace(repr(sid.replace("%20", " ").replace("%73", "s")), "X") == (
            unknown.json()["error"]["message"].replace("'sess-nobody'", "X")
        )
    shared = _get(w, "alpha-read", "/api/v1/sessions/sess-shared")
    _assert_alpha_only(shared, "sess-shared")
    assert shared.json()["totals"]["input_tokens"] == ALPHA_TOKENS
    assert _get(w, "beta-read", "/api/v1/sessions/sess-shared").json()["totals"]["input_tokens"] == BETA_TOKENS


def test_budgets_alerts_and_admin_routes_never_show_another_team(world: World) -> None:
    w = world
    w.ledger.flush()
    admin_view = w.c.get("/api/v1/budgets", headers={"X-Tokentrail-Key": ADMIN}).text
    assert "beta" in admin_view  # the data is there to leak
    for path in ("/api/v1/budgets", "/api/v1/alerts", "/api/v1/me"):
        for params in ([], [("budget", "beta-month")], [("budget", "per-team")], [("team", "beta")]):
            _assert_alpha_only(_get(w, "alpha-read", path, params), f"{path} {params}")
    for path in ("/api/v1/unpriced", "/metrics"):
        assert _get(w, "alpha-read", path).status_code == 403
    for path in ("/", "/healthz", "/openapi.json", "/api/v1/openapi.json"):
        _assert_alpha_only(_get(w, "alpha-read", path), path)
    # an ingest key reads nothing at all
    for path in ("/api/v1/report", "/api/v1/sessions", "/api/v1/sessions/sess-beta", "/api/v1/budgets"):
        assert _get(w, "alpha-ingest", path).status_code == 403, path


def _post(w: World, key: str, events: list[dict[str, Any]]) -> Any:
    return w.c.post("/api/v1/events", json={"events": events}, headers={"X-Tokentrail-Key": w.keys[key]})


def _beta_view(w: World) -> tuple[Any, ...]:
    w.ledger.flush()
    session = _get(w, "beta-read", "/api/v1/sessions/sess-beta").json()
    listed = _get(w, "beta-read", "/api/v1/sessions").json()["sessions"]
    report = _get(w, "beta-read", "/api/v1/report", {"by": "team,agent,session"}).json()
    return session["totals"], session["tree"], [(s["session_id"], s["tokens"]) for s in listed], report["rows"]


def test_a_session_id_of_another_team_cannot_be_hijacked(world: World) -> None:
    w = world
    before = _beta_view(w)
    r = _post(w, "alpha-ingest", [_event("alpha", "sess-beta", 5, team=None)])
    assert r.json()["accepted"] == 1  # alpha's own session of that id: nothing about beta's is told
    assert _beta_view(w) == before
    mine = _get(w, "alpha-read", "/api/v1/sessions/sess-beta")
    assert mine.status_code == 200 and mine.json()["totals"]["input_tokens"] == 5
    shown = mine.text.replace('"sess-beta"', "")  # the id alpha asked for
    assert mine.json()["team"] == "alpha" and "beta" not in shown and str(BETA_TOKENS) not in shown


def test_another_teams_event_id_is_neither_overwritten_nor_probed(world: World) -> None:
    w = world
    before = _beta_view(w)
    [beta_id, _] = w.beta_ids
    [stored_beta] = [e for e in stored(w.ledger) if str(e.event_id) == beta_id]
    # the exact content of beta's event but the team, and content that differs in every field
    same = _event("beta", "sess-beta", BETA_TOKENS, event_id=beta_id, team=None)
    same.update(agent="beta-agent", user="beta-user", tags={"env": "beta-env", "team": "beta-tag"})
    same["ts"] = stored_beta.ts.isoformat()
    other = _event("alpha", "sess-x", 3, event_id=beta_id, model="gpt-4o-mini", team=None)
    answers = []
    for event in (same, other):
        r = _post(w, "alpha-ingest", [event])
        assert r.status_code == 422
        [result] = r.json()["results"]
        answers.append(result)
    # one answer whatever the content: no field-by-field diff, no "duplicate" that confirms it
    assert (
        answers[0]
        == answers[1]
        == {
            "index": 0,
            "status": "rejected",
            "reason": "event_id already used with different content",
            "event_id": beta_id,
        }
    )
    assert _beta_view(w) == before
    [after] = [e for e in stored(w.ledger) if str(e.event_id) == beta_id]
    assert after == stored_beta
    assert len([q for q in quarantined(w.ledger) if beta_id in q[2]]) == 2  # refused, never silently dropped
    # a key of the owning team still gets the diff of its own event
    own = _post(w, "beta-ingest", [{**other, "team": "beta"}]).json()["results"][0]
    assert own["status"] == "rejected" and "model" in own["fields"]


def test_event_id_case_and_spelling_does_not_dodge_the_scope(world: World) -> None:
    w = world
    beta_id = w.beta_ids[0]
    for spelled in (beta_id.upper(), "{" + beta_id + "}", beta_id.replace("-", ""), "urn:uuid:" + beta_id):
        [result] = _post(w, "alpha-ingest", [_event("alpha", "s", 1, event_id=spelled)]).json()["results"]
        assert result["status"] == "rejected" and "fields" not in result, (spelled, result)
    for field in ("TEAM", "Team"):
        [result] = _post(w, "alpha-ingest", [{**_event("alpha", "s", 1), field: "beta"}]).json()["results"]
        assert result["status"] == "rejected", result
    [result] = _post(w, "alpha-ingest", [_event("beta", "s", 1)]).json()["results"]
    assert result["status"] == "rejected" and "team=alpha" in result["reason"]


def _span_doc(trace: str, span: str, tokens: int, session: str, team: str | None = None) -> dict[str, Any]:
    attrs = {
        "gen_ai.operation.name": {"stringValue": "chat"},
        "gen_ai.request.model": {"stringValue": "gpt-4o"},
        "gen_ai.provider.name": {"stringValue": "openai"},
        "gen_ai.usage.input_tokens": {"intValue": str(tokens)},
        "gen_ai.usage.output_tokens": {"intValue": "1"},
        "session.id": {"stringValue": session},
        **({"tokentrail.team": {"stringValue": team}} if team else {}),
    }
    s = {
        "traceId": trace,
        "spanId": span,
        "name": "chat",
        "startTimeUnixNano": "1767225600000000000",
        "endTimeUnixNano": "1767225601000000000",
        "attributes": [{"key": k, "value": v} for k, v in attrs.items()],
    }
    return {"resourceSpans": [{"scopeSpans": [{"spans": [s]}]}]}


TRACE, SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


def _export(w: World, key: str, doc: dict[str, Any]) -> Any:
    return w.c.post("/v1/traces", json=doc, headers={"X-Tokentrail-Key": w.keys[key]})


def test_a_span_never_shadows_another_teams_span(world: World) -> None:
    w = world
    a = _export(w, "alpha-ingest", _span_doc(TRACE, SPAN, 111, "sess-otlp"))
    b = _export(w, "beta-ingest", _span_doc(TRACE, SPAN, 222, "sess-otlp"))
    assert a.status_code == b.status_code == 200 and a.json() == b.json() == {}
    again = _export(w, "beta-ingest", _span_doc(TRACE, SPAN, 222, "sess-otlp"))  # a retry still counts once
    assert again.status_code == 200
    spans = [e for e in stored(w.ledger) if e.span_id == SPAN]
    assert sorted((e.team, e.input_tokens) for e in spans) == [("alpha", 111), ("beta", 222)]
    for team, tokens in (("alpha", 111), ("beta", 222)):
        session = _get(w, f"{team}-read", "/api/v1/sessions/sess-otlp").json()
        assert session["totals"]["input_tokens"] == tokens


@pytest.mark.parametrize("collector", ["beta-ingest", "admin"])
def test_a_span_id_taken_on_purpose_is_refused_not_dropped(world: World, collector: str) -> None:
    w = world
    w.keys["admin"] = ADMIN  # a collector of no team, that names the team in an attribute
    # alpha works out the id beta's span will get and posts an event under it first
    squat = span_event_id(TRACE, SPAN, 1767225600000000000, "beta")
    assert _post(w, "alpha-ingest", [_event("alpha", "s", 1, event_id=squat)]).json()["accepted"] == 1
    r = _export(w, collector, _span_doc(TRACE, SPAN, 222, "sess-otlp", team="beta"))
    assert r.status_code == 200
    assert r.json()["partialSuccess"]["rejectedSpans"] == "1"  # told, not a silent success
    assert any(q[0] == "otlp" and squat in q[2] for q in quarantined(w.ledger))


def test_a_collector_of_no_team_keeps_each_teams_span(world: World) -> None:
    w = world
    w.keys["admin"] = ADMIN
    for team, tokens in (("alpha", 111), ("beta", 222)):
        assert _export(w, "admin", _span_doc(TRACE, SPAN, tokens, "sess-otlp", team=team)).json() == {}
    again = _export(w, "admin", _span_doc(TRACE, SPAN, 222, "sess-otlp", team="beta")).json()  # stored once
    assert (
        again["partialSuccess"]["rejectedSpans"] == "0"
        and "already in the ledger" in again["partialSuccess"]["errorMessage"]
    )
    spans = [e for e in stored(w.ledger) if e.span_id == SPAN]
    assert sorted((e.team, e.input_tokens) for e in spans) == [("alpha", 111), ("beta", 222)]


def test_the_gateway_never_writes_as_another_team(any_ledger: tt.Ledger, up: FakeUpstream) -> None:
    store: Any = any_ledger.store
    proxy = create_key(store, role="proxy", attribution={"team": "alpha"})[0]
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with serving(any_ledger, up, admin_key=ADMIN) as s:

        def call(*headers: tuple[str, str]) -> Any:
            sent = [("X-Tokentrail-Key", proxy), ("Authorization", "Bearer sk-test"), *headers]
            return httpx2.post(s.url + "/v1/chat/completions", json=body, headers=sent)

        for name in ("X-Tokentrail-Team", "X-TOKENTRAIL-TEAM", "x-tokentrail-team"):
            assert call((name, "beta")).status_code == 403, name
        assert call(("X-Tokentrail-Team", "alpha"), ("X-Tokentrail-Team", "beta")).status_code == 403
        mixed = call(("X-Tokentrail-Team", "beta"), ("X-Tokentrail-Team", "alpha"))  # the last one is read
        hijack = call(("X-Tokentrail-Session", "sess-beta"))
        assert hijack.status_code == 200
    found = [(e.team, e.session_id) for e in stored(any_ledger)]
    assert found == [("alpha", None)] * (mixed.status_code == 200) + [("alpha", "sess-beta")]


def test_a_bucket_cannot_pass_itself_off_as_another_teams(world: World) -> None:
    """A `*` budget's bucket is shown as text ("team=alpha, user=…"): a value that holds
    ", team=beta" must not make alpha's bucket (or its alerts) show as beta's."""
    w = world
    from decimal import Decimal

    from tokentrail.context import Attribution

    b = w.ledger.budgets
    b.set("per-user", scope={"team": "*", "user": "*"}, period="month", limit_usd=10)
    b.set("per-agent", scope={"team": "*", "agent": "*"}, period="month", limit_usd=10)  # agent comes first
    for user in ("u, team=beta", "u"):
        hold = b.reserve(cost_usd="1", attribution=Attribution(team="alpha", user=user, agent=user))
        b.post(hold, cost_usd=Decimal(9))  # past 50% and 80%, and an overage: alerts
    w.ledger.flush()
    admin = {(r["budget"], r["scope"]) for r in _get_admin(w, "/api/v1/budgets")["budgets"]}
    assert ("per-user", "team=alpha, user=u, team=beta") in admin  # the row is there to leak
    assert any(a["budget"] == "per-user" for a in _get_admin(w, "/api/v1/alerts")["alerts"])
    for path, rows in (("/api/v1/budgets", "budgets"), ("/api/v1/alerts", "alerts")):
        seen = _get(w, "beta-read", path).json()[rows]
        assert all("alpha" not in r["scope"] for r in seen), (path, seen)
        mine = {(r["budget"], r["scope"]) for r in _get(w, "alpha-read", path).json()[rows]}
        assert {m for m in mine if m[0] in ("per-user", "per-agent")} == {
            ("per-user", "team=alpha, user=u"),
            ("per-user", "team=alpha, user=u, team=beta"),  # reads one way only: user "u, team=beta"
            ("per-agent", "agent=u, team=alpha"),
            # not "agent=u, team=beta, team=alpha": it reads two ways, so no team key sees it
        }


def _get_admin(w: World, path: str) -> Any:
    return w.c.get(path, headers={"X-Tokentrail-Key": ADMIN}).json()


@pytest.mark.parametrize(
    ("text", "keys", "team"),
    [
        ("team=a", ["team"], "a"),
        ("team=a, user=u", ["team", "user"], "a"),
        ("team=a, user=u, team=b", ["team", "user"], "a"),
        ("agent=x, team=b, team=a", ["agent", "team"], None),  # two readings
        ("agent=x, team=a", ["agent", "team"], "a"),
        ("team=a, user=x, user=y", ["team", "user"], None),  # team "a" or "a, user=x"
        ("all", [], None),
        ("agent=x", ["agent"], None),
        ("team=a", ["agent", "team"], None),
        ("agent=" + ", team=" * 2000 + "z", ["agent", "team"], None),  # many look-alikes: still quick
    ],
)
def test_the_team_of_a_bucket_is_read_only_when_unambiguous(text: str, keys: list[str], team: str | None) -> None:
    from tokentrail.server.budget_view import bucket_team

    assert bucket_team(text, keys) == team


def test_a_key_of_a_team_and_an_agent_keeps_to_both(world: World) -> None:
    w = world
    store: Any = w.ledger.store
    narrow = create_key(store, role="read", attribution={"team": "alpha", "agent": "alpha-bot"})[0]
    w.keys["narrow"] = narrow
    extra = _event("alpha", "sess-bot", 77, agent="alpha-bot")
    assert _post(w, "alpha-ingest", [extra]).json()["accepted"] == 1
    w.ledger.budgets.set("bot-month", scope={"team": "alpha", "agent": "alpha-bot"}, period="month", limit_usd=5)
    w.ledger.budgets.suspend({"team": "alpha"}, reason="team-wide")
    w.ledger.flush()
    r = _get(w, "narrow", "/api/v1/report", {"by": "team,agent"}).json()
    assert [(row["team"], row["agent"]) for row in r["rows"]] == [("alpha", "alpha-bot")]
    for where in ("agent=alpha-agent", "AGENT=alpha-agent", "Agent=alpha-bot&where=agent=alpha-agent"):
        assert _get(w, "narrow", f"/api/v1/report?where={where}").status_code == 403, where
    assert _get(w, "narrow", "/api/v1/sessions", {"agent": "alpha-agent"}).status_code == 403
    assert [s["session_id"] for s in _get(w, "narrow", "/api/v1/sessions").json()["sessions"]] == ["sess-bot"]
    assert _get(w, "narrow", "/api/v1/sessions/sess-alpha").status_code == 404
    budgets = _get(w, "narrow", "/api/v1/budgets").json()
    assert [b["budget"] for b in budgets["budgets"]] == ["bot-month"]  # not alpha-month: the whole team's
    assert budgets["suspensions"] == []  # a team-wide switch names no agent


def test_another_teams_calls_never_lock_a_session_budget(any_ledger: tt.Ledger) -> None:
    from decimal import Decimal

    from tokentrail.context import Attribution
    from tokentrail.exceptions import BudgetExceeded

    b = any_ledger.budgets
    b.set("per-session", period="session", limit_usd=1)  # every session, of any team
    hold = b.reserve(cost_usd="0.5", attribution=Attribution(team="alpha", session_id="sess-beta"))
    b.post(hold, cost_usd=Decimal(2))  # alpha's overage locks alpha's "sess-beta"
    with pytest.raises(BudgetExceeded):
        b.reserve(cost_usd="0.01", attribution=Attribution(team="alpha", session_id="sess-beta"))
    beta = b.reserve(cost_usd="0.01", attribution=Attribution(team="beta", session_id="sess-beta"))
    b.post(beta, cost_usd=Decimal("0.01"))  # beta's session of that id is its own
