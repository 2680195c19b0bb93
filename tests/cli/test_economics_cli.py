"""`tokentrail report --metrics` (table, json, csv), `--tree`, and the agent tree of `tokentrail session`."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tests.analytics.test_economics import T0, fixture
from tokentrail import cli
from tokentrail.events import UsageEvent
from tokentrail.pricing import PriceBook

if not any(c.name == "report" for c in cli.app.registered_commands):
    cli._load()

ENV = {"COLUMNS": "220", "TOKENTRAIL_DB": None, "TOKENTRAIL_PRICES": None}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    u = f"sqlite:///{tmp_path_factory.mktemp('econ') / 'ledger.db'}"
    with tt.Ledger(u, prices=PriceBook(overrides="")) as led:
        fixture(led)
        with tt.session("orchestrator", session_id="root", ledger=led):
            led.record(UsageEvent(ts=T0, provider="x", model="y", cost_usd=Decimal("1"), session_id="root"))
            with tt.session("helper", session_id="kid", ledger=led):
                led.record_llm(provider="x", model="y", input_tokens=1, output_tokens=1, cost_usd="0.5", ts=T0)
    return u


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.app, list(args), env=ENV)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_metrics_json_by_agent(url: str) -> None:
    code, out, _ = run(
        "report", "--metrics", "all", "--by", "agent", "--since", "2026-01-01", "-f", "json", "--db", url
    )
    assert code == 0
    rows = {r["agent"]: r for r in json.loads(out)["rows"]}
    assert rows["a"]["cost_per_action"] == "0.65"
    assert rows["b"]["avg_cost_per_call"] == "0.205"
    assert rows["a"]["latency_p95"] == pytest.approx(290)


def test_metrics_csv_and_table(url: str) -> None:
    code, out, _ = run(
        "report", "-m", "cost_per_action,roi", "-b", "task_type", "--since", "2026-01-01", "-f", "csv", "--db", url
    )
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["task_type", "cost_per_action", "roi"]
    assert rows[[r[0] for r in rows].index("review")][:2] == ["review", "0.65"]
    code, out, _ = run("report", "-m", "all", "-b", "agent", "--since", "2026-01-01", "--db", url)
    assert code == 0
    assert "per action" in out and "$0.65" in out and "290 ms" in out


def test_metrics_usage_errors(url: str) -> None:
    assert run("report", "-m", "cost_per_nothing", "--db", url)[0] == 2
    assert run("report", "-m", "all", "-b", "hour", "--db", url)[0] == 2
    assert run("report", "--tree", "--db", url)[0] == 2


def test_tree_rollup_and_session_tree(url: str) -> None:
    code, out, _ = run(
        "report",
        "-m",
        "cost_usd,sessions",
        "-b",
        "session",
        "--tree",
        "--since",
        "2026-01-01",
        "-f",
        "json",
        "--db",
        url,
    )
    assert code == 0
    rows = {r["session"]: r for r in json.loads(out)["rows"]}
    assert "kid" not in rows and rows["root"]["cost_usd"] == "1.5"
    code, out, _ = run("session", "root", "--db", url)
    assert code == 0
    assert "Agent tree" in out and "own $1.00 · total $1.50" in out and "kid helper" in out
    code, out, _ = run("session", "root", "-f", "json", "--db", url)
    tree = json.loads(out)["agent_tree"]
    assert tree["total_cost_usd"] == "1.5" and tree["children"][0]["session_id"] == "kid"


def test_a_root_with_no_call_of_its_own_shows_its_tree(tmp_path: Path) -> None:
    u = f"sqlite:///{tmp_path / 'l.db'}"
    with (
        tt.Ledger(u, prices=PriceBook(overrides="")) as led,
        tt.session("boss", session_id="boss", ledger=led),
        tt.session("worker", session_id="w1", ledger=led),
    ):
        led.record_llm(provider="x", model="y", input_tokens=1, output_tokens=1, cost_usd="0.25", ts=T0)
    code, out, _ = run("session", "boss", "--db", u)
    assert code == 0 and "own $0.00 · total $0.25" in out and "w1 worker" in out
    assert run("session", "nobody", "--db", u)[0] == 2


def test_outcome_rows_of_an_older_version_are_read(tmp_path: Path) -> None:
    from tokentrail.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'l.db'}")
    store.write_outcomes([("o1", 1, "x", 1, "s", *(None,) * 8)])
    assert store.query("SELECT success, value_nusd FROM outcomes") == [(1, None)]
    store.close()
