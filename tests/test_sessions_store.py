"""SessionStore / SessionHandle: persistence of synthetic event streams, locking, damage,
schema versions, batching, and the resume bookkeeping (no engine needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from engine import events as ev
from engine.errors import GptaError, UsageError
from sessions import store as store_mod
from sessions.store import DB_FILE, SessionStore

from test_sessions_helpers import PREFIXES, SyntheticRun, feed, small_config

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent
VOLATILE = {"ts", "created", "updated"}


def strip(obj):
    """Drop wall-clock fields so two runs can be compared exactly."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def view(handle) -> dict:
    """Everything a reader can see, minus timestamps."""
    return strip({
        "loss": handle.loss_points(), "validations": handle.validations(),
        "accuracy": handle.prefix_accuracy(), "scored": handle.scored_prefixes(),
        "history": handle.history(), "windows": handle.windows(), "jobs": handle.jobs(),
        "ta": handle.ta_calls(), "descriptions": handle.descriptions(),
        "models": handle.ta_models(),
        "best": handle.record()["best"], "status": handle.status,
    })


def finished_session(store: SessionStore, name: str = "s"):
    h = store.create(small_config(name))
    feed(h, SyntheticRun(h.config).events())
    h.close()
    return store.open(name)


def test_create_list_and_read_back(gpta_home):
    store = SessionStore()
    assert store.list() == []
    r = finished_session(store, "alpha")
    [summary] = store.list()
    assert (summary.name, summary.mode, summary.dataset, summary.status) == (
        "alpha", "gpta", "twitter-sentiment", "finished")
    assert summary.epoch == 2 and summary.epochs == 2 and summary.best_metric == pytest.approx(0.8)
    # what the TUI's preview pane shows, from the same read
    config, best = r.config, r.record()["best"]
    assert summary.student == config.student.model and summary.student
    assert summary.ta == f"{config.ta.backend}:{config.ta.model}"
    assert summary.best_epoch == best["epoch"] > 0 and summary.best_prefix == best["prefix"] != ""
    assert summary.test_metrics == r.record()["finished"]["test_metrics"] == {
        "accuracy": 0.7, "macro_f1": 0.65}
    assert [p["step"] for p in r.loss_points()] == list(range(1, 13))
    assert [v["epoch"] for v in r.validations()] == [1, 2]
    hist = r.history(1)
    assert [h["score"] for h in hist] == sorted(h["score"] for h in hist)
    assert hist[-1]["rank"] == 1 and len(hist) == 5
    assert len(r.windows(1)) == 3 and r.windows(1)[0]["messages"][-1]["role"] == "assistant"
    [job1, job2] = r.jobs()
    assert [u["status"] for u in job1["updates"]] == ["submitted", "running", "succeeded"]
    assert job1["model"] == "tuned-job-1"
    calls = r.ta_calls()
    assert len(calls) == 4 and calls[0]["responses"][0]["usage"]["total_tokens"] == 15
    assert r.descriptions()[0]["text"] == "Tweets labelled by sentiment."
    assert r.record()["finished"]["test_metrics"]["accuracy"] == 0.7
    assert r.last_state["phase"] == "done"
    assert r.config.name == "alpha"


def test_generated_names_are_unique_and_valid(gpta_home):
    store = SessionStore()
    a = store.create(small_config(""))
    b = store.create(small_config(""))
    assert a.name != b.name and a.name.startswith("twitter-sentiment-gpta-")
    assert store.unique_name(a.name) != a.name
    a.close(), b.close()
    with pytest.raises(UsageError, match="already exists"):
        store.create(small_config(a.name))
    with pytest.raises(UsageError, match="invalid session name"):
        store.create(small_config("../escape"))
    with pytest.raises(UsageError, match="no session named 'nope'"):
        store.open("nope")


def test_events_replay_in_order(gpta_home):
    store = SessionStore()
    h = store.create(small_config("replay"))
    fed = feed(h, SyntheticRun(h.config).events())
    h.close()
    kinds = {"train_step", "validation", "prefix_scored", "history", "windows", "finetune",
             "ta_request", "ta_response", "prefix_accuracy", "ta_model"}

    def keep(events):
        out = []
        for e in events:
            if e.kind == "history":  # stored per epoch: only the last version survives
                out = [o for o in out if not (o["kind"] == "history" and o["epoch"] == e.epoch)]
            if e.kind in kinds:
                out.append(e.to_dict())
        return out

    replay = store.open("replay").events()
    assert keep(replay) == keep(fed)
    assert replay[0].kind == "run_started"
    assert isinstance(replay[-1], ev.RunFinished) and replay[-2].status == "finished"
    assert [e.ts for e in replay if e.kind == "train_step"] == [e.ts for e in fed if e.kind == "train_step"]


def test_loss_points_are_batched_other_events_flush_at_once(gpta_home):
    store = SessionStore()
    h = store.create(small_config("batch"))
    h.flush_steps, h.flush_seconds = 3, 1e9
    cfg = h.config
    h.listener(ev.RunStarted(name="batch", mode="gpta", config=cfg.to_dict()))
    for step in (1, 2):
        h.listener(ev.TrainStep(epoch=1, step=step, epoch_step=step, epoch_steps=9, loss=1.0, lr=0.1))
    assert store.open("batch").loss_points() == []            # buffered
    assert store.open("batch").record()["run_started"]["name"] == "batch"  # flushed at once
    h.listener(ev.TrainStep(epoch=1, step=3, epoch_step=3, epoch_steps=9, loss=1.0, lr=0.1))
    assert len(store.open("batch").loss_points()) == 3        # N steps reached
    h.listener(ev.TrainStep(epoch=1, step=4, epoch_step=4, epoch_steps=9, loss=1.0, lr=0.1))
    h.listener(ev.StatusChanged(status="paused"))              # status changes flush at once
    reader = store.open("batch")
    assert len(reader.loss_points()) == 4 and reader.status == "paused"
    h.flush_seconds = 0.0                                      # time limit reached
    h.listener(ev.TrainStep(epoch=1, step=5, epoch_step=5, epoch_steps=9, loss=1.0, lr=0.1))
    assert len(store.open("batch").loss_points()) == 5
    h.close()


def test_loss_curve_is_keyed_by_step(gpta_home):
    store = SessionStore()
    h = store.create(small_config("upsert"))
    for step, loss in [(1, 0.9), (2, 0.8), (2, 0.7), (3, 0.6)]:
        h.listener(ev.TrainStep(epoch=1, step=step, epoch_step=step, epoch_steps=3, loss=loss, lr=0.1))
    assert [(p["step"], p["loss"]) for p in h.loss_points()] == [(1, 0.9), (2, 0.7), (3, 0.6)]
    h.close()


def _crash_after(store, name, n_events, checkpoint_every=2):
    """Feed the first n events of a run, flush, and drop the lock as a killed process would."""
    h = store.create(small_config(name))
    run = SyntheticRun(h.config, checkpoint_every=checkpoint_every)
    events = list(run.events())
    feed(h, events[:n_events])
    h.flush()
    h._file_lock.release()
    return events[:n_events]


def _index(events, predicate):
    return next(i for i, e in enumerate(events) if predicate(e)) + 1


@pytest.mark.parametrize("where", ["training", "collecting", "finetuning", "second-epoch", "setup"])
def test_crash_and_resume_gives_the_same_session_as_a_straight_run(gpta_home, where):
    store = SessionStore()
    straight = finished_session(store, "straight")
    full = list(SyntheticRun(small_config("x")).events())
    cut = {
        "training": _index(full, lambda e: isinstance(e, ev.TrainStep) and e.step == 5),
        "collecting": _index(full, lambda e: isinstance(e, ev.PrefixScored) and e.epoch == 1
                             and e.request_id == 2),
        "finetuning": _index(full, lambda e: isinstance(e, ev.FinetuneUpdate) and e.status == "running"),
        "second-epoch": _index(full, lambda e: isinstance(e, ev.TrainStep) and e.step == 7),
        "setup": 1,
    }[where]
    _crash_after(store, "crashed", cut)
    assert store.list()[0].status == "interrupted"  # died while "running"
    h = store.open("crashed", write=True)
    assert h.status == "interrupted"
    state = h.last_state
    h.begin_resume()
    if state:
        assert max([p["step"] for p in h.loss_points()], default=0) == state["step"]
    feed(h, SyntheticRun(h.config).events(resume=state))
    h.close()
    resumed = store.open("crashed")
    got, want = view(resumed), view(straight)
    assert got == want
    assert len(resumed.record()["resumes"]) == 1
    superseded = [c for c in resumed.ta_calls(include_superseded=True) if c["superseded"]]
    assert len(superseded) == (1 if where == "collecting" else 0)


def test_resume_twice_without_new_checkpoint(gpta_home):
    store = SessionStore()
    full = list(SyntheticRun(small_config("x")).events())
    cut = _index(full, lambda e: isinstance(e, ev.TrainStep) and e.step == 3)
    _crash_after(store, "twice", cut)
    for _ in range(2):
        h = store.open("twice", write=True)
        state = h.last_state
        h.begin_resume()
        feed(h, list(SyntheticRun(h.config).events(resume=state))[:4])  # replays step 3 again
        h.flush()
        h._file_lock.release()
    steps = [p["step"] for p in store.open("twice").loss_points()]
    assert steps == [1, 2, 3]


def test_run_started_resumed_prepares_the_resume_itself(gpta_home):
    """A caller that builds the engine itself (without resume_session) still gets truncation."""
    store = SessionStore()
    full = list(SyntheticRun(small_config("x")).events())
    _crash_after(store, "auto", _index(full, lambda e: isinstance(e, ev.TrainStep) and e.step == 5))
    h = store.open("auto", write=True)
    state = h.last_state
    feed(h, SyntheticRun(h.config).events(resume=state))
    h.close()
    assert [p["step"] for p in store.open("auto").loss_points()] == list(range(1, 13))


def test_description_set_after_checkpoint_is_kept_and_offered(gpta_home):
    store = SessionStore()
    h = store.create(small_config("desc"))
    events = list(SyntheticRun(h.config).events())
    feed(h, events[:3])  # run started, status, first checkpoint (records description v1)
    h.listener(ev.DescriptionChanged(version=2, text="Short tweets about airlines.",
                                     applies_from_request=2))
    h.flush()
    h._file_lock.release()
    h = store.open("desc", write=True)
    h.begin_resume()
    versions = h.descriptions()
    assert [(d["version"], d["superseded"]) for d in versions] == [(1, False), (2, True)]
    assert h.pending_description() == "Short tweets about airlines."
    h.listener(ev.DescriptionChanged(version=2, text="Short tweets about airlines.",
                                     applies_from_request=3))
    assert h.descriptions()[1]["superseded"] is False and h.pending_description() is None
    h.close()


def test_stopped_run_is_saved_as_paused(gpta_home):
    store = SessionStore()
    h = store.create(small_config("stopped"))
    feed(h, list(SyntheticRun(h.config).events())[:6])
    h.listener(ev.StatusChanged(status="stopped", reason="stopped by the user"))
    h.listener(ev.RunFinished(status="stopped", best_epoch=0, best_prefix="", val_metrics={},
                              test_metrics={}, test_metrics_no_prefix={}, summary={},
                              reason="stopped by the user"))
    h.close()
    assert store.list()[0].status == "paused"
    assert store.open("stopped").record()["status_reason"] == "stopped by the user"


def test_closing_a_run_without_final_status_marks_it_interrupted(gpta_home):
    store = SessionStore()
    h = store.create(small_config("abrupt"))
    feed(h, list(SyntheticRun(h.config).events())[:5])
    h.close()
    rec = store.open("abrupt").record()
    assert rec["status"] == "interrupted" and "without a final status" in rec["status_reason"]


LOCK_HOLDER = textwrap.dedent("""
    import sys
    sys.path[:0] = [{root!r}, {tests!r}]
    from pathlib import Path
    from sessions.store import SessionStore
    from test_sessions_helpers import small_config
    h = SessionStore(Path({home!r})).create(small_config("busy"))
    print("locked", flush=True)
    sys.stdin.readline()
""")


def test_second_process_gets_a_clear_usage_error(tmp_path):
    home = tmp_path / "home"
    script = tmp_path / "holder.py"
    script.write_text(LOCK_HOLDER.format(root=str(ROOT), tests=str(TESTS_DIR), home=str(home)))
    child = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked", child.stderr.read()
        store = SessionStore(home)
        with pytest.raises(UsageError, match="in use by another gpta process") as info:
            store.open("busy", write=True)
        assert info.value.exit_code == 2 and "Fix:" in str(info.value)
        with pytest.raises(UsageError, match="running in another gpta process"):
            store.delete("busy")
        assert store.list()[0].status == "running"
        assert store.open("busy").status == "running"  # readers need no lock
    finally:
        child.stdin.close()
        child.wait()
        child.stdout.close()
        child.stderr.close()
    # the holder exited without a final status: the session is reported interrupted
    assert store.list()[0].status == "interrupted"
    with store.open("busy", write=True) as h:
        assert h.writable
    store.delete("busy")
    assert not store.exists("busy")


def test_same_process_second_writer_is_refused(gpta_home):
    store = SessionStore()
    h = store.create(small_config("one"))
    with pytest.raises(UsageError, match="in use"):
        store.open("one", write=True)
    h.close()
    store.open("one", write=True).close()


def test_reader_cannot_write(gpta_home):
    store = SessionStore()
    store.create(small_config("ro")).close()
    reader = store.open("ro")
    with pytest.raises(GptaError, match="not open for writing"):
        reader.listener(ev.Notice(level="info", message="x"))


def test_corrupted_database_gives_clear_error_and_keeps_a_copy(gpta_home):
    store = SessionStore()
    store.create(small_config("broken")).close()
    path = store.session_dir("broken") / DB_FILE
    garbage = path.read_bytes()[:40]
    path.write_bytes(garbage)
    for _ in range(2):
        with pytest.raises(GptaError) as info:
            store.open("broken", write=True)
        message = str(info.value)
        assert str(path) in message and "unreadable" in message and "copy was kept" in message
    backups = list(path.parent.glob(f"{DB_FILE}.corrupt-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == garbage
    assert path.read_bytes() == garbage  # never silently reset
    [summary] = store.list()
    assert summary.status == "unreadable" and "unreadable" in summary.error
    assert not store.is_locked("broken")  # the failed open released the lock


def test_newer_schema_is_refused(gpta_home):
    store = SessionStore()
    store.create(small_config("future")).close()
    path = store.session_dir("future") / DB_FILE
    data = json.loads(path.read_text())
    data["meta"]["1"]["schema"] = store_mod.SCHEMA_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(UsageError, match="newer gpta-tui") as info:
        store.open("future")
    assert "upgrade gpta-tui" in str(info.value)
    assert store.list()[0].status == "unreadable"


def test_older_schema_is_migrated_or_refused(gpta_home, monkeypatch):
    store = SessionStore()
    store.create(small_config("old")).close()
    path = store.session_dir("old") / DB_FILE
    original = path.read_bytes()
    current = store_mod.SCHEMA_VERSION
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", current + 1)
    with pytest.raises(UsageError, match=f"schema {current}, which this gpta-tui \\(schema "
                                         f"{current + 1}\\) cannot migrate"):
        store.open("old")

    def migrate(data):
        data["session"]["1"]["migrated"] = True
        return data

    monkeypatch.setitem(store_mod.MIGRATIONS, current, migrate)
    assert store.open("old").record()["migrated"] is True          # readers migrate in memory
    assert path.read_bytes() == original
    store.open("old", write=True).close()                           # writers persist it
    assert json.loads(path.read_text())["meta"]["1"]["schema"] == current + 1
    assert (path.parent / f"{DB_FILE}.schema-{current}").read_bytes() == original


def test_schema_1_sessions_keep_choosing_on_validation(gpta_home):
    """Sessions saved before the selection split migrate to data.selection_size 0."""
    store = SessionStore()
    store.create(small_config("v1")).close()
    path = store.session_dir("v1") / DB_FILE
    data = json.loads(path.read_text())
    data["meta"]["1"]["schema"] = 1
    del data["session"]["1"]["config"]["data"]["selection_size"]
    path.write_text(json.dumps(data))
    assert store.open("v1").config.data.selection_size == 0
    assert small_config("new").data.selection_size > 0


def test_reader_reload_sees_new_flushes(gpta_home):
    store = SessionStore()
    h = store.create(small_config("live"))
    reader = store.open("live")
    h.listener(ev.ValidationResult(epoch=1, prefix=PREFIXES[0], metrics={"accuracy": 0.5},
                                   best_epoch=1, improved=True))
    assert reader.validations() == []
    reader.reload()
    assert reader.validations()[0]["metrics"] == {"accuracy": 0.5}
    h.close()


def test_concurrent_reads_while_the_engine_thread_writes(gpta_home):
    store = SessionStore()
    h = store.create(small_config("threads"))
    events = list(SyntheticRun(h.config, steps_per_epoch=40).events())
    errors = []

    def writer():
        try:
            feed(h, events)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    while t.is_alive():
        h.loss_points(), h.history(), h.ta_calls(), h.events(), h.record()
    t.join()
    assert not errors
    assert len(h.loss_points()) == 80
    h.close()


def test_delete_removes_everything(gpta_home):
    store = SessionStore()
    h = store.create(small_config("gone"))
    (h.dir / "checkpoints").mkdir()
    (h.dir / "checkpoints" / "weights.bin").write_bytes(b"0" * 10)
    with pytest.raises(UsageError, match="running in another"):
        store.delete("gone")  # even this process's own writer blocks deletion
    h.close()
    store.delete("gone")
    assert not store.session_dir("gone").exists()
    with pytest.raises(UsageError, match="no session named"):
        store.delete("gone")
