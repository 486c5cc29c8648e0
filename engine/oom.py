"""Out of GPU memory: one line that names the setting to turn, and the memory given back.

An out-of-memory error deep in a forward pass is a traceback of a hundred frames, and every
frame holds tensors (the student on the GPU, its activations). `Engine.run` turns it into
`OutOfMemory`, a one-line `GptaError` whose fix names the knob for the work that ran out:

- training the student: ``student.batch_size`` (or ``student.max_length``), a new run;
- scoring prefixes (validation, history, test): ``student.eval_batch_size``, which a resumed
  session may change (``gpta resume NAME --eval-batch-size N``);
- the local TA (generation, loading, LoRA fine-tuning): a smaller ``ta.model`` or
  ``finetune.batch_size``.

The original exception and its traceback are dropped before the error is raised, so nothing
keeps the frames (and the GPU tensors they reference) alive, and the CUDA cache is emptied.
The session keeps the last checkpoint it recorded, so it stays resumable.
"""

from __future__ import annotations

import gc
import traceback
from pathlib import PurePath
from typing import TYPE_CHECKING

from engine.errors import GptaError

if TYPE_CHECKING:
    from engine.config import RunConfig

#: where the work that ran out of memory is found, by the folder of its frames
_TA_PARTS = ("engine/ta/", "engine/finetune/")
_STUDENT_TRAINING = ("train_epoch", "batch_loss", "step_loss", "_optimizer_step")
_SCORING_PHASES = ("validating", "collecting", "testing")


class OutOfMemory(GptaError):
    """The accelerator ran out of memory; the session is resumable from its last checkpoint."""


def oom_class() -> tuple[type[BaseException], ...]:
    """torch's out-of-memory exception classes (torch.OutOfMemoryError, torch >= 2.5; the
    older torch.cuda.OutOfMemoryError is the same class where both exist)."""
    import torch

    found = {getattr(torch, "OutOfMemoryError", None),
             getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)}
    return tuple(c for c in found if isinstance(c, type))


def find_oom(exc: BaseException) -> BaseException | None:
    """The out-of-memory error behind `exc` (itself, or its cause/context: a TA load error
    wraps the OOM it hit), or None."""
    classes = oom_class()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, classes):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _where(exc: BaseException, phase: str) -> str:
    """"training", "scoring" or "ta": what ran out of memory, from the traceback's frames."""
    frames = traceback.extract_tb(exc.__traceback__)
    paths = [PurePath(f.filename).as_posix() for f in frames]
    if any(part in path for path in paths for part in _TA_PARTS):
        return "ta"
    if any(f.name in _STUDENT_TRAINING for f in frames) or phase == "training":
        return "training"
    if phase in _SCORING_PHASES:
        return "scoring"
    return "ta" if phase in ("setup", "finetuning") else "scoring"


def describe(exc: BaseException, phase: str, cfg: "RunConfig", device: str,
             eval_batch: int | None = None) -> OutOfMemory:
    """The one-line error for an out-of-memory `exc` raised in `phase` of a run of `cfg`."""
    where = _where(exc, phase)
    memory = "GPU" if device.startswith("cuda") else device.upper() if device != "cpu" else "host"
    student = cfg.student
    name = cfg.name or "NAME"
    if where == "training":
        what = (f"training the student (batch {student.batch_size} x max_length "
                f"{student.max_length})")
        fix = (f"start a new run with a smaller student.batch_size (now {student.batch_size}) or "
               f"student.max_length, or free the GPU memory other processes hold and resume "
               f"with `gpta resume {name}`")
    elif where == "scoring":
        rows = eval_batch or student.eval_batch_size
        what = f"scoring prefixes ({rows} rows per batch)"
        smaller = max(1, rows // 4)
        fix = (f"resume with a smaller student.eval_batch_size: "
               f"`gpta resume {name} --eval-batch-size {smaller}`")
    else:
        what = f"running the teaching assistant {cfg.ta.model!r}"
        fix = (f"use a smaller TA (ta.model) or finetune.batch_size (now "
               f"{cfg.finetune.batch_size}) in a new run, or free the GPU memory other "
               f"processes hold and resume with `gpta resume {name}`")
    return OutOfMemory(f"out of {memory} memory on {device} while {what}; the session keeps its "
                       f"last checkpoint", fix)


def free_memory(device: str) -> None:
    """Collect garbage and hand the CUDA caching allocator's free blocks back to the driver."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
