"""Extractive QA student (SQuAD): an encoder with a span head reads question and context.

The prefix goes on the question side, so character offsets of answers in the context stay
valid: the model reads ``[CLS] prefix question [SEP] context window [SEP]``.

Long contexts are cut into windows (features) as in the HF SQuAD recipe: the question side
keeps at most half of `max_length`; the context fills the rest, and consecutive windows share
`doc_stride` tokens (at most half a window, so windows always advance). A feature whose
window holds the whole first gold answer is trained to point at it, any other feature at the
first ([CLS]) token, which also stands for "no answer".

Prediction takes, over all windows of a question, the span (start <= end, at most
`MAX_ANSWER_TOKENS` tokens, inside the context) with the highest start + end logit. When the
data has unanswerable questions (SQuAD v2), the question gets no answer ("") if the smallest
[CLS] score over its windows beats that span. Metrics are SQuAD F1 and exact match.

Contexts are tokenized once per split (with character offsets); only the prefix + question
side is tokenized per prefix, and every (prefix, window) feature of a scoring call is batched
together, sorted by length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from engine.config import StudentConfig
from engine.errors import DataError
from engine.metrics_text import squad_metrics
from engine.student.task_base import TaskStudent, join_input, pad_batch, pair_template

#: longest predicted answer, in tokens (the HF SQuAD recipe's max_answer_length)
MAX_ANSWER_TOKENS = 30


@dataclass
class QAExamples:
    """Rows of one split with their context tokenization."""

    rows: list[dict]
    ctx_ids: list[list[int]]
    ctx_offsets: list[list[tuple[int, int]]]
    token_spans: list[tuple[int, int] | None]  # first gold answer as context token indices


@dataclass(frozen=True)
class Feature:
    """One window of one example: the model input and where its context tokens sit."""

    example: int
    ids: list[int]
    types: list[int]
    ctx_pos: int   # position of the window's first context token in `ids`
    first: int     # index of that token in the example's context tokens
    length: int    # context tokens in the window


class QAStudent(TaskStudent):
    task = "extractive_qa"
    auto_class = "AutoModelForQuestionAnswering"
    row_keys = ("question", "context", "answers")

    def __init__(self, cfg: StudentConfig, data: Any, epochs: int, seed: int, device: str):
        super().__init__(cfg, data, epochs, seed, device)
        self.template = pair_template(self.tokenizer)
        self._budget = cfg.max_length - self.template.special
        self.check_budget(self._budget - 1, "a question and a context")
        text = self.special_tokens_text
        self.placement = self.spec.placement_for(text(self.template.head), text(self.template.mid),
                                                 text(self.template.tail))
        self.allow_null = any(not row["answers"]["text"]
                              for split in ("train", "validation", "test", "selection")
                              for row in data.split(split))
        self._splits: dict[str, QAExamples] = {}

    def model_kwargs(self) -> dict[str, Any]:
        # a checkpoint with another head (e.g. a sequence classifier) gets a fresh task head
        return {"ignore_mismatched_sizes": True}

    def check_row(self, split: str, index: int, row: dict) -> None:
        answers = row["answers"]
        where = f"{split} row {index}"
        fix = 'give answers as {"text": [...], "answer_start": [...]} with each text at its start'
        if not isinstance(answers, dict) or not isinstance(answers.get("text"), list) \
                or not isinstance(answers.get("answer_start"), list) \
                or len(answers["text"]) != len(answers["answer_start"]):
            raise DataError(f"{where} has malformed answers {answers!r}", fix)
        for text, start in zip(answers["text"], answers["answer_start"]):
            if not isinstance(start, int) or row["context"][start:start + len(text)] != text:
                raise DataError(f"{where}: answer {text!r} is not at character {start!r} of its "
                                "context", fix)

    # ---- inputs --------------------------------------------------------------------
    def examples(self, rows: list[dict]) -> QAExamples:
        """Tokenize the contexts of `rows` (with offsets) and locate their first answers."""
        enc = self.tokenizer([r["context"] for r in rows], add_special_tokens=False,
                             return_offsets_mapping=True)
        offsets = [[tuple(o) for o in offs] for offs in enc["offset_mapping"]]
        spans = []
        for row, offs in zip(rows, offsets):
            answers = row["answers"]
            if not answers["text"]:
                spans.append(None)
                continue
            start = answers["answer_start"][0]
            end = start + len(answers["text"][0])
            first = next((j for j, (_, b) in enumerate(offs) if b > start), None)
            last = next((j for j in range(len(offs) - 1, -1, -1) if offs[j][0] < end), None)
            spans.append((first, last) if first is not None and last is not None
                         and first <= last else None)
        return QAExamples(rows, enc["input_ids"], offsets, spans)

    def _split(self, split: str) -> QAExamples:
        if split not in self._splits:
            self._splits[split] = self.examples(self.data.split(split))
        return self._splits[split]

    def features(self, prefix: str, ex: QAExamples) -> list[Feature]:
        """Every window of every example, with `prefix` before each question."""
        questions = [join_input(prefix, r["question"]) for r in ex.rows]
        q_ids = self.tokenizer(questions, add_special_tokens=False)["input_ids"]
        out = []
        for i, (q, ctx) in enumerate(zip(q_ids, ex.ctx_ids)):
            q = q[:self._budget // 2]
            width = self._budget - len(q)
            overlap = min(self.cfg.doc_stride, width // 2)
            ctx_pos = len(self.template.head) + len(q) + len(self.template.mid)
            start = 0
            while True:
                end = min(start + width, len(ctx))
                ids, types = self.template.build(q, ctx[start:end])
                out.append(Feature(i, ids, types, ctx_pos, start, end - start))
                if end >= len(ctx):
                    break
                start = end - overlap
        return out

    def _inputs(self, feats: list[Feature]) -> dict[str, torch.Tensor]:
        ids, mask = pad_batch([f.ids for f in feats], self.tokenizer.pad_token_id)
        batch = {"input_ids": ids, "attention_mask": mask}
        if self._token_types:
            batch["token_type_ids"] = pad_batch([f.types for f in feats], 0)[0]
        return self.to_device(batch)

    @staticmethod
    def target(feature: Feature, span: tuple[int, int] | None) -> tuple[int, int]:
        """Start/end positions the feature is trained on: the answer if its window holds it
        whole, else (0, 0), the [CLS] token."""
        if span is None or not (feature.first <= span[0] and span[1] < feature.first + feature.length):
            return 0, 0
        return feature.ctx_pos + span[0] - feature.first, feature.ctx_pos + span[1] - feature.first

    # ---- training ------------------------------------------------------------------
    def batch_loss(self, prefix: str, rows: list[dict]) -> torch.Tensor:
        ex = self.examples(rows)
        feats = self.features(prefix, ex)
        targets = self.move(torch.tensor([self.target(f, ex.token_spans[f.example])
                                          for f in feats]))
        with self.autocast():
            out = self.model(**self._inputs(feats))
        return (F.cross_entropy(out.start_logits.float(), targets[:, 0])
                + F.cross_entropy(out.end_logits.float(), targets[:, 1])) / 2

    # ---- prediction ----------------------------------------------------------------
    def _best_spans(self, start: torch.Tensor, end: torch.Tensor, feats: list[Feature]
                    ) -> list[tuple[float, int, int, float]]:
        """(span score, start, end, null score) per feature; positions are context token
        indices within the window (-1 when the window has no context). The results of the
        whole batch come to the host in one transfer."""
        n, width = start.shape
        pos = torch.arange(width, device=start.device)
        bounds = self.move(torch.tensor([[f.ctx_pos, f.length] for f in feats]))
        ctx_pos, length = bounds[:, :1], bounds[:, 1:]
        in_ctx = (pos >= ctx_pos) & (pos < ctx_pos + length)
        scores = start[:, :, None] + end[:, None, :]
        band = (pos[None, :] >= pos[:, None]) & (pos[None, :] - pos[:, None] < MAX_ANSWER_TOKENS)
        valid = in_ctx[:, :, None] & in_ctx[:, None, :] & band
        best, flat = scores.masked_fill(~valid, float("-inf")).view(n, -1).max(dim=1)
        null = start[:, 0] + end[:, 0]
        # positions are below `width`, exact in float32 (the logits' dtype)
        found = torch.stack([best, null, (flat // width).float(), (flat % width).float()])
        best_, null_, first, last = found.cpu().tolist()
        out = []
        for i, f in enumerate(feats):
            if f.length == 0:
                out.append((float("-inf"), -1, -1, null_[i]))
                continue
            out.append((best_[i], int(first[i]) - f.ctx_pos, int(last[i]) - f.ctx_pos, null_[i]))
        return out

    def predict(self, prefixes: list[str], split: str = "validation") -> list[list[str]]:
        """The predicted answer text of every example of `split`, for each prefix."""
        ex = self._split(split)
        unique = list(dict.fromkeys(prefixes))
        feats: list[Feature] = []
        owner: list[int] = []
        for p, prefix in enumerate(unique):
            fs = self.features(prefix, ex)
            feats.extend(fs)
            owner.extend([p] * len(fs))
        spans: list[tuple[float, int, int, float]] = [(0.0, -1, -1, 0.0)] * len(feats)
        order = sorted(range(len(feats)), key=lambda i: len(feats[i].ids))
        self.model.eval()
        with torch.inference_mode(), self.autocast():
            for begin in range(0, len(order), self.cfg.eval_batch_size):
                chunk = order[begin:begin + self.cfg.eval_batch_size]
                batch = [feats[i] for i in chunk]
                out = self.model(**self._inputs(batch))
                found = self._best_spans(out.start_logits.float(), out.end_logits.float(), batch)
                for i, result in zip(chunk, found):
                    spans[i] = result
        best: dict[tuple[int, int], tuple[float, str]] = {}
        null: dict[tuple[int, int], float] = {}
        for f, p, (score, s, e, null_score) in zip(feats, owner, spans):
            key = (p, f.example)
            null[key] = min(null.get(key, float("inf")), null_score)
            if s < 0 or score <= best.get(key, (float("-inf"), ""))[0]:
                continue
            offsets = ex.ctx_offsets[f.example]
            context = ex.rows[f.example]["context"]
            text = context[offsets[f.first + s][0]:offsets[f.first + e][1]]
            best[key] = (score, text)
        answers = []
        for p in range(len(unique)):
            row = []
            for i in range(len(ex.rows)):
                score, text = best.get((p, i), (float("-inf"), ""))
                if self.allow_null and null[(p, i)] > score:
                    text = ""
                row.append(text)
            answers.append(row)
        position = {prefix: i for i, prefix in enumerate(unique)}
        return [answers[position[prefix]] for prefix in prefixes]

    def score_prefixes(self, prefixes: list[str], split: str = "validation") -> list[dict[str, float]]:
        """SQuAD F1 and exact match of each prefix, all prefixes batched together."""
        golds = [row["answers"]["text"] for row in self._split(split).rows]
        return [self.ordered(squad_metrics(predicted, golds))
                for predicted in self.predict(prefixes, split)]
