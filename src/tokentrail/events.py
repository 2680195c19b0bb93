"""The usage event: one metered model, embedding or tool call, or a correction of one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import uuid_utils

from tokentrail.money import usd

KINDS = ("llm", "embedding", "tool", "adjustment")
DIMENSIONS = (
    "org",
    "team",
    "project",
    "agent",
    "session_id",
    "user",
    "customer",
    "workflow",
    "task_type",
    "step",
)
MAX_TAGS = 64
MAX_TEXT = 256
NANO = Decimal("0.000000001")  # costs are stored as integer nano-dollars


def new_event_id() -> str:
    """A client-generated, time-ordered UUIDv7 (makes replays idempotent and inserts append-only)."""
    return str(uuid_utils.uuid7())


def utcnow() -> datetime:
    return datetime.now(UTC)


def bound_text(value: object) -> str | None:
    """Dimension and name strings are at most MAX_TEXT characters."""
    if value is None:
        return None
    s = value if isinstance(value, str) else str(value)
    return s if len(s) <= MAX_TEXT else s[:MAX_TEXT]


OUTPUT_LIMIT_UNKNOWN = 0
OUTPUT_LIMIT_NONE = -1

EARLIEST_TS = datetime(2000, 1, 1, tzinfo=UTC)
MAX_AHEAD = timedelta(days=1)


def ts_problem(ts: datetime) -> str | None:
    """Why a submitted event time cannot be right (before 2000, or more than a day ahead), or None."""
    if ts < EARLIEST_TS:
        return "is before 2000"
    if ts > datetime.now(UTC) + MAX_AHEAD:
        return "is more than a day in the future"
    return None


def text_problem(s: str) -> str | None:
    """Why a string cannot be stored as it is on every backend, or None. PostgreSQL text holds no
    NUL (and jsonb no \\u0000: one NUL in a tag would break every tag report), and no store can
    encode a lone surrogate as UTF-8."""
    if "\x00" in s:
        return "contains a NUL character"
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (not valid Unicode)"
    return None


def checked_text(value: object, what: str) -> str | None:
    """bound_text for text a caller gives (attribution, names): ValueError naming `what` if it
    holds what no store can keep (see text_problem)."""
    s = bound_text(value)
    if s is not None and (why := text_problem(s)) is not None:
        raise ValueError(f"{what} {s[:64]!r} {why}")
    return s


def bound_tags(tags: Mapping[Any, Any] | None) -> dict[str, str]:
    """String keys (lower-cased) and string values, at most MAX_TAGS of them, MAX_TEXT characters
    each. ValueError when a key or value holds what no store can keep (see text_problem)."""
    if not tags:
        return {}
    out: dict[str, str] = {}
    for k, v in tags.items():
        if len(out) >= MAX_TAGS:
            break
        key = str(k).strip().lower()[:MAX_TEXT]
        if key and v is not None:
            value = str(v)[:MAX_TEXT]
            if (why := text_problem(key)) is not None:
                raise ValueError(f"tag key {key[:64]!r} {why}")
            if (why := text_problem(value)) is not None:
                raise ValueError(f"tag {key[:64]!r}: its value {why}")
            out[key] = value
    return out


def args_hash(args: object) -> str:
    """A stable hash of tool arguments: JSON text is parsed first, so key order and spacing do not matter."""
    if isinstance(args, (str, bytes)):
        try:
            args = json.loads(args)
        except ValueError:
            pass
    text = json.dumps(args, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]  # a lone surrogate hashes too


def quantize_usd(value: Decimal | None) -> Decimal | None:
    """Round a cost half-even to a nano-dollar, the precision the ledger stores (in plain form:
    0, 0.003, never 0E-9 or 0.003000000)."""
    return None if value is None else usd(value.quantize(NANO))


def usd_to_nano(value: Decimal | None) -> int | None:
    return None if value is None else int(value.quantize(NANO).scaleb(9))


def nano_to_usd(value: int | None) -> Decimal | None:
    return None if value is None else usd(Decimal(value).scaleb(-9))


def ts_micros(ts: datetime) -> int:
    """Microseconds since the epoch, exact (no float)."""
    return (ts - _EPOCH) // _MICROSECOND


def from_micros(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call a model asked for."""

    id: str | None
    name: str
    args_hash: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "args_hash": self.args_hash}


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One metered call. Token counts are inclusive (see tokentrail.usage)."""

    event_id: str = field(default_factory=new_event_id)
    kind: str = "llm"
    ts: datetime = field(default_factory=utcnow)
    latency_ms: float | None = None
    status: str = "ok"
    provider: str | None = None
    model: str | None = None
    operation: str | None = None
    streamed: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    context_window_tokens: int | None = None
    cost_usd: Decimal | None = None
    price_source: str | None = None
    price_version: str | None = None
    unit_prices: Mapping[str, str] | None = None
    org: str | None = None
    team: str | None = None
    project: str | None = None
    agent: str | None = None
    session_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    user: str | None = None
    customer: str | None = None
    workflow: str | None = None
    task_type: str | None = None
    step: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = ()
    tool_name: str | None = None
    tool_call_id: str | None = None
    tool_args_hash: str | None = None
    adjusts_event_id: str | None = None
    note: str | None = None  # why an adjustment was made; error detail of a failed call
    request_hash: str | None = None  # fingerprint of the prompt (sha256), never the prompt itself
    content: str | None = None  # captured prompt/completion, only with capture_content=True, redacted
    # True: the provider never reported this call's usage (a stream cut or abandoned before its usage
    # arrived, an unreadable body); the counts are tokentrail's estimate of what it billed
    usage_estimated: bool = False
    # read from the request and response at metering time (migration 0013), for the anomaly detectors:
    # the output limit the request set (OUTPUT_LIMIT_UNKNOWN: not read, e.g. a tool run or an event
    # from before 0013; OUTPUT_LIMIT_NONE: the request set none), whether the call stopped on it, and
    # the share of the prompt's bytes in system/developer instructions, in per mille (never the text)
    output_limit: int = 0
    stopped_on_limit: bool = False
    system_permille: int = 0
    # the session this event's session was opened inside (agent trees); None for a root session
    parent_session_id: str | None = None
    # the request's stable prefix (system, tools, leading instructions): "<hash>:<share of the
    # prompt's bytes in per mille>", read at metering time, never the text (migration 0016)
    prefix_hash: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def context_utilisation(self) -> float | None:
        if not self.context_window_tokens:
            return None
        return self.input_tokens / self.context_window_tokens

    @property
    def unpriced(self) -> bool:
        return self.cost_usd is None and self.kind in ("llm", "embedding")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (Decimal as string, datetime as ISO-8601)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Decimal):
                v = format(v, "f")
            elif isinstance(v, datetime):
                v = v.isoformat()
            elif f.name == "tool_calls":
                v = [tc.to_json() for tc in v]
            elif isinstance(v, Mapping):
                v = dict(v)
            out[f.name] = v
        return out


FIELD_NAMES = tuple(f.name for f in fields(UsageEvent))


# -- the stored form -------------------------------------------------------------------------
# A row is a flat tuple of str / int / float / None, the same on every backend. It is what the
# stores write and read, and its JSON text is the canonical event the audit chain hashes.

COLUMNS = (
    "event_id",
    "kind",
    "ts_us",
    "latency_ms",
    "status",
    "provider",
    "model",
    "operation",
    "streamed",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "context_window_tokens",
    "cost_nusd",
    "price_source",
    "price_version",
    "unit_prices",
    "org",
    "team",
    "project",
    "agent",
    "session_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "user_id",
    "customer",
    "workflow",
    "task_type",
    "step",
    "tags",
    "tool_calls",
    "tool_name",
    "tool_call_id",
    "tool_args_hash",
    "adjusts_event_id",
    "note",
    "request_hash",
    "content",
    "usage_estimated",  # migration 0010; in the canonical event only when set (see canonical_bytes)
    "output_limit",  # migration 0013 (the same rule)
    "stopped_on_limit",
    "system_permille",
    "parent_session_id",  # migration 0014 (the same rule)
    "prefix_hash",  # migration 0016 (the same rule)
)
COL = {name: i for i, name in enumerate(COLUMNS)}
_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
# The C encoder behind json.dumps, made once: the same bytes as _dumps for a flat row, ~1 µs faster.
_encode_row = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, None, json.encoder.encode_basestring, None, ":", ",", True, False, True
)
# Events of one session share their tags, and a price's unit prices repeat: remember the JSON of
# the last few thousand by content (their items) instead of encoding them again. Only all-text
# mappings are remembered: 1, 1.0 and True are equal keys but encode differently.
_json_memo: dict[tuple[tuple[str, str], ...], str] = {}
_JSON_MEMO_MAX = 4096


def _mapping_json(m: Mapping[str, str] | None) -> str | None:
    if not m:
        return None
    items = tuple(m.items())
    try:
        hit = _json_memo.get(items)
    except TypeError:  # an unhashable value: encoded (or refused) below, never remembered
        hit = None
    if hit is not None:
        return hit
    text = _dumps(dict(items))
    if all(type(k) is str and type(v) is str for k, v in items):
        if len(_json_memo) >= _JSON_MEMO_MAX:
            _json_memo.clear()
        _json_memo[items] = text
    return text


def to_row(e: UsageEvent) -> tuple[Any, ...]:
    return (
        e.event_id,
        e.kind,
        ts_micros(e.ts),
        None if e.latency_ms is None else float(e.latency_ms),  # stored as a float on every backend
        e.status,
        e.provider,
        e.model,
        e.operation,
        1 if e.streamed else 0,
        e.input_tokens,
        e.output_tokens,
        e.cache_read_tokens,
        e.cache_write_tokens,
        e.reasoning_tokens,
        e.context_window_tokens,
        usd_to_nano(e.cost_usd),
        e.price_source,
        e.price_version,
        _mapping_json(e.unit_prices),
        e.org,
        e.team,
        e.project,
        e.agent,
        e.session_id,
        e.trace_id,
        e.span_id,
        e.parent_span_id,
        e.user,
        e.customer,
        e.workflow,
        e.task_type,
        e.step,
        _mapping_json(e.tags),
        _dumps([tc.to_json() for tc in e.tool_calls]) if e.tool_calls else None,
        e.tool_name,
        e.tool_call_id,
        e.tool_args_hash,
        e.adjusts_event_id,
        e.note,
        e.request_hash,
        e.content,
        1 if e.usage_estimated else 0,
        e.output_limit,
        1 if e.stopped_on_limit else 0,
        e.system_permille,
        e.parent_session_id,
        e.prefix_hash,
    )


def from_row(r: tuple[Any, ...] | list[Any]) -> UsageEvent:
    tool_calls = json.loads(r[33]) if r[33] else []
    return UsageEvent(
        event_id=r[0],
        kind=r[1],
        ts=from_micros(r[2]),
        latency_ms=r[3],
        status=r[4],
        provider=r[5],
        model=r[6],
        operation=r[7],
        streamed=bool(r[8]),
        input_tokens=r[9],
        output_tokens=r[10],
        cache_read_tokens=r[11],
        cache_write_tokens=r[12],
        reasoning_tokens=r[13],
        context_window_tokens=r[14],
        cost_usd=nano_to_usd(r[15]),
        price_source=r[16],
        price_version=r[17],
        unit_prices=json.loads(r[18]) if r[18] else None,
        org=r[19],
        team=r[20],
        project=r[21],
        agent=r[22],
        session_id=r[23],
        trace_id=r[24],
        span_id=r[25],
        parent_span_id=r[26],
        user=r[27],
        customer=r[28],
        workflow=r[29],
        task_type=r[30],
        step=r[31],
        tags=json.loads(r[32]) if r[32] else {},
        tool_calls=tuple(ToolCall(t.get("id"), t["name"], t["args_hash"]) for t in tool_calls),
        tool_name=r[34],
        tool_call_id=r[35],
        tool_args_hash=r[36],
        adjusts_event_id=r[37],
        note=r[38],
        request_hash=r[39],
        content=r[40],
        usage_estimated=bool(r[41]) if len(r) > 41 else False,
        output_limit=r[42] if len(r) > 42 else 0,
        stopped_on_limit=bool(r[43]) if len(r) > 43 else False,
        system_permille=r[44] if len(r) > 44 else 0,
        parent_session_id=r[45] if len(r) > 45 else None,
        prefix_hash=r[46] if len(r) > 46 else None,
    )


# The columns of the first schema. Columns added since (all with a falsy default) enter the
# canonical event up to the last one that holds more than its default, so every event hashed
# before a column existed still verifies.
V1_COLUMNS = 41


def canonical_bytes(row: tuple[Any, ...]) -> bytes:
    """The canonical event: the stored row as compact JSON. What the audit chain hashes."""
    # trailing added columns at their default are left out: an event hashed before a column existed
    # (or with only the earlier ones set) keeps its bytes
    if (
        len(row) == len(COLUMNS)
        and row[V1_COLUMNS : len(COLUMNS) - 2] == _ADDED_ZEROS
        and row[-2] is None
        and row[-1] is None
    ):  # the common case: every added column at its default (what the loop below finds, in C)
        return "".join(_encode_row(row[:V1_COLUMNS], 0)).encode()
    end = len(row)
    while end > V1_COLUMNS and end - V1_COLUMNS <= len(_ADDED_DEFAULTS) and _is_default(row[end - 1], end - 1):
        end -= 1
    if end < len(row):
        row = row[:end]
    return "".join(_encode_row(row, 0)).encode()  # the C encoder takes a tuple as a JSON array


# The stored defaults of the columns added since the first schema, in COLUMNS order.
# usage_estimated, output_limit, stopped_on_limit, system_permille, parent_session_id, prefix_hash
_ADDED_DEFAULTS: tuple[Any, ...] = (0, 0, 0, 0, None, None)
_ADDED_ZEROS = _ADDED_DEFAULTS[:4]  # canonical_bytes' common case: these, then two None
assert (*_ADDED_ZEROS, None, None) == _ADDED_DEFAULTS and V1_COLUMNS + len(_ADDED_DEFAULTS) == len(COLUMNS)


def _is_default(value: Any, index: int) -> bool:
    default = _ADDED_DEFAULTS[index - V1_COLUMNS]
    return value is None if default is None else (value is not None and value == default)


def upgraded_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row written before the latest columns existed (a spool file of an older version), with
    their defaults: the same event, and the same canonical bytes."""
    have = len(row) - V1_COLUMNS
    return (*row, *_ADDED_DEFAULTS[have:]) if 0 <= have < len(_ADDED_DEFAULTS) else row


CHAIN_TAG = b"tokentrail/event/v1"
GENESIS_HASH = bytes(32)


def chain_hash(seq: int, prev_hash: bytes, row: tuple[Any, ...]) -> bytes:
    """hash = SHA-256(tag ‖ seq ‖ prev_hash ‖ canonical_event), the audit chain's link."""
    return chain_link(seq, prev_hash, canonical_bytes(row))


def chain_link(seq: int, prev_hash: bytes, canonical: bytes) -> bytes:
    """chain_hash() of a row whose canonical bytes are already known (a writer encodes its rows
    before it takes the write lock, so the lock is held for the hashing alone)."""
    return hashlib.sha256(CHAIN_TAG + seq.to_bytes(8, "big") + prev_hash + canonical).digest()
