"""ta_calls.jsonl and windows.jsonl (issue 20, schema 4): TA calls and windows appended
beside the database, never in it; the resume's superseded marks; torn and hostile lines; the
schema-3 migration; export format 3 and the conversion of older exports."""

from __future__ import annotations

import json

import pytest

from engine import events as ev
from engine.errors import UsageError
from sessions.export import EXPORT_VERSION, export_session, import_session
from sessions.losslog import TA_FILE, WINDOWS_FILE
from sessions.store import DB_FILE, SCHEMA_VERSION, SessionStore

from test_sessions_helpers import SyntheticRun, feed, small_config
from test_sessions_losslog import _finished, _strip_ts
from test_sessions_store import _crash_after, _index


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_ta_calls_are_appended_to_the_log_and_never_stored_in_the_database(gpta_home):
    store = SessionStore()
    r = _finished(store, "s")
    assert "ta_calls" not in json.loads((r.dir / DB_FILE).read_text())
    lines = _lines(r.dir / TA_FILE)
    requests = [x for x in lines if x["kind"] == "ta_request"]
    responses = [x for x in lines if x["kind"] == "ta_response"]
    calls = r.ta_calls()
    assert len(calls) == len(requests) >= 2 and len(responses) == sum(len(c["responses"]) for c in calls)
    assert all(x["responses"] == [] for x in requests)  # appended as they came, never rewritten
    assert [c["request_id"] for c in calls] == [x["request_id"] for x in requests]
    assert [x["_seq"] for x in lines] == sorted(x["_seq"] for x in lines)
    assert any(isinstance(e, ev.TAResponse) for e in r.events())
    assert "windows" not in json.loads((r.dir / DB_FILE).read_text())
    records = _lines(r.dir / WINDOWS_FILE)
    assert [x["epoch"] for x in records] == [1, 2] and all(x["kind"] == "windows" for x in records)
    assert r.windows() == [{**w, "epoch": x["epoch"]} for x in records for w in x["windows"]]


def _resume(store: SessionStore, name: str):
    """Resume a crashed session to its end as the runner does; the finished session."""
    h = store.open(name, write=True)
    state = h.last_state
    h.begin_resume()
    feed(h, SyntheticRun(h.config).events(resume=state))
    h.close()
    return store.open(name)


def test_a_replayed_epoch_appends_its_windows_again_and_the_later_record_wins(gpta_home):
    store = SessionStore()
    straight = _finished(store, "straight")
    full = list(SyntheticRun(small_config("x")).events())
    _crash_after(store, "c", _index(full, lambda e: isinstance(e, ev.FinetuneUpdate)
                                    and e.status == "running"))
    resumed = _resume(store, "c")
    assert resumed.windows() == straight.windows()
    assert sorted(set(x["epoch"] for x in _lines(resumed.dir / WINDOWS_FILE))) == [1, 2]
    assert [e.epoch for e in resumed.events() if isinstance(e, ev.WindowsBuilt)] == [1, 2]
    # an epoch recorded twice (a replay): both lines stay, the later one is what readers see
    h = store.open("c", write=True)
    again = [{"messages": [{"role": "user", "content": "again"}]}]
    h.listener(ev.WindowsBuilt(epoch=1, windows=again, path="windows/epoch-1.jsonl"))
    h.close()
    assert [x["epoch"] for x in _lines(resumed.dir / WINDOWS_FILE)][-1] == 1
    assert store.open("c").windows(epoch=1) == [{**again[0], "epoch": 1}]


def test_a_resume_marks_the_calls_after_the_checkpoint_superseded_in_the_log(gpta_home):
    store = SessionStore()
    full = list(SyntheticRun(small_config("x")).events())
    cut = _index(full, lambda e: isinstance(e, ev.PrefixScored) and e.epoch == 1 and e.request_id == 2)
    _crash_after(store, "c", cut)
    h = store.open("c", write=True)
    state = h.last_state
    h.begin_resume()
    marked = [c for c in h.ta_calls(include_superseded=True) if c["superseded"]]
    assert [c["request_id"] for c in marked] == [2]
    # rewritten once: one line per call, each with its responses and its mark
    lines = _lines(h.dir / TA_FILE)
    assert [(x["request_id"], x["superseded"]) for x in lines] == [(1, False), (2, True)]
    assert len(lines[1]["responses"]) == 1
    feed(h, SyntheticRun(h.config).events(resume=state))
    want = h.ta_calls(include_superseded=True)
    h.close()
    again = store.open("c")
    assert again.ta_calls(include_superseded=True) == want
    assert [c["request_id"] for c in again.ta_calls()] == \
        [c["request_id"] for c in _finished(store, "straight").ta_calls()]
    assert _lines(again.dir / TA_FILE)[2]["kind"] == "ta_request"  # appended after the rewrite


@pytest.mark.parametrize("damage, problem", [
    (b'{"kind": "ta_response", "request_id": 1}\n', "line 5"),
    (b"not json\n", "not JSON"),
    (b'{"kind": "other"}\n', "kind 'other'"),
    (b"[1]\n", "not a JSON object"),
])
def test_wrong_lines_of_the_ta_log_are_left_out_and_a_writer_rewrites_it_clean(
        gpta_home, damage, problem):
    store = SessionStore()
    want = _finished(store, "bad").ta_calls()
    log = store.session_dir("bad") / TA_FILE
    raw = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(raw[:4]) + damage + b"".join(raw[4:]) + b'{"kind": "ta_req')
    reader = store.open("bad")
    assert reader.ta_calls() == want
    assert problem in reader.ta_log_problem and "1 line(s) left out" in reader.ta_log_problem
    store.open("bad", write=True).close()
    # rewritten as one line per call (each with its responses), the bad and torn lines gone
    assert log.read_bytes().endswith(b"\n") and len(_lines(log)) == len(want)
    clean = store.open("bad")
    assert clean.ta_log_problem == "" and clean.ta_calls() == want


def test_a_ta_log_that_is_a_symlink_is_ignored_and_replaced(gpta_home, tmp_path):
    store = SessionStore()
    _finished(store, "odd")
    log = store.session_dir("odd") / TA_FILE
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(log.read_bytes())
    original = outside.read_bytes()
    log.unlink()
    log.symlink_to(outside)
    reader = store.open("odd")
    assert reader.ta_calls() == [] and "was ignored" in reader.ta_log_problem
    store.open("odd", write=True).close()
    assert log.is_file() and not log.is_symlink() and outside.read_bytes() == original


def as_older_schema(folder, schema: int, tables: dict[str, tuple[list[dict], str, str | None]]
                    ) -> bytes:
    """Rewrite a session as an older store wrote it: `tables` maps a database table to (its
    records, the log file they now live in, the record field that is its id, or None for
    insertion ids); the logs are removed and the schema set. Returns the database's bytes."""
    data = json.loads((folder / DB_FILE).read_text())
    for table, (records, log, key) in tables.items():
        data[table] = {str(r[key] if key else i): r for i, r in enumerate(records, start=1)}
        (folder / log).unlink()
    data["meta"]["1"]["schema"] = schema
    raw = json.dumps(data).encode()
    (folder / DB_FILE).write_bytes(raw)
    return raw


def _as_schema_3(store: SessionStore, name: str) -> bytes:
    """Rewrite a session as the schema-3 store wrote it: TA calls in the database's
    `ta_calls` table (each request with its responses), no ta_calls.jsonl."""
    folder = store.session_dir(name)
    h = store.open(name)
    calls = [json.loads(x) for x in h.ta_log_text().splitlines()]
    h.close()
    return as_older_schema(folder, 3, {"ta_calls": (calls, TA_FILE, None),
                                       "windows": (_lines(folder / WINDOWS_FILE), WINDOWS_FILE,
                                                   "epoch")})


def test_a_schema_3_session_is_read_as_is_and_migrated_by_a_writer(gpta_home):
    store = SessionStore()
    new = _finished(store, "old")
    want_calls, want_events = new.ta_calls(include_superseded=True), _strip_ts(new.events())
    want_windows = new.windows()
    new.close()
    raw = _as_schema_3(store, "old")
    folder = store.session_dir("old")
    reader = store.open("old")  # migrates in memory only
    assert reader.ta_calls(include_superseded=True) == want_calls
    assert _strip_ts(reader.events()) == want_events
    assert reader.windows() == want_windows
    assert (folder / DB_FILE).read_bytes() == raw and not (folder / TA_FILE).exists()
    store.open("old", write=True).close()
    data = json.loads((folder / DB_FILE).read_text())
    assert data["meta"]["1"]["schema"] == SCHEMA_VERSION  # 3 -> the current schema
    assert "ta_calls" not in data and "windows" not in data
    assert (folder / f"{DB_FILE}.schema-3").read_bytes() == raw
    assert [x["request_id"] for x in _lines(folder / TA_FILE)] == [c["request_id"] for c in want_calls]
    migrated = store.open("old")
    assert migrated.windows() == want_windows and (folder / WINDOWS_FILE).is_file()
    assert migrated.ta_calls(include_superseded=True) == want_calls
    assert _strip_ts(migrated.events()) == want_events


def test_a_schema_3_session_killed_mid_collection_migrates_and_resumes_exactly(gpta_home):
    store = SessionStore()
    straight = _finished(store, "straight")
    full = list(SyntheticRun(small_config("x")).events())
    _crash_after(store, "c", _index(full, lambda e: isinstance(e, ev.PrefixScored)
                                    and e.epoch == 2 and e.request_id == 3))
    _as_schema_3(store, "c")
    resumed = _resume(store, "c")
    strip = lambda calls: [{k: v for k, v in c.items() if k != "ts"} | {"responses": [
        {k: v for k, v in r.items() if k != "ts"} for r in c["responses"]]} for c in calls]
    assert strip(resumed.ta_calls()) == strip(straight.ta_calls())
    assert resumed.windows() == straight.windows()
    assert resumed.loss_points() and "ta_calls" not in json.loads((resumed.dir / DB_FILE).read_text())


def test_export_and_import_carry_the_ta_log(gpta_home, tmp_path):
    store = SessionStore()
    r = _finished(store, "src")
    out = export_session(r, tmp_path / "out")
    payload = json.loads((out / "session.json").read_text())
    assert payload["format_version"] == EXPORT_VERSION and "ta_calls" not in payload["database"]
    name = import_session(store, out, name="copy")
    copy = store.open(name)
    assert copy.ta_calls(include_superseded=True) == r.ta_calls(include_superseded=True)
    assert copy.windows() == r.windows() and "windows" not in payload["database"]
    assert _strip_ts(copy.events())[1:] == _strip_ts(r.events())[1:]


def test_an_export_of_format_2_imports_its_ta_calls_table_into_the_log(gpta_home, tmp_path):
    store = SessionStore()
    r = _finished(store, "src")
    out = export_session(r, tmp_path / "out")
    payload = json.loads((out / "session.json").read_text())
    calls = _lines(out / TA_FILE)
    payload["database"]["ta_calls"] = {str(i): c for i, c in enumerate(calls, start=1)}
    payload["database"]["windows"] = {str(x["epoch"]): x for x in _lines(out / WINDOWS_FILE)}
    payload["database"]["meta"]["1"]["schema"] = 3
    payload["format_version"] = 2
    (out / "session.json").write_text(json.dumps(payload))
    (out / TA_FILE).unlink()
    (out / WINDOWS_FILE).unlink()
    name = import_session(store, out, name="old-export")
    folder = store.session_dir(name)
    data = json.loads((folder / DB_FILE).read_text())
    assert "ta_calls" not in data and "windows" not in data
    assert store.open(name).windows() == r.windows()
    assert store.open(name).ta_calls(include_superseded=True) == r.ta_calls(include_superseded=True)


def damage_log(log, damage: str, tmp_path) -> None:
    """Spoil an exported log: a torn last line, a line that is not JSON, a line of another
    kind, or the file replaced by a symbolic link to a copy elsewhere."""
    lines = log.read_bytes().splitlines(keepends=True)
    if damage == "torn":
        log.write_bytes(b"".join(lines) + lines[0][:-5])
    elif damage == "garbage":
        log.write_bytes(lines[0] + b"{oops\n" + b"".join(lines[1:]))
    elif damage == "kind":
        log.write_bytes(b'{"kind": "train_step"}\n')
    else:
        target = tmp_path / "elsewhere.jsonl"
        target.write_bytes(log.read_bytes())
        log.unlink()
        log.symlink_to(target)


@pytest.mark.parametrize("damage, message", [
    ("torn", "last line is incomplete"),
    ("garbage", "not JSON"),
    ("shape", "texts, prefixes"),
    ("kind", "not a TA request or response"),
    ("symlink", "symbolic link"),
])
def test_import_refuses_a_bad_ta_log_and_writes_nothing(gpta_home, tmp_path, damage, message):
    store = SessionStore()
    out = export_session(_finished(store, "src"), tmp_path / "out")
    log = out / TA_FILE
    if damage == "shape":
        call = json.loads(log.read_bytes().splitlines()[0])  # each request with its responses
        call["responses"][0]["texts"] = [1]
        log.write_bytes(json.dumps(call).encode() + b"\n")
    else:
        damage_log(log, damage, tmp_path)
    with pytest.raises(UsageError) as info:
        import_session(store, out, name="imp")
    assert message in str(info.value.problem) and TA_FILE in info.value.problem
    assert not store.session_dir("imp").exists()
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".import")] == []


@pytest.mark.parametrize("line, message", [
    (b'{"kind": "windows", "epoch": 1, "path": "w", "windows": [{"messages": 3}]}\n', "chat messages"),
    (b'{"kind": "ta_request"}\n', "not windows"),
    (b"{oops\n", "not JSON"),
])
def test_windows_lines_that_are_wrong_are_left_out_by_readers_and_refused_by_import(
        gpta_home, tmp_path, line, message):
    store = SessionStore()
    r = _finished(store, "w")
    want = r.windows()
    log = r.dir / WINDOWS_FILE
    log.write_bytes(log.read_bytes() + line)
    reader = store.open("w")
    assert reader.windows() == want and message in reader.windows_log_problem
    out = export_session(reader, tmp_path / "out")
    (out / WINDOWS_FILE).write_bytes((out / WINDOWS_FILE).read_bytes() + line)
    with pytest.raises(UsageError) as info:
        import_session(store, out, name="imp")
    assert message in info.value.problem and WINDOWS_FILE in info.value.problem
    assert not store.session_dir("imp").exists()
