"""One usage model for every provider, and the rules that turn provider payloads into it.

The model is inclusive, like OpenTelemetry GenAI and genai-prices: `input_tokens` includes
cache reads and cache writes, `output_tokens` includes reasoning tokens. The normalisers
below read the provider's wire JSON (what the HTTP API sends, which is also what the SDKs
parse) and never clamp: impossible numbers raise `UsageProblem` with a short reason that
ends up in the event's status as `invalid_usage:<reason>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokentrail.exceptions import TokentrailError

# No call has ever used a billion tokens; a count past this is corrupt, not big.
MAX_TOKENS = 1_000_000_000


class UsageProblem(TokentrailError, ValueError):
    """A usage payload is impossible; `reason` is short and machine-readable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call, inclusive (see module docstring)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0  # the part of cache_write_tokens written with a 1-hour TTL
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def problem(self) -> str | None:
        """Why these counts are impossible, or None when they are consistent."""
        for name in self.__slots__:
            value = getattr(self, name)
            if type(value) is not int:
                return f"non_integer:{name}"
            if value < 0:
                return f"negative:{name}"
            if value > MAX_TOKENS:
                return f"too_large:{name}"
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            return "cache_exceeds_input"
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            return "cache_1h_exceeds_cache_write"
        if self.input_audio_tokens > self.input_tokens:
            return "audio_exceeds_input"
        if self.reasoning_tokens + self.output_audio_tokens > self.output_tokens:
            return "reasoning_exceeds_output"
        return None

    def checked(self) -> Usage:
        """Return self, or raise UsageProblem."""
        reason = self.problem()
        if reason is not None:
            raise UsageProblem(reason)
        return self


def _count(data: Mapping[str, Any] | None, *path: str) -> int:
    """Read a token count at `path`; absent or null is 0, anything but a sane integer is a problem."""
    value: Any = data
    for key in path:
        if not isinstance(value, Mapping):
            return 0
        value = value.get(key)
    if value is None:
        return 0
    where = ".".join(path)
    if type(value) is not int:  # bool, float and str are refused, never coerced
        raise UsageProblem(f"non_integer:{where}")
    if value < 0:
        raise UsageProblem(f"negative:{where}")
    if value > MAX_TOKENS:
        raise UsageProblem(f"too_large:{where}")
    return value


def _mapping(raw: object) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise UsageProblem("not_an_object")
    return raw


def from_openai_chat(raw: object) -> Usage:
    """OpenAI chat completions (and embeddings): prompt_tokens already includes cached tokens
    (and cache writes, where reported); completion_tokens already includes reasoning tokens."""
    u = _mapping(raw)
    return Usage(
        input_tokens=_count(u, "prompt_tokens"),
        output_tokens=_count(u, "completion_tokens"),
        cache_read_tokens=_count(u, "prompt_tokens_details", "cached_tokens"),
        cache_write_tokens=_count(u, "prompt_tokens_details", "cache_write_tokens"),
        reasoning_tokens=_count(u, "completion_tokens_details", "reasoning_tokens"),
        input_audio_tokens=_count(u, "prompt_tokens_details", "audio_tokens"),
        output_audio_tokens=_count(u, "completion_tokens_details", "audio_tokens"),
    ).checked()


def from_openai_responses(raw: object) -> Usage:
    """OpenAI responses API: input_tokens includes input_tokens_details.cached_tokens (and
    cache_write_tokens); output_tokens includes output_tokens_details.reasoning_tokens."""
    u = _mapping(raw)
    return Usage(
        input_tokens=_count(u, "input_tokens"),
        output_tokens=_count(u, "output_tokens"),
        cache_read_tokens=_count(u, "input_tokens_details", "cached_tokens"),
        cache_write_tokens=_count(u, "input_tokens_details", "cache_write_tokens"),
        reasoning_tokens=_count(u, "output_tokens_details", "reasoning_tokens"),
    ).checked()


def from_anthropic(raw: object) -> Usage:
    """Anthropic messages: input_tokens EXCLUDES cache, so input = input + cache writes + cache reads.
    output_tokens includes output_tokens_details.thinking_tokens (reasoning)."""
    u = _mapping(raw)
    uncached = _count(u, "input_tokens")
    cache_write = _count(u, "cache_creation_input_tokens")
    cache_read = _count(u, "cache_read_input_tokens")
    return Usage(
        input_tokens=uncached + cache_write + cache_read,
        output_tokens=_count(u, "output_tokens"),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=_count(u, "cache_creation", "ephemeral_1h_input_tokens"),
        reasoning_tokens=_count(u, "output_tokens_details", "thinking_tokens"),
    ).checked()


def from_gemini(raw: object) -> Usage:
    """Gemini usageMetadata: promptTokenCount includes cachedContentTokenCount; output is
    candidates + thoughts; tool-use prompt tokens are billed as input. Accepts the REST
    (camelCase) and the SDK (snake_case) spellings."""
    u = _mapping(raw)

    def get(camel: str) -> int:
        snake = "".join("_" + c.lower() if c.isupper() else c for c in camel)
        return _count(u, camel) if camel in u else _count(u, snake)

    candidates = get("candidatesTokenCount")
    thoughts = get("thoughtsTokenCount")
    return Usage(
        input_tokens=get("promptTokenCount") + get("toolUsePromptTokenCount"),
        output_tokens=candidates + thoughts,
        cache_read_tokens=get("cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    ).checked()


def from_counts(
    *,
    input_tokens: object = 0,
    output_tokens: object = 0,
    cache_read_tokens: object = 0,
    cache_write_tokens: object = 0,
    reasoning_tokens: object = 0,
) -> Usage:
    """Inclusive counts handed over directly (record_llm, the event API, OTLP)."""
    usage = Usage(
        input_tokens=input_tokens,  # type: ignore[arg-type]
        output_tokens=output_tokens,  # type: ignore[arg-type]
        cache_read_tokens=cache_read_tokens,  # type: ignore[arg-type]
        cache_write_tokens=cache_write_tokens,  # type: ignore[arg-type]
        reasoning_tokens=reasoning_tokens,  # type: ignore[arg-type]
    )
    return usage.checked()
