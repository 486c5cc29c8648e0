"""RunScreen: the live dashboard of one session.

It renders the controller's `DashboardState`. The app drains the engine's events a few times a
second and posts `RunScreen.StateChanged` with the sections that moved; each widget redraws
only when its own section changed (the loss chart at most once a second).
"""

from __future__ import annotations

import time
from typing import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.message import Message
from textual.screen import Screen

from gpta_tui.dashboard import DashboardState
from gpta_tui.run_control import RunController
from gpta_tui.screens.confirm import ConfirmScreen
from gpta_tui.screens.description import DescriptionScreen
from gpta_tui.widgets.finetune_panel import FinetunePanel
from gpta_tui.widgets.history_panel import HistoryPanel
from gpta_tui.widgets.history_table import HistoryTable
from gpta_tui.widgets.key_bar import KeyBar
from gpta_tui.widgets.log_pane import LogPane
from gpta_tui.widgets.loss_chart import LossChart
from gpta_tui.widgets.run_header import RunHeader
from gpta_tui.widgets.windows_panel import WindowsPanel


class RunScreen(Screen[None]):
    CSS_PATH = "run.tcss"
    BINDINGS = [
        Binding("p", "toggle_pause", "Pause/resume"),
        Binding("e", "edit_description", "Description"),
        Binding("s", "save", "Save"),
        Binding("x", "stop", "Stop"),
        Binding("escape", "back", "Sessions", show=False),
    ]

    class StateChanged(Message):
        """Posted by the app after it folded new engine events into the state."""

        def __init__(self, changed: set[str]) -> None:
            super().__init__()
            self.changed = changed

    def __init__(self, state: DashboardState, controller: RunController | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.state = state
        self.controller = controller
        self._clock = clock
        self._saves_seen = state.saves
        self._save_pending = False

    @property
    def live(self) -> bool:
        return self.controller is not None and self.controller.running

    def compose(self) -> ComposeResult:
        yield RunHeader(clock=self._clock, id="run-header")
        with Grid(id="run-grid"):
            yield LossChart(id="loss-chart")
            yield HistoryPanel(id="history-panel")
            yield WindowsPanel(id="windows")
            yield FinetunePanel(id="finetune")
        yield LogPane(id="log")
        yield KeyBar()

    def on_mount(self) -> None:
        self.sync(set(self.state.revisions), chart_now=True)
        self.query_one(HistoryTable).focus()

    def on_run_screen_state_changed(self, message: StateChanged) -> None:
        self.sync(message.changed)

    def sync(self, changed: set[str], chart_now: bool = False) -> None:
        """Bring the widgets in line with the state; only touched sections redraw."""
        state = self.state
        if changed & {"header", "history", "finetune"} or not changed:
            self.query_one(RunHeader).update_from(state)
        if "chart" in changed:
            self.query_one(LossChart).update_from(state, now=chart_now)
        if "history" in changed:
            self.query_one(HistoryPanel).update_from(state)
        if "windows" in changed:
            self.query_one(WindowsPanel).update_from(state)
        if changed & {"finetune", "header"}:
            self.query_one(FinetunePanel).update_from(state)
        if "log" in changed:
            self.query_one(LogPane).update_from(state)
        if self._save_pending and state.saves > self._saves_seen:
            self._save_pending = False
            self.notify("Checkpoint saved.", timeout=2)
        self._saves_seen = state.saves
        self.sub_title = state.status

    def _note(self, message: str, level: str = "info") -> None:
        if self.controller is not None:
            self.sync(self.controller.note(message, level))

    def _need_live(self, what: str) -> bool:
        if self.live:
            return True
        self.notify(f"The run is not running: nothing to {what}.", severity="warning", timeout=3)
        return False

    # ---- actions ---------------------------------------------------------------------
    def action_toggle_pause(self) -> None:
        if not self._need_live("pause"):
            return
        paused = self.controller.toggle_pause()
        if paused:
            self._note("pause requested: the run pauses at the next step boundary and saves")
        else:
            self._note("resume requested")
        self.notify("Pausing…" if paused else "Resuming…", timeout=2)

    def action_edit_description(self) -> None:
        if not self._need_live("edit"):
            return
        state = self.state

        def done(text: str | None) -> None:
            if text is None or self.controller is None:
                return
            self.controller.controls.set_description(text)
            self._note(f"description edited: it becomes v{state.description_version + 1} "
                       "from the next TA request")
            self.notify("Description saved: applies from the next TA request.", timeout=3)

        self.app.push_screen(DescriptionScreen(state.description, state.description_version,
                                               state.description_from_request), done)

    def action_save(self) -> None:
        if not self._need_live("save"):
            return
        if self.controller.controls.paused:
            self.notify("The run is paused: it was saved when it paused.", timeout=3)
            return
        self.controller.controls.request_save()
        self._save_pending = True
        self.notify("Saving at the next step boundary…", timeout=2)

    def action_stop(self) -> None:
        if not self._need_live("stop"):
            return

        def done(yes: bool | None) -> None:
            if yes and self.controller is not None and self.controller.running:
                self.controller.stop()
                self._note("stop requested: the run saves and stops at the next step boundary")
                self.notify("Stopping… the session stays resumable.", timeout=3)

        self.app.push_screen(ConfirmScreen("Stop this run? It is saved and can be resumed later.",
                                           yes="Stop", no="Keep running", danger=True), done)

    def action_back(self) -> None:
        if self.live:
            self.notify("The run is still going: stop it (x) or quit (q) first.", timeout=3)
            return
        back = getattr(self.app, "show_sessions", None)
        if back is not None:
            back()
