"""LiteLLM logger against what a LiteLLM proxy's client controls: the call id (`x-litellm-call-id`
header) and the request metadata. Neither may drop a call that did work nor move its spend."""

from __future__ import annotations

import contextvars
import os
from datetime import datetime, timedelta
from typing import Any

import pytest

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is imported: no fetch of its cost map

import tokentrail as tt
from tests._events import stored
from tokentrail.integrations.litellm import TokentrailLogger

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
]

T0 = datetime(2026, 1, 5, 12, 0, 0)


def _kwargs(start: datetime, tokens: int, *, call_id: str = "constant", **meta: Any) -> dict[str, Any]:
    payload = {
        "id": call_id,
        "custom_llm_provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "status": "success",
        "startTime": start.timestamp(),
        "endTime": start.timestamp() + 1,
        "metadata": {"usage_object": {"prompt_tokens": tokens, "completion_tokens": 5}, **meta.pop("key", {})},
    }
    return {
        "litellm_call_id": call_id,
        "start_time": start,
        "litellm_params": {"metadata": meta},
        "standard_logging_object": payload,
    }


def test_a_constant_client_call_id_never_drops_a_later_call(any_ledger: tt.Ledger) -> None:
    """A proxy client sends the same x-litellm-call-id on every request: each call is still recorded."""
    handler = TokentrailLogger(any_ledger)
    for i in range(3):
        kwargs = _kwargs(T0 + timedelta(seconds=i), 100 + i)
        handler.log_pre_api_call("m", [], kwargs)
        handler.log_success_event(kwargs, None, None, None)
    assert sorted(e.input_tokens for e in stored(any_ledger)) == [100, 101, 102]


def test_one_call_logged_by_the_sync_and_the_async_handler_is_one_event(any_ledger: tt.Ledger) -> None:
    import asyncio

    handler = TokentrailLogger(any_ledger)
    kwargs = _kwargs(T0, 100)
    handler.log_pre_api_call("m", [], kwargs)
    handler.log_success_event(kwargs, None, None, None)
    asyncio.run(handler.async_log_success_event(kwargs, None, None, None))
    assert [e.input_tokens for e in stored(any_ledger)] == [100]


def test_a_call_sharing_a_forged_id_is_not_skipped_for_another_calls_wrapper_event(any_ledger: tt.Ledger) -> None:
    """Call A was metered by the SDK wrapper (an llm event recorded under it); call B, with the same
    client-chosen call id but not metered, must still be recorded by the logger."""
    handler = TokentrailLogger(any_ledger)
    a, b = _kwargs(T0, 100), _kwargs(T0 + timedelta(seconds=1), 200)

    def call_a() -> None:
        handler.log_pre_api_call("m", [], a)
        any_ledger.record_llm(provider="openai", model="gpt-4o", input_tokens=100, output_tokens=5)

    contextvars.copy_context().run(call_a)
    contextvars.copy_context().run(handler.log_pre_api_call, "m", [], b)
    handler.log_success_event(b, None, None, None)
    handler.log_success_event(a, None, None, None)
    # A's event is the wrapper's (gpt-4o); B's is the logger's
    assert sorted((e.model, e.input_tokens) for e in stored(any_ledger)) == [
        ("claude-sonnet-4-5", 200),
        ("gpt-4o", 100),
    ]


def test_request_metadata_cannot_move_spend_off_the_proxy_keys_team(any_ledger: tt.Ledger) -> None:
    """Through a proxy, the key names org/team/project; the client's metadata only fills the rest."""
    handler = TokentrailLogger(any_ledger)
    key = {"user_api_key_team_alias": "team-a", "user_api_key_org_id": "org-a", "user_api_key_project_alias": "p-a"}
    forged = _kwargs(T0, 100, team="team-b", org="org-b", project="p-b", task_type="qa", key=key)
    handler.log_success_event(forged, None, None, None)
    unkeyed = _kwargs(T0 + timedelta(seconds=1), 200, call_id="other", team="team-c")
    handler.log_success_event(unkeyed, None, None, None)
    keyed, free = sorted(stored(any_ledger), key=lambda e: e.input_tokens)
    assert (keyed.org, keyed.team, keyed.project, keyed.task_type) == ("org-a", "team-a", "p-a", "qa")
    assert free.team == "team-c"  # no key names a team (the SDK, or a key of no team): the request's
