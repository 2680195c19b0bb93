"""The most a call can cost, from its request alone (docs/rules.md §Budgets), for budget reservations.

Input: no token is shorter than one byte, so the UTF-8 byte count of every string in the request
(message text, system prompts, tool names and schemas, keys included) plus an overhead per message
and per request never undercounts the text. Media cannot be bounded by their bytes usefully, so
each image counts a fixed bound (`IMAGE_TOKENS`, above every provider's documented per-image
maximum), and audio, video and documents count one token per byte of their decoded data (or
`FILE_TOKENS` for one only referenced by URL). tiktoken tightens the text count of OpenAI models
only when it is installed *and* its encodings are already on disk; nothing is ever downloaded.

Some requests bill input the body does not show (a `previous_response_id` conversation, a Gemini
`cachedContent`, server-side tools such as web search): their input is bounded by the model's
context window instead.

Output: `max_tokens` / `max_completion_tokens` / `max_output_tokens` / Gemini `maxOutputTokens`
(times `n` / `candidateCount`), else the model's `max_output_tokens` from the price overrides
file, else its context window minus the input, else `UNBOUNDED_OUTPUT_TOKENS` (an actual past
that becomes a recorded overage).

The cost is priced with the model's unit prices at the dearest reading of the input (plain, or
written to a cache at the 5-minute or 1-hour rate, or audio when the request carries audio),
rounded up to the nano-dollar.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from tokentrail.events import NANO
from tokentrail.price_units import parts_of, usage_values
from tokentrail.pricing import Price, PriceBook
from tokentrail.usage import Usage, UsageProblem

log = logging.getLogger("tokentrail")

MESSAGE_OVERHEAD_TOKENS = 16  # role markers and separators of one message (OpenAI uses ~4)
REQUEST_OVERHEAD_TOKENS = 64  # reply priming, the chat template around the whole request
TOOLS_OVERHEAD_TOKENS = 1024  # Anthropic's tool-use system prompt is ~350-700 tokens
IMAGE_TOKENS = 8192  # per image: Anthropic ≤ ~1,600, OpenAI ≤ ~3,800 (4.1-nano), Gemini 3 ≤ 2,240
FILE_TOKENS = 32_768  # a document, audio or video part known only by its URL
UNBOUNDED_OUTPUT_TOKENS = 32_768  # no max_tokens, no max_output_tokens, no context window known
DEFAULT_CONTEXT_WINDOW = 200_000  # input the body does not show, for a model of unknown window
MAX_DEPTH = 64  # parts are recognised down to here; deeper subtrees count as their whole JSON text

_MEDIA_TYPES = {"image", "input_image", "image_url"}
_FILE_TYPES = {"document", "input_file", "file", "input_audio", "audio", "video"}
_SERVER_TOOL_TYPES_OPENAI = {"web_search", "web_search_preview", "file_search", "code_interpreter", "mcp", "computer"}
_UNSHOWN_INPUT_KEYS = ("previous_response_id", "conversation", "cachedContent", "cached_content")
_SKIP_KEYS = frozenset(
    {
        "model",
        "stream",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "temperature",
        "top_p",
        "top_k",
        "n",
        "seed",
        "stream_options",
        "generationConfig",
        "generation_config",
        "metadata",
        "service_tier",
        "user",
        "store",
        "parallel_tool_calls",
        "logprobs",
        "top_logprobs",
        "presence_penalty",
        "frequency_penalty",
        "encoding_format",
        "dimensions",
    }
)


@dataclass(frozen=True, slots=True)
class Estimate:
    """The most one call can use and cost. `cost_usd` is None when the model has no price."""

    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    exact_input: bool = True  # False: input the body does not show was bounded by the context window

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost_nusd(self) -> int:
        return 0 if self.cost_usd is None else int(self.cost_usd.scaleb(9))


# -- input ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Count:
    text_bytes: int = 0
    messages: int = 0
    media_tokens: int = 0
    audio: bool = False
    unshown_input: bool = False
    tools: int = 0
    structure_bytes: int = 0  # JSON punctuation, and subtrees past MAX_DEPTH: never tightened by tiktoken
    strings: list[str] | None = None  # the text strings, when tiktoken is to count them


def _utf8(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


def _b64_len(data: str) -> int:
    """Decoded size of base64 text (without decoding it)."""
    n = len(data.strip())
    return max(0, n * 3 // 4 - data.rstrip().count("=", max(0, n - 2)))


def _data_url_bytes(url: str) -> int | None:
    if url.startswith("data:"):
        _, _, payload = url.partition(",")
        return _b64_len(payload)
    return None


def _media_part(d: dict[str, Any], c: _Count) -> bool:
    """Count a media part (image, audio, document, file) of any provider; True if `d` was one."""
    kind = d.get("type")
    if not isinstance(kind, str):  # a JSON schema's "type": ["string", "null"] is no media type
        kind = None
    # Gemini inline / file data
    inline = d.get("inlineData") or d.get("inline_data")
    if isinstance(inline, dict):
        mime = str(inline.get("mimeType") or inline.get("mime_type") or "")
        data = inline.get("data")
        size = _b64_len(data) if isinstance(data, str) else 0
        _add_media(c, mime, size)
        return True
    file_data = d.get("fileData") or d.get("file_data")
    if isinstance(file_data, dict) and kind is None:
        mime = str(file_data.get("mimeType") or file_data.get("mime_type") or "")
        _add_media(c, mime, None)
        return True
    if kind in _MEDIA_TYPES or kind in _FILE_TYPES:
        if kind in ("image", "document") and isinstance(d.get("source"), dict):  # anthropic
            src = d["source"]
            mime = str(src.get("media_type") or ("image/" if kind == "image" else "application/pdf"))
            if src.get("type") == "text" and isinstance(src.get("data"), str):
                c.text_bytes += _utf8(src["data"])  # a plain-text document is text
                c.messages += 1
                return True
            data = src.get("data")
            _add_media(c, mime, _b64_len(data) if isinstance(data, str) and src.get("type") == "base64" else None)
            return True
        if kind in ("image_url", "input_image"):
            _add_media(c, "image/", None)
            return True
        if kind == "input_audio":  # openai chat: {"type": "input_audio", "input_audio": {"data", "format"}}
            inner = d.get("input_audio")
            data = inner.get("data") if isinstance(inner, dict) else None
            _add_media(c, "audio/", _b64_len(data) if isinstance(data, str) else None)
            return True
        if kind in ("input_file", "file"):
            holder: dict[str, Any] = d["file"] if isinstance(d.get("file"), dict) else d
            file_data = holder.get("file_data")
            file_size: int | None = None
            if isinstance(file_data, str):
                file_size = _data_url_bytes(file_data)
                file_size = _b64_len(file_data) if file_size is None else file_size
            _add_media(c, "application/", file_size)
            return True
        if kind in ("audio", "video"):
            _add_media(c, f"{kind}/", None)
            return True
    return False


def _add_media(c: _Count, mime: str, size: int | None) -> None:
    if mime.startswith("text/") and size is not None:
        c.text_bytes += size  # text sent as a file is still at most one token per byte
    elif mime.startswith("image/"):
        c.media_tokens += IMAGE_TOKENS
    else:
        if mime.startswith("audio/") or mime.startswith("video/"):
            c.audio = True
        c.media_tokens += FILE_TOKENS if size is None else max(size, 1024)
    c.messages += 1


def _walk(body: Any, c: _Count) -> None:
    """Count every string, key and scalar of a request, and its JSON punctuation, with an explicit
    stack: a body nested thousands deep is counted, never a RecursionError. Below MAX_DEPTH the
    request's parts are recognised (messages, media, tools); a deeper subtree is counted as its
    whole JSON text."""
    stack: list[tuple[Any, int]] = [(body, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            c.text_bytes += _utf8(value)
            c.structure_bytes += 2  # its quotes
            if c.strings is not None:
                c.strings.append(value)
        elif isinstance(value, (dict, list, tuple)) and depth > MAX_DEPTH:
            c.structure_bytes += json_text_bytes(value)
        elif isinstance(value, dict):
            top = depth == 0
            if not top and _media_part(value, c):
                continue
            if "role" in value or "parts" in value:
                c.messages += 1
            if not top:
                c.structure_bytes += 1 + 4 * len(value)  # braces, and each key's quotes, colon and comma
            for k, v in value.items():
                if top and k in _SKIP_KEYS:
                    continue
                if (k in _UNSHOWN_INPUT_KEYS and v) or (k == "prompt" and isinstance(v, dict)):
                    c.unshown_input = True  # a stored conversation, cache or prompt template
                    continue
                c.text_bytes += _utf8(k) if isinstance(k, str) else len(str(k))
                if k == "tools" and isinstance(v, list) and v:
                    c.tools += len(v)
                    for t in v:
                        if isinstance(t, dict) and _server_tool(t):
                            c.unshown_input = True
                elif k in ("mcp_servers", "container") and v:
                    c.unshown_input = True
                if type(v) is str:  # counted here as the str branch below would: no stack round trip
                    c.text_bytes += len(v) if v.isascii() else _utf8(v)
                    c.structure_bytes += 2
                    if c.strings is not None:
                        c.strings.append(v)
                    continue
                stack.append((v, depth + 1))
        elif isinstance(value, (list, tuple)):
            c.structure_bytes += 2 + len(value)  # brackets and commas
            stack.extend((item, depth + 1) for item in value)
        elif value is not None and not isinstance(value, bool):
            c.text_bytes += len(str(value)) if isinstance(value, (int, float)) else _utf8(str(value))
        else:
            c.structure_bytes += 5  # null, true, false


def json_text_bytes(value: Any) -> int:
    """At least the bytes of `value` as compact JSON (escapes aside), counted without recursion."""
    total = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += _utf8(v) + 2
        elif isinstance(v, dict):
            total += 1 + 4 * len(v)
            for k, x in v.items():
                total += _utf8(k) if isinstance(k, str) else len(str(k))
                stack.append(x)
        elif isinstance(v, (list, tuple)):
            total += 2 + len(v)
            stack.extend(v)
        elif v is None or isinstance(v, bool):
            total += 5
        else:
            total += len(str(v)) if isinstance(v, (int, float)) else _utf8(str(v))
    return total


def _server_tool(tool: dict[str, Any]) -> bool:
    """A tool the provider runs itself, whose results it bills as input the request does not show."""
    kind = tool.get("type")
    if not isinstance(kind, str) or kind in ("function", "custom"):
        return False
    if kind in _SERVER_TOOL_TYPES_OPENAI:
        return True
    # anthropic server tools are versioned: web_search_20250305, web_fetch_…, code_execution_…
    return kind.startswith(("web_search", "web_fetch", "code_execution", "tool_search"))


def input_tokens_bound(body: Any, *, tokenizer: Any = None) -> tuple[int, bool, bool]:
    """(tokens, shows_all_input, has_audio) for a request body: never fewer tokens than the text it sends."""
    c = _Count(strings=[] if tokenizer is not None else None)
    _walk(body if isinstance(body, dict) else {"input": body}, c)
    text = c.text_bytes
    if tokenizer is not None and c.strings is not None:
        try:
            counted = sum(len(tokenizer.encode(s, disallowed_special=())) + 1 for s in c.strings)
            text = min(text, counted + counted // 20 + 16)
        except Exception:
            log.debug("tokentrail: tiktoken could not count a request; using bytes", exc_info=True)
    tokens = (
        text
        + c.structure_bytes
        + c.media_tokens
        + c.messages * MESSAGE_OVERHEAD_TOKENS
        + REQUEST_OVERHEAD_TOKENS
        + (TOOLS_OVERHEAD_TOKENS if c.tools else 0)
    )
    return tokens, not c.unshown_input, c.audio


# -- output ---------------------------------------------------------------------------------------


def _int(v: Any) -> int | None:
    return v if type(v) is int and v >= 0 else None


def requested_output(body: dict[str, Any]) -> int | None:
    """The output cap the request asks for (times the number of choices), or None."""
    gen = body.get("generationConfig") or body.get("generation_config")
    gen = gen if isinstance(gen, dict) else _NO_CONFIG
    cap = None
    for v in (
        body.get("max_completion_tokens"),
        body.get("max_tokens"),
        body.get("max_output_tokens"),
        gen.get("maxOutputTokens"),
        gen.get("max_output_tokens"),
    ):
        if _int(v) is not None:
            cap = v
            break
    if cap is None:
        return None
    n = _int(body.get("n")) or _int(gen.get("candidateCount")) or _int(gen.get("candidate_count")) or 1
    return int(cap) * max(1, n)


_NO_CONFIG: dict[str, Any] = {}  # read only


def _choices(body: dict[str, Any]) -> int:
    gen = body.get("generationConfig") or body.get("generation_config")
    gen = gen if isinstance(gen, dict) else _NO_CONFIG
    return max(1, _int(body.get("n")) or _int(gen.get("candidateCount")) or 1)


# -- the estimate ---------------------------------------------------------------------------------


def estimate(
    *,
    provider: str,
    model: str | None,
    body: Any,
    prices: PriceBook,
    kind: str = "llm",
    at: datetime | None = None,
) -> Estimate:
    """The most a call with this request body can use and cost."""
    req = body if isinstance(body, dict) else {}
    price = prices.lookup(provider, model, at) if model else None
    tokenizer = _tiktoken_for(model) if provider in ("openai", "azure") and model else None
    shown, shows_all, audio = input_tokens_bound(req, tokenizer=tokenizer)
    window = price.context_window if price else None
    input_tokens = shown if shows_all else max(shown, window or DEFAULT_CONTEXT_WINDOW)
    if kind == "embedding":
        output_tokens = 0
    else:
        cap = requested_output(req)
        if cap is None and price is not None and price.max_output_tokens:
            cap = price.max_output_tokens * _choices(req)
        if cap is None and window:
            cap = max(window - input_tokens, 0) * _choices(req)
        output_tokens = UNBOUNDED_OUTPUT_TOKENS * _choices(req) if cap is None else cap
    cost = None if price is None else max_cost(prices, price, input_tokens, output_tokens, audio=audio, body=req)
    return Estimate(input_tokens, output_tokens, cost, exact_input=shows_all)


def max_cost(
    prices: PriceBook, price: Price, input_tokens: int, output_tokens: int, *, audio: bool = False, body: Any = None
) -> Decimal:
    """The dearest reading of (input, output) tokens at these prices, rounded up to the nano-dollar.

    Memoised per (price book, price, counts, audio): the same function of the same inputs, so a hit
    is exactly what a fresh computation returns. The memo keeps the objects it was keyed on and
    checks them by identity (an id is reused once its object is gone), and is bounded."""
    out_audio = isinstance(body, dict) and "audio" in (body.get("modalities") or ())
    key = (id(prices), id(price), input_tokens, output_tokens, audio, out_audio)
    hit = _COST_MEMO.get(key)
    if hit is not None and hit[0] is prices and hit[1] is price:
        return hit[2]
    readings = [
        Usage(input_tokens=input_tokens, output_tokens=output_tokens),
        Usage(input_tokens=input_tokens, output_tokens=output_tokens, cache_write_tokens=input_tokens),
        Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_write_tokens=input_tokens,
            cache_write_1h_tokens=input_tokens,
        ),
    ]
    if audio:
        readings.append(Usage(input_tokens=input_tokens, output_tokens=output_tokens, input_audio_tokens=input_tokens))
    if out_audio:
        readings.append(
            Usage(input_tokens=input_tokens, output_tokens=output_tokens, output_audio_tokens=output_tokens)
        )
    best = Decimal(0)
    for u in readings:
        try:
            if price.exact:  # prices.cost() without building the Cost: only the total is wanted
                total = sum(parts_of(price.units, usage_values(u), input_tokens), Decimal(0))
            else:
                total = prices.cost(price, u).total_usd
        except UsageProblem:
            continue
        best = max(best, total)
    cost = best.quantize(NANO, rounding=ROUND_CEILING)
    if len(_COST_MEMO) >= _COST_MEMO_MAX:
        _COST_MEMO.clear()
    _COST_MEMO[key] = (prices, price, cost)
    return cost


_COST_MEMO: dict[tuple[int, int, int, int, bool, bool], tuple[PriceBook, Price, Decimal]] = {}
_COST_MEMO_MAX = 4096  # distinct (model, counts) a process sees; cleared whole when full (bounded)


# -- tiktoken, only from what is already on disk ------------------------------------------------------

_ENCODING_URLS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}
_tokenizers: dict[str, Any] = {}


def _tiktoken_for(model: str) -> Any:
    """A tiktoken encoding for an OpenAI model, or None unless tiktoken and its file are local."""
    old = model.startswith(("gpt-3.5", "gpt-4")) and not model.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5"))
    name = "cl100k_base" if old else "o200k_base"
    if name in _tokenizers:
        return _tokenizers[name]
    enc = None
    try:
        import tiktoken  # optional

        cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
        folder = cache or os.path.join(tempfile.gettempdir(), "data-gym-cache")
        key = hashlib.sha1(_ENCODING_URLS[name].encode()).hexdigest()
        if os.path.isfile(os.path.join(folder, key)):
            enc = tiktoken.get_encoding(name)
    except Exception:
        enc = None
    _tokenizers[name] = enc
    return enc
