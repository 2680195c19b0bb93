"""The providers' own usage and cost reports, read strictly into one shape for reconciliation.

Each reader takes the payloads a provider's admin API returns (one page, or the list of every
page in order, as `--fetch` gets them) and yields `ProviderLine`s per UTC day and model. An
unknown shape is an error naming the file and the field, never a silently smaller bill.

Assumptions (README "Reconciling with the provider's bill"):
- OpenAI Usage API (`/v1/organization/usage/completions|embeddings`, bucket_width=1d,
  group_by[]=model): `input_tokens` includes `input_cached_tokens`. Costs API
  (`/v1/organization/costs`, group_by[]=line_item): `amount.value` in dollars; the model is the
  line item's text before ", " ("gpt-4o-2024-08-06, input").
- Anthropic usage report (`/v1/organizations/usage_report/messages`, group_by[]=model): input is
  uncached + cache read + cache creation (5 m and 1 h). Cost report
  (`/v1/organizations/cost_report`, group_by[]=description): `amount` is a decimal string in the
  lowest currency unit (cents).
- Google Cloud Billing export (CSV with the BigQuery column names, or JSON lines): rows of
  "Gemini API", "Generative Language API" and "Vertex AI"; other services are skipped. The model
  and token type are read from the SKU description ("Gemini 2.5 Flash Input Tokens").
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from tokentrail.exceptions import TokentrailError

PROVIDERS = ("openai", "anthropic", "google")
MAX_FILE_BYTES = 256 * 1024 * 1024  # a month of daily buckets is kilobytes; past this it is not an export
GOOGLE_SERVICES = ("Gemini API", "Generative Language API", "Vertex AI")
_TOKEN_UNITS = ("count", "token", "tokens")
_GEMINI = re.compile(r"gemini[ -](\d+(?:\.\d+)?)[ -](pro|flash[ -]lite|flash|ultra|nano)", re.IGNORECASE)


class ReconcileFileError(TokentrailError, ValueError):
    """A file that is not the provider report it should be: says which file and what was expected."""


@dataclass(frozen=True, slots=True)
class ProviderLine:
    """What the provider billed for one model on one UTC day (a usage or a cost line, or both).
    Tokens are inclusive like the ledger's: `input_tokens` counts cache reads and writes.
    `requests` is None where the provider does not count them; `cost_usd` None on a usage line."""

    day: date
    model: str
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    requests: int | None = None
    cost_usd: Decimal | None = None
    usage: bool = True  # False: a cost line (its tokens are not the provider's count)


@dataclass(frozen=True, slots=True)
class ProviderFile:
    """One file read: which report it was (usage or cost) and its lines."""

    path: str
    kind: str  # "usage" | "cost" | "billing" (Google's export has both)
    lines: tuple[ProviderLine, ...]


class _Where:
    """Error messages that say file and place: `openai-usage.json: page 2, bucket 3, result 1: …`."""

    def __init__(self, path: str, *parts: str) -> None:
        self.path, self.parts = path, parts

    def at(self, part: str) -> _Where:
        return _Where(self.path, *self.parts, part)

    def fail(self, message: str) -> ReconcileFileError:
        place = ", ".join(self.parts)
        return ReconcileFileError(f"{self.path}: {place + ': ' if place else ''}{message}")

    def get(self, obj: Mapping[str, Any], key: str, *types: type, optional: bool = False) -> Any:
        if key not in obj or obj[key] is None:
            if optional:
                return None
            raise self.fail(f"missing field {key!r}")
        value = obj[key]
        if types and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            names = " or ".join(t.__name__ for t in types)
            raise self.fail(f"field {key!r} should be {names}, not {type(value).__name__} {str(value)[:40]!r}")
        return value

    def count(self, obj: Mapping[str, Any], key: str) -> int:
        value = self.get(obj, key, int, optional=True)
        if value is None:
            return 0
        if value < 0:
            raise self.fail(f"field {key!r} is negative ({value})")
        return int(value)


def read_file(provider: str, path: str | Path) -> ProviderFile:
    """Read one export of `provider`; ReconcileFileError naming the file and what was expected."""
    if provider not in PROVIDERS:
        raise ValueError(f"--provider {provider!r}: expected one of {', '.join(PROVIDERS)}")
    name = str(path)
    try:
        p = Path(path)
        if p.stat().st_size > MAX_FILE_BYTES:
            raise ReconcileFileError(f"{name}: larger than {MAX_FILE_BYTES // 2**20} MiB: not a usage export")
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ReconcileFileError(f"{name}: cannot read it: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ReconcileFileError(f"{name}: not UTF-8 text: expected the provider's JSON report") from None
    if provider == "google":
        return read_google(name, text)
    pages = _json_pages(name, text)
    return read_openai(name, pages) if provider == "openai" else read_anthropic(name, pages)


def _json_pages(name: str, text: str) -> list[Mapping[str, Any]]:
    try:
        data = json.loads(text, parse_float=Decimal)
    except RecursionError:
        raise ReconcileFileError(f"{name}: nested too deeply: not a provider report") from None
    except ValueError as e:
        raise ReconcileFileError(f"{name}: not JSON ({e}): expected the provider's report") from None
    pages = data if isinstance(data, list) else [data]
    if not pages or not all(isinstance(p, dict) for p in pages):
        raise ReconcileFileError(f"{name}: expected a report page (a JSON object) or a list of pages")
    return pages


def _buckets(name: str, pages: Sequence[Mapping[str, Any]]) -> Iterator[tuple[_Where, Mapping[str, Any]]]:
    """Every bucket of every page, checking the pages run to the end (has_more false on the last)."""
    for i, page in enumerate(pages, 1):
        w = _Where(name, f"page {i}") if len(pages) > 1 else _Where(name)
        data = w.get(page, "data", list)
        more = w.get(page, "has_more", bool)
        if more and i == len(pages):
            raise w.fail(
                "has_more is true but no page follows: the report is incomplete (save every page, or use --fetch)"
            )
        if not more and i < len(pages):
            raise w.fail("has_more is false but more pages follow: pages of different reports?")
        for j, bucket in enumerate(data, 1):
            bw = w.at(f"bucket {j}")
            if not isinstance(bucket, dict):
                raise bw.fail("expected a bucket object")
            yield bw, bucket


def _day(w: _Where, start: datetime, end: datetime) -> date:
    if (end - start).total_seconds() != 86_400 or start.time() != datetime.min.time():
        raise w.fail(f"expected daily buckets from midnight UTC (bucket_width=1d), got {start} → {end}")
    return start.date()


def _epoch(w: _Where, obj: Mapping[str, Any], field: str) -> datetime:
    seconds = w.get(obj, field, int)
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise w.fail(f"field {field!r}: {seconds} is not a time (Unix seconds)") from None


def _money(w: _Where, value: Any, field: str) -> Decimal:
    try:
        out = Decimal(value) if isinstance(value, (str, int, Decimal)) and not isinstance(value, bool) else None
    except InvalidOperation:
        out = None
    if out is None or not out.is_finite():
        raise w.fail(f"field {field!r} should be a decimal amount, not {str(value)[:40]!r}")
    return out


def _usd(w: _Where, currency: Any) -> None:
    if not isinstance(currency, str) or currency.lower() != "usd":
        raise w.fail(f"currency {currency!r}: only USD reports can be reconciled")


# -- OpenAI ---------------------------------------------------------------------------------


_OPENAI_KINDS = {
    "organization.usage.completions.result": "usage",
    "organization.usage.embeddings.result": "usage",
    "organization.costs.result": "cost",
}


def read_openai(name: str, pages: Sequence[Mapping[str, Any]]) -> ProviderFile:
    lines: list[ProviderLine] = []
    kinds: set[str] = set()
    for i, page in enumerate(pages, 1):
        if page.get("object") != "page":
            raise _Where(name, f"page {i}").fail(
                'expected an OpenAI Usage or Costs API page ("object": "page"), '
                f"got object {str(page.get('object'))[:40]!r}"
            )
    for w, bucket in _buckets(name, pages):
        if bucket.get("object") != "bucket":
            raise w.fail('expected "object": "bucket"')
        day = _day(w, _epoch(w, bucket, "start_time"), _epoch(w, bucket, "end_time"))
        for k, result in enumerate(w.get(bucket, "results", list), 1):
            rw = w.at(f"result {k}")
            if not isinstance(result, dict) or result.get("object") not in _OPENAI_KINDS:
                raise rw.fail(f"expected one of the objects {', '.join(_OPENAI_KINDS)}")
            kind = _OPENAI_KINDS[result["object"]]
            kinds.add(kind)
            lines.append(_openai_cost(rw, day, result) if kind == "cost" else _openai_usage(rw, day, result))
    if len(kinds) > 1:
        raise ReconcileFileError(f"{name}: mixes usage and cost results: pass them as two files")
    return ProviderFile(name, kinds.pop() if kinds else "usage", tuple(lines))


def _openai_usage(w: _Where, day: date, r: Mapping[str, Any]) -> ProviderLine:
    model = w.get(r, "model", str, optional=True)
    if model is None:
        raise w.fail("no 'model': fetch the usage grouped by model (group_by[]=model)")
    inp, cached = w.count(r, "input_tokens"), w.count(r, "input_cached_tokens")
    if cached > inp:
        raise w.fail(f"input_cached_tokens ({cached}) exceeds input_tokens ({inp})")
    requests = w.count(r, "num_model_requests")
    return ProviderLine(day, model, inp, cached, 0, w.count(r, "output_tokens"), requests)


def _openai_cost(w: _Where, day: date, r: Mapping[str, Any]) -> ProviderLine:
    amount = w.get(r, "amount", dict)
    _usd(w, amount.get("currency"))
    value = _money(w, amount.get("value"), "amount.value")
    item = w.get(r, "line_item", str, optional=True)
    if item is None:
        raise w.fail("no 'line_item': fetch the costs grouped by line item (group_by[]=line_item)")
    model = item.split(", ")[0].strip() or item
    return ProviderLine(day, model, cost_usd=value, usage=False)


# -- Anthropic ------------------------------------------------------------------------------


def _iso(w: _Where, value: Any, field: str) -> datetime:
    if value is None:
        raise w.fail(f"missing field {field!r}")
    if not isinstance(value, str):
        raise w.fail(f"field {field!r} should be an RFC 3339 time, not {str(value)[:40]!r}")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise w.fail(f"field {field!r} should be an RFC 3339 time, not {value[:40]!r}") from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)


def read_anthropic(name: str, pages: Sequence[Mapping[str, Any]]) -> ProviderFile:
    lines: list[ProviderLine] = []
    kinds: set[str] = set()
    for w, bucket in _buckets(name, pages):
        start = _iso(w, bucket.get("starting_at"), "starting_at")
        day = _day(w, start, _iso(w, bucket.get("ending_at"), "ending_at"))
        for k, result in enumerate(w.get(bucket, "results", list), 1):
            rw = w.at(f"result {k}")
            if not isinstance(result, dict):
                raise rw.fail("expected a result object")
            if "amount" in result:
                kinds.add("cost")
                lines.append(_anthropic_cost(rw, day, result))
            elif "uncached_input_tokens" in result:
                kinds.add("usage")
                lines.append(_anthropic_usage(rw, day, result))
            else:
                raise rw.fail(
                    "expected a messages usage result (uncached_input_tokens, …) or a cost result (amount, …)"
                )
    if len(kinds) > 1:
        raise ReconcileFileError(f"{name}: mixes usage and cost results: pass them as two files")
    return ProviderFile(name, kinds.pop() if kinds else "usage", tuple(lines))


def _anthropic_usage(w: _Where, day: date, r: Mapping[str, Any]) -> ProviderLine:
    model = w.get(r, "model", str, optional=True)
    if model is None:
        raise w.fail("no 'model': fetch the usage report grouped by model (group_by[]=model)")
    creation = w.get(r, "cache_creation", dict, optional=True) or {}
    cw = w.at("cache_creation")
    write = cw.count(creation, "ephemeral_5m_input_tokens") + cw.count(creation, "ephemeral_1h_input_tokens")
    read = w.count(r, "cache_read_input_tokens")
    inp = w.count(r, "uncached_input_tokens") + read + write
    return ProviderLine(day, model, inp, read, write, w.count(r, "output_tokens"))


def _anthropic_cost(w: _Where, day: date, r: Mapping[str, Any]) -> ProviderLine:
    _usd(w, r.get("currency"))
    cents = _money(w, r.get("amount"), "amount")
    model = w.get(r, "model", str, optional=True)
    if model is None:
        cost_type = r.get("cost_type")
        if cost_type in (None, "tokens"):
            raise w.fail("no 'model': fetch the cost report grouped by description (group_by[]=description)")
        model = f"({cost_type})"
    return ProviderLine(day, model, cost_usd=cents / 100, usage=False)


# -- Google ---------------------------------------------------------------------------------

_CSV_COLUMNS = ("service.description", "sku.description", "usage_start_time", "cost", "currency")


def read_google(name: str, text: str) -> ProviderFile:
    """A Cloud Billing export: CSV (BigQuery column names as the header) or JSON lines."""
    if text.lstrip().startswith("{"):
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    obj = json.loads(line, parse_float=Decimal)
                except (ValueError, RecursionError):
                    raise ReconcileFileError(f"{name}: line {i}: not JSON: expected one billing row per line") from None
                if not isinstance(obj, dict):
                    raise ReconcileFileError(f"{name}: line {i}: expected a billing row object")
                rows.append((_Where(name, f"line {i}"), _flatten(obj)))
    else:
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in _CSV_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ReconcileFileError(
                f"{name}: not a Cloud Billing export: the header lacks {', '.join(missing)} "
                "(expected CSV with the BigQuery export's column names, or JSON lines)"
            )
        try:
            rows = [(_Where(name, f"row {i}"), dict(r)) for i, r in enumerate(reader, 2)]
        except csv.Error as e:
            raise ReconcileFileError(f"{name}: line {reader.line_num}: not CSV ({e})") from None
    return ProviderFile(name, "billing", tuple(pl for w, r in rows if (pl := _google_row(w, r)) is not None))


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _google_row(w: _Where, r: Mapping[str, Any]) -> ProviderLine | None:
    service = w.get(r, "service.description", str)
    if service not in GOOGLE_SERVICES:
        return None  # the export holds every service of the billing account
    sku = w.get(r, "sku.description", str)
    _usd(w, r.get("currency"))
    cost = _money(w, r.get("cost"), "cost")
    start = str(w.get(r, "usage_start_time", str)).replace(" UTC", "+00:00").replace(" ", "T", 1)
    day = _iso(w, start, "usage_start_time").date()
    m = _GEMINI.search(sku)
    model = f"gemini-{m.group(1)}-{m.group(2).lower().replace(' ', '-')}" if m else f"({sku})"
    tokens = 0
    unit = r.get("usage.unit")
    if isinstance(unit, str) and unit.lower() in _TOKEN_UNITS:
        amount = _money(w, r.get("usage.amount"), "usage.amount")
        if amount != amount.to_integral_value() or amount < 0:
            raise w.fail(f"usage.amount {amount} is not a token count")
        tokens = int(amount)
    low = sku.lower()
    if "output" in low:
        return ProviderLine(day, model, output_tokens=tokens, cost_usd=cost)
    if "cache" in low:
        return ProviderLine(day, model, input_tokens=tokens, cache_read_tokens=tokens, cost_usd=cost)
    if "input" in low:
        return ProviderLine(day, model, input_tokens=tokens, cost_usd=cost)
    return ProviderLine(day, model, cost_usd=cost)
