"""Students: the models GPTA trains. `build_student` picks the implementation for a task."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError
from engine.student.base import StepResult, Student
from engine.tasks import TASKS as TASK_SPECS
from engine.tasks import student_class

if TYPE_CHECKING:
    from engine.config import RunConfig

TASKS = tuple(TASK_SPECS)

__all__ = ["StepResult", "Student", "TASKS", "build_student"]


def build_student(cfg: "RunConfig", data: Any, device: str) -> Student:
    """The student for `data.task`, on `device` (already resolved, see engine.device)."""
    if data.task not in TASKS:
        raise ConfigError(f"task {data.task!r} has no student", f"use one of: {', '.join(TASKS)}")
    if cfg.student.tuning != "full":  # frozen encoder: L-Tuning or peft prefix / prompt tuning
        if data.task != "classification":
            raise ConfigError(f"student.tuning {cfg.student.tuning!r} works only for classification",
                              'use tuning = "full" for this task')
        if cfg.student.tuning in ("prefix", "prompt"):
            from engine.student.soft_prompt import SoftPromptStudent as Frozen  # imports torch
        else:
            from engine.student.ltuning import LTuningStudent as Frozen  # imports torch
        return Frozen(cfg.student, data, epochs=cfg.loop.epochs, seed=cfg.seed, device=device)
    implementation = student_class(data.task)  # imports torch and the student's module
    return implementation(cfg.student, data, epochs=cfg.loop.epochs, seed=cfg.seed, device=device)
