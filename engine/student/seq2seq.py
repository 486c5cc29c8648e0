"""Abstractive summarization student: a seq2seq model (BART by default) reads prefix + document.

The encoder reads ``<s> prefix document </s>`` (cut to `max_length` tokens from the right, so
the prefix stays); the decoder is trained with teacher forcing on the reference summary (cut
to `gen_max_length` tokens).

Ranking prefixes by ROUGE would mean generating a summary for every validation document
and every prefix. The GPTA loop scores dozens of prefixes per epoch, so validation uses a
cheap proxy instead: ``neg_loss``, minus the token-level cross-entropy of the reference
summaries under teacher forcing (higher is better). Real ROUGE-1/2/L F-measures (beam search
with `num_beams`, at most `gen_max_length` new tokens) are computed on the test split, or on
validation too when student.metric is a ROUGE metric. The returned dicts say which: the
validation dict holds only ``neg_loss`` unless ROUGE ranks prefixes.

`student.model` left at the encoder default (MiniLM) means ``facebook/bart-base``, which
needs the Hub (or its files in the local HF cache).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from engine.config import StudentConfig
from engine.data import SPLIT_ALIASES
from engine.errors import DataError
from engine.metrics_text import ROUGE_TYPES, rouge_scores
from engine.resources import STUDENT_ALIASES
from engine.student.task_base import TaskStudent, join_input, pad_batch

IGNORE = -100


class Seq2SeqStudent(TaskStudent):
    task = "summarization"
    auto_class = "AutoModelForSeq2SeqLM"
    row_keys = ("document", "summary")

    def __init__(self, cfg: StudentConfig, data: Any, epochs: int, seed: int, device: str):
        super().__init__(cfg, data, epochs, seed, device)
        head, tail = self._single_template()
        self.check_budget(cfg.max_length - len(head) - len(tail), "a document")
        text = self.special_tokens_text
        self.placement = self.spec.placement_for(text(head), "", text(tail))
        self._labels: dict[str, list[list[int]]] = {}

    def model_name(self) -> str:
        if self.cfg.model.lower() in STUDENT_ALIASES:
            return self.spec.default_model  # the encoder default cannot summarize
        return self.cfg.model

    def check_row(self, split: str, index: int, row: dict) -> None:
        for key in self.row_keys:
            if not isinstance(row[key], str) or not row[key].strip():
                raise DataError(f"{split} row {index} has an empty or non-text {key!r}",
                                'give rows {"document": str, "summary": str}')

    # ---- inputs --------------------------------------------------------------------
    def source_ids(self, prefix: str, rows: list[dict]) -> list[list[int]]:
        return self.tokenizer([join_input(prefix, r["document"]) for r in rows], truncation=True,
                              max_length=self.cfg.max_length)["input_ids"]

    def label_ids(self, rows: list[dict]) -> list[list[int]]:
        return self.tokenizer(text_target=[r["summary"] for r in rows], truncation=True,
                              max_length=self.cfg.gen_max_length)["input_ids"]

    def _split_labels(self, split: str) -> list[list[int]]:
        if split not in self._labels:
            self._labels[split] = self.label_ids(self.data.split(split))
        return self._labels[split]

    def _token_nll(self, sources: list[list[int]], labels: list[list[int]]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed NLL per row, target tokens per row) under teacher forcing."""
        ids, mask = pad_batch(sources, self.tokenizer.pad_token_id)
        targets = self.move(pad_batch(labels, 0, fill=IGNORE)[0])
        batch = self.to_device({"input_ids": ids, "attention_mask": mask})
        if hasattr(self.model, "prepare_decoder_input_ids_from_labels"):
            batch["decoder_input_ids"] = self.model.prepare_decoder_input_ids_from_labels(
                labels=targets)
        else:  # the model shifts the labels itself (and computes a loss we do not use)
            batch["labels"] = targets
        with self.autocast():
            logits = self.model(**batch).logits.float()
        nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
        return nll.sum(dim=1), (targets != IGNORE).sum(dim=1)

    # ---- training ------------------------------------------------------------------
    def batch_loss(self, prefix: str, rows: list[dict]) -> torch.Tensor:
        nll, tokens = self._token_nll(self.source_ids(prefix, rows), self.label_ids(rows))
        return nll.sum() / tokens.sum().clamp(min=1)

    # ---- evaluation ----------------------------------------------------------------
    def _items(self, prefixes: list[str], rows: list[dict]) -> tuple[list[str], list[list[int]]]:
        unique = list(dict.fromkeys(prefixes))
        sources = []
        for prefix in unique:
            sources.extend(self.source_ids(prefix, rows))
        return unique, sources

    def neg_loss(self, prefixes: list[str], split: str = "validation") -> list[float]:
        """Minus the mean token cross-entropy of the reference summaries, per prefix."""
        rows = self.data.split(split)
        labels = self._split_labels(split)
        unique, sources = self._items(prefixes, rows)
        n = len(rows)
        # sums stay on the device until the call ends: one transfer, not two per batch
        # (float64 where the device has it; MPS has no float64 and sums in float32)
        wide = torch.float32 if self._device == "mps" else torch.float64
        sums = torch.zeros(2, len(sources), dtype=wide, device=self._device)
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]) + len(labels[i % n]))
        self.model.eval()
        with torch.inference_mode():
            for begin in range(0, len(order), self.cfg.eval_batch_size):
                chunk = order[begin:begin + self.cfg.eval_batch_size]
                s, t = self._token_nll([sources[i] for i in chunk], [labels[i % n] for i in chunk])
                rows = self.index(chunk)
                sums[0, rows] = s.to(wide)
                sums[1, rows] = t.to(wide)
        nll, tokens = sums.cpu().double()
        nll, tokens = nll.view(len(unique), n).sum(1), tokens.view(len(unique), n).sum(1)
        values = (-nll / tokens.clamp(min=1)).tolist()
        position = {p: i for i, p in enumerate(unique)}
        return [values[position[p]] for p in prefixes]

    def generate(self, prefixes: list[str], split: str = "validation") -> list[list[str]]:
        """Generated summaries of every document of `split`, per prefix (beam search)."""
        rows = self.data.split(split)
        unique, sources = self._items(prefixes, rows)
        texts = [""] * len(sources)
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        size = max(1, self.cfg.eval_batch_size // self.cfg.num_beams)
        self.model.eval()
        with torch.inference_mode(), self.autocast():
            for begin in range(0, len(order), size):
                chunk = order[begin:begin + size]
                ids, mask = pad_batch([sources[i] for i in chunk], self.tokenizer.pad_token_id)
                batch = self.to_device({"input_ids": ids, "attention_mask": mask})
                out = self.model.generate(**batch, num_beams=self.cfg.num_beams,
                                          max_new_tokens=self.cfg.gen_max_length,
                                          early_stopping=self.cfg.num_beams > 1)
                for i, text in zip(chunk, self.tokenizer.batch_decode(out, skip_special_tokens=True)):
                    texts[i] = " ".join(text.split())
        n = len(rows)
        position = {p: i for i, p in enumerate(unique)}
        return [texts[position[p] * n:(position[p] + 1) * n] for p in prefixes]

    def score_prefixes(self, prefixes: list[str], split: str = "validation") -> list[dict[str, float]]:
        """neg_loss for each prefix, plus ROUGE on the test split or when ROUGE ranks."""
        results = [{"neg_loss": value} for value in self.neg_loss(prefixes, split)]
        if SPLIT_ALIASES.get(split, split) == "test" or self.metric in ROUGE_TYPES:
            references = [r["summary"] for r in self.data.split(split)]
            for metrics, predicted in zip(results, self.generate(prefixes, split)):
                metrics.update(rouge_scores(predicted, references))
        return [self.ordered(m) for m in results]
