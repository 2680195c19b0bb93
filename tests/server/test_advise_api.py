"""`GET /api/v1/advice` and `POST /api/v1/advice/{id}/dismiss`: a team key sees and dismisses only
its own team's advice; dismissals persist; bad input is a 400 naming it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from starlette.testclient import TestClient

import tokentrail as tt
from tests._advice_fleet import planted, record
from tokentrail.events import new_event_id
from tokentrail.server import create_app
from tokentrail.server.keys import create_key

ADMIN = "tt-admin-test-key-0123456789"


def _fleet(ledger: tt.Ledger) -> None:
    fleet = planted(now=datetime.now(UTC))
    # the legal team runs a writer of its own, with the same runaway output
    legal = [
        replace(e, event_id=new_event_id(), team="legal", agent="legal-writer", session_id=f"legal-{e.session_id}")
        for e in fleet.events
        if e.agent == "writer"
    ]
    fleet.events += legal
    record(ledger, fleet)


def get(c: TestClient, key: str, **params: Any) -> Any:
    return c.get("/api/v1/advice", params=params, headers={"X-Tokentrail-Key": key})


def post(c: TestClient, key: str, advice_id: str) -> Any:
    return c.post(
        f"/api/v1/advice/{advice_id}/dismiss",
        headers={"X-Tokentrail-Key": key, "Content-Type": "application/json"},
        content=b"{}",
    )


def test_advice_is_team_scoped_and_dismissals_persist(any_ledger: tt.Ledger) -> None:
    _fleet(any_ledger)
    store = any_ledger.store
    legal = str(create_key(store, role="read", attribution={"team": "legal"})[0])
    everyone = str(create_key(store, role="read")[0])
    with TestClient(create_app(any_ledger, admin_key=ADMIN)) as c:
        mine = get(c, legal).json()["recommendations"]
        assert [(r["kind"], r["agent"], r["team"]) for r in mine] == [("runaway_output", "legal-writer", "legal")]
        assert mine[0]["monthly_saving_usd"] == "0.192" and "× 30/30" in mine[0]["formula"]
        assert get(c, legal, team="platform").status_code == 403  # another team: 403, not []
        every = get(c, everyone).json()["recommendations"]
        assert len(every) == 7
        platform_writer = next(r for r in every if r["agent"] == "writer")
        # a team key cannot dismiss (nor learn of) another team's recommendation
        refused = post(c, legal, platform_writer["id"])
        assert refused.status_code == 404
        assert platform_writer["id"] in {r["id"] for r in get(c, everyone).json()["recommendations"]}
        # its own: dismissed, and stays so
        done = post(c, legal, mine[0]["id"])
        assert done.status_code == 200 and done.json()["dismissed"]["dismissed"] is True
        assert get(c, legal).json()["recommendations"] == []
        assert get(c, legal).json()["dismissed"] == 1
        assert get(c, legal, all="true").json()["recommendations"][0]["dismissed"] is True
        assert len(get(c, everyone).json()["recommendations"]) == 6
    with TestClient(create_app(any_ledger, admin_key=ADMIN)) as c:  # a restarted server
        assert get(c, legal).json()["recommendations"] == []


def test_bad_input(ledger: tt.Ledger) -> None:
    everyone = str(create_key(ledger.store, role="read")[0])
    with TestClient(create_app(ledger, admin_key=ADMIN)) as c:
        assert c.get("/api/v1/advice").status_code == 401
        bad = get(c, everyone, kind="nope")
        assert bad.status_code == 400 and "unknown kind" in bad.json()["error"]["message"]
        assert get(c, everyone, since="soon").status_code == 400
        assert get(c, everyone, all="maybe").status_code == 400
        assert post(c, everyone, "x" * 200).status_code == 400
        assert post(c, everyone, "model_routing-000000000000").status_code == 404
        assert get(c, everyone).json()["recommendations"] == []


def test_a_key_narrower_than_a_recommendation_cannot_dismiss_it_for_everyone(any_ledger: tt.Ledger) -> None:
    fleet = planted(now=datetime.now(UTC))
    fleet.events = [replace(e, project="p1") if e.agent == "writer" else e for e in fleet.events]
    record(any_ledger, fleet)
    store = any_ledger.store
    one_project = str(create_key(store, role="read", attribution={"team": "platform", "project": "p1"})[0])
    everyone = str(create_key(store, role="read")[0])
    with TestClient(create_app(any_ledger, admin_key=ADMIN)) as c:
        seen = get(c, one_project).json()["recommendations"]
        writer = next(r for r in seen if r["agent"] == "writer")  # computed from p1's calls only
        refused = post(c, one_project, writer["id"])
        assert refused.status_code == 403 and "project" in refused.json()["error"]["message"]
        assert writer["id"] in {r["id"] for r in get(c, everyone).json()["recommendations"]}  # still shown
        assert post(c, everyone, writer["id"]).status_code == 200
