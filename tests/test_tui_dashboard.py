"""DashboardState (the dashboard's pure reducer), the form model and the event buffer.

`canned_events()` is a fixed, realistic run (epoch 1 complete with a local TA fine-tune, epoch 2
training) shared with the snapshot tests.
"""

from __future__ import annotations

import threading

from engine.config import RunConfig, build_config
from engine.events import (
    CheckpointSaved,
    DescriptionChanged,
    FinetuneUpdate,
    HistoryUpdated,
    Notice,
    PhaseChanged,
    PrefixFindingAccuracy,
    PrefixScored,
    Progress,
    RunFinished,
    RunStarted,
    StatusChanged,
    TAModelChanged,
    TARequest,
    TAResponse,
    TrainStep,
    ValidationResult,
    WindowsBuilt,
    event_from_dict,
)
from gpta_tui import form
from gpta_tui.dashboard import DashboardState, build_state
from gpta_tui.run_control import EventBuffer
from gpta_tui.widgets.loss_chart import downsample, smooth

T0 = 1_700_000_000.0
PREFIXES = [
    "Classify the sentiment of this tweet as positive, negative or neutral:",
    "Read the tweet and decide whether the author feels good, bad or nothing special:",
    "Sentiment of the following social media post (positive/negative/neutral):",
    "Is this tweet happy, angry or plain? Answer with its sentiment:",
    "Label the emotional tone of the tweet below:",
    "Decide if the writer of this tweet is pleased, upset or neutral:",
]


def canned_config() -> dict:
    cfg = build_config("smoke", overrides={"name": "demo-run", "ta": {"backend": "local"},
                                           "finetune": {"backend": "local"},
                                           "loop": {"epochs": 2, "k": 6, "l": 3, "window": 2}})
    return cfg.to_dict()


def _window(pairs: list[tuple[str, float]], target: str) -> dict:
    shown = "\n".join(f"prefix: {p}\nscore: {s:.3f}" for p, s in pairs)
    return {"messages": [
        {"role": "system", "content": "You write prefixes for a sentiment classifier."},
        {"role": "user", "content": f"Task: Twitter sentiment.\n{shown}\nWrite a better prefix."},
        {"role": "assistant", "content": target},
    ]}


def canned_events() -> list:
    """A fixed run: epoch 1 done (history, windows, local fine-tune), epoch 2 half trained."""
    cfg = canned_config()
    t = iter(T0 + i * 1.5 for i in range(10_000))
    ev: list = [
        PhaseChanged(epoch=1, phase="setup", ts=next(t)),
        RunStarted(name="demo-run", mode="gpta", config=cfg, device="cpu", metric="accuracy",
                   label_names=["negative", "neutral", "positive"], ts=next(t)),
        StatusChanged(status="running", ts=next(t)),
        TARequest(request_id=1, epoch=1, backend="local", model="gemma-3-270m", messages=[],
                  params={"n": 3}, description_version=1, ts=next(t)),
        TAResponse(request_id=1, epoch=1, texts=["..."], prefixes=PREFIXES[:3],
                   rejected=[["Sure! Here are three prefixes", "chatter"]],
                   usage={"total_tokens": 120}, latency_s=2.5, ts=next(t)),
        PhaseChanged(epoch=1, phase="training", total=12, ts=next(t)),
    ]
    step = 0
    for i in range(12):
        step += 1
        ev.append(TrainStep(epoch=1, step=step, epoch_step=i + 1, epoch_steps=12,
                            loss=1.1 - 0.04 * i + 0.03 * (i % 3), lr=2e-5, ts=next(t)))
    ev += [
        PhaseChanged(epoch=1, phase="validating", total=1, ts=next(t)),
        ValidationResult(epoch=1, prefix=PREFIXES[0], metrics={"accuracy": 0.625}, best_epoch=1,
                         improved=True, ts=next(t)),
        PhaseChanged(epoch=1, phase="collecting", total=6, ts=next(t)),
        PrefixScored(epoch=1, prefix=PREFIXES[1], score=0.604, metrics={}, reused=False,
                     request_id=-1, ts=next(t)),
        PrefixScored(epoch=1, prefix=PREFIXES[2], score=0.646, metrics={}, reused=False,
                     request_id=-1, ts=next(t)),
    ]
    scores = [0.625, 0.604, 0.646, 0.667, 0.583, 0.688]
    ev.append(TARequest(request_id=2, epoch=1, backend="local", model="gemma-3-270m", messages=[],
                        params={"n": 3}, description_version=1, ts=next(t)))
    ev.append(TAResponse(request_id=2, epoch=1, texts=["..."], prefixes=PREFIXES[3:6], rejected=[],
                         usage={"total_tokens": 180}, latency_s=3.0, attempt=2, ts=next(t)))
    for p, s in zip(PREFIXES[3:6], scores[3:6]):
        ev.append(PrefixScored(epoch=1, prefix=p, score=s, metrics={}, reused=False, request_id=2,
                               beat_shown_best=s > 0.646, ts=next(t)))
    history = sorted(zip(PREFIXES, scores), key=lambda x: x[1])
    ev += [
        HistoryUpdated(epoch=1, history=[list(x) for x in history], training_prefix=PREFIXES[0],
                       ts=next(t)),
        Progress(epoch=1, phase="collecting", done=6, total=6, ts=next(t)),
        PrefixFindingAccuracy(epoch=1, accuracy=2 / 3, generated=3, better=2, ts=next(t)),
        PhaseChanged(epoch=1, phase="windows", total=4, ts=next(t)),
        WindowsBuilt(epoch=1, windows=[_window(history[i:i + 2], history[i + 2][0]) for i in range(4)],
                     path="/tmp/windows/epoch-1.jsonl", ts=next(t)),
        PhaseChanged(epoch=1, phase="finetuning", total=4, ts=next(t)),
        FinetuneUpdate(epoch=1, backend="local", job_id="lora-e1", status="submitted",
                       message="4 examples", ts=next(t)),
        FinetuneUpdate(epoch=1, backend="local", job_id="lora-e1", status="running", step=4,
                       total_steps=8, loss=2.31, eta_s=12.0, ts=next(t)),
        FinetuneUpdate(epoch=1, backend="local", job_id="lora-e1", status="succeeded", step=8,
                       total_steps=8, loss=1.87, model="ta-adapters/epoch-1", ts=next(t)),
        TAModelChanged(epoch=1, model="ta-adapters/epoch-1", reason="fine-tune job lora-e1 succeeded",
                       ts=next(t)),
        CheckpointSaved(epoch=2, phase="training", step=12, state={
            "best": {"epoch": 1, "score": 0.688, "prefix": PREFIXES[5]},
            "description": "Tweets labelled by sentiment.", "description_version": 1,
            "description_from_request": 1, "ta_model": "ta-adapters/epoch-1"}, ts=next(t)),
        DescriptionChanged(version=2, text="Tweets about daily life, labelled negative, neutral "
                           "or positive by the author's mood.", applies_from_request=3, ts=next(t)),
        Notice(level="warning", message="TA request 3 attempt 1/4 failed: reply was empty",
               ts=next(t)),
        PhaseChanged(epoch=2, phase="training", total=12, ts=next(t)),
    ]
    for i in range(6):
        step += 1
        ev.append(TrainStep(epoch=2, step=step, epoch_step=i + 1, epoch_steps=12,
                            loss=0.7 - 0.03 * i, lr=2e-5, ts=next(t)))
    return ev


# ---- reducer -------------------------------------------------------------------------


def test_canned_run_folds_into_every_section():
    state = build_state(canned_events())
    assert (state.name, state.mode, state.device, state.metric) == ("demo-run", "gpta", "cpu", "accuracy")
    assert (state.epoch, state.phase, state.epochs_total) == (2, "training", 2)
    assert (state.progress_done, state.progress_total) == (6, 12)
    assert len(state.losses) == 18 and state.val == {1: 0.625} and state.val_step == {1: 12}
    assert state.sorted_history[0] == (PREFIXES[5], 0.688)
    assert [s for _, s in state.history] == sorted(s for _, s in state.history)
    assert state.training_prefix == PREFIXES[0]
    assert state.new_prefixes == set(PREFIXES[3:6])
    assert state.beat_best == {PREFIXES[3], PREFIXES[5]}
    assert [w.index for w in state.windows[1]] == [1, 2, 3, 4]
    first = state.windows[1][0]
    assert "prefix:" in first.user and first.assistant and first.system
    job = state.jobs["1/lora-e1"]
    assert [h[1] for h in job.history] == ["submitted", "running", "succeeded"]
    assert job.losses == [(4, 2.31), (8, 1.87)] and not job.active
    assert state.ta_model_in_use == "ta-adapters/epoch-1"
    assert state.prefix_accuracy == {1: (2 / 3, 3, 2)}
    assert state.best == {"epoch": 1, "score": 0.688, "prefix": PREFIXES[5]}
    assert state.description_version == 2 and "daily life" in state.description
    assert state.description_from_request == 3
    levels = [e.level for e in state.log]
    assert levels.count("warning") == 3  # rejected chatter, attempt 2, notice
    assert any("rejected 1 completion" in e.text and "chatter" in e.text for e in state.log)


def test_apply_reports_changed_sections_and_bumps_revisions():
    state = DashboardState()
    before = dict(state.revisions)
    changed = state.apply(TrainStep(epoch=1, step=1, epoch_step=1, epoch_steps=4, loss=1.0, lr=1e-5))
    assert changed == {"header", "chart"}
    assert state.revisions["chart"] == before["chart"] + 1
    assert state.revisions["history"] == before["history"]


def test_replayed_train_steps_upsert_by_step():
    """After a resume the engine re-emits steps past the checkpoint with the same numbers."""
    state = DashboardState()
    for loss in (1.0, 0.9):
        for step in (1, 2, 3):
            state.apply(TrainStep(epoch=1, step=step, epoch_step=step, epoch_steps=3,
                                  loss=loss, lr=1e-5))
    assert state.losses == {1: 0.9, 2: 0.9, 3: 0.9}


def test_stored_dicts_rebuild_the_same_state():
    """Resume path: events come back from the store as dicts."""
    events = canned_events()
    again = build_state(event_from_dict(e.to_dict()) for e in events)
    direct = build_state(events)
    assert again.sorted_history == direct.sorted_history
    assert again.losses == direct.losses and again.log == direct.log
    assert again.elapsed_s() == direct.elapsed_s()


def test_eta_and_elapsed_follow_event_time():
    state = DashboardState()
    state.apply(RunStarted(name="r", mode="gpta", config={}, ts=100.0))
    state.apply(PhaseChanged(epoch=1, phase="training", total=10, ts=100.0))
    for i in range(1, 5):
        state.apply(TrainStep(epoch=1, step=i, epoch_step=i, epoch_steps=10, loss=1.0, lr=0.0,
                              ts=100.0 + 2 * i))
    assert state.eta_s() == 12.0  # 2 s a step, 6 steps left
    assert state.elapsed_s() == 8.0
    assert state.elapsed_s(now=120.0) == 20.0  # running: counts up to now
    # a second segment (resumed later) adds its own time, not the gap between them
    state.apply(StatusChanged(status="stopped", ts=109.0))
    state.apply(RunStarted(name="r", mode="gpta", config={}, resumed=True, ts=500.0))
    state.apply(TrainStep(epoch=1, step=5, epoch_step=5, epoch_steps=10, loss=1.0, lr=0.0, ts=503.0))
    assert state.elapsed_s() == 9.0 + 3.0
    assert state.eta_s() is None  # not enough pace measured since the restart


def test_new_epoch_resets_the_history_marks():
    state = build_state(canned_events())
    state.apply(PrefixScored(epoch=2, prefix="carried", score=0.7, metrics={}, reused=False,
                             request_id=-1))
    assert state.history_epoch == 2 and state.history == [("carried", 0.7)]
    assert state.new_prefixes == set() and state.beat_best == set()


def test_failed_jobs_and_status_changes_are_logged_as_errors():
    state = DashboardState()
    state.apply(FinetuneUpdate(epoch=1, backend="openai", job_id="ftjob-1", status="queued"))
    assert state.active_job is not None
    state.apply(FinetuneUpdate(epoch=1, backend="openai", job_id="ftjob-1", status="failed",
                               message="training file invalid"))
    state.apply(StatusChanged(status="failed", reason="TA unreachable"))
    state.apply(RunFinished(status="failed", best_epoch=0, best_prefix="", val_metrics={},
                            test_metrics={}, test_metrics_no_prefix={}, summary={},
                            reason="TA unreachable"))
    errors = [e.text for e in state.log if e.level == "error"]
    assert errors == ["fine-tune job ftjob-1 failed: training file invalid",
                      "run failed: TA unreachable"]  # the end of a run is logged once
    assert state.active_job is None and state.status == "failed"


def test_log_is_bounded():
    from gpta_tui.dashboard import MAX_LOG

    state = DashboardState()
    for i in range(MAX_LOG + 10):
        state.apply(Notice(level="info", message=f"n{i}"))
    assert len(state.log) == MAX_LOG and state.log_dropped == 10
    assert state.log[0].text == "n10"


# ---- chart helpers -------------------------------------------------------------------


def test_smooth_is_debiased_and_downsample_keeps_means():
    assert smooth([2.0, 2.0, 2.0]) == [2.0, 2.0, 2.0]
    xs, ys = downsample(list(range(10)), [float(i) for i in range(10)], 5)
    assert xs == [0.5, 2.5, 4.5, 6.5, 8.5] and ys == xs
    assert downsample([1, 2], [1.0, 2.0], 5) == ([1.0, 2.0], [1.0, 2.0])


# ---- form model ----------------------------------------------------------------------


def test_default_form_values_build_the_offline_config():
    values = form.default_values("smoke", name="first")
    config, errors = form.validate(values)
    assert errors == {} and isinstance(config, RunConfig)
    assert config.student.model == "all-MiniLM-L6-v2" and config.data.dataset == "twitter-sentiment"
    assert config.loop.epochs == build_config("smoke").loop.epochs
    assert config.name == "first"


def test_form_errors_name_their_field():
    values = form.default_values("smoke", name="ok")
    _, errors = form.validate({**values, "window": "9", "k": "8"})
    # Both fields of the relation are marked (k may be the one that is wrong), in the form's
    # words: field labels, never config keys.
    assert sorted(errors) == ["k", "window"] and errors["k"] == errors["window"]
    assert '"k (history)"' in errors["window"] and '"w (window)"' in errors["window"]
    assert "loop." not in errors["window"]
    _, errors = form.validate({**values, "epochs": "x", "name": "bad name!"})
    assert errors["epochs"] == "enter a whole number" and "letters" in errors["name"]
    _, errors = form.validate({**values, "train_size": "0"})
    assert list(errors) == ["train_size"]
    _, errors = form.validate({**values, "name": "taken"}, taken={"taken"})
    assert "exists" in errors["name"]
    _, errors = form.validate({**values, "dataset": "/no/such/file.csv"})
    assert "no file" in errors["dataset"]


def test_suggest_name_skips_taken_names():
    assert form.suggest_name("twitter-sentiment", {"twitter-sentiment-1"}) == "twitter-sentiment-2"
    assert form.suggest_name("tweet_eval:sentiment", set()) == "tweet_eval-1"


# ---- event buffer --------------------------------------------------------------------


def test_event_buffer_is_thread_safe_and_keeps_order():
    buffer = EventBuffer()

    def produce(offset: int) -> None:
        for i in range(500):
            buffer(Notice(level="info", message=f"{offset}:{i}"))

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    drained = []
    while any(th.is_alive() for th in threads) or len(buffer):
        drained += buffer.drain()
    for th in threads:
        th.join()
    drained += buffer.drain()
    assert len(drained) == 2000
    for n in range(4):
        mine = [int(e.message.split(":")[1]) for e in drained if e.message.startswith(f"{n}:")]
        assert mine == list(range(500))


def test_a_pending_ta_request_is_visible_until_its_reply():
    state = DashboardState()
    state.apply(RunStarted(name="r", mode="gpta", config={}, ts=10.0))
    state.apply(TARequest(request_id=1, epoch=1, backend="local", model="gemma-3-270m",
                          messages=[], params={}, description_version=1, ts=11.0))
    assert state.ta_waiting == (1, 11.0, "gemma-3-270m")
    state.apply(TAResponse(request_id=1, epoch=1, texts=["a"], prefixes=["Say it:"], rejected=[],
                           usage={}, latency_s=42.0, ts=53.0))
    assert state.ta_waiting is None
    assert state.log[-1].text == "TA request #1: 1 prefix(es) in 42.0s"
    from gpta_tui.widgets.run_header import RunHeader
    from rich.console import Console

    state.apply(TARequest(request_id=2, epoch=1, backend="local", model="gemma-3-270m",
                          messages=[], params={}, description_version=1, ts=60.0))
    console = Console(width=120, record=True, file=open("/dev/null", "w"))
    console.print(RunHeader.render_state(state, now=75.0))
    text = console.export_text()
    assert "waiting for the TA (request #2, gemma-3-270m) 0:15" in text


def test_the_training_prefix_is_known_from_checkpoints_before_it_is_scored():
    state = DashboardState()
    changed = state.apply(CheckpointSaved(epoch=1, phase="training", step=0,
                                          state={"training_prefix": "Classify the tweet:"}))
    assert "history" in changed and state.training_prefix == "Classify the tweet:"
    assert state.history == []


def test_the_header_follows_a_running_fine_tune_job():
    from rich.console import Console

    from gpta_tui.widgets.run_header import RunHeader

    state = build_state(canned_events()[:-7])  # epoch 1, before its fine-tune finished
    state.apply(PhaseChanged(epoch=1, phase="finetuning", total=4, ts=T0 + 100))
    state.apply(FinetuneUpdate(epoch=1, backend="local", job_id="lora-e1b", status="running",
                               step=3, total_steps=8, loss=1.2, eta_s=40.0, ts=T0 + 101))
    console = Console(width=130, record=True, file=open("/dev/null", "w"))
    console.print(RunHeader.render_state(state, now=T0 + 102))
    text = console.export_text()
    assert "fine-tuning TA" in text and "job 3/8  ETA 0:40" in text


def test_examples_sent_and_ta_cost_accumulate():
    state = DashboardState()
    state.apply(TARequest(request_id=1, epoch=1, backend="openai", model="m", messages=[],
                          params={}, description_version=1, examples_sent=3))
    state.apply(TAResponse(request_id=1, epoch=1, texts=["x"], prefixes=["x"], rejected=[],
                           usage={"total_tokens": 10}, latency_s=0.1, cost=0.25))
    state.apply(TARequest(request_id=2, epoch=1, backend="openai", model="m", messages=[],
                          params={}, description_version=1, examples_sent=3))
    state.apply(TAResponse(request_id=2, epoch=1, texts=["y"], prefixes=["y"], rejected=[],
                           usage={"total_tokens": 5}, latency_s=0.1, cost=0.5))
    assert (state.examples_sent, state.ta_tokens, state.ta_cost) == (6, 15, 0.75)


def test_best_val_is_the_chosen_checkpoints_validation_figure_not_its_selection_score():
    """With a selection split the engine's best["score"] is the selection figure the checkpoint
    was chosen on; every "best val" shows best["metrics"][metric] (engine.state.best_validation),
    as gpta compare does."""
    from engine.state import best_validation

    best = {"epoch": 2, "score": 0.65, "prefix": "p", "metrics": {"accuracy": 0.58},
            "selection_metrics": {"accuracy": 0.65}}
    assert best_validation(best, "accuracy") == 0.58
    assert best_validation({"score": 0.7}, "accuracy") == 0.7  # older records: score is validation
    assert best_validation({"score": True}, "accuracy") is None and best_validation(None, "x") is None
    state = DashboardState()
    state.apply(CheckpointSaved(epoch=2, phase="next", step=10, state={"best": best}))
    assert state.best == {"epoch": 2, "score": 0.58, "prefix": "p"}
