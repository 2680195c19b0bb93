"""`tokentrail advise`: the ranked table fits 80 columns, JSON carries the numbers, `--dismiss`
persists, bad input exits 2."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

import tokentrail as tt
from tests._advice_fleet import planted, record
from tokentrail import cli
from tokentrail.pricing import PriceBook

if not any(c.name == "advise" for c in cli.app.registered_commands):
    cli._load()

ENV = {"COLUMNS": "80", "TOKENTRAIL_DB": None, "TOKENTRAIL_PRICES": None}


@pytest.fixture
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    u = f"sqlite:///{tmp_path_factory.mktemp('advise') / 'ledger.db'}"
    with tt.Ledger(u, prices=PriceBook(overrides="")) as led:
        record(led, planted(now=datetime.now(UTC)))
    return u


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.app, list(args), env=ENV)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_the_table_fits_80_columns(url: str) -> None:
    code, out, _ = run("advise", "--db", url)
    assert code == 0, out
    assert all(cell_len(line) <= 80 for line in out.splitlines()), out
    assert "Set an output limit" in out and "writer (draft)" in out
    assert "set max_tokens=200 (the agent's p95 output)" in out
    assert out.index("writer (draft)") < out.index("tagger (classify)")  # ranked by saving
    assert "× 30/30 =" in out


def test_json_and_dismiss(url: str) -> None:
    code, out, _ = run("advise", "--db", url, "--format", "json", "--agent", "tagger")
    assert code == 0
    data = json.loads(out)
    (rec,) = data["recommendations"]
    assert rec["kind"] == "model_routing" and rec["agent"] == "tagger"
    assert rec["monthly_saving_usd"] == "0.0705"
    code, _, _ = run("advise", "--db", url, "--dismiss", rec["id"])
    assert code == 0
    code, out, _ = run("advise", "--db", url, "--format", "json", "--agent", "tagger")
    assert json.loads(out)["recommendations"] == [] and json.loads(out)["dismissed"] == 1
    code, out, _ = run("advise", "--db", url, "--agent", "tagger")
    assert "No savings advice" in out and "1 dismissed" in out
    code, out, _ = run("advise", "--db", url, "--format", "json", "--agent", "tagger", "--all")
    assert json.loads(out)["recommendations"][0]["dismissed"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--kind", "nope"), "unknown kind 'nope'"),
        (("--since", "yesterday-ish"), "since"),
        (("--format", "csv"), "table or json"),
        (("--dismiss", "model_routing-000000000000"), "no recommendation"),
    ],
)
def test_bad_input_exits_2(url: str, args: tuple[str, ...], message: str) -> None:
    code, out, err = run("advise", "--db", url, *args)
    assert code == 2
    assert message in " ".join((out + err).split())


def test_names_from_the_ledger_never_reach_the_terminal_raw(tmp_path_factory: pytest.TempPathFactory) -> None:
    from dataclasses import replace

    u = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'ledger.db'}"
    evil = "\x1b]52;c;cHduZWQ=\x07\x1b[2J" + "writer-" * 20 + "\u202eevil\nline"
    fleet = planted(now=datetime.now(UTC))
    fleet.events = [
        replace(e, agent=evil, session_id=f"\x1b[1A{e.session_id}") if e.agent == "writer" else e for e in fleet.events
    ]
    with tt.Ledger(u, prices=PriceBook(overrides="")) as led:
        record(led, fleet)
    code, out, _ = run("advise", "--db", u)
    assert code == 0, out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b]52;c;cHduZWQ=" in out and "\\u202eevil line" in out  # shown, escaped
    assert all(cell_len(line) <= 80 for line in out.splitlines()), out
