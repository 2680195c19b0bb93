"""The SDK wrappers note the provider's response id of each call they meter, so a framework hook
above them (LangChain, the Agents SDK, LiteLLM) can tell the call is already one event."""

from __future__ import annotations

import contextvars
from typing import Any

import pytest

from tokentrail.integrations import seen_calls
from tokentrail.integrations.wire import Accumulator, Route


@pytest.fixture(autouse=True)
def _clean() -> None:
    seen_calls.forget_all()


def test_ids_are_bounded_and_recent_ones_kept() -> None:
    for i in range(seen_calls._CAPACITY + 10):
        seen_calls.note_metered(f"id-{i}")
    assert not seen_calls.was_metered("id-0")
    assert seen_calls.was_metered(f"id-{seen_calls._CAPACITY + 9}")
    assert len(seen_calls._ids) == seen_calls._CAPACITY
    seen_calls.note_metered("x" * 10_000)
    assert max(len(k) for k in seen_calls._ids) == seen_calls._MAX_ID
    assert not seen_calls.was_metered(None) and not seen_calls.was_metered("")


@pytest.mark.parametrize("stream", [False, True])
def test_a_wrapped_sdk_call_notes_its_response_id(stream: bool, tmp_path: object) -> None:
    import anthropic
    import openai

    import tokentrail as tt
    from tokentrail.testing import FakeUpstream

    with FakeUpstream() as up, tt.Ledger(f"sqlite:///{tmp_path}/l.db") as led:
        oc = tt.wrap(openai.OpenAI(base_url=up.openai_base_url, api_key="sk-test", max_retries=0), ledger=led)
        ac = tt.wrap(anthropic.Anthropic(base_url=up.anthropic_base_url, api_key="sk-test", max_retries=0), ledger=led)
        m = [{"role": "user", "content": "hi"}]
        if stream:
            chunks = list(
                oc.chat.completions.create(
                    model="gpt-4o-mini", messages=m, stream=True, stream_options={"include_usage": True}
                )
            )
            oid = chunks[0].id
            with ac.messages.stream(model="claude-3-5-haiku-latest", max_tokens=10, messages=m) as s:
                aid = s.get_final_message().id
        else:
            oid = oc.chat.completions.create(model="gpt-4o-mini", messages=m).id
            aid = ac.messages.create(model="claude-3-5-haiku-latest", max_tokens=10, messages=m).id
        rid = oc.responses.create(model="gpt-4o-mini", input="hi").id
    assert oid and aid and rid
    assert all(seen_calls.was_metered(i) for i in (oid, aid, rid))
    assert not seen_calls.was_metered("chatcmpl-never-seen")


def test_wire_reads_the_response_id_of_each_flavor() -> None:
    chat = Accumulator(Route("openai", "openai_chat", "chat"))
    chat.body({"id": "chatcmpl-1", "model": "m", "usage": {}})
    gem = Accumulator(Route("google", "gemini", "generate_content"))
    gem.body({"responseId": "g-1", "modelVersion": "gemini"})
    assert (chat.response_id, gem.response_id) == ("chatcmpl-1", "g-1")


# -- one mark per framework call: an id noted for another call never counts ------------------------

_CONSTANT = {
    "id": "chatcmpl-always-the-same",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}


def test_a_constant_response_id_never_hides_a_call_the_wrapper_did_not_meter(tmp_path: object) -> None:
    """An upstream that answers every call with one id: the first call, under tt.instrument(), is
    the wrapper's one event; the second, not instrumented, is still recorded by the LangChain hook,
    exactly once (the process-wide id alone used to make the hook skip it: $0 for real work)."""
    import json

    from langchain_openai import ChatOpenAI

    import tokentrail as tt
    from tokentrail.integrations import langchain as tlc
    from tokentrail.testing import FakeUpstream, Reply, capture_events

    body = json.dumps(_CONSTANT).encode()
    with FakeUpstream() as up, tt.Ledger(f"sqlite:///{tmp_path}/l.db") as led:
        model = ChatOpenAI(model="gpt-4o-mini", base_url=up.openai_base_url, api_key="sk-test", max_retries=0)
        config: Any = {"callbacks": [tlc.TokentrailCallbackHandler(ledger=led)]}
        up.push(Reply(raw_body=body, raw_content_type="application/json"))
        up.push(Reply(raw_body=body, raw_content_type="application/json"))
        with capture_events() as metered, tt.session(agent="a", ledger=led):
            tt.instrument()
            try:
                model.invoke("one", config=config)
            finally:
                tt.uninstrument()
        assert [(e.kind, e.input_tokens, e.output_tokens) for e in metered] == [("llm", 12, 3)]
        assert not seen_calls._chain()  # the run's mark was left
        with capture_events() as hooked, tt.session(agent="a", ledger=led):
            model.invoke("two", config=config)
        assert [(e.kind, e.input_tokens, e.output_tokens) for e in hooked] == [("llm", 12, 3)]
        assert metered[0].event_id != hooked[0].event_id


def test_a_mark_sees_only_ids_noted_for_its_own_call() -> None:
    contextvars.Context().run(_only_its_own_ids)  # a fresh context: no mark another test left current


def _only_its_own_ids() -> None:
    seen_calls.note_metered("same")  # before the call: another call's
    mark = seen_calls.wrapper_mark("test")
    assert not mark.saw("same") and not mark.metered
    with mark:
        assert seen_calls.current() is mark
        other = seen_calls.wrapper_mark("other")
        with other:  # nested (a LiteLLM call in a LangChain run): the note reaches both
            seen_calls.note_metered("inner")
        seen_calls.note_metered("mine")
    assert seen_calls.current() is None
    assert mark.saw("mine") and mark.saw("inner") and other.saw("inner") and not other.saw("mine")
    later = seen_calls.wrapper_mark("test")
    assert not later.saw("mine")  # noted inside another call's mark
    seen_calls.note_metered("unscoped")  # the wrapper in a context the mark did not reach, during the call
    assert later.saw("unscoped")
    assert not seen_calls.was_metered("mine") and seen_calls.was_metered("same")


def test_a_mark_left_elsewhere_is_ignored_where_it_is_still_current() -> None:
    """A hook whose end ran in another context (LiteLLM logs from a thread) leaves its mark done:
    the wrapper's later notes in the first context go to no stale call."""
    contextvars.Context().run(_left_elsewhere)


def _left_elsewhere() -> None:
    mark = seen_calls.wrapper_mark("test")
    mark.enter()
    contextvars.copy_context().run(mark.leave)  # left from another context: still current here
    assert seen_calls.current() is mark and mark.done
    seen_calls.note_metered("after")
    assert not seen_calls._chain() and seen_calls.was_metered("after")  # noted outside every call
    nested = seen_calls.wrapper_mark("other")
    with nested:
        assert nested.parent is None  # never chained to a call that ended
    mark.leave()


def test_marks_re_entered_inside_each_other_stay_bounded() -> None:
    contextvars.Context().run(_re_entered)


def _re_entered() -> None:
    a, b = seen_calls.wrapper_mark("a"), seen_calls.wrapper_mark("b")
    a.enter()
    b.enter()
    a.enter()  # a retried request of a, inside b: a cycle a -> b -> a
    assert seen_calls._chain()[:2] == [a, b]
    a.leave()
    b.leave()
    c = seen_calls.wrapper_mark("c")
    with c:  # walks past the left marks without looping forever
        seen_calls.note_metered("x")
    assert c.saw("x")
