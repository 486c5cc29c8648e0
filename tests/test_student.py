"""The classification student, its factory and device selection, on tiny random models."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from conftest import SENTIMENT_LABELS, make_sentiment_rows, sentiment_task_data
from engine.config import RunConfig, StudentConfig
from engine.errors import ConfigError, DataError, ModelError, UsageError
from engine.data import TaskData
from engine.student import build_student
from engine.student.classification import ClassificationStudent, join_input

LABELS = SENTIMENT_LABELS
PREFIXES = ["", "Sentiment of the tweet:", "Is this Positive, negative or neutral?!",
            "Ça va — émotions ✨ (tweet)", "Sentiment of the tweet:"]


def make_data(n: int = 300, seed: int = 0) -> TaskData:
    return sentiment_task_data(n, seed, train_share=0.7, val_share=0.15)


def student_cfg(model_dir: Path, **kw) -> StudentConfig:
    base = dict(model=str(model_dir), lr=3e-3, batch_size=16, eval_batch_size=32, max_length=32)
    base.update(kw)
    return StudentConfig(**base)


def make_student(model_dir: Path, data=None, epochs: int = 2, seed: int = 7, **kw) -> ClassificationStudent:
    return ClassificationStudent(student_cfg(model_dir, **kw), data or make_data(), epochs=epochs,
                                 seed=seed, device="cpu")


@pytest.fixture(scope="module")
def trained(tiny_bert_dir) -> tuple[ClassificationStudent, list[list[float]]]:
    """A tiny BERT trained 5 epochs on the separable data, with its per-epoch losses."""
    student = make_student(tiny_bert_dir, epochs=5)
    losses = [[r.loss for r in student.train_epoch("Tweet sentiment:", epoch)]
              for epoch in range(1, 6)]
    return student, losses


@pytest.fixture(scope="module")
def tiny_bpe_dir(tmp_path_factory) -> Path:
    """A tiny RoBERTa with a byte-level BPE tokenizer: " word" and "word" tokenize differently,
    so joining ids of the prefix and the text is not exact and the student must fall back."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-bpe")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([r["text"] for r in make_sentiment_rows(200)], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   cls_token="<s>", sep_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.save_pretrained(out)
    cfg = RobertaConfig(vocab_size=fast.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=80,
                        pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id,
                        eos_token_id=fast.eos_token_id, type_vocab_size=1)
    RobertaForSequenceClassification(cfg).save_pretrained(out)
    return out


# ---- model loading -----------------------------------------------------------------
def test_labels_come_from_the_data_not_the_checkpoint(tiny_bert_dir):
    student = make_student(tiny_bert_dir)
    assert student.model.config.num_labels == 3  # the fixture checkpoint has 2
    assert student.model.config.id2label == {0: "positive", 1: "negative", 2: "neutral"}
    assert student.model.config.label2id == {"positive": 0, "negative": 1, "neutral": 2}
    assert student.family == "BERT"
    assert student.placement == "[CLS]prefix + context"
    assert student.device == "cpu"
    assert student.steps_per_epoch() == 14  # ceil(210 / 16)


def test_ranking_metric_comes_first(tiny_bert_dir):
    assert make_student(tiny_bert_dir, metric="macro_f1").metric_names == ("macro_f1", "accuracy")
    assert make_student(tiny_bert_dir).metric_names == ("accuracy", "macro_f1")


def test_default_alias_loads_the_offline_minilm():
    student = ClassificationStudent(StudentConfig(model="all-MiniLM-L6-v2", max_length=32),
                                    make_data(60), epochs=1, seed=0, device="cpu")
    assert student.family == "BERT"
    assert student.model.config.num_labels == 3
    assert student.model.config.num_hidden_layers == 6


@pytest.mark.parametrize("name", ["/no/such/dir/model", "./missing-student-dir", "~/no-such-model-dir"])
def test_missing_model_path_is_a_model_error(name):
    with pytest.raises(ModelError, match="does not exist.*hubs need internet"):
        ClassificationStudent(StudentConfig(model=name), make_data(30), epochs=1, seed=0,
                              device="cpu")


def test_unloadable_names_are_model_errors(tmp_path):
    data = make_data(30)
    # an unknown hub name (tests run with HF_HUB_OFFLINE=1) and a directory that is no model
    for name in ["no-such-org/no-such-student-model", str(tmp_path)]:
        with pytest.raises(ModelError, match="cannot load student model.*hubs need internet") as err:
            ClassificationStudent(StudentConfig(model=name), data, epochs=1, seed=0, device="cpu")
        assert "\n" not in str(err.value)


def test_bad_labels_are_data_errors(tiny_bert_dir):
    data = make_data(30)
    data.train[3] = {"text": "hello", "label": 5}
    with pytest.raises(DataError, match="train row 3 has label 5"):
        make_student(tiny_bert_dir, data)
    single = make_data(30)
    single.label_names = ["only"]
    with pytest.raises(DataError, match="at least two labels"):
        make_student(tiny_bert_dir, single)


# ---- training ----------------------------------------------------------------------
def test_training_reduces_loss_and_learns(trained):
    student, losses = trained
    assert all(len(epoch) == student.steps_per_epoch() for epoch in losses)
    first, last = sum(losses[0]) / len(losses[0]), sum(losses[-1]) / len(losses[-1])
    assert last < first - 0.2
    assert student.evaluate("Tweet sentiment:", "validation")["accuracy"] > 0.45  # chance is 1/3


def test_schedule_warms_up_then_decays(tiny_bert_dir):
    student = make_student(tiny_bert_dir, data=make_data(96), epochs=2, warmup_ratio=0.5)
    lrs = [r.lr for epoch in (1, 2) for r in student.train_epoch("", epoch)]
    assert len(lrs) == 2 * student.steps_per_epoch() == 10
    peak = lrs.index(max(lrs))
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(3e-3) and peak == 5
    assert lrs[:peak + 1] == sorted(lrs[:peak + 1]) and lrs[peak:] == sorted(lrs[peak:], reverse=True)


def test_no_weight_decay_on_bias_and_layernorm(tiny_bert_dir):
    student = make_student(tiny_bert_dir, weight_decay=0.1)
    names = {id(p): n for n, p in student.model.named_parameters()}
    decay, no_decay = student.optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(not names[id(p)].endswith("bias") and "LayerNorm" not in names[id(p)]
               for p in decay["params"])
    assert any("LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)


def test_epoch_order_depends_only_on_seed_and_epoch(tiny_bert_dir):
    a, b = make_student(tiny_bert_dir, seed=1), make_student(tiny_bert_dir, seed=1)
    assert a.epoch_order(1) == b.epoch_order(1)
    assert sorted(a.epoch_order(1)) == list(range(len(a.data.train)))
    assert a.epoch_order(1) != a.epoch_order(2)
    assert a.epoch_order(1) != make_student(tiny_bert_dir, seed=2).epoch_order(1)


def test_resume_replays_bit_identical_losses_and_weights(tiny_bert_dir, tmp_path):
    data = make_data(300)
    straight = make_student(tiny_bert_dir, data, epochs=2)
    expected = [r.loss for r in straight.train_epoch("Tweet:", 1)]

    interrupted = make_student(tiny_bert_dir, data, epochs=2)
    k = 5
    head = [r.loss for r in itertools.islice(interrupted.train_epoch("Tweet:", 1), k)]
    assert head == expected[:k]
    interrupted.save(tmp_path / "ckpt", training_state=True)

    resumed = make_student(tiny_bert_dir, data, epochs=2)
    resumed.load(tmp_path / "ckpt", training_state=True)
    tail = list(resumed.train_epoch("Tweet:", 1, start_step=k))
    assert [r.epoch_step for r in tail] == list(range(k + 1, straight.steps_per_epoch() + 1))
    assert [r.loss for r in tail] == expected[k:]
    # the next epoch also continues identically (optimizer and scheduler state carried over)
    assert [r.loss for r in resumed.train_epoch("Tweet:", 2)] == \
        [r.loss for r in straight.train_epoch("Tweet:", 2)]
    want, got = straight.model.state_dict(), resumed.model.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[name], got[name]) for name in want)


def test_adamw_is_fused_and_an_older_checkpoint_keeps_its_kernel(tiny_bert_dir, tmp_path):
    """New optimizers use the fused AdamW kernel; a checkpoint saved with torch's default
    foreach kernel (before the switch) resumes with foreach and replays exactly."""
    data = make_data(120)
    student = make_student(tiny_bert_dir, data)
    assert all(group["fused"] for group in student.optimizer.param_groups)

    def foreach(s):  # the kernel every checkpoint had before fused AdamW became the default
        for group in s.optimizer.param_groups:  # AdamW reads the flag from its group every step
            group["fused"] = None
        return s

    straight = foreach(make_student(tiny_bert_dir, data))
    expected = [r.loss for r in straight.train_epoch("Tweet:", 1)]
    old = foreach(make_student(tiny_bert_dir, data))
    list(itertools.islice(old.train_epoch("Tweet:", 1), 2))
    old.save(tmp_path / "ckpt", training_state=True)

    resumed = make_student(tiny_bert_dir, data)
    resumed.load(tmp_path / "ckpt", training_state=True)
    assert not any(group["fused"] for group in resumed.optimizer.param_groups)
    assert [r.loss for r in resumed.train_epoch("Tweet:", 1, start_step=2)] == expected[2:]


def test_without_step_reseeding_a_resume_would_differ(tiny_bert_dir):
    """Dropout is active: the same batch with a different RNG state gives another loss, which
    is why train_epoch reseeds before every step."""
    student = make_student(tiny_bert_dir)
    student.model.train()
    enc = student.tokenizer(["great day", "awful day"], return_tensors="pt", padding=True)
    torch.manual_seed(1)
    a = student.model(**enc).logits
    torch.manual_seed(2)
    b = student.model(**enc).logits
    assert not torch.equal(a, b)


# ---- inputs and scoring ------------------------------------------------------------
def test_prefix_is_prepended_to_every_input(tiny_bert_dir):
    student = make_student(tiny_bert_dir)
    tok = student.tokenizer
    texts = [r["text"] for r in student.data.validation]
    bare = student.encode_inputs("", "validation")
    assert bare == tok(texts, truncation=True, max_length=32)["input_ids"]
    with_prefix = student.encode_inputs("Tweet sentiment:", "validation")
    prefix_ids = tok("Tweet sentiment:", add_special_tokens=False)["input_ids"]
    assert max(map(len, bare)) + len(prefix_ids) <= 32  # short texts: nothing is truncated
    for plain, prefixed in zip(bare, with_prefix):
        assert plain[0] == tok.cls_token_id and plain[-1] == tok.sep_token_id
        assert prefixed == [tok.cls_token_id, *prefix_ids, *plain[1:]]
    assert student.encode_inputs("Other words here", "validation") != with_prefix
    assert join_input("", "hi") == "hi" and join_input("P:", "hi") == "P: hi"


def test_fast_inputs_equal_tokenizing_the_joined_strings(tiny_bert_dir):
    student = make_student(tiny_bert_dir)
    long_prefix = " ".join(["Decide whether this tweet is positive, negative or neutral."] * 6)
    texts = [r["text"] for r in student.data.test]
    assert student._split("test").compositional
    for prefix in [*PREFIXES, long_prefix]:
        want = student.tokenizer([join_input(prefix, t) for t in texts], truncation=True,
                                 max_length=32)["input_ids"]
        assert student.encode_inputs(prefix, "test") == want
    truncated = student.encode_inputs(long_prefix, "test")
    assert all(len(ids) == 32 and ids[-1] == student.tokenizer.sep_token_id for ids in truncated)


def test_fast_scoring_matches_plain_scoring(trained):
    student, _ = trained
    fast_logits = student.prefix_logits(PREFIXES, "validation")
    plain_logits = student.prefix_logits_plain(PREFIXES, "validation")
    assert fast_logits.shape == plain_logits.shape == (len(PREFIXES), 45, 3)
    torch.testing.assert_close(fast_logits, plain_logits, atol=1e-5, rtol=1e-4)
    assert torch.equal(fast_logits.argmax(-1), plain_logits.argmax(-1))
    assert len(set(fast_logits.argmax(-1).flatten().tolist())) > 1  # a meaningful comparison
    fast = student.score_prefixes(PREFIXES, "validation")
    assert fast == student.score_prefixes_plain(PREFIXES, "validation")
    assert fast[1] == fast[4] == student.evaluate(PREFIXES[1], "validation")
    assert set(fast[0]) == {"accuracy", "macro_f1"}
    assert student.score_prefixes([], "validation") == []


def test_prefixes_change_the_scores(trained):
    student, _ = trained
    logits = student.prefix_logits(["", "Tweet sentiment:", "awful awful awful"], "validation")
    assert not torch.equal(logits[0], logits[1]) and not torch.equal(logits[1], logits[2])


def test_non_compositional_tokenizer_falls_back_exactly(tiny_bpe_dir):
    student = make_student(tiny_bpe_dir)
    assert student.family == "RoBERTa"
    cache = student._split("validation")
    assert not cache.compositional
    texts = cache.texts
    for prefix in PREFIXES:
        want = student.tokenizer([join_input(prefix, t) for t in texts], truncation=True,
                                 max_length=32)["input_ids"]
        assert student.encode_inputs(prefix, "validation") == want
    assert student.score_prefixes(PREFIXES, "validation") == \
        student.score_prefixes_plain(PREFIXES, "validation")
    losses = [r.loss for r in student.train_epoch("Tweet:", 1)]
    assert len(losses) == student.steps_per_epoch() and all(loss > 0 for loss in losses)


def test_empty_split_is_a_data_error(tiny_bert_dir):
    data = make_data(60)
    data.test = []
    student = make_student(tiny_bert_dir, data)
    with pytest.raises(DataError, match="test split is empty"):
        student.evaluate("x", "test")


# ---- checkpoints -------------------------------------------------------------------
def test_save_load_roundtrip(trained, tiny_bert_dir, tmp_path):
    student, _ = trained
    student.save(tmp_path / "best", training_state=False)
    files = {p.name for p in (tmp_path / "best").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer_config.json"} <= files
    assert "optimizer.pt" not in files

    fresh = make_student(tiny_bert_dir, seed=99)
    before = fresh.prefix_logits(PREFIXES[:2], "test")
    fresh.load(tmp_path / "best", training_state=False)
    after = fresh.prefix_logits(PREFIXES[:2], "test")
    assert torch.equal(after, student.prefix_logits(PREFIXES[:2], "test"))
    assert not torch.equal(before, after)
    with pytest.raises(ModelError, match="lacks optimizer.pt"):
        fresh.load(tmp_path / "best", training_state=True)

    # the saved directory is itself a student model
    reopened = make_student(tmp_path / "best")
    assert torch.equal(reopened.prefix_logits(PREFIXES[:2], "test"), after)

    student.save(tmp_path / "current", training_state=True)
    assert {"optimizer.pt", "scheduler.pt"} <= {p.name for p in (tmp_path / "current").iterdir()}
    fresh.load(tmp_path / "current", training_state=True)
    assert fresh.scheduler.state_dict() == student.scheduler.state_dict()


def test_grad_scaler_state_is_checkpointed(tiny_bert_dir, tmp_path):
    """The fp16 path (CUDA without bf16) steps through a GradScaler and checkpoints it; a CPU
    scaler exercises the same code here."""
    data = make_data(60)
    student = make_student(tiny_bert_dir, data)
    student.scaler = torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=2)
    losses = [r.loss for r in student.train_epoch("Tweet:", 1)]
    assert len(losses) == student.steps_per_epoch() and student.scaler.get_scale() > 256.0
    student.save(tmp_path / "ckpt", training_state=True)
    assert (tmp_path / "ckpt" / "scaler.pt").is_file()
    fresh = make_student(tiny_bert_dir, data)
    fresh.scaler = torch.amp.GradScaler("cpu")
    fresh.load(tmp_path / "ckpt", training_state=True)
    assert fresh.scaler.state_dict() == student.scaler.state_dict()


def test_load_rejects_missing_or_mismatched_checkpoints(tiny_bert_dir, tmp_path):
    student = make_student(tiny_bert_dir)
    with pytest.raises(ModelError, match="does not exist"):
        student.load(tmp_path / "nothing")
    two_labels = make_data(60)
    two_labels.label_names = ["a", "b"]
    for split in ("train", "validation", "test"):
        for row in two_labels.split(split):
            row["label"] %= 2
    make_student(tiny_bert_dir, two_labels).save(tmp_path / "two", training_state=False)
    with pytest.raises(ModelError, match="cannot load checkpoint"):
        student.load(tmp_path / "two", training_state=False)


# ---- factory -----------------------------------------------------------------------
def test_build_student_dispatches_on_task(tiny_bert_dir):
    cfg = RunConfig(seed=3)
    cfg.student.model = str(tiny_bert_dir)
    cfg.student.max_length = 32
    student = build_student(cfg, make_data(60), "cpu")
    assert isinstance(student, ClassificationStudent)
    assert student.epochs == cfg.loop.epochs and student.seed == 3
    with pytest.raises(ConfigError, match="task 'ner' has no student"):
        build_student(cfg, TaskData("ner", "x", LABELS, [], [], [], ""), "cpu")
    cfg.student.tuning = "lt-prefix"
    from engine.student.ltuning import LTuningStudent

    assert isinstance(build_student(cfg, make_data(60), "cpu"), LTuningStudent)
    with pytest.raises(ConfigError, match="student.tuning 'lt-prefix' works only for classification"):
        build_student(cfg, TaskData("extractive_qa", "x", [], [], [], [], ""), "cpu")
    cfg.student.tuning = "prompt"
    from engine.student.soft_prompt import SoftPromptStudent

    assert isinstance(build_student(cfg, make_data(60), "cpu"), SoftPromptStudent)


# ---- devices -----------------------------------------------------------------------
def test_resolve_device_without_accelerators(monkeypatch):
    from engine import device as dev

    monkeypatch.setattr(dev.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    assert dev.resolve_device("auto") == "cpu"
    assert dev.resolve_device("CPU") == "cpu"
    for name in ["cuda", "cuda:0", "mps"]:
        with pytest.raises(UsageError, match="not available|no CUDA GPU"):
            dev.resolve_device(name)
    with pytest.raises(UsageError, match="unknown device 'tpu'"):
        dev.resolve_device("tpu")
    assert dev.amp_dtype("cpu") is None


def test_resolve_device_with_gpus(monkeypatch):
    from engine import device as dev

    monkeypatch.setattr(dev.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dev.torch.cuda, "device_count", lambda: 2)
    assert dev.resolve_device("auto") == "cuda"
    assert dev.resolve_device("cuda") == "cuda"
    assert dev.resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(UsageError, match=r"'cuda:2' does not exist.*cuda:0 to cuda:1"):
        dev.resolve_device("cuda:2")
    with pytest.raises(UsageError, match="not a valid CUDA device"):
        dev.resolve_device("cuda:x")
    with pytest.raises(UsageError, match="not a valid CUDA device"):
        dev.resolve_device("cuda:\u00b2")  # '²'.isdigit(), but int('²') raises
    monkeypatch.setattr(dev.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    assert dev.resolve_device("auto") == "mps"
    assert dev.resolve_device("mps") == "mps"
