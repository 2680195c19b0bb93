"""The savings advisor over a seeded fleet (tests/_advice_fleet.py), on every backend: each planted
pattern is recommended for its agent with the saving computed by hand here; the clean fleet gets
no recommendation; too little data says so; dismissals persist; a key's scope is never widened."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

import tokentrail as tt
from tests._advice_fleet import (
    GPT4O_CACHED,
    GPT4O_IN,
    GPT4O_OUT,
    MINI_IN,
    MINI_OUT,
    O4MINI_OUT,
    call,
    clean,
    planted,
    record,
)
from tokentrail.analytics.advise import KINDS, advise, dismiss
from tokentrail.events import canonical_bytes, to_row
from tokentrail.pricing import PriceBook

NOW = datetime.now(UTC).replace(microsecond=0)
BOOK = PriceBook(overrides="")

# the savings of tests/_advice_fleet.py's planted patterns, by hand
EXPECTED = {
    # 25 calls a minute apart: the first writes the cache, 24 read 2,000 prefix tokens from it
    ("prompt_caching", "faq-bot"): 24 * 2000 * (GPT4O_IN - GPT4O_CACHED),
    # 30 calls of 800 in / 50 out, gpt-4o -> gpt-4o-mini
    ("model_routing", "tagger"): 30 * (800 * (GPT4O_IN - MINI_IN) + 50 * (GPT4O_OUT - MINI_OUT)),
    # 4 sessions of 1k..6k input, median 3,500: 500 + 1,500 + 2,500 tokens over it, each
    ("context_trimming", "chat-bot"): 4 * 4500 * GPT4O_IN,
    # p95 of 96 x 200 and 4 x 5,000 output tokens is 200: 4 calls x 4,800 tokens
    ("runaway_output", "writer"): 4 * 4800 * GPT4O_OUT,
    # 5 sessions x 2 repeats of a 2,000 in / 100 out call; the repeated tool runs cost nothing
    ("redundant_calls", "fetcher"): 10 * (2000 * GPT4O_IN + 100 * GPT4O_OUT),
    # 25 calls of 900 reasoning tokens, half of them (450) at o4-mini's output price
    ("unused_reasoning", "planner"): 25 * 450 * O4MINI_OUT,
}


def _advise(ledger: tt.Ledger, days: int = 30, **kw: object) -> list:  # type: ignore[type-arg]
    a = advise(ledger.store, BOOK, since=NOW - timedelta(days=days), until=NOW, **kw)  # type: ignore[arg-type]
    return list(a.recommendations)


def test_each_planted_pattern_with_its_saving(any_ledger: tt.Ledger) -> None:
    record(any_ledger, planted(now=NOW))
    recs = _advise(any_ledger)
    got = {(r.kind, r.agent): r for r in recs}
    assert set(got) == set(EXPECTED), sorted(got)
    assert {k for k, _ in got} == set(KINDS)
    for key, saving in EXPECTED.items():
        r = got[key]
        assert r.enough_data and r.team == "platform"
        assert r.saving_usd == saving, key
        assert r.monthly_saving_usd == saving  # a 30-day window: x 30/30
        assert r.evidence["sessions"] and len(r.evidence["sessions"]) <= 3
        assert "/month" in r.formula and r.change
    # ranked by monthly saving
    savings = [r.monthly_saving_usd for r in recs]
    assert savings == sorted(savings, reverse=True)
    assert got[("model_routing", "tagger")].change.startswith("try gpt-4o-mini instead of gpt-4o")
    assert got[("runaway_output", "writer")].change == "set max_tokens=200 (the agent's p95 output)"
    assert "24 calls" in got[("prompt_caching", "faq-bot")].formula
    assert got[("redundant_calls", "fetcher")].evidence["value"] == "10 calls, 5 tool runs"


def test_the_monthly_saving_scales_a_shorter_window(ledger: tt.Ledger) -> None:
    record(ledger, planted(now=NOW))
    recs = {(r.kind, r.agent): r for r in _advise(ledger, days=10)}
    r = recs[("runaway_output", "writer")]
    assert r.saving_usd == EXPECTED[("runaway_output", "writer")]
    assert r.monthly_saving_usd == 3 * r.saving_usd
    assert "× 30/10" in r.formula


def test_a_clean_fleet_yields_none(any_ledger: tt.Ledger) -> None:
    fleet = clean(now=NOW)
    assert len(fleet.events) > 1000
    record(any_ledger, fleet)
    assert _advise(any_ledger) == []


def test_too_little_data_says_so_without_a_number(ledger: tt.Ledger) -> None:
    t = NOW - timedelta(days=2)
    for k in range(10):  # routing needs 20 calls
        at = t + timedelta(minutes=k)
        ledger.record(call("tagger", "classify", f"t-{k}", at, input_tokens=800, output_tokens=50))
    ledger.flush()
    (r,) = _advise(ledger)
    assert r.kind == "model_routing" and not r.enough_data
    assert r.saving_usd is None and r.monthly_saving_usd is None
    assert r.note == "10 calls on gpt-4o (needs 20)"
    assert r.formula.startswith("not enough data")


def test_dismissed_stays_dismissed(any_ledger: tt.Ledger, db_url: str) -> None:
    record(any_ledger, planted(now=NOW))
    first = _advise(any_ledger)
    target = next(r for r in first if r.kind == "model_routing")
    assert target.advice_id.startswith("model_routing-")
    done = dismiss(any_ledger.store, BOOK, target.advice_id, since=NOW - timedelta(days=30), until=NOW, by="k1")
    assert done.dismissed and done.advice_id == target.advice_id
    again = dismiss(any_ledger.store, BOOK, target.advice_id, since=NOW - timedelta(days=30), until=NOW)
    assert again.dismissed  # dismissing twice is a no-op
    after = advise(any_ledger.store, BOOK, since=NOW - timedelta(days=30), until=NOW)
    assert target.advice_id not in {r.advice_id for r in after.recommendations}
    assert after.dismissed == 1 and len(after.recommendations) == len(first) - 1
    # the same id on another run (the id is stable), and from another ledger on the same store
    other = tt.Ledger(db_url, prices=BOOK)
    try:
        shown = advise(other.store, BOOK, since=NOW - timedelta(days=30), until=NOW, include_dismissed=True)
        flagged = [r for r in shown.recommendations if r.dismissed]
        assert [r.advice_id for r in flagged] == [target.advice_id]
    finally:
        other.close()
    with pytest.raises(LookupError):
        dismiss(any_ledger.store, BOOK, "model_routing-000000000000", since=NOW - timedelta(days=30), until=NOW)


def test_a_scope_is_never_widened(any_ledger: tt.Ledger) -> None:
    record(any_ledger, planted(now=NOW))
    assert _advise(any_ledger, scope={"team": "legal"}) == []
    mine = _advise(any_ledger, scope={"team": "platform"}, where={"agent": ["writer"]})
    assert [(r.kind, r.agent) for r in mine] == [("runaway_output", "writer")]
    some = _advise(any_ledger)[0]
    with pytest.raises(LookupError):  # another team's key cannot dismiss it
        dismiss(any_ledger.store, BOOK, some.advice_id, since=NOW - timedelta(days=30), scope={"team": "legal"})
    assert some.advice_id in {r.advice_id for r in _advise(any_ledger)}


def test_a_dated_model_routes_and_the_read_is_bounded(ledger: tt.Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    from tokentrail.analytics import advise as adv

    t = NOW - timedelta(days=2)
    for k in range(30):
        at = t + timedelta(minutes=k)
        e = call("tagger", "classify", f"t-{k}", at, model="gpt-4o-2024-08-06", input_tokens=800, output_tokens=50)
        ledger.record(e)
    ledger.flush()
    (r,) = _advise(ledger)
    assert r.kind == "model_routing" and r.title == "Route to gpt-4o-mini"
    assert r.saving_usd == 30 * (800 * (GPT4O_IN - MINI_IN) + 50 * (GPT4O_OUT - MINI_OUT))
    monkeypatch.setattr(adv, "MAX_EVENTS", 10)
    bounded = advise(ledger.store, BOOK, since=NOW - timedelta(days=30), until=NOW)
    assert bounded.truncated and bounded.events_read == 10
    assert not bounded.recommendations[0].enough_data  # 10 calls: not enough to say


def test_bad_input_is_a_clear_error(ledger: tt.Ledger) -> None:
    with pytest.raises(ValueError, match="unknown recommendation kind 'nope'"):
        advise(ledger.store, BOOK, since=NOW - timedelta(days=1), kinds=("nope",))
    with pytest.raises(ValueError, match="not before the end"):
        advise(ledger.store, BOOK, since=NOW, until=NOW - timedelta(days=1))


def test_prefix_hash_stays_out_of_old_chain_hashes() -> None:
    """An event without a prefix hash keeps the canonical bytes it had before the column existed."""
    e = call("a", "t", "s", NOW)
    row = to_row(e)
    assert canonical_bytes(row) == canonical_bytes(row[:-1])
    marked = to_row(call("a", "t", "s", NOW, prefix_hash=f"{'cd' * 12}:400"))
    assert canonical_bytes(marked).endswith(b',"' + b"cd" * 12 + b':400"]')
    assert Decimal(0) == 0


def test_not_enough_data_says_each_count_against_its_minimum(ledger: tt.Ledger) -> None:
    t = NOW - timedelta(days=2)
    for k in range(20):  # one session whose context grows 20x: sessions are short, calls are not
        at = t + timedelta(minutes=k)
        ledger.record(call("ci-fixer", "fix_ci", "grow-1", at, input_tokens=1000 * (k + 1), output_tokens=50))
    ledger.flush()
    (r,) = [r for r in _advise(ledger) if r.kind == "context_trimming"]
    assert not r.enough_data
    assert r.note == "sessions with growing context: 1 (3 needed), calls: 20 (20 needed)"
