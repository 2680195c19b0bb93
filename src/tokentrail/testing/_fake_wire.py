"""What the payload builders of :class:`tokentrail.testing.FakeUpstream` share: token counts
resolved from a scripted ``Reply``, tool calls, text split into chunks. The builders themselves
are per provider: ``_fake_openai``, ``_fake_anthropic``, ``_fake_gemini``.

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

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from tokentrail.testing.fake_upstream import Reply

NewId = Callable[[str], str]


# Keys whose string values are structure, not prompt text, when estimating tokens.
# fmt: off
_NON_TEXT_KEYS = frozenset((
    "role", "type", "id", "tool_call_id", "tool_use_id", "call_id", "name", "cache_control",
    "mime_type", "mimeType", "signature", "thoughtSignature", "status",
))
# fmt: on


def dumps(obj: Any) -> bytes:
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


def as_list(value: Any) -> list[Any]:
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
            items = as_list(raw)
        total = 0
        for item in items:
            if isinstance(item, list):
                total += len(item)
            else:
                total += max(1, len(str(item).encode()) // 4)
        return max(1, total)

    if kind == "chat":
        messages = as_list(body.get("messages"))
    elif kind == "responses":
        messages = as_list(body.get("input")) + as_list(body.get("instructions"))
    elif kind == "messages":
        messages = as_list(body.get("messages")) + ([body["system"]] if body.get("system") else [])
    elif kind == "gemini":
        system = body.get("systemInstruction") or body.get("system_instruction")
        messages = as_list(body.get("contents")) + ([system] if system else [])
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
