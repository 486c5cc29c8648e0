"""A teaching assistant served by an OpenAI-compatible chat-completions endpoint.

Works with api.openai.com and with local OpenAI-compatible servers (llama.cpp, vLLM,
LM Studio, Ollama) through `base_url`. The `openai` client's own retries are off; transient
failures (timeouts, connection errors, 429, 5xx, malformed replies) are retried here with
`engine.retry`, and everything else becomes a one-line `TAUnavailable` / `TAError`.

The API key lives only inside the `openai` client: it never appears in a message, log
record, event or repr (`redact()` scrubs every text that leaves this module).

`OpenAIEndpoint` (client + retries + error translation) is shared with
`engine.finetune.openai_ft`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from typing import Any, Callable, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import openai

from engine.config import strip_url_credentials
from engine.errors import (GptaError, StopRun, TAError, TAUnavailable, UsageError,
                           without_lone_surrogates)
from engine.retry import RetryPolicy, call_with_retry, parse_retry_after
from engine.ta.base import StopCheck, TAReply, TeachingAssistant

log = logging.getLogger("gpta.ta.openai")

T = TypeVar("T")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
_KEY_LIKE = re.compile(r"\b(sk|rk|sess)-[A-Za-z0-9_\-*.]{6,}")


class MalformedReply(Exception):
    """The endpoint answered 2xx with something that is not the expected object."""


def redact(text: str, secret: str | None) -> str:
    """`text` without `secret` and without anything that looks like an OpenAI key."""
    if secret:
        text = text.replace(secret, "***")
    return _KEY_LIKE.sub(r"\1-***", text)


def display_url(url: str) -> str:
    """The URL without user:password@ and without a query string (safe to show)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def resolve_base_url(base_url: str = "") -> str:
    return base_url or os.environ.get("OPENAI_BASE_URL", "") or DEFAULT_BASE_URL


def resolve_api_key(api_key: str, api_key_env: str, problem: str, fix: str) -> str:
    """The key from the argument, else from the environment variable `api_key_env`."""
    key = api_key or (os.environ.get(api_key_env, "") if api_key_env else "")
    if not key.strip():
        raise UsageError(problem, fix)
    return key.strip()


def _status(exc: Exception) -> int | None:
    return getattr(exc, "status_code", None) if isinstance(exc, openai.APIStatusError) else None


def _server_message(exc: Exception, limit: int = 160) -> str:
    """The error message the server sent, if any, shortened to one line."""
    body = getattr(exc, "body", None)
    msg = ""
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = str(err.get("message", "")) if isinstance(err, dict) else str(err)
    elif isinstance(body, str):
        msg = body
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def is_retryable(exc: Exception) -> bool:
    """Timeouts, connection errors, 408/409/429 (not an exhausted quota), 5xx, bad replies."""
    if isinstance(exc, (openai.APIConnectionError, MalformedReply,
                        openai.APIResponseValidationError)):
        return True
    status = _status(exc)
    if status is None:
        return False
    if status == 429:
        return getattr(exc, "code", None) != "insufficient_quota"
    return status in (408, 409) or status >= 500


def retry_after(exc: Exception) -> float | None:
    """The delay the server asked for (`retry-after-ms` / `retry-after`), if any."""
    response = getattr(exc, "response", None)
    if isinstance(exc, openai.APIStatusError) and response is not None:
        return parse_retry_after(response.headers)
    return None


def short_reason(exc: Exception, timeout_s: float) -> str:
    """A few words for a failed attempt (safe: no server text that might echo secrets)."""
    if isinstance(exc, openai.APITimeoutError):
        return f"timed out after {timeout_s:g}s"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        return "connection failed" + (f" ({type(cause).__name__})" if cause else "")
    if isinstance(exc, (MalformedReply, openai.APIResponseValidationError)):
        return "malformed reply"
    status = _status(exc)
    if status == 429:
        return "rate limited (429)"
    if status is not None:
        return f"HTTP {status}"
    return type(exc).__name__


class OpenAIEndpoint:
    """An `openai.OpenAI` client with bounded retries and one-line errors.

    `what` names the service in messages ("OpenAI endpoint"); `key_hint` is the fix for a
    rejected key ("check OPENAI_API_KEY").
    """

    def __init__(self, *, base_url: str, api_key: str, key_hint: str, timeout_s: float,
                 retries: int, sleep: Callable[[float], None] = time.sleep,
                 on_retry: Callable[[int, float, Exception], None] | None = None,
                 what: str = "OpenAI endpoint", policy: RetryPolicy | None = None):
        self.url = resolve_base_url(base_url)
        self.shown_url = display_url(self.url)
        # Credentials in the URL (user:password@host) go to the HTTP client as basic auth, not
        # in the URL it logs ("HTTP Request: POST <url>") and puts in its errors.
        parts = urlsplit(self.url)
        self._password = unquote(parts.password or "")
        self._auth: tuple[str, str] | None = None
        if parts.username is not None or parts.password is not None:
            self.url = strip_url_credentials(self.url)
            self._auth = (unquote(parts.username or ""), self._password)
        self.what = what
        self.key_hint = key_hint
        self.timeout_s = float(timeout_s)
        self.policy = policy or RetryPolicy(max_retries=max(0, int(retries)))
        self.sleep = sleep
        self.on_retry = on_retry
        self.client = self._new_client(api_key)

    def _new_client(self, api_key: str) -> openai.OpenAI:
        """A client for this endpoint; credentials from the URL go in as basic auth (a fresh
        HTTP client each time: a closed one cannot be reused)."""
        kwargs: dict[str, Any] = {}
        if self._auth is not None:
            kwargs["http_client"] = openai.DefaultHttpxClient(auth=self._auth, timeout=self.timeout_s)
        return openai.OpenAI(base_url=self.url, api_key=api_key, max_retries=0,
                             timeout=self.timeout_s, **kwargs)

    def call_until_stopped(self, should_stop: StopCheck | None, action: str,
                           fn: Callable[[openai.OpenAI], T], check: Callable[[T], T] | None = None,
                           *, poll_s: float = 0.1, **fixes: str) -> T:
        """`call(...)` in a worker thread, polling `should_stop()` every `poll_s` seconds.

        On stop, the in-flight request (or retry wait) is abandoned: the client is closed,
        which aborts its open connections, a fresh client takes its place, and StopRun is
        raised at once. The abandoned thread ends on its own and its outcome is dropped.
        """
        if should_stop is None:
            return self.call(action, fn, check, **fixes)
        box: dict[str, Any] = {}
        done = threading.Event()
        client = self.client

        def work() -> None:
            try:
                box["value"] = self.call(action, lambda _c: fn(client), check, **fixes)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc
            finally:
                done.set()

        worker = threading.Thread(target=work, name="gpta-ta-request", daemon=True)
        worker.start()
        while not done.wait(poll_s):
            if should_stop():
                self.client = self._new_client(client.api_key)
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - closing an abandoned client is best effort
                    log.debug("closing the abandoned client failed", exc_info=True)
                raise StopRun()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def __repr__(self) -> str:
        return f"OpenAIEndpoint(url={self.shown_url!r}, timeout_s={self.timeout_s:g})"

    def redact(self, text: str) -> str:
        """`text` with this endpoint's key and URL password (and key-like strings) scrubbed."""
        return redact(redact(text, getattr(self.client, "api_key", None)), self._password)

    def call(self, action: str, fn: Callable[[openai.OpenAI], T],
             check: Callable[[T], T] | None = None, *, not_found_fix: str = "",
             bad_request_fix: str = "") -> T:
        """Run `fn(client)` (then `check(result)`, which raises MalformedReply) with retries.

        Raises TAUnavailable / TAError with a one-line message; never the raw client error.
        """

        def attempt() -> T:
            try:
                result = fn(self.client)
            except json.JSONDecodeError as exc:  # Content-Type JSON, body not JSON
                raise MalformedReply(f"body is not JSON ({exc.msg})") from None
            return check(result) if check is not None else result

        def notify(retry: int, delay: float, exc: Exception) -> None:
            reason = short_reason(exc, self.timeout_s)
            log.warning("%s %s: %s; retry %d/%d in %.1fs", self.what, action, reason, retry,
                        self.policy.max_retries, delay)
            if self.on_retry is not None:
                self.on_retry(retry, delay, TAError(f"{self.what} {action}: {reason}"))

        try:
            return call_with_retry(attempt, self.policy, is_retryable=is_retryable,
                                   retry_after=retry_after, on_retry=notify, sleep=self.sleep)
        except (openai.OpenAIError, MalformedReply) as exc:
            err = self.translate(exc, action, not_found_fix=not_found_fix,
                                 bad_request_fix=bad_request_fix)
        raise err from None

    def translate(self, exc: Exception, action: str, *, not_found_fix: str = "",
                  bad_request_fix: str = "") -> GptaError:
        """One-line TAUnavailable/TAError for a failed request (secrets redacted)."""
        where, n = f"{self.what} {self.shown_url}", self.policy.max_retries
        after = f" after {n} retr{'y' if n == 1 else 'ies'}" if n and is_retryable(exc) else ""
        status, server = _status(exc), self.redact(_server_message(exc))
        detail = f": {server}" if server else ""

        def make(cls: type[GptaError], problem: str, fix: str) -> GptaError:
            return cls(self.redact(problem), self.redact(fix))

        if isinstance(exc, openai.APITimeoutError):
            return make(TAUnavailable, f"{where} did not answer {action} within "
                                       f"{self.timeout_s:g}s{after}",
                        "raise ta.timeout_s, or check that the server is up and not overloaded")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            why = " ".join(str(cause).split())[:120] if cause else "connection error"
            return make(TAUnavailable, f"cannot reach {where} ({why}){after}",
                        "check ta.base_url / OPENAI_BASE_URL and that the server is running")
        if isinstance(exc, (MalformedReply, openai.APIResponseValidationError)):
            what = str(exc) if isinstance(exc, MalformedReply) else "unexpected schema"
            return make(TAError, f"{where} sent a malformed reply to {action} ({what}){after}",
                        "check that the base URL points to an OpenAI-compatible API")
        if status == 401:
            return make(TAUnavailable, f"{where} rejected the API key (401)", self.key_hint)
        if status == 403:
            return make(TAUnavailable, f"{where} refused {action} (403{detail})",
                        "check that the API key's project may use this model and endpoint")
        if status == 404:
            return make(TAUnavailable, f"{where} has no such model or resource for {action} "
                                       f"(404{detail})",
                        not_found_fix
                        or "check the model name and the base URL (it usually ends in /v1)")
        if status == 429 and getattr(exc, "code", None) == "insufficient_quota":
            return make(TAUnavailable, f"{where} says the account has no quota left (429{detail})",
                        "add credits or use another key, then resume the session")
        if status == 429:
            hinted = retry_after(exc)
            if hinted is not None and hinted > self.policy.max_retry_after_s:
                return make(TAUnavailable, f"{where} is rate limiting {action} and asks to wait "
                                           f"{hinted:.0f}s (429)",
                            "wait, then resume the session")
            return make(TAUnavailable, f"{where} kept rate limiting {action} (429){after}",
                        "wait a minute and resume, or lower loop.l to send fewer requests")
        if status is not None and status >= 500:
            return make(TAUnavailable, f"{where} kept failing {action} ({status}{detail}){after}",
                        "try again later and resume the session")
        if status is not None:
            return make(TAError, f"{where} rejected {action} ({status}{detail})",
                        bad_request_fix or "check the request settings and the API's documentation")
        return make(TAError, f"{where} failed {action} ({type(exc).__name__})",
                    "check the endpoint and try again")

    def close(self) -> None:
        self.client.close()


def _chat_texts(response: Any) -> Any:
    """Check a chat completion: at least one choice with string content."""
    choices = getattr(response, "choices", None)
    if isinstance(response, (str, bytes)) or choices is None:
        raise MalformedReply("not a chat completion")
    if not isinstance(choices, list) or not choices:
        raise MalformedReply("no choices")
    contents = [getattr(getattr(c, "message", None), "content", None) for c in choices]
    if not any(isinstance(c, str) and c.strip() for c in contents):
        raise MalformedReply("null or empty message content")
    return response


def _usage(response: Any) -> dict:
    usage = getattr(response, "usage", None)
    out = {}
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = getattr(usage, name, None)
        if isinstance(value, int):
            out[name] = value
    return out


class OpenAITA(TeachingAssistant):
    """A TA behind an OpenAI-compatible `/chat/completions` endpoint."""

    backend = "openai"

    def __init__(self, model: str, *, base_url: str = "", api_key: str = "",
                 api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0, retries: int = 3,
                 top_p: float = 1.0, max_tokens: int | None = None,
                 on_retry: Callable[[int, float, Exception], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        """`on_retry(retry, delay_s, TAError)` is told about every retry (a safe one-line
        reason, no server text). `sleep` is injectable for tests."""
        if not model:
            raise UsageError("no model given for the OpenAI TA", "pass --ta-model or set ta.model")
        env_hint = api_key_env or "OPENAI_API_KEY"
        key = resolve_api_key(api_key, api_key_env, "no API key for the OpenAI TA",
                              f"export {env_hint}=... or pass --ta-backend local")
        self._model = model
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.endpoint = OpenAIEndpoint(base_url=base_url, api_key=key, key_hint=f"check {env_hint}",
                                       timeout_s=timeout_s, retries=retries, sleep=sleep,
                                       on_retry=on_retry)

    def __repr__(self) -> str:
        return f"OpenAITA(model={self._model!r}, base_url={self.endpoint.shown_url!r})"

    @property
    def model_name(self) -> str:
        return self._model

    def use_model(self, model_ref: str) -> None:
        """Answer with another model from now on, e.g. a fine-tuned "ft:..." id."""
        if not model_ref or not model_ref.strip():
            raise UsageError("empty model id for the OpenAI TA", "pass the fine-tuned model id")
        self._model = model_ref.strip()

    def propose(self, messages: list[dict], n: int, temperature: float, seed: int, *,
                should_stop: StopCheck | None = None) -> TAReply:
        """One chat completion; the prompt in `messages` already asks for `n` prefixes.

        `should_stop()` turning True abandons the request in flight (StopRun within ~0.1 s).
        """
        kwargs: dict[str, Any] = {"model": self._model, "messages": messages,
                                  "temperature": temperature, "top_p": self.top_p, "seed": seed}
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        started = [0.0]

        def create(client: openai.OpenAI) -> Any:
            started[0] = time.monotonic()
            return client.chat.completions.create(**kwargs)

        response = self.endpoint.call_until_stopped(
            should_stop, f"chat completion for {self._model}", create, _chat_texts,
            not_found_fix="check ta.model (a fine-tuned id must belong to this key's "
                          "organisation) and ta.base_url",
            bad_request_fix="check ta.model and the sampling settings (ta.temperature, ta.top_p, "
                            "max tokens); some models accept only temperature 1")
        latency = time.monotonic() - started[0]
        contents = [getattr(c.message, "content", None) for c in response.choices]
        # A reply that echoes the key (a proxy's debug output, a prompt-injected model) is
        # redacted before it is stored, shown or parsed.
        texts = [self.endpoint.redact(without_lone_surrogates(c)) for c in contents
                 if isinstance(c, str) and c.strip()]
        return TAReply(texts=texts, usage=_usage(response), latency_s=latency,
                       model=str(getattr(response, "model", "") or self._model))

    def close(self) -> None:
        self.endpoint.close()
