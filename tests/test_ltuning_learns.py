"""Issue 16: every tuning mode learns; L-Tuning objectives and maps; peft prefix / prompt
baselines; per-tuning default learning rates. Tiny random BERT, one torch thread."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from engine.config import DEFAULT_LR, RunConfig, StudentConfig, build_config
from engine.errors import ConfigError
from engine.student.classification import ClassificationStudent
from engine.student.ltuning import LTuningStudent
from engine.student.soft_prompt import SoftPromptStudent
from test_ltuning import make_data, make_student


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- learnability ----------------------------------------------------------------------
# Learning rates for a 2-layer, 32-wide random encoder (not MiniLM's defaults): full fine-tuning
# of random weights needs more than 2e-5, the new maps of the frozen modes take 3e-2.
TOY_MODES = [("full", 1e-3, {}), ("lt-prefix", 3e-2, {}), ("lt-prompt", 3e-2, {}),
             ("prefix", 3e-2, {}), ("prompt", 3e-2, {}),
             ("lt-prompt", 3e-2, {"lt_objective": "binary"}), ("lt-prefix", 3e-2, {"lt_map": "token"})]


@pytest.mark.parametrize("tuning,lr,extra", TOY_MODES)
def test_every_mode_learns_a_separable_toy_task(tiny_bert_dir, one_thread, tuning, lr, extra):
    """Rows labelled by the sentiment words in them (48 training rows): 150 steps reach at
    least 95% training accuracy. Before issue 16 the L-Tuning students stayed on the
    majority class."""
    data = make_data(80)
    epochs = 50  # 3 steps each
    if tuning == "full":
        cfg = StudentConfig(model=str(tiny_bert_dir), lr=lr, batch_size=16, max_length=24)
        student = ClassificationStudent(cfg, data, epochs=epochs, seed=1, device="cpu")
    else:
        student = make_student(tiny_bert_dir, tuning, data, epochs=epochs, seed=1, lr=lr,
                               max_length=24, eval_batch_size=64, **extra)
    for epoch in range(1, epochs + 1):
        for _ in student.train_epoch("", epoch):
            pass
    assert epochs * student.steps_per_epoch() == 150
    accuracy = student.evaluate("", "train")["accuracy"]
    assert accuracy >= 0.95, (tuning, extra, accuracy)


# ---- objectives --------------------------------------------------------------------------
def test_softmax_objective_is_cross_entropy_over_all_labels(tiny_bert_dir):
    student = make_student(tiny_bert_dir, "lt-prompt")
    rows = student.data.train[:5]
    student.model.eval()  # no dropout: the loss and the scores see the same network
    with torch.no_grad():
        loss = student.step_loss("Tweet:", rows, 1, 1)
        enc = student.tokenizer(["Tweet: " + r["text"] for r in rows], padding=True,
                                return_tensors="pt")
        logits = torch.stack([student.model(enc["input_ids"], enc["attention_mask"],
                                            torch.full((5,), k), enc["token_type_ids"])
                              for k in range(3)], dim=1)
    want = F.cross_entropy(logits, torch.tensor([r["label"] for r in rows]))
    torch.testing.assert_close(loss, want, atol=1e-5, rtol=1e-5)


def test_binary_objective_balances_every_labels_positives_and_negatives(tiny_bert_dir):
    data = make_data(120)
    data.train = [r for r in data.train if r["label"] != 2] + [
        r for r in data.train if r["label"] == 2][:4]  # a rare third class
    student = make_student(tiny_bert_dir, "lt-prefix", data, lt_objective="binary")
    counts = torch.bincount(torch.tensor([r["label"] for r in data.train]), minlength=3).double()
    positive = counts / counts.sum()
    negative = (1 - positive) / 2  # one wrong label of two, drawn uniformly
    weights = student._pair_weights.double()
    # expected weight of a label's positive pairs == of its negative pairs, for every label:
    # a constant logit per label (a label prior) is best at 0, the same for all labels
    torch.testing.assert_close(positive * weights[:, 1], torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(negative * weights[:, 0], torch.ones(3, dtype=torch.float64))
    losses = [r.loss for r in student.train_epoch("", 1)]
    assert all(torch.isfinite(torch.tensor(losses)))


def test_a_wrong_objective_or_map_is_refused(tiny_bert_dir):
    with pytest.raises(ConfigError, match="student.lt_objective"):
        make_student(tiny_bert_dir, "lt-prefix", lt_objective="hinge")
    with pytest.raises(ConfigError, match="student.lt_map"):
        make_student(tiny_bert_dir, "lt-prefix", lt_map="conv")
    for key, value in (("lt_objective", "hinge"), ("lt_map", "conv")):
        cfg = RunConfig()
        setattr(cfg.student, key, value)
        with pytest.raises(ConfigError, match=f"student.{key}"):
            cfg.validate()


# ---- the authors' token map ------------------------------------------------------------
@pytest.mark.parametrize("tuning", ["lt-prefix", "lt-prompt"])
def test_token_map_gives_one_slot_per_label_token(tiny_bert_dir, tuning):
    student = make_student(tiny_bert_dir, tuning, lt_map="token", verbalizer="{label}")
    model = student.model
    lengths = [len(student.tokenizer(text)["input_ids"]) for text in student.label_texts]
    assert model.slots == max(lengths)
    assert model.prefix_mask.sum(1).tolist() == lengths  # padding slots are masked
    assert model.label_prefix().shape == (3, max(lengths), model.out_features)
    h = 32
    out = 2 * 2 * h if tuning == "lt-prefix" else h
    assert student.parameter_counts()["trainable"] == (h * out + out) + 3 * (h * h + h)
    # a padding slot changes nothing: scores equal those with its prefix zeroed
    enc = student.tokenizer(["great day"] * 3, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        prefix = model.label_prefix()
        noisy = prefix.clone()
        noisy[~model.prefix_mask.bool()] = 5.0
        index = torch.tensor([0, 1, 2])
        args = (enc["input_ids"], enc["attention_mask"], index, enc["token_type_ids"])
        torch.testing.assert_close(model(*args, prefix=prefix), model(*args, prefix=noisy))


def test_old_checkpoints_without_a_map_load_as_pooled(tiny_bert_dir, tmp_path):
    import json

    student = make_student(tiny_bert_dir, "lt-prefix")
    student.save(tmp_path / "old", training_state=False)
    meta_path = tmp_path / "old" / student.meta_file
    meta = json.loads(meta_path.read_text())
    del meta["lt_map"]
    meta_path.write_text(json.dumps(meta))
    make_student(tiny_bert_dir, "lt-prefix", seed=5).load(tmp_path / "old", training_state=False)


# ---- the frozen encoder -------------------------------------------------------------------
@pytest.mark.parametrize("tuning", ["lt-prefix", "prompt"])
def test_frozen_encoder_stays_in_eval_mode_while_the_head_trains(tiny_bert_dir, tuning):
    student = make_student(tiny_bert_dir, tuning)
    next(iter(student.train_epoch("", 1)))
    model = student.model
    assert model.training and model.head.training
    assert not any(m.training for m in model.backbone.modules())
    assert all(not p.requires_grad for p in model.backbone.parameters())


# ---- peft prefix / prompt tuning -------------------------------------------------------
def test_peft_prefix_and_prompt_students_use_peft(tiny_bert_dir):
    from peft import PeftModel, PrefixTuningConfig, PromptTuningConfig

    h, layers, s = 32, 2, 8
    head = (h * h + h) + (h * 3 + 3)
    prefix = make_student(tiny_bert_dir, "prefix")
    assert isinstance(prefix.model.peft, PeftModel)
    assert isinstance(prefix.model.peft.peft_config["default"], PrefixTuningConfig)
    assert prefix.parameter_counts()["trainable"] == (
        s * h + (h * h + h) + (h * 2 * layers * h + 2 * layers * h) + head)
    prompt = make_student(tiny_bert_dir, "prompt")
    assert isinstance(prompt.model.peft.peft_config["default"], PromptTuningConfig)
    assert prompt.parameter_counts()["trainable"] == s * h + head
    names = {n.split(".")[0] for n, _ in prompt.trainable_parameters()}
    assert names == {"peft", "head"}


def test_peft_prefix_keeps_the_text_at_its_pretrained_positions(tiny_bert_dir):
    """The peft prefix reaches every layer as a key/value cache and the text keeps positions
    0..T-1: the same states as the backbone called with that cache and those positions."""
    from transformers import DynamicCache

    student = make_student(tiny_bert_dir, "prefix")
    model = student.model
    model.eval()
    enc = student.tokenizer(["great day today", "awful"], padding=True, return_tensors="pt")
    batch, length = enc["input_ids"].shape
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = model.encode(enc["input_ids"], enc["attention_mask"])
        kv = model.peft.get_prompt(batch)  # peft's own prefix, as a cache
        cache = DynamicCache(config=model.config)
        for layer in range(model.config.num_hidden_layers):
            cache.update(kv.layers[layer].keys, kv.layers[layer].values, layer)
        mask = torch.cat([torch.ones(batch, model.slots, dtype=torch.long),
                          enc["attention_mask"]], dim=1)
        states = model.backbone(input_ids=enc["input_ids"], attention_mask=mask,
                                position_ids=torch.arange(length).expand(batch, length),
                                cache=cache).last_hidden_state
        bare = model.backbone(**enc).last_hidden_state
    weights = enc["attention_mask"].unsqueeze(-1).float()
    want = (states * weights).sum(1) / weights.sum(1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got, (bare * weights).sum(1) / weights.sum(1), atol=1e-3)


@pytest.mark.parametrize("tuning", ["prefix", "prompt"])
def test_peft_students_score_gpta_prefixes_like_the_reference(tiny_bert_dir, tuning):
    student = make_student(tiny_bert_dir, tuning)
    list(student.train_epoch("Tweet:", 1))
    prefixes = ["", "Tweet sentiment:", "Tweet sentiment:"]
    fast = student.prefix_logits(prefixes, "validation")
    plain = student.prefix_logits_plain(prefixes, "validation")
    assert fast.shape == (3, 24, 3)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-4)
    assert not torch.equal(fast[0], fast[1])  # the GPTA text prefix still matters
    assert student.score_prefixes(prefixes[1:], "validation")[0] == student.evaluate(prefixes[1])


def test_peft_checkpoints_refuse_another_tuning(tiny_bert_dir, tmp_path):
    from engine.errors import ModelError

    prefix = make_student(tiny_bert_dir, "prefix")
    prefix.save(tmp_path / "p", training_state=False)
    assert {p.name for p in (tmp_path / "p").iterdir()} == {prefix.weights_file, prefix.meta_file}
    with pytest.raises(ModelError, match="written with tuning 'prefix'"):
        make_student(tiny_bert_dir, "prompt").load(tmp_path / "p", training_state=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="lacks soft_prompt.json"):
        prefix.load(tmp_path / "empty", training_state=False)
    with pytest.raises(ConfigError, match="exceeds the model's 256 positions"):
        make_student(tiny_bert_dir, "prompt", max_length=250)


# ---- default learning rates ----------------------------------------------------------------
def test_each_tuning_picks_its_learning_rate_unless_the_user_sets_one(tmp_path):
    for tuning, lr in DEFAULT_LR.items():
        cfg = build_config(None, None, {"student": {"tuning": tuning}})
        assert cfg.student.lr == lr
        assert RunConfig.from_dict(cfg.to_dict()).student.lr == lr  # recorded, resumed as is
        assert build_config(None, None, {"student": {"tuning": tuning, "lr": 5e-4}}).student.lr == 5e-4
    toml = tmp_path / "run.toml"
    toml.write_text('[student]\ntuning = "lt-prompt"\nlr = 0.002\n')
    assert build_config(None, toml).student.lr == 0.002
    toml.write_text('[student]\ntuning = "lt-prompt"\n')
    assert build_config(None, toml).student.lr == DEFAULT_LR["lt-prompt"]
    assert build_config(None, toml, {"student": {"lr": 1e-4}}).student.lr == 1e-4
    stored = build_config(None, None, {"student": {"tuning": "prefix", "lr": 7e-3}}).to_dict()
    assert RunConfig.from_dict(stored).student.lr == 7e-3
    assert DEFAULT_LR["full"] == StudentConfig().lr


# ---- the benchmark's document ------------------------------------------------------------
def test_bench_document_comes_from_the_raw_csv(tmp_path):
    from bench.ltuning import FIELDS, append_row, read_rows, render

    def row(tuning, seed, accuracy, top):
        values = dict.fromkeys(FIELDS, "x")
        values.update(tuning=tuning, seed=seed, lr=DEFAULT_LR[tuning], train_rows=2000,
                      val_rows=100, test_rows=300, epochs=1, max_length=64, batch_size=16,
                      trainable=100, total=1000, train_s_per_epoch=10.0, peak_rss_mb=900,
                      test_accuracy=accuracy, test_macro_f1=accuracy - 0.1, top_share=top,
                      majority=0.43, threads=1, load_avg="1.00", date=f"2026-01-0{seed} 10:00 UTC",
                      lt_objective="softmax", lt_map="pooled")
        return values

    path = tmp_path / "runs.csv"
    for r in (row("full", 1, 0.70, 0.5), row("full", 2, 0.66, 0.5),
              row("lt-prompt", 1, 0.43, 1.0)):
        append_row(path, r)
    rows = read_rows(path)
    assert [r["tuning"] for r in rows] == ["full", "full", "lt-prompt"]
    text = render(rows, path, [("lt-prompt", 2)], [], path)
    assert "| full | 2e-05 | 1, 2 | 100 | 10.00% |" in text
    assert "0.680 ± 0.028" in text  # mean ± sample std of 0.70 and 0.66
    assert "- full: learns (test accuracy 0.680" in text
    assert "- lt-prompt: does not learn (test accuracy 0.430" in text
    assert "25.0 points below full fine-tuning" in text
    assert "Not run (the grid did not finish in the time available): lt-prompt seed 2." in text
