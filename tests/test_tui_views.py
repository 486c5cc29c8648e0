"""Fast pilot tests of the dashboard's views on the canned run (no engine): the prefix detail
and view, copying, dialogue windows, the responsive layout and contextual keys."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console
from textual.app import App

sys.path.insert(0, str(Path(__file__).parent))
from test_tui_dashboard import PREFIXES, T0, canned_events  # noqa: E402
from test_tui_snapshots import NOW  # noqa: E402

from gpta_tui.app import GptaApp  # noqa: E402
from gpta_tui.dashboard import build_state  # noqa: E402
from gpta_tui.screens.run import RunScreen  # noqa: E402
from gpta_tui.screens.text_view import TextViewScreen  # noqa: E402
from gpta_tui.widgets.history_panel import HistoryPanel  # noqa: E402
from gpta_tui.widgets.history_table import HistoryTable  # noqa: E402
from gpta_tui.widgets.messages import OpenTextView  # noqa: E402
from gpta_tui.widgets.prefix_detail import PrefixDetail  # noqa: E402
from gpta_tui.widgets.windows_panel import WindowsPanel, window_text  # noqa: E402

pytestmark = pytest.mark.anyio


def canned_app(events=None) -> GptaApp:
    state = build_state(canned_events() if events is None else events)
    return GptaApp(start=RunScreen(state, None, clock=lambda: NOW), clock=lambda: NOW)


def screen_text(widget) -> str:
    """A Static's content as plain text (wide, so nothing wraps)."""
    console = Console(width=400, record=True, file=io.StringIO())
    console.print(widget.content)
    return " ".join(console.export_text().split())


def run_screen(app) -> RunScreen:
    return next(s for s in app.screen_stack if isinstance(s, RunScreen))


async def test_the_selected_prefix_is_shown_in_full_and_follows_the_cursor():
    app = canned_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        screen = run_screen(app)
        table = screen.query_one(HistoryTable)
        table.focus()
        detail = screen.query_one(PrefixDetail)
        ranked = [p for p, _ in screen.state.sorted_history]
        assert ranked[0] == PREFIXES[5]
        # The table cuts the best prefix at 80 columns; the detail carries all of it.
        assert table.prefixes[0].endswith("…") and len(table.prefixes[0]) < len(ranked[0])
        assert ranked[0] in screen_text(detail) and "TA request #2" in screen_text(detail)
        await pilot.press("down", "down", "down")
        await pilot.pause()
        assert ranked[3] in screen_text(detail) and "▶ training" in screen_text(detail)
        await pilot.press("down")
        await pilot.pause()
        assert ranked[4] in screen_text(detail)
        assert "carried over" in screen_text(detail)  # scored without a TA request (id -1)


async def test_enter_opens_the_prefix_view_and_y_copies():
    app = canned_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        screen = run_screen(app)
        screen.query_one(HistoryTable).focus()
        await pilot.press("down")
        await pilot.press("y")
        assert app.clipboard == PREFIXES[3]  # rank 2: 0.667
        await pilot.press("enter")
        await pilot.pause()
        view = app.screen
        assert isinstance(view, TextViewScreen) and view.text == PREFIXES[3]
        body = screen_text(view.query_one("#text-view-body"))
        assert PREFIXES[3] in body and "0.6670" in body and "TA request #2" in body
        assert "beat the best shown" in body and "yes" in body
        app.copy_to_clipboard("")
        await pilot.press("y")
        assert app.clipboard == PREFIXES[3]
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen


async def test_dialogue_windows_open_in_full_and_copy():
    app = canned_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        screen = run_screen(app)
        screen.query_one("#window-list").focus()
        await pilot.press("home")
        await pilot.press("y")
        window = screen.query_one(WindowsPanel).windows[0]
        assert app.clipboard.startswith("system:") and window.user in app.clipboard
        assert window.assistant in app.clipboard
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, TextViewScreen)
        assert "e1·1" in app.screen.title_text and app.screen.text == app.clipboard


class _Host(App):
    """A bare app hosting one panel; it records the OpenTextView messages that reach it."""

    def __init__(self, panel) -> None:
        super().__init__()
        self.panel, self.asked = panel, []

    def compose(self):
        yield self.panel

    def on_open_text_view(self, message: OpenTextView) -> None:
        self.asked.append(message)


@pytest.mark.parametrize("which", ["history", "windows"])
async def test_panels_ask_their_host_for_the_text_view_and_push_no_screen(which):
    """Widgets never push screens (nor import them): Enter posts OpenTextView, which bubbles
    up to the host; RunScreen turns it into the TextViewScreen the two tests above see."""
    state = build_state(canned_events())
    panel = HistoryPanel() if which == "history" else WindowsPanel()
    app = _Host(panel)
    async with app.run_test(size=(120, 36)) as pilot:
        panel.update_from(state)
        await pilot.pause()
        if which == "history":
            panel.table.focus()
            await pilot.press("down")
        else:
            panel.query_one("#window-list").focus()
            await pilot.press("home")
        await pilot.press("enter")
        await pilot.pause()
        assert len(app.screen_stack) == 1  # the panel pushed nothing itself
        assert len(app.asked) == 1
        asked = app.asked[0]
        console = Console(width=400, record=True, file=io.StringIO())
        console.print(asked.renderable)
        body = " ".join(console.export_text().split())
        if which == "history":
            assert (asked.title, asked.plain_text, asked.copy_label) == (
                "Prefix #2", PREFIXES[3], "the prefix")
            assert PREFIXES[3] in body and "TA request #2" in body
        else:
            window = panel.windows[0]
            assert (asked.title, asked.plain_text, asked.copy_label) == (
                "Dialogue window e1·1", window_text(window), "window e1·1")
            assert "epoch 1 · window 1" in body and "assistant: the next prefix" in body


def header_text(state, width: int = 200) -> str:
    from gpta_tui.widgets.run_header import RunHeader

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(RunHeader.render_state(state, NOW, width))
    return console.export_text()


def test_header_shows_setup_progress_while_loading():
    from engine.events import Notice, PhaseChanged

    from gpta_tui.dashboard import DashboardState

    state = DashboardState("cold", {"loop": {"epochs": 2}})
    state.status = "loading"
    state.apply(PhaseChanged(epoch=1, phase="setup", ts=NOW - 37))
    state.apply(Notice(level="info", message="dequantizing Gemma 3 270M (first run only, ~2 min)",
                       ts=NOW - 30))
    text = header_text(state)
    assert "loading" in text and "dequantizing Gemma 3 270M" in text and "0:37" in text


@pytest.mark.parametrize("width", [76, 96, 156])
def test_header_keeps_phase_progress_best_and_test_at_every_width(width):
    from test_tui_snapshots import finished_events

    live = header_text(build_state(canned_events()), width)
    assert "e2/2" in live or "epoch 2/2" in live
    assert "6/12" in live and "0.6880" in live and "val" in live
    done = header_text(build_state(finished_events()), width)
    assert "test" in done and "0.6917" in done and "0.7083" in done


def test_paused_time_is_not_elapsed_time():
    from engine.events import RunStarted, StatusChanged, TrainStep

    from gpta_tui.dashboard import DashboardState

    state = DashboardState("p")
    state.apply(RunStarted(name="p", mode="gpta", config={}, device="cpu", metric="accuracy",
                           label_names=[], ts=100.0))
    state.apply(TrainStep(epoch=1, step=1, epoch_step=1, epoch_steps=9, loss=1.0, lr=0.1, ts=110.0))
    state.apply(StatusChanged(status="paused", ts=120.0))
    state.apply(StatusChanged(status="running", ts=400.0))  # paused for 280 s
    state.apply(TrainStep(epoch=1, step=2, epoch_step=2, epoch_steps=9, loss=1.0, lr=0.1, ts=405.0))
    assert state.elapsed_s() == pytest.approx(25.0, abs=1e-9)


def test_one_status_vocabulary():
    from sessions.status import ENGINE_TO_SESSION, resumable, session_status, shown
    from sessions.store import _STATUS_MAP

    assert _STATUS_MAP is ENGINE_TO_SESSION  # the store uses the one definition
    assert session_status("stopped") == "paused" and shown("paused", live=False) == "stopped"
    assert shown("paused", live=True) == "paused" and shown(session_status("stopped"), False) == "stopped"
    assert resumable("stopped") and resumable("failed") and not resumable("finished")


async def test_contextual_keys_of_an_ended_run_and_the_compact_tabs():
    from textual.widgets import Footer

    app = canned_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        screen = run_screen(app)
        assert screen.compact and screen.query_one(Footer)
        # no live run: the footer offers clone/new, never pause/stop
        shown_keys = {b.binding.action for b in screen.active_bindings.values()
                      if b.binding.show and b.enabled and screen.check_action(b.binding.action, ())}
        assert {"clone", "new", "back"} <= shown_keys and "stop" not in shown_keys
        assert not screen.check_action("toggle_pause", ()) and not screen.check_action("stop", ())
        await pilot.press("3")
        await pilot.pause()
        assert screen.active_tab == "windows" and screen.query_one("#windows").display
        assert not screen.query_one("#history-panel").display
        await pilot.press("5")
        await pilot.pause()
        assert screen.query_one("#log").display and not screen.query_one("#run-grid").display
        await pilot.resize_terminal(160, 48)
        await pilot.pause()
        assert not screen.compact and screen.query_one("#history-panel").display
        await pilot.resize_terminal(70, 20)
        await pilot.pause()
        assert type(app.screen).__name__ == "TooSmallScreen"
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert app.screen is screen


async def test_palette_command_writes_the_curves_as_png_and_csv(tmp_path):
    import csv
    import time

    app = canned_app()
    target = tmp_path / "curves"
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        run_screen(app).action_export_curves(str(target))
        deadline = time.monotonic() + 60
        while not (target / "curves.png").exists() and time.monotonic() < deadline:
            await pilot.pause(0.1)
        await app.workers.wait_for_complete()
    assert (target / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loss = list(csv.reader((target / "loss.csv").open()))
    assert loss[0] == ["step", "epoch", "loss"] and len(loss) == 1 + 18
    val = list(csv.reader((target / "validation.csv").open()))
    assert val[0] == ["epoch", "step", "val_accuracy", "best"]
    assert val[1] == ["1", "12", "0.625", "1"]  # epoch 1 holds the best (its best prefix)


async def test_the_footer_rebuilds_only_when_its_keys_change():
    """Opening and closing a dialog moves focus and re-signals the bindings; the footer keeps
    its keys (rebuilding them was most of the key latency), but a run going live swaps them."""
    from types import SimpleNamespace

    from textual.widgets._footer import FooterKey

    from gpta_tui.widgets.key_footer import KeyFooter

    def keys(footer) -> set[str]:
        return {k.description for k in footer.query(FooterKey) if k.description}

    app = canned_app()
    async with app.run_test(size=(130, 40)) as pilot:
        await pilot.pause()
        screen = run_screen(app)
        footer = screen.query_one(KeyFooter)
        await pilot.pause()
        before, built = keys(footer), footer.rebuilds
        assert {"Clone config", "New run", "Sessions"} <= before and "Pause/resume" not in before
        for _ in range(4):
            await pilot.press("question_mark")
            await pilot.pause()
        assert app.screen is screen and app.focused is screen.query_one(HistoryTable)
        assert footer.rebuilds == built and keys(footer) == before
        screen.controller = SimpleNamespace(running=True)  # the run goes live
        screen.sync(set())
        await pilot.pause()
        await pilot.pause()
        assert footer.rebuilds == built + 1
        assert {"Pause/resume", "Stop", "Save"} <= keys(footer) and "New run" not in keys(footer)


async def test_the_log_rewraps_its_lines_when_the_terminal_is_resized():
    from engine.events import Notice

    from gpta_tui.widgets.log_pane import LogPane

    words = " ".join(f"word{i:03d}" for i in range(60))  # ~480 characters, one entry
    app = canned_app(canned_events() + [Notice(level="warning", message=words, ts=NOW - 1)])

    def shown(log) -> tuple[int, str]:
        """(widest line, every word the lines carry, in order)."""
        texts = ["".join(seg.text for seg in strip) for strip in log.lines]
        return max(len(t.rstrip()) for t in texts), " ".join(" ".join(texts).split())

    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        log = run_screen(app).query_one(LogPane)
        for size in ((120, 36), (160, 48), (200, 50)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
            widest, text = shown(log)
            width = log.scrollable_content_region.width
            assert widest <= width
            assert words in text  # the long entry, whole, at every width
            # ... wrapped to this width: its widest line fills most of the pane
            assert widest > width - len("word000 ")
        at_200 = len(log.lines)
        await pilot.resize_terminal(120, 36)
        await pilot.pause()
        assert len(log.lines) > at_200  # narrower: more lines
        await pilot.resize_terminal(80, 24)  # compact: the log is a tab of its own
        await pilot.press("5")
        await pilot.pause()
        widest, text = shown(log)
        assert words in text and widest <= log.scrollable_content_region.width < 80


def loading_state(estimates: dict):
    from engine.events import PhaseChanged

    from gpta_tui.dashboard import DashboardState

    state = DashboardState("warm", {"loop": {"epochs": 2}})
    state.status = "loading"
    state.load_estimates = estimates
    state.apply(PhaseChanged(epoch=1, phase="setup", ts=NOW - 30))
    return state


def test_loading_shows_a_percentage_and_eta_from_the_last_load():
    from engine.events import Notice

    assert "%" not in header_text(loading_state({}))  # never timed: elapsed only
    text = header_text(loading_state({"plain": 40.0}))
    assert "75%" in text and "ETA 0:10" in text and "0:30" in text
    late = loading_state({"plain": 20.0})
    assert "99%" in header_text(late) and "over by 0:10" in header_text(late)
    # The first dequantization: its typical time, counted from when it began.
    first = loading_state({"plain": 40.0})
    first.apply(Notice(level="info", message="dequantizing Gemma 3 270M (first run only, ~2 min)",
                       ts=NOW - 20))
    assert first.load_expected_s() == pytest.approx(10.0 + 120.0)
    assert "23%" in header_text(first) and "ETA 1:40" in header_text(first)
    timed = loading_state({"plain": 40.0, "dequantize": 60.0})
    timed.apply(Notice(level="info", message="dequantizing Gemma 3 270M", ts=NOW - 20))
    assert "50%" in header_text(timed)


def test_a_finished_load_is_timed_and_keyed_by_what_it_loaded():
    from engine.events import Notice, RunStarted

    from gpta_tui.prefs import load_key

    state = loading_state({})
    state.apply(Notice(level="info", message="dequantizing Gemma 3 270M", ts=NOW - 20))
    state.apply(RunStarted(name="warm", mode="gpta", config={"mode": "gpta"}, device="cpu",
                           metric="accuracy", label_names=[], ts=NOW + 12))
    assert state.last_load == (pytest.approx(42.0), True) and not state.loading
    config = {"mode": "gpta", "student": {"model": "m", "tuning": "full"},
              "ta": {"backend": "local", "model": "gemma-3-270m", "base_url": "https://u:pw@h/"}}
    key = load_key(config, resumed=False, dequantized=True)
    assert "gemma-3-270m" in key and "dequantize" in key and "pw" not in key
    assert load_key({**config, "mode": "baseline"}, False, False) != load_key(config, False, False)
    assert load_key(config, True, False) != load_key(config, False, False)


def test_prefs_survive_a_damaged_file_and_keep_no_bad_values(tmp_path):
    from gpta_tui.prefs import Prefs

    path = tmp_path / "tui.json"
    for junk in ("{not json", "[1, 2]", '{"theme": 5, "load_times": [1]}', "\x00\xff"):
        path.write_text(junk, encoding="latin-1")
        prefs = Prefs(path)
        assert prefs.theme is None and prefs.load_times == {}
    path.write_text('{"theme": "nord", "load_times": {"a": 12.5, "b": -1, "c": "9", '
                    '"d": 1e999, "e": true}}')
    prefs = Prefs(path)
    assert prefs.theme == "nord" and prefs.load_times == {"a": 12.5}
    prefs.remember_load("f", 3.25)
    assert Prefs(path).load_times == {"a": 12.5, "f": 3.2}
    assert not list(tmp_path.glob(".tui.json.*"))  # no temporary file left behind


async def test_the_theme_is_remembered_between_launches(tmp_path):
    from gpta_tui.prefs import Prefs

    path = tmp_path / "tui.json"
    app = GptaApp(start=RunScreen(build_state(canned_events()), None, clock=lambda: NOW),
                  clock=lambda: NOW, prefs=Prefs(path))
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        app.theme = "nord"
        await pilot.pause()
    assert Prefs(path).theme == "nord"
    again = GptaApp(start=RunScreen(build_state(canned_events()), None, clock=lambda: NOW),
                    clock=lambda: NOW, prefs=Prefs(path))
    async with again.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        assert again.theme == "nord"
    path.write_text('{"theme": "no-such-theme"}')
    third = GptaApp(prefs=Prefs(path), start=RunScreen(build_state(canned_events()), None))
    async with third.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        assert third.theme != "no-such-theme"


async def test_description_length_counter_and_the_help_of_every_field():
    from textual.widgets import Static, TextArea

    from gpta_tui import form
    from gpta_tui.screens.description import DescriptionScreen
    from test_tui_snapshots import form_app

    app = form_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        helps = " ".join(str(label.content) for label in screen.query(".field-help"))
        assert "CSV" in helps and "label column" in helps  # the Dataset field explains itself
        size = screen.query_one("#size-description", Static)
        assert "0 characters" in screen_text(size)
        screen.query_one("#f-description", TextArea).text = "x" * 700
        await pilot.pause()
        assert "700 characters" in screen_text(size) and "~175 tokens" in screen_text(size)
        assert "long" in screen_text(size)
    app = canned_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        app.push_screen(DescriptionScreen("Tweets.", 1, 1))
        await pilot.pause()
        counter = app.screen.query_one("#description-size", Static)
        assert "7 characters" in screen_text(counter)
        await pilot.press("a", "b")
        await pilot.pause()
        assert "9 characters" in screen_text(counter)
    assert all(f.help for f in form.FIELDS if f.kind != "int")


@pytest.mark.parametrize("overrides, model, off", [
    ({"ta": {"backend": "scripted"}}, "scripted prefixes (no model)", "scripted TA is never"),
    ({"mode": "frozen-ta"}, "gemma-3-270m", "frozen-ta: the TA is never fine-tuned"),
    ({"mode": "random-prefix"}, "random words (no TA model)", "no TA to fine-tune"),
    ({"ta": {"backend": "openai", "model": "gpt-4o-mini"}}, "gpt-4o-mini", "tunes only a local TA"),
    ({"finetune": {"backend": "none"}}, "gemma-3-270m", "the TA stays the base model"),
])
def test_the_ta_panel_says_what_writes_the_prefixes_and_whether_it_is_tuned(overrides, model, off):
    from engine.config import build_config

    from gpta_tui.dashboard import DashboardState
    from gpta_tui.widgets.finetune_panel import render_finetune

    config = build_config("smoke", overrides={"name": "p", **overrides}).to_dict()
    state = DashboardState("p", config)
    assert state.ta_model_in_use == model
    console = Console(width=300, record=True, file=io.StringIO())
    console.print(render_finetune(state))
    text = console.export_text()
    assert off in text and "fine-tuning is off" in text and "no fine-tune job yet" not in text
    local = DashboardState("q", build_config("smoke", overrides={"name": "q"}).to_dict())
    assert local.finetune_plan() == ("local", "")


async def test_every_tab_stop_shows_where_the_focus_is_by_line_shape():
    """Focus shows as a heavy border on the panel that holds it (a shape, so it survives 256
    and 16 colours), for every Tab stop, the windows' scroll container included."""
    app = canned_app()
    async with app.run_test(size=(130, 40)) as pilot:
        await pilot.pause()
        screen = run_screen(app)
        panels = {p: screen.query_one(f"#{p}") for p in ("history-panel", "windows", "finetune", "log")}
        seen = []
        for _ in range(len(screen.focus_chain)):
            focused = app.focused
            seen.append(focused.id)
            holder = next(p for p, w in panels.items() if w is focused or focused in w.walk_children())
            for name, panel in panels.items():
                assert panel.styles.border_top[0] == ("heavy" if name == holder else "round"), \
                    (focused.id, name)
            detail = screen.query_one("#window-detail")
            assert detail.styles.border_left[0] == ("heavy" if focused is detail else "blank")
            await pilot.press("tab")
            await pilot.pause()
        assert seen == ["history", "window-list", "window-detail", "finetune", "log"]


async def test_the_focused_form_field_shows_by_a_rule():
    from test_tui_snapshots import form_app

    app = form_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        screen.query_one("#f-dataset").focus()
        await pilot.pause()
        assert screen.query_one("#row-dataset").styles.border_left[0] == "heavy"
        assert screen.query_one("#row-student").styles.border_left[0] == "blank"
        await pilot.press("tab")
        await pilot.pause()
        assert screen.query_one("#row-dataset").styles.border_left[0] == "blank"
        assert screen.query_one("#row-description").styles.border_left[0] == "heavy"


def test_the_finish_summary_gives_the_figures_in_one_line():
    from test_tui_snapshots import finished_events

    text = build_state(finished_events()).finish_summary()
    assert text.startswith("Run finished") and "\n" not in text
    assert "test accuracy 0.6917" in text and "best val accuracy 0.7083 (epoch 2)" in text
    assert "run time" in text and "TA requests" in text


async def test_form_errors_show_typed_text_literally():
    """An error quoting what was typed (a path with [brackets]) is shown as text, never parsed
    as markup (it crashed the form with a MarkupError)."""
    from textual.widgets import Input

    from test_tui_snapshots import form_app

    typed = "/no/[bold red]x[/] [link=http://e]y.csv"
    app = form_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        screen.query_one("#f-dataset", Input).value = typed
        await pilot.pause()
        assert typed in screen_text(screen.query_one("#err-dataset"))
        await pilot.press("ctrl+s")  # refused, with a toast quoting the same text
        await pilot.pause()
        assert app.screen is screen


async def test_sessions_preview_follows_the_cursor_escaped_and_hides_when_narrow(monkeypatch,
                                                                               tmp_path):
    from gpta_tui.screens.sessions import SessionsScreen
    from gpta_tui.widgets.session_preview import SessionPreview
    from test_tui_snapshots import sessions_app

    app = sessions_app(monkeypatch, tmp_path)
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SessionsScreen)
        preview = screen.query_one(SessionPreview)
        table = screen.query_one("#sessions-table")
        assert preview.display and preview.region.width > 0
        # beside the preview the table leaves mode and dataset to it, and needs no scrolling
        assert "mode" not in [str(c.key.value) for c in table.columns.values()]
        assert table.virtual_size.width <= table.scrollable_content_region.width
        text = screen_text(preview)
        # the newest session first: its facts, and its prefix as written (markup not parsed)
        assert "sentiment-gpta" in text and "local:gemma-3-270m" in text
        assert "nreimers/MiniLM-L6-H384" in text and "accuracy 0.7125 (epoch 1)" in text
        assert "[bold]positive[/bold]" in text
        await pilot.press("down")
        await pilot.pause()
        text = screen_text(preview)
        assert "yelp-baseline" in text and "accuracy 0.5790, f1 0.5512" in text
        assert "TA none" in text and "best prefix none yet" in text
        await pilot.press("down")
        await pilot.pause()
        assert "session database is unreadable" in screen_text(preview)
        await pilot.resize_terminal(120, 30)
        await pilot.pause()
        assert preview.region.width == 0  # hidden: the table keeps the width
        assert "mode" in [str(c.key.value) for c in table.columns.values()]
        assert len(screen.rows) == 3 and table.row_count == 3


async def test_sessions_sort_and_filter(monkeypatch, tmp_path):
    from textual.widgets import Input

    from test_tui_snapshots import sessions_app

    app = sessions_app(monkeypatch, tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        screen = app.screen
        names = lambda: [r.name for r in screen.rows]  # noqa: E731
        assert names() == ["sentiment-gpta", "yelp-baseline", "broken"]  # newest first
        await pilot.press("o")  # by name
        assert names() == ["broken", "sentiment-gpta", "yelp-baseline"]
        await pilot.press("o")  # by best val, highest first; none last
        assert names() == ["sentiment-gpta", "yelp-baseline", "broken"]
        assert "sorted by best val" in str(screen.query_one("#sessions-title").content)
        await pilot.press("o")  # by status, in the order of sessions.status.SHOWN
        assert names() == ["sentiment-gpta", "yelp-baseline", "broken"]
        await pilot.press("o")  # back to newest first
        await pilot.press("/")
        box = screen.query_one("#sessions-filter", Input)
        assert box.has_focus
        await pilot.press(*"BERT")  # typed keys go to the filter, not to the screen's keys
        await pilot.pause()
        assert names() == ["yelp-baseline"] and "1 of 3" in str(
            screen.query_one("#sessions-title").content)
        await pilot.press("enter")  # back to the table, the filter stays
        assert screen.query_one("#sessions-table").has_focus and names() == ["yelp-baseline"]
        await pilot.press("/", *"zzz")
        await pilot.pause()
        assert names() == [] and "No session matches" in str(
            screen.query_one("#sessions-empty").content)
        await pilot.press("escape")
        await pilot.pause()
        assert names() == ["sentiment-gpta", "yelp-baseline", "broken"] and not box.display


async def test_v_opens_the_run_summary_with_every_figure_and_y_copies_it():
    from engine.events import RunFinished

    from gpta_tui.screens.run_summary import RunSummaryScreen
    from test_tui_snapshots import finished_events

    app = canned_app(finished_events())
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        screen = run_screen(app)
        assert screen.check_action("summary", ())
        await pilot.press("v")
        await pilot.pause()
        assert isinstance(app.screen, RunSummaryScreen)
        text = screen_text(app.screen.query_one("#text-view-body"))
        assert "test accuracy 0.6917 (no prefix 0.6542, +0.0375)" in text
        assert "best val accuracy 0.7083 (epoch 2)" in text and PREFIXES[5] in text
        assert "epochs 2/2" in text and "run time" in text and "2 requests" in text
        await pilot.press("y")
        assert app.clipboard == app.screen.text and "no prefix 0.6542" in app.clipboard
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen
    # A failed run's reason and a TA prefix are shown as written (never parsed as markup).
    events = finished_events()[:-1] + [RunFinished(
        status="failed", best_epoch=1, best_prefix="[bold]x[/] [link=http://e]y",
        val_metrics={}, test_metrics={}, test_metrics_no_prefix={}, summary={},
        reason="CUDA [red]out[/red] of memory", ts=T0 + 200)]
    app = canned_app(events)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        await pilot.press("v")
        await pilot.pause()
        text = screen_text(app.screen.query_one("#text-view-body"))
        assert "failed: CUDA [red]out[/red] of memory" in text and "not measured" in text
        assert "[bold]x[/] [link=http://e]y" in text
    # A live run has no summary yet.
    app = canned_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        assert run_screen(app).state.status not in ("finished", "failed", "stopped")
        assert not run_screen(app).check_action("summary", ())


async def test_q_and_help_work_over_the_run_summary():
    """A modal hides the app's keys; the summary opens by itself when a run ends, so q (quit)
    and ? (help) must still work there."""
    from gpta_tui.screens.help import HelpScreen
    from test_tui_snapshots import finished_events

    app = canned_app(finished_events())
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        await pilot.press("v")
        await pilot.pause()
        # the hint under the summary says what q does there (quit, not close)
        assert str(app.screen.query_one("#text-view-hint").render()) == "y copy · esc close · q quit"
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape", "q")
        await pilot.pause()
    assert app.return_code == 0 and not app.is_running


def _modals() -> dict:
    from gpta_tui.screens.confirm import ConfirmScreen
    from gpta_tui.screens.description import DescriptionScreen
    from gpta_tui.screens.export import ExportScreen

    return {"confirm": lambda: ConfirmScreen("Delete it?", danger=True),
            "export": lambda: ExportScreen("demo-run", "./demo-run-export"),
            "text view": lambda: TextViewScreen("prefix", "Classify:", "Classify:", "the prefix"),
            "description": lambda: DescriptionScreen("Tweets.", 1, 1)}


@pytest.mark.parametrize("name", ["confirm", "export", "text view", "description"])
async def test_q_and_help_work_over_every_modal(name):
    """Every modal is a screens.modal.Modal: q quits and ? opens the help over it, as on the
    screens; a text field with the focus takes them as typed characters instead; a text view
    (read-only) closes on q."""
    from textual.widgets import Button

    from gpta_tui.screens.help import HelpScreen

    app = canned_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        modal = _modals()[name]()
        app.push_screen(modal)
        await pilot.pause()
        if name in ("export", "description"):
            field = modal.query_one("Input, TextArea")
            assert field.has_focus
            await pilot.press("q", "question_mark")
            await pilot.pause()
            assert app.screen is modal and "q?" in str(getattr(field, "value", None)
                                                       or field.text)
            modal.query_one(Button).focus()
            await pilot.pause()
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is modal
        await pilot.press("q")
        await pilot.pause()
        if name == "text view":  # closed, the app still runs
            assert app.screen is not modal and app.is_running
            await pilot.press("q")
            await pilot.pause()
    assert app.return_code == 0 and not app.is_running


async def test_q_over_the_help_closes_it_and_q_over_the_quit_question_answers_it():
    from types import SimpleNamespace

    from gpta_tui.screens.confirm import ConfirmScreen
    from gpta_tui.screens.help import HelpScreen

    app = canned_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("q")  # closes the help, as esc and ? do
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen) and app.is_running
        await pilot.press("q")
        await pilot.pause()
    assert not app.is_running
    # A live run with a fine-tune job asks first; q over that question is "yes" (no second
    # question on top of it).
    stopped = []
    app = canned_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        job = SimpleNamespace(job_id="ftjob-1", backend="openai", status="running")
        app.controller = SimpleNamespace(running=True, name="demo-run",
                                         state=SimpleNamespace(active_job=job, last_load=None),
                                         drain=lambda: set(), stop=lambda: stopped.append(True),
                                         note=lambda *a, **k: {"log"})
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and "ftjob-1" in str(
            app.screen.question)
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen) and stopped == [True]
    assert not app.is_running
