"""The whole GPTA loop with a tiny random BERT, generated data and in-test TA / fine-tune fakes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from engine import events as ev
from engine.config import build_config
from engine.controls import Controls
from engine.errors import StopRun, TAError, TAUnavailable
from engine.finetune.base import FinetuneBackend, JobStatus
from engine.loop import Engine
from conftest import Recorder
from fake_ta import SeededTA

WORDS = ["classify", "the", "sentiment", "of", "this", "tweet", "decide", "whether", "mood",
         "is", "positive", "negative", "neutral", "read", "carefully", "label", "opinion"]


class CountingTA(SeededTA):
    """The engine tests' TA: prefixes lead with the description's first word."""

    def __init__(self, **kw):
        super().__init__(WORDS, lead_word=True, prompt_tokens=None, **kw)


class FakeJobs(FinetuneBackend):
    name = "fake"
    poll_interval_s = 0.0

    def __init__(self, outcome: str = "succeeded", polls: int = 2):
        self.outcome, self.polls = outcome, polls
        self.submitted: list[list[dict]] = []
        self.cancelled: list[str] = []
        self._n: dict[str, int] = {}

    def submit(self, examples, base_model, workdir, epoch):
        self.submitted.append(examples)
        job = f"job-{epoch}"
        self._n[job] = 0
        return job

    def poll(self, job_id):
        self._n[job_id] += 1
        if self.outcome == "never" or self._n[job_id] < self.polls:
            return JobStatus(job_id, "running", step=self._n[job_id], total_steps=self.polls,
                             events=[f"step {self._n[job_id]}"])
        if self.outcome == "failed":
            return JobStatus(job_id, "failed", message="training diverged")
        return JobStatus(job_id, "succeeded", model=f"tuned-{job_id}")

    def cancel(self, job_id):
        self.cancelled.append(job_id)


def tiny_config(tiny_bert_dir: Path, csv: Path, **over):
    cfg = build_config("default", overrides={
        "seed": 3, "device": "cpu",  # exact replay is a CPU promise (docs/ARCHITECTURE.md)
        "data": {"dataset": str(csv), "train_size": 48, "val_size": 24, "test_size": 24},
        "student": {"model": str(tiny_bert_dir), "max_length": 32, "batch_size": 8,
                    "eval_batch_size": 32, "lr": 1e-3, "checkpoint_every": 2},
        "loop": {"epochs": 2, "k": 6, "l": 3, "window": 2},
        "ta": {"backend": "scripted"},
        **over,
    })
    return cfg


def run_engine(cfg, workdir, ta=None, jobs=None, controls=None, resume=None, listeners=(),
               record_checkpoint=None):
    rec = Recorder()
    engine = Engine(cfg, workdir, ta=ta or CountingTA(), finetune=jobs or FakeJobs(),
                    controls=controls, listeners=[rec, *listeners], resume=resume,
                    record_checkpoint=record_checkpoint)
    return engine, rec


def test_full_gpta_loop(tiny_bert_dir, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv)
    ta, jobs = CountingTA(), FakeJobs()
    engine, rec = run_engine(cfg, tmp_path, ta=ta, jobs=jobs)
    done = engine.run()
    assert done.status == "finished"
    phases = [(e.epoch, e.phase) for e in rec.of(ev.PhaseChanged)]
    assert phases.index((1, "training")) < phases.index((1, "collecting")) < phases.index(
        (1, "windows")) < phases.index((1, "finetuning")) < phases.index((2, "training"))
    # the history of each epoch holds k pairs and is sorted ascending
    for epoch in (1, 2):
        last = [e for e in rec.of(ev.HistoryUpdated) if e.epoch == epoch][-1]
        scores = [s for _, s in last.history]
        assert len(last.history) == cfg.loop.k
        assert scores == sorted(scores)
    # windows: k - w per epoch, in OpenAI chat format, written to disk
    windows = rec.of(ev.WindowsBuilt)
    assert [len(w.windows) for w in windows] == [cfg.loop.k - cfg.loop.window] * 2
    first = windows[0].windows[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user", "assistant"]
    assert windows[0].path == "windows/epoch-1.jsonl"  # session-relative: events are exported
    assert (tmp_path / windows[0].path).read_text().count("\n") == cfg.loop.k - cfg.loop.window
    # the epoch-1 job ran and the tuned model answered epoch 2; the last epoch skips tuning
    assert len(jobs.submitted) == 1
    assert rec.of(ev.TAModelChanged)[0].model == "tuned-job-1"
    epoch2_requests = [e for e in rec.of(ev.TARequest) if e.epoch == 2]
    assert epoch2_requests and all(e.model == "tuned-job-1" for e in epoch2_requests)
    assert [e.status for e in rec.of(ev.FinetuneUpdate)][-1] == "skipped"
    # the TA never saw training texts; the training prefix is the best of the previous epoch
    train_texts = {r["text"] for r in engine.data.train}
    for messages in ta.calls:
        blob = json.dumps(messages)
        assert not any(t in blob for t in train_texts)
    hist1 = [e for e in rec.of(ev.HistoryUpdated) if e.epoch == 1][-1].history
    epoch2_prefix = [e for e in rec.of(ev.ValidationResult) if e.epoch == 2][0].prefix
    assert dict(hist1)[epoch2_prefix] == max(s for _, s in hist1)
    # steps are unique and contiguous; prefix accuracy reported each epoch
    steps = [e.step for e in rec.of(ev.TrainStep)]
    assert steps == list(range(1, len(steps) + 1))
    assert len(rec.of(ev.PrefixFindingAccuracy)) == 2
    # the final report uses the best checkpoint
    assert done.test_metrics and done.test_metrics_no_prefix
    assert set(done.test_metrics) == {"accuracy", "macro_f1"}
    assert (tmp_path / engine.state.best["path"]).is_dir()
    assert engine.state.phase == "done"


def test_baseline_mode_makes_no_ta_calls(tiny_bert_dir, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, mode="baseline")
    ta = CountingTA()
    engine, rec = run_engine(cfg, tmp_path, ta=ta)
    done = engine.run()
    assert done.status == "finished" and ta.calls == []
    assert all(e.prefix == "" for e in rec.of(ev.ValidationResult))
    assert done.best_prefix == "" and not rec.of(ev.TARequest)


def test_gpta_data_mode_shows_exemplars(tiny_bert_dir, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, mode="gpta-data",
                      loop={"epochs": 1, "k": 4, "l": 2, "window": 2})
    ta = CountingTA()
    engine, _ = run_engine(cfg, tmp_path, ta=ta)
    engine.run()
    exemplar_texts = [r["text"] for r in engine.exemplars]
    assert len(exemplar_texts) == 3
    assert all(t in ta.calls[0][-1]["content"] for t in exemplar_texts)


def test_description_change_applies_to_next_request(tiny_bert_dir, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, loop={"epochs": 1, "k": 9, "l": 3, "window": 2})
    controls = Controls()
    ta = CountingTA()
    sent = []

    def edit_once(event):
        if isinstance(event, ev.PrefixScored) and not sent:
            sent.append(event)
            controls.set_description("Zebra tweets about weather, labelled by mood.")

    engine, rec = run_engine(cfg, tmp_path, ta=ta, controls=controls, listeners=[edit_once])
    engine.run()
    changed = rec.of(ev.DescriptionChanged)
    assert len(changed) == 1 and changed[0].version == 2
    later = [e for e in rec.of(ev.TARequest) if e.request_id >= changed[0].applies_from_request]
    earlier = [e for e in rec.of(ev.TARequest) if e.request_id < changed[0].applies_from_request]
    assert later and earlier
    assert all("Zebra tweets" in e.messages[-1]["content"] for e in later)
    assert all(e.description_version == 2 for e in later)
    assert not any("Zebra tweets" in e.messages[-1]["content"] for e in earlier)


def test_pause_and_resume_from_another_thread(tiny_bert_dir, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, loop={"epochs": 1, "k": 4, "l": 2, "window": 2})
    controls = Controls()
    paused = threading.Event()

    def pause_at_step_2(event):
        if isinstance(event, ev.TrainStep) and event.step == 2:
            controls.pause()
        if isinstance(event, ev.StatusChanged) and event.status == "paused":
            paused.set()

    engine, rec = run_engine(cfg, tmp_path, controls=controls, listeners=[pause_at_step_2])
    worker = threading.Thread(target=engine.run)
    worker.start()
    assert paused.wait(60)
    steps_while_paused = len(rec.of(ev.TrainStep))
    assert steps_while_paused == 2
    assert worker.is_alive()
    controls.resume()
    worker.join(120)
    assert not worker.is_alive()
    statuses = [e.status for e in rec.of(ev.StatusChanged)]
    assert statuses.index("paused") < len(statuses) - 1 and statuses[-1] == "finished"
    # a checkpoint was written when pausing
    assert any(e.step == 2 for e in rec.of(ev.CheckpointSaved))


def _fingerprint(rec: Recorder):
    return {
        "losses": {e.step: e.loss for e in rec.of(ev.TrainStep)},
        "history": [e.history for e in rec.of(ev.HistoryUpdated)][-1],
        "val": [e.metrics for e in rec.of(ev.ValidationResult)],
        "test": rec.of(ev.RunFinished)[-1].test_metrics,
        "best": rec.of(ev.RunFinished)[-1].best_prefix,
    }


@pytest.mark.parametrize("stop_at", ["train_step", "collecting", "finetune"])
def test_stop_and_resume_matches_uninterrupted_run(tiny_bert_dir, sentiment_csv, tmp_path, stop_at):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv)
    straight_engine, straight = run_engine(cfg, tmp_path / "a", jobs=FakeJobs(polls=3))
    straight_engine.run()

    controls = Controls()
    triggers = {
        "train_step": lambda e: isinstance(e, ev.TrainStep) and e.step == 3,
        "collecting": lambda e: isinstance(e, ev.PrefixScored) and e.epoch == 1 and e.request_id == 2,
        "finetune": lambda e: isinstance(e, ev.FinetuneUpdate) and e.status == "running",
    }

    def stopper(event):
        if triggers[stop_at](event) and not controls.stop_requested:
            controls.stop()

    jobs = FakeJobs(polls=3)
    first, part1 = run_engine(cfg, tmp_path / "b", controls=controls, jobs=jobs, listeners=[stopper])
    assert first.run().status == "stopped"
    if stop_at == "finetune":
        assert jobs.cancelled == ["job-1"]
    resume_and_compare(cfg, tmp_path / "b", part1, straight)


def resume_and_compare(cfg, workdir, part1: Recorder, straight: Recorder) -> Recorder:
    """Resume the stopped run `part1` from its last checkpoint to the end: its events and
    `part1`'s give the uninterrupted run's (`straight`) numbers. The resumed part's events."""
    state = part1.of(ev.CheckpointSaved)[-1].state
    second, part2 = run_engine(cfg, workdir, resume=json.loads(json.dumps(state)),
                               jobs=FakeJobs(polls=3))
    assert second.run().status == "finished"
    merged = Recorder()
    merged.events = part1.events + part2.events
    got, want = _fingerprint(merged), _fingerprint(straight)
    assert got["losses"] == want["losses"]
    assert got["history"] == want["history"]
    assert got["test"] == want["test"] and got["best"] == want["best"]
    assert got["val"][-1] == want["val"][-1]
    return part2


def _count_validation_evaluations(monkeypatch) -> list[str]:
    """Record the prefixes the engine's student evaluates one by one on the validation split."""
    import engine.student

    seen: list[str] = []
    build = engine.student.build_student

    def build_counting(*args, **kwargs):
        student = build(*args, **kwargs)
        evaluate = student.evaluate

        def counting(prefix, split="validation"):
            if split == "validation":
                seen.append(prefix)
            return evaluate(prefix, split)

        student.evaluate = counting
        return student

    monkeypatch.setattr(engine.student, "build_student", build_counting)  # the engine imports it at setup
    return seen


def test_collecting_reuses_the_metrics_it_scored(tiny_bert_dir, sentiment_csv, tmp_path,
                                                 monkeypatch):
    """Only the validating phase evaluates a single prefix (and selection, "no prefix", once
    per epoch); the best prefix's full metrics come from its batched scoring, and they equal a
    direct evaluation."""
    cfg = tiny_config(tiny_bert_dir, sentiment_csv)
    seen = _count_validation_evaluations(monkeypatch)
    engine, rec = run_engine(cfg, tmp_path)
    engine.run()
    assert seen == [p for e in rec.of(ev.ValidationResult) for p in (e.prefix, "")]
    scored = {e.prefix: e.metrics for e in rec.of(ev.PrefixScored) if e.epoch == 2 and not e.reused}
    best = [e for e in rec.of(ev.ValidationResult) if e.epoch == 2][0]
    scored[best.prefix] = best.metrics
    top = max(scored, key=lambda p: scored[p]["accuracy"])
    assert engine.state.epochs[-1]["best_prefix"] in scored
    assert scored[engine.state.epochs[-1]["best_prefix"]]["accuracy"] == scored[top]["accuracy"]


def test_resume_from_a_state_without_scored_metrics_evaluates_the_best(tiny_bert_dir, sentiment_csv,
                                                                       tmp_path, monkeypatch):
    """A session saved before the metrics were kept resumes to the same result (such sessions
    also predate the selection split: data.selection_size 0, as their migration sets)."""
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, loop={"epochs": 1, "k": 6, "l": 3, "window": 2})
    cfg.data.selection_size = 0
    straight_engine, straight = run_engine(cfg, tmp_path / "a")
    straight_engine.run()

    controls = Controls()

    def stopper(event):
        if isinstance(event, ev.PrefixScored) and event.request_id == -1 and not controls.stop_requested:
            controls.stop()

    first, part1 = run_engine(cfg, tmp_path / "b", controls=controls, listeners=[stopper])
    assert first.run().status == "stopped"
    state = json.loads(json.dumps(part1.of(ev.CheckpointSaved)[-1].state))
    assert state["phase"] == "collecting" and state["history_metrics"]
    del state["history_metrics"]  # as written by an older version
    seen = _count_validation_evaluations(monkeypatch)
    second, part2 = run_engine(cfg, tmp_path / "b", resume=state)
    assert second.run().status == "finished"
    # the best prefix was scored before the stop, so its metrics were lost with the old state
    assert seen == [second.state.epochs[-1]["best_prefix"]]
    assert seen[0] in [p for p, _ in state["history"]]
    assert second.state.best["metrics"] == straight_engine.state.best["metrics"]
    assert rec_best(part2) == rec_best(straight)


def rec_best(rec: Recorder):
    done = rec.of(ev.RunFinished)[-1]
    return done.best_prefix, done.test_metrics


def test_garbage_replies_are_retried_and_logged(tiny_bert_dir, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, loop={"epochs": 1, "k": 4, "l": 2, "window": 2})
    engine, rec = run_engine(cfg, tmp_path, ta=CountingTA(garbage_first=2))
    assert engine.run().status == "finished"
    responses = rec.of(ev.TAResponse)
    assert responses[0].prefixes == [] and responses[0].attempt == 1
    assert responses[2].prefixes and responses[2].attempt == 3
    assert any("no usable prefix" in e.message for e in rec.of(ev.Notice))


def test_ta_that_never_answers_usably_fails_clearly(tiny_bert_dir, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv)
    engine, rec = run_engine(cfg, tmp_path, ta=CountingTA(always_garbage=True))
    with pytest.raises(TAError) as err:
        engine.run()
    assert "returned no usable prefix" in str(err.value) and "Fix:" in str(err.value)
    assert rec.of(ev.RunFinished)[-1].status == "failed"


def test_failed_and_timed_out_jobs_keep_the_previous_ta(tiny_bert_dir, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv)
    ta = CountingTA()
    engine, rec = run_engine(cfg, tmp_path / "f", ta=ta, jobs=FakeJobs("failed"))
    assert engine.run().status == "finished"
    assert ta.model_name == "fake-ta" and not rec.of(ev.TAModelChanged)
    assert any("failed" in e.message and "training diverged" in e.message for e in rec.of(ev.Notice))
    assert engine.state.epochs[0]["finetune"]["status"] == "failed"

    cfg.finetune.timeout_s = 0.0
    jobs = FakeJobs("never")
    engine, rec = run_engine(cfg, tmp_path / "t", jobs=jobs)
    assert engine.run().status == "finished"
    assert jobs.cancelled == ["job-1"]
    assert engine.state.epochs[0]["finetune"]["status"] == "timeout"


class DownTA(CountingTA):
    def propose(self, messages, n, temperature, seed, **_):
        if len(self.calls) >= 1:
            raise TAUnavailable("endpoint http://127.0.0.1:9/v1 unreachable", "start it or fix --ta-base-url")
        return super().propose(messages, n, temperature, seed)


def test_unavailable_ta_stops_headless_run_resumably(tiny_bert_dir, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, loop={"epochs": 1, "k": 6, "l": 2, "window": 2})
    engine, rec = run_engine(cfg, tmp_path, ta=DownTA())
    with pytest.raises(TAUnavailable):
        engine.run()
    state = rec.of(ev.CheckpointSaved)[-1].state
    assert state["phase"] == "collecting"
    resumed, rec2 = run_engine(cfg, tmp_path, resume=state)
    assert resumed.run().status == "finished"


def test_token_budget_stops_ta_calls_gracefully(tiny_bert_dir, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, ta={"backend": "scripted", "max_tokens_budget": 1})
    ta = CountingTA()
    engine, rec = run_engine(cfg, tmp_path, ta=ta)
    done = engine.run()
    assert done.status == "finished"
    assert len(ta.calls) == 1  # s0 only; the budget is spent after it
    assert "budget" in done.summary["ta_exhausted"]


def test_a_failed_checkpoint_record_keeps_the_previous_checkpoint(tiny_bert_dir, sentiment_csv,
                                                                   tmp_path):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, mode="baseline",
                      loop={"epochs": 1, "k": 4, "l": 2, "window": 2})
    failing = {"on": False}

    def record(event):  # the session store's record_checkpoint: raises when it cannot write
        if failing["on"]:
            raise OSError("disk full")

    def watch(event):
        if isinstance(event, ev.TrainStep) and event.step == 2:
            failing["on"] = True

    engine, rec = run_engine(cfg, tmp_path, listeners=[watch], record_checkpoint=record)
    assert engine.run().status == "finished"
    saved = [e.path for e in rec.of(ev.CheckpointSaved)]
    kept = {p for p in saved if p and (tmp_path / p).is_dir()}
    # the last checkpoint whose state was recorded still exists on disk
    assert "checkpoints/step-0" in kept


class SlowTA(CountingTA):
    """Generates 'slowly' on call number `slow_call`: polls should_stop for up to `limit_s`,
    as the local TA does between tokens. `started` is set once that call is under way."""

    def __init__(self, slow_call: int, limit_s: float = 120.0, **kw):
        super().__init__(**kw)
        self.slow_call, self.limit_s = slow_call, limit_s
        self.started = threading.Event()
        self.stopped_after: float | None = None

    def propose(self, messages, n, temperature, seed, should_stop=None, **_):
        if len(self.calls) + 1 == self.slow_call and should_stop is not None:
            self.started.set()
            began = time.monotonic()
            while time.monotonic() - began < self.limit_s:
                if should_stop():
                    self.stopped_after = time.monotonic() - began
                    raise StopRun()
                time.sleep(0.01)
        return super().propose(messages, n, temperature, seed)


@pytest.mark.parametrize("slow_call", [1, 3])  # s0 in setup; a request while collecting
def test_stop_during_a_ta_request_is_prompt_and_resume_replays_it(tiny_bert_dir, sentiment_csv,
                                                                  tmp_path, slow_call):
    cfg = tiny_config(tiny_bert_dir, sentiment_csv)
    straight_engine, straight = run_engine(cfg, tmp_path / "a", jobs=FakeJobs(polls=3))
    straight_engine.run()

    controls, ta = Controls(), SlowTA(slow_call)
    first, part1 = run_engine(cfg, tmp_path / "b", controls=controls, ta=ta, jobs=FakeJobs(polls=3))
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(done=first.run()))
    worker.start()
    assert ta.started.wait(120)
    asked = time.monotonic()
    controls.stop()
    worker.join(120)
    left_after = time.monotonic() - asked
    assert outcome["done"].status == "stopped"
    assert left_after < 30  # generous: the slow request alone would take 120 s
    requests = part1.of(ev.TARequest)
    state = part1.of(ev.CheckpointSaved)[-1].state
    # the abandoned request is not counted: the resume asks it again with the same id
    assert state["request_id"] == requests[-1].request_id - 1
    part2 = resume_and_compare(cfg, tmp_path / "b", part1, straight)
    assert part2.of(ev.TARequest)[0].request_id == requests[-1].request_id


def test_a_failing_observer_does_not_decide_what_is_kept(tiny_bert_dir, sentiment_csv, tmp_path):
    """Listeners observe: a UI listener that raises on every checkpoint blocks no clean-up."""
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, mode="baseline",
                      loop={"epochs": 1, "k": 4, "l": 2, "window": 2})
    recorded = []

    def broken_view(event):
        if isinstance(event, ev.CheckpointSaved):
            raise RuntimeError("a widget bug")

    engine, rec = run_engine(cfg, tmp_path, listeners=[broken_view],
                             record_checkpoint=recorded.append)
    assert engine.run().status == "finished"
    saved = [e.path for e in rec.of(ev.CheckpointSaved)]
    assert len(recorded) == len(saved) and len({p for p in saved if p}) >= 2
    assert recorded == rec.of(ev.CheckpointSaved)  # recorded first, the same events observed
    kept = {p for p in saved if p and (tmp_path / p).is_dir()}
    assert kept == {saved[-1]}  # every earlier step checkpoint was removed
