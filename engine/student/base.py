"""The student interface. One implementation per task type (classification first).

The engine owns the loop; a student owns its model, optimizer, data order and metrics.
Everything random is derived from (seed, epoch) so a resumed run replays the same order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass(frozen=True)
class StepResult:
    epoch_step: int  # 1-based within the epoch
    loss: float
    lr: float


class Student(ABC):
    #: metric names this student reports, the first is the default ranking metric
    metric_names: tuple[str, ...] = ("accuracy",)
    #: how the prefix is placed, for the TA system prompt ("[CLS]prefix + context")
    placement: str = "[CLS]prefix + context"
    #: short architecture name for the TA system prompt ("BERT")
    family: str = "BERT"

    @abstractmethod
    def steps_per_epoch(self) -> int: ...

    @abstractmethod
    def train_epoch(self, prefix: str, epoch: int, start_step: int = 0) -> Iterator[StepResult]:
        """Yield one StepResult per optimizer step of `epoch` (1-based), starting after
        `start_step` steps already done (the skipped batches are not computed)."""

    @abstractmethod
    def evaluate(self, prefix: str, split: str = "validation") -> dict[str, float]:
        """Metrics of the current weights on `split` with `prefix` prepended."""

    def score_prefixes(self, prefixes: list[str], split: str = "validation") -> list[dict[str, float]]:
        """Metrics for many prefixes; implementations batch across prefixes."""
        return [self.evaluate(p, split) for p in prefixes]

    @abstractmethod
    def save(self, directory: Path, training_state: bool = True) -> None:
        """Write weights (safetensors) and, if training_state, optimizer/scheduler/RNG state."""

    @abstractmethod
    def load(self, directory: Path, training_state: bool = True) -> None: ...

    @property
    def device(self) -> str:
        return "cpu"
