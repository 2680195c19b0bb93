"""What one LangChain model run reported: provider, model, inclusive token counts, response id.

Pure functions over the objects LangChain hands a callback (`LLMResult`, its generations and
messages), read defensively: every field may be missing or of the wrong type (a third-party chat
model class may put anything there). Imports nothing of LangChain, so it is cheap and testable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokentrail.events import ToolCall, args_hash, bound_text

# LangChain chat model classes whose provider the price book knows by another name
_CLASS_PROVIDERS = {
    "ChatOpenAI": "openai",
    "AzureChatOpenAI": "azure",
    "ChatAnthropic": "anthropic",
    "ChatGoogleGenerativeAI": "google",
    "ChatVertexAI": "google",
}
_MAX_TOOL_CALLS = 64  # a hostile model reply cannot grow an event past this


def clean(value: object) -> str | None:
    """Text from a run (a model's tool call id, a node or tool name, a model name) as a store can
    keep it: bounded, NULs and lone surrogates replaced, so hostile text never loses an event."""
    if value is None:
        return None
    s = bound_text(value) or ""
    if "\x00" in s or not s.isascii():
        s = s.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return s


def _int(value: object) -> int:
    """A token count as LangChain gives it; anything else counts as 0 (never negative)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def messages_of(response: Any) -> list[Any]:
    """The generations' messages (chat models) or the generations themselves (text LLMs)."""
    out: list[Any] = []
    for batch in getattr(response, "generations", None) or []:
        for gen in batch or []:
            out.append(getattr(gen, "message", gen))
    return out


def counts_from_usage_metadata(um: Mapping[str, Any]) -> dict[str, int]:
    """LangChain's `UsageMetadata` (inclusive input and output) as tokentrail's inclusive counts.

    `input_token_details.cache_creation` is zeroed by langchain-anthropic when it splits cache
    writes by TTL (`ephemeral_5m_input_tokens`, `ephemeral_1h_input_tokens`), so the split wins."""
    details = _map(um.get("input_token_details"))
    by_ttl = _int(details.get("ephemeral_5m_input_tokens")) + _int(details.get("ephemeral_1h_input_tokens"))
    return {
        "input_tokens": _int(um.get("input_tokens")),
        "output_tokens": _int(um.get("output_tokens")),
        "cache_read_tokens": _int(details.get("cache_read")),
        "cache_write_tokens": by_ttl or _int(details.get("cache_creation")),
        "reasoning_tokens": _int(_map(um.get("output_token_details")).get("reasoning")),
    }


def counts_from_token_usage(tu: Mapping[str, Any]) -> dict[str, int]:
    """An OpenAI-shaped `llm_output["token_usage"]` (text LLMs and older chat classes)."""
    return {
        "input_tokens": _int(tu.get("prompt_tokens")),
        "output_tokens": _int(tu.get("completion_tokens")),
        "cache_read_tokens": _int(_map(tu.get("prompt_tokens_details")).get("cached_tokens")),
        "cache_write_tokens": 0,
        "reasoning_tokens": _int(_map(tu.get("completion_tokens_details")).get("reasoning_tokens")),
    }


def reported_counts(response: Any) -> dict[str, int] | None:
    """The run's token counts summed over its generations, or None when nothing reported usage
    (e.g. an OpenAI stream without `stream_usage=True`)."""
    total: dict[str, int] | None = None
    for msg in messages_of(response):
        um = getattr(msg, "usage_metadata", None)
        if isinstance(um, Mapping):
            counts = counts_from_usage_metadata(um)
            total = counts if total is None else {k: total[k] + counts[k] for k in total}
    if total is None:
        tu = _map(_map(getattr(response, "llm_output", None)).get("token_usage"))
        if tu:
            total = counts_from_token_usage(tu)
    return total


def response_metadata(response: Any) -> Mapping[str, Any]:
    """The first message's `response_metadata`, else the run's `llm_output`."""
    for msg in messages_of(response):
        md = getattr(msg, "response_metadata", None)
        if isinstance(md, Mapping) and md:
            return md
    return _map(getattr(response, "llm_output", None))


def response_id(response: Any) -> str | None:
    """The provider's id of the response (`chatcmpl-…`, `resp_…`, `msg_…`): LangChain keeps it in
    `response_metadata["id"]` or `llm_output["id"]`. Chat Completions streams carry none."""
    for source in (response_metadata(response), _map(getattr(response, "llm_output", None))):
        rid = source.get("id")
        if isinstance(rid, str) and rid:
            return rid
    return None


def model_of(response: Any, requested: str | None) -> str | None:
    """The model that answered (the response's `model_name`/`model`), else the one requested."""
    md = response_metadata(response)
    for key in ("model_name", "model"):
        value = md.get(key)
        if isinstance(value, str) and value:
            return clean(value)
    return clean(requested)


def provider_of(metadata: Mapping[str, Any], serialized: Mapping[str, Any] | None) -> str | None:
    """The provider LangChain names for the model run (`ls_provider`), else its class's."""
    value = metadata.get("ls_provider")
    if isinstance(value, str) and value:
        return clean(value)
    ids = (serialized or {}).get("id")
    if isinstance(ids, list) and ids and isinstance(ids[-1], str):
        return _CLASS_PROVIDERS.get(ids[-1])
    return None


def operation_of(provider: str, response: Any) -> str:
    """The API the call went to, named as the SDK wrappers name it."""
    if response_metadata(response).get("object") == "response":
        return "responses"
    return "messages" if provider == "anthropic" else "chat"


def tool_calls_of(response: Any) -> tuple[ToolCall, ...]:
    """The tools the model asked for (so a tool run links to the call that requested it)."""
    calls: list[ToolCall] = []
    for msg in messages_of(response):
        for tc in getattr(msg, "tool_calls", None) or []:
            if isinstance(tc, Mapping) and isinstance(tc.get("name"), str) and len(calls) < _MAX_TOOL_CALLS:
                tc_id = tc.get("id")
                calls.append(
                    ToolCall(
                        clean(tc_id) if isinstance(tc_id, str) else None,
                        clean(tc["name"]) or "",
                        args_hash(tc.get("args")),
                    )
                )
    return tuple(calls)


def text_size(value: Any, *, depth: int = 0) -> int:
    """UTF-8 bytes of the text in prompts, messages or generations (for an estimate only)."""
    if depth > 8:
        return 0
    if isinstance(value, str):
        return len(value.encode("utf-8", "replace"))
    if isinstance(value, Mapping):
        return sum(text_size(v, depth=depth + 1) for k, v in value.items() if k in ("text", "content", "args"))
    if isinstance(value, (list, tuple)):
        return sum(text_size(v, depth=depth + 1) for v in value[:10_000])
    content = getattr(value, "content", None)
    if content is not None:
        return text_size(content, depth=depth + 1) + text_size(getattr(value, "tool_calls", None), depth=depth + 1)
    text = getattr(value, "text", None)
    return text_size(text, depth=depth + 1) if isinstance(text, str) else 0


def estimated_counts(prompt_bytes: int, prompt_messages: int, response: Any) -> dict[str, int]:
    """Counts for a call whose usage LangChain never saw: ~4 bytes a token, as the estimator does
    without an encoding (estimate.py), never zero — the provider did the work."""
    output = sum(text_size(m) for m in messages_of(response))
    return {
        "input_tokens": max(1, prompt_bytes // 4 + 8 * prompt_messages),
        "output_tokens": max(1, output // 4),
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
    }
