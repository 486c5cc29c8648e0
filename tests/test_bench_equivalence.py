"""The benchmarks compare like with like: the paths they time compute the same results.

On tiny random models: fast and plain prefix scoring give identical metrics; the minimal
PyTorch loop of bench.training reproduces the engine student's losses bit for bit; the HF
Trainer contender takes the same number of optimizer steps; the epoch and resume benchmarks
measure real engine runs. Plus the helpers: section writing, tables, synthetic prefixes, the TA check.
No timing is asserted anywhere.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import pytest
import torch

from bench import common
from bench.scoring import hf_pipeline, padded_tokens, pipeline_predictions
from bench.training import (Setup, engine_uses_fused_adamw, load_model, make_optimizer,
                            minimal_epoch, run_hf_trainer)
from conftest import make_sentiment_rows
from engine.config import build_config
from engine.data import TaskData
from engine.parsing import clean_prefixes
from engine.student.classification import ClassificationStudent

LABELS = ["positive", "negative", "neutral"]


def task_data(n: int = 150, seed: int = 0) -> TaskData:
    rows = [{"text": r["text"], "label": LABELS.index(r["label"])} for r in make_sentiment_rows(n, seed)]
    a, b = int(n * 0.6), int(n * 0.8)
    return TaskData("classification", "generated", list(LABELS), rows[:a], rows[a:b], rows[b:],
                    "Short texts labelled with their sentiment.")


def tiny_setup(model_dir: Path, data: TaskData, **kw) -> Setup:
    base = dict(model=str(model_dir), label_names=list(data.label_names), rows=data.train,
                batch_size=8, max_length=32, lr=1e-3, seed=11, device="cpu")
    base.update(kw)
    return Setup(**base)


# ---- scoring -------------------------------------------------------------------------


def test_fast_and_plain_scoring_give_identical_metrics(tiny_bert_dir):
    data = task_data()
    cfg = build_config("default", overrides={"student": {
        "model": str(tiny_bert_dir), "max_length": 24, "eval_batch_size": 16}}).student
    student = ClassificationStudent(cfg, data, epochs=1, seed=5, device="cpu")
    # Synthetic TA-like prefixes, the empty prefix, a repeat, non-ASCII text and one so long
    # that every input is cut at max_length.
    prefixes = [*common.synthetic_prefixes(10, seed=3), "", "Émotion ✨ du tweet ?",
                "word " * 40, common.synthetic_prefixes(1, seed=3)[0]]
    fast = student.score_prefixes(prefixes)
    plain = student.score_prefixes_plain(prefixes)
    assert fast == plain
    assert len(fast) == len(prefixes) and fast[0] == fast[-1]
    torch.testing.assert_close(student.prefix_logits(prefixes), student.prefix_logits_plain(prefixes),
                               atol=1e-5, rtol=1e-5)
    # The chunked engine pattern (a few prefixes per call) agrees too.
    chunked = [m for i in range(0, len(prefixes), 4) for m in student.score_prefixes(prefixes[i:i + 4])]
    assert chunked == plain


def test_hf_pipeline_contender_predicts_what_the_plain_path_does(tiny_bert_dir):
    data = task_data()
    cfg = build_config("default", overrides={"student": {
        "model": str(tiny_bert_dir), "max_length": 24, "eval_batch_size": 16, "lr": 1e-3}}).student
    student = ClassificationStudent(cfg, data, epochs=2, seed=5, device="cpu")
    for epoch in (1, 2):  # a trained head, not the random init
        list(student.train_epoch("Tweet:", epoch))
    args = types.SimpleNamespace(eval_batch_size=16, max_length=24)
    pipe = hf_pipeline(student, "cpu")
    prefixes = [*common.synthetic_prefixes(4, seed=3), "word " * 40]
    got = [pipeline_predictions(pipe, student, p, data, args) for p in prefixes]
    want = student.prefix_logits_plain(prefixes).argmax(-1).tolist()
    assert got == want
    # Not vacuous: the pipeline's class probabilities are the plain path's, row by row.
    from engine.student.classification import join_input

    texts = [join_input(prefixes[0], row["text"]) for row in data.validation]
    out = pipe(texts, batch_size=16, top_k=None, truncation=True, padding="max_length", max_length=24)
    names = student.model.config.id2label
    probs = torch.tensor([[next(o["score"] for o in row if o["label"] == names[i])
                           for i in range(len(names))] for row in out])
    torch.testing.assert_close(probs, student.prefix_logits_plain(prefixes[:1])[0].softmax(-1),
                               atol=1e-5, rtol=1e-4)


def test_padded_tokens_counts_length_sorted_batches():
    # sorted: 1 2 3 | 5 8 9 | 10 -> 3*3 + 9*3 + 10*1
    assert padded_tokens([9, 1, 5, 3, 10, 2, 8], batch_size=3) == 9 + 27 + 10
    assert padded_tokens([4, 4], batch_size=8) == 8


# ---- training ------------------------------------------------------------------------


def test_minimal_loop_reproduces_engine_losses(tiny_bert_dir):
    data = task_data()
    setup = tiny_setup(tiny_bert_dir, data)
    student = ClassificationStudent(setup.student_config(), data, epochs=1, seed=setup.seed,
                                    device="cpu")
    engine_losses = [r.loss for r in student.train_epoch(setup.prefix, 1)]
    setup = dataclasses.replace(setup, fused=True if engine_uses_fused_adamw(student) else None)

    model, tokenizer = load_model(setup)
    optimizer, scheduler = make_optimizer(model, setup)
    minimal_losses = list(minimal_epoch(model, tokenizer, optimizer, scheduler, setup))

    assert len(engine_losses) == setup.steps == 12
    assert minimal_losses == engine_losses  # bit for bit on CPU
    assert len(set(engine_losses)) > 1  # the model really trains (losses move)
    for (name, a), (_, b) in zip(student.model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name


def test_foreach_adamw_loop_tracks_the_engine_closely(tiny_bert_dir):
    """The engine's fused AdamW and torch's default foreach kernel (which checkpoints saved
    before the switch keep using) differ in rounding, not in the maths."""
    full = task_data()
    data = dataclasses.replace(full, train=full.train[:48])
    setup = tiny_setup(tiny_bert_dir, data, lr=2e-5)  # the default learning rate
    student = ClassificationStudent(setup.student_config(), data, epochs=1, seed=setup.seed,
                                    device="cpu")
    engine_losses = [r.loss for r in student.train_epoch(setup.prefix, 1)]
    assert engine_uses_fused_adamw(student)
    foreach = dataclasses.replace(setup, fused=None)
    model, tokenizer = load_model(foreach)
    losses = list(minimal_epoch(model, tokenizer, *make_optimizer(model, foreach), foreach))
    assert len(losses) == len(engine_losses) == 6
    assert losses[0] == engine_losses[0]  # same weights before the first update
    assert losses == pytest.approx(engine_losses, rel=1e-4)


def test_minimal_loop_differs_with_another_seed(tiny_bert_dir):
    """The agreement above is not vacuous: the seed drives init, order and dropout."""
    data = task_data()
    a = tiny_setup(tiny_bert_dir, data, rows=data.train[:24])
    b = dataclasses.replace(a, seed=a.seed + 1)
    losses = []
    for setup in (a, b):
        model, tokenizer = load_model(setup)
        losses.append(list(minimal_epoch(model, tokenizer, *make_optimizer(model, setup), setup)))
    assert losses[0] != losses[1]


def test_hf_trainer_contender_takes_the_same_steps(tiny_bert_dir, tmp_path):
    data = task_data()
    setup = tiny_setup(tiny_bert_dir, data, rows=data.train[:40])
    (wall, cpu), steps = run_hf_trainer(setup, tmp_path)
    assert steps == setup.steps == 5
    assert wall > 0 and cpu > 0


# ---- epoch and resume benchmarks on the real engine ---------------------------------


def tiny_run_config(tiny_bert_dir: Path, csv: Path):
    return build_config("smoke", overrides={
        "seed": 3, "device": "cpu",
        "data": {"dataset": str(csv), "train_size": 40, "val_size": 20, "test_size": 20},
        "student": {"model": str(tiny_bert_dir), "max_length": 32, "batch_size": 8,
                    "eval_batch_size": 32, "checkpoint_every": 2},
        "loop": {"epochs": 1, "k": 5, "l": 2, "window": 2},
        "ta": {"backend": "scripted"},
    })


def test_epoch_benchmark_breaks_a_real_run_into_phases(tiny_bert_dir, sentiment_csv, tmp_path):
    from bench.epoch import run_once

    cfg = tiny_run_config(tiny_bert_dir, sentiment_csv)
    run = run_once(cfg, "cpu", tmp_path)
    for phase in ("startup", "setup", "training", "validating", "collecting", "testing"):
        assert phase in run["phases"], phase
    assert sum(run["phases"].values()) == pytest.approx(run["total"], abs=0.5)
    assert run["counts"]["training steps"] == 5
    assert run["counts"]["prefixes scored"] == cfg.loop.k - 1  # the training prefix is validated
    assert run["inner"][("collecting", "scoring")] > 0
    assert run["inner"][("training", "checkpoint saves")] > 0
    assert run["inner"][("testing", "evaluate")] > 0
    assert set(run["test"]) >= {"accuracy", "macro_f1"}


def test_phase_seconds_from_event_timestamps():
    from bench.epoch import PhaseRecorder

    recorder = PhaseRecorder("cpu")
    recorder.events = [types.SimpleNamespace(kind="phase", phase="setup", ts=101.0),
                       types.SimpleNamespace(kind="phase", phase="training", ts=103.5),
                       types.SimpleNamespace(kind="train_step", ts=104.0),
                       types.SimpleNamespace(kind="phase", phase="testing", ts=110.0),
                       types.SimpleNamespace(kind="finished", ts=111.0)]
    assert recorder.phase_seconds(100.0, 120.0) == {"startup": 1.0, "setup": 2.5,
                                                    "training": 6.5, "testing": 1.0}


def test_resume_benchmark_measures_session_and_engine_resumes(tiny_bert_dir, sentiment_csv, tmp_path):
    import shutil

    from bench.resume import SEGMENTS, engine_resume, prepare_runs, session_resume

    cfg = tiny_run_config(tiny_bert_dir, sentiment_csv)
    prepared = prepare_runs(cfg, tmp_path, stop_at=2)
    assert prepared.state["step"] == 2 and len(prepared.step_seconds) == 2
    seg, step = session_resume(prepared.session, prepared.home)
    assert step == 3 and set(seg) == set(SEGMENTS)
    seg, step = session_resume(prepared.session, prepared.home)
    assert step == 4  # each session resume continues the previous one
    workdir = tmp_path / "copy"
    shutil.copytree(prepared.workdir, workdir)
    seg, step = engine_resume(cfg, workdir, prepared.state)
    assert step == 3
    assert seg["total"] == pytest.approx(seg["resume call"] + seg["setup to RunStarted"]
                                         + seg["RunStarted to first TrainStep"])


# ---- helpers -------------------------------------------------------------------------


def test_write_section_replaces_only_its_own_block(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    common.write_section(path, "scoring-cpu", "## Scoring\nfirst")
    assert path.read_text().startswith(common.MD_HEADER)
    common.write_section(path, "training-cpu", "## Training\nnumbers")
    path.write_text(path.read_text() + "\nHand-written analysis stays.\n")
    common.write_section(path, "scoring-cpu", "## Scoring\nsecond")
    text = path.read_text()
    assert "second" in text and "first" not in text
    assert text.index("Scoring") < text.index("Training") < text.index("Hand-written")
    assert text.count("<!-- bench:scoring-cpu:start -->") == 1
    assert "numbers" in text


def test_publish_keys_sections_by_device_and_tag(tmp_path, capsys):
    path = tmp_path / "BENCHMARKS.md"
    report = common.Report("scoring", "Scoring", "cpu")
    args = types.SimpleNamespace(no_write=False, md=path, tag="")
    common.publish(report, args, {"CPU": "test"})
    common.publish(report, types.SimpleNamespace(no_write=False, md=path, tag="threads2"), {"CPU": "test"})
    text = path.read_text()
    assert text.count("<!-- bench:scoring-cpu:start -->") == 1
    assert text.count("<!-- bench:scoring-cpu-threads2:start -->") == 1
    common.publish(report, types.SimpleNamespace(no_write=True, md=path, tag="x"), {"CPU": "test"})
    assert path.read_text() == text


def test_speed_rows_and_verdicts():
    times = {"base": common.Timings([4.0, 6.0, 5.0], [2.0, 2.0, 2.0]),
             "fast": common.Timings([2.0, 3.0, 2.5], [1.0, 1.0, 1.0])}
    rows = common.speed_rows(times, "base", work=10)
    assert rows[0] == ["base", "5.00 (4.00-6.00)", "2.00 (2.00-2.00)", "2.0", "1.00x", "1.00x"]
    assert rows[1] == ["fast", "2.50 (2.00-3.00)", "1.00 (1.00-1.00)", "4.0", "2.00x", "2.00x"]
    assert common.ratio(times["base"], times["fast"]) == (2.0, 2.0)
    assert common.verdict((2.0, 2.1), 2.0).endswith(": met")
    assert common.verdict((1.9, 2.1), 2.0).endswith(": mixed")
    assert common.verdict((1.9, 1.8), 2.0).endswith(": NOT met")


def test_markdown_table_aligns_columns():
    table = common.markdown_table(["a", "long header"], [["xyz", 1], ["", 2.5]])
    lines = table.splitlines()
    assert lines[0] == "| a   | long header |"
    assert lines[1] == "|-----|-------------|"
    assert lines[3] == "|     | 2.5         |"


def test_synthetic_prefixes_are_distinct_deterministic_and_usable():
    a = common.synthetic_prefixes(50, seed=1)
    assert a == common.synthetic_prefixes(50, seed=1) != common.synthetic_prefixes(50, seed=2)
    assert len(set(a)) == 50
    accepted, rejected = clean_prefixes(a, max_words=40, max_chars=240)
    assert accepted == a and not rejected


def test_ta_for_names_the_backend_or_refuses():
    from engine.errors import UsageError

    assert "scripted" in common.ta_for("scripted")
    with pytest.raises(UsageError, match="unknown TA"):
        common.ta_for("psychic")


def test_call_timer_counts_nested_calls_once_per_phase():
    class Thing:
        def outer(self):
            return self.inner() + 1

        def inner(self):
            return 1

    thing, timer = Thing(), common.CallTimer()
    timer.wrap(thing, "inner", "work")
    timer.wrap(thing, "outer", "work")
    timer.phase = "a"
    assert thing.outer() == 2
    timer.phase = "b"
    thing.inner()
    assert timer.calls == {("a", "work"): 1, ("b", "work"): 1}
    assert timer.total("work") == pytest.approx(sum(timer.seconds.values()))
