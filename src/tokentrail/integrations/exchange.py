"""One metered call, from the request to the last byte of its response.

Transport-agnostic: the SDK adapters (httpx2 responses) and the gateway (aiohttp) both drive
an Exchange with the request JSON, then the response body or its stream chunks, then the
end. It records exactly one event, however the call ends (finished, failed, cancelled,
abandoned), and never raises into the caller except BudgetExceeded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from tokentrail import capture
from tokentrail import context as ctx
from tokentrail.exceptions import BudgetExceeded
from tokentrail.integrations import seen_calls
from tokentrail.integrations.prefix import prefix_hash
from tokentrail.integrations.wire import (
    OPENAI_CHAT,
    Accumulator,
    Route,
    SSEParser,
    gemini_model_from_path,
    output_limit,
    system_permille,
)
from tokentrail.usage import Usage

if TYPE_CHECKING:
    from tokentrail.budgets import Hold
    from tokentrail.ledger import Ledger

log = logging.getLogger("tokentrail")


_KEEP, _STRIP, _DROP = object(), object(), object()
_NULL_USAGE = re.compile(rb'(,\s*"usage"\s*:\s*null)(?=\s*})|("usage"\s*:\s*null\s*,\s*)')


def _without_null_usage(raw_event: bytes) -> bytes:
    """The event without its top-level `"usage": null` member. OpenAI writes it last; in valid JSON
    the text `"usage":null` can only be a key and its value, so the last match is the top-level one."""
    matches = list(_NULL_USAGE.finditer(raw_event))
    if not matches:
        return raw_event
    m = matches[-1]
    return raw_event[: m.start()] + raw_event[m.end() :]


class Exchange:
    """The metering state of one provider call."""

    def __init__(
        self,
        ledger: Ledger,
        route: Route,
        body: Any,
        *,
        path: str = "",
        raw_body: bytes | None = None,
        attribution: ctx.Attribution | None = None,
        tags: dict[str, str] | None = None,
        reserve: bool = True,
    ) -> None:
        """`reserve=False`: the caller reserves the call's budget itself, with `await areserve()`
        (the gateway, whose event loop must not wait for the ledger)."""
        self.ledger = ledger
        self.route = route
        self.body = body if isinstance(body, dict) else {}
        self.attribution = attribution or ctx.current()
        self.tags = tags
        self.started = time.perf_counter()
        model = self.body.get("model")
        self.acc = Accumulator(route, model=model if isinstance(model, str) else gemini_model_from_path(path))
        self.acc.capture = getattr(ledger, "capture_content", False) is True  # content capture: keep the text
        self.streamed = bool(self.body.get("stream")) or path.split("?", 1)[0].endswith(":streamGenerateContent")
        self.request_hash = hashlib.sha256(raw_body).hexdigest()[:32] if raw_body else None
        self.http_status: int | None = None
        self.hide_usage_chunk = False
        self._sse: SSEParser | None = None
        self._json_parts: list[bytes] = []
        self._is_sse = False
        self._unreadable = False  # a body that is not a JSON object
        self._recorded = False
        self._lock = threading.Lock()
        # budgets: reserve the call's maximum cost before it is sent (raises BudgetExceeded), settle in finish()
        self.hold: Hold | None = None
        # a body we could not parse (too deep for json) is estimated from its bytes, never as empty
        self._unparsed = raw_body if raw_body and not isinstance(body, dict) else None
        self._charge_after = False
        if reserve:
            try:
                self.hold = ledger.budgets.reserve_call(**self._budget_call())
            except BudgetExceeded:
                raise
            except Exception as e:
                self._budget_failed(e)

    async def areserve(self) -> None:
        """Reserve the call's budget without blocking the event loop (raises BudgetExceeded)."""
        try:
            self.hold = await self.ledger.budgets.areserve_call(**self._budget_call())
        except BudgetExceeded:
            raise
        except Exception as e:
            self._budget_failed(e)

    def _budget_failed(self, e: Exception) -> None:
        """An error in the budget path follows fail-open / fail-closed; it never skips a budget silently."""
        log.debug("tokentrail: the budget check of a %s call failed", self.route.provider, exc_info=True)
        self.ledger.budgets.failed(e, f"could not check the budgets of a {self.route.provider} call")
        self._charge_after = True  # fail-open: the call goes ahead, and what it spends is still posted

    def _budget_call(self) -> dict[str, Any]:
        r = self.route
        body: Any = self.body
        if self._unparsed is not None:
            body = {"input": self._unparsed.decode("utf-8", "replace")}  # every byte counts as a token
        return {
            "provider": r.provider,
            "model": self.acc.model,
            "body": body,
            "kind": r.kind,
            "attribution": self.attribution,
            "owner": self,
        }

    # -- request --------------------------------------------------------------------------------

    def prepared_body(self) -> dict[str, Any] | None:
        """The request body to send instead of the caller's, or None to send it unchanged.

        OpenAI chat streams report usage only when asked (stream_options.include_usage); ask
        for it, and remember to hide the extra usage chunk from a caller who did not."""
        if self.route is OPENAI_CHAT and self.streamed:
            options = self.body.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage")):
                self.hide_usage_chunk = True
                new_options = (
                    {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
                )
                return {**self.body, "stream_options": new_options}
        return None

    # -- response -------------------------------------------------------------------------------

    def response(self, status: int, content_type: str | None) -> None:
        """The response status line and content type arrived."""
        self.http_status = status
        self._is_sse = bool(content_type and "text/event-stream" in content_type)
        if self._is_sse:
            self._sse = SSEParser()

    def body_bytes(self, raw: bytes) -> None:
        """A whole response body (a stream already read whole is read as its events)."""
        if self._sse is not None:
            self.chunk(raw)
            self.stream_tail()
            return
        try:
            data = json.loads(raw)
        except ValueError:
            self._unreadable = True
            return
        if not isinstance(data, dict):
            self._unreadable = True
            return
        try:
            self.acc.body(data)
        except Exception:
            log.exception("tokentrail: reading a response body failed")

    def chunk(self, raw: bytes) -> bytes:
        """A piece of a streamed response; returns the bytes the caller should get."""
        try:
            if self._sse is None:
                self._json_parts.append(raw)
                return raw
            kept = self._events(self._sse.feed(raw))
            return kept if self.hide_usage_chunk else raw
        except Exception:
            log.exception("tokentrail: reading a stream chunk failed")
            return raw

    def stream_tail(self) -> bytes:
        """The stream ended: read the events a trailing "\r" held back; returns the bytes still owed
        to the caller of a filtered stream (those events, and an unterminated last event as it was)."""
        if self._sse is None:
            return b""
        try:
            kept = self._events(self._sse.flush())
        except Exception:
            log.exception("tokentrail: reading the end of a stream failed")
            return b""
        return kept + self._sse.tail() if self.hide_usage_chunk else b""

    def _events(self, events: list[tuple[bytes, str | None, str]]) -> bytes:
        """Feed parsed events; the raw bytes of those the caller gets (when hiding the usage chunk)."""
        kept = []
        for raw_event, name, data in events:
            action = self._event(name, data)
            if action is _KEEP:
                kept.append(raw_event)
            elif action is _STRIP:
                kept.append(_without_null_usage(raw_event))
        return b"".join(kept)

    def _event(self, name: str | None, data: str) -> object:
        """Feed one SSE event; say what the caller gets of it (_KEEP, _STRIP or _DROP)."""
        if not data:
            return _KEEP
        if data == "[DONE]":
            self.acc.done()
            return _KEEP
        try:
            obj = json.loads(data)
        except ValueError:
            return _KEEP
        try:
            self.acc.event(name, obj)
        except Exception:
            log.exception("tokentrail: reading a stream event failed")
        if not (self.hide_usage_chunk and isinstance(obj, dict) and "usage" in obj):
            return _KEEP
        if obj["usage"] is not None:
            return _KEEP if obj.get("choices") else _DROP
        # include_usage adds "usage": null to every chunk; a caller who did not ask never had that key
        return _STRIP

    def event_object(self, obj: Any) -> None:
        """A decoded stream event (SDKs that hand over parsed chunks, like google-genai)."""
        try:
            self.acc.event(None, obj)
        except Exception:
            log.exception("tokentrail: reading a stream event failed")

    def body_object(self, obj: Any) -> None:
        try:
            self.acc.body(obj)
        except Exception:
            log.exception("tokentrail: reading a response failed")

    # -- end ------------------------------------------------------------------------------------

    def finish(self, *, error: BaseException | str | None = None, cancelled: bool = False) -> None:
        """Record the call once. `error`: the transport failed; `cancelled`: the caller stopped early."""
        with self._lock:
            if self._recorded:
                return
            self._recorded = True
        event = None
        try:
            event = self._record(error, cancelled)
        except Exception:
            log.exception("tokentrail: recording a %s call failed", self.route.provider)
        if self.hold is not None:  # post what the call consumed (nothing: void)
            self.ledger.budgets.settle(self.hold, event)
        elif self._charge_after and event is not None:
            self.ledger.budgets.charge(event)

    def _record(self, error: BaseException | str | None, cancelled: bool) -> Any:
        if self._json_parts:
            self.body_bytes(b"".join(self._json_parts))
            self._json_parts = []
        acc = self.acc
        usage, problem = acc.usage()
        note = None
        if error is not None:
            status = "error"
            note = error if isinstance(error, str) else type(error).__name__
        elif self.http_status is not None and self.http_status >= 400:
            status = "error"
            note = f"http {self.http_status}" + (f" {acc.error_type}" if acc.error_type else "")
        elif acc.error_type is not None:
            status, note = "error", acc.error_type
        elif cancelled and not acc.complete:
            status = "cancelled"
        elif self._unreadable and self.route.operation != "other":  # a pass-through may answer audio
            status, note = "error", "unreadable_body"
        elif self._is_sse and not acc.complete:  # the connection ended cleanly, but before the last event
            status, note = "error", "stream_ended_early"
        else:
            status = "ok"
        if status != "ok" and problem == "missing_usage":
            problem = None  # a failed or cut call that never reported usage: nothing impossible
        estimated = False
        if status != "ok" and problem is None and not acc.complete and self._answered():
            # The provider took the call and worked on it, but its usage never arrived in full: it
            # bills what it processed, so record an estimate of that, never $0 (docs/rules.md §Usage).
            usage = self._estimated_usage(usage)
            estimated = True
        if problem is not None and acc.usage_raw is not None:
            # The token columns hold only counts we can trust; what the provider really said is
            # kept verbatim, so nothing is clamped or lost (bounded by capture.scrub, after redaction).
            reported = json.dumps(acc.usage_raw, sort_keys=True, default=str)
            note = f"reported usage: {reported}" + (f"; {note}" if note else "")
        latency_ms = (time.perf_counter() - self.started) * 1000
        # -- content capture (tokentrail.capture): prompt and completion only when asked, redacted;
        # a note carries what the upstream said, so it is always scrubbed (it may echo a key)
        note = capture.scrub(note)
        content = None
        if acc.capture:
            content = capture.content_of(self.ledger.redact, self.body, acc.text_parts, acc.tool_call_texts())
        event = self.ledger.build_call(
            provider=self.route.provider,
            model=acc.model,
            usage=usage,
            kind=self.route.kind,
            operation=self.route.operation,
            status=status,
            problem=problem,
            latency_ms=round(latency_ms, 3),
            streamed=self.streamed,
            tool_calls=acc.tool_calls(),
            request_hash=self.request_hash,
            note=note,
            content=content,
            attribution=self.attribution,
            tags=self.tags,
            usage_estimated=estimated,
        )
        if self.route.kind == "llm":
            event = self._with_request_facts(event)
        self.ledger.record(event, session=self.attribution.session)
        if acc.response_id is not None:
            seen_calls.note_metered(acc.response_id)  # a framework hook above us records nothing more
        return event

    def _with_request_facts(self, event: Any) -> Any:
        """The event with what the anomaly detectors read from the request and response: its output
        limit, whether it stopped there, its system/developer share, its prefix's hash (never the text)."""
        from dataclasses import replace

        try:
            return replace(
                event,
                output_limit=output_limit(self.body),
                stopped_on_limit=self.acc.stopped_on_limit,
                system_permille=system_permille(self.route, self.body),
                prefix_hash=prefix_hash(self.route, self.body),
            )
        except Exception:  # metering never fails on a hostile body
            log.exception("tokentrail: reading the request facts of a %s call failed", self.route.provider)
            return event

    def _answered(self) -> bool:
        """Whether the provider accepted the call (a 2xx status line arrived)."""
        return self.http_status is not None and 200 <= self.http_status < 300

    def _estimated_usage(self, reported: Usage | None) -> Usage:
        """What a call the provider did not finish reporting consumed: the counts it did report
        (Anthropic's message_start input, Gemini's prompt count), else the input estimated from the
        request, and at least the output tokens of the text it sent. Counted as the budget
        reservation counts (estimate.py): tiktoken when its encoding is on disk, else UTF-8 bytes."""
        from tokentrail.budgets.estimate import _tiktoken_for, input_tokens_bound, requested_output

        r = reported or Usage()
        model = self.acc.model
        tokenizer = _tiktoken_for(model) if self.route.provider == "openai" and model else None
        input_tokens = r.input_tokens
        if not input_tokens:
            try:
                input_tokens = input_tokens_bound(self.body, tokenizer=tokenizer)[0]
            except Exception:
                log.exception("tokentrail: estimating the input of a %s call failed", self.route.provider)
        texts = self.acc.text_parts + [args for _, args in self.acc.tool_call_texts()]
        relayed = _text_tokens(texts, tokenizer)
        cap = requested_output(self.body)  # the provider bills no more than the request allows
        output_tokens = max(r.output_tokens, relayed if cap is None else min(relayed, cap))
        return Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=r.cache_read_tokens,
            cache_write_tokens=r.cache_write_tokens,
            cache_write_1h_tokens=r.cache_write_1h_tokens,
            reasoning_tokens=r.reasoning_tokens,
        )


def _text_tokens(texts: list[str], tokenizer: Any) -> int:
    """Tokens of text a model wrote: tiktoken's count when it is at hand, else UTF-8 bytes (no token
    is shorter than a byte, as the budget reservation counts)."""
    if tokenizer is not None:
        try:
            return sum(len(tokenizer.encode(t, disallowed_special=())) for t in texts)
        except Exception:
            log.debug("tokentrail: tiktoken could not count a completion; using bytes", exc_info=True)
    return sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
