"""docs/rules.md §Usage: one inclusive usage model; each provider payload row has a test here
(the streamed rows are exercised at the wire level in test_wire.py and end to end with the SDKs)."""

from __future__ import annotations

import pytest

from tokentrail.usage import (
    MAX_TOKENS,
    Usage,
    UsageProblem,
    from_anthropic,
    from_counts,
    from_gemini,
    from_openai_chat,
    from_openai_responses,
)


def test_openai_chat_prompt_tokens_already_include_cached_and_completion_includes_reasoning() -> None:
    u = from_openai_chat(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 300,
            "total_tokens": 1300,
            "prompt_tokens_details": {"cached_tokens": 400},
            "completion_tokens_details": {"reasoning_tokens": 120},
        }
    )
    # Not 1400 input (cached is not added again) and not 420 output (reasoning is not added again).
    assert u == Usage(input_tokens=1000, output_tokens=300, cache_read_tokens=400, reasoning_tokens=120)


def test_openai_chat_cache_writes_are_part_of_prompt_tokens() -> None:
    u = from_openai_chat(
        {"prompt_tokens": 500, "completion_tokens": 1, "prompt_tokens_details": {"cache_write_tokens": 64}}
    )
    assert (u.input_tokens, u.cache_write_tokens) == (500, 64)


def test_openai_embeddings_usage_has_no_completion() -> None:
    assert from_openai_chat({"prompt_tokens": 12, "total_tokens": 12}) == Usage(input_tokens=12)


def test_openai_responses_input_includes_cached_and_output_includes_reasoning() -> None:
    u = from_openai_responses(
        {
            "input_tokens": 2000,
            "input_tokens_details": {"cached_tokens": 1500, "cache_write_tokens": 0},
            "output_tokens": 700,
            "output_tokens_details": {"reasoning_tokens": 650},
            "total_tokens": 2700,
        }
    )
    assert u == Usage(input_tokens=2000, output_tokens=700, cache_read_tokens=1500, reasoning_tokens=650)


def test_anthropic_input_excludes_cache_so_it_is_added() -> None:
    u = from_anthropic(
        {
            "input_tokens": 50,
            "cache_creation_input_tokens": 1000,
            "cache_read_input_tokens": 3000,
            "output_tokens": 200,
            "cache_creation": {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 600},
            "output_tokens_details": {"thinking_tokens": 150},
        }
    )
    assert u.input_tokens == 4050
    assert (u.cache_read_tokens, u.cache_write_tokens, u.cache_write_1h_tokens) == (3000, 1000, 600)
    assert (u.output_tokens, u.reasoning_tokens) == (200, 150)


def test_gemini_prompt_includes_cached_and_output_adds_thoughts() -> None:
    u = from_gemini(
        {
            "promptTokenCount": 900,
            "cachedContentTokenCount": 600,
            "candidatesTokenCount": 80,
            "thoughtsTokenCount": 220,
            "toolUsePromptTokenCount": 10,
            "totalTokenCount": 1210,
        }
    )
    assert u == Usage(input_tokens=910, output_tokens=300, cache_read_tokens=600, reasoning_tokens=220)


def test_gemini_snake_case_from_the_sdk_objects() -> None:
    u = from_gemini({"prompt_token_count": 10, "candidates_token_count": 5, "thoughts_token_count": 2})
    assert (u.input_tokens, u.output_tokens, u.reasoning_tokens) == (10, 7, 2)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 11}}, "cache_exceeds_input"),
        ({"prompt_tokens": -1}, "negative:prompt_tokens"),
        ({"prompt_tokens": "12"}, "non_integer:prompt_tokens"),
        ({"prompt_tokens": 12.0}, "non_integer:prompt_tokens"),
        ({"prompt_tokens": True}, "non_integer:prompt_tokens"),
        ({"prompt_tokens": MAX_TOKENS + 1}, "too_large:prompt_tokens"),
        ({"completion_tokens": 5, "completion_tokens_details": {"reasoning_tokens": 6}}, "reasoning_exceeds_output"),
        ([1, 2], "not_an_object"),
    ],
)
def test_impossible_openai_usage_is_refused_with_a_reason_never_clamped(payload: object, reason: str) -> None:
    with pytest.raises(UsageProblem) as info:
        from_openai_chat(payload)
    assert info.value.reason == reason


def test_impossible_anthropic_and_gemini_usage() -> None:
    with pytest.raises(UsageProblem, match="negative:cache_read_input_tokens"):
        from_anthropic({"input_tokens": 1, "cache_read_input_tokens": -5, "output_tokens": 1})
    with pytest.raises(UsageProblem, match="cache_exceeds_input"):
        from_gemini({"promptTokenCount": 5, "cachedContentTokenCount": 6})


def test_missing_fields_count_as_zero_but_null_is_not_an_error() -> None:
    assert from_openai_chat({"prompt_tokens": 3, "completion_tokens": None}) == Usage(input_tokens=3)


def test_from_counts_checks_consistency() -> None:
    assert from_counts(input_tokens=10, cache_read_tokens=4).cache_read_tokens == 4
    with pytest.raises(UsageProblem, match="cache_exceeds_input"):
        from_counts(input_tokens=10, cache_read_tokens=6, cache_write_tokens=5)
    with pytest.raises(UsageProblem, match="non_integer:input_tokens"):
        from_counts(input_tokens=1.5)
