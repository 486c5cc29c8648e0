"""OpenAITA and engine.retry against a real local HTTP server speaking the OpenAI protocol."""

from __future__ import annotations

import json
import logging
import random
import socket
import traceback

import openai
import pytest

from engine.errors import TAError, TAUnavailable, UsageError
from engine.retry import RetryPolicy, call_with_retry, parse_retry_after
from engine.ta.openai_ta import OpenAITA, display_url, redact

MESSAGES = [
    {"role": "system", "content": "You write short instructions (prefixes) for a sentiment classifier."},
    {"role": "user", "content": "History (worst first):\n0.41 Classify:\n0.55 Sentiment:\n"
                                "Propose 4 new prefixes. Answer as JSON {\"prefixes\": [...]}."},
]


def make_ta(fake, sleeps: list | None = None, **kwargs) -> OpenAITA:
    kwargs.setdefault("retries", 3)
    return OpenAITA("gpt-4o-mini", base_url=fake.base_url, api_key=fake.api_key,
                    sleep=(sleeps.append if sleeps is not None else _no_sleep), **kwargs)


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected retry sleep of {seconds}s")


def chat_requests(fake):
    return fake.requests_to(r"/chat/completions$", "POST")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- happy path ----------------------------------------------------------------------

def test_propose_returns_texts_usage_and_model(fake_openai):
    ta = make_ta(fake_openai, top_p=0.9)
    reply = ta.propose(MESSAGES, 4, 0.7, 123)
    assert len(reply.texts) == 1
    prefixes = json.loads(reply.texts[0])["prefixes"]
    assert len(prefixes) == 4 and all(isinstance(p, str) and p for p in prefixes)
    assert reply.model == "gpt-4o-mini"
    assert set(reply.usage) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert reply.usage["total_tokens"] == reply.usage["prompt_tokens"] + reply.usage["completion_tokens"]
    assert reply.usage["completion_tokens"] > 0
    assert reply.latency_s >= 0.0
    [req] = chat_requests(fake_openai)
    assert req.body["messages"] == MESSAGES
    assert req.body["model"] == "gpt-4o-mini"
    assert req.body["temperature"] == 0.7 and req.body["top_p"] == 0.9 and req.body["seed"] == 123
    assert "max_tokens" not in req.body and req.body.get("n", 1) == 1
    assert "authorization" not in req.headers  # the recorder strips it; the server checked it


def test_one_request_carries_the_prompt_that_asks_for_n_prefixes(fake_openai):
    ta = make_ta(fake_openai)
    for n in (2, 6):
        messages = [MESSAGES[0], {"role": "user", "content": f"Propose {n} new prefixes as JSON."}]
        reply = ta.propose(messages, n, 1.0, 0)
        assert len(json.loads(reply.texts[0])["prefixes"]) == n
    assert len(chat_requests(fake_openai)) == 2


def test_scripted_replies_and_max_tokens(fake_openai):
    fake_openai.set_chat_replies(['{"prefixes": ["Rate the tweet:"]}'])
    ta = make_ta(fake_openai, max_tokens=64)
    assert ta.propose(MESSAGES, 1, 1.0, 0).texts == ['{"prefixes": ["Rate the tweet:"]}']
    assert chat_requests(fake_openai)[0].body["max_tokens"] == 64


def test_same_request_gives_same_default_reply(fake_openai):
    ta = make_ta(fake_openai)
    assert ta.propose(MESSAGES, 4, 1.0, 1).texts == ta.propose(MESSAGES, 4, 1.0, 1).texts


def test_use_model_switches_the_model(fake_openai):
    ta = make_ta(fake_openai)
    ta.use_model("gpt-4.1-nano")
    assert ta.model_name == "gpt-4.1-nano"
    assert ta.propose(MESSAGES, 4, 1.0, 0).model == "gpt-4.1-nano"
    assert chat_requests(fake_openai)[-1].body["model"] == "gpt-4.1-nano"
    with pytest.raises(UsageError):
        ta.use_model(" ")


# ---- configuration -------------------------------------------------------------------

def test_missing_api_key_is_a_usage_error(monkeypatch, fake_openai):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UsageError) as info:
        OpenAITA("gpt-4o-mini", base_url=fake_openai.base_url)
    assert str(info.value) == ("no API key for the OpenAI TA. Fix: export OPENAI_API_KEY=... "
                               "or pass --ta-backend local")
    assert info.value.exit_code == 2


def test_key_and_base_url_from_environment(monkeypatch, fake_openai):
    monkeypatch.setenv("MY_TA_KEY", fake_openai.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    ta = OpenAITA("gpt-4o-mini", api_key_env="MY_TA_KEY", sleep=_no_sleep)
    assert ta.propose(MESSAGES, 4, 1.0, 0).texts
    assert len(chat_requests(fake_openai)) == 1
    monkeypatch.delenv("MY_TA_KEY")
    with pytest.raises(UsageError, match="export MY_TA_KEY="):
        OpenAITA("gpt-4o-mini", api_key_env="MY_TA_KEY")


# ---- failures ------------------------------------------------------------------------

@pytest.mark.parametrize("status, words", [(401, "rejected the API key (401)"),
                                           (403, "refused"), (404, "no such model")])
def test_auth_and_not_found_fail_at_once(fake_openai, status, words):
    fake_openai.add_fault(status, path="/chat/completions")
    ta = make_ta(fake_openai)
    with pytest.raises(TAUnavailable) as info:
        ta.propose(MESSAGES, 4, 1.0, 0)
    assert words in str(info.value) and fake_openai.base_url in str(info.value)
    assert "Fix:" in str(info.value) and "\n" not in str(info.value)
    assert len(chat_requests(fake_openai)) == 1  # no retries (and _no_sleep was never called)


def test_wrong_key_names_the_fix(fake_openai):
    ta = OpenAITA("gpt-4o-mini", base_url=fake_openai.base_url, api_key="sk-wrong-0000111122223333",
                  sleep=_no_sleep)
    with pytest.raises(TAUnavailable) as info:
        ta.propose(MESSAGES, 4, 1.0, 0)
    assert str(info.value) == (f"OpenAI endpoint {fake_openai.base_url} rejected the API key (401). "
                               "Fix: check OPENAI_API_KEY")


def test_bad_request_is_a_ta_error_without_retries(fake_openai):
    fake_openai.add_fault(400, body={"error": {"message": "Unsupported value: 'temperature' does "
                                                          "not support 0.7 with this model.",
                                               "code": "unsupported_value"}})
    with pytest.raises(TAError) as info:
        make_ta(fake_openai).propose(MESSAGES, 4, 0.7, 0)
    assert not isinstance(info.value, TAUnavailable)
    assert "(400: Unsupported value: 'temperature'" in str(info.value)
    assert "Fix: check ta.model and the sampling settings" in str(info.value)
    assert len(chat_requests(fake_openai)) == 1


def test_unknown_fine_tuned_model_is_404(fake_openai):
    ta = make_ta(fake_openai)
    ta.use_model("ft:gpt-4o-mini:gpta:999")
    with pytest.raises(TAUnavailable, match=r"404.*Fix: check ta.model"):
        ta.propose(MESSAGES, 4, 1.0, 0)


def test_429_waits_for_retry_after_then_succeeds(fake_openai):
    sleeps, retries = [], []
    fake_openai.add_fault(429, retry_after=2.5)
    fake_openai.add_fault(429, retry_after_ms=1500)
    ta = make_ta(fake_openai, sleeps, on_retry=lambda *args: retries.append(args))
    reply = ta.propose(MESSAGES, 4, 1.0, 0)
    assert json.loads(reply.texts[0])["prefixes"]
    assert sleeps == [2.5, 1.5]
    assert len(chat_requests(fake_openai)) == 3
    assert [(r[0], r[1]) for r in retries] == [(1, 2.5), (2, 1.5)]
    assert all(isinstance(r[2], TAError) and "429" in str(r[2]) for r in retries)


def test_429_with_a_very_long_retry_after_is_not_retried(fake_openai):
    fake_openai.add_fault(429, retry_after=3600)
    with pytest.raises(TAUnavailable, match=r"asks to wait 3600s \(429\)"):
        make_ta(fake_openai).propose(MESSAGES, 4, 1.0, 0)
    assert len(chat_requests(fake_openai)) == 1


def test_exhausted_quota_is_not_retried(fake_openai):
    fake_openai.add_fault(429, body={"error": {"message": "You exceeded your current quota.",
                                               "type": "insufficient_quota",
                                               "code": "insufficient_quota", "param": None}})
    with pytest.raises(TAUnavailable, match="no quota left"):
        make_ta(fake_openai).propose(MESSAGES, 4, 1.0, 0)
    assert len(chat_requests(fake_openai)) == 1


def test_500_then_success_backs_off(fake_openai):
    sleeps = []
    fake_openai.add_fault(500)
    reply = make_ta(fake_openai, sleeps).propose(MESSAGES, 4, 1.0, 0)
    assert reply.texts
    assert len(sleeps) == 1 and 0.5 * 0.75 <= sleeps[0] <= 0.5  # base 0.5s minus <=25% jitter
    assert len(chat_requests(fake_openai)) == 2


def test_persistent_503_gives_up_after_the_retry_limit(fake_openai):
    sleeps = []
    fake_openai.add_fault(503, times=100)
    with pytest.raises(TAUnavailable) as info:
        make_ta(fake_openai, sleeps, retries=2).propose(MESSAGES, 4, 1.0, 0)
    assert "kept failing" in str(info.value) and "503" in str(info.value)
    assert "after 2 retries" in str(info.value)
    assert len(chat_requests(fake_openai)) == 3
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0]  # exponential: [0.375, 0.5] then [0.75, 1]


def test_timeout_is_retried(fake_openai):
    sleeps, reasons = [], []
    fake_openai.add_fault(delay_s=30)  # far longer than the client's timeout
    ta = make_ta(fake_openai, sleeps, timeout_s=0.5, on_retry=lambda r, d, e: reasons.append(str(e)))
    assert ta.propose(MESSAGES, 4, 1.0, 0).texts
    assert len(chat_requests(fake_openai)) == 2 and len(sleeps) == 1
    assert "timed out after 0.5s" in reasons[0]


def test_persistent_timeout_is_unavailable(fake_openai):
    fake_openai.add_fault(delay_s=30, times=2)
    with pytest.raises(TAUnavailable, match=r"did not answer .* within 0.5s after 1 retry"):
        make_ta(fake_openai, [], timeout_s=0.5, retries=1).propose(MESSAGES, 4, 1.0, 0)


@pytest.mark.parametrize("body, content_type", [
    ("{not json", "application/json"),
    ("<html>502 Bad Gateway</html>", "text/html"),
    ({"id": "chatcmpl-1", "object": "chat.completion"}, "application/json"),
    ({"id": "chatcmpl-1", "choices": [], "model": "m"}, "application/json"),
    ({"id": "chatcmpl-1", "model": "m",
      "choices": [{"index": 0, "message": {"role": "assistant", "content": None}}]}, "application/json"),
])
def test_malformed_reply_is_a_ta_error_after_retries(fake_openai, body, content_type):
    sleeps = []
    fake_openai.add_fault(body=body, content_type=content_type, times=100)
    with pytest.raises(TAError) as info:
        make_ta(fake_openai, sleeps, retries=2).propose(MESSAGES, 4, 1.0, 0)
    assert not isinstance(info.value, TAUnavailable)
    assert "malformed reply" in str(info.value) and "after 2 retries" in str(info.value)
    assert len(chat_requests(fake_openai)) == 3 and len(sleeps) == 2


def test_null_content_then_good_reply_recovers(fake_openai):
    fake_openai.set_chat_replies([None, '{"prefixes": ["Mood:"]}'])
    assert make_ta(fake_openai, []).propose(MESSAGES, 1, 1.0, 0).texts == ['{"prefixes": ["Mood:"]}']


def test_connection_refused_is_unavailable():
    port = closed_port()
    sleeps = []
    ta = OpenAITA("gpt-4o-mini", base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-local-abcdef123456",
                  retries=2, sleep=sleeps.append)
    with pytest.raises(TAUnavailable) as info:
        ta.propose(MESSAGES, 4, 1.0, 0)
    msg = str(info.value)
    assert msg.startswith(f"cannot reach OpenAI endpoint http://127.0.0.1:{port}/v1")
    assert "after 2 retries" in msg and "Fix: check ta.base_url" in msg
    assert len(sleeps) == 2


# ---- secrets -------------------------------------------------------------------------

def test_api_key_never_appears_in_errors_logs_or_repr(fake_openai, caplog):
    caplog.set_level(logging.DEBUG)
    wrong_key = "sk-proj-WRONGkey0123456789abcdef"
    texts: list[str] = []

    def collect(exc: BaseException) -> None:
        texts.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])

    def on_retry(retry, delay, exc):
        collect(exc)

    # The fake echoes a rejected key in its 401 message, like some proxies do.
    bad = OpenAITA("gpt-4o-mini", base_url=fake_openai.base_url, api_key=wrong_key, sleep=_no_sleep)
    with pytest.raises(TAUnavailable) as info:
        bad.propose(MESSAGES, 4, 1.0, 0)
    collect(info.value)
    # ...so the raw client error does carry it: the check below is meaningful.
    raw = openai.OpenAI(base_url=fake_openai.base_url, api_key=wrong_key, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raw_info:
        raw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert wrong_key in str(raw_info.value)

    good = make_ta(fake_openai, [], retries=1, timeout_s=0.5, on_retry=on_retry)
    scenarios = [
        dict(status=401), dict(status=403), dict(status=404),
        dict(status=429, body={"error": {"message": f"Rate limit for key {fake_openai.api_key}",
                                         "code": "rate_limit_exceeded"}}, times=2),
        dict(status=500, body={"error": {"message": f"boom {fake_openai.api_key}"}}, times=2),
        dict(status=400, body={"error": {"message": f"bad request from {fake_openai.api_key}"}}),
        dict(body="{broken", times=2),
        dict(delay_s=30, times=2),
    ]
    for fault in scenarios:
        fake_openai.add_fault(**fault)
        with pytest.raises(TAError) as info:
            good.propose(MESSAGES, 4, 1.0, 0)
        collect(info.value)
    texts += [repr(good), repr(bad), repr(good.endpoint), caplog.text]
    texts += [r.getMessage() for r in caplog.records]
    assert len(texts) > 20
    for key in (fake_openai.api_key, wrong_key):
        assert not [t for t in texts if key in t]
    # the server text is kept, with the key scrubbed
    assert any("bad request from ***" in t for t in texts)


def test_redact_and_display_url():
    assert redact("key sk-abc123def456 and mysecret", "mysecret") == "key sk-*** and ***"
    assert display_url("https://user:pw@example.com/v1/?token=x") == "https://example.com/v1"


# ---- engine.retry --------------------------------------------------------------------

def test_parse_retry_after_forms():
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


def test_call_with_retry_bounds_and_predicates():
    calls, sleeps, told = [], [], []

    def flaky():
        calls.append(1)
        raise ConnectionError("down")

    policy = RetryPolicy(max_retries=3, base_s=1.0, max_s=3.0, jitter=0.0)
    with pytest.raises(ConnectionError):
        call_with_retry(flaky, policy, is_retryable=lambda e: True, retry_after=lambda e: None,
                        on_retry=lambda *a: told.append(a[:2]), sleep=sleeps.append)
    assert len(calls) == 4 and sleeps == [1.0, 2.0, 3.0] and told == [(1, 1.0), (2, 2.0), (3, 3.0)]

    calls.clear()
    with pytest.raises(ConnectionError):
        call_with_retry(flaky, policy, is_retryable=lambda e: False, sleep=sleeps.append)
    assert len(calls) == 1

    results = iter([ValueError("x"), ValueError("y"), "ok"])

    def twice_then_ok():
        item = next(results)
        if isinstance(item, Exception):
            raise item
        return item

    sleeps.clear()
    assert call_with_retry(twice_then_ok, policy, is_retryable=lambda e: True,
                           retry_after=lambda e: 7.0, sleep=sleeps.append) == "ok"
    assert sleeps == [7.0, 7.0]


def test_backoff_jitter_stays_in_range():
    policy = RetryPolicy(base_s=0.5, max_s=30.0, jitter=0.25)
    rng = random.Random(0)
    for retry in range(1, 10):
        full = min(0.5 * 2 ** (retry - 1), 30.0)
        for _ in range(20):
            assert full * 0.75 <= policy.backoff(retry, rng) <= full


def test_a_stop_abandons_the_request_in_flight(fake_openai):
    """A slow reply (30 s) is abandoned as soon as the user stops; the TA works afterwards."""
    import time

    from engine.errors import StopRun

    fake_openai.add_fault(delay_s=30)
    ta = make_ta(fake_openai, [], timeout_s=60)
    asked = time.monotonic()
    with pytest.raises(StopRun):
        ta.propose(MESSAGES, 4, 1.0, 0, should_stop=lambda: bool(chat_requests(fake_openai)))
    assert time.monotonic() - asked < 20  # generous: the reply itself would take 30 s
    assert ta.propose(MESSAGES, 4, 1.0, 0).texts  # a fresh client answers the next request
    assert ta.propose(MESSAGES, 4, 1.0, 0, should_stop=lambda: False).texts
