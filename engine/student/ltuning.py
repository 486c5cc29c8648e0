"""L-Tuning students: label-token prefix and prompt tuning for classification.

L-Tuning (Kowsher et al. 2024, "Synchronized Label Tuning for Prompt and Prefix in LLMs",
arXiv 2402.01643) tunes a classifier parameter-efficiently: instead of free soft tokens, the
label texts themselves are encoded by the frozen pretrained model and a small trainable map
turns their hidden states into a prefix (per-layer keys/values) or a prompt (input embeddings).

Framing. Every label name becomes a text through `student.verbalizer` ("The text has {label}
sentiment."), encoded once by the frozen backbone. A (text, label) pair gets a match logit
from a trainable head on the mean of the input's final token states, computed with that
label's prefix or prompt; prediction scores all K labels and takes the best, so
`prefix_logits` returns per-label match logits of shape (prefixes, rows, K).

Objective (`student.lt_objective`):

    softmax (default)  every example against all K labels, cross-entropy of the softmax over
                       the K match logits with the true label
    binary             the paper's framing: the true label (target 1) and `student.negatives`
                       wrong labels sampled from (seed, epoch, step) (target 0) under binary
                       cross-entropy, every pair weighted so that each label's positives and
                       negatives carry the same expected weight

Why not the plain binary loss: with one sampled wrong label, each label's rate of positive
targets follows its class frequency (0.60 / 0.56 / 0.31 on the 600-row twitter-sentiment
split), and most of the match logit's variance comes from the text alone. A head that learns
label priors lowers that loss at once, while the label-text interaction (the only part that
tells labels apart for one text) is a small, slow signal: the students got stuck predicting
the most frequent label for every row (issue 16). Measured on the old lt-prefix student after 2
epochs: mean match probabilities per label 0.57 / 0.57 / 0.33 (the positive-target rates), logit
spread across test rows at most 0.024 against a 1.0 gap between labels, and no text signal
left once the per-label means were removed (accuracy 0.357). The softmax is
invariant to anything that shifts all K logits of a text alike, so its whole gradient goes to
the interaction; the balanced binary loss removes the prior's reward.

Label map (`student.lt_map`):

    pooled (default)   label states -> attention pooling (S learned queries) -> MLP -> S slots
    token              the paper's map: every label token state -> one linear layer -> one
                       slot, so the prefix is as long as the label text's tokens (padding
                       masked)

    lt-prefix  each slot is, for every layer, a key and a value prepended to that layer's
               attention
    lt-prompt  each slot is an input embedding placed before the input embeddings
               ([p_1..p_S] [CLS] prefix text [SEP])

Only the map and the head train; the backbone is frozen and kept in eval mode
(engine/student/frozen.py). The frozen label states are computed once, in eval mode, and kept as
a buffer: the backbone never changes, so re-encoding the labels at every step would only add
cost. GPTA's text prefix is still prepended to the input text, exactly as in the full
fine-tuning student (`ClassificationStudent`, whose tokenization, fast prefix scoring, data
order and step-seeding this class reuses), so the GPTA loop runs unchanged on top.

How the prefix reaches BERT. In transformers 5.x, `BertModel.forward` (and RoBERTa's, ELECTRA's)
takes a `cache` (the former `past_key_values`): every self-attention layer calls
`cache.update(key, value, layer)`, which concatenates the cached keys/values in front of the
current ones, also for encoders (`is_decoder=False`). We build a fresh `DynamicCache` holding
the label prefix for every forward, pass a 2-D attention mask covering prefix + input (the
padding mask is built from it), and explicit position ids 0..T-1 so the text keeps the
positions the model was pretrained with (the prefix has no position: absolute position
embeddings only enter at the input). This is the same mechanism peft's prefix tuning uses, it
needs no copy of BERT's layer code, and it keeps gradients flowing into the prefix. Because a
future release could silently ignore a cache in encoders, the constructor checks that a prefix
changes the backbone's output and raises ModelError otherwise; tests compare the result against
a hand-written attention over the prefix. LT-prompt only needs `inputs_embeds`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import LT_MAPS, LT_OBJECTIVES, StudentConfig
from engine.errors import ConfigError, ModelError
from engine.seeds import student_seed
from engine.student.frozen import (FrozenEncoderModel, FrozenEncoderStudent, classifier_head,
                                   mean_summary)
from engine.student.task_base import join_input, pad_batch, reason

LT_TUNINGS = ("lt-prefix", "lt-prompt")
#: virtual tokens (prefix or prompt positions) each label is pooled into (lt_map "pooled")
VIRTUAL_TOKENS = 8
WEIGHTS_FILE = "ltuning.safetensors"
META_FILE = "ltuning.json"
CHECKPOINT_FIX = "resume from a checkpoint this student wrote (same model, tuning and labels)"


def verbalize(verbalizer: str, label_names: list[str]) -> list[str]:
    """The label texts the frozen model encodes, e.g. "The text has negative sentiment."."""
    fix = 'write a template with one {label} placeholder, e.g. "The text has {label} sentiment."'
    if "{label}" not in verbalizer:
        raise ConfigError(f"student.verbalizer {verbalizer!r} has no {{label}} placeholder", fix)
    try:
        texts = [verbalizer.format(label=name) for name in label_names]
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"student.verbalizer {verbalizer!r} is not a valid template ({exc!r})",
                          fix + " (write literal braces as {{ and }})") from None
    if len(set(texts)) < len(texts):
        raise ConfigError("student.verbalizer gives two labels the same text",
                          "use label names that differ (data.label_names)")
    return texts


class LabelPooling(nn.Module):
    """Attention pooling of a label's token states into `slots` vectors, one learned query each."""

    def __init__(self, hidden: int, slots: int):
        super().__init__()
        # Unit-variance queries with 1/sqrt(H) scaling give distinct pooling weights per slot.
        self.queries = nn.Parameter(torch.randn(slots, hidden))
        self.scale = hidden ** -0.5

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(K, T, H) states and (K, T) mask -> (K, slots, H)."""
        scores = torch.einsum("sh,kth->kst", self.queries.to(states.dtype), states) * self.scale
        scores = scores.masked_fill(~mask.bool()[:, None, :], float("-inf"))
        return torch.softmax(scores, dim=-1) @ states


class LTuningModel(FrozenEncoderModel):
    """A frozen encoder, the label-to-prefix/prompt map and the match head.

    `forward(input_ids, attention_mask, label_index, token_type_ids)` returns one match logit
    per row: does row i's text have label `label_index[i]`?
    """

    def __init__(self, backbone: nn.Module, tuning: str, label_states: torch.Tensor,
                 label_mask: torch.Tensor, slots: int = VIRTUAL_TOKENS, label_map: str = "pooled"):
        super().__init__()
        if tuning not in LT_TUNINGS:
            raise ConfigError(f"invalid value {tuning!r} for student.tuning",
                              f"use one of {', '.join(LT_TUNINGS)}")
        if label_map not in LT_MAPS:
            raise ConfigError(f"invalid value {label_map!r} for student.lt_map",
                              f"use one of {', '.join(LT_MAPS)}")
        self.backbone = backbone.requires_grad_(False)
        self.tuning = tuning
        self.label_map = label_map
        config = backbone.config
        hidden = config.hidden_size
        self.layers = config.num_hidden_layers
        self.heads = config.num_attention_heads
        self.head_dim = hidden // self.heads
        self.out_features = 2 * self.layers * hidden if tuning == "lt-prefix" else hidden
        self.scale = hidden ** -0.5
        dropout = float(getattr(config, "hidden_dropout_prob", 0.1) or 0.0)
        self.register_buffer("label_states", label_states, persistent=False)
        self.register_buffer("label_mask", label_mask, persistent=False)
        if label_map == "pooled":
            self.slots = slots
            self.pool = LabelPooling(hidden, slots)
            self.proj = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(),
                                      nn.Linear(hidden, self.out_features))
            prefix_mask = label_mask.new_ones(label_mask.shape[0], slots)
        else:  # one slot per label token, padding slots masked out of the attention
            self.slots = label_states.shape[1]
            self.proj = nn.Linear(hidden, self.out_features)
            prefix_mask = label_mask
        self.register_buffer("prefix_mask", prefix_mask, persistent=False)
        # The match logit is the dot product of the head's output for the text (read under the
        # label's prefix) with the label's own vector, a trainable map of its mean frozen state:
        # a direct text-label interaction besides the one through the encoder's attention.
        self.head = classifier_head(hidden, hidden, dropout)
        self.label_vector = nn.Linear(hidden, hidden)
        weights = label_mask.to(label_states.dtype).unsqueeze(-1)
        self.register_buffer("label_means", (label_states * weights).sum(1) / weights.sum(1),
                             persistent=False)
        params = inspect.signature(backbone.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @property
    def config(self):
        return self.backbone.config

    @property
    def num_labels(self) -> int:
        return self.label_states.shape[0]

    def label_prefix(self) -> torch.Tensor:
        """(K, slots, out): every label's prefix (2·layers·hidden per slot) or prompt (hidden)."""
        if self.label_map == "pooled":
            return self.proj(self.pool(self.label_states, self.label_mask))
        return self.proj(self.label_states)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                label_index: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                prefix: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) match logits. `prefix` is `label_prefix()`, passed in to reuse it across batches."""
        summary = self.encode(input_ids, attention_mask, label_index, token_type_ids, prefix)
        vectors = self.label_vector(self.label_means)[label_index]
        return (self.head(summary) * vectors.to(summary.dtype)).sum(-1) * self.scale

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               label_index: torch.Tensor, token_type_ids: torch.Tensor | None = None,
               prefix: torch.Tensor | None = None) -> torch.Tensor:
        """(B, hidden): the mean final state of each row's input tokens under its label."""
        chosen = (self.label_prefix() if prefix is None else prefix)[label_index]
        batch, length = input_ids.shape
        slot_mask = self.prefix_mask[label_index].to(attention_mask.dtype)
        mask = torch.cat([slot_mask, attention_mask], dim=1)
        extra: dict[str, Any] = {}
        if token_type_ids is not None:
            extra["token_type_ids"] = token_type_ids
        if self.tuning == "lt-prefix":
            from transformers import DynamicCache

            kv = chosen.view(batch, self.slots, self.layers, 2, self.heads, self.head_dim)
            kv = kv.permute(2, 3, 0, 4, 1, 5)  # (layers, 2, batch, heads, slots, head_dim)
            cache = DynamicCache(config=self.backbone.config)
            for layer in range(self.layers):
                cache.update(kv[layer, 0], kv[layer, 1], layer)
            positions = torch.arange(length, device=input_ids.device).expand(batch, length)
            out = self.backbone(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                **{self._cache_arg: cache}, **extra).last_hidden_state
            return mean_summary(out, attention_mask, 0)
        embeds = self.backbone.get_input_embeddings()(input_ids)
        embeds = torch.cat([chosen.to(embeds.dtype), embeds], dim=1)
        if token_type_ids is not None:
            extra["token_type_ids"] = torch.cat([token_type_ids.new_zeros(batch, self.slots),
                                                 token_type_ids], dim=1)
        out = self.backbone(inputs_embeds=embeds, attention_mask=mask, **extra).last_hidden_state
        return mean_summary(out, attention_mask, self.slots)


class LTuningStudent(FrozenEncoderStudent):
    """A classification student trained with L-Tuning (`cfg.tuning` lt-prefix or lt-prompt).

    Same interface, metrics, data order and checkpoint discipline as `ClassificationStudent`;
    `prefix_logits` gives per-label match logits (prediction = argmax over labels). Extras:
    `label_texts`, `parameter_counts()`, `negative_labels(epoch, step, labels)`.
    """

    checkpoint_fix = CHECKPOINT_FIX
    weights_file = WEIGHTS_FILE
    meta_file = META_FILE
    meta_keys = ("tuning", "label_names", "verbalizer", "lt_map", "virtual_tokens",
                 "hidden_size", "num_hidden_layers")
    meta_defaults = {"lt_map": "pooled"}  # checkpoints written before the token map existed

    tunings = LT_TUNINGS

    def __init__(self, cfg: StudentConfig, data: Any, epochs: int, seed: int, device: str,
                 virtual_tokens: int = VIRTUAL_TOKENS):
        super().__init__(cfg, data, epochs, seed, device, virtual_tokens)
        self.negatives = min(cfg.negatives, len(self.label_names) - 1)
        self._pair_weights = self._balanced_weights()

    def _prepare(self, cfg: StudentConfig, data: Any) -> None:
        if cfg.negatives < 1:
            raise ConfigError(f"invalid value {cfg.negatives!r} for student.negatives",
                              "use a number greater than 0")
        if cfg.lt_objective not in LT_OBJECTIVES:
            raise ConfigError(f"invalid value {cfg.lt_objective!r} for student.lt_objective",
                              f"use one of {', '.join(LT_OBJECTIVES)}")
        self.objective = cfg.lt_objective
        self.label_texts = verbalize(cfg.verbalizer, list(data.label_names))

    # ---- setup ---------------------------------------------------------------------
    def _load_pretrained(self, name: str):
        """The frozen encoder (loaded as the full student loads it), the label states and maps."""
        classifier, tokenizer = super()._load_pretrained(name)
        backbone = classifier.base_model
        backbone.requires_grad_(False)
        config = backbone.config
        enc = tokenizer(self.label_texts, padding=True, truncation=True,
                        max_length=self.cfg.max_length, return_tensors="pt")
        enc = {k: v.to(self._device) for k, v in enc.items()}
        slots = self.virtual_tokens if self.cfg.lt_map == "pooled" else enc["input_ids"].shape[1]
        if self.tuning == "lt-prompt":
            self._check_prompt_positions(config, slots)
        backbone.eval()
        with torch.no_grad():
            states = backbone(**enc).last_hidden_state.float()
        torch.manual_seed(student_seed(self.seed, "ltuning-init"))
        model = LTuningModel(backbone, self.tuning, states, enc["attention_mask"],
                             slots=self.virtual_tokens, label_map=self.cfg.lt_map).to(self._device)
        if self.tuning == "lt-prefix":
            self._check_prefix_support(model, tokenizer, name)
        return model, tokenizer

    def _check_prefix_support(self, model: LTuningModel, tokenizer, name: str) -> None:
        """Refuse a backbone that cannot take a key/value prefix (or silently ignores it)."""
        enc = tokenizer(["a short check"], return_tensors="pt")
        enc = {k: v.to(self._device) for k, v in enc.items()}
        model.eval()
        try:
            with torch.no_grad():
                bare = mean_summary(model.backbone(**enc).last_hidden_state,
                                    enc["attention_mask"], 0)
                generator = torch.Generator().manual_seed(0)
                prefix = torch.randn(model.out_features, generator=generator)
                prefix = prefix.expand(model.num_labels, model.slots, -1).to(self._device)
                with_prefix = model.encode(enc["input_ids"], enc["attention_mask"],
                                           torch.zeros(1, dtype=torch.long, device=self._device),
                                           enc.get("token_type_ids"), prefix=prefix)
        except Exception as exc:  # an architecture without a key/value cache in its encoder
            raise ModelError(f"student model {name!r} ({model.config.model_type}) cannot take a "
                             f"key/value prefix ({reason(exc)})",
                             'use tuning = "lt-prompt" or "full" for this model') from None
        if torch.allclose(bare, with_prefix):
            raise ModelError(f"student model {name!r} ({model.config.model_type}) ignores a "
                             "key/value prefix",
                             'use tuning = "lt-prompt" or "full" for this model')

    # ---- training ------------------------------------------------------------------
    def _balanced_weights(self) -> torch.Tensor:
        """(K, 2) pair weights of the binary objective, [label, target]: 1 / the expected
        number of pairs per training example with that label and target, so every label's
        positives and negatives carry the same expected weight and a label prior earns
        nothing (the best constant logit is 0 for every label)."""
        k = len(self.label_names)
        counts = torch.bincount(torch.tensor([int(r["label"]) for r in self.data.train]),
                                minlength=k).double()
        positive = counts / counts.sum()  # P(label j is the true label)
        negative = (1 - positive) * self.negatives / (k - 1)  # P(j is drawn as a wrong label)
        weights = torch.stack([1 / negative.clamp(min=1e-12), 1 / positive.clamp(min=1e-12)], 1)
        return weights.float()

    def negative_labels(self, epoch: int, step: int, labels: list[int]) -> list[list[int]]:
        """The wrong labels paired with each example of a step (depends on seed, epoch, step)."""
        generator = torch.Generator().manual_seed(student_seed(self.seed, "negatives", epoch, step))
        k = len(self.label_names)
        out = []
        for label in labels:
            picks = torch.randperm(k - 1, generator=generator)[:self.negatives].tolist()
            out.append([j + (j >= label) for j in picks])  # skip the true label
        return out

    def step_loss(self, prefix: str, rows: list[dict], epoch: int, step: int) -> torch.Tensor:
        """The loss of a training step: softmax over all labels, or (binary) each example
        against its true label and the wrong labels `negative_labels` draws for (epoch, step)."""
        if self.objective == "softmax":
            return self.batch_loss(prefix, rows)
        labels = [int(r["label"]) for r in rows]
        return self.batch_loss(prefix, rows, self.negative_labels(epoch, step, labels))

    def _pair_logits(self, prefix: str, rows: list[dict], pair_rows: list[int],
                     pair_labels: list[int]) -> torch.Tensor:
        """Float32 match logits of (rows[pair_rows[i]], pair_labels[i]) pairs."""
        enc = self.tokenizer([join_input(prefix, r["text"]) for r in rows], truncation=True,
                             max_length=self.cfg.max_length, padding=True, return_tensors="pt")
        index = torch.tensor(pair_rows)
        enc = {k: v[index].to(self._device) for k, v in enc.items()}
        label_index = torch.tensor(pair_labels, device=self._device)
        with self.autocast():
            logits = self.model(enc["input_ids"], enc["attention_mask"], label_index,
                                enc.get("token_type_ids"))
        return logits.float()

    def batch_loss(self, prefix: str, rows: list[dict],
                   negatives: list[list[int]] | None = None) -> torch.Tensor:
        """Softmax objective (negatives None): cross-entropy over the K match logits of every
        row. Binary objective: balanced binary cross-entropy of each row with its true label
        (target 1) and its `negatives` (target 0)."""
        labels = [int(r["label"]) for r in rows]
        k = len(self.label_names)
        if negatives is None:
            logits = self._pair_logits(prefix, rows, [i for i in range(len(rows)) for _ in range(k)],
                                       list(range(k)) * len(rows))
            return F.cross_entropy(logits.view(len(rows), k),
                                   torch.tensor(labels, device=self._device))
        pair_rows, pair_labels, targets = [], [], []
        for i, (label, wrong) in enumerate(zip(labels, negatives)):
            pair_rows += [i] * (1 + len(wrong))
            pair_labels += [label, *wrong]
            targets += [1] + [0] * len(wrong)
        logits = self._pair_logits(prefix, rows, pair_rows, pair_labels)
        target = torch.tensor(targets, device=self._device)
        weight = self._pair_weights.to(self._device)[torch.tensor(pair_labels, device=self._device),
                                                      target]
        losses = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")
        return (losses * weight).sum() / weight.sum()

    # ---- evaluation ----------------------------------------------------------------
    def prefix_logits(self, prefixes: list[str], split: str = "validation") -> torch.Tensor:
        """Float32 match logits of shape (len(prefixes), rows, labels) on the CPU (fast path):
        every (sequence, label) pair is one row of a length-sorted batch."""
        n_rows = len(self._split(split).texts)
        k = len(self.label_names)
        if not prefixes:
            return torch.empty(0, n_rows, k)
        unique = list(dict.fromkeys(prefixes))
        sequences: list[list[int]] = []
        for prefix in unique:
            sequences.extend(self.encode_inputs(prefix, split))
        out = torch.empty(len(sequences) * k, dtype=torch.float32)
        order = sorted(range(len(out)), key=lambda item: len(sequences[item // k]))
        pad = self.tokenizer.pad_token_id
        self.model.eval()
        with torch.inference_mode(), self.autocast():
            label_prefix = self.model.label_prefix()
            for start in range(0, len(order), self.cfg.eval_batch_size):
                chunk = order[start:start + self.cfg.eval_batch_size]
                input_ids, mask = pad_batch([sequences[item // k] for item in chunk], pad)
                label_index = torch.tensor([item % k for item in chunk])
                token_types = torch.zeros_like(input_ids) if self._token_types else None
                moved = [t.to(self._device, non_blocking=True) if t is not None else None
                         for t in (input_ids, mask, label_index, token_types)]
                out[chunk] = self.model(*moved, prefix=label_prefix).float().cpu()
        by_prefix = out.view(len(unique), n_rows, k)
        position = {p: i for i, p in enumerate(unique)}
        return by_prefix[[position[p] for p in prefixes]]

    def prefix_logits_plain(self, prefixes: list[str], split: str = "validation") -> torch.Tensor:
        """Reference scoring: one prefix and one label at a time, joined strings padded to
        max_length, the label map recomputed for every batch."""
        texts = self._split(split).texts
        results = []
        self.model.eval()
        with torch.inference_mode(), self.autocast():
            for prefix in prefixes:
                per_label = []
                for label in range(len(self.label_names)):
                    parts = []
                    size = self.cfg.eval_batch_size
                    for start in range(0, len(texts), size):
                        chunk = [join_input(prefix, t) for t in texts[start:start + size]]
                        enc = self.tokenizer(chunk, truncation=True, max_length=self.cfg.max_length,
                                             padding="max_length", return_tensors="pt")
                        enc = {k: v.to(self._device) for k, v in enc.items()}
                        index = torch.full((len(chunk),), label, device=self._device)
                        parts.append(self.model(enc["input_ids"], enc["attention_mask"], index,
                                                enc.get("token_type_ids")).float().cpu())
                    per_label.append(torch.cat(parts))
                results.append(torch.stack(per_label, dim=-1))
        return torch.stack(results)

    # ---- checkpoints ---------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        config = self.model.config
        return {"tuning": self.tuning, "model": self.cfg.model, "label_names": self.label_names,
                "verbalizer": self.cfg.verbalizer, "lt_map": self.cfg.lt_map,
                "virtual_tokens": self.virtual_tokens, "hidden_size": config.hidden_size,
                "num_hidden_layers": config.num_hidden_layers}
