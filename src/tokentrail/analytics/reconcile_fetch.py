"""`tokentrail reconcile --fetch`: the same reports, read from the providers' admin APIs.

The admin key comes from an environment variable (OPENAI_ADMIN_KEY, ANTHROPIC_ADMIN_KEY) and is
only ever sent in the request header to the API's own host: never stored, logged or shown (an
error body that echoes it is redacted). Plain HTTP is refused except to this machine (tests).
Every page is followed (`has_more`/`next_page`), at most MAX_PAGES per report. The stdlib's
urllib is enough here: no client library is imported with tokentrail.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokentrail.analytics.reconcile_files import ProviderFile, ReconcileFileError, read_anthropic, read_openai
from tokentrail.exceptions import TokentrailError

MAX_PAGES = 1000
MAX_BODY_BYTES = 64 * 1024 * 1024
TIMEOUT_S = 60.0
KEY_ENV = {"openai": "OPENAI_ADMIN_KEY", "anthropic": "ANTHROPIC_ADMIN_KEY"}
BASE_URL = {"openai": "https://api.openai.com", "anthropic": "https://api.anthropic.com"}
ANTHROPIC_VERSION = "2023-06-01"
_LOCAL = ("127.0.0.1", "localhost", "::1")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: urllib would send the admin key on to wherever it points."""

    def redirect_request(self, *args: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)
_LOCAL_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)  # no proxy for 127.0.0.1


class FetchError(TokentrailError, RuntimeError):
    """The provider's API could not give the report (refused the key, failed, answered nonsense)."""


def fetch_reports(
    provider: str, since: datetime, until: datetime, *, base_url: str | None = None
) -> list[ProviderFile]:
    """Every page of the provider's usage and cost reports for [since, until), daily by model.
    ValueError for what the user can fix before any request (no key, Google); FetchError after."""
    if provider not in KEY_ENV:
        raise ValueError(
            "--fetch reads the OpenAI and Anthropic admin APIs; Google's bill is the Cloud Billing export "
            "(export it to CSV or JSON lines and pass it with --file)"
        )
    env = KEY_ENV[provider]
    key = os.environ.get(env, "").strip()
    if not key:
        raise ValueError(f"--fetch {provider}: set {env} to an admin key of the organization")
    base = _base(base_url or os.environ.get(f"TOKENTRAIL_{provider.upper()}_ADMIN_URL") or BASE_URL[provider])
    if provider == "openai":
        window = {"start_time": str(int(since.timestamp())), "end_time": str(int(until.timestamp()))}
        headers = {"Authorization": f"Bearer {key}"}
        wanted: tuple[tuple[str, dict[str, str]], ...] = (
            ("/v1/organization/usage/completions", {"group_by[]": "model", "limit": "31"}),
            ("/v1/organization/usage/embeddings", {"group_by[]": "model", "limit": "31"}),
            ("/v1/organization/costs", {"group_by[]": "line_item", "limit": "180"}),
        )
        reader = read_openai
    else:
        window = {"starting_at": _rfc3339(since), "ending_at": _rfc3339(until)}
        headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
        wanted = (
            ("/v1/organizations/usage_report/messages", {"group_by[]": "model", "limit": "31"}),
            ("/v1/organizations/cost_report", {"group_by[]": "description"}),
        )
        reader = read_anthropic
    out = []
    for path, params in wanted:
        query = {**window, "bucket_width": "1d", **params}
        pages = _pages(provider, base + path, query, headers, key)
        try:
            out.append(reader(f"{provider} {path}", pages))
        except ReconcileFileError as e:
            raise FetchError(f"{e} (the API's answer is not the documented report)") from None
    return out


def _base(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOCAL):
        raise ValueError(f"admin API URL {url!r}: https only (an admin key never travels in clear)")
    return url.rstrip("/")


def _rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _pages(
    provider: str, url: str, query: Mapping[str, str], headers: Mapping[str, str], key: str
) -> list[Mapping[str, Any]]:
    pages: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    cursor: str | None = None
    while True:
        if len(pages) >= MAX_PAGES:
            raise FetchError(f"{provider} {url}: more than {MAX_PAGES} pages: narrow --since/--until")
        params = {**query, **({"page": cursor} if cursor else {})}
        page = _get(provider, f"{url}?{urllib.parse.urlencode(params)}", headers, key)
        pages.append(page)
        if page.get("has_more") is not True:
            return pages
        cursor = page.get("next_page")
        if not isinstance(cursor, str) or not cursor or cursor in seen:
            raise FetchError(f"{provider} {url}: has_more without a new next_page cursor")
        seen.add(cursor)


def _get(provider: str, url: str, headers: Mapping[str, str], key: str) -> Mapping[str, Any]:
    request = urllib.request.Request(url, headers={**headers, "Accept": "application/json"}, method="GET")
    try:
        opener = _LOCAL_OPENER if urllib.parse.urlsplit(url).hostname in _LOCAL else _OPENER
        with opener.open(request, timeout=TIMEOUT_S) as response:
            body = response.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as e:
        detail = _redact(e.read(2000).decode("utf-8", "replace"), key)
        env = KEY_ENV[provider]
        if e.code in (401, 403):
            raise FetchError(
                f"{provider} admin API refused the key in {env} (HTTP {e.code}): it must be an organization "
                f"admin key. {detail}"
            ) from None
        raise FetchError(f"{provider} admin API: HTTP {e.code} for {url.split('?')[0]}: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise FetchError(f"{provider} admin API unreachable at {url.split('?')[0]}: {reason}") from None
    if len(body) > MAX_BODY_BYTES:
        raise FetchError(f"{provider} admin API: a page larger than {MAX_BODY_BYTES // 2**20} MiB")
    try:
        page = json.loads(body, parse_float=Decimal)
    except ValueError:
        raise FetchError(f"{provider} admin API: {url.split('?')[0]} answered something that is not JSON") from None
    if not isinstance(page, dict):
        raise FetchError(f"{provider} admin API: {url.split('?')[0]} answered a JSON {type(page).__name__}, not a page")
    return page


def _redact(text: str, key: str) -> str:
    text = " ".join(text.split())[:300]
    return text.replace(key, "[admin key]") if key else text
