"""Export / import of sessions: plain files, a re-runnable config, no secrets."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest

from engine import events as ev
from engine.config import build_config
from engine.errors import UsageError
from sessions.export import config_toml, export_session, import_session
from sessions.store import SessionStore

from test_sessions_helpers import SyntheticRun, feed, small_config
from test_sessions_store import strip, view

SECRET_ENV = "sk-env-SECRET-0123456789"
SECRET_CFG = "sk-config-SECRET-9876543210"


def make_finished(store, name="exp", config=None):
    h = store.create(config or small_config(name))
    feed(h, SyntheticRun(h.config).events())
    h.close()
    return store.open(name)


def test_export_writes_every_artifact(gpta_home, tmp_path):
    r = make_finished(SessionStore())
    out = export_session(r, tmp_path / "out")
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == ["best_prefix.txt", "config.toml", "curves.png", "history.csv", "history.json",
                     "history.jsonl", "loss.csv", "loss.jsonl", "metrics.csv", "report.md",
                     "scored.csv", "scored.jsonl", "session.json", "ta_calls.jsonl",
                     "validation.csv", "windows.jsonl", "windows/epoch-1.jsonl",
                     "windows/epoch-2.jsonl"]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    val = list(csv.DictReader((out / "validation.csv").open()))
    assert [int(v["epoch"]) for v in val] == [v["epoch"] for v in r.validations()]
    assert sum(int(v["best"]) for v in val) == 1
    assert (out / "best_prefix.txt").read_text().strip() == r.record()["best"]["prefix"]
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert len(rows) == len(r.history()) and rows[0]["epoch"] == "1"
    metrics = list(csv.DictReader((out / "metrics.csv").open()))
    assert [m["split"] for m in metrics] == ["validation", "validation", "test", "test_no_prefix"]
    assert float(metrics[2]["accuracy"]) == 0.7 and float(metrics[0]["prefix_accuracy"]) == 0.5
    loss = list(csv.DictReader((out / "loss.csv").open()))
    assert [int(p["step"]) for p in loss] == list(range(1, 13))
    lines = (out / "windows" / "epoch-1.jsonl").read_text().splitlines()
    assert len(lines) == len(r.windows(1))
    assert set(json.loads(lines[0])) == {"messages"}  # pure OpenAI fine-tuning format
    history = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    report = (out / "report.md").read_text()
    assert "# GPTA session `exp`" in report and "| with best prefix | 0.7000" in report
    assert "## Fine-tune jobs" in report and "tuned-job-1" in report


def test_config_toml_rebuilds_the_same_config(gpta_home, tmp_path):
    cfg = small_config("toml", data={"dataset": "twitter-sentiment", "label_names": ["a", "b\"q"],
                                     "description": "Line one\nline \\two\t."},
                       student={"lr": 3e-5})
    r = make_finished(SessionStore(), "toml", cfg)
    out = export_session(r, tmp_path / "out")
    rebuilt = build_config(file=out / "config.toml")
    assert rebuilt.to_dict() == r.config.to_dict()
    assert config_toml({"x": float("inf")}).strip().endswith("x = inf")


def test_export_import_roundtrip(gpta_home, tmp_path):
    store = SessionStore()
    r = make_finished(store, "orig")
    out = export_session(r, tmp_path / "out")
    name = import_session(store, out, name="copy")
    copy = store.open(name)
    assert view(copy) == view(r)
    assert [strip(e.to_dict()) for e in copy.events()] == [strip(e.to_dict()) for e in r.events()]
    assert copy.record()["imported_from"] == str(out.resolve())
    assert (copy.dir / "windows" / "epoch-1.jsonl").is_file()
    assert copy.config.name == "copy"
    with pytest.raises(UsageError, match="a session named 'copy' already exists"):
        import_session(store, out, name="copy")
    with pytest.raises(UsageError, match="already exists"):
        import_session(store, out)  # the exported name "orig" is taken too


def test_import_refuses_what_is_not_an_export(gpta_home, tmp_path):
    store = SessionStore()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="not a gpta session export"):
        import_session(store, tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "session.json").write_text('{"format": "something-else"}')
    with pytest.raises(UsageError, match="not a gpta session export"):
        import_session(store, bad)
    (bad / "session.json").write_text('{"format": "gpta-ses')
    with pytest.raises(UsageError, match="unreadable"):
        import_session(store, bad)


def test_export_refuses_a_non_empty_folder(gpta_home, tmp_path):
    r = make_finished(SessionStore())
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        export_session(r, tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def test_no_api_key_is_ever_written(gpta_home, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_ENV)
    cfg = build_config("default", overrides={
        "name": "keyed", "ta": {"backend": "openai", "model": "gpt-4o-mini", "api_key": SECRET_CFG},
        "loop": {"epochs": 2, "k": 4, "l": 2, "window": 2}})
    store = SessionStore()
    h = store.create(cfg)
    run = SyntheticRun(cfg)
    events = list(run.events())
    # even an event that carried the raw config (with the key) must not leak it
    events[0] = ev.RunStarted(name="keyed", mode="gpta", config=dataclasses.asdict(cfg))
    assert SECRET_CFG in json.dumps(events[0].to_dict())
    feed(h, events)
    h.close()
    r = store.open("keyed")
    assert r.config.ta.api_key == ""
    out = export_session(r, tmp_path / "export")
    import_session(store, out, name="keyed-copy")
    for root in (gpta_home, out):
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert SECRET_ENV.encode() not in data, path
                assert SECRET_CFG.encode() not in data, path
