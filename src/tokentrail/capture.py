"""Content capture: the prompt and completion text of a call, redacted and bounded.

Off by default (docs/rules.md §Security). With `Ledger(capture_content=True)` (or TOKENTRAIL_CAPTURE_CONTENT=1)
the event's `content` holds `{"prompt": …, "completion": …}` as JSON, each string passed through
the ledger's redactor first, then cut to a bounded size. The default redactor masks e-mail
addresses, API keys and tokens, bearer credentials, private keys and card numbers (Luhn-checked).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger("tokentrail")

Redactor = Callable[[str], str]

ENV = "TOKENTRAIL_CAPTURE_CONTENT"
MAX_PROMPT = 32_000  # characters stored of the prompt (its head and tail, the middle cut)
MAX_COMPLETION = 16_000
MAX_NOTE = 2_000
# Redaction reads at most this much of each text: enough for any real prompt, and a hostile
# 1 GB body cannot stall the caller. The cut is far from the part that is finally kept.
_MAX_READ = 1_000_000
# Strings under these keys are not text a person wrote: binary data, ids, types, signatures.
_SKIP = frozenset(
    {
        "type",
        "role",
        "id",
        "call_id",
        "tool_call_id",
        "tool_use_id",
        "index",
        "signature",
        "cache_control",
        "data",
        "inlineData",
        "inline_data",
        "fileData",
        "file_data",
        "image_url",
        "input_audio",
        "source",
        "mimeType",
        "mime_type",
        "b64_json",
        "encrypted_content",
    }
)
_ARGS = frozenset({"arguments", "args", "input", "response"})  # tool arguments and results: kept as JSON


def enabled_from_env() -> bool:
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


# -- the default redactor ---------------------------------------------------------------------------

_KEYCHARS = r"[A-Za-z0-9_\-]"
_HAS_DIGIT = r"(?=[A-Za-z._~+/\-]*\d)"  # real tokens have digits; English words after "bearer" do not
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S),
        "[REDACTED:private_key]",
    ),
    (re.compile(rf"(?i)\b(bearer|basic)\s+{_HAS_DIGIT}[A-Za-z0-9._~+/\-]{{8,}}=*"), r"\1 [REDACTED:credential]"),
    # keys by their prefix: OpenAI sk-/sk-proj-/sk-svcacct-, Anthropic sk-ant-, tokentrail tt-,
    # Stripe sk_live_/rk_live_, Google AIza, AWS AKIA/ASIA, GitHub, Slack; and JWTs
    (re.compile(rf"(?<![A-Za-z0-9])(?:sk|tt)-{_KEYCHARS}{{20,}}"), "[REDACTED:api_key]"),
    (re.compile(r"(?<![A-Za-z0-9])[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"), "[REDACTED:api_key]"),
    (re.compile(rf"AIza{_KEYCHARS}{{30,}}"), "[REDACTED:api_key]"),
    (re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"), "[REDACTED:api_key]"),
    (
        re.compile(r"(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{30,}|xox[abposr]-[\w-]{10,})"),
        "[REDACTED:api_key]",
    ),
    # Hugging Face, GitLab (glpat- and its siblings), Slack apps, npm, PyPI, Groq, Replicate, xAI,
    # Perplexity, Google OAuth, SendGrid, DigitalOcean, Stripe webhooks, LangSmith
    (
        re.compile(
            r"(?<![A-Za-z0-9])(?:hf_[A-Za-z0-9]{30,}|gl(?:pat|dt|rt|ptt|ft|cbt|oas|imt|soat|agent)-[\w-]{20,}|"
            r"xapp-[\w-]{10,}|npm_[A-Za-z0-9]{36,}|pypi-AgE[\w-]{50,}|(?:gsk|r8)_[A-Za-z0-9]{30,}|"
            r"(?:xai|pplx)-[A-Za-z0-9]{40,}|GOCSPX-[\w-]{20,}|ya29\.[\w-]{20,}|SG\.[\w-]{16,}\.[\w-]{16,}|"
            r"dop_v1_[a-f0-9]{64}|whsec_[A-Za-z0-9+/=]{24,}|lsv2_(?:pt|sk)_\w{30,})"
        ),
        "[REDACTED:api_key]",
    ),
    (re.compile(r"(hooks\.slack\.com/(?:services|workflows|triggers)/)[\w/]{16,}"), r"\1[REDACTED:secret]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), "[REDACTED:token]"),
    # a long secret-looking value after a name that says what it is: key=…, "token": "…"
    (
        re.compile(
            r"(?i)(?<![A-Za-z])((?:api[_-]?key|access[_-]?key|secret[_-]?key|private[_-]?key|client[_-]?secret|"
            r"key|token|access[_-]?token|refresh[_-]?token|auth[_-]?token|secret|signature)[\"']?\s{0,3}[=:]"
            rf"\s{{0,3}}[\"']?){_HAS_DIGIT}[A-Za-z0-9+/_\-.~]{{16,}}={{0,2}}"
        ),
        r"\1[REDACTED:secret]",
    ),
    (
        re.compile(r"(?i)(?<![A-Za-z])((?:password|passwd|pwd)[\"']?\s{0,3}[=:]\s{0,3}[\"']?)[^\s\"'&,;]{4,}"),
        r"\1[REDACTED:secret]",
    ),
    (
        re.compile(r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"),
        "[REDACTED:email]",
    ),
]
_CARD = re.compile(r"(?<![\d-])[2-6](?:[ -]?\d){12,18}(?!\d)")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", m.group())
    return "[REDACTED:card]" if _luhn(digits) else m.group()


def redact_text(text: str) -> str:
    """The default redactor: masks e-mail addresses, API keys and tokens (by their known prefixes,
    or after `key=`/`token=`/`password=`…), bearer/basic credentials, private key blocks, and card
    numbers that pass the Luhn check. Names, phone numbers, addresses and bare hex strings stay."""
    for pattern, mask in _PATTERNS:
        text = pattern.sub(mask, text)
    return _CARD.sub(_card, text)


def scrub(note: str | None) -> str | None:
    """A note built from what an upstream said (error types, usage payloads), always redacted
    and bounded, whether capture is on or off: an upstream may echo a key back."""
    if note is None:
        return None
    # redact, then cut: a cut first could leave a piece of a key too short to be recognised
    return _cut(redact_text(_valid(_cut(note, _MAX_READ))), MAX_NOTE)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid(text: str) -> str:
    """Text every store can encode: JSON may spell lone surrogates ("\\ud800"); they become U+FFFD."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


# -- what a request and a response say --------------------------------------------------------------


def prompt_text(body: Any) -> str:
    """The text of a request: system/instructions, then each message as `role: text`."""
    if not isinstance(body, Mapping):
        return ""
    lines: list[str] = []
    for key in ("instructions", "system", "systemInstruction", "system_instruction"):
        if key in body:
            _line(lines, "system", _texts(body[key]))
    for key in ("messages", "input", "contents", "prompt"):
        value = body.get(key)
        if isinstance(value, list):
            for item in value:
                role = item.get("role") if isinstance(item, Mapping) else None
                kind = item.get("type") if isinstance(item, Mapping) else None
                _line(lines, role if isinstance(role, str) else kind if isinstance(kind, str) else "user", _texts(item))
        elif value is not None:
            _line(lines, "user", _texts(value))
    return "\n".join(lines)


def _line(lines: list[str], role: str, parts: list[str]) -> None:
    text = "\n".join(p for p in parts if p)
    if text:
        lines.append(f"{role}: {text}")


def _texts(value: Any, depth: int = 0) -> list[str]:
    """Every string a person or a tool wrote, in order (not ids, types or binary data)."""
    if isinstance(value, str):
        return [value]
    if depth > 32:
        return []
    out: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k in _SKIP:
                continue
            if k in _ARGS and isinstance(v, (Mapping, list)) and not _has_role(v):
                out.append(_json(v))
            else:
                out += _texts(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            out += _texts(v, depth + 1)
    return out


def _has_role(v: Any) -> bool:
    """An `input` list of messages (OpenAI responses) is text to walk, not arguments."""
    return isinstance(v, list) and any(isinstance(i, Mapping) and ("role" in i or "type" in i) for i in v)


def _json(v: Any) -> str:
    try:
        return json.dumps(v, ensure_ascii=False, default=str)
    except (ValueError, RecursionError):
        return ""


def completion_parts(flavor: str, data: Any, *, streamed: bool) -> list[str]:
    """The completion text in one response body or one stream event (deltas, never a repeat
    of text already seen: a stream's closing event that repeats it is skipped)."""
    if not isinstance(data, Mapping):
        return []
    if flavor == "openai_any":  # the gateway's pass-through: chat or responses, by its shape
        flavor = "openai_chat" if "choices" in data else "openai_responses"
    if flavor == "openai_chat":
        key = "delta" if streamed else "message"
        return [
            s
            for c in _items(data.get("choices"))
            for s in (_get(c, key, "content"), _get(c, key, "refusal"))
            if isinstance(s, str)
        ]
    if flavor == "openai_responses":
        if streamed:
            delta = data.get("delta")
            t = data.get("type")
            ok = t in ("response.output_text.delta", "response.refusal.delta")
            return [delta] if ok and isinstance(delta, str) else []
        return [
            s
            for item in _items(data.get("output"))
            for part in _items(_get(item, "content"))
            for s in (_get(part, "text"), _get(part, "refusal"))
            if isinstance(s, str)
        ]
    if flavor == "anthropic":
        if streamed:
            text = _get(data, "delta", "text")
            return [text] if data.get("type") == "content_block_delta" and isinstance(text, str) else []
        return [
            s
            for b in _items(data.get("content"))
            if _get(b, "type") == "text"
            for s in [_get(b, "text")]
            if isinstance(s, str)
        ]
    if flavor == "gemini":
        return [
            s
            for cand in _items(data.get("candidates"))
            for part in _items(_get(cand, "content", "parts"))
            if not _get(part, "thought")
            for s in [_get(part, "text")]
            if isinstance(s, str)
        ]
    return []


def _items(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _get(v: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(v, Mapping):
            return None
        v = v.get(key)
    return v


# -- the stored content -----------------------------------------------------------------------------


def content_of(
    redact: Redactor,
    body: Any,
    completion: Iterable[str],
    tool_calls: Iterable[tuple[str, str]] = (),
) -> str | None:
    """The `content` of an event: prompt and completion, each redacted then bounded, as JSON.
    None (nothing captured) when the redactor fails: unredacted text is never stored."""
    tools = [f"[tool_call] {name}({args})" for name, args in tool_calls]
    prompt = _valid(_cut(prompt_text(body), _MAX_READ))
    answer = _valid(_cut("\n".join(t for t in ("".join(completion), *tools) if t), _MAX_READ))
    try:
        prompt, answer = redact(prompt), redact(answer)
        if not isinstance(prompt, str) or not isinstance(answer, str):
            raise TypeError("the redactor must return a str")
        prompt, answer = _valid(prompt), _valid(answer)
    except Exception as e:
        # the message may quote the text itself: log only the type
        log.error("tokentrail: the redactor failed (%s); this call's content is not captured", type(e).__name__)
        return None
    out = {"prompt": _cut(prompt, MAX_PROMPT), "completion": _cut(answer, MAX_COMPLETION)}
    return json.dumps(out, ensure_ascii=False)


def _cut(text: str, limit: int) -> str:
    """At most `limit` characters: the head and the tail, with how much was cut between them."""
    if len(text) <= limit:
        return text
    room = limit - len(f"\n[… {len(text)} characters cut …]\n")  # the marker at its longest
    half = max(room // 2, 0)
    return f"{text[:half]}\n[… {len(text) - 2 * half} characters cut …]\n{text[len(text) - half :]}"
