"""Local LoRA fine-tuning of the TA on dialogue gradients, in a background thread.

Each job loads the base causal LM with the same loader as `engine.ta.local.LocalTA`, renders
every example's prompt exactly as the TA renders it at generation time (chat template or
plain-text transcript), and trains a PEFT LoRA adapter with the loss on the assistant tokens
only. The adapter is saved atomically to ``<workdir>/ta-adapters/epoch-<epoch>/`` and handed
to `LocalTA.use_model`.

The caller is not blocked: `submit` starts a thread and returns; `poll` reads a snapshot.
Pause and cancel take effect between optimizer steps; `cancel` returns once the job has ended
(at most the step in progress), so a borrowed TA model is back when it returns. Nothing raised in the thread escapes:
a failure becomes status "failed" with the error as the message.

Batches are left-padded so every example's answer ends at the last position; the model then
computes logits only for the last (longest answer + 1) positions instead of the whole prompt,
which for Gemma's 262k-word vocabulary halves the cost of a step.
"""

from __future__ import annotations

import gc
import json
import math
import random
import shutil
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import FinetuneConfig
from engine.errors import DataError, GptaError
from engine.finetune.base import FinetuneBackend, JobStatus
from engine.fsutil import replace_dir
from engine.resources import DEFAULT_TA
from engine.ta.local import (encode_training_example, live_ta, load_causal_lm, model_label,
                             ta_dtype, use_chat_template)

ADAPTERS_DIR = "ta-adapters"
EXAMPLE_FIX = "pass dialogue gradients shaped like engine.prompts.window_example: " \
              '{"messages": [system, user, assistant]}'


class _Cancelled(Exception):
    pass


@dataclass
class _Job:
    job_id: str
    epoch: int
    examples: list
    base_model: str
    workdir: Path
    status: str = "queued"
    message: str = ""
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    eta_s: float | None = None
    model: str = ""
    accuracy: float | None = None  # token accuracy of the last step's assistant tokens
    losses: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    paused: bool = False
    cancelled: bool = False
    cond: threading.Condition = field(default_factory=threading.Condition)
    thread: threading.Thread | None = None

    def note(self, event: str, **updates: Any) -> None:
        """Append a job event and update fields (status, step, loss, message, ...) together."""
        with self.cond:
            for key, value in updates.items():
                setattr(self, key, value)
            if event:
                self.events.append(event)

    def checkpoint(self) -> None:
        """Between steps: wait while paused, raise when cancelled."""
        with self.cond:
            while self.paused and not self.cancelled:
                self.cond.wait(0.5)
            if self.cancelled:
                raise _Cancelled()


def _validate(examples: Any) -> list[list[dict]]:
    if not isinstance(examples, list) or not examples:
        raise DataError("the fine-tune job got no examples", EXAMPLE_FIX)
    out = []
    for i, example in enumerate(examples):
        messages = example.get("messages") if isinstance(example, dict) else None
        ok = isinstance(messages, list) and len(messages) >= 2 and all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in
            ("system", "user", "assistant") for m in messages)
        if not ok or messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
            raise DataError(f"fine-tune example {i} is not a chat example ending with an assistant answer",
                            EXAMPLE_FIX)
        out.append(messages)
    return out


def _truncate(prompt: list[int], target: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Fit into max_length by dropping the oldest prompt tokens (keeping the first, e.g. <bos>)."""
    if len(prompt) + len(target) <= max_length:
        return prompt, target
    target = target[: max_length // 2]
    keep = max_length - len(target)
    return prompt[:1] + prompt[len(prompt) - (keep - 1):], target


def _save_adapter(model: Any, workdir: Path, epoch: int, log: dict) -> Path:
    """Write the adapter to a temporary sibling, then swap it into ta-adapters/epoch-N."""
    from engine.paths import contained

    root = contained(workdir, ADAPTERS_DIR, "TA adapters folder")  # a linked folder is refused
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"epoch-{epoch}"
    tmp = Path(tempfile.mkdtemp(prefix=f".epoch-{epoch}.", dir=root))
    try:
        model.save_pretrained(str(tmp))
        (tmp / "training_log.json").write_text(json.dumps(log, indent=1), encoding="utf-8")
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class LocalLoRAFinetune(FinetuneBackend):
    """LoRA jobs on this machine (see module doc). `ta_model` is the TA's base model name."""

    name = "local"
    poll_interval_s = 1.0
    cancel_wait_s = 600.0  # longest wait in cancel() for the step in progress to end

    def __init__(self, cfg: FinetuneConfig, device: str = "cpu", ta_model: str = DEFAULT_TA, *,
                 seed: int = 0, max_length: int = 1024, prompt_format: str = "auto",
                 target_modules: str | list[str] = "all-linear", dtype: Any = None,
                 gradient_checkpointing: bool = False, share_ta: bool = True):
        self.cfg = cfg
        self.device = device
        self.ta_model = ta_model
        self.seed = int(seed)
        self.max_length = int(max_length)
        self.prompt_format = prompt_format
        self.target_modules = target_modules
        self.dtype = dtype  # None: the TA's rule (bf16 on a GPU with native bf16, else float32)
        self.gradient_checkpointing = bool(gradient_checkpointing)  # trades compute for memory
        self.share_ta = bool(share_ta)  # train on an open LocalTA's weights (no second copy)
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    # ---- FinetuneBackend ---------------------------------------------------------------
    def submit(self, examples: list[dict], base_model: str, workdir: Path, epoch: int) -> str:
        """Start a job; `base_model` is the TA model name (or an adapter dir to keep training)."""
        job = _Job(job_id=f"local-e{epoch}-{uuid.uuid4().hex[:8]}", epoch=int(epoch),
                   examples=examples, base_model=base_model or self.ta_model, workdir=Path(workdir))
        job.thread = threading.Thread(target=self._run, args=(job,), name=f"gpta-lora-{job.job_id}",
                                      daemon=True)
        with self._lock:
            self._jobs[job.job_id] = job
        job.note(f"queued: {len(examples) if isinstance(examples, list) else 0} examples")
        job.thread.start()
        return job.job_id

    def poll(self, job_id: str) -> JobStatus:
        job = self._jobs.get(job_id)
        if job is None:
            return JobStatus(job_id, "failed", message=f"unknown local fine-tune job {job_id!r} "
                             "(local jobs do not survive a restart; the engine submits a new one)")
        with job.cond:
            events, job.events = job.events, []
            return JobStatus(job.job_id, job.status, message=job.message, step=job.step,
                             total_steps=job.total_steps, loss=job.loss, eta_s=job.eta_s,
                             model=job.model, events=events, accuracy=job.accuracy)

    def set_paused(self, job_id: str, paused: bool) -> None:
        job = self._jobs.get(job_id)
        if job is None:
            return
        with job.cond:
            if job.paused != paused and not job.cancelled and job.status in ("queued", "running"):
                job.events.append("paused" if paused else "resumed")
            job.paused = paused
            job.cond.notify_all()

    def cancel(self, job_id: str) -> None:
        """Cancel at the next step boundary and return once the job's thread has ended, so that a
        borrowed TA has its weights back (without LoRA layers) when the engine moves on: after a
        timeout the next epoch asks the TA for prefixes at once."""
        job = self._jobs.get(job_id)
        if job is None:
            return
        with job.cond:
            job.cancelled = True
            job.cond.notify_all()
        if job.thread is not None and job.thread is not threading.current_thread():
            job.thread.join(self.cancel_wait_s)

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        """Block until the job's thread ends (for scripts and tests), then poll."""
        job = self._jobs.get(job_id)
        if job is not None and job.thread is not None:
            job.thread.join(timeout)
        return self.poll(job_id)

    def losses(self, job_id: str) -> list[float]:
        """Training loss of every step so far."""
        job = self._jobs.get(job_id)
        if job is None:
            return []
        with job.cond:
            return list(job.losses)

    def close(self) -> None:
        """Cancel running jobs and give their threads a moment to finish the current step."""
        for job in list(self._jobs.values()):
            self.cancel(job.job_id)
        for job in list(self._jobs.values()):
            if job.thread is not None:
                job.thread.join(timeout=30)

    # ---- the job thread -----------------------------------------------------------------
    def _run(self, job: _Job) -> None:
        try:
            conversations = _validate(job.examples)
            job.checkpoint()
            self._train(job, conversations)
        except _Cancelled:
            job.note("cancelled", status="cancelled", message="cancelled before the adapter was saved",
                     eta_s=None)
        except GptaError as exc:
            job.note(f"failed: {exc}", status="failed", message=str(exc), eta_s=None)
        except Exception as exc:  # noqa: BLE001 - never let the thread die silently
            text = " ".join(str(exc).split())[:400]
            job.note(f"failed: {type(exc).__name__}: {text}", status="failed",
                     message=f"{type(exc).__name__}: {text}", eta_s=None)
        finally:
            gc.collect()

    def _base(self, job: _Job) -> tuple[str, Path | None]:
        """(base model name, adapter to continue from or None)."""
        ref = Path(job.base_model).expanduser()
        if ref.is_dir() and (ref / "adapter_config.json").is_file():
            return self.ta_model, ref
        return job.base_model, None

    @contextmanager
    def _base_weights(self, job: _Job, base_name: str, adapter: Path | None):
        """(model, tokenizer): borrowed from the open LocalTA of this model, else loaded."""
        lender = live_ta(base_name, self.device) if self.share_ta else None
        what = f"{model_label(base_name)}" + (f" with adapter {adapter.name}" if adapter else "")
        if lender is not None:
            job.note(f"training on the TA's own weights of {what}", status="running")
            with lender.lend_base() as pair:
                yield pair
            return
        job.note(f"loading base model {what}", status="running")
        yield load_causal_lm(base_name, self.device, ta_dtype(self.device, self.dtype))

    def _train(self, job: _Job, conversations: list[list[dict]]) -> None:
        base_name, adapter = self._base(job)
        with self._base_weights(job, base_name, adapter) as (model, tokenizer):
            path, step = self._train_on(job, conversations, model, tokenizer, base_name, adapter)
        # Success is reported only once a borrowed base model is back with the TA, without LoRA
        # layers: the engine loads the new adapter onto it as soon as it sees "succeeded".
        job.note(f"adapter saved to {ADAPTERS_DIR}/{path.name}", status="succeeded",
                 model=str(path), eta_s=0.0,
                 message=f"{step} steps, final loss {job.loss:.4f}" if job.loss is not None else "")

    def _train_on(self, job: _Job, conversations: list[list[dict]], model: Any, tokenizer: Any,
                  base_name: str, adapter: Path | None) -> tuple[Path, int]:
        import torch
        from peft import LoraConfig, PeftModel, get_peft_model

        cfg = self.cfg
        chat = use_chat_template(tokenizer, base_name, self.prompt_format)
        encoded = [_truncate(*encode_training_example(tokenizer, messages, chat), self.max_length)
                   for messages in conversations]
        empty = [i for i, (_, target) in enumerate(encoded) if not target]
        if empty:
            raise DataError(f"fine-tune example {empty[0]} has an empty answer after tokenization",
                            EXAMPLE_FIX)
        job.checkpoint()

        seed = self.seed * 1000 + job.epoch
        torch.manual_seed(seed)
        if adapter is not None:
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
        else:
            lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules=self.target_modules, task_type="CAUSAL_LM")
            model = get_peft_model(model, lora)
        try:
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            return self._fit(job, model, encoded, chat, base_name, adapter, seed, pad_id)
        finally:  # a borrowed base model goes back without LoRA layers
            if self.gradient_checkpointing:
                model.gradient_checkpointing_disable()
            model.unload()

    def _fit(self, job: _Job, model: Any, encoded: list, chat: bool, base_name: str,
             adapter: Path | None, seed: int, pad_id: int) -> tuple[Path, int]:
        import torch

        cfg = self.cfg
        if self.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr)
        batch_size = max(1, cfg.batch_size)
        per_epoch = math.ceil(len(encoded) / batch_size)
        total = per_epoch * cfg.epochs
        job.note(f"{len(encoded)} examples ({'chat template' if chat else 'transcript'}), "
                 f"{cfg.epochs} epoch(s) x {per_epoch} steps, LoRA r={cfg.lora_r}", total_steps=total)

        order_rng = random.Random(seed)
        device = next(model.parameters()).device
        amp = autocast_dtype(device)
        step, busy_s = 0, 0.0
        for _ in range(cfg.epochs):
            order = list(range(len(encoded)))
            order_rng.shuffle(order)
            for start in range(0, len(order), batch_size):
                job.checkpoint()
                t0 = time.perf_counter()
                batch = [encoded[i] for i in order[start:start + batch_size]]
                loss, accuracy = _train_step(model, optimizer, params, batch, pad_id, device, amp)
                step += 1
                busy_s += time.perf_counter() - t0
                eta = busy_s / step * (total - step)
                with job.cond:
                    job.losses.append(loss)
                    job.accuracies.append(accuracy)
                job.note(f"step {step}/{total} loss {loss:.4f} token accuracy {accuracy:.3f}",
                         step=step, loss=loss, accuracy=accuracy, eta_s=eta)
        job.checkpoint()
        log = {"base_model": base_name, "continued_from": str(adapter) if adapter else "",
               "prompt_format": "chat" if chat else "transcript", "examples": len(encoded),
               "epochs": cfg.epochs, "batch_size": batch_size, "lr": cfg.lr, "lora_r": cfg.lora_r,
               "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout, "seed": seed,
               "losses": list(job.losses), "token_accuracies": list(job.accuracies)}
        return _save_adapter(model, job.workdir, job.epoch, log), step


def autocast_dtype(device: Any) -> Any:
    """bf16 autocast on a GPU with native bf16; None (float32) elsewhere. Never fp16: Gemma 3
    overflows in it."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        with torch.cuda.device(device):
            if torch.cuda.is_bf16_supported(including_emulation=False):
                return torch.bfloat16
    return None


def _train_step(model: Any, optimizer: Any, params: list, batch: list[tuple[list[int], list[int]]],
                pad_id: int, device: Any, amp: Any = None) -> float:
    """One optimizer step on a left-padded batch; cross-entropy on the answer tokens only.

    No KV cache is built (use_cache=False); `amp` is the autocast dtype (None: float32).
    """
    import contextlib

    import torch
    import torch.nn.functional as F

    length = max(len(p) + len(t) for p, t in batch)
    keep = max(len(t) for _, t in batch) + 1  # positions whose logits predict answer tokens
    input_ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), length), dtype=torch.long)
    labels = torch.full((len(batch), length), -100, dtype=torch.long)
    for row, (prompt, target) in enumerate(batch):
        ids = prompt + target
        input_ids[row, length - len(ids):] = torch.tensor(ids)
        attention[row, length - len(ids):] = 1
        labels[row, length - len(target):] = torch.tensor(target)
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    inputs = {"input_ids": input_ids.to(device), "attention_mask": attention.to(device),
              "position_ids": position_ids.to(device)}
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=amp) if amp is not None \
        else contextlib.nullcontext()
    with autocast:
        try:
            logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits
        except TypeError:  # a model without logits_to_keep computes them all
            logits = model(**inputs, use_cache=False).logits
    logits = logits[:, -keep:, :]
    targets = labels[:, length - keep + 1:].reshape(-1).to(device)
    flat = logits[:, :-1].reshape(-1, logits.shape[-1])
    loss = F.cross_entropy(flat.float(), targets, ignore_index=-100)
    with torch.no_grad():  # the job's own training accuracy: argmax hits on the answer tokens
        answer = targets != -100
        hits = (flat.detach().argmax(-1) == targets) & answer
        accuracy = float(hits.sum()) / max(1, int(answer.sum()))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach()), accuracy
