"""`tokentrail reconcile --fetch` against a local fake of the admin APIs: every page followed,
the documented query and headers, the same verdicts as from the files; a refused key is a clear
runtime error that never shows the key, and nothing is stored."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tests._admin_fake import ADMIN_KEY, AdminFake, admin_fake
from tests._reconcile_data import expected, seed
from tokentrail import cli
from tokentrail.analytics.reconcile_fetch import FetchError, fetch_reports
from tokentrail.pricing import PriceBook
from tokentrail.timespec import parse_time

if not any(c.name == "reconcile" for c in cli.app.registered_commands):
    cli._load()

WINDOW = ("--since", "2026-01-01", "--until", "2026-02-01")


@pytest.fixture(scope="module")
def fake() -> Iterator[AdminFake]:
    with admin_fake() as f:
        yield f


def run(env: dict[str, str | None], *args: str) -> tuple[int, str, str]:
    base = {"COLUMNS": "250", "TOKENTRAIL_DB": None, "TOKENTRAIL_PRICES": None}
    base |= {"OPENAI_ADMIN_KEY": None, "ANTHROPIC_ADMIN_KEY": None}
    result = CliRunner().invoke(cli.app, list(args), env={**base, **env})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def stored(url: str) -> list[tuple[object, ...]]:
    with tt.Ledger(url) as led:
        return led.store.query("SELECT * FROM reconcile_runs")


@pytest.mark.parametrize(("provider", "env"), [("openai", "OPENAI_ADMIN_KEY"), ("anthropic", "ANTHROPIC_ADMIN_KEY")])
def test_fetch_follows_every_page_and_finds_the_planted_differences(
    fake: AdminFake, db_url: str, provider: str, env: str
) -> None:
    with tt.Ledger(db_url, prices=PriceBook(overrides="")) as led:
        seed(led, provider)
    fake.requests.clear()
    args = ["reconcile", "--provider", provider, "--fetch", "--api-url", fake.url, *WINDOW, "--format", "json"]
    code, out, err = run({env: ADMIN_KEY}, *args, "--db", db_url)
    assert code == 0, err
    data = json.loads(out)
    got = {(c["day"], c["model"]): c["verdict"] for c in data["cells"] if c["verdict"] != "match"}
    assert got == expected(provider)
    usage = "/v1/organization/usage/completions" if provider == "openai" else "/v1/organizations/usage_report/messages"
    asked = [(q.get("page", [None])[0], q) for path, q, _ in fake.requests if path == usage]
    assert [p for p, _ in asked] == [None, "page_0002", "page_0003", "page_0004", "page_0005"]  # 31 days, 7 a page
    first = asked[0][1]
    assert first["bucket_width"] == ["1d"] and first["group_by[]"] == ["model"]
    if provider == "openai":
        assert first["start_time"] == ["1767225600"] and first["end_time"] == ["1769904000"]
        assert all(h["authorization"] == f"Bearer {ADMIN_KEY}" for _, _, h in fake.requests)
    else:
        assert first["starting_at"] == ["2026-01-01T00:00:00Z"] and first["ending_at"] == ["2026-02-01T00:00:00Z"]
        assert all(h["x-api-key"] == ADMIN_KEY and h["anthropic-version"] for _, _, h in fake.requests)
    rows = stored(db_url)
    assert len(rows) == 1 and ADMIN_KEY not in repr(rows) and ADMIN_KEY not in out + err


@pytest.mark.parametrize(("provider", "env"), [("openai", "OPENAI_ADMIN_KEY"), ("anthropic", "ANTHROPIC_ADMIN_KEY")])
def test_a_refused_key_is_a_runtime_error_that_never_shows_the_key(
    fake: AdminFake, sqlite_url: str, provider: str, env: str
) -> None:
    tt.Ledger(sqlite_url).close()
    wrong = "sk-admin-wrong-key-9876543210"
    args = ["reconcile", "--provider", provider, "--fetch", "--api-url", fake.url, *WINDOW, "--db", sqlite_url]
    code, out, err = run({env: wrong}, *args)
    text = " ".join(err.split())
    assert code == 1 and f"refused the key in {env} (HTTP 401)" in text
    assert wrong not in out + err and wrong[7:] not in out + err  # the fake echoes it: redacted
    assert stored(sqlite_url) == []


def test_fetch_usage_errors(fake: AdminFake, sqlite_url: str) -> None:
    tt.Ledger(sqlite_url).close()
    for env, args, message in (
        ({}, ["--provider", "openai", *WINDOW], "set OPENAI_ADMIN_KEY"),
        ({"OPENAI_ADMIN_KEY": ADMIN_KEY}, ["--provider", "openai"], "--fetch needs --since"),
        ({}, ["--provider", "google", *WINDOW], "Cloud Billing export"),
        (
            {"OPENAI_ADMIN_KEY": ADMIN_KEY},
            ["--provider", "openai", *WINDOW, "--api-url", "http://example.com"],
            "https only",
        ),
    ):
        code, _, err = run(env, "reconcile", "--fetch", *args, "--db", sqlite_url)
        assert code == 2 and message in " ".join(err.split()), err
    assert not any(path for path, _, _ in fake.requests if "example" in path)


def test_a_cursor_that_never_ends_is_an_error(fake: AdminFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_ADMIN_KEY", ADMIN_KEY)
    looping = [{"object": "page", "data": [], "has_more": True, "next_page": "page_0001"}]
    saved = fake.routes["/v1/organization/costs"]
    fake.routes["/v1/organization/costs"] = looping
    try:
        with pytest.raises(FetchError, match="has_more without a new next_page"):
            fetch_reports("openai", parse_time("2026-01-01"), parse_time("2026-02-01"), base_url=fake.url)
    finally:
        fake.routes["/v1/organization/costs"] = saved
