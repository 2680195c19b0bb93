"""Provider API keys never reach the ledger: after SDK traffic carrying OpenAI, Anthropic and Google
keys, ok and failing (401 echoing the key, 429, 500, timeouts, cut streams, a usage payload that
echoes the key, a prompt with a key pasted in), with the store down for a while (so the spool is
used), no key is in the database, the spool, the logs of any library at DEBUG, what tokentrail
raises or reprs, or the stored note and content. `find_keys` and `scan` are shared with the
gateway's tests."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from google import genai

import tokentrail as tt
from tests._doubles import Outage
from tokentrail.events import COLUMNS, UsageEvent, from_row
from tokentrail.integrations.exchange import Exchange
from tokentrail.integrations.wire import ANTHROPIC_MESSAGES, GEMINI, OPENAI_CHAT, OPENAI_RESPONSES, Route
from tokentrail.pricing import PriceBook
from tokentrail.testing import FakeUpstream, Reply, capture_events

OPENAI_KEY = "sk-proj-Qm9vZ0x2UjN0c0tleTAxMjM0NTY3ODlhYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5eg_T3BlbkFJ"
ANTHROPIC_KEY = "sk-ant-api03-c2VjcmV0QW50aHJvcGljS2V5MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1ub3A-Xy9QAAA"
GOOGLE_KEY = "AIzaSyC8d7Qf3Lr0Zx1Vb2Nm4Kp6Jh9Gt5Ws3Ed"
KEYS = (OPENAI_KEY, ANTHROPIC_KEY, GOOGLE_KEY)
GPT, CLAUDE, GEMINI_MODEL = "gpt-4o-mini", "claude-sonnet-4-6", "gemini-2.5-flash"
FAST_RETRY = {"retry-after-ms": "1"}


def find_keys(blob: bytes | str, keys: tuple[str, ...] = KEYS) -> list[str]:
    """The keys found in `blob`, whole or by a telling piece (their first 20 or last 16 characters:
    a key cut short or partly masked still leaks). docs/rules.md §Security allows the last 4 characters at most."""
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    return [k for k in keys if k in text or k[:20] in text or k[-16:] in text]


def scan(*folders: Path) -> bytes:
    """Every byte of every file under `folders` (the SQLite file, its WAL, the spool)."""
    return b"".join(p.read_bytes() for f in folders if f.exists() for p in sorted(f.rglob("*")) if p.is_file())


def all_rows(ledger: tt.Ledger) -> str:
    """Every row of every table, as text (for PostgreSQL, whose files are not ours to read)."""
    tables = [r[0] for r in ledger.store.query("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
    return "\n".join(str(ledger.store.query(f"SELECT * FROM {t}")) for t in tables)


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Records of every logger at DEBUG (the SDKs', httpx's and tokentrail's)."""
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]
    saved = [(lg, lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.propagate = True
    with caplog.at_level(logging.DEBUG):
        yield caplog
    for lg, level, propagate in saved:
        lg.setLevel(level)
        lg.propagate = propagate


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record, formatted with its traceback, but the SDKs' DEBUG dump of the caller's own request
    body ("Request options: …"): the prompt of this test has keys pasted into it, on purpose."""
    fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(
        fmt.format(r)
        for r in caplog.records
        if r.name.startswith("tokentrail") or not r.getMessage().startswith("Request options:")
    )


@pytest.fixture
def up(server: FakeUpstream) -> FakeUpstream:
    server.reset()
    server.default = Reply(text="fine", input_tokens=100, output_tokens=10)
    return server


def _echo(key: str) -> str:
    """OpenAI's own wording when a key is refused: the key comes back in the error."""
    return f"Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com."


Call = Callable[[], Any]


def traffic(up: FakeUpstream, ledger: tt.Ledger, clients: list[Any]) -> list[tuple[Reply | None, Call]]:
    """(scripted reply, call) for each SDK: ok, streamed, and every way of failing. The clients made
    are appended to `clients`, to be closed."""
    prompt = f"my key is {OPENAI_KEY}, and {ANTHROPIC_KEY} and {GOOGLE_KEY}; what now?"
    m: Any = [{"role": "user", "content": prompt}]
    oai = tt.wrap(openai.OpenAI(base_url=up.openai_base_url, api_key=OPENAI_KEY, max_retries=0), ledger=ledger)
    oai_retry = oai.with_options(max_retries=1)
    oai_slow = oai.with_options(timeout=0.05)
    claude = tt.wrap(
        anthropic.Anthropic(base_url=up.anthropic_base_url, api_key=ANTHROPIC_KEY, max_retries=0), ledger=ledger
    )
    claude_slow = claude.with_options(timeout=0.05)
    gem = tt.wrap(genai.Client(api_key=GOOGLE_KEY, http_options={"base_url": up.gemini_base_url}), ledger=ledger)
    gem_slow = tt.wrap(
        genai.Client(api_key=GOOGLE_KEY, http_options={"base_url": up.gemini_base_url, "timeout": 50}), ledger=ledger
    )

    def chat(c: Any = oai, stream: bool = False) -> Call:
        if stream:
            return lambda: list(c.chat.completions.create(model=GPT, messages=m, stream=True))
        return lambda: c.chat.completions.create(model=GPT, messages=m)

    def claude_call(c: Any = claude, stream: bool = False) -> Call:
        if stream:
            return lambda: list(c.messages.create(model=CLAUDE, max_tokens=20, messages=m, stream=True))
        return lambda: c.messages.create(model=CLAUDE, max_tokens=20, messages=m)

    def gem_call(c: Any = gem, stream: bool = False) -> Call:
        if stream:
            return lambda: list(c.models.generate_content_stream(model=GEMINI_MODEL, contents=prompt))
        return lambda: c.models.generate_content(model=GEMINI_MODEL, contents=prompt)

    async def achat() -> Any:
        aoai = openai.AsyncOpenAI(base_url=up.openai_base_url, api_key=OPENAI_KEY, max_retries=0)
        async with tt.wrap(aoai, ledger=ledger) as c:
            return await c.chat.completions.create(model=GPT, messages=m)

    clients += [oai, claude, gem, gem_slow]

    calls: list[tuple[Reply | None, Call]] = []
    for key, call in ((OPENAI_KEY, chat), (ANTHROPIC_KEY, claude_call), (GOOGLE_KEY, gem_call)):
        calls += [
            (None, call()),
            (None, call(stream=True)),
            (Reply(status=401, error_message=_echo(key)), call()),
            (Reply(status=401, error_message=_echo(key)), call(stream=True)),
            (Reply(status=429, error_message=f"rate limited for {key}", headers=FAST_RETRY), call()),
            (Reply(status=500, error_message=f"internal error, key {key}"), call()),
            (Reply(text="a b c d e f g h", stream_chunks=6, cut_stream_after=3), call(stream=True)),
            (Reply(raw_usage={"prompt_tokens": -1, "input_tokens": -1, "promptTokenCount": -1, "key": key}), call()),
        ]
    calls += [
        (Reply(delay_s=0.5), chat(oai_slow)),
        (Reply(delay_s=0.5), claude_call(claude_slow)),
        (Reply(delay_s=0.5), gem_call(gem_slow)),
        (Reply(status=429, error_message=_echo(OPENAI_KEY), headers=FAST_RETRY), chat(oai_retry)),  # then ok
        (Reply(status=401, error_message=_echo(OPENAI_KEY)), lambda: asyncio.run(achat())),
    ]
    return calls


def _run(up: FakeUpstream, calls: list[tuple[Reply | None, Call]]) -> list[BaseException]:
    raised = []
    for reply, call in calls:
        up.reset()
        up.default = Reply(text="fine", input_tokens=100, output_tokens=10)
        if reply is not None:
            up.push(reply)
        try:
            call()
        except Exception as e:
            raised.append(e)
    return raised


def _chain(e: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


@pytest.mark.parametrize("capture", [False, True], ids=["capture-off", "capture-on"])
def test_no_key_reaches_the_ledger_the_spool_the_logs_or_an_error(
    capture: bool, db_url: str, up: FakeUpstream, tmp_path: Path, every_log: pytest.LogCaptureFixture
) -> None:
    db, spool = tmp_path / "db", tmp_path / "spool"
    url = db_url if db_url.startswith("postgres") else f"sqlite:///{db / 'ledger.db'}"
    store = Outage(url)
    ledger = tt.Ledger(store=store, prices=PriceBook(overrides=""), capture_content=capture, spool=spool)  # type: ignore[arg-type]
    clients: list[Any] = []
    calls = traffic(up, ledger, clients)
    half = len(calls) // 2
    with capture_events() as events:
        raised = _run(up, calls[:half])
        ledger.flush(timeout=30)  # the store is down: durable in the spool
        spooled = scan(spool)
        assert spooled, "nothing was spooled"
        store.up = True
        deadline = time.monotonic() + 10
        while ledger.spool is not None and ledger.spool.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        raised += _run(up, calls[half:])
        ledger.flush(timeout=30)
    rows = ledger.store.query(f"SELECT {', '.join(COLUMNS)} FROM events")
    stored = [from_row(r) for r in rows]
    database = all_rows(ledger) if db_url.startswith("postgres") else ""
    errors = [repr(ledger.last_error), repr(ledger), repr(ledger.store)]
    ledger.close()
    for c in clients:
        c.close()
    database += scan(db).decode("utf-8", "replace")

    assert len(stored) == len(events) >= len(calls) and len(raised) >= 15
    assert {e.status for e in stored} >= {"ok", "error", "invalid_usage:negative:prompt_tokens"}
    assert not find_keys(database), "a key is in the database"
    assert not find_keys(spooled), "a key is in the spool"
    assert not find_keys(logged(every_log)), "a key is in the logs"
    for e in stored:
        assert not find_keys(repr(e)), e.note
        assert (e.content is not None) is capture and e.request_hash
    if capture:  # the prompt carried the keys: the redactor masked them
        prompts = [json.loads(e.content or "")["prompt"] for e in stored]
        assert all(p.count("[REDACTED:api_key]") == 3 for p in prompts if "my key is" in p)
    for e in raised:
        assert not find_keys("\n".join(errors))
        for link in _chain(e):  # the SDK's own error, as the SDK raised it: tokentrail adds nothing
            assert not type(link).__module__.startswith("tokentrail") and not getattr(link, "__notes__", None)
    notes = [e.note for e in stored if e.note and "reported usage" in e.note]
    assert len(notes) >= 3 and all("[REDACTED:" in n for n in notes)  # the echoed key was masked


@pytest.mark.parametrize(
    ("route", "body", "sse"),
    [
        (OPENAI_CHAT, {"error": {"type": OPENAI_KEY, "code": OPENAI_KEY, "message": OPENAI_KEY}}, None),
        (OPENAI_RESPONSES, None, [{"type": "response.failed", "response": {"error": {"code": OPENAI_KEY}}}]),
        (OPENAI_CHAT, None, [{"choices": [], "error": {"type": f"bad key {OPENAI_KEY}"}}]),
        (ANTHROPIC_MESSAGES, {"type": "error", "error": {"type": ANTHROPIC_KEY, "message": ANTHROPIC_KEY}}, None),
        (ANTHROPIC_MESSAGES, None, [{"type": "error", "error": {"type": ANTHROPIC_KEY}}]),
        (GEMINI, {"error": {"code": 400, "status": GOOGLE_KEY, "message": GOOGLE_KEY}}, None),
        (GEMINI, {"usageMetadata": {"promptTokenCount": -1, "key": GOOGLE_KEY * 100}}, None),
    ],
    ids=[
        "openai-body",
        "responses-stream",
        "chat-stream",
        "anthropic-body",
        "anthropic-stream",
        "gemini-body",
        "usage",
    ],
)
def test_an_upstream_that_echoes_a_key_in_what_becomes_the_note_is_masked(
    route: Route, body: Any, sse: list[Any] | None, ledger: tt.Ledger
) -> None:
    with capture_events() as events:
        ex = Exchange(ledger, route, {"model": "m"}, raw_body=b"{}")
        if sse is None:
            ex.response(400, "application/json")
            ex.body_bytes(json.dumps(body).encode())
        else:
            ex.response(200, "text/event-stream")
            ex.chunk(b"".join(b"data: " + json.dumps(d).encode() + b"\n\n" for d in sse))
            ex.stream_tail()
        ex.finish()
    (e,) = events
    assert e.status != "ok" and e.note and "[REDACTED:" in e.note and len(e.note) <= 2_100
    assert not find_keys(repr(e))


def test_the_key_of_a_google_call_in_its_url_is_not_kept(ledger: tt.Ledger) -> None:
    """The REST API also takes ?key=…: the path is read for the model, never stored."""
    with capture_events() as events:
        ex = Exchange(ledger, GEMINI, {}, path=f"/v1beta/models/gemini-2.5-flash:generateContent?key={GOOGLE_KEY}")
        ex.response(200, "application/json")
        ex.body_bytes(b'{"usageMetadata": {"promptTokenCount": 3}, "candidates": []}')
        ex.finish()
    (e,) = events
    assert e.model == "gemini-2.5-flash" and not find_keys(repr(e))


def test_find_keys_sees_a_key_cut_short_or_partly_masked() -> None:
    assert find_keys(OPENAI_KEY[:30] + "…") == [OPENAI_KEY]
    assert find_keys("sk-…" + ANTHROPIC_KEY[-16:]) == [ANTHROPIC_KEY]
    assert find_keys("sk-proj-…" + OPENAI_KEY[-4:]) == []  # the last 4 characters are allowed
    assert not find_keys(UsageEvent().__repr__())
