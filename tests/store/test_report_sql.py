"""store.reports.by_ids: a statement over any number of ids, a chunk at a time, on both backends."""

from __future__ import annotations

import tokentrail as tt
from tokentrail.store.reports import CHUNK, by_ids


def test_by_ids_reads_every_id_once_across_chunks(led: tt.Ledger) -> None:
    sessions = ["s-a", "s-b", "s-c"]
    for i, sid in enumerate(sessions):
        with tt.session(session_id=sid, ledger=led):
            led.record_llm(provider="openai", model="gpt-4o", input_tokens=10 + i, output_tokens=1)
            led.record_llm(provider="openai", model="gpt-4o", input_tokens=100, output_tokens=2)
    led.flush()
    # the real ids spread over three chunks, each given twice, among ids that match nothing
    unknown = [f"none-{i}" for i in range(2 * CHUNK + 10)]
    ids = [sessions[0], *unknown[:CHUNK], sessions[1], *unknown[CHUNK:], sessions[2], *sessions]
    rows = by_ids(
        led.store,
        "SELECT session_id, SUM(input_tokens), COUNT(*) FROM events",
        "session_id",
        ids,
        [f"output_tokens > {led.store.dialect.param}"],
        [0],
        " GROUP BY session_id",
    )
    assert sorted((r[0], int(r[1]), int(r[2])) for r in rows) == [("s-a", 110, 2), ("s-b", 111, 2), ("s-c", 112, 2)]
    # the condition's parameter follows each chunk's ids
    only_second = by_ids(led.store, "SELECT session_id FROM events", "session_id", ids, ["output_tokens = 2"])
    assert sorted(r[0] for r in only_second) == sessions
    assert by_ids(led.store, "SELECT session_id FROM events", "session_id", []) == []
