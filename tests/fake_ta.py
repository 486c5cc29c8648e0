"""The one deterministic in-test teaching assistant.

Prefix j of a request is a few words of the test's own word bank, chosen by
r = (seed + 11 j) mod 997, followed by r; so the same request seed always gives the same
prefixes, and different seeds give different ones. Each test module passes a word bank that
its generated data does not use, so a prefix never leaks a training text.
"""

from __future__ import annotations

import json
from typing import Sequence

from engine.ta.base import TAReply, TeachingAssistant

GARBAGE = "{{{ not json ```"


class SeededTA(TeachingAssistant):
    """Answers every request with n JSON prefixes derived from the request seed.

    lead_word: start every prefix with the third word of the request's user message (the
        description's first word), so a description change shows in the prefixes;
    garbage_first / always_garbage: answer the first requests (or all) with unparsable text;
    prompt_tokens: tokens billed per request (None: the user message's word count);
    tokens_per_prefix: completion tokens billed per prefix.
    """

    backend = "fake"

    def __init__(self, words: Sequence[str], *, lead_word: bool = False, garbage_first: int = 0,
                 always_garbage: bool = False, prompt_tokens: int | None = 50,
                 tokens_per_prefix: int = 10):
        self.words = list(words)
        self.lead_word = lead_word
        self.garbage_first = garbage_first
        self.always_garbage = always_garbage
        self.prompt_tokens = prompt_tokens
        self.tokens_per_prefix = tokens_per_prefix
        self.calls: list[list[dict]] = []
        self.model = "fake-ta"

    @property
    def model_name(self) -> str:
        return self.model

    def prefix(self, seed: int, j: int, lead: str = "") -> str:
        r = (seed + 11 * j) % 997
        words = [self.words[(r + 5 * i) % len(self.words)] for i in range(2 + r % 4)]
        return " ".join([*([lead] if lead else []), *words, str(r)])

    def propose(self, messages, n, temperature, seed, **_):
        self.calls.append(messages)
        user = messages[-1]["content"]
        prompt = len(user.split()) if self.prompt_tokens is None else self.prompt_tokens
        if self.always_garbage or len(self.calls) <= self.garbage_first:
            return TAReply(texts=[GARBAGE], usage={"prompt_tokens": prompt, "completion_tokens": 3,
                                                   "total_tokens": prompt + 3})
        lead = ""
        if self.lead_word:
            parts = user.split()
            lead = parts[2].strip(".:,").lower() if len(parts) > 2 else "x"
        completion = self.tokens_per_prefix * n
        return TAReply(texts=[json.dumps({"prefixes": [self.prefix(seed, j, lead) for j in range(n)]})],
                       usage={"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion}, model=self.model)

    def use_model(self, model_ref):
        self.model = model_ref
