"""Student training throughput: the engine's train_epoch vs a minimal PyTorch loop vs HF Trainer.

    python -m bench.training                      # 512 rows, batch 16, max_length 64, MiniLM
    python -m bench.training --device cuda --repeats 5

All three train the same model (the real default all-MiniLM-L6-v2, classification head
initialised from the same seed) on the same twitter-sentiment rows with the same prefix, batch
size, max_length, learning rate, weight decay, linear schedule and gradient clipping, for one
epoch each, rebuilt from the same initial weights every repeat:

- engine: `ClassificationStudent.train_epoch`, what the GPTA loop runs;
- minimal: `minimal_epoch` below, a hand-written loop doing the same maths and nothing else
  (its losses equal the engine's bit for bit on CPU, see tests/test_bench_equivalence.py);
- minimal, the other AdamW kernel: the same loop with the kernel the engine does not use
  (the engine uses fused AdamW on CPU and CUDA; torch's default is foreach), to show what the
  kernel is worth;
- HF Trainer: `transformers.Trainer` with its defaults otherwise (fused AdamW, no logging,
  no saving), timed from its epoch start to its epoch end.

Targets: engine >= 0.95x the minimal loop, and not slower than the HF Trainer.

On CUDA every contender runs on the --device given (the HF Trainer too: by default it takes
cuda:0 and spreads the model over every visible GPU with DataParallel, see
`single_device_arguments`), and the table has each contender's peak GPU memory (the peak
counter is reset before every run).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from bench.common import (GpuPeaks, Report, Timings, base_parser, default_task_data, machine_info,
                          prepare, progress, publish, ratio, run_main, speed_rows, stopwatch,
                          synchronize, verdict)

DEFAULT_PREFIX = "Classify the sentiment of this tweet as negative, neutral or positive:"
MINIMAL_TARGET = 0.95


@dataclass
class Setup:
    """What every contender shares."""

    model: str
    label_names: list[str]
    rows: list[dict]               # training rows {"text": str, "label": int}
    prefix: str = DEFAULT_PREFIX
    batch_size: int = 16
    max_length: int = 64
    lr: float = 2e-5
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 42
    device: str = "cpu"
    amp: bool = True
    fused: bool | None = None      # AdamW(fused=...): None is torch's default (foreach)

    @property
    def steps(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def student_config(self):
        from engine.config import StudentConfig

        return StudentConfig(model=self.model, lr=self.lr, weight_decay=self.weight_decay,
                             batch_size=self.batch_size, max_length=self.max_length,
                             warmup_ratio=0.0, grad_clip=self.grad_clip, amp=self.amp)


# ---- the minimal hand-written loop ---------------------------------------------------


def load_model(setup: Setup):
    """(model, tokenizer) initialised exactly as the engine's student does it."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from engine.resources import resolve_student_model
    from engine.seeds import student_seed

    source = resolve_student_model(setup.model)
    n = len(setup.label_names)
    torch.manual_seed(student_seed(setup.seed, "init"))  # the new classification head
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=n, id2label=dict(enumerate(setup.label_names)),
        label2id={label: i for i, label in enumerate(setup.label_names)},
        ignore_mismatched_sizes=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.sep_token or tokenizer.eos_token or tokenizer.cls_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.float().to(setup.device), tokenizer


def make_optimizer(model: torch.nn.Module, setup: Setup):
    """AdamW without weight decay on biases and LayerNorm weights, and a linear schedule
    (the engine student's recipe; `setup.fused` picks the fused AdamW kernel)."""
    from transformers import get_linear_schedule_with_warmup

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        lowered = name.lower()
        if param.ndim < 2 or name.endswith("bias") or "layernorm" in lowered or "layer_norm" in lowered:
            no_decay.append(param)
        else:
            decay.append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": setup.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=setup.lr,
                                  fused=setup.fused)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, setup.steps)
    return optimizer, scheduler


def minimal_epoch(model, tokenizer, optimizer, scheduler, setup: Setup, epoch: int = 1
                  ) -> Iterator[float]:
    """One epoch of plain PyTorch training; yields each step's loss.

    The row order and the per-step RNG reseed (dropout) follow the engine's recipe so that
    the two produce the same losses; both cost microseconds."""
    from engine.device import amp_dtype
    from engine.seeds import student_seed
    from engine.student.classification import join_input

    dtype = amp_dtype(setup.device, setup.amp)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    generator = torch.Generator().manual_seed(student_seed(setup.seed, "order", epoch))
    order = torch.randperm(len(setup.rows), generator=generator).tolist()
    model.train()
    for step in range(1, setup.steps + 1):
        batch = [setup.rows[i] for i in order[(step - 1) * setup.batch_size:step * setup.batch_size]]
        torch.manual_seed(student_seed(setup.seed, "step", epoch, step))
        enc = tokenizer([join_input(setup.prefix, r["text"]) for r in batch], truncation=True,
                        max_length=setup.max_length, padding=True, return_tensors="pt").to(setup.device)
        labels = torch.tensor([r["label"] for r in batch], device=setup.device)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            logits = model(**enc).logits
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), setup.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), setup.grad_clip)
            optimizer.step()
        scheduler.step()
        yield float(loss.detach())


# ---- the contenders ------------------------------------------------------------------


def engine_student(setup: Setup, data):
    from engine.student.classification import ClassificationStudent

    return ClassificationStudent(setup.student_config(), data, epochs=1, seed=setup.seed,
                                 device=setup.device)


def engine_uses_fused_adamw(student) -> bool:
    return bool(student.optimizer.param_groups[0].get("fused"))


def run_engine(setup: Setup, data) -> tuple[list[float], list[float]]:
    """([wall s, CPU s], losses) of one train_epoch of a freshly built engine student."""
    student = engine_student(setup, data)
    with stopwatch(setup.device) as t:
        losses = [result.loss for result in student.train_epoch(setup.prefix, 1)]
    return t, losses


def run_minimal(setup: Setup) -> tuple[list[float], list[float]]:
    model, tokenizer = load_model(setup)
    optimizer, scheduler = make_optimizer(model, setup)
    with stopwatch(setup.device) as t:
        losses = list(minimal_epoch(model, tokenizer, optimizer, scheduler, setup))
    return t, losses


def single_device_arguments(device: str, **kwargs: Any):
    """TrainingArguments that keep the Trainer on `device` and on it alone.

    transformers picks cuda:0 whatever the model's device, and with several visible GPUs
    sets n_gpu to all of them and wraps the model in DataParallel; a `--device cuda:1` run
    would time another GPU, or several. Here the device is the one asked for and n_gpu is 1
    (the CPU and the other devices keep transformers' own choice)."""
    from functools import cached_property

    from transformers import TrainingArguments

    class SingleDeviceArguments(TrainingArguments):
        @cached_property
        def _setup_devices(self) -> torch.device:
            chosen = TrainingArguments._setup_devices.func(self)
            if device.startswith("cuda"):
                chosen = torch.device(device)
                torch.cuda.set_device(chosen)
                self._n_gpu = 1
            return chosen

    return SingleDeviceArguments(**kwargs)


def run_hf_trainer(setup: Setup, workdir: Path) -> tuple[list[float], int]:
    """([wall s, CPU s] of the epoch, optimizer steps taken) of transformers.Trainer on the
    same setup."""
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback

    from engine.device import amp_dtype
    from engine.student.classification import join_input

    model, tokenizer = load_model(setup)
    enc = tokenizer([join_input(setup.prefix, r["text"]) for r in setup.rows], truncation=True,
                    max_length=setup.max_length)
    dataset = [{**{k: enc[k][i] for k in enc}, "labels": r["label"]} for i, r in enumerate(setup.rows)]
    dtype = amp_dtype(setup.device, setup.amp)
    args = single_device_arguments(
        setup.device, output_dir=str(workdir), per_device_train_batch_size=setup.batch_size,
        learning_rate=setup.lr, weight_decay=setup.weight_decay, num_train_epochs=1,
        lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=setup.grad_clip,
        seed=setup.seed, report_to="none", save_strategy="no", logging_strategy="no",
        disable_tqdm=True, remove_unused_columns=False, use_cpu=setup.device == "cpu",
        bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16,
        dataloader_pin_memory=setup.device.startswith("cuda"))
    device = setup.device

    class EpochTimer(TrainerCallback):
        def __init__(self) -> None:
            self.start = (0.0, 0.0)
            self.seconds = [0.0, 0.0]

        def on_epoch_begin(self, args, state, control, **kwargs):
            synchronize(device)
            self.start = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, args, state, control, **kwargs):
            synchronize(device)
            self.seconds = [time.perf_counter() - self.start[0], time.process_time() - self.start[1]]

    timer = EpochTimer()
    # the accelerate state behind the Trainer places tensors on the current CUDA device
    where = torch.cuda.device(torch.device(device)) if device.startswith("cuda") else nullcontext()
    with where:
        trainer = Trainer(model=model, args=args, train_dataset=dataset,
                          data_collator=DataCollatorWithPadding(tokenizer), callbacks=[timer])
        if device.startswith("cuda") and trainer.model.device != torch.device(device):
            raise RuntimeError(f"the HF Trainer put the model on {trainer.model.device}, "
                               f"not {device}")
        trainer.train()
    return timer.seconds, trainer.state.global_step


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--train-rows", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX)
    parser.add_argument("--no-hf", action="store_true", help="skip the HF Trainer contender")
    parser.add_argument("--no-other-kernel", action="store_true",
                        help="skip the minimal loop with the AdamW kernel the engine does not use")
    args = parser.parse_args()
    device = prepare(args)
    machine = machine_info(device)

    progress(f"loading twitter-sentiment ({args.train_rows} training rows)")
    data = default_task_data(train_size=args.train_rows, val_size=16, test_size=16, seed=args.seed)
    setup = Setup(model=args.model, label_names=list(data.label_names), rows=data.train,
                  prefix=args.prefix, batch_size=args.batch_size, max_length=args.max_length,
                  seed=args.seed, device=device)

    progress("warm-up: 3 steps of the engine student")
    student = engine_student(setup, data)
    for result in student.train_epoch(setup.prefix, 1):
        if result.epoch_step == 3:
            break
    # The minimal loop uses the engine's AdamW kernel so that their losses agree.
    setup.fused = True if engine_uses_fused_adamw(student) else None
    del student
    _free()

    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        contenders = {"engine: ClassificationStudent.train_epoch": lambda: run_engine(setup, data),
                      "minimal PyTorch loop": lambda: run_minimal(setup)}
        other = dataclasses.replace(setup, fused=None if setup.fused else True)
        other_name = f"minimal PyTorch loop, {'foreach' if setup.fused else 'fused'} AdamW"
        if not args.no_other_kernel:
            contenders[other_name] = lambda: run_minimal(other)
        if not args.no_hf:
            contenders["HF Trainer"] = lambda: run_hf_trainer(setup, Path(tmp))
        names = list(contenders)
        times = {name: Timings() for name in names}
        peaks = GpuPeaks(device)
        outcomes: dict[str, list[Any]] = {name: [] for name in names}
        for r in range(args.repeats):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                with peaks.measure(name):
                    seconds, outcome = contenders[name]()
                times[name].add(*seconds)
                outcomes[name].append(outcome)  # per-step losses; the HF Trainer: its step count
                _free()
                progress(f"repeat {r + 1}/{args.repeats}  {name}: {seconds[0]:.2f}s wall, "
                         f"{seconds[1]:.2f}s CPU")

    engine_name, minimal_name = names[0], names[1]
    report = Report("training", "Student training: engine vs minimal loop vs HF Trainer", device,
                    settings={"model": args.model, "dataset": "twitter-sentiment",
                              "train rows": len(setup.rows), "steps": setup.steps,
                              "batch_size": setup.batch_size, "max_length": setup.max_length,
                              "lr": setup.lr, "engine AdamW": "fused" if setup.fused else "foreach",
                              "repeats": args.repeats})
    headers = ["contender", "epoch wall s, median (min-max)", "epoch CPU s, median (min-max)",
               "samples/s (wall)", "speed vs minimal (wall)", "speed vs minimal (CPU)"]
    rows = speed_rows(times, minimal_name, len(setup.rows))
    if peaks.mib:
        headers.append("peak GPU MiB")
        rows = [row + [peak] for row, peak in zip(rows, peaks.column(names))]
    report.table(headers, rows)
    reference = outcomes[engine_name][0]
    gap = max(abs(a - b) for name in (engine_name, minimal_name) for run in outcomes[name]
              for a, b in zip(run, reference, strict=True))
    checks = [
        ["engine and minimal losses, every step and repeat",
         "identical" if gap == 0 else f"max abs difference {gap:.2e}"],
        [f"engine >= {MINIMAL_TARGET:.2f}x minimal loop",
         verdict(ratio(times[minimal_name], times[engine_name]), MINIMAL_TARGET)],
    ]
    if other_name in outcomes:
        drift = max(abs(a - b) for run in outcomes[other_name] for a, b in zip(run, reference, strict=True))
        checks.append([f"{other_name.split(', ')[1]} loop vs engine losses",
                       f"max abs difference {drift:.2e}"])
    if not args.no_hf:
        checks.append(["engine not slower than HF Trainer",
                       verdict(ratio(times["HF Trainer"], times[engine_name]), 1.0)])
        checks.append([f"HF Trainer optimizer steps per epoch (engine: {setup.steps})",
                       ", ".join(map(str, outcomes["HF Trainer"]))])
    report.table(["check", "value"], checks)
    report.notes.append("each contender is rebuilt from the same initial weights every repeat; "
                        "rounds rotate the order of the contenders")
    if not args.no_hf:
        report.notes.append("HF Trainer runs with its default optimizer (adamw_torch_fused), "
                            "logging and saving off; its epoch is timed by a callback "
                            "(on_epoch_begin to on_epoch_end), excluding its setup")
    publish(report, args, machine)


if __name__ == "__main__":
    run_main(main)
