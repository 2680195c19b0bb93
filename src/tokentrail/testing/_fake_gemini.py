"""Gemini's wire formats for :class:`tokentrail.testing.FakeUpstream`: generateContent (JSON and
``data:`` frames with no ``event:`` line) and errors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tokentrail.testing._fake_wire import NewId, Usage, dumps, resolve_calls, split_text

if TYPE_CHECKING:
    from tokentrail.testing.fake_upstream import Reply


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


def gemini_error(status: int, message: str) -> bytes:
    default = "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"
    return dumps({"error": {"code": status, "message": message, "status": _GEMINI_STATUSES.get(status, default)}})


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
    return dumps(_gemini_chunk(parts, model, new_id("resp-"), _gemini_usage(reply, u), final=True))


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
        frames.append(b"data: " + dumps(_gemini_chunk(parts, model, response_id, usage, final)) + b"\r\n\r\n")
    return frames
