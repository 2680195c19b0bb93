"""Provider wire formats: what a request is, and what its response (JSON or SSE) says.

Shared by the SDK adapters and the gateway, which both see the same HTTP traffic. An
`Accumulator` is fed the decoded JSON objects of a response (one body, or one per SSE event)
and keeps what metering needs: the model, the usage payload, the tool calls the model asked
for, and whether the response finished.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokentrail.capture import completion_parts
from tokentrail.events import ToolCall, args_hash
from tokentrail.usage import (
    Usage,
    UsageProblem,
    from_anthropic,
    from_gemini,
    from_openai_chat,
    from_openai_responses,
)


@dataclass(frozen=True, slots=True)
class Route:
    """A metered endpoint."""

    provider: str  # openai | anthropic | google
    flavor: str  # openai_chat | openai_responses | openai_embeddings | anthropic | gemini
    operation: str  # chat | responses | embeddings | messages | generate_content
    kind: str = "llm"  # llm | embedding


OPENAI_CHAT = Route("openai", "openai_chat", "chat")
OPENAI_RESPONSES = Route("openai", "openai_responses", "responses")
OPENAI_EMBEDDINGS = Route("openai", "openai_embeddings", "embeddings", "embedding")
ANTHROPIC_MESSAGES = Route("anthropic", "anthropic", "messages")
GEMINI = Route("google", "gemini", "generate_content")


def route_for(method: str, path: str) -> Route | None:
    """The metered route of an HTTP request path, or None for anything not billed per token."""
    if method.upper() != "POST":
        return None
    path = path.split("?", 1)[0].rstrip("/")
    if path.endswith(":generateContent") or path.endswith(":streamGenerateContent"):
        return GEMINI
    if path.endswith("/chat/completions"):
        return OPENAI_CHAT
    if path.endswith("/responses"):
        return OPENAI_RESPONSES
    if path.endswith("/embeddings"):
        return OPENAI_EMBEDDINGS
    if path.endswith("/messages"):
        return ANTHROPIC_MESSAGES
    return None


def gemini_model_from_path(path: str) -> str | None:
    """`/v1beta/models/gemini-2.5-flash:generateContent` -> `gemini-2.5-flash`."""
    head = path.split("?", 1)[0].rsplit(":", 1)[0]
    if "/models/" in head or head.startswith("models/"):
        return head.rsplit("models/", 1)[1] or None
    return None


def _from_openai_any(raw: object) -> Usage:
    """An OpenAI endpoint of unknown shape (the gateway's pass-through): responses-style
    `input_tokens` or chat-style `prompt_tokens`, whichever the payload uses."""
    if isinstance(raw, dict) and "input_tokens" in raw:
        return from_openai_responses(raw)
    return from_openai_chat(raw)


_NORMALISERS: dict[str, Callable[[object], Usage]] = {
    "openai_any": _from_openai_any,
    "openai_chat": from_openai_chat,
    "openai_embeddings": from_openai_chat,
    "openai_responses": from_openai_responses,
    "anthropic": from_anthropic,
    "gemini": from_gemini,
}


@dataclass
class Accumulator:
    """What one response has told us so far."""

    route: Route
    model: str | None = None
    usage_raw: Any = None
    complete: bool = False
    error_type: str | None = None
    text_parts: list[str] = field(default_factory=list)  # the completion text (of a body: only with `capture`)
    capture: bool = False
    stopped_on_limit: bool = False  # the response says it stopped on the request's output limit
    response_id: str | None = None  # the provider's id of this response (framework hooks dedupe by it)
    _tools: dict[Any, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model = _str(self.model)  # the request's model may come from a caller's JSON too

    # -- feeding --------------------------------------------------------------------------------

    def body(self, data: Any) -> None:
        """A whole (non-streamed) JSON response body."""
        if not isinstance(data, dict):
            return
        if self.capture:
            self.text_parts += completion_parts(self.route.flavor, data, streamed=False)
        self.complete = True
        flavor = self.route.flavor
        if "error" in data and data.get("error"):
            self._error(data)
            return
        if flavor == "gemini":
            self._gemini_chunk(data)
            return
        self.model = _str(data.get("model")) or self.model
        self.response_id = _str(data.get("id")) or self.response_id
        self.usage_raw = data.get("usage")
        self._stop_reason(data)
        if flavor == "openai_chat":
            for choice in _list(data.get("choices")):
                msg = _dict(_dict(choice).get("message"))
                for i, tc in enumerate(_list(msg.get("tool_calls"))):
                    call = _dict(tc)
                    fn = _dict(call.get("function"))
                    self._tool((_dict(choice).get("index"), i), call.get("id"), fn.get("name"), fn.get("arguments"))
        elif flavor == "openai_responses":
            self._responses_output(data)
        elif flavor == "anthropic":
            for i, block in enumerate(_list(data.get("content"))):
                b = _dict(block)
                if b.get("type") in ("tool_use", "server_tool_use"):
                    self._tool(i, b.get("id"), b.get("name"), b.get("input"))

    def event(self, name: str | None, data: Any) -> None:
        """One SSE event of a streamed response (data already JSON-decoded)."""
        if not isinstance(data, dict):
            return
        # kept with or without content capture: a stream cut before its usage is billed by its text
        parts = completion_parts(self.route.flavor, data, streamed=True)
        if parts:
            self.text_parts += parts
        flavor = self.route.flavor
        if flavor in ("openai_chat", "openai_any"):
            self._chat_chunk(data)
        elif flavor == "openai_responses":
            self._responses_event(data)
        elif flavor == "anthropic":
            self._anthropic_event(data)
        elif flavor == "gemini":
            self._gemini_chunk(data)

    def done(self) -> None:
        """The stream said it is over (OpenAI's `data: [DONE]`)."""
        self.complete = True

    # -- results --------------------------------------------------------------------------------

    def usage(self) -> tuple[Usage | None, str | None]:
        """The normalised usage and, when it is impossible or missing, the reason."""
        if self.usage_raw is None:
            return None, "missing_usage" if self.complete and self.error_type is None else None
        try:
            return _NORMALISERS[self.route.flavor](self.usage_raw), None
        except UsageProblem as e:
            return None, e.reason

    def tool_call_texts(self) -> list[tuple[str, str]]:
        """(name, arguments as text) of each tool call the model asked for (for content capture)."""
        out = []
        for t in self._tools.values():
            if t.get("name"):
                parts = t["args"]
                text = "".join(p if isinstance(p, str) else json.dumps(p, default=str) for p in parts)
                out.append((str(t["name"]), text))
        return out

    def tool_calls(self) -> tuple[ToolCall, ...]:
        out = []
        for t in self._tools.values():
            if t.get("name"):
                parts = t["args"]
                args: Any = "".join(parts) if parts and isinstance(parts[0], str) else parts
                if isinstance(args, list) and len(args) == 1:
                    args = args[0]
                # no arguments at all hash like {} so a streamed call matches its non-streamed twin
                name = _str(t["name"]) if isinstance(t["name"], str) else str(t["name"])
                out.append(ToolCall(_str(t.get("id")), name or "", args_hash(args if args not in ("", []) else {})))
        return tuple(out)

    # -- provider specifics -------------------------------------------------------------------

    def _stop_reason(self, data: dict[str, Any]) -> None:
        """Whether a body, chunk or event says the output stopped on its limit: OpenAI chat
        `finish_reason: length`, Responses `incomplete_details.reason: max_output_tokens`,
        Anthropic `stop_reason: max_tokens`, Gemini `finishReason: MAX_TOKENS`."""
        for choice in _list(data.get("choices")):
            if _dict(choice).get("finish_reason") == "length":
                self.stopped_on_limit = True
        for cand in _list(data.get("candidates")):
            if _dict(cand).get("finishReason") == "MAX_TOKENS":
                self.stopped_on_limit = True
        if data.get("stop_reason") == "max_tokens" or _dict(data.get("delta")).get("stop_reason") == "max_tokens":
            self.stopped_on_limit = True
        if _dict(data.get("incomplete_details")).get("reason") == "max_output_tokens":
            self.stopped_on_limit = True

    def _tool(self, key: Any, tool_id: Any, name: Any, args: Any) -> None:
        t = self._tools.setdefault(key, {"id": None, "name": None, "args": []})
        if tool_id:
            t["id"] = tool_id
        if name:
            t["name"] = name
        if args is not None and args != "":
            t["args"].append(args)

    def _error(self, data: dict[str, Any]) -> None:
        err = data.get("error")
        if isinstance(err, dict):
            self.error_type = _str(err.get("type")) or _str(err.get("status")) or _str(err.get("code")) or "error"
        else:
            self.error_type = "error"

    def _chat_chunk(self, data: dict[str, Any]) -> None:
        self.model = _str(data.get("model")) or self.model
        self.response_id = _str(data.get("id")) or self.response_id
        self._stop_reason(data)
        if data.get("usage") is not None:
            self.usage_raw = data["usage"]
        if data.get("error"):
            self._error(data)
        for choice in _list(data.get("choices")):
            c = _dict(choice)
            for tc in _list(_dict(c.get("delta")).get("tool_calls")):
                t = _dict(tc)
                fn = _dict(t.get("function"))
                self._tool((c.get("index"), t.get("index")), t.get("id"), fn.get("name"), fn.get("arguments"))

    def _responses_output(self, response: dict[str, Any]) -> None:
        for i, item in enumerate(_list(response.get("output"))):
            it = _dict(item)
            if it.get("type") == "function_call":
                self._tool(i, it.get("call_id") or it.get("id"), it.get("name"), it.get("arguments"))

    def _responses_event(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        response = _dict(data.get("response"))
        if response:
            self.model = _str(response.get("model")) or self.model
            self.response_id = _str(response.get("id")) or self.response_id
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            self.complete = True
            self._stop_reason(response)
            if response.get("usage") is not None:
                self.usage_raw = response["usage"]
            self._tools.clear()
            self._responses_output(response)
            if kind == "response.failed":
                self.error_type = _str(_dict(response.get("error")).get("code")) or "failed"
        elif kind == "response.output_item.done":
            # a finished call is known before response.completed: keep it if the stream is cut
            item = _dict(data.get("item"))
            if item.get("type") == "function_call":
                key = data.get("output_index")
                self._tools.pop(key, None)
                self._tool(key, item.get("call_id") or item.get("id"), item.get("name"), item.get("arguments"))
        elif kind == "error":
            self.error_type = _str(data.get("code")) or "error"

    def _anthropic_event(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "message_start":
            msg = _dict(data.get("message"))
            self.model = _str(msg.get("model")) or self.model
            self.response_id = _str(msg.get("id")) or self.response_id
            self.usage_raw = dict(_dict(msg.get("usage")))
        elif kind == "message_delta":
            self._stop_reason(data)
            # message_delta usage is cumulative: the last value of each field wins, never a sum
            delta = data.get("usage")
            if isinstance(delta, dict):
                merged = dict(self.usage_raw) if isinstance(self.usage_raw, dict) else {}
                merged.update({k: v for k, v in delta.items() if v is not None})
                self.usage_raw = merged
        elif kind == "content_block_start":
            block = _dict(data.get("content_block"))
            if block.get("type") in ("tool_use", "server_tool_use"):
                initial = block.get("input")
                self._tool(data.get("index"), block.get("id"), block.get("name"), None)
                if initial:  # a non-empty object here is complete input, not a prefix
                    self._tools[data.get("index")]["args"].append(json.dumps(initial))
        elif kind == "content_block_delta":
            delta = _dict(data.get("delta"))
            if delta.get("type") == "input_json_delta" and data.get("index") in self._tools:
                self._tools[data["index"]]["args"].append(delta.get("partial_json") or "")
        elif kind == "message_stop":
            self.complete = True
        elif kind == "error":
            self._error(data)

    def _gemini_chunk(self, data: dict[str, Any]) -> None:
        if data.get("error"):
            self._error(data)
            return
        self.model = _str(data.get("modelVersion")) or self.model
        self.response_id = _str(data.get("responseId")) or self.response_id
        if data.get("usageMetadata") is not None:
            self.usage_raw = data["usageMetadata"]
        self._stop_reason(data)
        base = len(self._tools)
        for c, cand in enumerate(_list(data.get("candidates"))):
            if _dict(cand).get("finishReason"):
                self.complete = True  # a caller may stop reading after the last chunk
            parts = _list(_dict(_dict(cand).get("content")).get("parts"))
            for p, part in enumerate(parts):
                call = _dict(_dict(part).get("functionCall"))
                if call:
                    self._tool((base, c, p), call.get("id"), call.get("name"), call.get("args") or {})


# -- what a request says, read at metering time (numbers only, never the text) -----------------

_LIMIT_KEYS = ("max_tokens", "max_output_tokens", "max_completion_tokens")


def output_limit(body: dict[str, Any]) -> int:
    """The output limit a request set (max_tokens / max_output_tokens / max_completion_tokens /
    generation_config.max_output_tokens), or OUTPUT_LIMIT_NONE (-1) when it set none."""
    gen = _dict(body.get("generationConfig") or body.get("generation_config"))
    for v in (*(body.get(k) for k in _LIMIT_KEYS), gen.get("maxOutputTokens"), gen.get("max_output_tokens")):
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return min(v, 2**62)
    return -1


def _size(v: Any) -> int:
    from tokentrail.integrations.prefix import json_size  # measured, never serialised: no copy of a big body

    return 0 if v is None else json_size(v)


_SYSTEM_ROLES = ("system", "developer")


def system_permille(route: Route, body: dict[str, Any]) -> int:
    """The share of a request's prompt bytes in system/developer instructions, in per mille."""
    system = other = 0
    if route.flavor in ("openai_chat", "openai_responses", "openai_any"):
        system += _size(body.get("instructions"))
        items = body.get("messages") if "messages" in body else body.get("input")
        if isinstance(items, str):
            other += _size(items)
        for m in _list(items):
            size = _size(_dict(m).get("content")) if isinstance(m, dict) else _size(m)
            if isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES:
                system += size
            else:
                other += size
    elif route.flavor == "anthropic":
        system, other = _size(body.get("system")), _size(body.get("messages"))
    elif route.flavor == "gemini":
        system = _size(body.get("systemInstruction") or body.get("system_instruction"))
        other = _size(body.get("contents"))
    total = system + other
    return 0 if total == 0 else min(1000, system * 1000 // total)


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _str(v: Any) -> str | None:
    """A non-empty string from the wire, as valid text: JSON may spell lone surrogates ("\\ud800"),
    which no store (nor the spool) can encode, so they become U+FFFD here."""
    if not isinstance(v, str) or not v:
        return None
    return _SURROGATE.sub("\ufffd", v) if _SURROGATE.search(v) else v


_SURROGATE = re.compile("[\ud800-\udfff]")


class SSEParser:
    """Splits a byte stream into server-sent events, keeping each event's raw bytes.

    `feed(chunk)` returns the complete events in it as (raw_bytes, event_name, data_text);
    a partial event waits for the next chunk."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[tuple[bytes, str | None, str]]:
        buf = self._buf + chunk if self._buf else chunk
        carry = b""
        if b"\r" in buf:
            if buf.endswith(b"\r"):  # its "\n" may start the next chunk
                buf, carry = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        out = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            raw = buf[start : end + 2]
            start = end + 2
            name, data = _parse_event(raw)
            out.append((raw, name, data))
        self._buf = buf[start:] + carry
        return out

    def flush(self) -> list[tuple[bytes, str | None, str]]:
        """The stream ended: a "\r" held back at the end was a line break after all."""
        return self.feed(b"\n") if self._buf.endswith(b"\r") else []

    def tail(self) -> bytes:
        """Bytes of an unfinished event (forwarded as they are when the stream ends)."""
        return self._buf


def _parse_event(raw: bytes) -> tuple[str | None, str]:
    name: str | None = None
    data: list[str] = []
    for line in raw.decode("utf-8", "replace").split("\n"):
        if line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
        elif line.startswith("event:"):
            name = line[6:].strip()
    return name, "\n".join(data)
