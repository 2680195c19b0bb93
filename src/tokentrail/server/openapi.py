"""The OpenAPI 3.1 description of the server's own routes (`GET /api/v1/openapi.json`).

The gateway routes are the providers' APIs and are described by them, not here.
"""

from __future__ import annotations

from typing import Any

from tokentrail.server.state import MAX_EVENTS_BODY_BYTES, MAX_EVENTS_PER_BATCH, MAX_OTLP_BODY_BYTES
from tokentrail.server.validate import DIMENSIONS, MAX_NOTE, MAX_TOOL_CALLS, TOKEN_FIELDS

_TEXT = {"type": "string", "maxLength": 256}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
        }
    },
}
_FILTERS: list[dict[str, Any]] = [
    {
        "name": "since",
        "in": "query",
        "schema": {"type": "string"},
        "description": "30m, 12h, 7d, 4w, YYYY-MM-DD or ISO-8601",
    },
    {"name": "until", "in": "query", "schema": {"type": "string"}, "description": "exclusive; same forms as since"},
    {"name": "tz", "in": "query", "schema": {"type": "string"}, "description": "IANA time zone (default UTC)"},
    {
        "name": "where",
        "in": "query",
        "schema": {"type": "array", "items": {"type": "string", "pattern": "^[^=]+=.*$"}},
        "style": "form",
        "explode": True,
        "description": "KEY=VALUE filter, repeatable (the same key twice means either value)",
    },
]
_LIMIT: dict[str, Any] = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}

EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["event_id"],
    "properties": {
        "event_id": {"type": "string", "format": "uuid", "description": "client-generated (UUIDv7 recommended)"},
        "kind": {"type": "string", "enum": ["llm", "embedding", "tool"], "default": "llm"},
        "ts": {"type": "string", "format": "date-time", "description": "ISO-8601 with a UTC offset; default now"},
        "status": {"type": "string", "enum": ["ok", "error", "cancelled"], "default": "ok"},
        "provider": _TEXT,
        "model": _TEXT,
        "operation": _TEXT,
        "latency_ms": {"type": "number", "minimum": 0},
        "streamed": {"type": "boolean"},
        **{n: {"type": "integer", "minimum": 0, "maximum": 1_000_000_000} for n in TOKEN_FIELDS},
        "cost_usd": {
            "oneOf": [{"type": "string"}, {"type": "number", "minimum": 0}],
            "description": "decimal USD; omitted: priced from the price book",
        },
        **{n: _TEXT for n in DIMENSIONS},
        "trace_id": _TEXT,
        "span_id": _TEXT,
        "parent_span_id": _TEXT,
        "parent_session_id": {**_TEXT, "description": "the session this event's session runs inside (agent trees)"},
        "tags": {"type": "object", "maxProperties": 64, "additionalProperties": _TEXT},
        "tool_name": _TEXT,
        "tool_call_id": _TEXT,
        "tool_args_hash": _TEXT,
        "tool_calls": {
            "type": "array",
            "maxItems": MAX_TOOL_CALLS,
            "items": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {"id": _TEXT, "name": _TEXT, "args_hash": _TEXT, "args": {}},
            },
        },
        "note": {"type": "string", "maxLength": MAX_NOTE},
    },
}


_COUNT = {"type": "integer", "minimum": 0}
INGEST_RESULT: dict[str, Any] = {
    "type": "object",
    "required": ["accepted", "duplicate", "rejected", "results"],
    "properties": {
        "accepted": _COUNT,
        "duplicate": _COUNT,
        "rejected": _COUNT,
        "results": {
            "type": "array",
            "description": "one per event, in the order sent",
            "items": {
                "type": "object",
                "required": ["index", "status"],
                "properties": {
                    "index": _COUNT,
                    "event_id": {"type": "string"},
                    "status": {"type": "string", "enum": ["accepted", "duplicate", "rejected"]},
                    "reason": {"type": "string", "description": "why it was rejected"},
                    "fields": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "a reused event_id: the fields that differ from the stored event "
                        "(never given when that event is outside the key's team)",
                    },
                },
            },
        },
    },
}
_MONEY = {"type": ["string", "null"], "description": "decimal USD"}
_TOKENS = {"type": ["integer", "null"], "minimum": 0}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_DATE = {"type": ["string", "null"], "format": "date"}
# When the budget's limit is reached at the forecast rate (null: no forecast for this period kind).
PROJECTED_EXHAUSTION: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {
        "date": {**_DATE, "description": "the expected day (null: not within this period)"},
        "earliest": {**_DATE, "description": "the 80 % band's earliest day"},
        "latest": {**_DATE, "description": "the 80 % band's latest day (null: not within this period)"},
        "within_period": {"type": "boolean"},
        "projected_usd": _MONEY,
        "low_usd": _MONEY,
        "high_usd": _MONEY,
        "as_of": {"type": "string", "format": "date"},
    },
}
BUDGETS: dict[str, Any] = {
    "type": "object",
    "required": ["budgets", "suspensions"],
    "properties": {
        "budgets": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "budget": {"type": "string"},
                    "scope": {"type": "string", "description": "the budget's scope; a `*` budget: this bucket's"},
                    "period": {"type": "string"},
                    "action": {"type": "string", "enum": ["block", "alert", "throttle"]},
                    "period_start": _TIME,
                    "period_end": _TIME,
                    "limit_usd": _MONEY,
                    "posted_usd": _MONEY,
                    "reserved_usd": _MONEY,
                    "remaining_usd": _MONEY,
                    "limit_tokens": _TOKENS,
                    "posted_tokens": _TOKENS,
                    "reserved_tokens": _TOKENS,
                    "remaining_tokens": _TOKENS,
                    "used": {"type": "number", "description": "the larger of spent/limit in money and tokens"},
                    "locked": {"type": "boolean", "description": "an overage refuses every call until blocked_until"},
                    "blocked_until": _TIME,
                    "projected_exhaustion": PROJECTED_EXHAUSTION,
                },
            },
        },
        "suspensions": {
            "type": "array",
            "description": "kill switches in force (tokentrail budget suspend)",
            "items": {
                "type": "object",
                "properties": {
                    "scope": {"type": "string"},
                    "reason": {"type": ["string", "null"]},
                    "since": _TIME,
                },
            },
        },
    },
}


_HEAVY = (
    "/api/v1/sessions/{session_id}",
    "/api/v1/economics",
    "/api/v1/trees/{session_id}",
    "/api/v1/export",
    "/api/v1/reprice",
    "/api/v1/advice",
    "/api/v1/advice/{advice_id}/dismiss",
)


def _json(schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _get(
    summary: str, params: list[dict[str, Any]] | None = None, result: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": params or [],
            "responses": {
                "200": {"description": "OK", **_json(result)},
                "400": {"description": "bad filter", **_json(_ERROR)},
                "401": {"description": "no or unknown key", **_json(_ERROR)},
                "403": {"description": "the key may not read this", **_json(_ERROR)},
            },
        }
    }


def schema() -> dict[str, Any]:
    report_params = [
        {"name": "by", "in": "query", "schema": {"type": "string"}, "description": "comma-separated dimensions"},
        *_FILTERS,
    ]
    session_params = [
        *_FILTERS,
        _LIMIT,
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 100_000}},
        *({"name": n, "in": "query", "schema": {"type": "string"}} for n in ("agent", "team", "user", "customer")),
    ]
    events = {
        "post": {
            "summary": f"Ingest a batch of usage events (at most {MAX_EVENTS_PER_BATCH} events, "
            f"{MAX_EVENTS_BODY_BYTES} bytes)",
            "requestBody": {
                "required": True,
                **_json(
                    {
                        "oneOf": [
                            {
                                "type": "object",
                                "required": ["events"],
                                "additionalProperties": False,
                                "properties": {
                                    "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}
                                },
                            },
                            {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                        ]
                    }
                ),
            },
            "responses": {
                "200": {"description": "a result per event, in order", **_json(INGEST_RESULT)},
                "400": {"description": "not a batch", **_json(_ERROR)},
                "401": {"description": "no or unknown key", **_json(_ERROR)},
                "413": {"description": "too large", **_json(_ERROR)},
                "422": {"description": "every event was rejected (see results)", **_json(INGEST_RESULT)},
                "503": {"description": "not durable in time: send again", **_json(_ERROR)},
            },
        }
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "tokentrail", "version": "1", "description": "Token accounting for AI agents."},
        "components": {
            "schemas": {"Event": EVENT_SCHEMA, "Error": _ERROR},
            "securitySchemes": {
                "key": {"type": "apiKey", "in": "header", "name": "X-Tokentrail-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"key": []}, {"bearer": []}],
        "paths": {
            "/api/v1/events": events,
            "/api/v1/report": _get("Spend grouped by any dimension", report_params),
            "/api/v1/sessions": _get("The newest sessions", session_params),
            "/api/v1/sessions/{session_id}": _get(
                "One session as a call tree",
                [{"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            ),
            "/api/v1/budgets": _get("Budgets in their current period", result=BUDGETS),
            "/api/v1/forecast": _get(
                "Spend projected to the month end with an 80 % band",
                [
                    *_FILTERS[2:],
                    {"name": "by", "in": "query", "schema": {"type": "string"}, "description": "one dimension"},
                    {"name": "as_of", "in": "query", "schema": {"type": "string", "format": "date"}},
                ],
            ),
            "/api/v1/alerts": _get(
                "Budget alerts",
                [*_FILTERS[:3], _LIMIT, {"name": "budget", "in": "query", "schema": {"type": "string"}}],
            ),
            "/api/v1/anomalies": _get(
                "Anomalies the detectors found (retry loops, token spikes, …), newest first",
                [*_FILTERS[:3], _LIMIT, {"name": "kind", "in": "query", "schema": {"type": "string"}}],
            ),
            "/api/v1/unpriced": _get("Models with unpriced calls", _FILTERS[:1]),
            "/api/v1/me": _get("The caller's role and scope"),
            "/api/v1/reconciliations": _get(
                "Reconciliation runs against the providers' bills (keys of no team only)",
                [_LIMIT, {"name": "provider", "in": "query", "schema": {"enum": ["openai", "anthropic", "google"]}}],
            ),
            "/api/v1/reconciliations/{run_id}": _get(
                "One reconciliation run with its day × model cells (keys of no team only)",
                [{"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            ),
            "/api/v1/economics": _get(
                "Unit economics (docs/metrics.md) by any dimension; tree=true rolls agent trees up to their root",
                [*report_params, {"name": "tree", "in": "query", "schema": {"type": "boolean"}}],
            ),
            "/api/v1/trees/{session_id}": _get(
                "The agent tree under a session: each session's own and total cost",
                [{"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            ),
            "/api/v1/outcomes": {
                "post": {
                    "summary": "Outcomes of sessions (cost per action, ROI); outcome_id makes a retry count once",
                    "requestBody": {"required": True, "content": {"application/json": {}}},
                    "responses": {
                        "200": {"description": "accepted and duplicate counts"},
                        "400": {"description": "a bad outcome (named; nothing written)", **_json(_ERROR)},
                        "401": {"description": "no or unknown key", **_json(_ERROR)},
                    },
                }
            },
            "/api/v1/export": _get(
                "Usage and cost as FOCUS 1.2, CSV or Parquet (streamed)",
                [
                    *_FILTERS,
                    *(
                        {"name": n, "in": "query", "schema": {"type": "string", "enum": list(e)}}
                        for n, e in (
                            ("format", ("focus", "csv", "parquet", "focus-parquet")),
                            ("granularity", ("hour", "day")),
                            ("include_unpriced", ("0", "1")),
                            ("allocated", ("0", "1")),
                        )
                    ),
                ],
            ),
            "/api/v1/reprice": _get(
                "What history would have cost with another model (a what-if; nothing is written)",
                [*report_params, {"name": "model_map", "in": "query", "schema": {"type": "string"}}],
            ),
            "/api/v1/advice": _get(
                "Savings advice: ranked changes per agent with evidence and the estimated monthly saving",
                [
                    *_FILTERS[:3],
                    {"name": "kind", "in": "query", "schema": {"type": "string"}},
                    {"name": "all", "in": "query", "schema": {"type": "boolean"}, "description": "dismissed too"},
                ],
            ),
            "/api/v1/advice/{advice_id}/dismiss": {
                "post": {
                    "summary": "Dismiss a recommendation the key can see; it stays dismissed",
                    "parameters": [{"name": "advice_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "the dismissed recommendation"},
                        "401": {"description": "no or unknown key", **_json(_ERROR)},
                        "404": {"description": "no such recommendation for this key", **_json(_ERROR)},
                    },
                }
            },
            "/v1/traces": {
                "post": {
                    "summary": f"OTLP/HTTP trace export (protobuf or JSON, at most {MAX_OTLP_BODY_BYTES} bytes)",
                    "requestBody": {"content": {"application/x-protobuf": {}, "application/json": {}}},
                    "responses": {"200": {"description": "ExportTraceServiceResponse"}},
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
        },
    }
    for path in _HEAVY:  # the reads bounded by TOKENTRAIL_HEAVY_RUNS (tokentrail.server.heavy)
        for op in doc["paths"][path].values():
            op["responses"]["429"] = {"description": "too many heavy reads at once: retry later", **_json(_ERROR)}
    return doc
