"""loss.jsonl (issue 20): loss points appended beside the database, never in it; torn and
hostile log files; the schema-2 migration; export/import of the log; a SIGKILLed run of the
paper's length (31,250 steps) resumes exactly."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import events as ev
from engine.errors import GptaError, UsageError
from sessions import losslog
from sessions.export import export_session, import_session
from sessions.losslog import LOSS_FILE
from sessions.store import DB_FILE, SCHEMA_VERSION, SessionStore

from test_sessions_helpers import SyntheticRun, feed, kill_hard, small_config

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent
PAPER_STEPS = 31_250  # 100k rows, batch 16, 5 epochs


def _step(step: int, epoch: int = 1, steps: int = 10**6) -> ev.TrainStep:
    return ev.TrainStep(epoch=epoch, step=step, epoch_step=step, epoch_steps=steps,
                        loss=1.0 / step, lr=1e-3)


def _finished(store: SessionStore, name: str):
    h = store.create(small_config(name))
    feed(h, SyntheticRun(h.config).events())
    h.close()
    return store.open(name)


def _strip_ts(events):
    return [{k: v for k, v in e.to_dict().items() if k != "ts"} for e in events]


def test_training_steps_append_to_the_log_and_never_rewrite_the_database(gpta_home):
    store = SessionStore()
    h = store.create(small_config("flat"))
    h.flush_steps, h.flush_seconds = 25, 1e9
    h.listener(ev.PhaseChanged(epoch=1, phase="training", total=1000))
    db = h.dir / DB_FILE
    before = (db.stat().st_ino, db.stat().st_mtime_ns, db.read_bytes())
    for step in range(1, 201):
        h.listener(_step(step))
    assert (db.stat().st_ino, db.stat().st_mtime_ns, db.read_bytes()) == before
    lines = (h.dir / LOSS_FILE).read_text().splitlines()
    assert len(lines) == 200 and json.loads(lines[-1])["step"] == 200
    assert [p["step"] for p in store.open("flat").loss_points()] == list(range(1, 201))
    h.close()


def test_a_torn_last_line_is_ignored_by_readers_and_cut_by_the_writer(gpta_home):
    store = SessionStore()
    h = store.create(small_config("torn"))
    events = list(SyntheticRun(h.config, steps_per_epoch=20, checkpoint_every=5).events())
    cut = next(i for i, e in enumerate(events) if isinstance(e, ev.TrainStep) and e.step == 13)
    feed(h, events[:cut + 1])
    h.flush()
    h._file_lock.release()  # killed: the lock goes, nothing else happens
    log = h.dir / LOSS_FILE
    whole = log.read_bytes()
    log.write_bytes(whole + b'{"epoch":1,"step":14,"epoch_st')  # a write cut short
    reader = store.open("torn")
    assert [p["step"] for p in reader.loss_points()] == list(range(1, 14))
    assert reader.loss_log_problem == ""  # a torn tail is expected after a crash
    w = store.open("torn", write=True)
    assert log.read_bytes() == whole  # cut off before anything is appended after it
    state = w.last_state
    w.begin_resume()
    feed(w, SyntheticRun(w.config, steps_per_epoch=20, checkpoint_every=5).events(resume=state))
    w.close()
    straight = _finished_steps(store, "straight-torn", 20, 5)
    assert _no_ts(store.open("torn").loss_points()) == straight
    for line in log.read_text().splitlines():  # every line whole
        assert json.loads(line)["step"] >= 1


def _finished_steps(store, name, steps, every):
    h = store.create(small_config(name))
    feed(h, SyntheticRun(h.config, steps_per_epoch=steps, checkpoint_every=every).events())
    h.close()
    return _no_ts(store.open(name).loss_points())


def _no_ts(points):
    return [{k: v for k, v in p.items() if k != "ts"} for p in points]


@pytest.mark.parametrize("damage, problem", [
    (lambda good: good[:2] + [b"not json"] + good[2:], "line 3 is not JSON"),
    (lambda good: good[:2] + [b'[1, 2]'] + good[2:], "not a JSON object"),
    (lambda good: good[:2] + [b'{"epoch": 1, "step": "three", "epoch_step": 3, "epoch_steps": 9,'
                              b' "loss": 1.0, "lr": 0.1}'] + good[2:], "'step' is a str"),
    (lambda good: good[:2] + [b'{"epoch": 1, "step": -4, "epoch_step": 3, "epoch_steps": 9,'
                              b' "loss": 1.0, "lr": 0.1}'] + good[2:], "step -4"),
    (lambda good: good[:2] + [b'{"kind": "notice", "level": "info"}'] + good[2:], "notice"),
    (lambda good: [b"\xff\xfe"] + good, "not JSON"),
])
def test_wrong_shaped_lines_are_left_out_and_never_crash_a_reader(gpta_home, damage, problem):
    from gpta_tui.run_control import load_past

    store = SessionStore()
    _finished(store, "bad").close()
    log = store.session_dir("bad") / LOSS_FILE
    good = log.read_bytes().splitlines()
    log.write_bytes(b"\n".join(damage(good)) + b"\n")
    [summary] = store.list()
    assert summary.status == "finished"
    reader = store.open("bad")
    assert problem in reader.loss_log_problem
    assert len(reader.loss_points()) == len(good)  # every good line kept
    reader.events(), load_past(None, "bad")
    store.open("bad", write=True).close()  # a writer rewrites the log clean
    assert store.open("bad").loss_log_problem == ""
    assert len(log.read_bytes().splitlines()) == len(good)


_FULL_POINT = {"epoch": 1, "step": 3, "epoch_step": 3, "epoch_steps": 10, "loss": 0.5,
               "lr": 1e-3, "ts": 1.5, "_seq": 7}


@pytest.mark.parametrize("change", [
    {}, {"loss": 1}, {"lr": 0}, {"ts": 2}, {"step": 0}, {"step": True}, {"epoch": 1.0},
    {"epoch_step": "3"}, {"epoch_steps": None}, {"loss": "0.5"}, {"lr": [1]}, {"ts": None},
    {"_seq": 1.0}, {"_seq": False}, {"kind": "train_step"}, {"superseded": True},
    {"superseded": 1}, {"x": 1},
    # JSON integers float() cannot take (OverflowError in the charts and curves.png)
    {"loss": 10**400}, {"lr": -10**400}, {"ts": 10**400}, {"step": 10**400},
    {"step": 2**53 + 1}, {"loss": 10**400, "x": 1}, {"step": 10**400, "x": 1}])
def test_the_fast_point_check_agrees_with_the_event_shape_check(change):
    """A line of exactly the point's keys takes `_valid_point`'s fast path (the parsed dict
    itself is kept); any other shape the written-out one. Both agree with `_point_problem`."""
    from sessions.store import _point, _point_problem, _valid_point

    doc = {**_FULL_POINT, **change}
    point = _valid_point(dict(doc))
    assert (point is None) == (_point_problem(doc) is not None)
    if point is not None:
        assert point == _point(doc)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["epoch", "step", "epoch_step", "epoch_steps", "loss",
                                       "lr", "ts", "_seq", "kind", "superseded", "x"]), children, max_size=9),
    max_leaves=10)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(json_values, max_size=4), tail=st.binary(max_size=12))
def test_random_log_lines_never_crash_readers_or_resume(tmp_path_factory, lines, tail):
    """Any JSON values as lines (and any torn tail): readers, the TUI replay and a writer's
    open + resume work, and what they keep are well-formed points."""
    from gpta_tui.run_control import load_past

    from sessions.store import _point_problem, _valid_point

    for value in lines:  # the fast check agrees with the event-shape check
        assert (_valid_point(value) is None) == (_point_problem(value) is not None)
    home = tmp_path_factory.mktemp("home")
    store = SessionStore(home)
    _finished(store, "s").close()
    log = store.session_dir("s") / LOSS_FILE
    good = log.read_bytes()
    extra = b"".join(json.dumps(v).encode() + b"\n" for v in lines)
    log.write_bytes(good + extra + tail.replace(b"\n", b""))
    reader = store.open("s")
    points = reader.loss_points()
    assert all(isinstance(p["step"], int) and p["step"] >= 1 for p in points)
    reader.events()
    load_past(home, "s")
    w = store.open("s", write=True)
    last = w.last_state["step"]
    w.begin_resume()  # keeps the points up to the state's step
    w.close()
    again = store.open("s")
    assert again.loss_log_problem == ""
    assert again.loss_points() == [p for p in points if p["step"] <= last]


@pytest.mark.parametrize("kind", ["symlink", "folder", "fifo"])
def test_a_loss_log_that_is_not_a_regular_file_is_never_followed(gpta_home, tmp_path, kind):
    store = SessionStore()
    _finished(store, "odd").close()
    log = store.session_dir("odd") / LOSS_FILE
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(log.read_bytes())
    original = outside.read_bytes()
    log.unlink()
    if kind == "symlink":
        log.symlink_to(outside)
    elif kind == "folder":
        log.mkdir()
    else:
        os.mkfifo(log)
    reader = store.open("odd")  # does not block on a FIFO, does not read through a link
    assert reader.loss_points() == [] and "was ignored" in reader.loss_log_problem
    if kind == "folder":
        with pytest.raises(GptaError, match="cannot write session database"):
            store.open("odd", write=True)
    else:
        w = store.open("odd", write=True)  # replaces the link / FIFO with a regular file
        w.close()
        assert log.is_file() and not log.is_symlink()
    assert outside.read_bytes() == original


# ---- the schema-2 migration ---------------------------------------------------------------


def _as_schema_2(store: SessionStore, name: str) -> bytes:
    """Rewrite a session in the format the schema-2 store wrote: loss points in the
    database's `loss` table, one document per epoch keyed by step, and no loss.jsonl."""
    folder = store.session_dir(name)
    points = [json.loads(line) for line in (folder / LOSS_FILE).read_text().splitlines()]
    data = json.loads((folder / DB_FILE).read_text())
    table: dict = {}
    for p in points:
        table.setdefault(str(p["epoch"]), {"epoch": p["epoch"], "points": {}})["points"][
            str(p["step"])] = p
    data["loss"] = table
    data["meta"]["1"]["schema"] = 2
    (folder / LOSS_FILE).unlink()
    raw = json.dumps(data).encode()
    (folder / DB_FILE).write_bytes(raw)
    return raw


def test_a_schema_2_session_is_read_as_is_and_migrated_by_a_writer(gpta_home):
    store = SessionStore()
    new = _finished(store, "new")
    want_points, want_events = new.loss_points(), _strip_ts(new.events())
    h = store.create(small_config("old"))
    feed(h, SyntheticRun(h.config).events())
    h.close()
    raw = _as_schema_2(store, "old")
    folder = store.session_dir("old")

    want_points = _no_ts(want_points)
    reader = store.open("old")  # readers migrate in memory only
    assert _no_ts(reader.loss_points()) == want_points
    assert _strip_ts(reader.events())[1:] == want_events[1:]  # [0]: run_started names differ
    assert (folder / DB_FILE).read_bytes() == raw and not (folder / LOSS_FILE).exists()

    store.open("old", write=True).close()
    data = json.loads((folder / DB_FILE).read_text())
    assert data["meta"]["1"]["schema"] == SCHEMA_VERSION and "loss" not in data
    assert (folder / f"{DB_FILE}.schema-2").read_bytes() == raw
    assert [json.loads(x)["step"] for x in (folder / LOSS_FILE).read_text().splitlines()] == \
        [p["step"] for p in want_points]
    assert _no_ts(store.open("old").loss_points()) == want_points


def test_a_schema_2_session_killed_mid_run_migrates_and_resumes_exactly(gpta_home):
    store = SessionStore()
    straight = _no_ts(_finished(store, "straight").loss_points())
    h = store.create(small_config("old"))
    events = list(SyntheticRun(h.config).events())
    cut = next(i for i, e in enumerate(events) if isinstance(e, ev.TrainStep) and e.step == 9)
    feed(h, events[:cut + 1])
    h.flush()
    h._file_lock.release()
    _as_schema_2(store, "old")
    w = store.open("old", write=True)
    state = w.last_state
    w.begin_resume()
    feed(w, SyntheticRun(w.config).events(resume=state))
    w.close()
    assert _no_ts(store.open("old").loss_points()) == straight


def open_killed_before_the_database_write(store: SessionStore, name: str, monkeypatch) -> None:
    """Open `name` for writing and die at its first database write (after a migration
    wrote the logs, before the tables left the database)."""
    from sessions import store as store_mod

    def crash(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(store_mod.SessionLifecycle, "flush", crash)
    with pytest.raises(KeyboardInterrupt):
        store.open(name, write=True)
    monkeypatch.undo()


def test_a_move_cut_short_is_redone_on_the_next_open(gpta_home, monkeypatch):
    """The log is written before the table leaves the database: a crash between the two
    leaves both, and the next writer merges and moves them again."""
    store = SessionStore()
    h = store.create(small_config("half"))
    feed(h, SyntheticRun(h.config).events())
    h.close()
    want = store.open("half").loss_points()
    raw = _as_schema_2(store, "half")
    open_killed_before_the_database_write(store, "half", monkeypatch)
    folder = store.session_dir("half")
    assert (folder / DB_FILE).read_bytes() == raw and (folder / LOSS_FILE).exists()
    assert store.open("half").loss_points() == want
    store.open("half", write=True).close()
    assert "loss" not in json.loads((folder / DB_FILE).read_text())
    assert store.open("half").loss_points() == want


# ---- export and import --------------------------------------------------------------------


def test_export_and_import_carry_the_loss_log(gpta_home, tmp_path):
    store = SessionStore()
    r = _finished(store, "src")
    out = export_session(r, tmp_path / "out")
    assert "loss" not in json.loads((out / "session.json").read_text())["database"]
    assert (out / LOSS_FILE).read_text() == (r.dir / LOSS_FILE).read_text()
    name = import_session(store, out, name="copy")
    copy = store.open(name)
    assert copy.loss_points() == r.loss_points()
    assert _strip_ts(copy.events())[1:] == _strip_ts(r.events())[1:]


def test_an_export_of_format_1_imports_its_loss_table_into_the_log(gpta_home, tmp_path):
    store = SessionStore()
    r = _finished(store, "src")
    out = export_session(r, tmp_path / "out")
    payload = json.loads((out / "session.json").read_text())
    table: dict = {}
    for p in (json.loads(x) for x in (out / LOSS_FILE).read_text().splitlines()):
        table.setdefault(str(p["epoch"]), {"epoch": p["epoch"], "points": {}})["points"][
            str(p["step"])] = p
    payload["database"]["loss"] = table
    payload["database"]["meta"]["1"]["schema"] = 2
    payload["format_version"] = 1
    (out / "session.json").write_text(json.dumps(payload))
    (out / LOSS_FILE).unlink()
    name = import_session(store, out, name="old-export")
    folder = store.session_dir(name)
    assert "loss" not in json.loads((folder / DB_FILE).read_text())
    assert store.open(name).loss_points() == r.loss_points()


@pytest.mark.parametrize("damage, message", [
    ("torn", "last line is incomplete"),
    ("garbage", "not JSON"),
    ("shape", "'loss' is a str"),
    ("symlink", "symbolic link"),
    ("fifo", "not a regular file"),
    ("big", "larger than"),
])
def test_import_refuses_a_bad_loss_log_and_writes_nothing(gpta_home, tmp_path, monkeypatch,
                                                          damage, message):
    store = SessionStore()
    out = export_session(_finished(store, "src"), tmp_path / "out")
    log = out / LOSS_FILE
    lines = log.read_bytes().splitlines(keepends=True)
    if damage == "torn":
        log.write_bytes(b"".join(lines) + lines[0][:-5])
    elif damage == "garbage":
        log.write_bytes(b"".join(lines[:3]) + b"{oops\n" + b"".join(lines[3:]))
    elif damage == "shape":
        point = json.loads(lines[0]) | {"loss": "low"}
        log.write_bytes(json.dumps(point).encode() + b"\n" + b"".join(lines[1:]))
    elif damage == "symlink":
        target = tmp_path / "elsewhere.jsonl"
        target.write_bytes(b"".join(lines))
        log.unlink()
        log.symlink_to(target)
    elif damage == "fifo":
        log.unlink()
        os.mkfifo(log)
    else:
        monkeypatch.setattr(losslog, "MAX_LOG_BYTES", 100)
        monkeypatch.setattr(losslog.read_raw, "__defaults__", (100,))
    with pytest.raises(UsageError, match=message) as info:
        import_session(store, out, name="imp")
    assert "gpta export" in info.value.fix
    assert not store.session_dir("imp").exists()
    assert not [p for p in store.root.iterdir() if p.name.startswith(".import-")]


# ---- the paper's length, killed with SIGKILL ------------------------------------------------

CHILD = textwrap.dedent("""
    import os, sys
    sys.path[:0] = [{root!r}, {tests!r}]
    os.fsync = lambda fd: None  # a SIGKILL keeps what was written; fsync guards power loss only
    from pathlib import Path
    from sessions.store import SessionStore
    from test_sessions_helpers import SyntheticRun, small_config

    store = SessionStore(Path({home!r}))
    cfg = small_config("paper", loop={{"epochs": 5, "k": 4, "l": 2, "window": 2}})
    h = store.create(cfg)
    for event in SyntheticRun(h.config, steps_per_epoch={per_epoch}, checkpoint_every=250).events():
        h.listener(event)
        if event.kind == "train_step" and event.step % 250 == 0:
            print(event.step, flush=True)
""")


def test_a_run_of_the_papers_length_killed_with_sigkill_resumes_exactly(tmp_path, monkeypatch):
    """31,250 synthetic training steps (5 epochs of 6,250, a checkpoint every 250 steps); the
    writer is killed at a random step, and the resumed session has every point once, as an
    uninterrupted run would. (fsync is skipped in both processes: a SIGKILL loses nothing the
    process had written, and the test stays quick on a busy disk.)"""
    home = tmp_path / "home"
    per_epoch = PAPER_STEPS // 5
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT), tests=str(TESTS_DIR), home=str(home),
                                   per_epoch=per_epoch))
    kill_at = random.Random(20).randrange(1_000, PAPER_STEPS - 500, 250)
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        seen = 0
        while seen < kill_at:
            line = child.stdout.readline()
            assert line, child.stderr.read()
            seen = int(line)
    finally:
        kill_hard(child)

    store = SessionStore(home)
    [summary] = store.list()
    assert summary.status == "interrupted"
    reader = store.open("paper")
    steps = [p["step"] for p in reader.loss_points()]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= kill_at - 25
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # as in the child: keeps the test fast
    h = store.open("paper", write=True)
    state = h.last_state
    assert state["step"] >= kill_at - 250 and state["step"] <= len(steps)
    h.begin_resume()
    assert [p["step"] for p in h.loss_points()] == list(range(1, state["step"] + 1))
    feed(h, SyntheticRun(h.config, steps_per_epoch=per_epoch, checkpoint_every=250)
         .events(resume=state))
    h.close()
    done = store.open("paper")
    points = done.loss_points()
    assert [p["step"] for p in points] == list(range(1, PAPER_STEPS + 1))
    assert [p["loss"] for p in points] == [1.0 / s for s in range(1, PAPER_STEPS + 1)]
    assert [(p["epoch"], p["epoch_step"]) for p in points[per_epoch - 1:per_epoch + 1]] == \
        [(1, per_epoch), (2, 1)]
    assert [v["epoch"] for v in done.validations()] == [1, 2, 3, 4, 5]
    assert done.status == "finished" and len(done.record()["resumes"]) == 1
    lines = (done.dir / LOSS_FILE).read_text().splitlines()
    assert len(lines) == PAPER_STEPS  # a resume rewrote the log: no replayed step twice
    train = [e for e in done.events() if e.kind == "train_step"]
    assert [e.step for e in train] == list(range(1, PAPER_STEPS + 1))


def test_numbers_too_large_for_a_float_are_left_out_and_export_draws_the_rest(gpta_home,
                                                                            tmp_path):
    """A crafted loss.jsonl line whose loss or step is a 400-digit integer (valid JSON) made
    `gpta export` (curves.png) raise OverflowError; a test metric of 400 digits in session.json
    did the same for every session list."""
    from sessions.export import export_session

    store = SessionStore()
    done = _finished(store, "big")
    want = done.loss_points()
    done.close()
    log = store.session_dir("big") / LOSS_FILE
    good = log.read_bytes()
    huge = [{**_FULL_POINT, "step": 10**6, "loss": 10**400}, {**_FULL_POINT, "step": 10**400}]
    log.write_bytes(good + b"".join(json.dumps(p).encode() + b"\n" for p in huge))
    reader = store.open("big")
    assert reader.loss_points() == want and "2 line(s) left out" in reader.loss_log_problem
    assert (export_session(reader, tmp_path / "out") / "curves.png").stat().st_size > 0
    db = store.session_dir("big") / "session.json"
    data = json.loads(db.read_text())
    data["session"]["1"]["finished"]["test_metrics"]["accuracy"] = 10**400
    db.write_text(json.dumps(data))
    listed = {s.name: s for s in store.list()}
    assert listed["big"].test_metrics == {}  # an unreadable session lists without figures


@pytest.mark.parametrize("raw, records, problems", [
    # one object split over two lines (a bracket, a string) plus a line of two objects: the
    # old whole-file parse joined lines with commas and accepted three "records" here
    (b'{"a":[1\n2]}\n{"b":1},{"c":2}\n{"d":3}\n', [(4, {"d": 3})], 3),
    (b'{"a":"}\n{"}\n{"b":1},{"c":2}\n', [], 3),
    # whitespace and CRLF: not the whole-file form, but valid lines the line reader takes
    (b' {"a":1}\n{"b":2}\r\n', [(1, {"a": 1}), (2, {"b": 2})], 0),
    (b'{"a":1}\n{"b":2}\n', [(1, {"a": 1}), (2, {"b": 2})], 0),
    (b'{"a":1}\n[1]\n{"b":2}\n', [(1, {"a": 1}), (3, {"b": 2})], 1),
    # a newline is JSON whitespace: an object spread over lines between its tokens ends
    # right before a newline too, but no line of it is an object on its own
    (b'{}\n{\n"a": 1}\n{"k":2}\n', [(1, {}), (4, {"k": 2})], 2),
    (b'{"a"\n:1}\n', [], 2),
    (b'{"x":[1,\n2]}\n{"d":3}\n', [(3, {"d": 3})], 2),
])
def test_the_whole_file_read_takes_only_what_the_line_reader_takes(tmp_path, raw, records, problems):
    from sessions import losslog
    from sessions.storage import DatabaseUnreadable

    got, end, found = losslog.parse(raw, tmp_path / "x.jsonl")
    assert got == records and len(found) == problems and end == len(raw)
    lines = raw.split(b"\n")[:-1]
    if all(line.startswith(b"{") and line.endswith(b"}") for line in lines) and not problems:
        assert losslog._whole_lines(raw) == [r for _, r in records]
    if problems:  # an import (strict) refuses the file, naming the first bad line
        with pytest.raises(DatabaseUnreadable):
            losslog.parse(raw, tmp_path / "x.jsonl", strict=True)


def _line_by_line(raw: bytes, strict: bool):
    """The reference: every complete line parsed on its own, as the slow path does."""
    end = raw.rfind(b"\n") + 1
    if end < len(raw) and strict:
        return "refused"
    records, problems = [], 0
    for number, line in enumerate(raw[:end].split(b"\n")[:-1], start=1):
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            record = None
        if isinstance(record, dict):
            records.append((number, record))
        elif strict:
            return "refused"
        else:
            problems += 1
    return records, end, problems


_FRAGMENTS = [b"{", b"}", b"[", b"]", b'"a"', b'"\\n"', b",", b":", b"1", b"\n", b" ", b"\r",
              b"\t", b"NaN", b"1e999", b'"\\ud800"', b"\xef\xbb\xbf", b"\xff", b"\x00", b"{}",
              b'{"a":1}', b"null"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(values=st.lists(st.tuples(json_values, st.sampled_from([None, 0, 1])), max_size=4),
       soup=st.lists(st.sampled_from(_FRAGMENTS), max_size=12))
def test_parse_returns_what_a_line_by_line_reader_returns(values, soup):
    """Any lines (JSON written with and without newlines inside it, and JSON-ish byte soup):
    `parse` keeps, numbers and refuses exactly what a reader of one line at a time does."""
    from sessions import losslog
    from sessions.storage import DatabaseUnreadable

    for raw in (b"".join(json.dumps(v, indent=indent).encode() + b"\n" for v, indent in values),
                b"".join(soup)):
        for strict in (False, True):
            try:
                records, end, problems = losslog.parse(raw, "x.jsonl", strict=strict)
                got = records, end, len(problems)
            except DatabaseUnreadable:
                got = "refused"
            assert repr(got) == repr(_line_by_line(raw, strict))  # repr: NaN != NaN
