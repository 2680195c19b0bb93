"""Agent trees through the real SDKs against FakeUpstream: a session opened inside another, or given
parent_session=, is its child; a tree rolls up to its root with every event counted exactly once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

import tokentrail as tt
from tokentrail.analytics.economics import unit_economics
from tokentrail.analytics.trees import roots_of, session_tree
from tokentrail.events import UsageEvent
from tokentrail.testing import FakeUpstream

M: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
def led(db_url: str) -> Iterator[tt.Ledger]:
    ledger = tt.Ledger(db_url)
    yield ledger
    ledger.close()


def three_levels(up: FakeUpstream, led: tt.Ledger) -> None:
    """orchestrator → researcher (nested) → fact-checker (nested), and writer (parent_session=)."""
    oa = tt.wrap(openai.OpenAI(base_url=up.openai_base_url, api_key="sk-test", max_retries=0), ledger=led)
    an = tt.wrap(anthropic.Anthropic(base_url=up.anthropic_base_url, api_key="sk-ant", max_retries=0), ledger=led)
    with tt.session("orchestrator", session_id="root", team="legal", ledger=led) as root:
        oa.chat.completions.create(model="gpt-4o-mini", messages=M)
        with tt.session("researcher", session_id="research", ledger=led):
            an.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=M)
            with tt.session("fact-checker", session_id="check", ledger=led) as check:
                oa.chat.completions.create(model="gpt-4o-mini", messages=M)
                an.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=M)
                check.outcome("fact_checked")
        oa.chat.completions.create(model="gpt-4o-mini", messages=M)
        root.outcome("contract_reviewed", value_usd="5")
    # a sub-agent started elsewhere (another process) names its parent
    with tt.session("writer", session_id="write", parent_session="root", ledger=led):
        oa.chat.completions.create(model="gpt-4o-mini", messages=M)
    with tt.session("other", session_id="unrelated", ledger=led):
        oa.chat.completions.create(model="gpt-4o-mini", messages=M)
    led.flush()


def test_three_level_tree_counts_every_event_once(up: FakeUpstream, led: tt.Ledger) -> None:
    three_levels(up, led)
    store = led.store
    rows = store.query("SELECT session_id, parent_session_id, cost_nusd FROM events")
    parent = {s: p for s, p, _ in rows}
    assert parent == {"root": None, "research": "root", "check": "research", "write": "root", "unrelated": None}
    in_tree = [c for s, _, c in rows if s != "unrelated"]
    assert len(in_tree) == 6 and all(c for c in in_tree)  # priced: a $0 tree would prove nothing

    tree = session_tree(store, "root")
    assert tree is not None
    nodes = tree.walk()
    assert sorted(n.session_id for n in nodes) == ["check", "research", "root", "write"]  # each once
    assert tree.total_cost_usd == Decimal(sum(in_tree)).scaleb(-9)
    assert sum((n.cost_usd for n in nodes), Decimal(0)) == tree.total_cost_usd
    assert tree.total_calls == 6 and sum(n.calls for n in nodes) == 6
    research = next(n for n in tree.children if n.session_id == "research")
    assert [c.session_id for c in research.children] == ["check"]
    assert research.total_calls == 3 and research.calls == 1
    assert research.total_cost_usd == research.cost_usd + research.children[0].cost_usd

    assert roots_of(store, ["check", "research", "write", "root", "unrelated"]) == {
        "check": "root",
        "research": "root",
        "write": "root",
    }
    rolled = unit_economics(store, by=["session"], tree=True)
    by_root = {r.value("session"): r for r in rolled.rows}
    assert set(by_root) == {"root", "unrelated"}
    assert by_root["root"].cost_usd == tree.total_cost_usd and by_root["root"].calls == 6
    assert by_root["root"].sessions == 1 and by_root["root"].successful_outcomes == 2  # the child's counts too
    assert rolled.totals.cost_usd == Decimal(sum(c for _, _, c in rows)).scaleb(-9)  # nothing twice
    flat = unit_economics(store, by=["session"])
    assert len(flat.rows) == 5 and flat.totals.cost_usd == rolled.totals.cost_usd


def test_a_tree_under_a_scope_sums_only_that_scope(up: FakeUpstream, led: tt.Ledger) -> None:
    three_levels(up, led)
    with tt.session("intruder", session_id="foreign", team="ops", parent_session="root", ledger=led):
        tt.wrap(
            openai.OpenAI(base_url=up.openai_base_url, api_key="sk-test", max_retries=0), ledger=led
        ).chat.completions.create(model="gpt-4o-mini", messages=M)
    led.flush()
    everything = session_tree(led.store, "root")
    legal = session_tree(led.store, "root", scope={"team": "legal"})
    assert everything is not None and legal is not None
    assert "foreign" in [n.session_id for n in everything.walk()]
    assert "foreign" not in [n.session_id for n in legal.walk()]
    assert legal.total_cost_usd < everything.total_cost_usd
    ops = session_tree(led.store, "root", scope={"team": "ops"})  # the root is legal's: only ops' own node counts
    assert ops is not None and [n.session_id for n in ops.walk() if n.calls] == ["foreign"]
    own = {n.session_id: n.cost_usd for n in everything.walk()}
    assert ops.total_cost_usd == own["foreign"]
    # "write" named its parent but was opened outside it, with no team: not legal's either
    assert legal.total_cost_usd == everything.total_cost_usd - own["foreign"] - own["write"]


def test_a_session_cannot_be_its_own_parent(led: tt.Ledger) -> None:
    with pytest.raises(ValueError, match="own parent"):
        tt.session(session_id="x", parent_session="x", ledger=led)


def test_the_parent_link_keeps_old_hashes_and_is_hashed_when_set() -> None:
    from tokentrail.events import V1_COLUMNS, canonical_bytes, to_row

    estimated = to_row(UsageEvent(usage_estimated=True))
    assert canonical_bytes(estimated) == canonical_bytes(estimated[: V1_COLUMNS + 1])  # hashed before 0014
    plain = to_row(UsageEvent())
    assert canonical_bytes(plain) == canonical_bytes(plain[:V1_COLUMNS])
    child = to_row(UsageEvent(parent_session_id="root"))
    assert canonical_bytes(child) != canonical_bytes(child[:V1_COLUMNS])  # a changed parent breaks the chain
    assert json.loads(canonical_bytes(child))[-2:] == [0, "root"]


def test_audit_verifies_a_ledger_with_trees(up: FakeUpstream, led: tt.Ledger) -> None:
    from tokentrail.audit import verify

    three_levels(up, led)
    assert verify(led.store).ok
