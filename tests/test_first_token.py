"""The first-token scoring shortcut: same logits as the full model, less work, safe fallback."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import (BertConfig, BertForSequenceClassification, DistilBertConfig,
                          DistilBertForSequenceClassification, ElectraConfig,
                          ElectraForSequenceClassification, RobertaConfig,
                          RobertaForSequenceClassification)

from engine.config import build_config
from engine.student.classification import ClassificationStudent
from engine.student.first_token import FirstTokenLayer, encoder_layers, first_token_only
from test_bench_equivalence import task_data

SIZES = dict(vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
             intermediate_size=64, max_position_embeddings=64, num_labels=3)
PREFIXES = ["Tweet:", "Decide whether the mood is positive, negative or neutral.", ""]


def padded_batch(seed: int = 0, rows: int = 7, pad: int = 0):
    """Rows of different lengths, right-padded, with an attention mask (row 0 unpadded)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [20, *torch.randint(3, 20, (rows - 1,), generator=g).tolist()]
    ids = torch.full((rows, 20), pad)
    mask = torch.zeros(rows, 20, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(5, 120, (n,), generator=g)
        mask[i, :n] = 1
    return ids, mask


MODELS = {
    "bert": lambda: BertForSequenceClassification(BertConfig(**SIZES)),
    "roberta": lambda: RobertaForSequenceClassification(RobertaConfig(**SIZES, pad_token_id=1)),
    "electra": lambda: ElectraForSequenceClassification(ElectraConfig(**SIZES, embedding_size=32)),
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_same_logits_as_the_full_model(kind):
    torch.manual_seed(0)
    model = MODELS[kind]().eval()
    ids, mask = padded_batch(pad=model.config.pad_token_id or 0)
    if kind == "roberta":
        ids = ids.clamp(min=2) * mask + (1 - mask)  # ids 0/1 are <s>/<pad> there
    with torch.inference_mode():
        full = model(input_ids=ids, attention_mask=mask).logits
        with first_token_only(model) as active:
            short = model(input_ids=ids, attention_mask=mask).logits
        unmasked = model(input_ids=ids[:1]).logits  # no mask at all: the library passes None
        with first_token_only(model):
            unmasked_short = model(input_ids=ids[:1]).logits
    assert active
    torch.testing.assert_close(short, full, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(unmasked_short, unmasked, atol=1e-6, rtol=1e-5)
    assert not torch.equal(full[0], full[1])  # rows differ: the comparison means something


def test_the_last_layer_really_computes_one_position_and_is_restored():
    torch.manual_seed(0)
    model = MODELS["bert"]().eval()
    ids, mask = padded_batch()
    seen: list[tuple[int, ...]] = []
    last = model.bert.encoder.layer[-1]
    hook = last.intermediate.dense.register_forward_hook(lambda m, a, out: seen.append(tuple(a[0].shape)))
    keys = list(model.state_dict())
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
        with first_token_only(model):
            assert isinstance(model.bert.encoder.layer[-1], FirstTokenLayer)
            model(input_ids=ids, attention_mask=mask)
    hook.remove()
    assert seen == [(7, 20, 32), (7, 1, 32)]
    assert model.bert.encoder.layer[-1] is last and list(model.state_dict()) == keys
    with pytest.raises(RuntimeError, match="boom"):
        with first_token_only(model):
            raise RuntimeError("boom")
    assert model.bert.encoder.layer[-1] is last  # restored after an error too


def test_not_applied_in_training_or_to_unknown_layouts():
    torch.manual_seed(0)
    bert = MODELS["bert"]()
    bert.train()
    with first_token_only(bert) as active:
        assert not active and not isinstance(bert.bert.encoder.layer[-1], FirstTokenLayer)
    distil = DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=64, num_labels=3))
    assert encoder_layers(distil.eval()) is None
    with first_token_only(distil) as active:
        assert not active
    decoder = BertForSequenceClassification(BertConfig(**SIZES, is_decoder=True)).eval()
    assert encoder_layers(decoder) is None


# ---- in the student ------------------------------------------------------------------------
def make_student(tiny_bert_dir):
    cfg = build_config("default", overrides={"student": {
        "model": str(tiny_bert_dir), "max_length": 24, "eval_batch_size": 16}}).student
    return ClassificationStudent(cfg, task_data(), epochs=1, seed=5, device="cpu")


def test_student_scores_with_the_shortcut_and_matches_the_plain_path(tiny_bert_dir):
    student = make_student(tiny_bert_dir)
    list(student.train_epoch("Tweet:", 1))
    fast = student.prefix_logits(PREFIXES)  # the first batch also checks the shortcut
    assert student._first_token_ok is True
    assert torch.equal(student.prefix_logits(PREFIXES), fast)  # the check does not change a bit
    plain = student.prefix_logits_plain(PREFIXES)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-4)
    assert student.score_prefixes(PREFIXES) == student.score_prefixes_plain(PREFIXES)
    assert not isinstance(student.model.bert.encoder.layer[-1], FirstTokenLayer)


def test_a_shortcut_that_disagrees_is_dropped(tiny_bert_dir, monkeypatch, caplog):
    student = make_student(tiny_bert_dir)
    original = FirstTokenLayer.forward
    monkeypatch.setattr(FirstTokenLayer, "forward",
                        lambda self, h, *a, **kw: original(self, h, *a, **kw) + 1.0)
    with caplog.at_level(logging.WARNING, logger="gpta.student"):
        scores = student.score_prefixes(PREFIXES)
    assert student._first_token_ok is False
    assert "disagrees with the full model" in caplog.text
    assert scores == student.score_prefixes_plain(PREFIXES)
    calls = []
    monkeypatch.setattr(FirstTokenLayer, "forward", lambda *a, **kw: calls.append(1))
    student.score_prefixes(PREFIXES)
    assert not calls  # never tried again for this student


def test_the_shortcut_can_be_switched_off(tiny_bert_dir):
    student = make_student(tiny_bert_dir)
    lengths: list[int] = []
    dense = student.model.bert.encoder.layer[-1].intermediate.dense
    hook = dense.register_forward_hook(lambda m, a, out: lengths.append(a[0].shape[1]))
    student.score_prefixes(PREFIXES)  # the check: both ways once
    runs = {}
    for on in (True, False):
        student.first_token_shortcut = on
        lengths.clear()
        student.score_prefixes(PREFIXES)
        runs[on] = set(lengths)
    hook.remove()
    assert runs[True] == {1} and min(runs[False]) > 1
