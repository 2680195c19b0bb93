"""`POST /v1/traces`: the OTLP/HTTP trace receiver (protobuf or JSON, gzip or not).

GenAI spans become usage events (tokentrail.integrations.otlp); GenAI spans that cannot (no
model, impossible usage, …) go to quarantine and are reported in the response's
`partial_success`, as OTLP expects; other spans are ignored. The answer comes once the events
are durable, so an exporter that sees a success never needs to send them again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tokentrail.events import UsageEvent, to_row
from tokentrail.exceptions import FlushTimeout
from tokentrail.integrations.otlp import OTLPError, Rejected, decode_json, decode_protobuf, to_events
from tokentrail.server.auth import AuthError
from tokentrail.server.ingest import taken_ids
from tokentrail.server.state import MAX_OTLP_BODY_BYTES, TooLarge, caller, read_body, state_of
from tokentrail.server.validate import CONFLICT

log = logging.getLogger("tokentrail")
PROTOBUF = "application/x-protobuf"


async def receive_traces(request: Request) -> Response:
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    as_json = ctype == "application/json"
    if not as_json and ctype not in (PROTOBUF, "application/protobuf"):
        return _status(415, "send application/x-protobuf or application/json", as_json=True)
    try:
        caller_key = caller(request, "ingest")
    except AuthError as e:
        return _status(e.status, e.message, as_json)
    state = state_of(request)
    try:
        raw = await read_body(request, MAX_OTLP_BODY_BYTES)
    except TooLarge:
        return _status(413, f"the export is over {MAX_OTLP_BODY_BYTES} bytes: export smaller batches", as_json)
    encoding = request.headers.get("content-encoding", "")
    try:
        # Decoding, mapping and recording a large export take seconds: off the event loop, so
        # no other request waits on it.
        found, rejected, taken, held = await asyncio.to_thread(
            _convert, state.ledger, raw, encoding, as_json, dict(caller_key.attribution)
        )
    except TooLarge:
        return _status(413, f"the export is over {MAX_OTLP_BODY_BYTES} bytes: export smaller batches", as_json)
    except OTLPError as e:
        return _status(400, str(e), as_json)
    if found or rejected or taken:
        try:
            await state.flush()
        except FlushTimeout as timeout:
            log.error("tokentrail: spans received over OTLP are not durable yet: %s", timeout)
            return _status(503, "the ledger could not make the events durable in time", as_json)
    reasons = sorted({r.reason for r in rejected} | ({CONFLICT} if taken else set()))
    if held:  # a warning, not a rejection (OTLP: partial success with nothing rejected)
        reasons.append(f"{held} span(s) already in the ledger (sent before, or exported by tokentrail): skipped")
    return _success(len(rejected) + len(taken), "; ".join(reasons)[:2000], as_json)


def _not_taken(
    store: Any, found: list[UsageEvent], scope: Mapping[str, str]
) -> tuple[list[UsageEvent], list[UsageEvent], int]:
    """(the events whose ids the ledger does not hold, those whose ids an event of another team
    or outside the caller's scope holds, how many it holds already for this team in the scope).
    Span ids are hashed with the span's team, so only someone who posted such an id on purpose
    can hold one: those are refused (reported and quarantined), never silently dropped as
    duplicates of another team's event. An id held in the caller's own scope is a span sent
    again, or one tokentrail exported itself (its `tokentrail.event_id`): recording it again
    would charge the budgets and count the metrics twice, so it is skipped. Within one export, an
    id given again (`tokentrail.event_id`) is the same span sent twice when it maps to the same
    event (skipped), else a conflict (refused): the ledger keeps one event per id, so recording
    both would drop one silently and charge the budgets for both."""
    if not found:
        return found, [], 0
    taken, held = taken_ids(store, found, scope)
    new: list[UsageEvent] = []
    refused = [e for e in found if str(e.event_id) in taken]
    first: dict[str, tuple[Any, ...]] = {}
    repeats = 0
    for e in found:
        eid = str(e.event_id)
        if eid in taken or eid in held:
            continue
        row = to_row(e)
        if eid not in first:
            first[eid] = row
            new.append(e)
        elif first[eid] == row:
            repeats += 1
        else:
            refused.append(e)
    return new, refused, len(held) + repeats


def _convert(
    ledger: Any, raw: bytes, encoding: str, as_json: bool, fixed: dict[str, str]
) -> tuple[list[UsageEvent], list[Rejected], list[UsageEvent], int]:
    """Decode an export, map its spans to events and record them (in a worker thread): the events
    recorded, the spans refused, the events whose ids another team holds (refused too), and how
    many the ledger held already (skipped)."""
    raw = _decompress(raw, encoding)
    spans = decode_json(raw) if as_json else decode_protobuf(raw)
    found, rejected = to_events(spans, ledger, fixed)
    for r in rejected:
        ledger.quarantine("otlp", r.reason, json.dumps(r.payload(), default=str))
    found, taken, held = _not_taken(ledger.store, found, fixed)
    for event in taken:
        ledger.quarantine("otlp", CONFLICT, json.dumps(event.to_dict(), default=str))
    for event in found:
        ledger.record(event)
        ledger.charge(event)  # unreserved spend reaches the budgets
    return found, rejected, taken, held


def _decompress(raw: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "deflate"):
        raise OTLPError(f"unsupported Content-Encoding {encoding!r}: use gzip or none")
    d = zlib.decompressobj(zlib.MAX_WBITS | 32)
    try:
        out = d.decompress(raw, MAX_OTLP_BODY_BYTES + 1)
    except zlib.error as e:
        raise OTLPError(f"the {encoding} body is corrupt: {e}") from None
    if len(out) > MAX_OTLP_BODY_BYTES:
        raise TooLarge
    return out


def _success(rejected: int, message: str, as_json: bool) -> Response:
    if as_json:
        body: dict[str, object] = {}
        if rejected or message:
            body["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": message}
        return Response(json.dumps(body), media_type="application/json")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    out = ExportTraceServiceResponse()
    if rejected or message:
        out.partial_success.rejected_spans = rejected
        out.partial_success.error_message = message
    return Response(out.SerializeToString(), media_type=PROTOBUF)


def _status(code: int, message: str, as_json: bool) -> Response:
    """An OTLP error: a google.rpc.Status, in the request's encoding."""
    if as_json:
        return Response(json.dumps({"code": code, "message": message}), code, media_type="application/json")
    return Response(_rpc_status(code, message), code, media_type=PROTOBUF)


def _rpc_status(code: int, message: str) -> bytes:
    """google.rpc.Status {code = 1; message = 2}, encoded by hand (its module is not a dependency)."""
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
