"""Students: the models GPTA trains. `build_student` picks the implementation for a task."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError
from engine.student.base import StepResult, Student

if TYPE_CHECKING:
    from engine.config import RunConfig

TASKS = ("classification",)

__all__ = ["StepResult", "Student", "TASKS", "build_student"]


def build_student(cfg: "RunConfig", data: Any, device: str) -> Student:
    """The student for `data.task`, on `device` (already resolved, see engine.device)."""
    if data.task not in TASKS:
        raise ConfigError(f"task {data.task!r} has no student", f"use one of: {', '.join(TASKS)}")
    if cfg.student.tuning != "full":
        raise ConfigError(f"student.tuning {cfg.student.tuning!r} is not available yet",
                          'use tuning = "full"')
    from engine.student.classification import ClassificationStudent  # imports torch

    return ClassificationStudent(cfg.student, data, epochs=cfg.loop.epochs, seed=cfg.seed,
                                 device=device)
