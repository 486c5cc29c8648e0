"""Multiple-choice student (RACE): an encoder with a multiple-choice head scores each option.

Every option becomes one (article, question + option) pair, and the prefix is prepended to
the article: ``[CLS] prefix article [SEP] question option [SEP]``. A RACE cloze question with a
blank ("_") gets the option written into the blank instead of after the question.

Truncation keeps the prefix: the question + option side is cut to at most half of
`max_length` and the prefix + article side to the rest, both from the right. Questions with
fewer options than others in a batch are padded with empty pairs whose logits are masked out.
The metric is accuracy. The question + option side is tokenized once per split, the
prefix + article once per (prefix, row), and all prefixes of a scoring call are batched.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from engine.config import StudentConfig
from engine.errors import DataError
from engine.student.task_base import TaskStudent, join_input, pad_batch, pair_template


def question_with_option(question: str, option: str) -> str:
    """RACE style: fill the blank of a cloze question, else append the option."""
    return question.replace("_", option, 1) if "_" in question else f"{question} {option}"


class MultipleChoiceStudent(TaskStudent):
    task = "multiple_choice"
    auto_class = "AutoModelForMultipleChoice"
    row_keys = ("article", "question", "options", "label")

    def __init__(self, cfg: StudentConfig, data: Any, epochs: int, seed: int, device: str):
        super().__init__(cfg, data, epochs, seed, device)
        self.template = pair_template(self.tokenizer)
        self._budget = cfg.max_length - self.template.special
        self.check_budget(self._budget - 1, "an article and an option")
        text = self.special_tokens_text
        self.placement = self.spec.placement_for(text(self.template.head), text(self.template.mid),
                                                 text(self.template.tail))
        self._second: dict[str, list[list[list[int]]]] = {}

    def model_kwargs(self) -> dict[str, Any]:
        # a checkpoint with another head (e.g. a sequence classifier) gets a fresh task head
        return {"ignore_mismatched_sizes": True}

    def check_row(self, split: str, index: int, row: dict) -> None:
        options, label = row["options"], row["label"]
        fix = 'give rows {"article", "question", "options": [at least 2 strings], "label": index}'
        if not isinstance(options, list) or len(options) < 2 \
                or not all(isinstance(o, str) for o in options):
            raise DataError(f"{split} row {index} has options {options!r}", fix)
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(options):
            raise DataError(f"{split} row {index} has label {label!r}, not an index of its "
                            f"{len(options)} options", fix)

    # ---- inputs --------------------------------------------------------------------
    def _second_ids(self, rows: list[dict]) -> list[list[list[int]]]:
        """Token ids of question + option, per row and option (cut to half the budget)."""
        texts = [question_with_option(r["question"], o) for r in rows for o in r["options"]]
        flat = iter(self.tokenizer(texts, add_special_tokens=False)["input_ids"])
        return [[next(flat)[:self._budget // 2] for _ in r["options"]] for r in rows]

    def encode(self, prefix: str, rows: list[dict], second: list[list[list[int]]] | None = None
               ) -> list[list[tuple[list[int], list[int]]]]:
        """(input_ids, token_type_ids) of every option pair of every row, with `prefix`."""
        second = second if second is not None else self._second_ids(rows)
        firsts = self.tokenizer([join_input(prefix, r["article"]) for r in rows],
                                add_special_tokens=False)["input_ids"]
        return [[self.template.build(first[:self._budget - len(b)], b) for b in options]
                for first, options in zip(firsts, second)]

    def _forward(self, items: list[list[tuple[list[int], list[int]]]]) -> torch.Tensor:
        """Float32 logits (rows, max options); missing options are -inf."""
        most = max(len(options) for options in items)
        filler = self.template.build([], [])
        flat = [pair for options in items
                for pair in options + [filler] * (most - len(options))]
        ids, mask = pad_batch([ids for ids, _ in flat], self.tokenizer.pad_token_id)
        batch = {"input_ids": ids.view(len(items), most, -1),
                 "attention_mask": mask.view(len(items), most, -1)}
        if self._token_types:
            types = pad_batch([types for _, types in flat], 0)[0]
            batch["token_type_ids"] = types.view(len(items), most, -1)
        with self.autocast():
            logits = self.model(**self.to_device(batch)).logits.float()
        counts = self.move(torch.tensor([len(options) for options in items]))
        missing = torch.arange(most, device=logits.device)[None, :] >= counts[:, None]
        return logits.masked_fill(missing, float("-inf"))

    # ---- training ------------------------------------------------------------------
    def batch_loss(self, prefix: str, rows: list[dict]) -> torch.Tensor:
        logits = self._forward(self.encode(prefix, rows))
        labels = self.move(torch.tensor([r["label"] for r in rows]))
        return F.cross_entropy(logits, labels)

    # ---- evaluation ----------------------------------------------------------------
    def option_logits(self, prefixes: list[str], split: str = "validation") -> list[torch.Tensor]:
        """Per prefix, float32 logits (rows, max options) on the CPU; -inf pads."""
        rows = self.data.split(split)
        if split not in self._second:
            self._second[split] = self._second_ids(rows)
        unique = list(dict.fromkeys(prefixes))
        items = []
        for prefix in unique:
            items.extend(self.encode(prefix, rows, self._second[split]))
        most = max(len(r["options"]) for r in rows)
        # on the device until the call ends: one transfer, not one per batch
        out = torch.full((len(items), most), float("-inf"), device=self._device)
        length = [max(len(ids) for ids, _ in options) * len(options) for options in items]
        order = sorted(range(len(items)), key=lambda i: length[i])
        per_batch = max(1, self.cfg.eval_batch_size // most)
        self.model.eval()
        with torch.inference_mode():
            for begin in range(0, len(order), per_batch):
                chunk = order[begin:begin + per_batch]
                logits = self._forward([items[i] for i in chunk])
                out[self.index(chunk), :logits.shape[1]] = logits
        by_prefix = out.cpu().view(len(unique), len(rows), most)
        position = {p: i for i, p in enumerate(unique)}
        return [by_prefix[position[p]] for p in prefixes]

    def score_prefixes(self, prefixes: list[str], split: str = "validation") -> list[dict[str, float]]:
        labels = torch.tensor([r["label"] for r in self.data.split(split)])
        return [self.ordered({"accuracy": int((logits.argmax(-1) == labels).sum()) / len(labels)})
                for logits in self.option_logits(prefixes, split)]
