"""Errors that reach users as one clear line: the problem, then the fix.

`UsageError` (exit 2) is bad input the user can correct before running; `GptaError`
(exit 1) is a failure at run time. Front ends print `str(err)` and exit with `err.exit_code`.
"""

from __future__ import annotations

import re

# C0 and C1 control characters except tab and newline, DEL, and the Unicode bidirectional
# overrides: none of them belongs in text shown to a user, and ESC/BEL reach the terminal.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8(text: str) -> bytes:
    """`text` as UTF-8, any lone surrogate (a `\\ud800` JSON escape from a file or an
    endpoint: a Python str no UTF-8 writer takes) written as U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return without_lone_surrogates(text).encode("utf-8")


def without_lone_surrogates(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (in a Python str every surrogate
    code point is lone: JSON's escaped pairs decode to one character)."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def strip_control(text: object) -> str:
    """`text` as a string without control characters (tab and newline are kept)."""
    return _CONTROL.sub("", str(text))


class GptaError(Exception):
    """A failure a user can act on. `str()` is one line: "problem. Fix: fix"."""

    exit_code = 1

    def __init__(self, problem: str, fix: str | None = None):
        # Errors echo file contents, paths and TA replies: never control bytes, one line.
        self.problem = " ".join(strip_control(problem).split())
        self.fix = " ".join(strip_control(fix).split()) if fix else None
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.problem}. Fix: {self.fix}" if self.fix else self.problem


class UsageError(GptaError):
    """Bad input (config, dataset, model path): exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    pass


class DataError(UsageError):
    pass


class ModelError(UsageError):
    pass


class TAError(GptaError):
    """The teaching assistant failed (nothing usable after retries, bad reply, ...)."""


class TAUnavailable(TAError):
    """The TA endpoint cannot be used right now (unreachable, 401, persistent 5xx)."""


class BudgetExhausted(TAError):
    """The session's TA token/cost budget is spent; no further TA calls are made."""


class StopRun(Exception):
    """Raised inside the engine when the user asked to stop; not an error."""
