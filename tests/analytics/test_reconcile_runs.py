"""Reconciliation runs are kept (both backends), so coverage can be followed over time; the JSON
API shows them to keys of no team only, and /metrics has each provider's latest coverage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

import tokentrail as tt
from tests._reconcile_data import FIXTURES, seed
from tests.analytics.test_reconcile import FILES, run
from tokentrail.analytics.reconcile import reconcile
from tokentrail.analytics.reconcile_files import read_file
from tokentrail.pricing import PriceBook
from tokentrail.server import create_app
from tokentrail.server.keys import create_key
from tokentrail.store import reconcile as runs

ADMIN = "admin-key-for-tests-0123"


@pytest.fixture
def led(db_url: str) -> Iterator[tt.Ledger]:
    ledger = tt.Ledger(db_url, prices=PriceBook(overrides=""))
    yield ledger
    ledger.close()


def _args(provider: str, url: str, *extra: str) -> list[str]:
    files = (a for f in FILES[provider] for a in ("--file", str(FIXTURES / f)))
    return ["reconcile", "--provider", provider, *files, "--db", url, *extra]


def test_each_run_is_kept_with_its_coverage(led: tt.Ledger, db_url: str) -> None:
    seed(led, "openai")
    code, out, err = run(*_args("openai", db_url, "--format", "json", "--until", "2026-01-10"))
    assert code == 0, err
    first = json.loads(out)
    code, out, err = run(*_args("openai", db_url, "--format", "json"))
    assert code == 0, err
    second = json.loads(out)
    assert first["coverage"] == "1.000000" and Decimal(second["coverage"]) < 1
    listed = runs.list_runs(led.store)
    assert [r["run_id"] for r in listed] == [second["run_id"], first["run_id"]]
    assert listed[0]["verdicts"] == second["verdicts"] and listed[0]["coverage"] == second["coverage"]
    assert listed[0]["provider_cost_usd"] == second["provider_cost_usd"]  # exact, as the provider billed it
    assert listed[0]["source"] == "files: openai-usage-completions.json, openai-costs.json"
    assert listed[1]["until"] == "2026-01-10T00:00:00+00:00"
    detail = runs.get_run(led.store, second["run_id"])
    assert detail is not None and detail["cells"] == second["cells"]
    assert runs.get_run(led.store, "0" * 32) is None
    assert runs.latest_coverage(led.store) == {"openai": second["coverage"]}
    code, _, _ = run(*_args("openai", db_url, "--no-store"))
    assert code == 0 and len(runs.list_runs(led.store)) == 2


def test_latest_coverage_per_provider(led: tt.Ledger) -> None:
    for provider in ("anthropic", "google"):
        seed(led, provider)
    for i, provider in enumerate(("anthropic", "google", "anthropic")):
        files = [read_file(provider, FIXTURES / f) for f in FILES[provider]]
        until = datetime(2026, 1, 10 if i == 0 else 31, tzinfo=UTC)
        r = reconcile(led.store, provider, files, until=until)
        runs.save_run(led.store, r.to_dict(), source="test", now=datetime(2026, 2, 1, i, tzinfo=UTC))
    latest = runs.latest_coverage(led.store)
    assert set(latest) == {"anthropic", "google"} and Decimal(latest["anthropic"]) < 1
    assert [r["provider"] for r in runs.list_runs(led.store, provider="anthropic")] == ["anthropic", "anthropic"]
    assert len(runs.list_runs(led.store, limit=1)) == 1


def test_api_and_metrics(ledger: tt.Ledger) -> None:
    seed(ledger, "google")
    files = [read_file("google", FIXTURES / f) for f in FILES["google"]]
    r = reconcile(ledger.store, "google", files)
    run_id = runs.save_run(ledger.store, r.to_dict(), source="test")
    team = create_key(ledger.store, role="read", attribution={"team": "legal"})[0]
    everyone = create_key(ledger.store, role="read")[0]
    with TestClient(create_app(ledger, admin_key=ADMIN)) as c:
        for key in (ADMIN, everyone):
            got = c.get("/api/v1/reconciliations", headers={"X-Tokentrail-Key": key})
            assert got.status_code == 200 and [x["run_id"] for x in got.json()["runs"]] == [run_id]
        one = c.get(f"/api/v1/reconciliations/{run_id}", headers={"X-Tokentrail-Key": everyone}).json()
        assert one["coverage"] == str(r.coverage) and len(one["cells"]) == len(r.cells)
        for path in ("/api/v1/reconciliations", f"/api/v1/reconciliations/{run_id}"):
            denied = c.get(path, headers={"X-Tokentrail-Key": team})
            assert denied.status_code == 403 and "no team" in denied.json()["error"]["message"]
            assert c.get(path).status_code == 401
        assert c.get("/api/v1/reconciliations/nope", headers={"X-Tokentrail-Key": ADMIN}).status_code == 404
        bad = c.get("/api/v1/reconciliations", params={"provider": "azure"}, headers={"X-Tokentrail-Key": ADMIN})
        assert bad.status_code == 400
        text = c.get("/metrics", headers={"X-Tokentrail-Key": ADMIN}).text
    gauge = {
        tuple(sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "tokentrail_reconcile_coverage_ratio"
    }
    assert gauge == {(("provider", "google"),): float(r.coverage or 0)}
