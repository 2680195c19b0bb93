"""PostgreSQL keeps every rollup from one statement trigger (migration 0019): a ledger kept by the
two earlier triggers (0011, 0017) is upgraded without counting any event twice or not at all,
the one function runs as the owner with JIT off, and every report still equals the raw scan."""

from __future__ import annotations

import pytest

from tests.store.test_audit import invoke, pg_only
from tests.store.test_dim_rollups import (
    assert_every_dimension_from_rollups,
    open_ledger,
    random_events,
    write,
)
from tokentrail.analytics import reports
from tokentrail.events import to_row
from tokentrail.pricing import PriceBook
from tokentrail.store.migrations import MIGRATIONS

UPGRADE = "0019_one_rollup_trigger"


def _rollup_triggers(store: object) -> dict[str, tuple[bool, list[str] | None]]:
    """The rollup triggers on events: name -> (its function is SECURITY DEFINER, its settings)."""
    rows = store.query(  # type: ignore[attr-defined]
        "SELECT t.tgname, p.prosecdef, p.proconfig FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
        "WHERE t.tgrelid = 'events'::regclass AND NOT t.tgisinternal AND t.tgname LIKE 'events_rollup%'"
    )
    return {r[0]: (bool(r[1]), r[2]) for r in rows}


@pg_only
def test_a_ledger_of_two_triggers_is_upgraded_to_one_counting_each_event_once(
    db_url: str, prices: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokentrail.store import pg_schema

    before = MIGRATIONS[: [name for name, _ in MIGRATIONS].index(UPGRADE)]
    monkeypatch.setattr(pg_schema, "MIGRATIONS", before)
    with open_ledger(db_url, prices, monkeypatch, tags="region") as old:
        write(old, random_events(21))
        assert set(_rollup_triggers(old.store)) == {"events_rollup", "events_rollup_dims"}
    monkeypatch.setattr(pg_schema, "MIGRATIONS", MIGRATIONS)
    migrated = invoke("migrate", "--db", db_url)
    assert migrated.exit_code == 0 and UPGRADE in migrated.output, migrated.output
    with open_ledger(db_url, prices, monkeypatch, tags="region") as led:
        triggers = _rollup_triggers(led.store)
        assert list(triggers) == ["events_rollups"]
        definer, settings = triggers["events_rollups"]
        assert definer  # the owner's rights: the application role still only reads the rollups
        assert settings is not None and "jit=off" in settings
        write(led, random_events(22, 200))  # onto the rows the two triggers made
        assert_every_dimension_from_rollups(led.store)
        totals = reports.report(led.store, rollup=False).totals
        assert totals.calls + totals.tool_runs > 0
        for by in ((), ("customer",), ("tag.region",), ("agent",)):
            assert reports.report(led.store, by=by).totals == totals, by  # each event once, under each


@pg_only
def test_one_copy_of_many_rows_fills_every_rollup(
    db_url: str, prices: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large batch (one COPY, one trigger call) over many hours and keys, with a tag key declared
    and one undeclared: every rollup equals the events."""
    with open_ledger(db_url, prices, monkeypatch, tags="region") as led:
        led.store.write_events([to_row(e) for e in random_events(23, 3000)])
        assert_every_dimension_from_rollups(led.store)
        assert reports.report(led.store, by=("tag.bu",)).scanned
