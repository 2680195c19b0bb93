"""Sibling tables of issue 11's: budgets, keys and quarantine fit 80/100/160 columns without
losing a label or cutting an id another command takes; an empty report keeps its columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tokentrail as tt
from tests.cli.test_cli_first_hour import WIDTHS, _body, _header_cells, _shows, run


@pytest.mark.parametrize("columns", WIDTHS)
def test_budget_tables_keep_their_labels(tmp_path: Path, columns: int) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    for name, scope in (("contract-analyzer-session-cap", "agent=contract-analyzer"), ("legal-monthly", "team=legal")):
        code, _, err = run("budget", "set", name, "--scope", scope, "--limit-usd", "12.5", "--db", url)
        assert code == 0, err
    for command in ("status", "list"):
        code, out, err = run("budget", command, "--db", url, columns=columns)
        assert code == 0, err
        body = _body(out)
        assert len(body) == 2  # one line each: nothing folded
        assert _shows(body[0][0], "contract-analyzer-session-cap") and _shows(body[0][1], "agent=contract-analyzer")
        assert all(len(line) <= columns for line in out.splitlines() if "│" in line)


@pytest.mark.parametrize("columns", WIDTHS)
def test_keys_and_quarantine_tables_keep_whole_ids(tmp_path: Path, columns: int) -> None:
    """The ids these tables show are what `keys revoke` and `quarantine show` take: never cut."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    for team in ("contract-analysis-and-review", "legal"):
        code, _, err = run("keys", "create", "--team", team, "--role", "read", "--db", url)
        assert code == 0, err
    with tt.Ledger(url) as led:
        led.quarantine("api", "input_tokens: -3 is negative, and the payload named a model nobody knows", "{}")
    for command, key in ((["keys", "list"], "key_id"), (["quarantine", "list"], "id")):
        ids = [row[key] for row in json.loads(run(*command, "--json", "--db", url)[1])]
        code, out, err = run(*command, "--db", url, columns=columns)
        assert code == 0, err
        body = _body(out)
        assert len(body) == len(ids)  # one line each
        assert sorted(line[0] for line in body) == sorted(ids)


def test_an_empty_report_keeps_its_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert run("migrate", "--db", url)[0] == 0
    code, out, _ = run("report", "--db", url, columns=80)
    assert code == 0
    assert {"calls", "input", "output", "cost"} <= set(_header_cells(out))
    assert "$0.00" in out
