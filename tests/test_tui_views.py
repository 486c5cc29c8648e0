"""Fast pilot tests of the dashboard's views on the canned run (no engine): the prefix detail
and view, copying, dialogue windows, the responsive layout and contextual keys."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from test_tui_dashboard import PREFIXES, canned_events  # noqa: E402
from test_tui_snapshots import NOW  # noqa: E402

from gpta_tui.app import GptaApp  # noqa: E402
from gpta_tui.dashboard import build_state  # noqa: E402
from gpta_tui.screens.run import RunScreen  # noqa: E402
from gpta_tui.screens.text_view import TextViewScreen  # noqa: E402
from gpta_tui.widgets.history_table import HistoryTable  # noqa: E402
from gpta_tui.widgets.prefix_detail import PrefixDetail  # noqa: E402
from gpta_tui.widgets.windows_panel import WindowsPanel  # noqa: E402

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
