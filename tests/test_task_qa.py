"""Extractive QA: data (local files, Hub names), the span student, and the real Engine loop."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest
import torch

from engine import events as ev
from engine.config import DataConfig, RunConfig, StudentConfig, build_config
from engine.data import load_task_data
from engine.errors import ConfigError, DataError
from engine.student.qa import QAStudent
from engine.tasks import default_metric, format_exemplar, get_task
from tests.task_fixtures import (
    CITIES,
    task_data,
    fingerprint,
    make_qa_rows,
    run_engine,
    stop_and_resume,
    write_jsonl,
)


def qa_cfg(**kw) -> DataConfig:
    return DataConfig(**{"task": "extractive_qa", "train_size": 30, "val_size": 10,
                         "test_size": 10, **kw})


def student_cfg(model, **kw) -> StudentConfig:
    base = dict(model=str(model), metric="f1", max_length=48, doc_stride=8, lr=1e-3,
                batch_size=8, eval_batch_size=16)
    return StudentConfig(**{**base, **kw})


def make_student(model, rows=None, seed: int = 1, epochs: int = 2, **kw) -> QAStudent:
    rows = rows or make_qa_rows(48, seed=3, unanswerable_every=6)
    data = task_data("extractive_qa", rows[:32], rows[32:40], rows[40:])
    return QAStudent(student_cfg(model, **kw), data, epochs=epochs, seed=seed, device="cpu")


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


def test_local_jsonl_squad_rows_splits_and_helpers(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", make_qa_rows(60, unanswerable_every=4))
    d = load_task_data(qa_cfg(dataset=str(path)), seed=5)
    assert d.task == "extractive_qa" and d.label_names == []
    assert (len(d.train), len(d.validation), len(d.test)) == (30, 10, 10)
    ids = [r["id"] for r in d.train + d.validation + d.test]
    assert len(set(ids)) == 50  # disjoint
    for row in d.train:
        assert set(row) == {"id", "question", "context", "answers"}
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
            assert row["context"][start:start + len(text)] == text
    assert any(not r["answers"]["text"] for r in d.train)
    assert d == load_task_data(qa_cfg(dataset=str(path)), seed=5)
    assert [r["id"] for r in load_task_data(qa_cfg(dataset=str(path)), seed=6).validation] != \
        [r["id"] for r in d.validation]
    assert "paragraph" in d.default_description and "cannot be answered" in d.default_description
    assert "{labels}" not in d.default_description
    exemplars = d.exemplars(3, seed=1)
    assert len(exemplars) == 3 and exemplars == d.exemplars(3, seed=1)
    texts = d.all_texts()
    assert all(r["question"] in texts and r["context"] in texts for r in d.test)
    text, label = format_exemplar("extractive_qa", exemplars[0])
    assert exemplars[0]["question"] in text


def test_csv_answers_as_strings_with_starts_and_dropped_rows(tmp_path):
    path = tmp_path / "qa.csv"
    context = "Ann lives in Oslo. Bob lives in Oslo too. Cy lives in Rome."
    rows = [
        {"question": "Where does Bob live?", "context": context, "answer": "Oslo", "answer_start": "30"},
        {"question": "Where does Cy live?", "context": context, "answer": "Rome", "answer_start": ""},
        {"question": "Where does Ann live?", "context": context, "answer": "Oslo", "answer_start": "13"},
        {"question": "Where is Dee?", "context": context, "answer": "", "answer_start": ""},
        {"question": "Where does Ed live?", "context": context, "answer": "Paris", "answer_start": "0"},
        {"question": "", "context": context, "answer": "Oslo", "answer_start": "13"},
        {"question": "Where does Ann live?", "context": context, "answer": "Oslo", "answer_start": "13"},
    ]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    d = load_task_data(qa_cfg(dataset=str(path), train_size=2, val_size=1, test_size=1), seed=0)
    got = {r["question"]: r["answers"] for r in d.train + d.validation + d.test}
    # a wrong start is moved to the nearest occurrence; a missing one is the first occurrence
    assert got["Where does Bob live?"] == {"text": ["Oslo"], "answer_start": [32]}
    assert got["Where does Cy live?"] == {"text": ["Rome"], "answer_start": [54]}
    assert got["Where is Dee?"] == {"text": [], "answer_start": []}
    assert any("1 without question" in w and "1 whose answer is not in the context" in w
               for w in d.warnings)
    assert any("repeated" in w for w in d.warnings)


def test_json_list_with_squad_v1_answer_objects(tmp_path):
    records = [{"question": f"Where does the red cat live {i}?",
                "context": f"The red cat lives in Paris {i}.",
                "answers": [{"text": "Paris", "answer_start": 21}, {"text": f"Paris {i}"}]}
               for i in range(8)]
    path = tmp_path / "qa.json"
    path.write_text(json.dumps({"data": records}), encoding="utf-8")
    d = load_task_data(qa_cfg(dataset=str(path), train_size=4, val_size=2, test_size=2), seed=0)
    assert all(r["answers"]["text"][0] == "Paris" and r["answers"]["answer_start"] == [21, 21]
               for r in d.train)


def test_parquet_with_nested_answers_and_configured_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = make_qa_rows(20, seed=4, unanswerable_every=5)
    table = pa.table({"query": [r["question"] for r in rows],
                      "passage": [r["context"] for r in rows],
                      "gold": [r["answers"] for r in rows]})
    path = tmp_path / "qa.parquet"
    pq.write_table(table, path)
    d = load_task_data(qa_cfg(dataset=str(path), label_column="gold", train_size=10, val_size=5,
                              test_size=5), seed=2)
    want = {(r["question"], r["context"]): r["answers"] for r in rows}
    got = d.train + d.validation + d.test
    assert len(got) == 20 and any(not r["answers"]["text"] for r in got)
    assert all(r["answers"] == want[r["question"], r["context"]] for r in got)


def test_qa_column_errors(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"context": "x", "answers": "x"}] * 3)
    with pytest.raises(DataError, match="no question column"):
        load_task_data(qa_cfg(dataset=str(path)), seed=0)
    path = write_jsonl(tmp_path / "q2.jsonl", make_qa_rows(5))
    with pytest.raises(DataError, match="context column 'passage' not found.*Fix: set data.text_column"):
        load_task_data(qa_cfg(dataset=str(path), text_column="passage"), seed=0)
    path = write_jsonl(tmp_path / "q3.jsonl", [{"question": "q", "context": "c 5",
                                                "answers": {"span": "c"}}] * 3)
    with pytest.raises(DataError, match="answers column 'answers' holds a value of unknown shape"):
        load_task_data(qa_cfg(dataset=str(path)), seed=0)
    # numbers are answer texts like any other
    path = write_jsonl(tmp_path / "q4.jsonl", [{"question": f"q{i}", "context": "it was 1990.",
                                                "answers": 1990} for i in range(4)])
    d = load_task_data(qa_cfg(dataset=str(path), train_size=2, val_size=1, test_size=1), seed=0)
    assert d.train[0]["answers"] == {"text": ["1990"], "answer_start": [7]}
    path = write_jsonl(tmp_path / "q5.jsonl", [{"question": "q", "context": "c",
                                                "answers": "absent"}] * 3)
    with pytest.raises(DataError, match="has no usable extractive_qa rows"):
        load_task_data(qa_cfg(dataset=str(path)), seed=0)


def fake_squad(split_sizes: dict[str, int]):
    import datasets

    parts = {}
    for split, n in split_sizes.items():
        rows = make_qa_rows(n, seed=len(split), unanswerable_every=3)
        parts[split] = datasets.Dataset.from_dict({
            "id": [f"{split}-{r['id']}" for r in rows], "title": ["t"] * n,
            "context": [r["context"] for r in rows], "question": [r["question"] for r in rows],
            "answers": [r["answers"] for r in rows]})
    return datasets.DatasetDict(parts)


def test_hub_squad_v2_column_map(monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda path, name=None, **kw: calls.append((path, name)) or
                        fake_squad({"train": 40, "validation": 30}))
    d = load_task_data(qa_cfg(dataset="squad_v2", train_size=20, val_size=8, test_size=8), seed=1)
    assert calls == [("rajpurkar/squad_v2", None)]
    assert all(r["id"].startswith("train-") for r in d.train)
    assert all(r["id"].startswith("validation-") for r in d.validation + d.test)
    assert not {r["id"] for r in d.validation} & {r["id"] for r in d.test}
    assert "SQuAD 2.0" in d.default_description
    assert any(not r["answers"]["text"] for r in d.train)


# ---------------------------------------------------------------------------------------
# The student
# ---------------------------------------------------------------------------------------


def test_placement_and_windows_match_the_hf_overflow_recipe(tiny_bert_dir):
    student = make_student(tiny_bert_dir, max_length=40, doc_stride=6)
    assert student.placement == "[CLS] prefix + question [SEP] context [SEP]"
    assert get_task("extractive_qa").placement_for() == student.placement
    assert student.family == "BERT" and student.allow_null
    prefix = "Find the city."
    ex = student.examples(student.data.validation)
    feats = student.features(prefix, ex)
    assert len(feats) > len(ex.rows)  # long contexts need several windows
    for i, row in enumerate(ex.rows):
        want = student.tokenizer(f"{prefix} {row['question']}", row["context"], truncation="only_second",
                                 max_length=40, stride=6, return_overflowing_tokens=True)
        mine = [f for f in feats if f.example == i]
        assert [f.ids for f in mine] == want["input_ids"]
        assert [f.types for f in mine] == want["token_type_ids"]


def test_training_targets_point_at_the_answer(tiny_bert_dir):
    student = make_student(tiny_bert_dir, max_length=40, doc_stride=6)
    ex = student.examples(student.data.train)
    feats = student.features("", ex)
    covered = set()
    for f in feats:
        start, end = student.target(f, ex.token_spans[f.example])
        answers = ex.rows[f.example]["answers"]["text"]
        if (start, end) == (0, 0):
            continue
        assert answers, "an unanswerable question is trained on [CLS] only"
        assert student.tokenizer.decode(f.ids[start:end + 1]) == answers[0].lower()
        covered.add(f.example)
    answerable = {i for i, r in enumerate(ex.rows) if r["answers"]["text"]}
    assert covered == answerable


class PointAt(torch.nn.Module):
    """A stand-in QA model: high start/end logits on one token id, optional [CLS] bonus."""

    def __init__(self, token_id: int, cls_bonus: float = 0.0):
        super().__init__()
        self.token_id, self.cls_bonus = token_id, cls_bonus

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        logits = (input_ids == self.token_id).float() * 5.0
        logits[:, 0] += self.cls_bonus
        return SimpleNamespace(start_logits=logits, end_logits=logits.clone())


def test_prediction_reads_the_span_from_the_right_window(tiny_bert_dir):
    rows = make_qa_rows(48, seed=3, unanswerable_every=6)
    student = make_student(tiny_bert_dir, rows, max_length=32, doc_stride=4)
    city = CITIES[-1]
    [city_id] = student.tokenizer(city, add_special_tokens=False)["input_ids"]
    student.model = PointAt(city_id)
    predicted = student.predict(["p"], "validation")[0]
    with_city = [answer for row, answer in zip(student.data.validation, predicted)
                 if city in row["context"]]
    # the original casing comes back from the offsets, whichever window held the city
    assert with_city and set(with_city) == {city}
    # a winning [CLS] score means "no answer" only when the data has unanswerable questions
    student.model = PointAt(city_id, cls_bonus=100.0)
    assert set(student.predict(["p"], "validation")[0]) == {""}
    student.allow_null = False
    assert all(student.predict(["p"], "validation")[0])


def test_batched_scores_equal_single_prefix_scores(tiny_bert_dir):
    student = make_student(tiny_bert_dir)
    prefixes = ["Answer with a city.", "", "Answer with a city.", "read the whole text first"]
    batched = student.score_prefixes(prefixes)
    assert batched[0] == batched[2]
    for prefix, metrics in zip(prefixes, batched):
        assert list(metrics) == ["f1", "exact_match"]
        assert metrics == pytest.approx(student.evaluate(prefix), abs=1e-12)


def test_training_is_deterministic_resumable_and_learns(tiny_bert_dir, tmp_path):
    full = make_student(tiny_bert_dir, epochs=4, lr=3e-3)
    losses = {e: [r.loss for r in full.train_epoch("find the city", e)] for e in (1, 2, 3, 4)}
    assert sum(losses[4]) < sum(losses[1])
    assert all(torch.isfinite(torch.tensor(v)).all() for v in losses.values())

    part = make_student(tiny_bert_dir, epochs=4, lr=3e-3)
    assert [r.loss for r in part.train_epoch("find the city", 1)] == losses[1]
    steps = part.train_epoch("find the city", 2)
    assert [next(steps).loss, next(steps).loss] == losses[2][:2]
    part.save(tmp_path / "ckpt", training_state=True)
    resumed = make_student(tiny_bert_dir, epochs=4, lr=3e-3)
    resumed.load(tmp_path / "ckpt", training_state=True)
    rest = [r.loss for r in resumed.train_epoch("find the city", 2, start_step=2)]
    assert rest == losses[2][2:]
    assert [r.loss for r in resumed.train_epoch("find the city", 3)] == losses[3]


def test_bad_rows_and_metrics_are_rejected(tiny_bert_dir):
    rows = make_qa_rows(12)
    rows[2] = {**rows[2], "answers": {"text": ["Atlantis"], "answer_start": [0]}}
    with pytest.raises(DataError, match="train row 2: answer 'Atlantis' is not at character 0"):
        make_student(tiny_bert_dir, rows)
    with pytest.raises(ConfigError, match="student.metric 'accuracy' does not apply"):
        make_student(tiny_bert_dir, metric="accuracy")


# ---------------------------------------------------------------------------------------
# Config and the Engine
# ---------------------------------------------------------------------------------------


def test_config_default_and_allowed_metrics():
    assert default_metric("extractive_qa") == "f1"
    assert build_config(overrides={"data": {"task": "extractive_qa"}}).student.metric == "f1"
    cfg = build_config(overrides={"data": {"task": "extractive_qa"},
                                  "student": {"metric": "exact_match", "doc_stride": 64}})
    assert (cfg.student.metric, cfg.student.doc_stride) == ("exact_match", 64)
    assert RunConfig.from_dict(cfg.to_dict()).student.metric == "exact_match"
    with pytest.raises(ConfigError, match="does not apply to task 'extractive_qa'.*Fix: use one of f1"):
        build_config(overrides={"data": {"task": "extractive_qa"}, "student": {"metric": "macro_f1"}})
    with pytest.raises(ConfigError, match="student.doc_stride"):
        build_config(overrides={"data": {"task": "extractive_qa"}, "student": {"doc_stride": -1}})


def engine_cfg(path, model, **over):
    return build_config("default", overrides={
        "seed": 3, "device": "cpu",  # exact replay is a CPU promise
        "data": {"dataset": str(path), "task": "extractive_qa", "train_size": 24, "val_size": 8,
                 "test_size": 8},
        "student": {"model": str(model), "max_length": 48, "doc_stride": 8, "batch_size": 8,
                    "eval_batch_size": 32, "lr": 1e-3, "checkpoint_every": 2},
        "loop": {"epochs": 2, "k": 5, "l": 3, "window": 2},
        "ta": {"backend": "scripted"},
        **over,
    })


@pytest.fixture(scope="module")
def qa_jsonl(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("qa") / "qa.jsonl",
                       make_qa_rows(50, seed=9, unanswerable_every=5))


def test_engine_runs_gpta_on_extractive_qa(qa_jsonl, tiny_bert_dir, tmp_path):
    cfg = engine_cfg(qa_jsonl, tiny_bert_dir)
    engine, rec, ta = run_engine(cfg, tmp_path)
    done = engine.run()
    assert done.status == "finished", done.reason
    assert isinstance(engine.student, QAStudent)
    started = rec.of(ev.RunStarted)[0]
    assert (started.task, started.metric, started.label_names) == ("extractive_qa", "f1", [])
    system = ta.calls[0][0]["content"]
    assert "extractive question answering" in system
    assert "[CLS] prefix + question [SEP] context [SEP]" in system
    assert "labels" not in system
    assert "validation F1" in ta.calls[-1][1]["content"]
    assert list(done.test_metrics) == ["f1", "exact_match"]
    assert list(done.test_metrics_no_prefix) == ["f1", "exact_match"]
    assert len(rec.of(ev.HistoryUpdated)[-1].history) == cfg.loop.k
    contexts = {r["context"] for r in engine.data.train}
    assert not any(c in json.dumps(call) for call in ta.calls for c in contexts)


def test_engine_stop_and_resume_on_extractive_qa(qa_jsonl, tiny_bert_dir, tmp_path):
    cfg = engine_cfg(qa_jsonl, tiny_bert_dir)
    straight, rec, _ = run_engine(cfg, tmp_path / "a")
    straight.run()
    part1, part2 = stop_and_resume(cfg, tmp_path / "b", stop_step=2)
    merged = type(part1)()
    merged.events = part1.events + part2.events
    assert fingerprint(merged) == fingerprint(rec)
