"""The fine-tune backend interface: dialogue gradients in, a tuned TA model out.

The engine submits a job, polls it at its own pace (honouring pause/stop between polls),
cancels it on stop, and on success switches the TA to `JobStatus.model`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

TERMINAL = ("succeeded", "failed", "cancelled", "timeout", "skipped")


@dataclass
class JobStatus:
    job_id: str
    status: str  # validating_files|queued|running|succeeded|failed|cancelled
    message: str = ""
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    eta_s: float | None = None
    model: str = ""  # the tuned model reference once succeeded
    # the job's own training accuracy on the assistant tokens (paper Figure 4, second reading):
    # OpenAI jobs report train_mean_token_accuracy; the local LoRA job computes it per step
    accuracy: float | None = None
    events: list[str] = field(default_factory=list)  # new job events since last poll

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class FinetuneBackend(ABC):
    name: str = "base"
    poll_interval_s: float = 1.0

    @abstractmethod
    def submit(self, examples: list[dict], base_model: str, workdir: Path, epoch: int) -> str:
        """Start a job on chat examples ({"messages": [...]}) and return its id."""

    @abstractmethod
    def poll(self, job_id: str) -> JobStatus:
        """Current status, without blocking."""

    def cancel(self, job_id: str) -> None:
        """Best-effort cancel (user stopped the run, or timeout)."""

    def set_paused(self, job_id: str, paused: bool) -> None:
        """Pause/resume a job that runs locally; remote jobs ignore it."""

    def can_attach(self, job_id: str) -> bool:
        """True if a job started by an earlier process can still be followed (remote jobs)."""
        return False

    def close(self) -> None:
        pass


class NoFinetune(FinetuneBackend):
    """Keeps the TA frozen (an ablation: GPTA without TA optimisation)."""

    name = "none"
    poll_interval_s = 0.0

    def submit(self, examples: list[dict], base_model: str, workdir: Path, epoch: int) -> str:
        return f"none-{epoch}"

    def poll(self, job_id: str) -> JobStatus:
        return JobStatus(job_id, "skipped", message="fine-tune backend 'none': TA stays frozen")
