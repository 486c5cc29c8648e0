"""Damaged and hostile files (issue 13): wrong-shaped session databases, markup and control
bytes in stored text, odd config values and datasets. Readers never fall over: every failure
is a GptaError with one line, and listing always works."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import GptaError
from sessions.export import export_session, import_session
from sessions.store import DB_FILE, SessionStore

from test_sessions_helpers import SyntheticRun, feed, small_config

HOSTILE = "evil [/x] [bold]loud[/bold] \x1b[31mred\x1b[0m \x07bell"
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _finished(home: Path, name: str = "good") -> Path:
    store = SessionStore(home)
    handle = store.create(small_config(name))
    feed(handle, SyntheticRun(handle.config).events())
    handle.close()
    return store.session_dir(name) / DB_FILE


_BASE: dict = {}


def _base_db(tmp_path_factory) -> dict:
    """A complete finished session's database (made once)."""
    if not _BASE:
        path = _finished(tmp_path_factory.mktemp("base-home"))
        _BASE.update(json.loads(path.read_text()))
    return copy.deepcopy(_BASE)


def _paths(obj, prefix=()):
    """Every key path in a JSON value (dict keys and list indexes)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            yield from _paths(v, prefix + (i,))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8)


def _mutate(db: dict, path: tuple, value, delete: bool) -> dict:
    if not path:
        return value if isinstance(value, dict) else {"meta": db.get("meta"), "x": value}
    parent = db
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = value
    return db


def _read_everything(home: Path, name: str) -> None:
    """What list, show, export, the TUI and resume read, through the public readers."""
    from gpta_tui.run_control import load_past

    store = SessionStore(home)
    [summary] = store.list()  # never raises: a bad session is listed as unreadable
    assert summary.status != "unreadable" or summary.error
    try:
        handle = store.open(name)
    except GptaError:
        assert summary.status == "unreadable"
        return
    try:
        handle.record(), handle.config, handle.last_state, handle.status
        handle.loss_points(), handle.validations(), handle.prefix_accuracy()
        handle.scored_prefixes(), handle.history(), handle.windows(), handle.jobs()
        handle.ta_calls(True), handle.ta_models(), handle.descriptions(), handle.notices()
        handle.events()
    finally:
        handle.close()
    load_past(home, name)  # the TUI's reducer replays every stored event


@SETTINGS
@given(data=st.data(), value=json_values, delete=st.booleans())
def test_random_shapes_never_crash_the_session_readers(tmp_path_factory, data, value, delete):
    db = _base_db(tmp_path_factory)
    path = data.draw(st.sampled_from(sorted(_paths(db), key=repr)))
    db = _mutate(db, path, value, delete)
    home = tmp_path_factory.mktemp("home")
    folder = home / "sessions" / "s"
    folder.mkdir(parents=True)
    (folder / DB_FILE).write_text(json.dumps(db))
    _read_everything(home, "s")


@SETTINGS
@given(data=st.data(), value=json_values, delete=st.booleans())
def test_random_shapes_never_crash_import(tmp_path_factory, data, value, delete):
    db = _base_db(tmp_path_factory)
    payload = {"format": "gpta-session-export", "format_version": 1, "name": "imp", "database": db}
    path = data.draw(st.sampled_from(sorted(_paths(payload), key=repr)))
    payload = _mutate(payload, path, value, delete)
    src = tmp_path_factory.mktemp("export")
    (src / "session.json").write_text(json.dumps(payload))
    home = tmp_path_factory.mktemp("home")
    store = SessionStore(home)
    try:
        name = import_session(store, src, name="imp")
    except GptaError:
        assert not store.session_dir("imp").exists()
        return
    _read_everything(home, name)


@pytest.mark.parametrize("damage", [
    lambda db: db.update(loss=[1, 2]),
    lambda db: db["session"]["1"].update(status=7),
    lambda db: db.pop("session"),
    lambda db: db["validations"]["1"].update(metrics={"accuracy": "high"}),
    lambda db: db.update(ta_calls={"1": {"kind": "ta_request", "responses": {"a": 1}}}),
])
def test_list_and_tui_survive_one_wrong_shaped_session(gpta_home, capsys, damage):
    from gpta_tui.cli import main

    _finished(gpta_home, "good")
    bad = _finished(gpta_home, "bad")
    db = json.loads(bad.read_text())
    damage(db)
    bad.write_text(json.dumps(db))
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "good" in out and "finished" in out and "unreadable" in out
    assert "wrong shape" in out or "schema" in out
    for command in (["show", "bad"], ["audit", "bad"], ["export", "bad", str(gpta_home / "x")], ["resume", "bad"],
                    ["prefixes", "export", "bad", str(gpta_home / "p.json")]):
        assert main(command) == 1, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("gpta: error: session database"), err
