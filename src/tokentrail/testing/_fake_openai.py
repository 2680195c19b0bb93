"""OpenAI's wire formats for :class:`tokentrail.testing.FakeUpstream`: chat completions (JSON and
``data:`` chunks ending in ``[DONE]``), responses (``event:`` + ``data:`` frames), embeddings, errors."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import struct
import time
from typing import TYPE_CHECKING, Any

from tokentrail.testing._fake_wire import NewId, ResolvedCall, Usage, as_list, dumps, resolve_calls, split_text

if TYPE_CHECKING:
    from tokentrail.testing.fake_upstream import Reply


EMBEDDING_DIMENSIONS = 8
"""Length of a fake embedding unless the request asks for ``dimensions``."""
_MAX_EMBEDDING_DIMENSIONS = 4096


_OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    402: ("insufficient_quota", "insufficient_quota"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    409: ("invalid_request_error", None),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}


def openai_error(status: int, message: str, *, with_code: bool = True) -> bytes:
    if status >= 500:
        err_type, code = "server_error", None
    else:
        err_type, code = _OPENAI_ERROR_TYPES.get(status, ("invalid_request_error", None))
    body = {"error": {"message": message, "type": err_type, "param": None, "code": code if with_code else None}}
    return dumps(body)


# --------------------------------------------------------------------------- OpenAI chat


def _openai_chat_usage(reply: Reply, u: Usage) -> dict[str, Any]:
    if reply.raw_usage is not None:
        return reply.raw_usage
    prompt_details: dict[str, int] = {"cached_tokens": u.cached, "audio_tokens": 0}
    if u.cache_write:  # the SDK models it; sent only when scripted so the default wire stays classic
        prompt_details["cache_write_tokens"] = u.cache_write
    return {
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": u.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chat_tool_calls(calls: list[ResolvedCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}} for c in calls
    ]


def openai_chat(reply: Reply, u: Usage, model: str, new_id: NewId) -> bytes:
    calls = resolve_calls(reply, new_id, "call_")
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.text if reply.text or not calls else None,
        "refusal": None,
        "annotations": [],
    }
    if calls:
        message["tool_calls"] = _chat_tool_calls(calls)
    return dumps(
        {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if calls else "stop",
                }
            ],
            "usage": _openai_chat_usage(reply, u),
            "service_tier": "default",
            "system_fingerprint": "fp_fakeupstream",
        }
    )


def openai_chat_sse(reply: Reply, u: Usage, model: str, new_id: NewId, include_usage: bool) -> list[bytes]:
    calls = resolve_calls(reply, new_id, "call_")
    head: dict[str, Any] = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_fakeupstream",
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        body = {
            **head,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            body["usage"] = None
        return b"data: " + dumps(body) + b"\n\n"

    frames = [chunk({"role": "assistant", "content": "" if reply.text or not calls else None, "refusal": None})]
    frames += [chunk({"content": piece}) for piece in split_text(reply.text, reply.stream_chunks)]
    for index, call in enumerate(calls):
        opening = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        frames.append(chunk({"tool_calls": [opening]}))
        for piece in split_text(call.arguments_json, 2):
            frames.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    frames.append(chunk({}, "tool_calls" if calls else "stop"))
    if include_usage:
        usage_chunk = {**head, "choices": [], "usage": _openai_chat_usage(reply, u)}
        frames.append(b"data: " + dumps(usage_chunk) + b"\n\n")
    frames.append(b"data: [DONE]\n\n")
    return frames


# --------------------------------------------------------------------------- OpenAI responses


def _openai_response_usage(reply: Reply, u: Usage) -> dict[str, Any]:
    if reply.raw_usage is not None:
        return reply.raw_usage
    return {
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": u.cached, "cache_write_tokens": u.cache_write},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.input + u.output,
    }


def _response_items(reply: Reply, new_id: NewId) -> list[dict[str, Any]]:
    """The completed output items: an assistant message, then one item per tool call."""
    items: list[dict[str, Any]] = []
    calls = resolve_calls(reply, new_id, "call_")
    if reply.text or not calls:
        part = {"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}
        items.append(
            {
                "id": new_id("msg_"),
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
        )
    for call in calls:
        items.append(
            {
                "id": new_id("fc_"),
                "type": "function_call",
                "status": "completed",
                "call_id": call.id,
                "name": call.name,
                "arguments": call.arguments_json,
            }
        )
    return items


def _response_object(
    request: dict[str, Any], model: str, response_id: str, created: int, status: str
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
        "store": request.get("store", True),
        "temperature": request.get("temperature", 1.0),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation") or "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def openai_response(reply: Reply, u: Usage, model: str, new_id: NewId, request: dict[str, Any]) -> bytes:
    created = int(time.time())
    body = _response_object(request, model, new_id("resp_"), created, "completed")
    body["output"] = _response_items(reply, new_id)
    body["usage"] = _openai_response_usage(reply, u)
    body["completed_at"] = created
    return dumps(body)


def openai_response_sse(reply: Reply, u: Usage, model: str, new_id: NewId, request: dict[str, Any]) -> list[bytes]:
    created = int(time.time())
    response = _response_object(request, model, new_id("resp_"), created, "in_progress")
    items = _response_items(reply, new_id)
    frames: list[bytes] = []

    def event(event_type: str, **fields: Any) -> None:
        data = {"type": event_type, "sequence_number": len(frames), **fields}
        frames.append(b"event: " + event_type.encode() + b"\ndata: " + dumps(data) + b"\n\n")

    event("response.created", response=response)
    event("response.in_progress", response=response)
    for index, item in enumerate(items):
        ids = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            part = item["content"][0]
            event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            event("response.content_part.added", **ids, content_index=0, part={**part, "text": ""})
            for piece in split_text(part["text"], reply.stream_chunks):
                event("response.output_text.delta", **ids, content_index=0, delta=piece, logprobs=[])
            event("response.output_text.done", **ids, content_index=0, text=part["text"], logprobs=[])
            event("response.content_part.done", **ids, content_index=0, part=part)
        else:
            event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            for piece in split_text(item["arguments"], 2):
                event("response.function_call_arguments.delta", **ids, delta=piece)
            event("response.function_call_arguments.done", **ids, name=item["name"], arguments=item["arguments"])
        event("response.output_item.done", output_index=index, item=item)
    completed = {
        **response,
        "status": "completed",
        "completed_at": created,
        "output": items,
        "usage": _openai_response_usage(reply, u),
    }
    event("response.completed", response=completed)
    return frames


# --------------------------------------------------------------------------- OpenAI embeddings


def _fake_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text``, exactly representable in float32."""
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
    rng = random.Random(seed)
    values = [rng.uniform(-1.0, 1.0) for _ in range(dimensions)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))


def _embedding_inputs(raw: Any) -> list[str]:
    if isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        return [json.dumps(raw)]  # one token array
    return [item if isinstance(item, str) else json.dumps(item) for item in as_list(raw)]


def openai_embeddings(reply: Reply, u: Usage, model: str, request: dict[str, Any]) -> bytes:
    dimensions = request.get("dimensions")
    if not isinstance(dimensions, int) or not 1 <= dimensions <= _MAX_EMBEDDING_DIMENSIONS:
        dimensions = EMBEDDING_DIMENSIONS
    as_base64 = request.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(_embedding_inputs(request.get("input"))):
        vector = _fake_vector(text, dimensions)
        embedding: Any = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    usage = reply.raw_usage if reply.raw_usage is not None else {"prompt_tokens": u.input, "total_tokens": u.input}
    return dumps({"object": "list", "data": data, "model": model, "usage": usage})
