"""Prefix-tuning and prompt-tuning students: the baselines of the L-Tuning paper.

`student.tuning = "prefix"` (Li & Liang 2021) and `"prompt"` (Lester et al. 2021) train free
virtual tokens in front of the same frozen encoder the L-Tuning students use, through peft's
own `PrefixTuningConfig` / `PromptTuningConfig` (no copy of their code):

    prefix  peft PrefixTuning with its reparameterisation (prefix_projection: S embeddings ->
            Linear(H, H) -> tanh -> Linear(H, 2·layers·H)), S keys and values per layer; about
            the trainable budget of lt-prefix's pooled map (2.07 M vs 2.07 M on MiniLM)
    prompt  peft PromptTuning, S input embeddings initialised from sampled vocabulary
            embeddings (Lester et al.'s better initialisation); prompt tuning has no map, so
            its budget is S·H plus the head (0.15 M vs lt-prompt's 0.45 M on MiniLM)

Both use S = `VIRTUAL_TOKENS` (8, as the L-Tuning students) and the same head on the mean of
the input's final token states (engine/student/frozen.py), so the methods differ only in how
the encoder is conditioned: free tokens here, label-derived tokens in L-Tuning. The head gives
K logits directly; training, scoring, data order, step-seeding and the GPTA text prefix are the
full student's (`ClassificationStudent`).

Positions. peft passes the prefix as a key/value cache; BERT then numbers the input's positions
after the cache (S..S+T-1). Like lt-prefix we keep the text at the positions it was pretrained
with: peft adds S to given position ids, so the model passes 0..T-1 minus S. A prompt takes real
positions 0..S-1 and shifts the text, as in lt-prompt and in peft.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from engine.config import StudentConfig
from engine.errors import ConfigError
from engine.seeds import student_seed
from engine.student.frozen import (FrozenEncoderModel, FrozenEncoderStudent, classifier_head,
                                   mean_summary)
from engine.student.ltuning import VIRTUAL_TOKENS

SOFT_PROMPT_TUNINGS = ("prefix", "prompt")


class Logits:
    """What `ClassificationStudent` reads from a model's output: `.logits`."""

    __slots__ = ("logits",)

    def __init__(self, logits: torch.Tensor):
        self.logits = logits


def peft_config(tuning: str, config: Any, virtual_tokens: int):
    """peft's PrefixTuningConfig / PromptTuningConfig for a frozen encoder with `config`."""
    from peft import PrefixTuningConfig, PromptTuningConfig, PromptTuningInit, TaskType

    if tuning == "prefix":
        return PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION,
                                  num_virtual_tokens=virtual_tokens, prefix_projection=True,
                                  encoder_hidden_size=config.hidden_size)
    return PromptTuningConfig(task_type=TaskType.FEATURE_EXTRACTION,
                              num_virtual_tokens=virtual_tokens,
                              prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)


class SoftPromptModel(FrozenEncoderModel):
    """A peft prefix- or prompt-tuned frozen encoder and a K-way head on its mean output."""

    def __init__(self, backbone: nn.Module, tuning: str, num_labels: int,
                 virtual_tokens: int = VIRTUAL_TOKENS):
        super().__init__()
        from peft import get_peft_model

        if tuning not in SOFT_PROMPT_TUNINGS:
            raise ConfigError(f"invalid value {tuning!r} for student.tuning",
                              f"use one of {', '.join(SOFT_PROMPT_TUNINGS)}")
        self.tuning = tuning
        self.slots = virtual_tokens
        config = backbone.config
        with warnings.catch_warnings():  # peft asks transformers a deprecated question
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                    category=FutureWarning)
            self.peft = get_peft_model(backbone, peft_config(tuning, config, virtual_tokens))
        dropout = float(getattr(config, "hidden_dropout_prob", 0.1) or 0.0)
        self.head = classifier_head(config.hidden_size, num_labels, dropout)

    @property
    def backbone(self) -> nn.Module:
        return self.peft.get_base_model()

    @property
    def config(self):
        return self.backbone.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> Logits:
        """K logits per row. Token type ids are all 0 for a single text; peft drops them (with
        a warning), so they are not passed."""
        return Logits(self.head(self.encode(input_ids, attention_mask)))

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, hidden): the mean final state of each row's input tokens."""
        with warnings.catch_warnings():
            # transformers deprecates the `past_key_values` name peft still passes the prefix by
            warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
            if self.tuning == "prefix":
                batch, length = input_ids.shape
                positions = torch.arange(length, device=input_ids.device) - self.slots
                out = self.peft(input_ids=input_ids, attention_mask=attention_mask,
                                position_ids=positions.expand(batch, length)).last_hidden_state
                return mean_summary(out, attention_mask, 0)
            out = self.peft(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_summary(out, attention_mask, self.slots)


class SoftPromptStudent(FrozenEncoderStudent):
    """A classification student trained with peft prefix or prompt tuning (`cfg.tuning`)."""

    checkpoint_fix = "resume from a checkpoint this student wrote (same model, tuning and labels)"
    weights_file = "soft_prompt.safetensors"
    meta_file = "soft_prompt.json"
    meta_keys = ("tuning", "label_names", "virtual_tokens", "hidden_size", "num_hidden_layers")

    tunings = SOFT_PROMPT_TUNINGS

    def __init__(self, cfg: StudentConfig, data: Any, epochs: int, seed: int, device: str,
                 virtual_tokens: int = VIRTUAL_TOKENS):
        super().__init__(cfg, data, epochs, seed, device, virtual_tokens)

    def _load_pretrained(self, name: str):
        classifier, tokenizer = super()._load_pretrained(name)
        backbone = classifier.base_model
        if self.tuning == "prompt":
            self._check_prompt_positions(backbone.config, self.virtual_tokens)
        torch.manual_seed(student_seed(self.seed, "soft-prompt-init"))
        model = SoftPromptModel(backbone, self.tuning, len(self.label_names),
                                self.virtual_tokens).to(self._device)
        return model, tokenizer

    def _scoring_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**batch).logits  # the mean summary reads every position: no shortcut

    def _meta(self) -> dict[str, Any]:
        config = self.model.config
        return {"tuning": self.tuning, "model": self.cfg.model, "label_names": self.label_names,
                "virtual_tokens": self.virtual_tokens, "hidden_size": config.hidden_size,
                "num_hidden_layers": config.num_hidden_layers}
