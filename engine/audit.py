"""Exposure audit: did any dataset example reach the teaching assistant?

GPTA's promise is that the TA (an LLM, often a paid API) never sees the training data:
in `gpta` mode it sees only the dataset description, the prefixes and their scores; in
`gpta-data` mode it also sees a few declared exemplars. `audit_exposure` checks that promise
against what was actually sent (request messages, fine-tune files):

* **verbatim**: a dataset text appears in a sent text, comparing case-folded text with runs
  of whitespace collapsed;
* **span**: a dataset text shares `min_words` or more consecutive words with a sent text.
  Words are runs of letters/digits (``\\w+``), case-folded, so quoting, JSON escaping and
  punctuation do not hide a copy.

Every example of every split (train, validation, test) is indexed once: each window of
`min_words` words of a dataset text goes into a dict keyed by the window's hash, and each
sent text is scanned once against it, so the cost is linear in the total number of words
(tens of thousands of tweets against thousands of requests take seconds). Identical sent
texts (the system prompt of every request) are scanned once.

What counts:

* Only dataset texts are indexed. The prompt template and the description are not dataset
  texts, so their own words never count as exposure.
* A dataset text that *contains* a phrase of `min_words`+ words that also occurs in the
  description or the template is a genuine shared span and is reported; it stays
  unexpected (the audit cannot know whether the description was copied from the data).
  Pass those texts as `public_texts` to get a note saying where else the words occur.
* Texts shorter than `min_verbatim_words` words ("@united thanks") cannot be told apart
  from ordinary phrases and are not audited; `AuditReport.too_short` counts them. Texts of
  at least that many but fewer than `min_words` words are audited verbatim only.
* `declared` lists the exemplar texts of gpta-data mode. Their exposure is *expected*. An
  exposure of another example is also expected when every shared run of words lies inside
  a declared exemplar (near-duplicate tweets, retweets of an exemplar). Everything else is
  *unexpected*.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from engine.data import SPLITS, TaskData
from engine.errors import UsageError

MIN_VERBATIM_WORDS = 3
_WORD = re.compile(r"\w+")
_LABEL_KEYS = frozenset({"label", "labels"})
_POS_BITS = 32  # an index entry packs (example id, word position) into one int


def normalise(text: str) -> str:
    """Case-folded text with every run of whitespace replaced by one space."""
    return " ".join(text.casefold().split())


def words(text: str) -> list[str]:
    """The case-folded words (runs of letters, digits, underscore) of `text`."""
    return _WORD.findall(text.casefold())


# --------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------


@dataclass
class Hit:
    """Where one example was found: a place, how, and the longest shared run of words."""

    where: str
    kind: str          # "verbatim" | "span"
    words: int         # length of the longest shared run (all words of the text if verbatim)
    span: str          # that run, as words joined by spaces
    runs: list[str] = field(default_factory=list, repr=False)  # every shared run in this place

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "kind": self.kind, "words": self.words, "span": self.span}


@dataclass
class Exposure:
    """One dataset example found in what was sent, with every place it was found."""

    split: str
    index: int         # position in its split
    text: str
    hits: list[Hit]
    expected: bool = False
    reason: str = ""   # why it is expected: "declared exemplar" | "inside a declared exemplar"
    note: str = ""     # where else the shared words occur (description, template)

    @property
    def kind(self) -> str:
        return "verbatim" if any(h.kind == "verbatim" for h in self.hits) else "span"

    @property
    def words(self) -> int:
        return max(h.words for h in self.hits)

    @property
    def places(self) -> list[str]:
        return list(dict.fromkeys(h.where for h in self.hits))

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "index": self.index, "text": self.text, "kind": self.kind,
                "words": self.words, "expected": self.expected, "reason": self.reason,
                "note": self.note, "hits": [h.to_dict() for h in self.hits]}


@dataclass
class AuditReport:
    expected: list[Exposure]
    unexpected: list[Exposure]
    min_words: int
    sent: int                  # sent texts scanned
    examples: int              # dataset examples (texts) indexed
    too_short: int             # examples with fewer than min_verbatim_words words: not audited
    declared: int              # declared exemplar texts
    declared_unseen: list[str] = field(default_factory=list)  # declared, auditable, never found

    @property
    def ok(self) -> bool:
        """No unexpected exposure (in gpta mode nothing is declared, so: no exposure at all)."""
        return not self.unexpected

    @property
    def exposures(self) -> list[Exposure]:
        return [*self.unexpected, *self.expected]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "min_words": self.min_words, "sent_texts": self.sent,
                "examples": self.examples, "too_short": self.too_short,
                "declared": self.declared, "declared_unseen": list(self.declared_unseen),
                "unexpected": [e.to_dict() for e in self.unexpected],
                "expected": [e.to_dict() for e in self.expected]}

    def summary(self) -> str:
        """One line: the verdict and the counts."""
        verdict = "OK" if self.ok else "LEAK"
        return (f"{verdict}: {len(self.unexpected)} unexpected and {len(self.expected)} expected "
                f"exposures of {self.examples} dataset examples in {self.sent} sent texts "
                f"(spans of >= {self.min_words} words)")

    def to_markdown(self, max_items: int = 50, max_places: int = 5) -> str:
        lines = ["# Exposure audit", "", f"**{self.summary()}**", ""]
        lines.append(f"- declared exemplars: {self.declared}"
                     + (f" ({len(self.declared_unseen)} never sent)" if self.declared_unseen else ""))
        lines.append(f"- examples too short to audit (< {MIN_VERBATIM_WORDS} words): {self.too_short}")
        for title, items in (("Unexpected exposures", self.unexpected),
                             ("Expected exposures", self.expected)):
            lines += ["", f"## {title} ({len(items)})", ""]
            if not items:
                lines.append("None.")
                continue
            lines += ["| split | # | kind | words | text | sent in | note |",
                      "|---|---|---|---|---|---|---|"]
            for e in items[:max_items]:
                places = e.places
                where = "; ".join(places[:max_places])
                if len(places) > max_places:
                    where += f"; +{len(places) - max_places} more"
                note = "; ".join(x for x in (e.reason, e.note) if x)
                lines.append(f"| {e.split} | {e.index} | {e.kind} | {e.words} | "
                             f"{_md(_clip(e.text))} | {_md(where)} | {_md(note)} |")
            if len(items) > max_items:
                lines.append(f"\n... and {len(items) - max_items} more.")
        return "\n".join(lines) + "\n"


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------


@dataclass
class _Example:
    split: str
    index: int
    text: str
    words: list[str]
    norm: str


def _row_texts(row: Any) -> Iterator[str]:
    """The strings of a row, except label fields (label names are not example texts)."""
    if isinstance(row, str):
        yield row
    elif isinstance(row, dict):
        for key, value in row.items():
            if key not in _LABEL_KEYS:
                yield from _row_texts(value)
    elif isinstance(row, (list, tuple)):
        for value in row:
            yield from _row_texts(value)


class ExposureIndex:
    """Every dataset text of every split, indexed by its windows of `min_words` words."""

    def __init__(self, data: TaskData, min_words: int = 8,
                 min_verbatim_words: int = MIN_VERBATIM_WORDS):
        if min_words < 1:
            raise UsageError(f"invalid span length {min_words}", "use --min-words 1 or more")
        self.n = min_words
        self.min_verbatim_words = max(1, min(min_verbatim_words, min_words))
        self.examples: list[_Example] = []
        self.too_short = 0
        self._grams: dict[int, int | list[int]] = {}   # hash(window) -> packed (id, pos)
        self._short: dict[tuple[str, ...], list[int]] = {}  # whole word tuple -> ids
        self._short_lengths: set[int] = set()
        for split in SPLITS:
            for i, row in enumerate(data.split(split)):
                for text in _row_texts(row):
                    self._add(split, i, text)

    def _add(self, split: str, index: int, text: str) -> None:
        ws = words(text)
        if len(ws) < self.min_verbatim_words:
            self.too_short += 1
            return
        eid = len(self.examples)
        self.examples.append(_Example(split, index, text, ws, normalise(text)))
        if len(ws) < self.n:
            self._short.setdefault(tuple(ws), []).append(eid)
            self._short_lengths.add(len(ws))
            return
        n = self.n
        for pos in range(len(ws) - n + 1):
            key = hash(tuple(ws[pos:pos + n]))
            packed = (eid << _POS_BITS) | pos
            found = self._grams.get(key)
            if found is None:
                self._grams[key] = packed
            elif isinstance(found, list):
                found.append(packed)
            else:
                self._grams[key] = [found, packed]

    def scan(self, ws: list[str]) -> dict[int, list[tuple[int, int]]]:
        """Shared runs between the words `ws` of a sent text and the indexed examples:
        {example id: [(start in ws, run length), ...]} (short examples: whole-text runs)."""
        found: dict[int, list[tuple[int, int]]] = {}
        n = self.n
        # (example, offset) -> positions in `ws` where a window of that example starts
        starts: dict[tuple[int, int], list[int]] = {}
        for i in range(len(ws) - n + 1):
            gram = ws[i:i + n]
            entry = self._grams.get(hash(tuple(gram)))
            if entry is None:
                continue
            for packed in entry if isinstance(entry, list) else (entry,):
                eid, pos = packed >> _POS_BITS, packed & ((1 << _POS_BITS) - 1)
                if self.examples[eid].words[pos:pos + n] == gram:  # not a hash collision
                    starts.setdefault((eid, i - pos), []).append(i)
        for (eid, _offset), positions in starts.items():
            run_start = prev = positions[0]
            for i in positions[1:] + [None]:
                if i is not None and i == prev + 1:
                    prev = i
                    continue
                found.setdefault(eid, []).append((run_start, prev - run_start + n))
                if i is not None:
                    run_start = prev = i
        for length in self._short_lengths:
            for i in range(len(ws) - length + 1):
                for eid in self._short.get(tuple(ws[i:i + length]), ()):
                    found.setdefault(eid, []).append((i, length))
        return found


# --------------------------------------------------------------------------------------
# The audit
# --------------------------------------------------------------------------------------


def _contained(run: str, containers: Iterable[str]) -> bool:
    """Is the word sequence `run` inside one of `containers` (space-padded word strings)?"""
    needle = f" {run} "
    return any(needle in c for c in containers)


def audit_exposure(sent_texts: list[tuple[str, str]], data: TaskData, declared: list[str],
                   min_words: int = 8, *, public_texts: Mapping[str, str] | None = None,
                   min_verbatim_words: int = MIN_VERBATIM_WORDS) -> AuditReport:
    """Report every dataset example (any split) found in `sent_texts`.

    `sent_texts` are (where, text) pairs, e.g. ("request 3 user message", "..."). `declared`
    are the exemplar texts the mode allows (gpta-data), [] otherwise. `public_texts` names
    texts whose words are public anyway (description versions, the prompt template): a
    finding whose shared words occur in one gets a note; it still counts. See the module
    docstring for what is reported and why.
    """
    index = ExposureIndex(data, min_words, min_verbatim_words)
    declared_norm = {normalise(t) for t in declared}
    declared_words = [f" {' '.join(words(t))} " for t in declared]
    public = {name: f" {' '.join(words(t))} " for name, t in (public_texts or {}).items()}
    hits: dict[int, list[Hit]] = {}
    # identical sent texts (every request's system prompt) are scanned once
    seen: dict[str, tuple[str, list[str], dict[int, list[tuple[int, int]]]]] = {}
    for where, text in sent_texts:
        if text not in seen:
            ws = words(text)
            seen[text] = (normalise(text), ws, index.scan(ws))
        norm, sent_words, found = seen[text]
        for eid, runs in found.items():
            ex = index.examples[eid]
            run_texts = [" ".join(sent_words[s:s + k]) for s, k in runs]
            longest = max(range(len(runs)), key=lambda j: runs[j][1])
            complete = runs[longest][1] >= len(ex.words)
            if complete and ex.norm in norm:
                hit = Hit(where, "verbatim", len(ex.words), run_texts[longest], run_texts)
            elif len(ex.words) < index.n:
                continue  # a short text whose words occur, but not as the same text
            else:
                hit = Hit(where, "span", runs[longest][1], run_texts[longest], run_texts)
            hits.setdefault(eid, []).append(hit)

    expected: list[Exposure] = []
    unexpected: list[Exposure] = []
    found_declared: set[str] = set()
    for eid in sorted(hits, key=lambda e: (SPLITS.index(index.examples[e].split),
                                           index.examples[e].index)):
        ex = index.examples[eid]
        exposure = Exposure(ex.split, ex.index, ex.text, hits[eid])
        all_runs = [r for h in exposure.hits for r in h.runs]
        if ex.norm in declared_norm:
            exposure.expected, exposure.reason = True, "declared exemplar"
            found_declared.add(ex.norm)
        elif declared_words and all(_contained(r, declared_words) for r in all_runs):
            exposure.expected, exposure.reason = True, "inside a declared exemplar"
        also = [name for name, w in public.items() if any(_contained(r, [w]) for r in all_runs)]
        if also:
            exposure.note = "the shared words also occur in " + ", ".join(also)
        (expected if exposure.expected else unexpected).append(exposure)
    unseen = [t for t in dict.fromkeys(declared) if normalise(t) not in found_declared
              and len(words(t)) >= index.min_verbatim_words]  # too short ones cannot be seen
    return AuditReport(expected=expected, unexpected=unexpected, min_words=index.n,
                       sent=len(sent_texts), examples=len(index.examples),
                       too_short=index.too_short, declared=len(set(declared_norm)),
                       declared_unseen=unseen)
