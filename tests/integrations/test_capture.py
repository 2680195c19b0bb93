"""Content capture: off by default, and then no prompt or completion text is written anywhere;
on request, the prompt and completion of every SDK call, through the redaction hook, bounded."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from hypothesis import given, settings
from hypothesis import strategies as st

import tokentrail as tt
from tests._doubles import Outage
from tokentrail import capture
from tokentrail.capture import MAX_COMPLETION, MAX_PROMPT, content_of, prompt_text, redact_text
from tokentrail.events import COL, UsageEvent
from tokentrail.pricing import PriceBook
from tokentrail.testing import FakeUpstream, Reply, ToolCall, capture_events

PROMPT_MARK = "zebra-prompt-7f3a"  # markers no redactor touches: found only if the text was stored
REPLY_MARK = "okapi-completion-91c2"
EMAIL = "jane.doe@example.com"
KEY = "sk-proj-T3stKey0123456789abcdefghijklmnopqrstuvwxyzABCD"
CARD = "4111 1111 1111 1111"
PROMPT = f"{PROMPT_MARK}: write to {EMAIL} with key {KEY}"
REPLY = f"{REPLY_MARK} charged card {CARD}, order 4111 1111 1111 1112"
GPT, CLAUDE, GEMINI = "gpt-4o-mini", "claude-sonnet-4-6", "gemini-2.5-flash"


# -- the default redactor ---------------------------------------------------------------------------

MASKED = {
    "email": "contact jane.doe+news@mail.example.co.uk today",
    "openai": "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKL",
    "openai-project": "sk-proj-Ab3dEfGhIjKlMnOpQrStUvWxYz0123456789_-AbCdEfGhIjKlMnOp",
    "openai-svcacct": "sk-svcacct-Ab3dEfGhIjKlMnOpQrStUvWxYz0123456789",
    "anthropic": "sk-ant-api03-Ab3dEfGhIjKlMnOpQrStUvWxYz0123456789_-AbCdEfGhIjKlMnOpAA",
    "google": "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
    "tokentrail": "tt-4f9a0c2e7b1d4e8a9c3f5b6d7e8f9a0b",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "github": "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "github-oauth": "gho_16C7e42F292c6912E7710c838347Ae178B4a",
    "github-pat": "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456",
    "slack-bot": "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "slack-app": "xapp-1-A0123456789-1234567890123-abcdef0123456789abcdef0123456789abcdef",
    "slack-webhook": "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "huggingface": "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567",
    "gitlab-pat": "glpat-xYz12AbCdEfGh3456ijkl",
    "gitlab-deploy": "gldt-xYz12AbCdEfGh3456ijkl",
    "aws-secret": "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "npm": "npm_abcdefghijklmnopqrstuvwxyz0123456789",
    "pypi": "pypi-AgEIcHlwaS5vcmcCJDEyMzQ1Njc4LTEyMzQtMTIzNC0xMjM0LTEyMzQ1Njc4OTBhYgACKlsz",
    "groq": "gsk_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP",
    "replicate": "r8_abcdefghijklmnopqrstuvwxyz0123456789AB",
    "xai": "xai-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ01234567",
    "perplexity": "pplx-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMN",
    "google-oauth": "ya29.a0AfH6SMBx-abcdefghijklmnopqrstuvwxyz0123456789",
    "google-client-secret": "GOCSPX-abcdefghijklmnopqrstuvwx12",
    "sendgrid": "SG.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
    "digitalocean": "dop_v1_" + "a1" * 32,
    "stripe-webhook": "whsec_abcdefghijklmnopqrstuvwxyz012345",
    "langsmith": "lsv2_pt_0123456789abcdef0123456789abcdef_0123456789",
    "stripe": "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "bearer": "Authorization: Bearer 8f14e45fceea167a5a36dedd4bea2543",
    "key=": "https://api.example.com/v1?key=9a0364b9e99bb480dd25e1f0284c8555",
    "token:": '{"token": "ZXhhbXBsZS10b2tlbi0xMjM0NTY3ODk="}',
    "password=": "db password=hunter2 ok",
    "visa": "4111 1111 1111 1111",
    "mastercard": "5555-5555-5555-4444",
    "amex": "378282246310005",
    "private-key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----",
}
KEPT = [
    "order 4111 1111 1111 1112 shipped",  # fails the Luhn check: an order number, not a card
    "invoice 1234567890123456",
    "call +1 (415) 555-0132 or 020 7946 0958",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b",
    "uuid 01a21365-e7c4-74b3-a2ca-f231ad826285",
    "the bearer instrument and basic understanding",
    "token accounting for agents; the key: understanding-the-problem",
    "task-scheduler-configuration and risk-adjusted-returns",
    "Jane Doe lives at 12 Rue de Rivoli, Paris; IP 192.168.1.20",
    "2026-11-25T15:49:35+00:00 cost $0.0042",
]


@pytest.mark.parametrize("name", list(MASKED))
def test_the_default_redactor_masks(name: str) -> None:
    text = MASKED[name]
    out = redact_text(text)
    assert "[REDACTED:" in out
    for secret in (text.split()[-1].strip('"{}'), "hunter2", "IIEvQIBADANBg", "4111", "5555", "3782"):
        if secret in text and len(secret) >= 4 and secret not in ("today", "ok"):
            assert secret not in out, (name, out)


@pytest.mark.parametrize("text", KEPT)
def test_the_default_redactor_keeps_what_is_not_a_secret(text: str) -> None:
    assert redact_text(text) == text


def _luhn_complete(digits: str) -> str:
    for check in "0123456789":
        n = digits + check
        total = sum(
            int(d) if i % 2 == 0 else (int(d) * 2 - 9 if int(d) > 4 else int(d) * 2) for i, d in enumerate(reversed(n))
        )
        if total % 10 == 0:
            return n
    raise AssertionError


alnum = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", min_size=1)
secrets = st.one_of(
    st.builds(lambda s: f"sk-proj-{s}", st.text(alphabet="abcdefXYZ0123456789_-", min_size=40, max_size=160)),
    st.builds(lambda s: f"sk-ant-api03-{s}", st.text(alphabet="abcdefXYZ0123456789_-", min_size=40, max_size=100)),
    st.builds(lambda s: f"AIza{s}", st.text(alphabet="abcdefXYZ0123456789_-", min_size=35, max_size=35)),
    st.builds(lambda s: f"tt-{s}", st.text(alphabet="abcdefXYZ0123456789_-", min_size=43, max_size=43)),
    st.builds(lambda s: f"AKIA{s}", st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=16, max_size=16)),
    st.builds(lambda s: f"hf_{s}", st.text(alphabet="abcdefXYZ0123456789", min_size=34, max_size=34)),
    st.builds(lambda s: f"glpat-{s}", st.text(alphabet="abcdefXYZ0123456789_-", min_size=20, max_size=20)),
    st.builds(lambda u, d: f"{u.lower()}@{d.lower()}.com", alnum, alnum),
    st.builds(
        lambda d, sep: sep.join(_luhn_complete("4" + d)[i : i + 4] for i in range(0, 16, 4)),
        st.text(alphabet="0123456789", min_size=14, max_size=14),
        st.sampled_from(["", " ", "-"]),
    ),
)
prose = st.text(alphabet="abcdefghij klmnop,.;()\n\"'", max_size=60)


@settings(max_examples=200, deadline=None)
@given(before=prose, secret=secrets, after=prose, sep=st.sampled_from([" ", "\n", '"', "'", "=", ": ", "(", ",", "<"]))
def test_a_secret_anywhere_in_prose_is_masked(before: str, secret: str, after: str, sep: str) -> None:
    out = redact_text(f"{before}{sep}{secret}{sep}{after}")
    assert secret not in out
    assert "[REDACTED:" in out


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=["Nd", "Cs"], blacklist_characters="@")))
def test_prose_without_digits_or_at_signs_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "hostile",
    [
        "a" * 1_000_000,
        "key=" * 250_000,
        "sk-" + "a" * 999_997,
        "4 " * 500_000,
        "a@" * 500_000,
        "bearer 1" * 125_000,
        "SG." * 333_333,
        "SG.aaaaaaaaaaaaaaaaaaaaaa" * 40_000,
        "hooks.slack.com/services/" * 40_000,
    ],
    ids=["letters", "key=", "sk-", "digits", "at-signs", "bearer", "SG.", "SG.x", "slack-hooks"],
)
def test_redaction_stays_linear_on_hostile_input(hostile: str) -> None:
    redact_text(hostile)


# -- what is captured from a request and a response -------------------------------------------------


def test_prompt_text_reads_every_provider_shape_and_skips_binary_data() -> None:
    openai_chat = {
        "messages": [
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:AAAA"}}],
            },
            {
                "role": "assistant",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"q":1}'}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "result"},
        ]
    }
    assert prompt_text(openai_chat) == 'system: sys\nuser: look\nassistant: f\n{"q":1}\ntool: result'
    responses = {
        "instructions": "be brief",
        "input": [{"type": "function_call_output", "call_id": "c", "output": "42"}],
    }
    assert prompt_text(responses) == "system: be brief\nfunction_call_output: 42"
    claude = {
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image", "source": {"data": "BBBB"}}, {"type": "text", "text": "hi"}],
            },
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"q": 2}}]},
        ],
    }
    assert prompt_text(claude) == 'system: sys\nuser: hi\nassistant: f\n{"q": 2}'
    gemini = {
        "systemInstruction": {"parts": [{"text": "sys"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": "CCCC"}}]}
        ],
    }
    assert prompt_text(gemini) == "system: sys\nuser: hi"
    assert prompt_text({"input": ["one", [1, 2, 3]]}) == "user: one"  # embeddings (token arrays are not text)
    assert prompt_text(None) == prompt_text([1]) == ""


def test_content_is_bounded_head_and_tail_after_redaction() -> None:
    prompt = {"messages": [{"role": "user", "content": f"{KEY} " + "p" * 3_000_000 + " tail-of-prompt"}]}
    out = json.loads(content_of(redact_text, prompt, ["c" * 1_000_000, " tail-of-completion"]) or "")
    assert len(out["prompt"]) <= MAX_PROMPT and len(out["completion"]) <= MAX_COMPLETION
    assert out["prompt"].startswith("user: [REDACTED:api_key]") and out["prompt"].endswith("tail-of-prompt")
    assert "characters cut" in out["prompt"] and out["completion"].endswith("tail-of-completion")


def test_a_redactor_that_fails_stores_no_content_and_logs_no_text(caplog: pytest.LogCaptureFixture) -> None:
    def broken(text: str) -> str:
        raise ValueError(f"cannot redact {text}")

    with caplog.at_level(logging.DEBUG):
        assert content_of(broken, {"input": PROMPT}, [REPLY]) is None
        assert content_of(lambda s: None, {"input": PROMPT}, [REPLY]) is None  # type: ignore[arg-type, return-value]
    assert "the redactor failed" in caplog.text and PROMPT_MARK not in caplog.text


# -- through the SDKs -------------------------------------------------------------------------------


@pytest.fixture
def up(server: FakeUpstream) -> FakeUpstream:
    server.reset()
    server.default = Reply(text=REPLY, input_tokens=100, output_tokens=20)
    return server


def sdk_traffic(up: FakeUpstream, ledger: tt.Ledger, prompt: str = PROMPT) -> list[BaseException]:
    """Calls through each SDK, streamed and not, plus failures; returns what the SDKs raised."""
    raised: list[BaseException] = []
    m: Any = [{"role": "user", "content": prompt}]
    oai = tt.wrap(openai.OpenAI(base_url=up.openai_base_url, api_key="sk-x", max_retries=0), ledger=ledger)
    claude = tt.wrap(
        anthropic.Anthropic(base_url=up.anthropic_base_url, api_key="sk-ant-x", max_retries=0), ledger=ledger
    )
    gem = tt.wrap(genai.Client(api_key="g-x", http_options={"base_url": up.gemini_base_url}), ledger=ledger)
    calls: list[Any] = [
        lambda: oai.chat.completions.create(model=GPT, messages=m),
        lambda: list(oai.chat.completions.create(model=GPT, messages=m, stream=True)),
        lambda: list(oai.responses.create(model=GPT, input=prompt, instructions=prompt, stream=True)),
        lambda: oai.embeddings.create(model="text-embedding-3-small", input=[prompt]),
        lambda: claude.messages.create(model=CLAUDE, max_tokens=50, system=prompt, messages=m),
        lambda: _final(claude.messages.stream(model=CLAUDE, max_tokens=50, messages=m)),
        lambda: gem.models.generate_content(model=GEMINI, contents=prompt),
        lambda: list(gem.models.generate_content_stream(model=GEMINI, contents=prompt)),
    ]
    for call in calls:
        call()
    failures: list[tuple[Reply, Any]] = [
        (Reply(status=500, error_message=prompt), lambda: oai.chat.completions.create(model=GPT, messages=m)),
        (
            Reply(text=REPLY, cut_stream_after=3),
            lambda: list(oai.chat.completions.create(model=GPT, messages=m, stream=True)),
        ),
        (
            Reply(text=REPLY, raw_usage={"prompt_tokens": -1}),
            lambda: oai.chat.completions.create(model=GPT, messages=m),
        ),
        (
            Reply(status=400, error_message=prompt),
            lambda: claude.messages.create(model=CLAUDE, max_tokens=5, messages=m),
        ),
        (Reply(status=429, error_message=prompt), lambda: gem.models.generate_content(model=GEMINI, contents=prompt)),
    ]
    for reply, call in failures:
        up.push(reply)
        try:
            call()
        except Exception as e:
            raised.append(e)
    for c in (oai, claude, gem):
        c.close()
    return raised


def _final(stream: Any) -> Any:
    with stream as s:
        return s.get_final_message()


def files_bytes(*folders: Path) -> bytes:
    return b"".join(p.read_bytes() for f in folders if f.exists() for p in sorted(f.rglob("*")) if p.is_file())


def tokentrail_log(caplog: pytest.LogCaptureFixture) -> str:
    """What tokentrail logged (messages and tracebacks). The SDKs' own DEBUG logs are theirs: anthropic
    logs its request options, prompt included."""
    fmt = logging.Formatter()
    return "\n".join(fmt.format(r) for r in caplog.records if r.name.startswith("tokentrail"))


def test_off_by_default_no_prompt_or_completion_text_is_written_anywhere(
    up: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db, spool = tmp_path / "db", tmp_path / "spool"
    store = Outage(f"sqlite:///{db / 'ledger.db'}")
    ledger = tt.Ledger(store=store, prices=PriceBook(overrides=""), spool=spool)  # type: ignore[arg-type]
    assert ledger.capture_content is False
    with caplog.at_level(logging.DEBUG), capture_events() as events:
        raised = sdk_traffic(up, ledger)
        ledger.flush(timeout=30)  # durable in the spool: the store is down
        spooled = files_bytes(spool)
        store.up = True
        deadline = time.monotonic() + 10
        while ledger.spool is not None and ledger.spool.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        ledger.flush(timeout=30)
        last_error = repr(ledger.last_error)
        ledger.close()
    assert len(events) == 13 and len(raised) == 4 and spooled
    assert store.inner.query("SELECT count(*) FROM events")[0][0] == 13  # replayed from the spool
    text = tokentrail_log(caplog) + last_error + "".join(repr(e) for e in events)
    for mark in (PROMPT_MARK, REPLY_MARK):
        assert mark.encode() not in files_bytes(db) and mark.encode() not in spooled
        assert mark not in text
    assert all(e.content is None and e.request_hash for e in events)  # the fingerprint is kept either way
    assert {e.status for e in events} >= {"ok", "error", "invalid_usage:negative:prompt_tokens"}
    assert any(e.note and "reported usage" in e.note for e in events)


def test_on_the_prompt_and_completion_of_every_call_are_stored_redacted(up: FakeUpstream, tmp_path: Path) -> None:
    db = tmp_path / "db"
    ledger = tt.Ledger(f"sqlite:///{db / 'l.db'}", prices=PriceBook(overrides=""), capture_content=True, spool=False)
    with capture_events() as events:
        sdk_traffic(up, ledger)
    ledger.close()
    stored = files_bytes(db)
    assert PROMPT_MARK.encode() in stored and REPLY_MARK.encode() in stored  # the scan above would see them
    for secret in (EMAIL, KEY, CARD):
        assert secret.encode() not in stored and all(secret not in (e.content or "") for e in events)
    by_op: dict[tuple[str, bool, str], dict[str, str]] = {}
    for e in events:
        assert e.content is not None and e.request_hash
        by_op.setdefault((e.operation or "", e.streamed, e.status), json.loads(e.content))
    for (operation, streamed, status), content in by_op.items():
        assert PROMPT_MARK in content["prompt"], (operation, streamed)
        if status == "ok" and operation != "embeddings":
            assert content["completion"].startswith(REPLY_MARK), (operation, streamed, content)
            assert "[REDACTED:card]" in content["completion"] and "1111 1112" in content["completion"]
    assert "[REDACTED:email]" in by_op[("chat", False, "ok")]["prompt"]
    cut = by_op[("chat", True, "error")]["completion"]
    assert REPLY_MARK.startswith(cut[:5])  # a cut stream keeps the text that arrived


def test_tool_calls_the_model_asked_for_are_part_of_the_completion(up: FakeUpstream, tmp_path: Path) -> None:
    ledger = tt.Ledger(
        f"sqlite:///{tmp_path / 'l.db'}", prices=PriceBook(overrides=""), capture_content=True, spool=False
    )
    up.default = Reply(text="", tool_calls=[ToolCall("search", {"q": "paris"})])
    oai = tt.wrap(openai.OpenAI(base_url=up.openai_base_url, api_key="sk-x", max_retries=0), ledger=ledger)
    with oai, capture_events() as events:
        list(oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "go"}], stream=True))
    ledger.close()
    assert json.loads(events[0].content or "")["completion"] == '[tool_call] search({"q": "paris"})'


def test_a_custom_redactor_replaces_the_default(up: FakeUpstream, tmp_path: Path) -> None:
    def redact(text: str) -> str:
        return redact_text(text).replace(PROMPT_MARK, "[REDACTED:marker]")

    ledger = tt.Ledger(f"sqlite:///{tmp_path / 'l.db'}", capture_content=True, redact=redact, spool=False)
    oai = tt.wrap(openai.OpenAI(base_url=up.openai_base_url, api_key="sk-x", max_retries=0), ledger=ledger)
    with oai, capture_events() as events:
        oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": PROMPT}])
    ledger.close()
    content = json.loads(events[0].content or "")
    assert content["prompt"].startswith("user: [REDACTED:marker]") and KEY not in content["prompt"]


def test_the_environment_and_configure_turn_capture_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for value, on in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv(capture.ENV, value)
        with tt.Ledger(f"sqlite:///{tmp_path / 'env.db'}", spool=False) as led:
            assert led.capture_content is on
    monkeypatch.setenv(capture.ENV, "1")
    with tt.Ledger(f"sqlite:///{tmp_path / 'env.db'}", capture_content=False, spool=False) as led:
        assert led.capture_content is False  # an explicit argument wins
    monkeypatch.delenv(capture.ENV)
    led = tt.configure(db=f"sqlite:///{tmp_path / 'conf.db'}", capture_content=True, spool=False)
    try:
        assert tt.get_ledger() is led and led.capture_content is True and led.redact is redact_text
    finally:
        led.close()


def test_captured_content_is_stored_as_it_was_on_both_backends(up: FakeUpstream, db_url: str, tmp_path: Path) -> None:
    ledger = tt.Ledger(db_url, prices=PriceBook(overrides=""), capture_content=True, spool=tmp_path / "spool")
    oai = tt.wrap(openai.OpenAI(base_url=up.openai_base_url, api_key="sk-x", max_retries=0), ledger=ledger)
    prompt = PROMPT + " ünïcødé \x00 end"
    with oai, capture_events() as events:
        oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": prompt}])
    ledger.flush()
    row = ledger.store.get_event(events[0].event_id)
    ledger.close()
    assert row is not None
    content = row[COL["content"]]
    stored = json.loads(content if isinstance(content, str) else "")
    # content is JSON text: a NUL travels as the escape \u0000, which every backend stores as it is
    assert stored == json.loads(events[0].content or "") and "ünïcødé \x00 end" in stored["prompt"]


def test_a_recorded_event_keeps_the_content_the_caller_gave(ledger: tt.Ledger) -> None:
    """Manual events carry content only if the caller puts it there (record_llm never captures)."""
    e = ledger.record_llm(provider="openai", model=GPT, input_tokens=3)
    assert e.content is None and UsageEvent().content is None
