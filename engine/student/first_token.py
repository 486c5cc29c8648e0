"""Scoring shortcut for encoder classifiers whose head reads only the first token.

A BERT-style sequence classifier (BERT, MiniLM, RoBERTa, XLM-R, ELECTRA) hands only position 0
([CLS] / <s>) of its last encoder layer to the classification head. The other positions of
that layer are computed and thrown away: for the 6-layer MiniLM default that is about 14% of a
forward pass. `first_token_only(model)` swaps the last layer, for the duration of a `with`
block, for one that attends from the first position only (its keys and values still come from
every position) and returns just that position. The head then sees the same vector, up to
float rounding, for less work.

Inference only: training always runs the unmodified model. The student checks the shortcut
against the full model on its first batch and falls back to the full model if they disagree
(an architecture this module does not know, or a future transformers release).
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

# model_type values whose *ForSequenceClassification head reads position 0 of the last layer
# and whose layers have the BERT layout (attention.self.{query,key,value}, attention.output,
# feed_forward_chunk).
SUPPORTED_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "electra"})


def encoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The encoder's layer list if the shortcut applies to `model`, else None."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in SUPPORTED_TYPES:
        return None
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return None
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        return None
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        return None
    last = layers[-1]
    attention = getattr(getattr(last, "attention", None), "self", None)
    if not (all(hasattr(attention, n) for n in ("query", "key", "value", "scaling",
                                                   "attention_head_size", "config"))
            and hasattr(last.attention, "output") and hasattr(last, "feed_forward_chunk")):
        return None
    return layers


def _attention_function(attention: nn.Module):
    """The attention kernel the model itself uses (sdpa, eager, flash...)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    eager = importlib.import_module(type(attention).__module__).eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager)


class FirstTokenLayer(nn.Module):
    """The wrapped encoder layer, computed for the first position only."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        self.attend = _attention_function(layer.attention.self)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                *args, **kwargs) -> torch.Tensor:
        layer, attention = self.layer, self.layer.attention.self
        batch, length = hidden_states.shape[:2]
        size = attention.attention_head_size
        first = hidden_states[:, :1]
        query = attention.query(first).view(batch, 1, -1, size).transpose(1, 2)
        key = attention.key(hidden_states).view(batch, length, -1, size).transpose(1, 2)
        value = attention.value(hidden_states).view(batch, length, -1, size).transpose(1, 2)
        mask = attention_mask
        if mask is not None and mask.dim() == 4 and mask.shape[-2] > 1:
            mask = mask[:, :, :1, :]  # the first query's row of the (batch, 1, L, L) mask
        context, _ = self.attend(attention, query, key, value, mask, dropout=0.0,
                                 scaling=attention.scaling)
        context = context.reshape(batch, 1, -1).contiguous()
        return layer.feed_forward_chunk(layer.attention.output(context, first))


@contextmanager
def first_token_only(model: nn.Module) -> Iterator[bool]:
    """Within the block, `model` computes its last layer for the first position only.

    Yields whether the shortcut is active (False: the model is left as it is). Not for
    training (gradients would reach only position 0 of the last layer) nor for outputs that
    read other positions of the last hidden state.
    """
    layers = encoder_layers(model)
    if layers is None or model.training:
        yield False
        return
    last = layers[-1]
    layers[-1] = FirstTokenLayer(last)
    try:
        yield True
    finally:
        layers[-1] = last
