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

import contextlib
import hashlib
import math
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from engine.config import StudentConfig
from engine.device import amp_dtype
from engine.errors import ConfigError, DataError, ModelError
from engine.metrics import classification_metrics
from engine.resources import looks_like_path, resolve_student_model
from engine.student.base import StepResult, Student

MODEL_FIX = "pass a local model directory or check the name; hubs need internet"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
SCALER_FILE = "scaler.pt"
# Used to check, once per split, that tokenizing "prefix text" equals tokenizing each part.
PROBE_PREFIX = "Classify this text (tweet, review...): is it Positive, negative or neutral? Answer!"
# Texts of a split checked against every new prefix in the fast path.
PREFIX_CHECK_TEXTS = 8

FAMILIES = {
    "bert": "BERT", "roberta": "RoBERTa", "xlm-roberta": "XLM-RoBERTa", "distilbert": "DistilBERT",
    "albert": "ALBERT", "electra": "ELECTRA", "deberta": "DeBERTa", "deberta-v2": "DeBERTa-v2",
    "mpnet": "MPNet", "modernbert": "ModernBERT", "camembert": "CamemBERT", "xlnet": "XLNet",
}


def derive_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any parts, e.g. derive_seed(seed, "order", epoch)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _reason(exc: BaseException) -> str:
    """The first sentence of an exception, short enough for a one-line error."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    first = text.split(". ")[0]
    return first if len(first) <= 160 else first[:157] + "..."


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence the expected "classifier newly initialised" report and progress bars while loading."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def join_input(prefix: str, text: str) -> str:
    """What the student reads: prefix + " " + text, or the text alone for an empty prefix."""
    return f"{prefix} {text}" if prefix.strip() else text


@dataclass
class _SplitCache:
    texts: list[str]
    labels: list[int]
    text_ids: list[list[int]]  # no special tokens, cut to the body budget
    probe_texts: list[str]  # rows checked against each new prefix (the first and the longest)
    probe_ids: list[list[int]]  # their full ids, no special tokens
    compositional: bool = False


class ClassificationStudent(Student):
    """An HF encoder (hub name, local path or the "all-MiniLM-L6-v2" alias) with a fresh
    classification head sized to `data.label_names`, trained with full fine-tuning.

    Public extras beyond `Student`: `metric` (the ranking metric), `epoch_order(epoch)`,
    `encode_inputs(prefix, split)`, `prefix_logits(prefixes, split)` and the reference
    `score_prefixes_plain` / `prefix_logits_plain` used by benchmarks and tests.
    """

    placement = "[CLS]prefix + context"

    def __init__(self, cfg: StudentConfig, data: Any, epochs: int, seed: int, device: str):
        self.cfg = cfg
        self.data = data
        self.epochs = epochs
        self.seed = seed
        self._device = device
        self.label_names = list(data.label_names)
        if len(self.label_names) < 2:
            raise DataError(f"the dataset has {len(self.label_names)} label(s)",
                            "use a classification dataset with at least two labels")
        if cfg.metric not in ("accuracy", "macro_f1"):
            raise ConfigError(f"invalid value {cfg.metric!r} for student.metric",
                              "use accuracy or macro_f1")
        self.metric = cfg.metric
        self.metric_names = (cfg.metric, *(m for m in ("accuracy", "macro_f1") if m != cfg.metric))
        self._check_labels()

        self.model, self.tokenizer = self._load_pretrained(cfg.model)
        self.family = FAMILIES.get(self.model.config.model_type,
                                   str(self.model.config.model_type).upper())
        self._head, self._tail = self._special_template()
        self._body_budget = cfg.max_length - len(self._head) - len(self._tail)
        if self._body_budget <= 0:
            raise ConfigError(f"student.max_length {cfg.max_length} leaves no room for text",
                              f"use a max_length above {len(self._head) + len(self._tail)}")
        self._token_types = "token_type_ids" in self.tokenizer.model_input_names
        self._splits: dict[str, _SplitCache] = {}

        self._amp_dtype = amp_dtype(device, cfg.amp)
        self.optimizer = self._make_optimizer()
        total = max(1, epochs * self.steps_per_epoch())
        from transformers import get_linear_schedule_with_warmup

        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, num_warmup_steps=int(round(cfg.warmup_ratio * total)),
            num_training_steps=total)
        self.scaler = (torch.amp.GradScaler("cuda") if self._amp_dtype == torch.float16 else None)

    # ---- setup ---------------------------------------------------------------------
    @property
    def device(self) -> str:
        return self._device

    def _check_labels(self) -> None:
        n = len(self.label_names)
        for split in ("train", "validation", "test"):
            for i, row in enumerate(self.data.split(split)):
                label = row["label"]
                try:
                    valid = not isinstance(label, bool) and 0 <= operator.index(label) < n
                except TypeError:
                    valid = False
                if not valid:
                    raise DataError(f"{split} row {i} has label {label!r}, outside 0..{n - 1}",
                                    "map labels to indices of label_names before building the student")

    def _load_pretrained(self, name: str):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        source = resolve_student_model(name)
        path = Path(source).expanduser()
        if path.exists():
            source = str(path)
        elif looks_like_path(source):
            raise ModelError(f"student model path {name!r} does not exist", MODEL_FIX)
        n = len(self.label_names)
        # The classification head is new: initialise it from the run's seed.
        torch.manual_seed(derive_seed(self.seed, "init"))
        try:
            with _quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(source)
                model = AutoModelForSequenceClassification.from_pretrained(
                    source, num_labels=n, id2label=dict(enumerate(self.label_names)),
                    label2id={label: i for i, label in enumerate(self.label_names)},
                    ignore_mismatched_sizes=True)
        except Exception as exc:  # any failure to load is a model problem for the user
            raise ModelError(f"cannot load student model {name!r} ({_reason(exc)})", MODEL_FIX) from None
        if tokenizer.pad_token is None:
            fallback = tokenizer.sep_token or tokenizer.eos_token or tokenizer.cls_token
            if fallback is None:
                raise ModelError(f"the tokenizer of {name!r} has no padding token",
                                 "use an encoder model whose tokenizer defines pad_token")
            tokenizer.pad_token = fallback
        model.config.pad_token_id = tokenizer.pad_token_id
        model.float().to(self._device)
        return model, tokenizer

    def _special_template(self) -> tuple[list[int], list[int]]:
        """The special ids the tokenizer puts before and after a single sequence."""
        plain = self.tokenizer("hello", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("hello")["input_ids"]
        for start in range(len(full) - len(plain) + 1):
            if full[start:start + len(plain)] == plain:
                return full[:start], full[start + len(plain):]
        return [], []  # unusual template: the compositional check will fail and fall back

    def _make_optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            lowered = name.lower()
            if param.ndim < 2 or name.endswith("bias") or "layernorm" in lowered or "layer_norm" in lowered:
                no_decay.append(param)
            else:
                decay.append(param)
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.cfg.lr)

    def _autocast(self):
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self._amp_dtype)

    # ---- training ------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.train) / self.cfg.batch_size)

    def epoch_order(self, epoch: int) -> list[int]:
        """The permutation of training rows used in `epoch` (depends only on seed and epoch)."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
        return torch.randperm(len(self.data.train), generator=generator).tolist()

    def train_epoch(self, prefix: str, epoch: int, start_step: int = 0) -> Iterator[StepResult]:
        rows = self.data.train
        if not rows:
            raise DataError("the training split is empty", "use a dataset with training rows")
        steps = self.steps_per_epoch()
        if not 0 <= start_step <= steps:
            raise ValueError(f"start_step {start_step} outside 0..{steps}")
        order = self.epoch_order(epoch)
        size = self.cfg.batch_size
        for step in range(start_step + 1, steps + 1):
            batch = [rows[i] for i in order[(step - 1) * size:step * size]]
            torch.manual_seed(derive_seed(self.seed, "step", epoch, step))
            self.model.train()
            enc = self.tokenizer([join_input(prefix, r["text"]) for r in batch], truncation=True,
                                 max_length=self.cfg.max_length, padding=True, return_tensors="pt")
            enc = {k: v.to(self._device) for k, v in enc.items()}
            labels = torch.tensor([r["label"] for r in batch], device=self._device)
            with self._autocast():
                logits = self.model(**enc).logits
            loss = F.cross_entropy(logits.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            lr = self.optimizer.param_groups[0]["lr"]
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
                self._clip()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self._clip()
                self.optimizer.step()
            self.scheduler.step()
            yield StepResult(epoch_step=step, loss=float(loss.detach()), lr=float(lr))

    def _clip(self) -> None:
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)

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
    def evaluate(self, prefix: str, split: str = "validation") -> dict[str, float]:
        return self.score_prefixes([prefix], split)[0]

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
        out = torch.empty(len(sequences), len(self.label_names), dtype=torch.float32)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        pad = self.tokenizer.pad_token_id
        self.model.eval()
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(order), self.cfg.eval_batch_size):
                chunk = order[start:start + self.cfg.eval_batch_size]
                width = max(len(sequences[i]) for i in chunk)
                input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):
                    ids = sequences[i]
                    input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                    mask[row, :len(ids)] = 1
                batch = {"input_ids": input_ids, "attention_mask": mask}
                if self._token_types:
                    batch["token_type_ids"] = torch.zeros_like(input_ids)
                batch = {k: v.to(self._device, non_blocking=True) for k, v in batch.items()}
                out[chunk] = self.model(**batch).logits.float().cpu()
        by_prefix = out.view(len(unique), n_rows, -1)
        position = {p: i for i, p in enumerate(unique)}
        return by_prefix[[position[p] for p in prefixes]]

    def score_prefixes_plain(self, prefixes: list[str], split: str = "validation") -> list[dict[str, float]]:
        """Reference scoring: one prefix at a time, joined strings padded to max_length."""
        labels = self._split(split).labels
        logits = self.prefix_logits_plain(prefixes, split)
        return [classification_metrics(labels, row.argmax(-1).tolist()) for row in logits]

    def prefix_logits_plain(self, prefixes: list[str], split: str = "validation") -> torch.Tensor:
        texts = self._split(split).texts
        results = []
        self.model.eval()
        with torch.inference_mode(), self._autocast():
            for prefix in prefixes:
                parts = []
                for start in range(0, len(texts), self.cfg.eval_batch_size):
                    chunk = [join_input(prefix, t) for t in texts[start:start + self.cfg.eval_batch_size]]
                    enc = self.tokenizer(chunk, truncation=True, max_length=self.cfg.max_length,
                                         padding="max_length", return_tensors="pt")
                    enc = {k: v.to(self._device) for k, v in enc.items()}
                    parts.append(self.model(**enc).logits.float().cpu())
                results.append(torch.cat(parts))
        return torch.stack(results)

    # ---- checkpoints ---------------------------------------------------------------
    def save(self, directory: Path, training_state: bool = True) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)  # safetensors
        self.tokenizer.save_pretrained(directory)
        if training_state:
            torch.save(self.optimizer.state_dict(), directory / OPTIMIZER_FILE)
            torch.save(self.scheduler.state_dict(), directory / SCHEDULER_FILE)
            if self.scaler is not None:
                torch.save(self.scaler.state_dict(), directory / SCALER_FILE)

    def load(self, directory: Path, training_state: bool = True) -> None:
        from transformers import AutoModelForSequenceClassification

        directory = Path(directory)
        fix = "resume from a checkpoint this student wrote (same model and labels)"
        if not directory.is_dir():
            raise ModelError(f"checkpoint directory {str(directory)!r} does not exist", fix)
        try:
            with _quiet_transformers():
                saved = AutoModelForSequenceClassification.from_pretrained(directory)
            self.model.load_state_dict(saved.float().state_dict())
        except Exception as exc:  # a missing/corrupt/mismatched checkpoint
            raise ModelError(f"cannot load checkpoint {str(directory)!r} ({_reason(exc)})", fix) from None
        del saved
        if not training_state:
            return
        needed = [OPTIMIZER_FILE, SCHEDULER_FILE] + ([SCALER_FILE] if self.scaler is not None else [])
        missing = [name for name in needed if not (directory / name).is_file()]
        if missing:
            raise ModelError(f"checkpoint {str(directory)!r} lacks {', '.join(missing)}", fix)
        self.optimizer.load_state_dict(self._torch_load(directory / OPTIMIZER_FILE))
        self.scheduler.load_state_dict(self._torch_load(directory / SCHEDULER_FILE))
        if self.scaler is not None:
            self.scaler.load_state_dict(self._torch_load(directory / SCALER_FILE))

    def _torch_load(self, path: Path) -> dict:
        return torch.load(path, map_location=self._device, weights_only=True)
