"""Multiple choice: data (local files, RACE on the Hub), the student, and the real Engine loop."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from engine import events as ev
from engine.config import DataConfig, StudentConfig, build_config
from engine.data import load_task_data
from engine.errors import ConfigError, DataError
from engine.student.multiple_choice import MultipleChoiceStudent, question_with_option
from engine.tasks import format_exemplar
from tests.task_fixtures import make_mc_rows, run_engine, task_data, write_jsonl


def mc_cfg(**kw) -> DataConfig:
    return DataConfig(**{"task": "multiple_choice", "train_size": 30, "val_size": 10,
                         "test_size": 10, **kw})


def make_student(model, rows=None, seed: int = 1, epochs: int = 2, **kw) -> MultipleChoiceStudent:
    rows = rows or make_mc_rows(56, seed=2)
    data = task_data("multiple_choice", rows[:40], rows[40:48], rows[48:])
    base = dict(model=str(model), max_length=40, lr=1e-3, batch_size=8, eval_batch_size=16)
    return MultipleChoiceStudent(StudentConfig(**{**base, **kw}), data, epochs=epochs, seed=seed,
                                 device="cpu")


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


def test_local_jsonl_rows_splits_and_helpers(tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", make_mc_rows(60, options=(3, 4)))
    d = load_task_data(mc_cfg(dataset=str(path)), seed=4)
    assert d.task == "multiple_choice" and d.label_names == []
    assert (len(d.train), len(d.validation), len(d.test)) == (30, 10, 10)
    for row in d.train:
        assert set(row) == {"article", "question", "options", "label"}
        assert 0 <= row["label"] < len(row["options"])
    articles = [r["article"] for r in d.train + d.validation + d.test]
    assert len(set(articles)) == 50
    assert d == load_task_data(mc_cfg(dataset=str(path)), seed=4)
    assert "answer options" in d.default_description
    texts = d.all_texts()
    assert all(o in texts for r in d.validation for o in r["options"])
    exemplars = d.exemplars(2, seed=0)
    assert len(exemplars) == 2
    text, answer = format_exemplar("multiple_choice", exemplars[0])
    assert exemplars[0]["options"][exemplars[0]["label"]] in answer and "(A)" in text


def test_csv_with_letter_columns_letters_and_option_text(tmp_path):
    rows = []
    for i in range(12):
        answer = ["A", "b", "2", "Rome"][i % 4]  # letter, lower-case letter, index, option text
        rows.append({"passage": f"text {i}", "question": "Capital of Italy?", "A": "Oslo",
                     "B": "Paris", "C": "Rome", "D": "Lima", "answer": answer})
    rows.append({**rows[0], "passage": "bad label", "answer": "Z"})
    rows.append({**rows[0], "passage": "empty option", "D": ""})
    path = tmp_path / "mc.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    d = load_task_data(mc_cfg(dataset=str(path), train_size=6, val_size=3, test_size=3), seed=0)
    by_article = {r["article"]: r for r in d.train + d.validation + d.test}
    assert len(by_article) == 12
    assert [by_article[f"text {i}"]["label"] for i in range(4)] == [0, 1, 2, 2]
    assert by_article["text 0"]["options"] == ["Oslo", "Paris", "Rome", "Lima"]
    assert any("1 with fewer than two non-empty options" in w and "1 whose answer" in w
               for w in d.warnings)


def test_options_and_label_errors(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"article": "a", "question": "q", "label": 0}] * 3)
    with pytest.raises(DataError, match="no options found.*Fix: give a list column 'options'"):
        load_task_data(mc_cfg(dataset=str(path)), seed=0)
    path = write_jsonl(tmp_path / "b.jsonl", [{"article": "a", "question": "q", "options": "x",
                                               "label": 0}] * 3)
    with pytest.raises(DataError, match="options column 'options' holds str values"):
        load_task_data(mc_cfg(dataset=str(path)), seed=0)


def fake_race(sizes: dict[str, int]):
    import datasets

    parts = {}
    for split, n in sizes.items():
        rows = make_mc_rows(n, seed=len(split))
        parts[split] = datasets.Dataset.from_dict({
            "example_id": [f"{split}-{i}" for i in range(n)],
            "article": [f"{split} {r['article']}" for r in rows],
            "answer": ["ABCD"[r["label"]] for r in rows],
            "question": [r["question"] for r in rows],
            "options": [r["options"] for r in rows]})
    return datasets.DatasetDict(parts)


def test_hub_race_needs_a_level_and_maps_letters(monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda path, name=None, **kw: calls.append((path, name)) or
                        fake_race({"train": 30, "validation": 12, "test": 12}))
    with pytest.raises(DataError, match="needs a configuration.*race:all"):
        load_task_data(mc_cfg(dataset="race"), seed=0)
    d = load_task_data(mc_cfg(dataset="race:high", train_size=20, val_size=6, test_size=6), seed=0)
    assert calls == [("ehovy/race", "high")]
    assert all(r["article"].startswith("validation ") for r in d.validation)
    assert all(r["article"].startswith("test ") for r in d.test)
    assert all(r["options"][r["label"]] in ("great", "love", "happy", "wonderful", "excellent",
                                            "amazing", "good", "nice") for r in d.train)
    assert "RACE, subset high" in d.default_description


# ---------------------------------------------------------------------------------------
# The student
# ---------------------------------------------------------------------------------------


def test_inputs_keep_the_prefix_and_fill_cloze_blanks(tiny_bert_dir):
    student = make_student(tiny_bert_dir)
    assert student.placement == \
        "[CLS] prefix + article [SEP] question + option [SEP] (once per option)"
    assert student.family == "BERT" and student.metric_names == ("accuracy",)
    assert question_with_option("The _ is red.", "apple") == "The apple is red."
    assert question_with_option("Which is red?", "apple") == "Which is red? apple"
    row = {"article": " ".join(["word"] * 200), "question": "Which word is positive?",
           "options": ["table", "great"], "label": 1}
    [pairs] = student.encode("Pick the happy word.", [row])
    tok = student.tokenizer
    for (ids, types), option in zip(pairs, row["options"]):
        assert len(ids) == student.cfg.max_length
        text = tok.decode(ids)
        assert text.startswith("[CLS] pick the happy word. word word")
        assert text.endswith(f"[SEP] which word is positive? {option} [SEP]")
        assert types[0] == 0 and types[-1] == 1


def test_padded_options_are_masked_and_batching_is_exact(tiny_bert_dir):
    rows = make_mc_rows(56, seed=2, options=(2, 3, 4))
    student = make_student(tiny_bert_dir, rows)
    prefixes = ["choose the positive word", "", "choose the positive word", "x y"]
    logits = student.option_logits(prefixes)
    assert torch.equal(logits[0], logits[2])
    for i, row in enumerate(student.data.validation):
        n = len(row["options"])
        assert torch.isinf(logits[0][i, n:]).all() and torch.isfinite(logits[0][i, :n]).all()
        with torch.inference_mode():
            alone = student._forward(student.encode(prefixes[0], [row]))[0, :n]
        assert alone == pytest.approx(logits[0][i, :n], abs=1e-5)
    scores = student.score_prefixes(prefixes)
    for prefix, metrics in zip(prefixes, scores):
        assert metrics == student.evaluate(prefix)
        assert metrics["accuracy"] * len(student.data.validation) == \
            pytest.approx(round(metrics["accuracy"] * len(student.data.validation)))


def test_training_is_deterministic_resumable_and_learns(tiny_bert_dir, tmp_path):
    full = make_student(tiny_bert_dir, epochs=5, lr=3e-3)
    before = full.evaluate("", "test")["accuracy"]
    losses = {e: [r.loss for r in full.train_epoch("", e)] for e in range(1, 6)}
    assert sum(losses[5]) < sum(losses[1])
    assert full.evaluate("", "test")["accuracy"] > before

    part = make_student(tiny_bert_dir, epochs=5, lr=3e-3)
    steps = part.train_epoch("", 1)
    assert [next(steps).loss for _ in range(3)] == losses[1][:3]
    part.save(tmp_path / "ckpt")
    resumed = make_student(tiny_bert_dir, epochs=5, lr=3e-3)
    resumed.load(tmp_path / "ckpt")
    assert [r.loss for r in resumed.train_epoch("", 1, start_step=3)] == losses[1][3:]


def test_bad_rows_and_metric_are_rejected(tiny_bert_dir):
    rows = make_mc_rows(20)
    rows[1] = {**rows[1], "label": 7}
    with pytest.raises(DataError, match="train row 1 has label 7, not an index of its 4 options"):
        make_student(tiny_bert_dir, rows)
    rows = make_mc_rows(20)
    del rows[0]["options"]
    with pytest.raises(DataError, match="train row 0 lacks 'options'"):
        make_student(tiny_bert_dir, rows)
    with pytest.raises(ConfigError, match="student.metric 'f1' does not apply"):
        make_student(tiny_bert_dir, metric="f1")


# ---------------------------------------------------------------------------------------
# The Engine
# ---------------------------------------------------------------------------------------


def test_engine_runs_gpta_data_mode_on_multiple_choice(tiny_bert_dir, tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", make_mc_rows(50, seed=5))
    cfg = build_config("default", overrides={
        "seed": 2, "mode": "gpta-data", "device": "cpu",
        "data": {"dataset": str(path), "task": "multiple_choice", "train_size": 24,
                 "val_size": 8, "test_size": 8, "exemplars": 2},
        "student": {"model": str(tiny_bert_dir), "max_length": 40, "batch_size": 8,
                    "eval_batch_size": 32, "lr": 1e-3, "checkpoint_every": 2},
        "loop": {"epochs": 2, "k": 4, "l": 2, "window": 2},
        "ta": {"backend": "scripted"},
    })
    assert cfg.student.metric == "accuracy"
    engine, rec, ta = run_engine(cfg, tmp_path / "run")
    done = engine.run()
    assert done.status == "finished", done.reason
    assert isinstance(engine.student, MultipleChoiceStudent)
    assert rec.of(ev.RunStarted)[0].task == "multiple_choice"
    system = ta.calls[0][0]["content"]
    assert "multiple-choice reading comprehension" in system
    assert "[CLS] prefix + article [SEP] question + option [SEP]" in system
    assert list(done.test_metrics) == ["accuracy"]
    assert rec.of(ev.TARequest)[0].examples_sent == 2
    windows = rec.of(ev.WindowsBuilt)
    assert windows and json.dumps(windows[0].windows[0]).count("multiple-choice") >= 1
