"""Many gateways, one ledger: 2 `tokentrail serve` processes and 4 SDK client processes (real
openai and anthropic SDKs, virtual keys) on one PostgreSQL, one `block` budget shared by all,
under a bounded load on loopback.

- posted spend never passes the limit (max_tokens bounds every call, so no overage can occur,
  and the overage rule is the only way past a limit), and nothing stays reserved;
- every call answered 200 is exactly one event (none lost, none twice), every refused one a 402
  in the provider's format counted by the gateways, and nothing else happened;
- the audit chain verifies (`tokentrail audit verify`);
- the report's total, the budget's posted spend and the sum of what the clients saw (tt.price of
  the usage each response returned) are equal, to the nano-dollar;
- the ledger's server connections stay within the documented pool size (4) per gateway.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

import tokentrail as tt
from tests.store import _bouncer
from tests.store._fleet import (
    TOKENTRAIL,
    ConnectionSampler,
    child_env,
    gateways,
    requests_by_status,
    run_clients,
    tails,
)
from tokentrail.analytics.reports import report
from tokentrail.store.keys import create_key
from tokentrail.store.postgres import TRANSACTION_POOLING_ENV
from tokentrail.testing import FakeUpstream, Reply

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(300)]

GATEWAYS = 2
CALLS = 30  # per client: 120 calls, about half of which the budget refuses
POOL_MAX = 4  # PostgresStore's default max_size: one pool per `tokentrail serve` (docs/scaling.md)
LIMIT_USD = Decimal("0.002")


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(record_requests=False) as up:
        up.default = Reply(text="Because it is so.", delay_s=0.002)
        yield up


def _setup(url: str) -> list[tuple[str, str]]:
    ledger = tt.Ledger(url, spool=False)
    try:
        ledger.budgets.set("fleet-cap", scope={"team": "fleet"}, period="day", limit_usd=LIMIT_USD, action="block")
        specs = []
        for i, (provider, env) in enumerate([("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")] * 2):
            key, _ = create_key(
                ledger.store, role="proxy", attribution={"team": "fleet", "agent": f"client-{i}"}, provider_key_env=env
            )
            specs.append((provider, key))
    finally:
        ledger.close()
    return specs


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_two_gateways_four_clients_one_budget(db_url: str, upstream: FakeUpstream, tmp_path: Path) -> None:
    app_name = parse_qs(urlsplit(db_url).query)["application_name"][0]
    sampler = ConnectionSampler(os.environ["TOKENTRAIL_TEST_PG"], "application_name", app_name)
    _run_fleet(db_url, upstream, sampler, GATEWAYS * POOL_MAX, tmp_path)


def test_the_same_behind_pgbouncer_in_transaction_mode(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The gateways reach PostgreSQL through PgBouncer (pool_mode = transaction): the same
    guarantees, and the server sees no more connections than PgBouncer's pool, however many
    gateways share it."""
    base = os.environ.get("TOKENTRAIL_TEST_PG")
    ci = os.environ.get("CI") == "true"
    if not base:
        (pytest.fail if ci else pytest.skip)("needs TOKENTRAIL_TEST_PG")
    if _bouncer.binary() is None:  # .ci/run installs it (scripts/ensure-pgbouncer)
        (pytest.fail if ci else pytest.skip)("PgBouncer is not installed (apt-get install pgbouncer)")
    monkeypatch.setenv(TRANSACTION_POOLING_ENV, "1")  # the test's own ledger, and the gateways (inherited)
    with _bouncer.pgbouncer(base) as bouncer:
        sampler = ConnectionSampler(base, "datname", bouncer.database)
        _run_fleet(bouncer.url, upstream, sampler, _bouncer.POOL_SIZE, tmp_path)


def _run_fleet(
    db_url: str, upstream: FakeUpstream, sampler: ConnectionSampler, max_connections: int, logs: Path
) -> None:
    specs = _setup(db_url)
    ups = {"openai": upstream.openai_base_url, "anthropic": upstream.anthropic_base_url}
    try:
        with gateways(db_url, ups, GATEWAYS, logs) as urls:
            sampler.start()
            try:
                reports = run_clients(specs, CALLS, urls)
            finally:  # sampled while the clients run (a stopping gateway's backends linger as they exit)
                sampler.stop.set()
                sampler.join()
            statuses = [requests_by_status(u) for u in urls]
    except AssertionError as e:
        raise AssertionError(f"{e}\n{tails(logs)}") from None

    assert [r["errors"] for r in reports] == [[]] * len(specs), tails(logs)
    answered = [a for r in reports for a in r["answered"]]
    refused = [s for r in reports for s in r["refused"]]
    assert len(answered) + len(refused) == len(specs) * CALLS
    assert set(refused) == {402}
    assert len(answered) > 10, "the budget refused nearly everything: raise LIMIT_USD"
    assert all(a["cost"] is not None for a in answered)
    seen = sum((Decimal(a["cost"]) for a in answered), Decimal(0))
    # the gateways counted the same: every answer a 200, every refusal a 402, nothing else
    assert sum(s.get("200", 0) for s in statuses) == len(answered)
    assert sum(s.get("402", 0) for s in statuses) == len(refused)
    assert all(set(s) <= {"200", "402"} for s in statuses), statuses
    # every server connection of the run came from the gateways' pools (the test's own are named
    # otherwise), never more than the pool size each
    assert sampler.samples and max(sampler.samples) <= max_connections, sampler.busiest

    ledger = tt.Ledger(db_url, spool=False)
    try:
        rows = ledger.store.query(
            "SELECT COUNT(*), COUNT(DISTINCT event_id), COALESCE(SUM(cost_nusd), 0) FROM events WHERE team = 'fleet'"
        )
        count, distinct, cost_nusd = (int(v) for v in rows[0])
        assert count == distinct == len(answered), tails(logs)  # no event lost, none recorded twice
        assert Decimal(cost_nusd) / 1_000_000_000 == seen
        total = report(ledger.store, where={"team": "fleet"}).totals
        assert total.calls == len(answered) and total.cost_usd == seen
        [status] = ledger.budgets.status("fleet-cap")
        assert status.posted_usd == seen <= LIMIT_USD  # never past the limit (no overage could occur)
        assert status.reserved_usd == 0
        assert len(refused) > 0 and seen + Decimal("0.0002") > LIMIT_USD * Decimal("0.5")  # really contended
    finally:
        ledger.close()
    verify = subprocess.run(
        [TOKENTRAIL, "audit", "verify", "--db", db_url], env=child_env(), capture_output=True, text=True, timeout=120
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
