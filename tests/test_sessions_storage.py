"""AtomicJSONStorage: writes are all-or-nothing, even under SIGKILL; damage is reported."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.errors import GptaError
from sessions import storage
from sessions.storage import AtomicJSONStorage, BufferedStorage, DatabaseUnreadable
from sessions.store import DB_FILE, SessionStore

from test_sessions_helpers import kill_hard, small_config

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent


def test_roundtrip_and_missing_file(tmp_path):
    s = AtomicJSONStorage(tmp_path / "db.json")
    assert s.read() is None
    s.write({"t": {"1": {"x": "ünïcode", "n": 1.5}}})
    assert s.read() == {"t": {"1": {"x": "ünïcode", "n": 1.5}}}
    assert storage.stale_temp_files(tmp_path / "db.json") == []


def test_unserialisable_data_leaves_old_content(tmp_path):
    path = tmp_path / "db.json"
    s = AtomicJSONStorage(path)
    s.write({"t": {"1": {"v": 1}}})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        s.write({"t": {"1": {"v": object()}}})
    assert path.read_bytes() == before
    assert storage.stale_temp_files(path) == []


def test_exception_mid_write_leaves_old_content(tmp_path, monkeypatch):
    path = tmp_path / "db.json"
    s = AtomicJSONStorage(path)
    s.write({"t": {"1": {"v": 1}}})
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        s.write({"t": {"1": {"v": 2, "big": "x" * 100_000}}})
    assert path.read_bytes() == before
    assert storage.stale_temp_files(path) == []
    monkeypatch.undo()
    assert s.read() == {"t": {"1": {"v": 1}}}


def test_read_only_storage_refuses_to_write(tmp_path):
    path = tmp_path / "db.json"
    AtomicJSONStorage(path).write({"a": {}})
    with pytest.raises(GptaError, match="read-only"):
        AtomicJSONStorage(path, read_only=True).write({"b": {}})
    assert json.loads(path.read_text()) == {"a": {}}


@pytest.mark.parametrize("content, reason", [
    (b'{"meta": {"1": {"sch', "invalid JSON"),
    (b"", "empty"),
    (b"[1, 2]", "expected a JSON object"),
    (b"\xff\xfe\x00", "invalid JSON"),
])
def test_damaged_file_is_reported_not_reset(tmp_path, content, reason):
    path = tmp_path / "db.json"
    path.write_bytes(content)
    with pytest.raises(DatabaseUnreadable, match=reason) as info:
        AtomicJSONStorage(path).read()
    assert str(path) in str(info.value)
    assert path.read_bytes() == content


def test_buffered_storage_writes_only_on_flush(tmp_path):
    path = tmp_path / "db.json"
    inner = AtomicJSONStorage(path)
    buf = BufferedStorage(inner)
    assert buf.read() is None
    buf.write({"t": {"1": {"v": 1}}})
    assert buf.dirty and not path.exists()
    assert buf.flush() is True
    assert inner.read() == {"t": {"1": {"v": 1}}}
    assert buf.flush() is False


CHILD = textwrap.dedent("""
    import sys
    sys.path[:0] = [{root!r}, {tests!r}]
    from pathlib import Path
    from engine import events as ev
    from sessions.store import SessionStore
    from test_sessions_helpers import small_config

    store = SessionStore(Path({home!r}))
    h = store.open("crash", write=True) if store.exists("crash") else store.create(small_config("crash"))
    h.flush_steps = 1
    points = h.loss_points()
    step = points[-1]["step"] if points else 0
    while True:
        step += 1
        h.listener(ev.Notice(level="info", message="padding " * 300))
        h.listener(ev.TrainStep(epoch=1, step=step, epoch_step=step, epoch_steps=10**9,
                                loss=1.0 / step, lr=0.1))
        print(step, flush=True)
""")


def test_sigkill_during_writes_never_corrupts(tmp_path):
    """Kill a writer at random moments, several times: the database always loads, and the
    loss curve has every step exactly once up to the last one written."""
    home = tmp_path / "home"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT), tests=str(TESTS_DIR), home=str(home)))
    rng = random.Random(1234)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    last_seen = 0
    for _ in range(6):
        child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
        try:
            for _ in range(rng.randint(3, 30)):
                line = child.stdout.readline()
                assert line, child.stderr.read()
                last_seen = int(line)
            for _ in range(rng.randint(0, 3000)):  # spin a little: land inside a write
                pass
        finally:
            kill_hard(child)
        store = SessionStore(home)
        reader = store.open("crash")
        steps = [p["step"] for p in reader.loss_points()]
        assert steps == list(range(1, len(steps) + 1))
        assert len(steps) >= last_seen  # every step reported as written is on disk
        assert reader.status == "interrupted"
    assert json.loads((home / "sessions" / "crash" / DB_FILE).read_text())["meta"]
    # the next writer cleans temp files a killed writer may have left
    SessionStore(home).open("crash", write=True).close()
    assert storage.stale_temp_files(home / "sessions" / "crash" / DB_FILE) == []


def test_store_create_writes_a_loadable_database(gpta_home):
    store = SessionStore()
    with store.create(small_config("fresh")) as h:
        assert (h.dir / DB_FILE).is_file()
    assert store.open("fresh").record()["name"] == "fresh"
