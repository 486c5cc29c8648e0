"""The teaching-assistant (TA) interface: a model that proposes prefixes.

`messages` are OpenAI-style chat messages built by `engine.prompts`. A chat backend sends
them as they are; a base (non-chat) local model renders them as a plain-text transcript.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

#: polled by a TA while it works; True means "the user stopped the run: give up now"
StopCheck = Callable[[], bool]


@dataclass
class TAReply:
    texts: list[str]  # raw completions; each may hold one or several prefixes
    usage: dict = field(default_factory=dict)  # prompt_tokens, completion_tokens, total_tokens
    latency_s: float = 0.0
    model: str = ""


class TeachingAssistant(ABC):
    backend: str = "base"

    @property
    @abstractmethod
    def model_name(self) -> str:
        """The model currently answering (changes after a successful fine-tune)."""

    @abstractmethod
    def propose(self, messages: list[dict], n: int, temperature: float, seed: int, *,
                should_stop: StopCheck | None = None) -> TAReply:
        """Ask for `n` new prefixes. `seed` makes local sampling reproducible.

        A backend polls `should_stop()` while it works and raises `engine.errors.StopRun`
        (abandoning the request) as soon as it returns True.
        """

    @abstractmethod
    def use_model(self, model_ref: str) -> None:
        """Switch to a tuned model: an OpenAI model id, or a local adapter directory."""

    def prompt_examples(self) -> list[str]:
        """The worked-example prefixes this TA puts into its own prompt (none for chat TAs).

        The engine rejects generated prefixes that are near copies of them.
        """
        return []

    def close(self) -> None:
        """Release resources (HTTP clients, model weights)."""
