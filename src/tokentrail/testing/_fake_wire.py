"""Per-provider payload builders for :class:`tokentrail.testing.FakeUpstream`.

Each builder turns one scripted ``Reply`` into the exact bytes a real provider would
send: a JSON body, or a list of Server-Sent-Event frames. The formats were checked
against the parsers of the official SDKs (openai, anthropic, google-genai):

- OpenAI chat streams ``data: {chunk}\\n\\n`` frames and ends with ``data: [DONE]``;
  the usage-only chunk exists only when ``stream_options.include_usage`` is true.
- OpenAI responses streams ``event: <type>`` + ``data:`` frames, no ``[DONE]``.
- Anthropic streams ``event: <type>`` + ``data:`` frames; the SDK *skips* frames that
  have no ``event:`` line.
- Gemini streams ``data: {GenerateContentResponse}\\r\\n\\r\\n`` frames with no ``event:``
  line (google-genai feeds non-``data: `` lines to its error-JSON buffer).

Token counts on ``Reply`` are inclusive (input includes cache reads and writes, output
includes reasoning); :func:`resolve_usage` fixes them, and each provider function
converts them to that provider's own wire convention.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import struct
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from tokentrail.testing.fake_upstream import Reply

NewId = Callable[[str], str]

EMBEDDING_DIMENSIONS = 8
"""Length of a fake embedding unless the request asks for ``dimensions``."""
_MAX_EMBEDDING_DIMENSIONS = 4096

# Keys whose string values are structure, not prompt text, when estimating tokens.
# fmt: off
_NON_TEXT_KEYS = frozenset((
    "role", "type", "id", "tool_call_id", "tool_use_id", "call_id", "name", "cache_control",
    "mime_type", "mimeType", "signature", "thoughtSignature", "status",
))
# fmt: on


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------- usage


class Usage(NamedTuple):
    """Resolved token counts for one reply, in tokentrail's inclusive convention."""

    input: int
    output: int
    cached: int
    cache_write: int
    reasoning: int


class ResolvedCall(NamedTuple):
    """A tool call with its id fixed and its arguments serialised."""

    id: str | None
    name: str
    arguments: dict[str, Any]
    arguments_json: str


def _collect_text(obj: Any, out: list[str]) -> None:
    if isinstance(obj, str):
        out.append(obj)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if key not in _NON_TEXT_KEYS:
                _collect_text(value, out)
    elif isinstance(obj, list):
        for item in obj:
            _collect_text(item, out)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def estimate_input_tokens(kind: str, body: dict[str, Any]) -> int:
    """Deterministic input-token estimate for a request body.

    UTF-8 bytes of every string in the messages (ignoring structural keys such as
    ``role``, ``type`` and ``id``) // 4, plus 8 per message, at least 1. The system
    prompt / instructions count as one message. Embeddings: per input, the length of a
    token array, or max(1, UTF-8 bytes // 4) for a string.
    """
    if kind == "embeddings":
        raw = body.get("input")
        items: list[Any]
        if isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            items = [raw]
        else:
            items = _as_list(raw)
        total = 0
        for item in items:
            if isinstance(item, list):
                total += len(item)
            else:
                total += max(1, len(str(item).encode()) // 4)
        return max(1, total)

    if kind == "chat":
        messages = _as_list(body.get("messages"))
    elif kind == "responses":
        messages = _as_list(body.get("input")) + _as_list(body.get("instructions"))
    elif kind == "messages":
        messages = _as_list(body.get("messages")) + ([body["system"]] if body.get("system") else [])
    elif kind == "gemini":
        system = body.get("systemInstruction") or body.get("system_instruction")
        messages = _as_list(body.get("contents")) + ([system] if system else [])
    else:  # pragma: no cover - routes are fixed
        messages = []
    texts: list[str] = []
    _collect_text(messages, texts)
    n_bytes = sum(len(t.encode()) for t in texts)
    return max(1, n_bytes // 4 + 8 * len(messages))


def resolve_usage(reply: Reply, estimated_input: int) -> Usage:
    """Fix the reply's token counts; ``None`` counts are derived deterministically.

    A derived input is the request estimate plus the cache reads and writes (the
    estimate stands for the fresh part of the prompt); a derived output is the number
    of words in the text plus 10 per tool call (at least 1), plus the reasoning tokens.
    """
    cached, cache_write, reasoning = reply.cached_tokens, reply.cache_write_tokens, reply.reasoning_tokens
    input_tokens = reply.input_tokens
    if input_tokens is None:
        input_tokens = max(1, estimated_input) + cached + cache_write
    output_tokens = reply.output_tokens
    if output_tokens is None:
        output_tokens = max(1, len(reply.text.split()) + 10 * len(reply.tool_calls)) + reasoning
    return Usage(input_tokens, output_tokens, cached, cache_write, reasoning)


def resolve_calls(reply: Reply, new_id: NewId | None, prefix: str) -> list[ResolvedCall]:
    """Give every tool call an id (``prefix<n>`` when unset, unless ``new_id`` is None)."""
    calls = []
    for call in reply.tool_calls:
        call_id = call.id if call.id is not None else (new_id(prefix) if new_id else None)
        calls.append(ResolvedCall(call_id, call.name, call.arguments, json.dumps(call.arguments)))
    return calls


def split_text(text: str, parts: int) -> list[str]:
    """Split ``text`` into about ``parts`` consecutive pieces (none for empty text)."""
    if not text:
        return []
    size = -(-len(text) // max(1, parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


# --------------------------------------------------------------------------- errors

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

_GEMINI_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "FAILED_PRECONDITION",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def openai_error(status: int, message: str, *, with_code: bool = True) -> bytes:
    if status >= 500:
        err_type, code = "server_error", None
    else:
        err_type, code = _OPENAI_ERROR_TYPES.get(status, ("invalid_request_error", None))
    body = {"error": {"message": message, "type": err_type, "param": None, "code": code if with_code else None}}
    return _dumps(body)


def anthropic_error(status: int, message: str, request_id: str) -> bytes:
    default = "api_error" if status >= 500 else "invalid_request_error"
    err_type = _ANTHROPIC_ERROR_TYPES.get(status, default)
    return _dumps({"type": "error", "error": {"type": err_type, "message": message}, "request_id": request_id})


def gemini_error(status: int, message: str) -> bytes:
    default = "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"
    return _dumps({"error": {"code": status, "message": message, "status": _GEMINI_STATUSES.get(status, default)}})


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
    return _dumps(
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
        return b"data: " + _dumps(body) + b"\n\n"

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
        frames.append(b"data: " + _dumps(usage_chunk) + b"\n\n")
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
    return _dumps(body)


def openai_response_sse(reply: Reply, u: Usage, model: str, new_id: NewId, request: dict[str, Any]) -> list[bytes]:
    created = int(time.time())
    response = _response_object(request, model, new_id("resp_"), created, "in_progress")
    items = _response_items(reply, new_id)
    frames: list[bytes] = []

    def event(event_type: str, **fields: Any) -> None:
        data = {"type": event_type, "sequence_number": len(frames), **fields}
        frames.append(b"event: " + event_type.encode() + b"\ndata: " + _dumps(data) + b"\n\n")

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
    return [item if isinstance(item, str) else json.dumps(item) for item in _as_list(raw)]


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
    return _dumps({"object": "list", "data": data, "model": model, "usage": usage})


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
    return _dumps(
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
        frames.append(b"event: " + event_type.encode() + b"\ndata: " + _dumps({"type": event_type, **fields}) + b"\n\n")

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


# --------------------------------------------------------------------------- Gemini


def _gemini_usage(reply: Reply, u: Usage) -> dict[str, Any]:
    if reply.raw_usage is not None:
        return reply.raw_usage
    usage: dict[str, Any] = {
        "promptTokenCount": u.input,  # includes cachedContentTokenCount
        "candidatesTokenCount": u.output - u.reasoning,
        "totalTokenCount": u.input + u.output,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": u.input}],
    }
    if u.cached:
        usage["cachedContentTokenCount"] = u.cached
    if u.reasoning:
        usage["thoughtsTokenCount"] = u.reasoning
    return usage


def _gemini_call_parts(reply: Reply) -> list[dict[str, Any]]:
    parts = []
    for call in resolve_calls(reply, None, ""):
        function_call: dict[str, Any] = {"name": call.name, "args": call.arguments}
        if call.id is not None:
            function_call["id"] = call.id
        parts.append({"functionCall": function_call})
    return parts


def _gemini_chunk(
    parts: Iterable[dict[str, Any]], model: str, response_id: str, usage: dict[str, Any] | None, final: bool
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": list(parts), "role": "model"}, "index": 0}
    if final:
        candidate["finishReason"] = "STOP"
    body: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        body["usageMetadata"] = usage
    body["modelVersion"] = model
    body["responseId"] = response_id
    return body


def gemini_response(reply: Reply, u: Usage, model: str, new_id: NewId) -> bytes:
    parts = ([{"text": reply.text}] if reply.text or not reply.tool_calls else []) + _gemini_call_parts(reply)
    return _dumps(_gemini_chunk(parts, model, new_id("resp-"), _gemini_usage(reply, u), final=True))


def gemini_sse(reply: Reply, u: Usage, model: str, new_id: NewId) -> list[bytes]:
    response_id = new_id("resp-")
    chunks = [[{"text": piece}] for piece in split_text(reply.text, reply.stream_chunks)]
    if reply.tool_calls:
        chunks.append(_gemini_call_parts(reply))
    if not chunks:
        chunks.append([{"text": ""}])
    running: dict[str, Any] | None = None
    if reply.raw_usage is None:  # early chunks carry the prompt count only, like Gemini
        running = {"promptTokenCount": u.input, "totalTokenCount": u.input}
        if u.cached:
            running["cachedContentTokenCount"] = u.cached
    frames = []
    for i, parts in enumerate(chunks):
        final = i == len(chunks) - 1
        usage = _gemini_usage(reply, u) if final else running
        frames.append(b"data: " + _dumps(_gemini_chunk(parts, model, response_id, usage, final)) + b"\r\n\r\n")
    return frames
