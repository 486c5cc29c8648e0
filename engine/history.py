"""The per-epoch history of (prefix, score) pairs and the dialogue-gradient windows built from it.

A window is w consecutive pairs of the history sorted ascending by score; its target is the
prefix right after it, i.e. the one that scored just above the window. Trained on these, the
TA learns to answer a history with a prefix that scores higher (the "dialogue gradient").
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from engine.errors import ConfigError, DataError
from engine.fsutil import write_text_atomic

Pair = tuple[str, float]
Window = tuple[list[Pair], str]


class History:
    """Unique prefixes with their validation score, in insertion order."""

    def __init__(self, pairs: Iterable[tuple[str, float]] = ()):
        self._scores: dict[str, float] = {}  # dicts keep insertion order
        for prefix, score in pairs:
            self.add(prefix, score)

    def add(self, prefix: str, score: float) -> bool:
        """Record a scored prefix. False (and the old score kept) if it is already present."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError(f"score for prefix {prefix!r} must be a finite number, got {score!r}")
        if prefix in self._scores:
            return False
        self._scores[prefix] = float(score)
        return True

    def __contains__(self, prefix: object) -> bool:
        return prefix in self._scores

    def __len__(self) -> int:
        return len(self._scores)

    def __iter__(self):
        return iter(self._scores.items())

    def __repr__(self) -> str:
        return f"History({list(self._scores.items())!r})"

    def score_of(self, prefix: str) -> float | None:
        return self._scores.get(prefix)

    def prefixes(self) -> list[str]:
        return list(self._scores)

    def sorted(self) -> list[Pair]:
        """Ascending by score; equal scores keep insertion order."""
        return sorted(self._scores.items(), key=lambda pair: pair[1])

    def best(self) -> Pair | None:
        """The highest-scoring pair; on ties the earliest inserted. None when empty."""
        best: Pair | None = None
        for pair in self._scores.items():
            if best is None or pair[1] > best[1]:
                best = pair
        return best

    def top(self, n: int) -> list[Pair]:
        """The n best pairs, best first; equal scores in insertion order."""
        if n <= 0:
            return []
        ranked = sorted(enumerate(self._scores.items()), key=lambda item: (-item[1][1], item[0]))
        return [pair for _, pair in ranked[:n]]

    def to_list(self) -> list[list]:
        """JSON-safe ``[[prefix, score], ...]`` in insertion order."""
        return [[prefix, score] for prefix, score in self._scores.items()]

    @classmethod
    def from_list(cls, data: Any) -> "History":
        """Inverse of `to_list`; malformed data raises DataError."""
        fix = "the saved session is damaged; start a new session or restore its database from a backup"
        if not isinstance(data, (list, tuple)):
            raise DataError(f"saved history must be a list of [prefix, score] pairs, got {type(data).__name__}",
                            fix)
        history = cls()
        for i, item in enumerate(data):
            if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
                    and isinstance(item[1], (int, float)) and not isinstance(item[1], bool)
                    and math.isfinite(item[1])):
                raise DataError(f"saved history item {i} is not a [prefix, score] pair: {item!r}", fix)
            history.add(item[0], item[1])
        return history


def build_windows(sorted_pairs: list[Pair], w: int) -> list[Window]:
    """Sliding windows of `w` consecutive pairs over an ascending history.

    Window i is ``sorted_pairs[i:i+w]`` and its target is ``sorted_pairs[i+w][0]``, so there
    are ``max(0, len(sorted_pairs) - w)`` windows.
    """
    if w < 1:
        raise ConfigError(f"invalid window size {w}", "set loop.window to a number greater than 0")
    pairs = [(p, float(s)) for p, s in sorted_pairs]
    return [(pairs[i:i + w], pairs[i + w][0]) for i in range(max(0, len(pairs) - w))]


def cap_windows(windows: list, max_windows: int) -> list:
    """At most `max_windows` windows: the last ones (nearest the best scores), in ascending order."""
    if max_windows < 1:
        raise ConfigError(f"invalid window cap {max_windows}",
                          "set finetune.max_windows to a number greater than 0")
    return list(windows[-max_windows:])


def write_jsonl(examples: list[dict], path: Path) -> None:
    """Write one JSON object per line (UTF-8), atomically (engine.fsutil): if anything fails,
    a value that is not JSON included, the old file is left untouched."""
    text = "".join(json.dumps(example, ensure_ascii=False, allow_nan=False) + "\n"
                   for example in examples)
    write_text_atomic(Path(path), text)


def read_jsonl(path: Path) -> list[dict]:
    """Objects of a JSONL file; blank lines are skipped, malformed lines raise DataError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"JSONL file {str(path)!r} does not exist", "check the path") from None
    except UnicodeDecodeError:
        raise DataError(f"JSONL file {str(path)!r} is not UTF-8 text", "re-save it as UTF-8") from None
    out: list[dict] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{str(path)!r} line {number} is not valid JSON ({exc.msg})",
                            "fix or delete that line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{str(path)!r} line {number} is a JSON {type(obj).__name__}, not an object",
                            "write one JSON object per line") from None
        out.append(obj)
    return out
