"""Where the gateway sends a request: the provider upstreams and the routing rule (docs/rules.md §Gateway)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from tokentrail.integrations.wire import ANTHROPIC_MESSAGES, GEMINI, OPENAI_CHAT, Route, route_for

PROVIDERS = ("openai", "anthropic", "gemini")
DEFAULTS = {
    "openai": "https://api.openai.com",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
}
# Pass-through paths are metered with a route that reads whatever usage the payload carries.
_ANY = {
    "openai": Route("openai", "openai_any", "other"),
    "anthropic": Route("anthropic", ANTHROPIC_MESSAGES.flavor, "other"),
    "gemini": Route("google", GEMINI.flavor, "other"),
}
# POST endpoints that bill nothing: proxied, never recorded as calls.
_FREE = ("/messages/count_tokens", ":countTokens", "/moderations")


def path_problem(raw_path: str) -> str | None:
    """Why the gateway refuses to forward `raw_path` (still percent-encoded), or None. The path
    is appended to an upstream's base URL, so nothing in it may climb out of that base: no `.`
    or `..` segment, empty segment (`//`), backslash, encoded slash or control character, in
    any encoding (decoded until it stops changing, as a lax server downstream might)."""
    if not raw_path.startswith("/"):
        return "the request path must start with /"
    seen = raw_path
    for _ in range(4):
        low = seen.lower()
        if "%2f" in low or "%5c" in low:
            return "the request path may not hold an encoded slash or backslash"
        decoded = unquote(seen)
        if decoded == seen:
            break
        seen = decoded
    else:
        return "the request path is encoded too many times over"
    if "\\" in seen or any(c < " " or c == "\x7f" for c in seen):
        return "the request path may not hold a backslash or control character"
    segments = seen.split("/")[1:]
    if any(s.split(";", 1)[0].strip(".") == "" and s for s in segments):
        return "the request path may not hold a '.' or '..' segment"
    if "" in segments[:-1]:
        return "the request path may not hold an empty segment (//)"
    return None


def base_url(url: str) -> str:
    """An upstream as its SDK takes it, with or without one trailing `/v1`: the gateway forwards
    the caller's full path (which starts with /v1), so that `/v1` is stripped here."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"upstream URL {url!r} must start with http:// or https://")
    return url[:-3] if url.endswith("/v1") else url


@dataclass(frozen=True)
class Upstreams:
    """Base URLs (without `/v1`) of the three provider upstreams."""

    urls: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULTS))

    @classmethod
    def of(cls, given: Mapping[str, str] | None = None) -> Upstreams:
        urls = dict(DEFAULTS)
        for name, url in (given or {}).items():
            if name not in PROVIDERS:
                raise ValueError(f"unknown upstream {name!r}: use one of {', '.join(PROVIDERS)}")
            urls[name] = base_url(url)
        return cls(urls)

    path_problem = staticmethod(path_problem)

    @staticmethod
    def provider_for(path: str, headers: Mapping[str, str]) -> str:
        """Gemini paths (`:generateContent`, `:streamGenerateContent`, /v1beta, /v1alpha, or an
        x-goog-api-key) go to Gemini; an `anthropic-version` header or /v1/messages to Anthropic;
        the rest to OpenAI."""
        bare = path.split("?", 1)[0]
        if (
            bare.endswith((":generateContent", ":streamGenerateContent"))
            or bare.startswith(("/v1beta/", "/v1alpha/"))
            or "x-goog-api-key" in headers
        ):
            return "gemini"
        if "anthropic-version" in headers or bare.rstrip("/") in ("/v1/messages", "/v1/messages/count_tokens"):
            return "anthropic"
        return "openai"

    @staticmethod
    def route_for(provider: str, method: str, path: str) -> Route | None:
        """The metered route of a request: a known billable endpoint, else (a POST elsewhere) a
        pass-through route that still reads any usage the response carries; None for GETs etc."""
        if method != "POST" or path.split("?", 1)[0].rstrip("/").endswith(_FREE):
            return None
        route = route_for(method, path)
        if route is not None and _PROVIDER_OF_FLAVOR[route.flavor] == provider:
            return route
        return _ANY[provider]


_PROVIDER_OF_FLAVOR = {
    OPENAI_CHAT.flavor: "openai",
    "openai_responses": "openai",
    "openai_embeddings": "openai",
    ANTHROPIC_MESSAGES.flavor: "anthropic",
    GEMINI.flavor: "gemini",
}
