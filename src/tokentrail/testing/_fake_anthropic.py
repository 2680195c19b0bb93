"""Anthropic's wire formats for :class:`tokentrail.testing.FakeUpstream`: messages (JSON and
``event:`` + ``data:`` frames) and errors."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tokentrail.testing._fake_wire import NewId, Usage, dumps, resolve_calls, split_text

if TYPE_CHECKING:
    from tokentrail.testing.fake_upstream import Reply


_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, message: str, request_id: str) -> bytes:
    default = "api_error" if status >= 500 else "invalid_request_error"
    err_type = _ANTHROPIC_ERROR_TYPES.get(status, default)
    return dumps({"type": "error", "error": {"type": err_type, "message": message}, "request_id": request_id})


# --------------------------------------------------------------------------- Anthropic


def _anthropic_usage(reply: Reply, u: Usage, output_tokens: int) -> dict[str, Any]:
    if reply.raw_usage is not None:
        return reply.raw_usage
    usage: dict[str, Any] = {
        "input_tokens": u.input - u.cached - u.cache_write,  # Anthropic's input excludes the cache
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cached,
        "cache_creation": {"ephemeral_5m_input_tokens": u.cache_write, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    if u.reasoning:
        usage["output_tokens_details"] = {"thinking_tokens": u.reasoning}
    return usage


def _anthropic_blocks(reply: Reply, new_id: NewId) -> list[dict[str, Any]]:
    calls = resolve_calls(reply, new_id, "toolu_")
    blocks: list[dict[str, Any]] = []
    if reply.text or not calls:
        blocks.append({"type": "text", "text": reply.text})
    blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in calls]
    return blocks


def _anthropic_head(model: str, new_id: NewId) -> dict[str, Any]:
    return {"id": new_id("msg_"), "type": "message", "role": "assistant", "model": model}


def anthropic_message(reply: Reply, u: Usage, model: str, new_id: NewId) -> bytes:
    blocks = _anthropic_blocks(reply, new_id)
    return dumps(
        {
            **_anthropic_head(model, new_id),
            "content": blocks,
            "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
            "stop_sequence": None,
            "usage": _anthropic_usage(reply, u, u.output),
        }
    )


def _anthropic_delta_usage(reply: Reply, u: Usage) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": u.input - u.cached - u.cache_write,
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cached,
        "output_tokens": u.output,
    }
    if u.reasoning:
        usage["output_tokens_details"] = {"thinking_tokens": u.reasoning}
    return usage


def anthropic_sse(reply: Reply, u: Usage, model: str, new_id: NewId) -> list[bytes]:
    frames: list[bytes] = []

    def event(event_type: str, **fields: Any) -> None:
        frames.append(b"event: " + event_type.encode() + b"\ndata: " + dumps({"type": event_type, **fields}) + b"\n\n")

    message = {
        **_anthropic_head(model, new_id),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _anthropic_usage(reply, u, 1),
    }
    event("message_start", message=message)
    for index, block in enumerate(_anthropic_blocks(reply, new_id)):
        if block["type"] == "text":
            event("content_block_start", index=index, content_block={"type": "text", "text": ""})
            deltas = [{"type": "text_delta", "text": p} for p in split_text(block["text"], reply.stream_chunks)]
        else:
            event("content_block_start", index=index, content_block={**block, "input": {}})
            pieces = split_text(json.dumps(block["input"]), 2)
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        if index == 0:
            event("ping")
        for delta in deltas:
            event("content_block_delta", index=index, delta=delta)
        event("content_block_stop", index=index)
    stop_reason = "tool_use" if reply.tool_calls else "end_turn"
    # like the real API: message_delta's usage is cumulative and repeats the input counts
    final_usage = reply.raw_usage if reply.raw_usage is not None else _anthropic_delta_usage(reply, u)
    event("message_delta", delta={"stop_reason": stop_reason, "stop_sequence": None}, usage=final_usage)
    event("message_stop")
    return frames
