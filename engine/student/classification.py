"""Sequence-classification student: an HF encoder fine-tuned with a text prefix on every input.

The model sees `[CLS] prefix text [SEP]` (the prefix and the text joined by one space, the
whole sequence truncated to `max_length`). Training is fully deterministic given
(seed, epoch, step): the data order of an epoch comes from a generator seeded with
(seed, epoch) and torch's RNG (dropout) is reseeded with (seed, epoch, step) before every
step, so a run resumed from a checkpoint at step k replays the same losses bit for bit on CPU.

Scoring many prefixes (`score_prefixes`) is the hot path of the GPTA loop: every text is
tokenized once, every prefix once, and their ids are concatenated, which is exact for
whitespace-compositional tokenizers such as BERT's WordPiece. That property is verified on the
data (and on each prefix) and the student falls back to tokenizing the joined strings where it
does not hold.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from engine.errors import ConfigError, DataError
from engine.metrics import classification_metrics
from engine.student.first_token import first_token_only
from engine.student.task_base import TaskStudent, join_input, pad_batch

__all__ = ["ClassificationStudent", "join_input"]

# Used to check, once per split, that tokenizing "prefix text" equals tokenizing each part.
PROBE_PREFIX = "Classify this text (tweet, review...): is it Positive, negative or neutral? Answer!"
# Texts of a split checked against every new prefix in the fast path.
PREFIX_CHECK_TEXTS = 8

# Rows of the first scoring batch checked against the full model (engine/student/first_token.py).
FIRST_TOKEN_CHECK_ROWS = 8

log = logging.getLogger("gpta.student")


@dataclass
class _SplitCache:
    texts: list[str]
    labels: list[int]
    text_ids: list[list[int]]  # no special tokens, cut to the body budget
    probe_texts: list[str]  # rows checked against each new prefix (the first and the longest)
    probe_ids: list[list[int]]  # their full ids, no special tokens
    compositional: bool = False


class ClassificationStudent(TaskStudent):
    """An HF encoder (hub name, local path or the "all-MiniLM-L6-v2" alias) with a fresh
    classification head sized to `data.label_names`, trained with full fine-tuning.

    The training loop, optimizer, seeding and checkpoints are `TaskStudent`'s. Public extras
    beyond `Student`: `metric` (the ranking metric), `epoch_order(epoch)`,
    `encode_inputs(prefix, split)`, `prefix_logits(prefixes, split)` and the reference
    `score_prefixes_plain` / `prefix_logits_plain` used by benchmarks and tests.
    """

    task = "classification"
    auto_class = "AutoModelForSequenceClassification"
    row_keys = ("text", "label")
    placement = "[CLS]prefix + context"
    pad_fallbacks = ("sep_token", "eos_token", "cls_token")
    pad_fix = "use an encoder model whose tokenizer defines pad_token"
    checkpoint_fix = "resume from a checkpoint this student wrote (same model and labels)"

    # ---- setup ---------------------------------------------------------------------
    def _check_data(self) -> None:
        self.label_names = list(self.data.label_names)
        if len(self.label_names) < 2:
            raise DataError(f"the dataset has {len(self.label_names)} label(s)",
                            "use a classification dataset with at least two labels")
        metric = self.cfg.metric
        if metric not in ("accuracy", "macro_f1"):
            raise ConfigError(f"invalid value {metric!r} for student.metric",
                              "use accuracy or macro_f1")
        self.metric = metric
        self.metric_names = (metric, *(m for m in ("accuracy", "macro_f1") if m != metric))
        self._check_labels()

    def _check_labels(self) -> None:
        n = len(self.label_names)
        for split in ("train", "validation", "test", "selection"):
            for i, row in enumerate(self.data.split(split)):
                label = row["label"]
                try:
                    valid = not isinstance(label, bool) and 0 <= operator.index(label) < n
                except TypeError:
                    valid = False
                if not valid:
                    raise DataError(f"{split} row {i} has label {label!r}, outside 0..{n - 1}",
                                    "map labels to indices of label_names before building the student")

    def model_kwargs(self) -> dict[str, Any]:
        # The classification head is new: TaskStudent initialises it from the run's seed.
        return {"num_labels": len(self.label_names),
                "id2label": dict(enumerate(self.label_names)),
                "label2id": {label: i for i, label in enumerate(self.label_names)},
                "ignore_mismatched_sizes": True}

    def model_description(self) -> str:
        return "student model"

    def _setup_inputs(self) -> None:
        # An unusual template gives ([], []): the compositional check then fails and falls back.
        self._head, self._tail = self._single_template()
        self._body_budget = self.cfg.max_length - len(self._head) - len(self._tail)
        self.check_budget(self._body_budget, "text")
        self._splits: dict[str, _SplitCache] = {}
        self._first_token_ok: bool | None = None  # the scoring shortcut, checked on first use
        self.first_token_shortcut = True  # False: score with the full model (benchmarks, debugging)

    # ---- training ------------------------------------------------------------------
    def batch_loss(self, prefix: str, rows: list[dict]) -> torch.Tensor:
        enc = self.tokenizer([join_input(prefix, r["text"]) for r in rows], truncation=True,
                             max_length=self.cfg.max_length, padding=True, return_tensors="pt")
        enc = self.to_device(dict(enc))
        labels = self.move(torch.tensor([r["label"] for r in rows]))
        with self.autocast():
            logits = self.model(**enc).logits
        return F.cross_entropy(logits.float(), labels)

    # ---- inputs --------------------------------------------------------------------
    def _split(self, split: str) -> _SplitCache:
        cached = self._splits.get(split)
        if cached is not None:
            return cached
        rows = self.data.split(split)
        if not rows:
            raise DataError(f"the {split} split is empty", f"use a dataset with {split} rows")
        texts = [r["text"] for r in rows]
        full_ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        longest = sorted(range(len(texts)), key=lambda i: len(full_ids[i]))[-2:]
        probe_rows = sorted(set(range(min(PREFIX_CHECK_TEXTS, len(texts)))) | set(longest))
        # Text tokens past the body budget can never be read (the prefix comes first).
        keep = self._body_budget if self.tokenizer.truncation_side == "right" else None
        cache = _SplitCache(
            texts=texts, labels=[int(r["label"]) for r in rows],
            text_ids=[ids[:keep] for ids in full_ids],
            probe_texts=[texts[i] for i in probe_rows],
            probe_ids=[full_ids[i] for i in probe_rows])
        cache.compositional = self._composes(PROBE_PREFIX, texts, full_ids)
        self._splits[split] = cache
        return cache

    def _compose(self, prefix_ids: list[int], text_ids: list[int], truncate: bool = True) -> list[int]:
        body = prefix_ids + text_ids
        if truncate and len(body) > self._body_budget:
            body = (body[:self._body_budget] if self.tokenizer.truncation_side == "right"
                    else body[-self._body_budget:])
        return self._head + body + self._tail

    def _prefix_ids(self, prefix: str) -> list[int]:
        return self.tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix.strip() else []

    def _joined_ids(self, prefix: str, texts: Sequence[str], truncate: bool = True) -> list[list[int]]:
        joined = [join_input(prefix, t) for t in texts]
        if truncate:
            return self.tokenizer(joined, truncation=True, max_length=self.cfg.max_length)["input_ids"]
        return self.tokenizer(joined)["input_ids"]

    def _composes(self, prefix: str, texts: Sequence[str], full_ids: Sequence[list[int]]) -> bool:
        """Whether concatenating the ids of prefix and text equals tokenizing the joined string,
        both in full (the tokenizer property) and truncated to max_length (what the model reads)."""
        prefix_ids = self._prefix_ids(prefix)
        for truncate in (False, True):
            joined = self._joined_ids(prefix, texts, truncate)
            if any(self._compose(prefix_ids, ids, truncate) != want
                   for ids, want in zip(full_ids, joined)):
                return False
        return True

    def encode_inputs(self, prefix: str, split: str = "validation") -> list[list[int]]:
        """The token ids the model reads for every row of `split` with `prefix` (fast path)."""
        cache = self._split(split)
        if cache.compositional and self._composes(prefix, cache.probe_texts, cache.probe_ids):
            prefix_ids = self._prefix_ids(prefix)
            return [self._compose(prefix_ids, ids) for ids in cache.text_ids]
        return self._joined_ids(prefix, cache.texts)

    # ---- evaluation ----------------------------------------------------------------
    def score_prefixes(self, prefixes: list[str], split: str = "validation") -> list[dict[str, float]]:
        """Metrics for each prefix, batching across prefixes and rows sorted by length."""
        labels = self._split(split).labels
        logits = self.prefix_logits(prefixes, split)
        return [classification_metrics(labels, row.argmax(-1).tolist()) for row in logits]

    def prefix_logits(self, prefixes: list[str], split: str = "validation") -> torch.Tensor:
        """Float32 logits of shape (len(prefixes), rows, labels) on the CPU (fast path)."""
        n_rows = len(self._split(split).texts)
        if not prefixes:
            return torch.empty(0, n_rows, len(self.label_names))
        unique = list(dict.fromkeys(prefixes))
        sequences: list[list[int]] = []
        for prefix in unique:
            sequences.extend(self.encode_inputs(prefix, split))
        # Logits stay on the device until the call ends: one transfer, not one per batch.
        out = torch.empty(len(sequences), len(self.label_names), dtype=torch.float32,
                          device=self._device)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        pad = self.tokenizer.pad_token_id
        self.model.eval()
        with torch.inference_mode(), self.autocast():
            for start in range(0, len(order), self.cfg.eval_batch_size):
                chunk = order[start:start + self.cfg.eval_batch_size]
                input_ids, mask = pad_batch([sequences[i] for i in chunk], pad)
                batch = {"input_ids": input_ids, "attention_mask": mask}
                if self._token_types:
                    batch["token_type_ids"] = torch.zeros_like(input_ids)
                out[self.index(chunk)] = self._scoring_logits(self.to_device(batch)).float()
        by_prefix = out.cpu().view(len(unique), n_rows, -1)
        position = {p: i for i, p in enumerate(unique)}
        return by_prefix[[position[p] for p in prefixes]]

    def _scoring_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of one scoring batch. When the head reads only the first position, the last
        layer computes just that position (engine/student/first_token.py); the first batch
        checks this against the full model, and any disagreement keeps the full model."""
        if self.first_token_shortcut and self._first_token_ok is not False:
            with first_token_only(self.model) as active:
                short = self.model(**batch).logits if active else None
            if short is not None and (self._first_token_ok or self._check_first_token(batch, short)):
                return short  # every batch of every call takes the same path: same rounding
            self._first_token_ok = False
        return self.model(**batch).logits

    def _check_first_token(self, batch: dict[str, torch.Tensor], short: torch.Tensor) -> bool:
        """Once per student: a few rows of the shortcut's logits against the full model's."""
        rows = {k: v[:FIRST_TOKEN_CHECK_ROWS] for k, v in batch.items()}
        full = self.model(**rows).logits.float()
        head = short[:FIRST_TOKEN_CHECK_ROWS].float()
        tolerance = 1e-4 if self._amp_dtype is None else 2e-2
        self._first_token_ok = torch.allclose(head, full, rtol=tolerance, atol=tolerance)
        if not self._first_token_ok:
            log.warning("first-token scoring shortcut disagrees with the full model "
                        "(max difference %.2e); scoring with the full model",
                        (head - full).abs().max().item())
        return self._first_token_ok

    def score_prefixes_plain(self, prefixes: list[str], split: str = "validation") -> list[dict[str, float]]:
        """Reference scoring: one prefix at a time, joined strings padded to max_length."""
        labels = self._split(split).labels
        logits = self.prefix_logits_plain(prefixes, split)
        return [classification_metrics(labels, row.argmax(-1).tolist()) for row in logits]

    def prefix_logits_plain(self, prefixes: list[str], split: str = "validation") -> torch.Tensor:
        texts = self._split(split).texts
        results = []
        self.model.eval()
        with torch.inference_mode(), self.autocast():
            for prefix in prefixes:
                parts = []
                for start in range(0, len(texts), self.cfg.eval_batch_size):
                    chunk = [join_input(prefix, t) for t in texts[start:start + self.cfg.eval_batch_size]]
                    enc = self.tokenizer(chunk, truncation=True, max_length=self.cfg.max_length,
                                         padding="max_length", return_tensors="pt")
                    enc = {k: v.to(self._device) for k, v in enc.items()}
                    parts.append(self.model(**enc).logits.float())
                results.append(torch.cat(parts))
        return torch.stack(results).cpu()
