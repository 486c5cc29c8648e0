"""Exact resume through sessions with the real engine: a tiny random BERT, generated data and
the scripted TA. A run stopped at any point and resumed from its session, or killed with
SIGKILL and resumed with `gpta resume`, ends with the same loss curve, history and metrics
as a run that never stopped."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import events as ev
from engine.config import build_config
from engine.controls import Controls
from engine.errors import UsageError
from sessions.export import config_toml
from sessions.runner import resume_session, run_session, start_session
from sessions.store import SessionStore

from test_engine import FakeJobs

ROOT = Path(__file__).resolve().parent.parent
def engine_kwargs(**extra):
    """The engine builds the scripted TA from the config (ta.backend = "scripted")."""
    return extra


def tiny_config(tiny_bert_dir: Path, csv: Path, name: str, **over):
    return build_config("default", overrides={
        "name": name, "seed": 3, "device": "cpu",
        "data": {"dataset": str(csv), "train_size": 48, "val_size": 24, "test_size": 24},
        "student": {"model": str(tiny_bert_dir), "max_length": 32, "batch_size": 8,
                    "eval_batch_size": 32, "lr": 1e-3, "checkpoint_every": 2},
        "loop": {"epochs": 2, "k": 6, "l": 3, "window": 2},
        "ta": {"backend": "scripted"},
        **over,
    })


def results(handle) -> dict:
    """What must match bit for bit between an interrupted and an uninterrupted run."""
    rec = handle.record()
    return {
        "loss": [(p["step"], p["epoch"], p["epoch_step"], p["loss"], p["lr"])
                 for p in handle.loss_points()],
        "history": [(h["epoch"], h["prefix"], h["score"]) for h in handle.history()],
        "scored": [(s["epoch"], s["prefix"], s["score"], s["request_id"], s["reused"])
                   for s in handle.scored_prefixes()],
        "validations": [(v["epoch"], v["prefix"], v["metrics"]) for v in handle.validations()],
        "windows": handle.windows(),
        "ta": [(c["request_id"], c["messages"], [r["texts"] for r in c["responses"]])
               for c in handle.ta_calls()],
        "best": rec["best"],
        "test": (rec["finished"]["test_metrics"], rec["finished"]["test_metrics_no_prefix"]),
        "status": rec["status"],
    }


@pytest.fixture(scope="module")
def straight(tiny_bert_dir, sentiment_csv, tmp_path_factory):
    """One uninterrupted run, the reference for every resume test in this module."""
    home = tmp_path_factory.mktemp("straight-home")
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, "straight")
    handle, engine = start_session(cfg, home, **engine_kwargs(finetune=FakeJobs(polls=3)))
    assert run_session(handle, engine).status == "finished"
    return results(SessionStore(home).open("straight"))


@pytest.fixture(scope="module")
def straight_headless(tiny_bert_dir, sentiment_csv, tmp_path_factory):
    """The reference for the headless crash test: no fine-tune backend (as `gpta run` gets)."""
    home = tmp_path_factory.mktemp("straight-headless")
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, "crashy")
    handle, engine = start_session(cfg, home, **engine_kwargs())
    assert run_session(handle, engine).status == "finished"
    return results(SessionStore(home).open("crashy"))


TRIGGERS = {
    "training": lambda e: isinstance(e, ev.TrainStep) and e.step == 3,
    "collecting": lambda e: isinstance(e, ev.PrefixScored) and e.epoch == 1 and e.request_id == 2,
    "finetuning": lambda e: isinstance(e, ev.FinetuneUpdate) and e.status == "running",
    "second-epoch": lambda e: isinstance(e, ev.TrainStep) and e.epoch == 2 and e.epoch_step == 1,
}


@pytest.mark.parametrize("stop_at", list(TRIGGERS))
def test_stopped_and_resumed_session_matches_straight_run(straight, tiny_bert_dir, sentiment_csv,
                                                          tmp_path, stop_at):
    home = tmp_path / "home"
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, "stopped")
    controls = Controls()

    def stopper(event):
        if TRIGGERS[stop_at](event) and not controls.stop_requested:
            controls.stop()

    handle, engine = start_session(cfg, home, listeners=[stopper], controls=controls,
                                   **engine_kwargs(finetune=FakeJobs(polls=3)))
    assert run_session(handle, engine).status == "stopped"
    store = SessionStore(home)
    [summary] = store.list()
    assert summary.status == "paused"
    saved = store.open("stopped").last_state
    assert saved is not None

    handle, engine = resume_session("stopped", home, **engine_kwargs(finetune=FakeJobs(polls=3)))
    assert engine.resumed
    assert run_session(handle, engine).status == "finished"
    got = results(store.open("stopped"))
    assert got == straight
    rec = store.open("stopped").record()
    assert [r["step"] for r in rec["resumes"]] == [saved["step"]]
    jobs = store.open("stopped").jobs()
    assert jobs[0]["status"] == "succeeded"

    with pytest.raises(UsageError, match="already finished"):
        resume_session("stopped", home)
    assert not store.is_locked("stopped")  # the refused resume released the lock


def test_resume_refuses_changes_that_alter_results(tiny_bert_dir, sentiment_csv, tmp_path):
    home = tmp_path / "home"
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, "guarded", loop={"epochs": 1, "k": 4, "l": 2,
                                                                       "window": 2})
    controls = Controls()
    handle, engine = start_session(
        cfg, home, controls=controls, **engine_kwargs(),
        listeners=[lambda e: controls.stop() if isinstance(e, ev.TrainStep) and e.step == 2 else None])
    assert run_session(handle, engine).status == "stopped"
    with pytest.raises(UsageError, match="cannot change loop.k"):
        resume_session("guarded", home, overrides={"loop": {"k": 8}})
    handle, engine = resume_session("guarded", home, overrides={"ta": {"timeout_s": 5.0}},
                                    **engine_kwargs())
    assert engine.config.ta.timeout_s == 5.0
    handle.close()
    assert SessionStore(home).open("guarded").config.ta.timeout_s == 5.0


def test_api_key_reaches_the_engine_but_never_the_disk(tiny_bert_dir, sentiment_csv, tmp_path,
                                                       monkeypatch):
    secret = "sk-live-SECRET-abcdef123456"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    home = tmp_path / "home"
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, "keyed", ta={"backend": "scripted", "api_key": secret},
                      loop={"epochs": 1, "k": 4, "l": 2, "window": 2})
    handle, engine = start_session(cfg, home, **engine_kwargs())
    assert engine.config.ta.api_key == secret
    assert run_session(handle, engine).status == "finished"
    from sessions.export import export_session

    export_session(SessionStore(home).open("keyed"), tmp_path / "export")
    for root in (home, tmp_path / "export"):
        for path in root.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


def _wait_for(predicate, child, limit_s=300.0) -> bool:
    """Poll the session database until predicate() holds; False if the child ended first."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if child.poll() is not None:
            return False
        time.sleep(0.02)
    raise AssertionError("the run made no progress")


@pytest.mark.e2e
def test_sigkilled_headless_run_resumes_to_the_same_result(straight_headless, tiny_bert_dir,
                                                          sentiment_csv, tmp_path):
    """`gpta run` killed with SIGKILL at random moments, then `gpta resume` (killed again,
    then left to finish): the database always loads, the loss curve never has a duplicated
    or missing step, and the final results equal the uninterrupted run's."""
    home = tmp_path / "home"
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text(config_toml(tiny_config(tiny_bert_dir, sentiment_csv, "crashy").to_dict()))
    env = {**os.environ, "GPTA_HOME": str(home), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    base = [sys.executable, "-m", "gpta_tui.cli", "--home", str(home)]
    store = SessionStore(home)
    rng = random.Random(7)

    def steps() -> list[int]:
        if not store.exists("crashy"):
            return []
        return [p["step"] for p in store.open("crashy").loss_points()]

    def scored() -> int:
        return len(store.open("crashy").scored_prefixes()) if store.exists("crashy") else 0

    # kill points, each later than the previous: epoch-1 training, collecting, epoch-2 training
    kills = [lambda: len(steps()) >= rng.randint(1, 4),
             lambda: scored() >= rng.randint(1, 3),
             lambda: len(steps()) >= rng.randint(8, 10)]
    commands = [base + ["run", "--config", str(cfg_file)]] + [base + ["resume", "crashy"]] * 3
    for i, command in enumerate(commands):
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        if i < len(kills):
            reached = _wait_for(kills[i], child)
            assert reached, f"run ended before kill point {i}: {child.stderr.read()}"
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stderr.close()
            got = steps()
            assert got == list(range(1, len(got) + 1))
            assert store.open("crashy").status == "interrupted"
        else:
            _, err = child.communicate(timeout=600)
            assert child.returncode == 0, err
    final = store.open("crashy")
    assert final.status == "finished"
    assert len(final.record()["resumes"]) == 3
    got = results(final)
    assert got == straight_headless
