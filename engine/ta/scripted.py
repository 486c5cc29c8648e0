"""A deterministic, offline teaching assistant for tests and demos.

`ScriptedTA` writes short, plausible prefixes from a small word bank plus words taken from
the dataset description in the latest user message, so editing the description visibly
changes what it proposes. Its output depends only on (its seed, the request's seed, the
messages, n and the tuned model it was switched to); nothing is random across runs.

Knobs for exercising the engine's error paths:

* ``garbage_every=k``: every k-th call returns unparsable replies (the engine retries);
* ``fail_after=N``: every call after the N-th raises `TAUnavailable` (a provider outage).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from pathlib import Path

from engine.errors import StopRun, TAUnavailable
from engine.ta.base import TAReply, TeachingAssistant

VERBS = ("Classify", "Decide", "Judge", "Determine", "Identify", "Name", "Assess", "Work out")
ASPECTS = ("the sentiment", "the tone", "the overall feeling", "the attitude", "the opinion",
           "the mood", "the stance", "the emotion")
OBJECTS = ("of this text", "of the following text", "the writer expresses", "of this message",
           "behind these words", "of the author")
TAILS = ("", " carefully", " in one word", " as the author meant it", " before you answer",
         " from the wording alone")
#: Extra endings a tuned (use_model) TA mixes in: its word choice visibly shifts.
TUNED_TAILS = (" precisely", " with the labels in mind", " step by step", " from its strongest cue")

#: Replies no parser can turn into a prefix (see tests/test_parsing.py).
GARBAGE = ("", "{", '{"prefixes": [', "```json\n```", '{"prefixes": []}', "null", "!!!???")

STOPWORDS = frozenset("""
a an and are as at be by each for from has have in into is it its of on or that the their
this to was were which with about labelled labeled label labels dataset description text texts
""".split())

_DESCRIPTION = re.compile(r"description\s*:\s*(.+)", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")


def description_of(messages: list[dict]) -> str:
    """The dataset description in the latest user message ("Dataset description: ..."), or
    that whole message when it names none."""
    user = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
    match = _DESCRIPTION.search(user)
    return match.group(1).strip() if match else user


def description_words(description: str, limit: int = 12) -> list[str]:
    """Content words of the description, in order, without repeats."""
    words: list[str] = []
    for raw in _WORD.findall(description):
        word = raw.lower().strip("'-")
        if len(word) >= 4 and word not in STOPWORDS and word not in words:
            words.append(word)
    return words[:limit] or ["text"]


def _count_words(texts) -> int:
    return sum(len(str(t).split()) for t in texts)


class ScriptedTA(TeachingAssistant):
    """Deterministic prefixes from a word bank and the dataset description (see module doc)."""

    backend = "scripted"

    def __init__(self, seed: int = 0, garbage_every: int = 0, fail_after: int | None = None):
        self.seed = int(seed)
        self.garbage_every = max(0, int(garbage_every))
        self.fail_after = fail_after
        self.calls = 0
        self.tuned_ref = ""

    @property
    def model_name(self) -> str:
        if not self.tuned_ref:
            return "scripted"
        return f"scripted+{Path(self.tuned_ref).name or self.tuned_ref}"

    def use_model(self, model_ref: str) -> None:
        """Remember the tuned model ("" or "scripted" switches back to the base)."""
        ref = (model_ref or "").strip()
        self.tuned_ref = "" if ref in ("", "scripted") else ref

    def _rng(self, messages: list[dict], n: int, seed: int) -> random.Random:
        key = json.dumps([self.seed, int(seed), int(n), self.tuned_ref, messages],
                         sort_keys=True, ensure_ascii=False, default=str)
        return random.Random(hashlib.sha256(key.encode("utf-8")).digest())

    def _prefix(self, rng: random.Random, words: list[str]) -> str:
        tails = TAILS + TUNED_TAILS if self.tuned_ref else TAILS
        focus = rng.sample(words, k=min(len(words), rng.choice((1, 1, 2))))
        about = " and ".join(focus)
        head = f"{rng.choice(VERBS)} {rng.choice(ASPECTS)} {rng.choice(OBJECTS)}"
        return f"{head} about {about}{rng.choice(tails)}."

    def propose(self, messages: list[dict], n: int, temperature: float, seed: int, *,
                should_stop=None) -> TAReply:
        started = time.perf_counter()
        if should_stop is not None and should_stop():
            raise StopRun()
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise TAUnavailable(f"scripted TA: simulated outage after {self.fail_after} calls",
                                "this TA exists for tests; resume the session, or use ta.backend = local")
        rng = self._rng(messages, n, seed)
        if self.garbage_every and self.calls % self.garbage_every == 0:
            texts = [rng.choice(GARBAGE) for _ in range(max(1, n))]
        else:
            words = description_words(description_of(messages))
            prefixes: list[str] = []
            for _ in range(50 * max(1, n)):  # the bank is large; duplicates are rare
                if len(prefixes) == n:
                    break
                candidate = self._prefix(rng, words)
                if candidate not in prefixes:
                    prefixes.append(candidate)
            texts = [json.dumps({"prefixes": [p]}) for p in prefixes]
        prompt_tokens = _count_words(m.get("content", "") for m in messages)
        completion_tokens = _count_words(texts)
        return TAReply(texts=texts,
                       usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                              "total_tokens": prompt_tokens + completion_tokens},
                       latency_s=time.perf_counter() - started, model=self.model_name)
