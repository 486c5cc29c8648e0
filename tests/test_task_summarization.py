"""Summarization: data (local files, CNN/DailyMail and XSum on the Hub), the seq2seq student
(neg_loss proxy on validation, ROUGE on test), and the real Engine loop with stop/resume."""

from __future__ import annotations

import csv

import pytest
import torch

from engine import events as ev
from engine.config import DataConfig, StudentConfig, build_config
from engine.data import load_task_data
from engine.errors import ConfigError, DataError, ModelError
from engine.metrics_text import rouge_scores
from engine.student.seq2seq import Seq2SeqStudent
from tests.task_fixtures import (  # noqa: F401 - tiny_bart_dir is a fixture
    task_data,
    fingerprint,
    make_summarization_rows,
    run_engine,
    stop_and_resume,
    tiny_bart_dir,
    write_jsonl,
)


def sum_cfg(**kw) -> DataConfig:
    return DataConfig(**{"task": "summarization", "train_size": 30, "val_size": 10,
                         "test_size": 10, **kw})


def make_student(model, rows=None, seed: int = 1, epochs: int = 2, **kw) -> Seq2SeqStudent:
    rows = rows or make_summarization_rows(40, seed=4)
    data = task_data("summarization", rows[:24], rows[24:32], rows[32:])
    base = dict(model=str(model), metric="neg_loss", max_length=48, gen_max_length=10,
                num_beams=2, lr=2e-3, batch_size=8, eval_batch_size=16)
    return Seq2SeqStudent(StudentConfig(**{**base, **kw}), data, epochs=epochs, seed=seed,
                          device="cpu")


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


def test_local_files_and_column_choice(tmp_path):
    rows = make_summarization_rows(40)
    path = tmp_path / "s.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "document", "summary"])
        writer.writeheader()
        writer.writerows({"id": i, **r} for i, r in enumerate(rows))
        writer.writerow({"id": 99, "document": "", "summary": "orphan"})
        writer.writerow({"id": 98, **rows[0]})
    d = load_task_data(sum_cfg(dataset=str(path)), seed=3)
    assert d.task == "summarization" and d.label_names == []
    assert all(set(r) == {"document", "summary"} for r in d.train)
    docs = [r["document"] for r in d.train + d.validation + d.test]
    assert len(set(docs)) == len(docs) == 40
    assert any("1 rows with an empty document" in w for w in d.warnings)
    assert any("1 repeated documents" in w for w in d.warnings)
    assert "reference summary" in d.default_description
    assert d == load_task_data(sum_cfg(dataset=str(path)), seed=3)
    assert len(d.exemplars(3, seed=2)) == 3
    assert set(d.all_texts()) >= {r["summary"] for r in d.test}

    other = write_jsonl(tmp_path / "s.jsonl", [{"body": r["document"], "gist": r["summary"]}
                                              for r in rows])
    with pytest.raises(DataError, match="no summary column.*Fix: set data.label_column"):
        load_task_data(sum_cfg(dataset=str(other)), seed=0)
    d = load_task_data(sum_cfg(dataset=str(other), label_column="gist"), seed=0)
    assert d.train[0]["document"].startswith("report ")


def fake_news(document: str, summary: str):
    import datasets

    parts = {}
    for split, n in {"train": 30, "validation": 10, "test": 10}.items():
        rows = make_summarization_rows(n, seed=len(split))
        parts[split] = datasets.Dataset.from_dict({
            document: [f"{split} {r['document']}" for r in rows],
            summary: [r["summary"] for r in rows], "id": [str(i) for i in range(n)]})
    return datasets.DatasetDict(parts)


@pytest.mark.parametrize("name, call, document, summary, words", [
    ("cnn_dailymail:3.0.0", ("abisee/cnn_dailymail", "3.0.0"), "article", "highlights", "CNN"),
    ("xsum", ("EdinburghNLP/xsum", None), "document", "summary", "BBC"),
])
def test_hub_news_datasets(monkeypatch, name, call, document, summary, words):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda path, name=None, **kw: calls.append((path, name)) or
                        fake_news(document, summary))
    d = load_task_data(sum_cfg(dataset=name, train_size=20, val_size=5, test_size=5), seed=0)
    assert calls == [call]
    assert all(r["document"].startswith("test ") for r in d.test)
    assert words in d.default_description


def test_cnn_dailymail_needs_its_version():
    with pytest.raises(DataError, match="needs a configuration.*cnn_dailymail:3.0.0"):
        load_task_data(sum_cfg(dataset="cnn_dailymail"), seed=0)


# ---------------------------------------------------------------------------------------
# The student
# ---------------------------------------------------------------------------------------


def test_placement_family_and_default_model(tiny_bart_dir):
    student = make_student(tiny_bart_dir)
    assert student.placement == "[CLS] prefix + document [SEP]"  # the MiniLM tokenizer's tokens
    assert student.family == "BART"
    assert student.metric_names == ("neg_loss", "rouge1", "rouge2", "rougeL")
    # the encoder default means BART, which needs the Hub (tests run offline)
    with pytest.raises(ModelError, match="cannot load summarization student model "
                                         "'facebook/bart-base'"):
        make_student("all-MiniLM-L6-v2")


def test_neg_loss_is_the_teacher_forced_loss_and_batches_exactly(tiny_bart_dir):
    student = make_student(tiny_bart_dir)
    prefixes = ["Summarize the first sentence.", "", "Summarize the first sentence.", "x"]
    values = student.neg_loss(prefixes)
    assert values[0] == values[2]
    for prefix, value in zip(prefixes, values):
        assert student.neg_loss([prefix]) == pytest.approx([value], abs=1e-9)
    # against the model's own loss, token-weighted over the validation rows
    total = tokens = 0.0
    model, tok = student.model, student.tokenizer
    model.eval()
    for row in student.data.validation:
        enc = tok(f"x {row['document']}", truncation=True, max_length=48, return_tensors="pt")
        labels = tok(text_target=row["summary"], truncation=True, max_length=10,
                     return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            loss = model(**enc, labels=labels).loss
        total += float(loss) * labels.shape[1]
        tokens += labels.shape[1]
    assert values[3] == pytest.approx(-total / tokens, abs=1e-5)


def test_validation_uses_the_proxy_and_test_reports_rouge(tiny_bart_dir):
    student = make_student(tiny_bart_dir)
    assert list(student.evaluate("Summarize.")) == ["neg_loss"]
    test = student.evaluate("Summarize.", "test")
    assert list(test) == ["neg_loss", "rouge1", "rouge2", "rougeL"]
    summaries = student.generate(["Summarize."], "test")[0]
    assert summaries == student.generate(["Summarize.", "other"], "test")[0]
    references = [r["summary"] for r in student.data.test]
    assert {k: test[k] for k in ("rouge1", "rouge2", "rougeL")} == rouge_scores(summaries, references)

    ranked_by_rouge = make_student(tiny_bart_dir, metric="rouge1")
    assert list(ranked_by_rouge.evaluate("Summarize.")) == ["rouge1", "neg_loss", "rouge2", "rougeL"]


def test_training_is_deterministic_resumable_and_learns(tiny_bart_dir, tmp_path):
    full = make_student(tiny_bart_dir, epochs=3)
    before = full.evaluate("")["neg_loss"]
    losses = {e: [r.loss for r in full.train_epoch("", e)] for e in (1, 2, 3)}
    assert full.evaluate("")["neg_loss"] > before
    part = make_student(tiny_bart_dir, epochs=3)
    assert [r.loss for r in part.train_epoch("", 1)] == losses[1]
    steps = part.train_epoch("", 2)
    assert next(steps).loss == losses[2][0]
    part.save(tmp_path / "ckpt")
    resumed = make_student(tiny_bart_dir, epochs=3)
    resumed.load(tmp_path / "ckpt")
    assert [r.loss for r in resumed.train_epoch("", 2, start_step=1)] == losses[2][1:]
    assert [r.loss for r in resumed.train_epoch("", 3)] == losses[3]


def test_bad_rows_and_metrics_are_rejected(tiny_bart_dir):
    rows = make_summarization_rows(12)
    rows[3] = {"document": "text", "summary": "  "}
    with pytest.raises(DataError, match="train row 3 has an empty or non-text 'summary'"):
        make_student(tiny_bart_dir, rows)
    with pytest.raises(ConfigError, match="'exact_match' does not apply to task 'summarization'"):
        make_student(tiny_bart_dir, metric="exact_match")


# ---------------------------------------------------------------------------------------
# Config and the Engine
# ---------------------------------------------------------------------------------------


def test_config_defaults_and_generation_settings():
    cfg = build_config(overrides={"data": {"task": "summarization"}})
    assert cfg.student.metric == "neg_loss"
    assert (cfg.student.num_beams, cfg.student.gen_max_length) == (4, 64)
    for metric in ("rouge1", "rouge2", "rougeL"):
        assert build_config(overrides={"data": {"task": "summarization"},
                                       "student": {"metric": metric}}).student.metric == metric
    with pytest.raises(ConfigError, match="'accuracy' does not apply to task 'summarization'"):
        build_config(overrides={"data": {"task": "summarization"}, "student": {"metric": "accuracy"}})
    with pytest.raises(ConfigError, match="student.num_beams"):
        build_config(overrides={"data": {"task": "summarization"}, "student": {"num_beams": 0}})
    with pytest.raises(ConfigError, match="invalid value 'translation' for data.task"):
        build_config(overrides={"data": {"task": "translation"}})


@pytest.fixture(scope="module")
def sum_jsonl(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("sum") / "s.jsonl", make_summarization_rows(40, seed=8))


def engine_cfg(path, model):
    return build_config("default", overrides={
        "seed": 5, "device": "cpu",  # exact replay is a CPU promise
        "data": {"dataset": str(path), "task": "summarization", "train_size": 16, "val_size": 6,
                 "test_size": 6},
        "student": {"model": str(model), "max_length": 48, "gen_max_length": 8, "num_beams": 2,
                    "batch_size": 8, "eval_batch_size": 16, "lr": 2e-3, "checkpoint_every": 1},
        "loop": {"epochs": 2, "k": 4, "l": 2, "window": 2},
        "ta": {"backend": "scripted"},
    })


def test_engine_runs_and_resumes_bit_identically_on_summarization(sum_jsonl, tiny_bart_dir,
                                                                   tmp_path):
    cfg = engine_cfg(sum_jsonl, tiny_bart_dir)
    engine, rec, ta = run_engine(cfg, tmp_path / "a")
    done = engine.run()
    assert done.status == "finished", done.reason
    started = rec.of(ev.RunStarted)[0]
    assert (started.task, started.metric) == ("summarization", "neg_loss")
    system = ta.calls[0][0]["content"]
    assert "abstractive summarization" in system and "prefix + document" in system
    # prefixes were ranked by the proxy, the final test by real ROUGE
    assert all(list(e.metrics) == ["neg_loss"] for e in rec.of(ev.PrefixScored) if e.metrics)
    assert list(done.val_metrics) == ["neg_loss"]
    assert list(done.test_metrics) == ["neg_loss", "rouge1", "rouge2", "rougeL"]
    assert list(done.test_metrics_no_prefix) == ["neg_loss", "rouge1", "rouge2", "rougeL"]

    part1, part2 = stop_and_resume(cfg, tmp_path / "b", stop_step=3)
    merged = type(part1)()
    merged.events = part1.events + part2.events
    assert fingerprint(merged) == fingerprint(rec)
