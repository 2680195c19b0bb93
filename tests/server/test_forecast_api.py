"""GET /api/v1/forecast: the CLI's forecast over HTTP, scoped by the caller's key, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

import tokentrail as tt
from tests.cli.test_forecast_cli import DAYS, FIRST, history  # noqa: F401 (a fixture)
from tokentrail.server import create_app
from tokentrail.server.keys import create_key

ADMIN = "admin-key-for-tests-0123"


@pytest.fixture
def client(history: str) -> Iterator[tuple[TestClient, dict[str, str]]]:  # noqa: F811
    with tt.Ledger(history) as led:
        keys = {
            "legal": create_key(led.store, role="read", attribution={"team": "legal"})[0],  # type: ignore[arg-type]
            "all": create_key(led.store, role="read")[0],  # type: ignore[arg-type]
        }
        with TestClient(create_app(led, admin_key=ADMIN)) as c:
            yield c, keys


def get(c: TestClient, key: str, **params: Any) -> Any:
    return c.get("/api/v1/forecast", params=params, headers={"X-Tokentrail-Key": key})


def test_forecast_is_scoped_by_the_key(client: tuple[TestClient, dict[str, str]]) -> None:
    c, keys = client
    everyone = get(c, keys["all"], as_of="2026-03-11").json()["forecasts"]
    assert len(everyone) == 1 and float(everyone[0]["projected_usd"]) == pytest.approx(93.0, rel=0.02)
    assert [d["usd"] for d in everyone[0]["spent_days"]] == ["3.000000"] * 10
    legal = get(c, keys["legal"], as_of="2026-03-11").json()["forecasts"]
    assert float(legal[0]["projected_usd"]) == pytest.approx(62.0, rel=0.02)  # only legal's $2 a day
    by_team = get(c, keys["legal"], as_of="2026-03-11", by="team").json()["forecasts"]
    assert [f["group"] for f in by_team] == ["legal"]  # never another team's row
    r = get(c, keys["legal"], as_of="2026-03-11", where="team=cx")
    assert r.status_code == 403
    both = get(c, keys["all"], as_of="2026-03-11", by="team").json()["forecasts"]
    assert [f["group"] for f in both] == ["legal", "cx"]


@pytest.mark.parametrize(
    "params", [{"as_of": "soon"}, {"by": "day"}, {"by": "team,agent"}, {"by": "nonsense"}, {"tz": "Mars/Olympus"}]
)
def test_bad_parameters_are_400(client: tuple[TestClient, dict[str, str]], params: dict[str, str]) -> None:
    c, keys = client
    r = get(c, keys["all"], **params)
    assert r.status_code == 400
    assert r.json()["error"]


def test_openapi_lists_it(client: tuple[TestClient, dict[str, str]]) -> None:
    c, _ = client
    doc = c.get("/api/v1/openapi.json").json()
    assert "/api/v1/forecast" in doc["paths"]
    assert DAYS and FIRST  # the history fixture's shape


def test_as_of_out_of_range_is_400(client: tuple[TestClient, dict[str, str]]) -> None:
    c, keys = client
    for day in ("0001-01-01", "9999-12-31"):
        r = get(c, keys["all"], as_of=day)
        assert r.status_code == 400 and "as-of" in r.json()["error"]["message"]
