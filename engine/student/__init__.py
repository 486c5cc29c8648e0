"""Students: the models GPTA trains. `build_student` picks the implementation the task registry
(`engine.tasks`) names for a task and a student.tuning."""

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
    # the task registry names the student per student.tuning (classification's frozen-encoder
    # tunings: L-Tuning, peft prefix / prompt tuning); importing it imports torch
    implementation = student_class(data.task, cfg.student.tuning)
    return implementation(cfg.student, data, epochs=cfg.loop.epochs, seed=cfg.seed, device=device)
