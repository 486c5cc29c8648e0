"""Bounded retries with exponential backoff, jitter and server-directed delays.

`call_with_retry(fn, policy, is_retryable=..., retry_after=...)` calls `fn()` until it
returns, the error is not retryable, or `policy.max_retries` retries are spent; then it
re-raises the last error for the caller to translate. `sleep` is injectable so tests
record delays instead of waiting.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Mapping, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3  # retries after the first attempt
    base_s: float = 0.5  # first backoff delay; doubles each retry
    max_s: float = 30.0  # cap on a computed backoff delay
    jitter: float = 0.25  # a computed delay is reduced by a random 0..jitter fraction
    max_retry_after_s: float = 120.0  # a server asking for a longer wait is not retried

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Delay before retry number `retry` (1-based) when the server gave no hint."""
        delay = min(self.base_s * 2.0 ** (retry - 1), self.max_s)
        r = (rng or _rng).random()
        return max(0.0, delay * (1.0 - self.jitter * r))


_rng = random.Random()


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` (seconds or an HTTP date)."""
    if not headers:
        return None
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = lower.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    value = lower.get("retry-after")
    if value:
        try:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                now = time.time() if now is None else now
                return max(0.0, email.utils.mktime_tz(parsed) - now)
        except (TypeError, ValueError, OverflowError):
            return None
    return None


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    is_retryable: Callable[[Exception], bool],
    retry_after: Callable[[Exception], float | None] = lambda exc: None,
    on_retry: Callable[[int, float, Exception], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Call `fn` with up to `policy.max_retries` retries on retryable errors.

    The delay before a retry is the server's `retry_after(exc)` when it gives one (retried
    only if it is at most `policy.max_retry_after_s`), else exponential backoff with jitter.
    `on_retry(retry_number, delay_s, exc)` runs before each sleep. The last error is
    re-raised unchanged.
    """
    retry = 0
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the predicate decides
            if retry >= policy.max_retries or not is_retryable(exc):
                raise
            hinted = retry_after(exc)
            if hinted is not None and hinted > policy.max_retry_after_s:
                raise
            retry += 1
            delay = hinted if hinted is not None else policy.backoff(retry, rng)
            if on_retry is not None:
                on_retry(retry, delay, exc)
            sleep(delay)
