"""What the frozen-encoder classification students share (L-Tuning and peft prefix / prompt
tuning): only a few new modules train, the pretrained encoder stays fixed.

- The encoder is frozen (no gradients) and stays in eval mode while the new modules train:
  its weights never change, so dropout inside it would only add noise to the features the new
  modules read (and, for L-Tuning, make them differ from the label states encoded once in eval
  mode). `FrozenEncoderModel.train()` keeps it there; the trainable head keeps its own dropout.
- Checkpoints hold only the trainable tensors (safetensors) and a JSON file that identifies
  them; the frozen encoder is the configured model itself.
- Summary of an input: the mean of its final token states (padding and virtual positions left
  out). With a frozen encoder a mean keeps what sentence encoders such as MiniLM were trained
  to put there, where an untuned [CLS] state carries little.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.student.classification import ClassificationStudent


def mean_summary(states: torch.Tensor, attention_mask: torch.Tensor, start: int = 0) -> torch.Tensor:
    """(B, hidden): the mean of `states[:, start:]` over the positions `attention_mask` keeps."""
    text = states[:, start:]
    weights = attention_mask.to(text.dtype).unsqueeze(-1)
    return (text * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def classifier_head(hidden: int, outputs: int, dropout: float) -> nn.Sequential:
    """The trainable head on a summary: dropout, dense + tanh, dropout, linear."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Dropout(dropout), nn.Linear(hidden, outputs))


class FrozenEncoderModel(nn.Module):
    """Base of the models around a frozen `self.backbone`: `train()` leaves it in eval mode."""

    backbone: nn.Module

    def train(self, mode: bool = True) -> "FrozenEncoderModel":
        super().train(mode)
        self.backbone.eval()
        return self


class FrozenEncoderStudent(ClassificationStudent):
    """A classification student whose encoder is frozen; subclasses build `self.model` (a
    FrozenEncoderModel) and name their checkpoint files and identifying metadata."""

    #: the student.tuning values this student implements
    tunings: tuple[str, ...] = ()
    weights_file = "frozen.safetensors"
    meta_file = "frozen.json"
    #: metadata keys that must match between a checkpoint and the student loading it
    meta_keys: tuple[str, ...] = ("tuning",)
    #: values assumed for keys that checkpoints of older versions lack
    meta_defaults: dict[str, Any] = {}

    def __init__(self, cfg: Any, data: Any, epochs: int, seed: int, device: str,
                 virtual_tokens: int):
        from engine.errors import ConfigError

        if cfg.tuning not in self.tunings:
            raise ConfigError(f"invalid value {cfg.tuning!r} for student.tuning",
                              f"use one of {', '.join(self.tunings)} (or another student)")
        if virtual_tokens < 1:
            raise ConfigError(f"invalid number of virtual tokens {virtual_tokens}", "use 1 or more")
        self.tuning = cfg.tuning
        self.virtual_tokens = virtual_tokens
        self._prepare(cfg, data)
        super().__init__(cfg, data, epochs, seed, device)

    def _prepare(self, cfg: Any, data: Any) -> None:
        """Hook: check and derive what loading the model needs (runs before it loads)."""

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def parameter_counts(self) -> dict[str, int]:
        """{"trainable": the new modules, "total": including the frozen encoder}."""
        return {"trainable": sum(p.numel() for _, p in self.trainable_parameters()),
                "total": sum(p.numel() for p in self.model.parameters())}

    def _clip(self) -> None:
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for _, p in self.trainable_parameters()],
                                           self.cfg.grad_clip)

    def _check_prompt_positions(self, config: Any, virtual: int) -> None:
        """Refuse a max_length that leaves no position for `virtual` prompt tokens."""
        from engine.errors import ConfigError

        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and virtual + self.cfg.max_length > limit:
            raise ConfigError(
                f"student.max_length {self.cfg.max_length} plus {virtual} prompt "
                f"tokens exceeds the model's {limit} positions",
                f"use a max_length of at most {limit - virtual}")

    # ---- checkpoints ---------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, directory: Path, training_state: bool = True) -> None:
        """Only the trainable tensors (safetensors) plus what identifies them; the frozen
        encoder is the configured model itself."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({n: p.detach().cpu().contiguous() for n, p in self.trainable_parameters()},
                  str(directory / self.weights_file))
        (directory / self.meta_file).write_text(json.dumps(self._meta(), indent=2),
                                                encoding="utf-8")
        if training_state:
            self._save_training_state(directory)

    def load(self, directory: Path, training_state: bool = True) -> None:
        from safetensors.torch import load_file

        from engine.errors import ModelError

        directory = self._checkpoint_dir(directory)
        fix = self.checkpoint_fix
        missing = [f for f in (self.meta_file, self.weights_file) if not (directory / f).is_file()]
        if missing:
            raise ModelError(f"checkpoint {str(directory)!r} lacks {', '.join(missing)} "
                             f"(not an {self.cfg.tuning} checkpoint)", fix)
        try:
            meta = json.loads((directory / self.meta_file).read_text(encoding="utf-8"))
            tensors = load_file(str(directory / self.weights_file))
        except Exception as exc:  # a corrupt file
            raise self._unreadable_checkpoint(directory, exc) from None
        if not isinstance(meta, dict):
            raise ModelError(f"checkpoint {str(directory)!r} has a malformed {self.meta_file}", fix)
        mine = self._meta()
        for key in self.meta_keys:
            if meta.get(key, self.meta_defaults.get(key)) != mine[key]:
                raise ModelError(f"checkpoint {str(directory)!r} was written with {key} "
                                 f"{meta.get(key)!r}, this student has {mine[key]!r}", fix)
        params = dict(self.trainable_parameters())
        wrong = sorted(set(params) ^ set(tensors)) or sorted(
            n for n in params if tensors[n].shape != params[n].shape)
        if wrong:
            raise ModelError(f"checkpoint {str(directory)!r} does not match this student "
                             f"(parameter {wrong[0]})", fix)
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(tensors[name])
        if training_state:
            self._load_training_state(directory)
