"""Control arms: what a GPTA result is compared with, besides the no-prefix baseline.

* ``random-prefix`` — `RandomWordsTA` answers every TA request with prefixes made of random
  words, so the run spends exactly GPTA's scoring and selection budget (k prefixes per epoch,
  l per request, the same best-of-k choice) on prefixes that carry no task knowledge. A GPTA
  gain that this arm matches comes from selecting the luckiest of k prefixes, not from the TA.
* ``static-prefix`` — `static_instruction` is one fixed, hand-written task instruction built
  from the label names, used every epoch with no TA and no selection among prefixes. A GPTA
  gain that this arm matches comes from "any sensible instruction".
* ``frozen-ta`` needs no code here: it is GPTA with the fine-tune step skipped.
"""

from __future__ import annotations

import random
import time
from typing import Iterable

from engine.prompts import assistant_message
from engine.ta.base import TAReply, TeachingAssistant

#: Word counts of random prefixes: uniform over this range, mean 16. Matched to what the
#: default local TA writes: in the first GPTA and frozen-TA runs of docs/results/twitter-controls
#: its scored prefixes had median 15-17 words, 10th-90th percentiles 8-28 (mean 16.2 and
#: 17.4). The comparison report prints the measured words per prefix of every arm.
RANDOM_PREFIX_WORDS = (8, 24)

#: Words too common or too task-like to count as "random" (kept out of the vocabulary).
_STOP = frozenset("""the and for are but not you all any can had her was one our out day get has
him his how man new now old see two way who boy did its let put say she too use positive negative
neutral sentiment label classify classification tweet text review""".split())


def word_vocabulary(tokens: Iterable[str]) -> list[str]:
    """Whole lower-case ASCII words of 3-12 letters from a tokenizer's vocabulary, sorted."""
    words = set()
    for token in tokens:
        word = token.lstrip("Ġ▁")  # BPE / sentencepiece word-start markers
        if word.startswith("##") or not (3 <= len(word) <= 12):
            continue
        if word.isascii() and word.isalpha() and word.islower() and word not in _STOP:
            words.add(word)
    return sorted(words)


class RandomWordsTA(TeachingAssistant):
    """A stand-in TA whose prefixes are random words (the random-prefix control arm).

    Each request's words depend only on the seed the engine passes (derived from the run seed
    and the request id), so runs and resumes are reproducible.
    """

    backend = "random-words"

    def __init__(self, vocabulary: list[str], lengths: tuple[int, int] = RANDOM_PREFIX_WORDS):
        if len(vocabulary) < 100:
            from engine.errors import ModelError

            raise ModelError(f"the student's tokenizer has only {len(vocabulary)} whole words "
                             "to draw random prefixes from",
                             "use a student with a word-level vocabulary for the random-prefix arm")
        self.vocabulary = list(vocabulary)
        self.lengths = lengths

    @property
    def model_name(self) -> str:
        return f"random-words({len(self.vocabulary)})"

    def prefix(self, rng: random.Random) -> str:
        n = rng.randint(*self.lengths)
        words = [rng.choice(self.vocabulary) for _ in range(n)]
        return (" ".join(words)).capitalize() + "."

    def propose(self, messages: list[dict], n: int, temperature: float, seed: int,
                should_stop=None) -> TAReply:
        started = time.perf_counter()
        rng = random.Random(f"gpta-random-prefix|{seed}")
        prefixes = [self.prefix(rng) for _ in range(max(1, int(n)))]
        return TAReply(texts=[assistant_message(prefixes)], usage={},
                       latency_s=time.perf_counter() - started, model=self.model_name)

    def use_model(self, model_ref: str) -> None:  # nothing to tune
        return None


def static_instruction(task: str, label_names: list[str]) -> str:
    """One fixed, hand-written instruction for the task, built from its label names."""
    from engine.prompts import task_name

    names = [" ".join(str(n).split()) for n in label_names if str(n).strip()]
    if task == "classification" and names:
        choices = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        return f"Classify the text as {choices}."
    if task == "multiple_choice":
        return "Read the passage and choose the option that answers the question."
    if task in ("extractive_qa", "qa"):
        return "Find the span of the context that answers the question."
    if task == "summarization":
        return "Summarize the main points of the document in one or two sentences."
    return f"Solve this {task_name(task)} task for the text."
