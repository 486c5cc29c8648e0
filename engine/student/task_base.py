"""What every full fine-tuning student shares (classification, extractive QA, multiple choice,
summarization).

A `TaskStudent` owns an HF model with a task head, its tokenizer, an AdamW optimizer with a
linear schedule, and the deterministic training loop: the order of an epoch's rows comes from
a generator seeded with (seed, epoch), and torch's RNG (dropout) is reseeded with
(seed, epoch, step) before every step, so a run resumed at step k replays the same losses bit
for bit on CPU. Subclasses say how a batch of rows becomes a loss (`batch_loss`) and how a
split is scored for many prefixes at once (`score_prefixes`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from engine.config import StudentConfig
from engine.device import amp_dtype, eval_batch_size
from engine.errors import ConfigError, DataError, ModelError
from engine.resources import looks_like_path, resolve_student_model
from engine.seeds import student_seed
from engine.student.base import StepResult, Student
from engine.tasks import get_task, metric_order

MODEL_FIX = "pass a local model directory or check the name; hubs need internet"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
SCALER_FILE = "scaler.pt"

log = logging.getLogger("gpta.student")

FAMILIES = {
    "bert": "BERT", "roberta": "RoBERTa", "xlm-roberta": "XLM-RoBERTa", "distilbert": "DistilBERT",
    "albert": "ALBERT", "electra": "ELECTRA", "deberta": "DeBERTa", "deberta-v2": "DeBERTa-v2",
    "mpnet": "MPNet", "modernbert": "ModernBERT", "camembert": "CamemBERT", "xlnet": "XLNet",
    "bart": "BART", "mbart": "mBART", "t5": "T5", "mt5": "mT5", "pegasus": "PEGASUS",
    "led": "LED", "encoder-decoder": "encoder-decoder",
}


def join_input(prefix: str, text: str) -> str:
    """What the student reads: prefix + " " + text, or the text alone for an empty prefix."""
    return f"{prefix} {text}" if prefix.strip() else text


def reason(exc: BaseException) -> str:
    """The first sentence of an exception, short enough for a one-line error."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    first = text.split(". ")[0]
    return first if len(first) <= 160 else first[:157] + "..."


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence the expected "head newly initialised" report and progress bars while loading."""
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


def pad_batch(sequences: list[list[int]], pad_id: int, fill: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (ids, attention_mask) of a list of id lists; `fill` pads ids instead of pad_id."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id if fill is None else fill, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, :len(seq)] = 1
    return ids, mask


@dataclass(frozen=True)
class PairTemplate:
    """Where a tokenizer puts its special tokens around a pair: head A mid B tail."""

    head: list[int]
    mid: list[int]
    tail: list[int]
    type_a: int = 0  # token type of head, A and mid
    type_b: int = 0  # token type of B and tail

    @property
    def special(self) -> int:
        return len(self.head) + len(self.mid) + len(self.tail)

    def build(self, a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
        """(input_ids, token_type_ids) of the pair."""
        first = self.head + a + self.mid
        second = b + self.tail
        return first + second, [self.type_a] * len(first) + [self.type_b] * len(second)


def pair_template(tokenizer: Any) -> PairTemplate:
    """Probe the tokenizer's pair layout (BERT: [CLS] A [SEP] B [SEP], RoBERTa: <s> A </s></s> B </s>)."""
    a = tokenizer("hello", add_special_tokens=False)["input_ids"]
    b = tokenizer("world", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", "world")
    ids, types = full["input_ids"], full.get("token_type_ids") or [0] * len(full["input_ids"])
    for i in range(len(ids) - len(a) + 1):
        if ids[i:i + len(a)] != a:
            continue
        for j in range(i + len(a), len(ids) - len(b) + 1):
            if ids[j:j + len(b)] == b:
                template = PairTemplate(ids[:i], ids[i + len(a):j], ids[j + len(b):],
                                        types[i], types[j])
                if template.build(a, b) == (ids, types):
                    return template
    raise ModelError("the student tokenizer does not encode a text pair as prefix, first text, "
                     "separator, second text, suffix",
                     "use an encoder such as BERT, RoBERTa or MiniLM")


class TaskStudent(Student):
    """Base of the full fine-tuning students; see the module docstring."""

    #: the ``data.task`` this student serves (a key of engine.tasks.TASKS)
    task: str = ""
    #: the transformers Auto class that loads the model with the task head
    auto_class: str = ""
    #: the keys every row of every split must have
    row_keys: tuple[str, ...] = ()
    #: tokenizer attributes tried in order as the padding token when it has none
    pad_fallbacks: tuple[str, ...] = ("eos_token", "sep_token", "cls_token")
    #: the fix of the error for a tokenizer without any padding token
    pad_fix: str = "use a model whose tokenizer defines pad_token"
    #: the fix of the errors for a checkpoint that cannot be resumed
    checkpoint_fix: str = "resume from a checkpoint this student wrote (same task and model)"

    def __init__(self, cfg: StudentConfig, data: Any, epochs: int, seed: int, device: str):
        # eval_batch_size 0 ("auto") becomes the device's default here, once
        self.cfg = dataclasses.replace(
            cfg, eval_batch_size=eval_batch_size(cfg.eval_batch_size, device))
        self.data = data
        self.epochs = epochs
        self.seed = seed
        self._device = device
        self.spec = get_task(self.task)
        self._check_data()
        self.model, self.tokenizer = self._load_pretrained(self.model_name())
        model_type = str(getattr(self.model.config, "model_type", "") or "model")
        self.family = FAMILIES.get(model_type, model_type.upper())
        self._setup_inputs()
        self._token_types = "token_type_ids" in self.tokenizer.model_input_names
        self._amp_dtype = amp_dtype(device, cfg.amp)
        self.optimizer = self._make_optimizer()
        total = max(1, epochs * self.steps_per_epoch())
        from transformers import get_linear_schedule_with_warmup

        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, num_warmup_steps=int(round(cfg.warmup_ratio * total)),
            num_training_steps=total)
        self.scaler = self._new_scaler()

    # ---- setup ---------------------------------------------------------------------
    def _new_scaler(self) -> "torch.amp.GradScaler | None":
        """A fresh fp16 loss scaler (fp16 autocast only; bf16 and fp32 need none)."""
        return torch.amp.GradScaler("cuda") if self._amp_dtype == torch.float16 else None

    @property
    def device(self) -> str:
        return self._device

    def model_name(self) -> str:
        """The configured student model (subclasses may substitute a task default)."""
        return self.cfg.model

    def _check_data(self) -> None:
        """Validate the data and the metric before anything is loaded (ConfigError/DataError)."""
        if getattr(self.data, "task", self.task) != self.task:
            raise DataError(f"the data is for task {self.data.task!r}, not {self.task!r}",
                            f"load the data with data.task = {self.task!r}")
        self.metric = self.cfg.metric
        self.metric_names = metric_order(self.task, self.cfg.metric)  # ConfigError if incompatible
        self._check_rows()

    def _setup_inputs(self) -> None:
        """Hook run right after the model and tokenizer load, before the optimizer is built."""

    def _check_rows(self) -> None:
        for split in ("train", "validation", "test", "selection"):
            rows = self.data.split(split)
            if not rows and split != "selection":  # no selection split: choose on validation
                raise DataError(f"the {split} split is empty", f"use a dataset with {split} rows")
            for i, row in enumerate(rows):
                missing = [k for k in self.row_keys if k not in row]
                if missing:
                    raise DataError(f"{split} row {i} lacks {missing[0]!r} for task {self.task!r}",
                                    f"give rows of the form {self.spec.row_schema}")
                self.check_row(split, i, row)

    def check_row(self, split: str, index: int, row: dict) -> None:
        """Raise DataError if `row` cannot be used (subclasses check values)."""

    def model_kwargs(self) -> dict[str, Any]:
        return {}

    def model_description(self) -> str:
        """How load errors name the model, e.g. "qa student model"."""
        return f"{self.task} student model"

    def _load_pretrained(self, name: str):
        import transformers
        from transformers import AutoTokenizer

        auto = getattr(transformers, self.auto_class)
        source = resolve_student_model(name)
        path = Path(source).expanduser()
        if path.exists():
            source = str(path)
        elif looks_like_path(source):
            raise ModelError(f"student model path {name!r} does not exist", MODEL_FIX)
        torch.manual_seed(student_seed(self.seed, "init"))  # new task heads start from the seed
        try:
            with quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(source)
                model = auto.from_pretrained(source, **self.model_kwargs())
        except Exception as exc:  # any failure to load is a model problem for the user
            raise ModelError(f"cannot load {self.model_description()} {name!r} ({reason(exc)})",
                             MODEL_FIX) from None
        if tokenizer.pad_token is None:
            candidates = (getattr(tokenizer, attr) for attr in self.pad_fallbacks)
            fallback = next((token for token in candidates if token), None)
            if fallback is None:
                raise ModelError(f"the tokenizer of {name!r} has no padding token", self.pad_fix)
            tokenizer.pad_token = fallback
        model.config.pad_token_id = tokenizer.pad_token_id
        model.float().to(self._device)
        return model, tokenizer

    def _single_template(self) -> tuple[list[int], list[int]]:
        """The special ids the tokenizer puts before and after a single sequence."""
        plain = self.tokenizer("hello", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("hello")["input_ids"]
        for start in range(len(full) - len(plain) + 1):
            if full[start:start + len(plain)] == plain:
                return full[:start], full[start + len(plain):]
        return [], []  # an unusual template

    def special_tokens_text(self, ids: list[int]) -> str:
        """Special token ids as text, e.g. [102] -> "[SEP]", [2, 2] -> "</s></s>"."""
        return "".join(self.tokenizer.convert_ids_to_tokens(ids))

    def _make_optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            lowered = name.lower()
            if param.ndim < 2 or name.endswith("bias") or "layernorm" in lowered \
                    or "layer_norm" in lowered:
                no_decay.append(param)
            else:
                decay.append(param)
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        # Fused AdamW: one kernel per parameter group instead of torch's default foreach loop.
        # Same maths (rounding differs at ~1e-7); 12% of a CPU epoch at batch 16 (BENCHMARKS.md).
        # A resumed optimizer keeps the kernel it was saved with (load_state_dict restores it).
        fused = self._device.split(":")[0] in ("cpu", "cuda")
        return torch.optim.AdamW(groups, lr=self.cfg.lr, fused=fused or None)

    def autocast(self):
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self._amp_dtype)

    def move(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor onto the student's device. On CUDA it is pinned and copied without
        blocking: a blocking host-to-GPU copy waits for all queued GPU work (the previous
        step's backward pass), and a non-blocking one from pageable memory is staged."""
        if not self._device.startswith("cuda"):
            return tensor.to(self._device)
        return tensor.pin_memory().to(self._device, non_blocking=True)

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: self.move(v) for k, v in batch.items()}

    def index(self, rows: list[int]) -> torch.Tensor:
        """Row indices as a tensor on the device (for writing batch results into a buffer)."""
        return self.move(torch.tensor(rows, dtype=torch.long))

    def check_budget(self, budget: int, what: str) -> None:
        if budget <= 0:
            raise ConfigError(f"student.max_length {self.cfg.max_length} leaves no room for {what}",
                              f"use a max_length above {self.cfg.max_length - budget}")

    # ---- training ------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.train) / self.cfg.batch_size)

    def epoch_order(self, epoch: int) -> list[int]:
        """The permutation of training rows used in `epoch` (depends only on seed and epoch)."""
        generator = torch.Generator().manual_seed(student_seed(self.seed, "order", epoch))
        return torch.randperm(len(self.data.train), generator=generator).tolist()

    @abstractmethod
    def batch_loss(self, prefix: str, rows: list[dict]) -> torch.Tensor:
        """The training loss (a scalar tensor with grad) of `rows` with `prefix`."""

    def step_loss(self, prefix: str, rows: list[dict], epoch: int, step: int) -> torch.Tensor:
        """The loss of optimizer step `step` of `epoch` (students drawing per-step samples override)."""
        return self.batch_loss(prefix, rows)

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
            torch.manual_seed(student_seed(self.seed, "step", epoch, step))
            self.model.train()
            loss = self.step_loss(prefix, batch, epoch, step)
            lr = self.optimizer.param_groups[0]["lr"]
            value = self._loss_reader(loss)
            self._optimizer_step(loss)
            yield StepResult(epoch_step=step, loss=value(), lr=float(lr))

    @staticmethod
    def _loss_reader(loss: torch.Tensor):
        """A function returning the step's loss as a float.

        On CUDA the loss is copied to pinned host memory right after the forward pass and
        only that copy is waited for, so reading it does not wait for the backward pass and
        the optimizer step: the host prepares the next batch while the GPU finishes this
        step. Elsewhere the value is read directly."""
        if not loss.is_cuda:
            return lambda: float(loss.detach())
        host = torch.empty((), dtype=loss.dtype, pin_memory=True)
        host.copy_(loss.detach(), non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()

        def read() -> float:
            copied.synchronize()
            return float(host)

        return read

    def _optimizer_step(self, loss: torch.Tensor) -> None:
        """Backward, clip, step the optimizer (through the fp16 scaler if any) and the schedule."""
        self.optimizer.zero_grad(set_to_none=True)
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

    def _clip(self) -> None:
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)

    # ---- evaluation ----------------------------------------------------------------
    def evaluate(self, prefix: str, split: str = "validation") -> dict[str, float]:
        return self.score_prefixes([prefix], split)[0]

    def ordered(self, metrics: dict[str, float]) -> dict[str, float]:
        """`metrics` with the ranking metric first, then the task's other metrics."""
        return {name: metrics[name] for name in self.metric_names if name in metrics}

    # ---- checkpoints ---------------------------------------------------------------
    def save(self, directory: Path, training_state: bool = True) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)  # safetensors
        self.tokenizer.save_pretrained(directory)
        if training_state:
            self._save_training_state(directory)

    def load(self, directory: Path, training_state: bool = True) -> None:
        import transformers

        directory = self._checkpoint_dir(directory)
        try:
            with quiet_transformers():
                saved = getattr(transformers, self.auto_class).from_pretrained(directory)
            self.model.load_state_dict(saved.float().state_dict())
        except Exception as exc:  # a missing/corrupt/mismatched checkpoint
            raise self._unreadable_checkpoint(directory, exc) from None
        del saved
        if training_state:
            self._load_training_state(directory)

    def _checkpoint_dir(self, directory: Path) -> Path:
        """`directory` as a Path; ModelError if there is no such folder (the checks every
        student's `load` starts with)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ModelError(f"checkpoint directory {str(directory)!r} does not exist",
                             self.checkpoint_fix)
        return directory

    def _unreadable_checkpoint(self, directory: Path, exc: BaseException) -> ModelError:
        """The error for a checkpoint whose files cannot be read (missing, corrupt, mismatched)."""
        return ModelError(f"cannot load checkpoint {str(directory)!r} ({reason(exc)})",
                          self.checkpoint_fix)

    def _save_training_state(self, directory: Path) -> None:
        """Optimizer, schedule and (fp16 only) scaler state, next to the weights."""
        torch.save(self.optimizer.state_dict(), directory / OPTIMIZER_FILE)
        torch.save(self.scheduler.state_dict(), directory / SCHEDULER_FILE)
        if self.scaler is not None:
            torch.save(self.scaler.state_dict(), directory / SCALER_FILE)

    def _load_training_state(self, directory: Path) -> None:
        """Optimizer and schedule (required), and the fp16 scaler when this run uses one.

        A checkpoint written on the CPU, on a bf16 GPU or with amp off has no scaler state:
        an fp16 run resuming it starts a fresh scaler (its scale recalibrates within a few
        steps, as at the start of any fp16 run). A scaler file that this run does not need
        (resuming an fp16 checkpoint on the CPU) is ignored."""
        needed = [OPTIMIZER_FILE, SCHEDULER_FILE]
        missing = [name for name in needed if not (directory / name).is_file()]
        if missing:
            raise ModelError(f"checkpoint {str(directory)!r} lacks {', '.join(missing)}",
                             self.checkpoint_fix)
        self.optimizer.load_state_dict(self._torch_load(directory / OPTIMIZER_FILE))
        self.scheduler.load_state_dict(self._torch_load(directory / SCHEDULER_FILE))
        if self.scaler is None:
            return
        if (directory / SCALER_FILE).is_file():
            self.scaler.load_state_dict(self._torch_load(directory / SCALER_FILE))
        else:
            log.info("checkpoint %s has no fp16 scaler state (written without fp16): "
                     "starting a fresh scaler", directory)
            self.scaler = self._new_scaler()

    def _torch_load(self, path: Path) -> dict:
        return torch.load(path, map_location=self._device, weights_only=True)
