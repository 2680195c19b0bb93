"""`GET /api/v1/anomalies`: scoped by the caller's key like the report and sessions routes."""

from __future__ import annotations

import time
from typing import Any

from starlette.testclient import TestClient

import tokentrail as tt
from tokentrail.analytics.anomalies import save
from tokentrail.analytics.detectors import Anomaly
from tokentrail.server import create_app
from tokentrail.server.keys import create_key

ADMIN = "tt-admin-test-key-0123456789"


def _anomaly(kind: str, team: str, agent: str, session: str) -> Anomaly:
    return Anomaly(
        kind=kind,
        dedup_key=f"s:{session}",
        severity="warning",
        ts_us=int(time.time() * 1_000_000) - 3_600_000_000,
        session_id=session,
        attrs=(None, team, None, agent, None, None, None, None),
        metric=5.0,
        baseline=None,
        threshold=3.0,
        cost_nusd=180_000_000,
        event_ids=("e1", "e2"),
        message=f"{kind}: agent '{agent}' … in session {session}",
    )


def get(c: TestClient, key: str, **params: Any) -> Any:
    return c.get("/api/v1/anomalies", params=params, headers={"X-Tokentrail-Key": key})


def test_anomalies_are_team_scoped(any_ledger: tt.Ledger) -> None:
    store = any_ledger.store
    save(store, [_anomaly("retry_loop", "legal", "a1", "s1"), _anomaly("token_spike", "cx", "b1", "s2")])
    save(store, [_anomaly("retry_loop", "cx", "b1", "s3")])
    legal = str(create_key(store, role="read", attribution={"team": "legal"})[0])
    everyone = str(create_key(store, role="read")[0])
    with TestClient(create_app(any_ledger, admin_key=ADMIN)) as c:
        rows = get(c, legal).json()["anomalies"]
        assert [(r["kind"], r["team"], r["session_id"]) for r in rows] == [("retry_loop", "legal", "s1")]
        assert rows[0]["event_ids"] == ["e1", "e2"] and rows[0]["cost_usd"] == "0.18"
        assert get(c, legal, team="cx").status_code == 403  # asking for another team: 403, not []
        assert get(c, legal, where="team=cx").status_code == 403
        assert get(c, legal, agent="b1").json()["anomalies"] == []
        assert len(get(c, everyone).json()["anomalies"]) == 3
        assert {r["session_id"] for r in get(c, everyone, kind="retry_loop").json()["anomalies"]} == {"s1", "s3"}
        assert [r["session_id"] for r in get(c, everyone, team="cx", kind="token_spike").json()["anomalies"]] == ["s2"]
        bad = get(c, everyone, kind="nope")
        assert bad.status_code == 400 and "unknown kind" in bad.json()["error"]["message"]
        assert get(c, everyone, limit="0").status_code == 400
        assert c.get("/api/v1/anomalies").status_code == 401


def test_a_user_key_sees_only_its_users_anomalies(ledger: tt.Ledger) -> None:
    mine = _anomaly("retry_loop", "legal", "a1", "s1")
    mine = Anomaly(
        **{
            **{f: getattr(mine, f) for f in Anomaly.__slots__},
            "attrs": (None, "legal", None, "a1", "ann", None, None, None),
        }
    )
    save(ledger.store, [mine, _anomaly("retry_loop", "legal", "a1", "s2")])
    key = str(create_key(ledger.store, role="read", attribution={"user": "ann"})[0])
    with TestClient(create_app(ledger, admin_key=ADMIN)) as c:
        rows = get(c, key).json()["anomalies"]
    assert [(r["session_id"], r["user"]) for r in rows] == [("s1", "ann")]


def test_the_dashboard_panel_shows_the_keys_anomalies(page: Any, ledger: tt.Ledger) -> None:
    from playwright.sync_api import expect

    from tests._browser import open_dashboard
    from tests._server import serving

    save(ledger.store, [_anomaly("retry_loop", "legal", "a1", "s1"), _anomaly("token_spike", "cx", "b1", "s2")])
    legal = str(create_key(ledger.store, role="read", attribution={"team": "legal"})[0])  # type: ignore[arg-type]
    with serving(ledger, admin_key=ADMIN) as s:
        open_dashboard(page, s.url + "/", key=legal)
        page.wait_for_function("() => !document.querySelector('#anomalies .loading')")
        expect(page.locator("#anomalies tbody tr")).to_have_count(1)
        expect(page.locator("#anomalies")).to_contain_text("retry_loop: agent 'a1'")
        expect(page.locator("#anomalies")).not_to_contain_text("token_spike")
