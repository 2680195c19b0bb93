"""The SDK wrappers note the provider's response id of each call they meter, so a framework hook
above them (LangChain, the Agents SDK, LiteLLM) can tell the call is already one event."""

from __future__ import annotations

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
