"""Reconciliation against the providers' own reports: every planted difference of the fixture
month gets its verdict and nothing else is reported, on both backends; bad files are refused
with the file and the field named, and nothing is stored."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tokentrail as tt
from tests._reconcile_data import FIXTURES, billed, expected, seed
from tokentrail import cli
from tokentrail.analytics.reconcile import Reconciliation, parse_tolerance, reconcile
from tokentrail.analytics.reconcile_files import ReconcileFileError, read_file
from tokentrail.pricing import PriceBook

if not any(c.name == "reconcile" for c in cli.app.registered_commands):
    cli._load()

ENV = {"COLUMNS": "250", "TOKENTRAIL_DB": None, "TOKENTRAIL_PRICES": None}
FILES = {
    "openai": ("openai-usage-completions.json", "openai-costs.json"),
    "anthropic": ("anthropic-usage-messages.json", "anthropic-cost-report.json"),
    "google": ("google-billing-export.csv",),
}


@pytest.fixture
def led(db_url: str) -> Iterator[tt.Ledger]:
    ledger = tt.Ledger(db_url, prices=PriceBook(overrides=""))
    yield ledger
    ledger.close()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.app, list(args), env=ENV)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def differences(r: Reconciliation) -> dict[tuple[str, ...], str]:
    return {tuple(v for _, v in c.key): c.verdict for c in r.cells if c.verdict != "match"}


def provider_cost(provider: str, *, skip: set[tuple[str, str]]) -> Decimal:
    return sum(
        (sum(c, Decimal(0)) for d, m, _, c in billed(provider) if (d.isoformat(), m.name) not in skip), Decimal(0)
    )


@pytest.mark.parametrize("provider", list(FILES))
def test_planted_differences_get_their_verdicts_and_nothing_else(led: tt.Ledger, provider: str) -> None:
    seed(led, provider)
    r = reconcile(led.store, provider, [read_file(provider, FIXTURES / f) for f in FILES[provider]])
    want = expected(provider)
    assert differences(r) == want
    assert (
        r.counts["match"] == len(r.cells) - len(want) == 31 * 2 - 2 - 1 - 7
    )  # two models a day, less the planted cells
    assert (r.since, r.until) == (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    # the provider's total is the whole bill, exactly; coverage leaves out what the ledger never saw
    total = provider_cost(provider, skip=set())
    assert r.provider_cost_usd == total
    missed = {k for k, v in want.items() if v == "missing_from_ledger"}
    assert r.coverage == (provider_cost(provider, skip=missed) / total).quantize(Decimal("0.000001"))
    cache = next(c for c in r.cells if c.verdict == "token_mismatch")
    assert cache.reason.startswith("cache_read 0 vs ") and cache.reason.endswith(" billed")
    drift = next(c for c in r.cells if c.verdict == "price_drift")
    assert drift.reason == "cost -16.7% vs the bill"  # billed 20% more


def test_google_json_lines_read_like_the_csv(led: tt.Ledger) -> None:
    seed(led, "google")
    a = read_file("google", FIXTURES / "google-billing-export.csv")
    b = read_file("google", FIXTURES / "google-billing-export.jsonl")
    assert a.lines == b.lines
    assert differences(reconcile(led.store, "google", [b])) == expected("google")


def test_ledger_calls_the_provider_never_billed(led: tt.Ledger) -> None:
    seed(led, "openai")
    led.record_llm(
        provider="openai", model="gpt-4.1", input_tokens=5, output_tokens=1, ts=datetime(2026, 1, 3, 9, tzinfo=UTC)
    )
    led.record_llm(  # another provider's calls are not this reconciliation's
        provider="anthropic", model="claude-x", input_tokens=5, output_tokens=1, ts=datetime(2026, 1, 3, tzinfo=UTC)
    )
    led.flush()
    files = [read_file("openai", FIXTURES / f) for f in FILES["openai"]]
    got = differences(reconcile(led.store, "openai", files))
    assert got == {**expected("openai"), ("2026-01-03", "gpt-4.1"): "missing_from_provider"}


def test_by_model_and_window(led: tt.Ledger) -> None:
    seed(led, "openai")
    files = [read_file("openai", FIXTURES / f) for f in FILES["openai"]]
    r = reconcile(
        led.store,
        "openai",
        files,
        by=["model"],
        since=datetime(2026, 1, 11, tzinfo=UTC),
        until=datetime(2026, 1, 15, tzinfo=UTC),
    )
    assert differences(r) == {} and [c.key for c in r.cells] == [
        (("model", "gpt-4o-2024-08-06"),),
        (("model", "gpt-4o-mini-2024-07-18"),),
    ]
    assert r.coverage == 1
    with pytest.raises(ValueError, match="midnight UTC"):
        reconcile(led.store, "openai", files, since=datetime(2026, 1, 11, 5, tzinfo=UTC))
    with pytest.raises(ValueError, match="projects or API keys"):
        reconcile(led.store, "openai", files, by=["day", "api_key"])


def test_tolerance(led: tt.Ledger) -> None:
    seed(led, "anthropic")
    files = [read_file("anthropic", FIXTURES / f) for f in FILES["anthropic"]]
    loose = reconcile(led.store, "anthropic", files, tolerance=parse_tolerance("25%"))  # the drift is 20%
    assert "price_drift" not in differences(loose).values()
    assert parse_tolerance("0.5%") == Decimal("0.005") and parse_tolerance("0.02") == Decimal("0.02")
    for bad in ("abc", "100%", "-1%", "nan"):
        with pytest.raises(ValueError, match="--tolerance"):
            parse_tolerance(bad)


# -- the command ------------------------------------------------------------------------------


def _args(provider: str, url: str, *extra: str) -> list[str]:
    return [
        "reconcile",
        "--provider",
        provider,
        *(a for f in FILES[provider] for a in ("--file", str(FIXTURES / f))),
        "--db",
        url,
        *extra,
    ]


def test_cli_table_json_csv(sqlite_url: str) -> None:
    with tt.Ledger(sqlite_url, prices=PriceBook(overrides="")) as led:
        seed(led, "anthropic")
    code, out, err = run(*_args("anthropic", sqlite_url, "--differences", "--no-store"))
    assert code == 0, err
    assert "2026-01-10" in out and "missing from ledger" in out and "price drift" in out and "token mismatch" in out
    assert "coverage 9" in out and "match 52" in out
    code, out, err = run(*_args("anthropic", sqlite_url, "--format", "json", "--no-store"))
    assert code == 0, err
    data = json.loads(out)
    assert data["verdicts"]["price_drift"] == 7 and len(data["cells"]) == 62 + 1 and data["run_id"] is None
    code, out, err = run(
        *_args("anthropic", sqlite_url, "--format", "csv", "--by", "model", "--since", "2026-01-20", "--no-store")
    )
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["model"]: r["verdict"] for r in rows} == {
        "claude-sonnet-4-20250514": "match",
        "claude-3-5-haiku-20241022": "price_drift",  # from the 25th
        "claude-opus-4-1-20250805": "missing_from_ledger",
    }
    haiku = next(r for r in rows if r["model"] == "claude-3-5-haiku-20241022")
    assert Decimal(haiku["cost_diff_usd"]) < 0 and haiku["ledger_calls"] == "12"


def _write(tmp_path: Path, name: str, data: object) -> str:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(p)


def _page(results: list[dict[str, object]], **page: object) -> dict[str, object]:
    bucket = {"object": "bucket", "start_time": 1767225600, "end_time": 1767312000, "results": results}
    return {"object": "page", "data": [bucket], "has_more": False, "next_page": None, **page}


OK_RESULT = {
    "object": "organization.usage.completions.result",
    "input_tokens": 10,
    "output_tokens": 1,
    "input_cached_tokens": 0,
    "num_model_requests": 1,
    "model": "gpt-4o",
}


@pytest.mark.parametrize(
    ("provider", "content", "message"),
    [
        ("openai", "{not json", "not JSON"),
        ("openai", json.dumps({"data": []}), 'expected an OpenAI Usage or Costs API page ("object": "page")'),
        (
            "openai",
            json.dumps(_page([OK_RESULT], has_more=True, next_page="p2")),
            "has_more is true but no page follows",
        ),
        ("openai", json.dumps(_page([{**OK_RESULT, "model": None}])), "result 1: no 'model'"),
        ("openai", json.dumps(_page([{**OK_RESULT, "input_tokens": "10"}])), "field 'input_tokens' should be int"),
        ("openai", json.dumps(_page([{**OK_RESULT, "input_cached_tokens": 11}])), "exceeds input_tokens"),
        ("openai", json.dumps(_page([{**OK_RESULT, "object": "organization.usage.images.result"}])), "expected one of"),
        (
            "openai",
            json.dumps(
                _page(
                    [
                        {
                            "object": "organization.costs.result",
                            "amount": {"value": 1, "currency": "eur"},
                            "line_item": "x",
                        }
                    ]
                )
            ),
            "only USD",
        ),
        (
            "openai",
            json.dumps(
                {
                    **_page([OK_RESULT]),
                    "data": [{"object": "bucket", "start_time": 1767225600, "end_time": 1767229200, "results": []}],
                }
            ),
            "daily buckets",
        ),
        (
            "anthropic",
            json.dumps(
                {
                    "data": [
                        {
                            "starting_at": "2026-01-01T00:00:00Z",
                            "ending_at": "2026-01-02T00:00:00Z",
                            "results": [{"tokens": 3}],
                        }
                    ],
                    "has_more": False,
                }
            ),
            "expected a messages usage result",
        ),
        ("anthropic", json.dumps([_page([OK_RESULT])]), "missing field 'starting_at'"),
        (
            "openai",
            json.dumps(
                _page([OK_RESULT])
                | {"data": [{"object": "bucket", "start_time": 10**20, "end_time": 1, "results": []}]}
            ),
            "is not a time",
        ),
        ("openai", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (
            "google",
            "service.description,sku.description,usage_start_time,cost,currency\n" + "x" * 200_000 + "\n",
            "not CSV",
        ),
        ("google", "a,b\n1,2\n", "not a Cloud Billing export: the header lacks service.description"),
        (
            "google",
            json.dumps({"service": {"description": "Gemini API"}, "sku": {"description": "Gemini 2.5 Flash Input"}})[
                :-1
            ]
            + ', "usage_start_time": "2026-01-01 00:00:00 UTC", "cost": "x", "currency": "USD"}\n',
            "line 1: field 'cost' should be a decimal amount",
        ),
    ],
)
def test_bad_files_are_refused_naming_file_and_field(
    sqlite_url: str, tmp_path: Path, provider: str, content: str, message: str
) -> None:
    with tt.Ledger(sqlite_url, prices=PriceBook(overrides="")) as led:
        seed(led, provider)
    path = _write(tmp_path, "export.bad", content)
    with pytest.raises(ReconcileFileError) as e:
        read_file(provider, path)
    assert str(e.value).startswith(path) and message in str(e.value)
    code, out, err = run("reconcile", "--provider", provider, "--file", path, "--db", sqlite_url)
    assert code == 2 and message in " ".join(err.split()) and "Reconciliation" not in out
    with tt.Ledger(sqlite_url) as led:
        assert led.store.query("SELECT COUNT(*) FROM reconcile_runs") == [(0,)]


def test_usage_errors(sqlite_url: str, tmp_path: Path) -> None:
    tt.Ledger(sqlite_url).close()
    f = str(FIXTURES / FILES["openai"][0])
    for args, message in (
        (["--provider", "azure", "--file", f], "expected one of openai, anthropic, google"),
        (["--provider", "openai"], "with --file, or --fetch"),
        (["--provider", "openai", "--file", str(tmp_path / "nope.json")], "nope.json: cannot read it"),
        (["--provider", "openai", "--file", f, "--tolerance", "lots"], "--tolerance"),
    ):
        code, _, err = run("reconcile", *args, "--db", sqlite_url)
        assert code == 2 and message in " ".join(err.split()), err


def test_what_the_files_let_us_compare(led: tt.Ledger, tmp_path: Path) -> None:
    """Costs alone: the cache day shows as a price difference, coverage weighs by cost. Usage
    alone: no price drift can be seen, coverage weighs by tokens. An all-zero line is no cell."""
    seed(led, "openai")
    usage, costs = (read_file("openai", FIXTURES / f) for f in FILES["openai"])
    only_costs = reconcile(led.store, "openai", [costs])
    assert only_costs.compared == ("cost",)
    want = expected("openai")
    cache = next(k for k, v in want.items() if v == "token_mismatch")
    assert differences(only_costs) == {**want, cache: "price_drift"}
    only_usage = reconcile(led.store, "openai", [usage])
    assert only_usage.compared == ("tokens",) and only_usage.provider_cost_usd is None
    assert differences(only_usage) == {k: v for k, v in want.items() if v != "price_drift"}
    assert only_usage.coverage is not None and 0 < only_usage.coverage < 1
    zero = _page([{**OK_RESULT, "input_tokens": 0, "output_tokens": 0, "num_model_requests": 0}])
    empty = read_file("openai", _write(tmp_path, "zero.json", zero))
    r = reconcile(led.store, "openai", [empty])
    assert r.coverage is None and [c.verdict for c in r.cells] == ["missing_from_provider"] * 2
    assert "gpt-4o" not in {dict(c.key)["model"] for c in r.cells}
