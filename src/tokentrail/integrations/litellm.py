"""LiteLLM: a `CustomLogger` that records each `litellm.completion` / `acompletion` (and each call
of a LiteLLM proxy that lists it as a callback) in a tokentrail ledger, priced by tokentrail.

    import litellm
    from tokentrail.integrations.litellm import TokentrailLogger
    litellm.callbacks = [TokentrailLogger()]

It reads LiteLLM's standard logging payload (`kwargs["standard_logging_object"]`): the provider
(`custom_llm_provider`, normalised: gemini and vertex_ai are google, bedrock is aws), the model
(without LiteLLM's `provider/` prefix) and the usage LiteLLM reports in the OpenAI shape
(`metadata.usage_object`: prompt tokens inclusive of cache reads and writes), priced with
tokentrail's price book; LiteLLM's own `response_cost` is ignored.

Attribution: the `tt.session` current where the call was made (captured before the request: a
sync stream's success is logged from a thread without it), then LiteLLM's request metadata
(`metadata={"team": …, "user": …, "session_id": …}`, any tokentrail dimension by name), the proxy
key's org / team / project / user, `litellm_session_id`, the end user, and the request tags
(`"key:value"` becomes tag key=value; a plain tag, key=true).

Once per call: a call is recorded on its final success (a stream once, complete) or its failure
(an error event, with the usage when LiteLLM has it). LiteLLM calls OpenAI (and Azure OpenAI, and
OpenAI-compatible providers) through the openai SDK: under `tt.instrument()` the wrapper already
metered those HTTP calls, so the logger records nothing for a call under which the wrapper recorded
an event, or whose response id the wrapper noted for this very call (`seen_calls.wrapper_mark`, set
in the call's context before the request; never an id merely seen for some other call).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tokentrail import context as ctx
from tokentrail import ledger as _ledger_module
from tokentrail.events import MAX_TEXT, ToolCall, args_hash, bound_tags, text_problem, ts_problem
from tokentrail.exceptions import DefaultLedgerUnavailable
from tokentrail.integrations import seen_calls
from tokentrail.usage import Usage, UsageProblem, from_openai_chat

try:
    from litellm.integrations.custom_logger import CustomLogger
except ImportError as e:  # pragma: no cover - depends on the environment
    from tokentrail._extras import raise_missing_extra

    raise_missing_extra(e, "tokentrail.integrations.litellm", "litellm")

if TYPE_CHECKING:
    from tokentrail.ledger import Ledger

__all__ = ["TokentrailLogger", "proxy_handler"]

log = logging.getLogger("tokentrail")

MAX_CALLS = 10_000  # calls remembered at once (between their request and their log, and once logged)

# LiteLLM's provider names -> the price book's
_PROVIDERS = {
    "gemini": "google",
    "vertex_ai": "google",
    "vertex_ai_beta": "google",
    "bedrock": "aws",
    "bedrock_converse": "aws",
    "sagemaker": "aws",
    "azure_ai": "azure",
    "azure_text": "azure",
    "text-completion-openai": "openai",
    "anthropic_text": "anthropic",
}
_DIMENSIONS = ("org", "team", "project", "agent", "user", "customer", "workflow", "task_type")
# dimension -> the proxy key's metadata that names it, most specific first. The proxy sets these
# from the key the request authenticated with: they win over the request's own metadata, which the
# proxy's client writes (a key of team A must not charge team B by sending metadata={"team": "B"}).
_KEY_BOUND = {
    "org": ("user_api_key_org_alias", "user_api_key_org_id"),
    "team": ("user_api_key_team_alias", "user_api_key_team_id"),
    "project": ("user_api_key_project_alias", "user_api_key_project_id"),
}
# dimension -> metadata that names it only when the request's metadata does not (the end user is
# the request's `user`: the caller's to state)
_KEY_FALLBACK = {
    "team": ("team_alias", "team_id"),
    "user": ("user_api_key_end_user_id", "user_api_key_user_id"),
}


class _Call:
    """One LiteLLM call between its request and its log: who it was for, and its wrapper mark."""

    __slots__ = ("attribution", "mark")

    def __init__(self, attribution: ctx.Attribution) -> None:
        self.attribution = attribution
        self.mark = seen_calls.wrapper_mark("litellm")


class TokentrailLogger(CustomLogger):
    """LiteLLM callback: `litellm.callbacks = [TokentrailLogger()]`. `ledger`: where to record
    (default: the current session's ledger, else the default one)."""

    def __init__(self, ledger: Ledger | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ledger = ledger
        self._lock = threading.Lock()
        self._calls: OrderedDict[str, _Call] = OrderedDict()
        self._logged: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.handled = 0  # log events handled so far (recorded or not): LiteLLM logs sync calls from a thread

    # -- LiteLLM's hooks ----------------------------------------------------------------------

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        """Called in the caller's context just before the request: remember its attribution, and
        mark the context so a wrapper event recorded for this request is heard."""
        try:
            call_id = _call_key(kwargs)
            if call_id is None:
                return
            with self._lock:
                call = self._calls.get(call_id)
                if call is None:
                    call = self._calls[call_id] = _Call(ctx.current())
                    _trim(self._calls)
            call.mark.enter()  # left by log_post_api_call; if never, the next call's mark replaces it
        except Exception:
            log.exception("tokentrail: reading a LiteLLM request failed")

    def log_post_api_call(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        mark = seen_calls.current()
        if mark is not None and mark.owner == "litellm":
            mark.leave()

    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._log(kwargs, failed=False)

    def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._log(kwargs, failed=True)

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._log(kwargs, failed=False)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._log(kwargs, failed=True)

    # -- recording ----------------------------------------------------------------------------

    def _log(self, kwargs: Any, *, failed: bool) -> None:
        try:
            payload = kwargs.get("standard_logging_object") if isinstance(kwargs, Mapping) else None
            if not isinstance(payload, Mapping):
                return  # a call type LiteLLM does not describe (nothing to price)
            call_id = _call_key(kwargs, payload)
            key = (call_id or "", "failure" if failed else "success")
            with self._lock:
                call = self._calls.pop(call_id, None) if call_id else None
                if call_id is not None:
                    if key in self._logged:
                        return  # logged already (a stream's chunks, a sync and an async handler)
                    self._logged[key] = None
                    _trim(self._logged)
            if call is not None:
                call.mark.leave()  # (done, if log_post_api_call did not run in its context)
            if call is not None and (call.mark.metered or (not failed and call.mark.saw(_text(payload.get("id"))))):
                return  # the SDK wrapper recorded this very call
            self._record(kwargs, payload, call, failed)
        except Exception:
            log.exception("tokentrail: recording a LiteLLM call failed")
        finally:
            with self._lock:
                self.handled += 1

    def _record(self, kwargs: Mapping[str, Any], payload: Mapping[str, Any], call: _Call | None, failed: bool) -> None:
        base = call.attribution if call is not None else ctx.current()
        attribution = _attributed(base, kwargs, payload)
        ledger = self._ledger(attribution)
        if ledger is None:
            return
        provider, model = _provider_model(payload)
        usage, problem = _usage(payload)
        status, note = "ok", None
        if failed or payload.get("status") == "failure":
            status, note = "error", _error_note(payload)
            if problem == "missing_usage":
                problem = None  # a failed call that reported no usage: nothing impossible
        call_type = _text(payload.get("call_type")) or ""
        embedding = "embedding" in call_type
        started, ended = _epoch(payload.get("startTime")), _epoch(payload.get("endTime"))
        latency = round((ended - started) * 1000, 3) if started is not None and ended is not None else None
        event = ledger.build_call(
            provider=provider,
            model=model,
            usage=usage,
            kind="embedding" if embedding else "llm",
            operation="embeddings" if embedding else ("responses" if "responses" in call_type else "chat"),
            status=status,
            problem=problem,
            latency_ms=latency if latency is not None and latency >= 0 else None,
            streamed=payload.get("stream") is True,
            tool_calls=_requested_tools(payload.get("response")),
            ts=_when(ended),
            note=note,
            attribution=attribution,
        )
        ledger.record(event, session=attribution.session)
        ledger.charge(event)  # no reservation was made for it: its spend is posted to the budgets

    def _ledger(self, attribution: ctx.Attribution) -> Ledger | None:
        from tokentrail.default_ledger import resolve_ledger

        found = self.ledger or attribution.ledger
        try:
            return resolve_ledger(found if isinstance(found, _ledger_module.Ledger) else None)
        except DefaultLedgerUnavailable:
            return None  # logged once when it failed to open; counted in tt.ledger_status()


# -- reading the payload ------------------------------------------------------------------------


def _call_key(kwargs: Any, payload: Mapping[str, Any] | None = None) -> str | None:
    """One LiteLLM call: its call id AND its start time. A proxy takes the call id from the client's
    `x-litellm-call-id` header, so a constant id must not make distinct calls one (the second would
    be dropped as logged already, or take the first's state); the start time is LiteLLM's own."""
    if not isinstance(kwargs, Mapping):
        return None
    call_id = _text(kwargs.get("litellm_call_id")) or (_text(payload.get("id")) if payload is not None else None)
    if call_id is None:
        return None
    start = kwargs.get("start_time")
    when = start.timestamp() if isinstance(start, datetime) else _epoch(start)
    if when is None and payload is not None:
        when = _epoch(payload.get("startTime"))
    return f"{call_id}@{when!r}"


def _text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """Caller data as text a store keeps: bounded; None when empty or unkeepable."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value)[:limit]
    return text if text and text_problem(text) is None else None


def _provider_model(payload: Mapping[str, Any]) -> tuple[str, str | None]:
    raw = (_text(payload.get("custom_llm_provider")) or "").lower()
    provider = _PROVIDERS.get(raw, raw) or "unknown"
    model = _text(payload.get("model"))
    if model and "/" in model:
        prefix, _, rest = model.partition("/")
        if rest and prefix.lower() in (raw, provider):
            model = rest
    return provider, model


def _usage(payload: Mapping[str, Any]) -> tuple[Usage | None, str | None]:
    """The call's usage, inclusive (LiteLLM reports it in OpenAI's shape for every provider), or
    the reason it is impossible. No tokens at all is `missing_usage`: a call that answered used some."""
    metadata = payload.get("metadata")
    raw = metadata.get("usage_object") if isinstance(metadata, Mapping) else None
    if not isinstance(raw, Mapping):
        hidden = payload.get("hidden_params")
        raw = hidden.get("usage_object") if isinstance(hidden, Mapping) else None
    if not isinstance(raw, Mapping):
        raw = {"prompt_tokens": payload.get("prompt_tokens"), "completion_tokens": payload.get("completion_tokens")}
    try:
        usage = from_openai_chat(raw)
        details = raw.get("prompt_tokens_details")
        cache_details = details.get("cache_creation_token_details") if isinstance(details, Mapping) else None
        # Anthropic's cache writes, which LiteLLM keeps beside the OpenAI shape (and their 1-hour part)
        cache_write = max(usage.cache_write_tokens, _count(raw, "cache_creation_input_tokens"))
        cache_1h = _count(cache_details, "ephemeral_1h_input_tokens") if isinstance(cache_details, Mapping) else 0
        usage = replace(usage, cache_write_tokens=cache_write, cache_write_1h_tokens=cache_1h).checked()
    except UsageProblem as e:
        return None, e.reason
    if usage.total_tokens == 0:
        return None, "missing_usage"
    return usage, None


def _count(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if value is None:
        return 0
    if type(value) is not int:
        raise UsageProblem(f"non_integer:{name}")
    if value < 0:
        raise UsageProblem(f"negative:{name}")
    return value


def _error_note(payload: Mapping[str, Any]) -> str | None:
    """The error's class and code only: LiteLLM's message may echo the request or a key."""
    info = payload.get("error_information")
    if not isinstance(info, Mapping):
        return "error"
    parts = [_text(info.get("error_class"), 64), _text(info.get("error_code"), 16)]
    return " ".join(p for p in parts if p) or "error"


def _epoch(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 < value < 4e9 else None


def _when(epoch: float | None) -> datetime | None:
    if epoch is None:
        return None
    ts = datetime.fromtimestamp(epoch, UTC)
    return ts if ts_problem(ts) is None else None


def _requested_tools(response: Any) -> tuple[ToolCall, ...]:
    """The tool calls the model asked for (OpenAI's shape), so tool events link to this call."""
    if not isinstance(response, Mapping):
        return ()
    out: list[ToolCall] = []
    for choice in response.get("choices") or ():
        message = choice.get("message") if isinstance(choice, Mapping) else None
        for call in (message.get("tool_calls") or ()) if isinstance(message, Mapping) else ():
            fn = call.get("function") if isinstance(call, Mapping) else None
            if not isinstance(call, Mapping) or not isinstance(fn, Mapping) or len(out) >= 128:
                continue
            name = _text(fn.get("name"), 200)
            if name:
                out.append(ToolCall(_text(call.get("id"), 200), name, args_hash(fn.get("arguments"))))
    return tuple(out)


def _attributed(base: ctx.Attribution, kwargs: Mapping[str, Any], payload: Mapping[str, Any]) -> ctx.Attribution:
    """The call's attribution: the session current at the request, then what the proxy's key names
    (org, team, project: never the request's to change), then the request's own metadata."""
    params = kwargs.get("litellm_params")
    request: Mapping[str, Any] = {}
    if isinstance(params, Mapping) and isinstance(params.get("metadata"), Mapping):
        request = params["metadata"]
    key = payload.get("metadata")
    key_meta: Mapping[str, Any] = key if isinstance(key, Mapping) else {}
    changes: dict[str, Any] = {}
    for dim in _DIMENSIONS:
        found = None
        for name in _KEY_BOUND.get(dim, ()):
            found = found or _text(key_meta.get(name))
        found = found or _text(request.get(dim))
        if found is None and dim == "user":
            found = _text(payload.get("end_user")) or _text(kwargs.get("user"))
        for name in _KEY_FALLBACK.get(dim, ()):
            found = found or _text(key_meta.get(name))
        if found is not None:
            changes[dim] = found
    session = None
    if isinstance(params, Mapping):
        session = _text(params.get("litellm_session_id"))
    session = session or _text(request.get("session_id")) or _text(payload.get("session_id"))
    if session is not None and session != base.session_id:
        # a session LiteLLM names: the session current at the call (if any) is its parent
        changes.update(session_id=session, session=None, parent_session_id=base.session_id or base.parent_session_id)
    tags = _tags(payload.get("request_tags"))
    if tags:
        changes["tags"] = bound_tags({**base.tags, **tags})
    return replace(base, **changes) if changes else base


def _tags(raw: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for tag in raw if isinstance(raw, list) else ():
        text = _text(tag)
        if text is None or len(out) >= 32:
            continue
        k, sep, v = text.partition(":")
        out[k.strip() or text] = v.strip() if sep and v.strip() else "true"
    try:
        return bound_tags(out)
    except ValueError:
        return {}


def _trim(d: OrderedDict[Any, Any]) -> None:
    while len(d) > MAX_CALLS:
        d.popitem(last=False)


# A LiteLLM proxy names its callbacks by import path: `callbacks: tokentrail.integrations.litellm.proxy_handler`
proxy_handler = TokentrailLogger()
