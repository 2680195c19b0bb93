"""`GET /api/v1/export` and `/api/v1/reprice`: streamed exports whose totals equal the report's,
scoped by the key (a team key exports only its team), allocation by the server's rules only."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import tokentrail as tt
from tokentrail.analytics import reports
from tokentrail.server import create_app
from tokentrail.server.keys import create_key

ADMIN = "admin-key-for-tests-0123"


def _event(team: str, model: str, tokens: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "provider": "openai",
        "model": model,
        "input_tokens": tokens,
        "output_tokens": 10,
        "team": team,
        "agent": f"{team}-bot",
    }


@pytest.fixture
def filled(any_ledger: tt.Ledger) -> Iterator[tuple[TestClient, dict[str, str]]]:
    store = any_ledger.store
    keys = {
        "legal": create_key(store, role="read", attribution={"team": "legal"})[0],  # type: ignore[arg-type]
        "all": create_key(store, role="read")[0],  # type: ignore[arg-type]
    }
    with TestClient(create_app(any_ledger, admin_key=ADMIN)) as c:
        events = [_event("legal", "gpt-4o", 1000), _event("cx", "gpt-4o", 3000), _event("platform", "gpt-4o-mini", 900)]
        events.append(_event("legal", "house-llm", 5))
        r = c.post("/api/v1/events", json=events, headers={"X-Tokentrail-Key": ADMIN})
        assert r.json()["accepted"] == 4
        yield c, keys


def get(c: TestClient, key: str, path: str, **params: Any) -> Any:
    return c.get(path, params=params, headers={"X-Tokentrail-Key": key})


def _rows(r: Any) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(r.text)))


def test_export_totals_and_scope(filled: tuple[TestClient, dict[str, str]], any_ledger: tt.Ledger) -> None:
    c, keys = filled
    r = get(c, keys["all"], "/api/v1/export", format="focus", since="1d")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    rows = _rows(r)
    total = sum(Decimal(x["BilledCost"]) for x in rows)
    assert total == reports.report(any_ledger.store).totals.cost_usd
    legal = _rows(get(c, keys["legal"], "/api/v1/export", format="csv"))
    assert legal and {x["team"] for x in legal} == {"legal"}
    assert any(x["unpriced"] == "true" and x["cost_usd"] == "" for x in legal)  # house-llm: null, not $0
    assert get(c, keys["legal"], "/api/v1/export", where="team=cx").status_code == 403
    assert get(c, keys["all"], "/api/v1/export", format="xml").status_code == 400
    assert get(c, keys["all"], "/api/v1/export", since="not-a-time").status_code == 400
    assert get(c, keys["all"], "/api/v1/export", allocated="1").status_code == 400  # no rules on this server


def test_export_parquet(filled: tuple[TestClient, dict[str, str]], any_ledger: tt.Ledger) -> None:
    import pyarrow.parquet as pq

    c, keys = filled
    r = get(c, keys["all"], "/api/v1/export", format="focus-parquet")
    assert r.status_code == 200
    table = pq.read_table(io.BytesIO(r.content))
    assert sum(table.column("BilledCost").to_pylist()) == reports.report(any_ledger.store).totals.cost_usd


def test_allocated_export_keeps_the_teams_share(
    filled: tuple[TestClient, dict[str, str]], any_ledger: tt.Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, keys = filled
    rules = tmp_path / "alloc.toml"
    rules.write_text('[[allocations]]\nname = "p"\nfrom = { team = "platform" }\nto = "team"\n')
    monkeypatch.setenv("TOKENTRAIL_ALLOCATION", str(rules))
    everything = _rows(get(c, keys["all"], "/api/v1/export", format="csv", allocated="1"))
    assert sum(Decimal(x["cost_usd"] or 0) for x in everything) == reports.report(any_ledger.store).totals.cost_usd
    assert "platform" not in {x["team"] for x in everything}
    legal = _rows(get(c, keys["legal"], "/api/v1/export", format="csv", allocated="1"))
    assert {x["team"] for x in legal} == {"legal"} and any(x["allocated_from"] == "p:team=platform" for x in legal)


def test_reprice_what_if(filled: tuple[TestClient, dict[str, str]]) -> None:
    c, keys = filled
    r = get(c, keys["legal"], "/api/v1/reprice", by="team", model_map="gpt-4o=gpt-4o-mini")
    assert r.status_code == 200, r.text
    data = r.json()
    assert [row["team"] for row in data["rows"]] == ["legal"]
    assert Decimal(data["totals"]["repriced_usd"]) < Decimal(data["totals"]["cost_usd"])
    assert get(c, keys["legal"], "/api/v1/reprice", model_map="nonsense").status_code == 400
    doc = get(c, keys["all"], "/api/v1/openapi.json").json()
    assert {"/api/v1/export", "/api/v1/reprice"} <= set(doc["paths"])
    assert json.dumps(doc)
