"""scored.jsonl and history.jsonl (issue 20, schema 5): scored prefixes and each epoch's
sorted history appended beside the database, never in it, so a checkpoint's database write
costs the same in epoch 5 as in epoch 1; the resume drops the scores after the checkpoint;
hostile lines; the schema-4 migration; export format 4 and the conversion of older exports."""

from __future__ import annotations

import json

import pytest

from engine import events as ev
from engine.errors import GptaError, UsageError
from sessions.export import EXPORT_VERSION, export_session, import_session
from sessions.losslog import HISTORY_FILE, SCORED_FILE
from sessions.store import DB_FILE, SCHEMA_VERSION, SessionStore

from test_sessions_helpers import SyntheticRun, feed, small_config
from test_sessions_losslog import _finished, _strip_ts, open_killed_before_the_database_write
from test_sessions_store import _crash_after, _index
from test_sessions_talog import _as_schema_3, _lines, _resume, as_older_schema, damage_log


def _no_ts(rows):
    return [{k: v for k, v in r.items() if k != "ts"} for r in rows]


def test_scores_and_history_are_appended_to_the_logs_and_never_stored_in_the_database(gpta_home):
    store = SessionStore()
    h = store.create(small_config("s"))
    events = list(SyntheticRun(h.config).events())
    db = h.dir / DB_FILE
    feed(h, events[:_index(events, lambda e: isinstance(e, ev.HistoryUpdated))])
    h.flush()
    data = json.loads(db.read_text())
    assert "scored" not in data and "history" not in data   # the checkpoint wrote neither
    feed(h, events[_index(events, lambda e: isinstance(e, ev.HistoryUpdated)):])
    h.close()
    r = store.open("s")
    data = json.loads(db.read_text())
    assert "scored" not in data and "history" not in data
    scored = _lines(r.dir / SCORED_FILE)
    assert all(x["kind"] == "prefix_scored" for x in scored)
    assert [x["_seq"] for x in scored] == sorted(x["_seq"] for x in scored)
    assert [(s["epoch"], s["prefix"], s["score"]) for s in r.scored_prefixes()] == \
        [(x["epoch"], x["prefix"], x["score"]) for x in scored]
    history = _lines(r.dir / HISTORY_FILE)
    assert all(x["kind"] == "history" for x in history) and len(history) >= 2
    last = {x["epoch"]: x for x in history}   # every update appended; the later one wins
    assert sorted({r_["epoch"] for r_ in r.history()}) == sorted(last)
    for epoch, record in last.items():
        rows = [x for x in r.history(epoch)]
        assert [x["prefix"] for x in rows] == [p for p, _ in record["history"]]
    assert sum(isinstance(e, ev.PrefixScored) for e in r.events()) == len(scored)
    assert sum(isinstance(e, ev.HistoryUpdated) for e in r.events()) == len(last)


@pytest.mark.parametrize("schema_4", [False, True])
def test_a_resume_drops_the_scores_after_the_checkpoint_once_and_ends_as_a_straight_run(
        gpta_home, schema_4):
    """Killed mid-collection (as a schema-4 session too: migrated by the resuming writer)."""
    store = SessionStore()
    straight = _finished(store, "straight")
    full = list(SyntheticRun(small_config("x")).events())
    _crash_after(store, "c", _index(full, lambda e: isinstance(e, ev.PrefixScored)
                                    and e.epoch == 2 and e.request_id == 3))
    if schema_4:
        _as_schema_4(store, "c")
    resumed = _resume(store, "c")
    assert _no_ts(resumed.scored_prefixes()) == _no_ts(straight.scored_prefixes())
    assert resumed.history() == straight.history()
    assert "scored" not in json.loads((resumed.dir / DB_FILE).read_text())
    # the log holds each kept score once (rewritten once at the resume, then appended)
    scored = _lines(resumed.dir / SCORED_FILE)
    assert len(scored) == len(straight.scored_prefixes())
    assert [x["_seq"] for x in scored] == sorted({x["_seq"] for x in scored})


@pytest.mark.parametrize("log, damage, problem", [
    (SCORED_FILE, b"not json\n", "not JSON"),
    (SCORED_FILE, b'{"kind": "history"}\n', "not a scored prefix"),
    (HISTORY_FILE, b'{"kind": "history", "epoch": 1, "history": [["a", "b"]], '
                   b'"training_prefix": ""}\n', "[prefix, score] pairs"),
    (HISTORY_FILE, b"[1]\n", "not a JSON object"),
    # Python's json refuses an integer of over 4,300 digits with a plain ValueError, and
    # deep nesting with a RecursionError: both crashed every reader (`gpta show`)
    (SCORED_FILE, b'{"kind": "prefix_scored", "epoch": ' + b"9" * 5000 + b"}\n", "not JSON"),
    (HISTORY_FILE, b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "not JSON"),
])
def test_wrong_lines_are_left_out_and_a_writer_rewrites_the_log_clean(gpta_home, log, damage,
                                                                      problem):
    store = SessionStore()
    done = _finished(store, "bad")
    want_scored, want_history = done.scored_prefixes(), done.history()
    path = store.session_dir("bad") / log
    raw = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(raw[:1]) + damage + b"".join(raw[1:]) + b'{"kind": "prefix_sc')
    reader = store.open("bad")
    assert reader.scored_prefixes() == want_scored and reader.history() == want_history
    message = reader.scored_log_problem if log == SCORED_FILE else reader.history_log_problem
    assert problem in message and "1 line(s) left out" in message
    store.open("bad", write=True).close()
    assert path.read_bytes().endswith(b"\n") and b"prefix_sc\n" not in path.read_bytes()
    clean = store.open("bad")
    assert clean.scored_log_problem == clean.history_log_problem == ""
    assert clean.scored_prefixes() == want_scored and clean.history() == want_history


def _as_schema_4(store: SessionStore, name: str) -> bytes:
    """Rewrite a session as the schema-4 store wrote it: scored prefixes in the database's
    `scored` table (insertion ids) and each epoch's history in `history` (id = epoch)."""
    folder = store.session_dir(name)
    return as_older_schema(folder, 4, {
        "scored": (_lines(folder / SCORED_FILE), SCORED_FILE, None),
        "history": (_lines(folder / HISTORY_FILE), HISTORY_FILE, "epoch")})


def test_a_schema_4_session_is_read_as_is_and_migrated_by_a_writer(gpta_home):
    store = SessionStore()
    new = _finished(store, "old")
    want = (new.scored_prefixes(), new.history(), _strip_ts(new.events()))
    new.close()
    raw = _as_schema_4(store, "old")
    folder = store.session_dir("old")
    reader = store.open("old")  # migrates in memory only
    assert (reader.scored_prefixes(), reader.history(), _strip_ts(reader.events())) == want
    assert (folder / DB_FILE).read_bytes() == raw and not (folder / SCORED_FILE).exists()
    store.open("old", write=True).close()
    data = json.loads((folder / DB_FILE).read_text())
    assert data["meta"]["1"]["schema"] == SCHEMA_VERSION == 5
    assert "scored" not in data and "history" not in data
    assert (folder / f"{DB_FILE}.schema-4").read_bytes() == raw
    migrated = store.open("old")
    assert (migrated.scored_prefixes(), migrated.history(), _strip_ts(migrated.events())) == want


@pytest.mark.parametrize("schema", [3, 4])
def test_a_move_cut_short_is_redone_without_reading_a_record_twice(gpta_home, monkeypatch,
                                                                    schema):
    """A writer writes the logs, then drops the tables: killed in between, the database
    still has the tables and the logs already hold their records. Readers and the next
    writer see each TA call and each score once (the log's copy of a _seq wins)."""
    store = SessionStore()
    done = _finished(store, "half")
    want = (done.ta_calls(include_superseded=True), done.scored_prefixes(), done.history(),
            done.windows(), _strip_ts(done.events()))
    done.close()
    (_as_schema_3 if schema == 3 else _as_schema_4)(store, "half")
    open_killed_before_the_database_write(store, "half", monkeypatch)

    def seen():
        r = store.open("half")
        return (r.ta_calls(include_superseded=True), r.scored_prefixes(), r.history(),
                r.windows(), _strip_ts(r.events()))
    assert seen() == want
    store.open("half", write=True).close()
    assert seen() == want
    data = json.loads((store.session_dir("half") / DB_FILE).read_text())
    assert not {"ta_calls", "windows", "scored", "history"} & set(data)


def test_export_and_import_carry_the_scored_and_history_logs(gpta_home, tmp_path):
    store = SessionStore()
    r = _finished(store, "src")
    out = export_session(r, tmp_path / "out")
    payload = json.loads((out / "session.json").read_text())
    assert payload["format_version"] == EXPORT_VERSION == 4
    assert "scored" not in payload["database"] and "history" not in payload["database"]
    name = import_session(store, out, name="copy")
    copy = store.open(name)
    assert copy.scored_prefixes() == r.scored_prefixes() and copy.history() == r.history()
    assert _strip_ts(copy.events())[1:] == _strip_ts(r.events())[1:]


def test_an_export_of_format_3_imports_its_tables_into_the_logs(gpta_home, tmp_path):
    store = SessionStore()
    r = _finished(store, "src")
    out = export_session(r, tmp_path / "out")
    payload = json.loads((out / "session.json").read_text())
    db = payload["database"]
    db["scored"] = {str(i): x for i, x in enumerate(_lines(out / SCORED_FILE), start=1)}
    db["history"] = {str(x["epoch"]): x for x in _lines(out / HISTORY_FILE)}
    db["meta"]["1"]["schema"] = 4
    payload["format_version"] = 3
    (out / "session.json").write_text(json.dumps(payload))
    (out / SCORED_FILE).unlink()
    (out / HISTORY_FILE).unlink()
    name = import_session(store, out, name="old-export")
    data = json.loads((store.session_dir(name) / DB_FILE).read_text())
    assert "scored" not in data and "history" not in data
    copy = store.open(name)
    assert copy.scored_prefixes() == r.scored_prefixes() and copy.history() == r.history()


@pytest.mark.parametrize("log, damage, message", [
    (SCORED_FILE, "torn", "last line is incomplete"),
    (SCORED_FILE, "kind", "not a scored prefix"),
    (HISTORY_FILE, "garbage", "not JSON"),
    (HISTORY_FILE, "symlink", "symbolic link"),
])
def test_import_refuses_a_bad_scored_or_history_log_and_writes_nothing(gpta_home, tmp_path, log,
                                                                        damage, message):
    store = SessionStore()
    out = export_session(_finished(store, "src"), tmp_path / "out")
    damage_log(out / log, damage, tmp_path)
    with pytest.raises(UsageError) as info:
        import_session(store, out, name="imp")
    assert message in str(info.value.problem) and log in info.value.problem
    assert not store.session_dir("imp").exists()


@pytest.mark.parametrize("what", ["huge integer", "deep nesting"])
def test_import_refuses_json_that_python_cannot_parse_as_unreadable(gpta_home, tmp_path, what):
    """An integer of over 4,300 digits (ValueError) or nesting past the recursion limit
    (RecursionError), in a log or in session.json: one UsageError, nothing written."""
    store = SessionStore()
    out = export_session(_finished(store, "src"), tmp_path / "out")
    value = b"9" * 5000 if what == "huge integer" else b"[" * 100_000 + b"]" * 100_000
    for target in (out / SCORED_FILE, out / "session.json"):
        original = target.read_bytes()
        if target.name == "session.json":
            target.write_bytes(original.rstrip()[:-1] + b', "x": ' + value + b"}")
        else:
            target.write_bytes(original + b'{"kind": "prefix_scored", "x": ' + value + b"}\n")
        with pytest.raises(UsageError) as info:
            import_session(store, out, name="imp")
        assert target.name in info.value.problem
        assert "not JSON" in info.value.problem or "invalid JSON" in info.value.problem
        assert not store.session_dir("imp").exists()
        target.write_bytes(original)


def test_a_record_id_that_is_a_digit_but_not_a_number_is_refused_not_a_traceback(gpta_home,
                                                                                  tmp_path):
    """'²'.isdigit() is True but int('²') raises: a crafted schema-4 database (or a format-3
    export) with such a history id was a ValueError in TinyDB / the import."""
    store = SessionStore()
    done = _finished(store, "sq")
    out = export_session(done, tmp_path / "out")
    done.close()
    _as_schema_4(store, "sq")
    db = store.session_dir("sq") / DB_FILE
    data = json.loads(db.read_text())
    data["history"]["²"] = data["history"].pop("1")
    db.write_text(json.dumps(data))
    with pytest.raises(GptaError, match="not a number"):
        store.open("sq")
    payload = json.loads((out / "session.json").read_text())
    payload["database"]["history"] = {"²": _lines(out / HISTORY_FILE)[0]}
    payload["format_version"] = 3
    (out / "session.json").write_text(json.dumps(payload))
    (out / HISTORY_FILE).unlink()
    with pytest.raises(UsageError, match="not a number"):
        import_session(store, out, name="imp")
    assert not store.session_dir("imp").exists()


def test_import_reads_session_json_as_the_logs_never_through_a_link(gpta_home, tmp_path,
                                                                     monkeypatch):
    """An export's session.json was read through a symbolic link and whole, whatever its
    size; its logs never were. Now it is held to the same rules (regular file, size cap)."""
    from sessions import export as export_module

    store = SessionStore()
    out = export_session(_finished(store, "src"), tmp_path / "out")
    target = tmp_path / "elsewhere.json"
    target.write_bytes((out / "session.json").read_bytes())
    (out / "session.json").unlink()
    (out / "session.json").symlink_to(target)
    with pytest.raises(UsageError, match="symbolic link"):
        import_session(store, out, name="imp")
    (out / "session.json").unlink()
    (out / "session.json").write_bytes(target.read_bytes())
    monkeypatch.setattr(export_module, "MAX_SESSION_JSON_BYTES", 2**20)
    (out / "session.json").write_bytes(target.read_bytes().rstrip()[:-1]
                                       + b', "pad": "' + b"x" * 2**20 + b'"}')
    with pytest.raises(UsageError, match="larger than"):
        import_session(store, out, name="imp")
    assert not store.session_dir("imp").exists()
    (out / "session.json").write_bytes(target.read_bytes())
    assert store.open(import_session(store, out, name="imp")).status == "finished"


@pytest.mark.parametrize("where", ["database", "ta log", "scored log"])
def test_a_lone_surrogate_escape_is_read_as_the_replacement_character(gpta_home, tmp_path, where):
    """`"\\ud800"` is valid JSON but text no UTF-8 writer can write: export (and a rewrite)
    ended in a UnicodeEncodeError traceback. Read, it becomes U+FFFD; a valid pair stays."""
    from sessions.losslog import TA_FILE

    store = SessionStore()
    session_dir = _finished(store, "src").dir
    if where == "database":
        path = session_dir / DB_FILE
        data = json.loads(path.read_text())
        data["session"]["1"]["best"]["prefix"] = "Read \ud800 this \U0001F600"
        path.write_text(json.dumps(data))  # ensure_ascii: the \ud800 escape
    else:
        path = session_dir / (TA_FILE if where == "ta log" else SCORED_FILE)
        lines = path.read_bytes().splitlines()
        record = json.loads(lines[0])
        key = next(k for k, v in record.items() if isinstance(v, str))
        record[key] = "x\ud800y \U0001F600"
        lines[0] = json.dumps(record).encode()  # ensure_ascii: escapes, pair as two escapes
        path.write_bytes(b"\n".join(lines) + b"\n")
    assert rb"\ud800" in path.read_bytes()
    out = export_session(store.open("src"), tmp_path / "out")
    text = "".join(p.read_text(encoding="utf-8") for p in out.rglob("*") if p.is_file()
                   and p.suffix in (".json", ".jsonl", ".md", ".csv", ".toml"))
    assert "\ufffd" in text and "\U0001F600" in text
    assert import_session(store, out, name="imp") == "imp"  # and back in, strictly
