"""Stored and imported paths stay inside their session folder (issue: hostile files, critical).

A crafted export or a hand-edited session database must never make the engine read, write or
delete anything outside the session folder: every such path goes through engine.paths.contained.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine import events as ev
from engine.controls import Controls
from engine.errors import GptaError, UsageError
from engine.paths import UnsafePath, contained
from engine.state import RunState
from sessions.export import export_session, import_session
from sessions.runner import resume_session, run_session, start_session
from sessions.store import DB_FILE, SessionStore

from test_sessions_resume import tiny_config


def test_contained_accepts_inside_and_refuses_everything_else(tmp_path):
    base = tmp_path / "session"
    (base / "checkpoints").mkdir(parents=True)
    assert contained(base, "checkpoints/step-3", "checkpoint") == (base / "checkpoints/step-3").resolve()
    assert contained(base, str(base / "checkpoints"), "checkpoint") == (base / "checkpoints").resolve()
    outside = tmp_path / "victim"
    outside.mkdir()
    (base / "link").symlink_to(outside)
    for ref in ["", "   ", None, 3, ["x"], "../victim", "checkpoints/../../victim", str(outside),
                "/", ".", "checkpoints/..", "link", "link/inner", "a\x00b"]:
        with pytest.raises(UnsafePath):
            contained(base, ref, "checkpoint")


def test_state_fields_of_the_wrong_type_are_refused():
    with pytest.raises(GptaError, match="'checkpoint' is a int"):
        RunState.from_dict({"checkpoint": 5})
    with pytest.raises(GptaError, match="'best' is a list"):
        RunState.from_dict({"best": []})
    with pytest.raises(GptaError, match="'epoch' is a bool"):
        RunState.from_dict({"epoch": True})
    with pytest.raises(GptaError, match="phase"):
        RunState.from_dict({"phase": "rm -rf"})
    with pytest.raises(GptaError, match="wrong shape"):
        RunState.from_dict({"history": [["p", "high"]]})
    with pytest.raises(GptaError, match="not a mapping"):
        RunState.from_dict(["x"])
    assert RunState.from_dict(RunState().to_dict()) == RunState()


@pytest.fixture()
def victim(tmp_path) -> Path:
    """A folder outside GPTA_HOME that a crafted state tries to have deleted."""
    folder = tmp_path / "victim"
    (folder / "keep").mkdir(parents=True)
    (folder / "keep" / "precious.txt").write_text("do not delete")
    return folder


def _stopped_session(tiny_bert_dir, sentiment_csv, home: Path, name: str) -> Path:
    """A real paused session (stopped after a few training steps) with its checkpoint on disk."""
    cfg = tiny_config(tiny_bert_dir, sentiment_csv, name)
    controls = Controls()

    def stopper(event):
        if isinstance(event, ev.TrainStep) and event.step == 3:
            controls.stop()

    handle, engine = start_session(cfg, home, listeners=[stopper], controls=controls)
    assert run_session(handle, engine).status == "stopped"
    return SessionStore(home).session_dir(name) / DB_FILE


def _edit_state(db: Path, **fields) -> None:
    data = json.loads(db.read_text())
    rec = data["session"]["1"]
    rec["state"].update(fields)
    if "best" in fields:
        rec["best"] = fields["best"]
    db.write_text(json.dumps(data))


@pytest.mark.parametrize("field,ref", [
    ("checkpoint", "../../../victim"),
    ("checkpoint", "ABS"),
    ("best", "../../../victim/keep"),
    ("best", "ABS"),
])
def test_resume_of_a_crafted_state_touches_nothing_outside(tiny_bert_dir, sentiment_csv, tmp_path,
                                                           victim, field, ref):
    home = tmp_path / "home"
    db = _stopped_session(tiny_bert_dir, sentiment_csv, home, "crafted")
    target = str(victim) if ref == "ABS" else ref
    # The victim lies three levels above the session folder: home/sessions/crafted -> tmp_path.
    assert (SessionStore(home).session_dir("crafted") / "../../../victim").resolve() == victim.resolve()
    if field == "checkpoint":
        _edit_state(db, checkpoint=target)
    else:
        _edit_state(db, best={"epoch": 1, "score": 0.5, "prefix": "p", "metrics": {}, "path": target})
    with pytest.raises(GptaError, match="outside the session folder"):
        handle, engine = resume_session("crafted", home)
        run_session(handle, engine)
    assert (victim / "keep" / "precious.txt").read_text() == "do not delete"
    assert not SessionStore(home).is_locked("crafted")


def test_old_checkpoint_deletion_is_contained(tiny_bert_dir, sentiment_csv, tmp_path, victim):
    """Even past the resume check, the engine's delete of an old checkpoint refuses to leave."""
    home = tmp_path / "home"
    _stopped_session(tiny_bert_dir, sentiment_csv, home, "del")
    handle, engine = resume_session("del", home)
    try:
        with pytest.raises(UnsafePath):
            engine._remove_checkpoint(str(victim))
        with pytest.raises(UnsafePath):
            engine._remove_checkpoint("../../../victim")
    finally:
        handle.close()
    assert (victim / "keep" / "precious.txt").exists()


def _export_of_stopped(tiny_bert_dir, sentiment_csv, tmp_path) -> Path:
    home = tmp_path / "src-home"
    _stopped_session(tiny_bert_dir, sentiment_csv, home, "exp")
    out = tmp_path / "export"
    handle = SessionStore(home).open("exp")
    export_session(handle, out)
    return out


def _edit_export(out: Path, edit) -> None:
    payload = json.loads((out / "session.json").read_text())
    edit(payload)
    (out / "session.json").write_text(json.dumps(payload))


@pytest.mark.parametrize("edit,match", [
    (lambda p: p["database"]["session"]["1"]["state"].update(checkpoint="../../victim"), "outside"),
    (lambda p: p["database"]["session"]["1"]["state"].update(checkpoint="/etc"), "outside"),
    (lambda p: p["database"]["session"]["1"]["state"].update(
        best={"epoch": 1, "score": 0.1, "prefix": "x", "metrics": {}, "path": "/tmp"}), "outside"),
    (lambda p: p["database"]["session"]["1"]["state"].update(checkpoint=7), "'checkpoint' is a int"),
    (lambda p: p.update(format_version="1"), "format_version"),
    (lambda p: p["database"].update(session=[1, 2]), "not a mapping"),
    (lambda p: p["database"]["session"]["1"].update(state="x"), "wrong type"),
    (lambda p: p["database"]["session"]["1"].update(config={"data": []}), "must be a table"),
    (lambda p: p["database"]["session"]["1"].update(config={"mode": "evil"}), "mode"),
    (lambda p: p["database"].setdefault("windows", {}).update({"abc": {"windows": []}}), "not a number"),
])
def test_import_validates_the_whole_export_before_writing(tiny_bert_dir, sentiment_csv, tmp_path,
                                                          gpta_home, edit, match):
    out = _export_of_stopped(tiny_bert_dir, sentiment_csv, tmp_path)
    _edit_export(out, edit)
    store = SessionStore()
    with pytest.raises(UsageError, match=match):
        import_session(store, out, name="evil")
    assert not store.session_dir("evil").exists()


def test_imported_session_cannot_be_resumed_even_with_an_empty_checkpoint(
        tiny_bert_dir, sentiment_csv, tmp_path, gpta_home):
    out = _export_of_stopped(tiny_bert_dir, sentiment_csv, tmp_path)
    _edit_export(out, lambda p: p["database"]["session"]["1"]["state"].update(checkpoint=""))
    store = SessionStore()
    import_session(store, out, name="empty")
    with pytest.raises(GptaError, match="imported from an export"):
        resume_session("empty", gpta_home)
    assert not store.is_locked("empty")


@pytest.mark.parametrize("kind", ["symlink", "device", "folder", "fifo"])
def test_import_reads_only_regular_window_files(tiny_bert_dir, sentiment_csv, tmp_path, gpta_home,
                                                kind):
    out = _export_of_stopped(tiny_bert_dir, sentiment_csv, tmp_path)
    windows = out / "windows"
    windows.mkdir(exist_ok=True)
    bad = windows / "epoch-9.jsonl"
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    if kind == "symlink":
        bad.symlink_to(secret)
    elif kind == "device":
        bad.symlink_to("/dev/zero")
    elif kind == "folder":
        bad.mkdir()
    else:
        os.mkfifo(bad)
    store = SessionStore()
    with pytest.raises(UsageError, match="not a regular file"):
        import_session(store, out, name="linky")
    assert not store.session_dir("linky").exists()
    assert not any("top secret" in p.read_text(errors="ignore")
                   for p in Path(gpta_home).rglob("*") if p.is_file())


def test_import_refuses_a_linked_windows_folder(tiny_bert_dir, sentiment_csv, tmp_path, gpta_home):
    out = _export_of_stopped(tiny_bert_dir, sentiment_csv, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "epoch-1.jsonl").write_text("{}\n")
    if (out / "windows").exists():
        import shutil

        shutil.rmtree(out / "windows")
    (out / "windows").symlink_to(elsewhere)
    with pytest.raises(UsageError, match="not a plain folder"):
        import_session(SessionStore(), out, name="linkdir")
    assert not SessionStore().session_dir("linkdir").exists()


def test_a_stored_local_ta_adapter_outside_the_session_is_refused(tiny_bert_dir, sentiment_csv,
                                                                  tmp_path, victim):
    from engine.loop import Engine

    from test_engine import CountingTA

    cfg = tiny_config(tiny_bert_dir, sentiment_csv, "adapter", ta={"backend": "local"})
    workdir = tmp_path / "session"
    workdir.mkdir()
    for ref in ("../victim", str(victim), "gemma-3-270m-other"):
        state = RunState(phase="training", checkpoint="checkpoints/step-0", ta_model=ref).to_dict()
        engine = Engine(cfg, workdir, resume=state, ta=CountingTA())
        if ref.startswith("gemma"):
            # not the base model's name, so an adapter folder: inside the session, only
            assert engine._ta_model_ref(ref) == str((workdir / ref).resolve())
            continue
        with pytest.raises(UnsafePath):
            engine._check_stored_paths()
    engine = Engine(cfg, workdir, resume=RunState().to_dict(), ta=CountingTA())
    assert engine._ta_model_ref(cfg.ta.model) == cfg.ta.model       # the base model by name
    inside = workdir / "ta-adapters" / "epoch-1"
    assert engine._stored_ta_model(str(inside)) == "ta-adapters/epoch-1"  # stored relative


def test_import_is_staged_and_leaves_nothing_when_a_write_fails(tiny_bert_dir, sentiment_csv,
                                                                tmp_path, gpta_home, monkeypatch):
    out = _export_of_stopped(tiny_bert_dir, sentiment_csv, tmp_path)
    windows = out / "windows"
    windows.mkdir(exist_ok=True)
    (windows / "epoch-1.jsonl").write_text('{"messages": []}\n')
    real = Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.name.startswith("epoch-"):
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    store = SessionStore()
    with pytest.raises(OSError):
        import_session(store, out, name="staged")
    assert not os.path.lexists(store.session_dir("staged"))
    assert not [p for p in store.root.iterdir() if p.name.startswith(".import-")]
    monkeypatch.setattr(Path, "write_text", real)
    import_session(store, out, name="staged")
    assert (store.session_dir("staged") / "windows" / "epoch-1.jsonl").is_file()


def test_names_with_a_newline_and_linked_session_folders_are_refused(gpta_home, tmp_path):
    from sessions.store import validate_name

    with pytest.raises(UsageError):
        validate_name("evil\n")
    store = SessionStore()
    store.root.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("x")
    store.session_dir("linked").symlink_to(elsewhere)
    with pytest.raises(UsageError, match="symbolic link"):
        store.delete("linked")
    assert (elsewhere / "keep.txt").exists() and not (elsewhere / "session.lock").exists()


def test_show_json_prints_no_raw_control_characters(gpta_home, capsys):
    from gpta_tui.cli import main
    from test_sessions_helpers import small_config

    cfg = small_config("ctl")
    cfg.data.description = "tweets \x1b[31mred\x1b[0m and a C1 \x9b byte"
    SessionStore().create(cfg).close()
    assert main(["show", "ctl", "--json"]) == 0
    out = capsys.readouterr().out
    assert not any(ord(c) < 32 and c not in "\n" or 0x7F <= ord(c) <= 0x9F for c in out)
    assert "\\u001b[31mred" in out and "\\u009b" in out
