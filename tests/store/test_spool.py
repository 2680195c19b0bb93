"""The spool: batches the store cannot take wait fsynced on local disk, flush() counts them as
durable, and they are replayed in order, exactly once, when the store is back."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tokentrail as tt
from tokentrail.events import GENESIS_HASH, UsageEvent, chain_hash, to_row
from tokentrail.pricing import PriceBook
from tokentrail.spool import Batch, Spool, folder_for, read_records
from tokentrail.store.sqlite import SQLiteStore


def rows(n: int, start: int = 0) -> list[tuple[object, ...]]:
    return [to_row(UsageEvent(provider="openai", model="gpt-4o-mini", input_tokens=start + i + 1)) for i in range(n)]


def verify(store: object) -> int:
    prev, n = GENESIS_HASH, 0
    for seq, p, h, row in store.chain():  # type: ignore[attr-defined]
        assert p == prev and h == chain_hash(seq, prev, row), f"chain broken at seq {seq}"
        prev, n = h, n + 1
    return n


def test_append_read_and_replay(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    batches = [Batch(rows(3, 10 * i), [], []) for i in range(3)]
    for b in batches:
        spool.append(b)
    (path,) = list((tmp_path / "spool").glob("*.spool"))
    assert [b.events for b in read_records(path)] == [b.events for b in batches]
    store = SQLiteStore(tmp_path / "l.db")
    assert spool.replay(store) == 3
    assert spool.replay(store) == 0
    assert not path.exists()
    assert store.query("SELECT count(*) FROM events")[0][0] == 9 and verify(store) == 9
    store.close()


def test_a_torn_last_record_is_ignored(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append(Batch(rows(2), [], []))
    (path,) = list((tmp_path / "spool").glob("*.spool"))
    with open(path, "ab") as f:
        f.write(b"\x00\x00\x10\x00garbage")  # a record cut short by a crash before its fsync returned
    assert [len(b.events) for b in read_records(path)] == [2]
    spool.close()


def _spool_and_die(folder: str, rows_: list[tuple[object, ...]]) -> None:
    Spool(Path(folder)).append(Batch(rows_, [], []))
    os._exit(0)  # a process that spooled and was killed before it could replay


def test_a_dead_processs_spool_is_replayed_by_the_next_ledger(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    root = tmp_path / "spool"
    with tt.Ledger(url, spool=root) as led:
        store_url = led.url
    orphan = rows(5)
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_spool_and_die, args=(str(folder_for(root, store_url)), orphan))
    p.start()
    p.join()
    held = Spool(folder_for(root, store_url))  # a live process's file must be left alone
    held.append(Batch(rows(2, 100), [], []))
    with tt.Ledger(url, spool=root) as led:
        assert led.spool is not None and led.spool.pending
        deadline = time.monotonic() + 10
        while led.spool.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not led.spool.pending
        stored = {r[0] for r in led.store.query("SELECT event_id FROM events")}
    assert stored == {r[0] for r in orphan}
    held.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: the ledger fills it, then it is grown again."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs: {result.stderr.decode()}")
        pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_spools_and_everything_arrives_once_it_has_room(small_disk: Path, tmp_path: Path) -> None:
    led = tt.Ledger(f"sqlite:///{small_disk / 'l.db'}", prices=PriceBook(overrides=""), spool=tmp_path / "spool")
    ids: list[str] = []
    try:
        for _ in range(100):  # until the disk is full and batches go to the spool
            ids += [led.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=7).event_id for _ in range(200)]
            led.flush(timeout=60)  # durable: in the store or fsynced in the spool
            if led.spool is not None and led.spool.pending:
                break
        assert led.spool is not None and led.spool.pending, "the disk never filled up"
        ids += [led.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=7).event_id for _ in range(300)]
        led.flush(timeout=60)
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        deadline = time.monotonic() + 30
        while led.spool.pending and time.monotonic() < deadline:
            time.sleep(0.1)
        led.flush(timeout=60)
        stored = [r[0] for r in led.store.query("SELECT event_id FROM events")]
        assert len(stored) == len(set(stored)) == len(ids) and set(stored) == set(ids)
        assert verify(led.store) == len(ids)
        assert led.store.query("SELECT sum(calls) FROM rollup_hourly")[0][0] == len(ids)
    finally:
        led.close()


def test_a_row_the_store_refuses_is_quarantined_and_the_rest_is_kept(ledger: tt.Ledger) -> None:
    good = [ledger.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=i + 1) for i in range(9)]
    bad = UsageEvent(kind=None)  # type: ignore[arg-type]  # NOT NULL refuses it, for good
    ledger.record(bad)
    good.append(ledger.record_llm(provider="openai", model="gpt-4o-mini", input_tokens=99))
    ledger.flush(timeout=30)
    stored = {r[0] for r in ledger.store.query("SELECT event_id FROM events")}
    assert stored == {e.event_id for e in good}
    [(source, reason, payload)] = ledger.store.query("SELECT source, reason, payload FROM quarantine")
    assert source == "store" and "NOT NULL" in reason and bad.event_id in payload


def test_spool_cli_status_and_replay(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tokentrail.cli import _load, app

    _load()
    url = f"sqlite:///{tmp_path / 'l.db'}"
    root = tmp_path / "spool"
    with tt.Ledger(url, spool=root) as led:
        store_url = led.url
    orphan = rows(4)
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_spool_and_die, args=(str(folder_for(root, store_url)), orphan))
    p.start()
    p.join()
    runner = CliRunner()
    status = runner.invoke(app, ["spool", "status", "--db", url, "--spool-dir", str(root)])
    assert status.exit_code == 0 and "waiting for replay" in status.output
    replay = runner.invoke(app, ["spool", "replay", "--db", url, "--spool-dir", str(root)])
    assert replay.exit_code == 0 and "4 event(s)" in replay.output
    again = runner.invoke(app, ["spool", "status", "--db", url, "--spool-dir", str(root)])
    assert "empty" in again.output
    with tt.Ledger(url, spool=False) as led:
        assert led.store.query("SELECT count(*) FROM events")[0][0] == 4


def test_quarantine_cli_lists_and_shows_with_the_reason(ledger: tt.Ledger) -> None:
    from typer.testing import CliRunner

    from tokentrail.cli import _load, app

    _load()
    ledger.quarantine("api", "input_tokens: -3 is negative", '{"input_tokens": -3}')
    ledger.flush()
    url = ledger.url
    runner = CliRunner()
    listed = runner.invoke(app, ["quarantine", "list", "--db", url, "--json"])
    assert listed.exit_code == 0
    [item] = json.loads(listed.output)
    assert (item["source"], item["reason"]) == ("api", "input_tokens: -3 is negative")
    shown = runner.invoke(app, ["quarantine", "show", item["id"], "--db", url])
    assert shown.exit_code == 0 and '"input_tokens": -3' in shown.output
    assert runner.invoke(app, ["quarantine", "show", "nope", "--db", url]).exit_code == 2
