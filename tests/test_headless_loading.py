"""`gpta run`'s loading progress: a percentage and ETA only from a remembered load of the same
models (the TUI's prefs), the time so far otherwise, and every load timed for the next one."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from test_tui_dashboard import canned_events  # noqa: E402

from engine import events as ev  # noqa: E402
from gpta_tui.headless import HeadlessView  # noqa: E402
from gpta_tui.prefs import Prefs, load_key  # noqa: E402

CONFIG = next(e for e in canned_events() if isinstance(e, ev.RunStarted)).config


def view(tmp_path, terminal: bool = False) -> tuple[HeadlessView, Prefs, Console]:
    console = Console(file=io.StringIO(), width=120, force_terminal=terminal, record=True)
    prefs = Prefs(tmp_path / "tui.json")
    v = HeadlessView(console=console, clock=lambda: 0.0)
    v.expect_load(CONFIG, resumed=False, prefs=prefs)
    return v, prefs, console


def started(ts: float) -> ev.RunStarted:
    return ev.RunStarted(name="demo", mode="gpta", config=CONFIG, device="cpu",
                         metric="accuracy", label_names=["a", "b"], ts=ts)


def test_never_timed_shows_no_percentage_then_remembers_the_load(tmp_path):
    v, prefs, console = view(tmp_path)
    v(ev.PhaseChanged(epoch=1, phase="setup", total=0, ts=100.0))
    assert v.load_status(now=112.0) == (None, "0:12")  # time so far, no invented %
    v(started(ts=140.0))
    v.close()
    assert v.loaded_in == 40.0
    key = load_key(CONFIG, resumed=False, dequantized=False)
    assert Prefs(tmp_path / "tui.json").load_times == {key: 40.0}  # on disk, for next time
    text = console.export_text()
    assert "loading the data and the models\n" in text and "models loaded in 0:40\n" in text


def test_a_remembered_load_gives_percentage_and_eta(tmp_path):
    key = load_key(CONFIG, resumed=False, dequantized=False)
    Prefs(tmp_path / "tui.json").remember_load(key, 80.0)
    v, prefs, console = view(tmp_path)
    v(ev.PhaseChanged(epoch=1, phase="setup", total=0, ts=100.0))
    fraction, text = v.load_status(now=120.0)
    assert fraction == 0.25 and text == "25%  ETA 1:00"
    fraction, text = v.load_status(now=190.0)  # slower than last time: never 100% early
    assert fraction == 0.99 and text == "99%  over by 0:10"
    v(started(ts=160.0))
    v.close()
    text = console.export_text()
    assert "took 1:20 last time" in text and "models loaded in 1:00 (last time 1:20)" in text
    assert prefs.load_times[key] == 60.0


def test_first_dequantization_counts_its_typical_time_and_is_remembered_apart(tmp_path):
    v, prefs, _ = view(tmp_path, terminal=True)
    v(ev.PhaseChanged(epoch=1, phase="setup", total=0, ts=100.0))
    v(ev.Notice(level="info", message="dequantizing Gemma 3 270M (first run only, ~2 min)",
                ts=110.0))
    fraction, text = v.load_status(now=140.0)  # expected: 10 s before it + 120 s typical
    assert round(fraction, 4) == round(40 / 130, 4) and text == "31%  ETA 1:30"
    v(started(ts=200.0))
    v.close()
    assert prefs.load_times == {load_key(CONFIG, resumed=False, dequantized=True): 100.0}


def test_without_expect_load_nothing_is_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTA_CONFIG", str(tmp_path))
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    v = HeadlessView(console=console)
    v(ev.PhaseChanged(epoch=1, phase="setup", total=0, ts=100.0))
    v(started(ts=130.0))
    v.close()
    assert not (tmp_path / "tui.json").exists() and v.loaded_in == 30.0
