"""RunScreen: the live dashboard of one session.

It renders the controller's `DashboardState`. The app drains the engine's events a few times a
second and posts `RunScreen.StateChanged` with the sections that moved; each widget redraws
only when its own section changed (the loss chart at most once a second).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Tab, Tabs

from gpta_tui.dashboard import DashboardState
from gpta_tui.formatting import clock
from gpta_tui.run_control import RunController
from sessions.status import resumable
from gpta_tui.screens.confirm import ConfirmScreen
from gpta_tui.screens.description import DescriptionScreen
from gpta_tui.screens.text_view import TextViewScreen
from gpta_tui.widgets.finetune_panel import FinetunePanel
from gpta_tui.widgets.history_panel import HistoryPanel
from gpta_tui.widgets.history_table import HistoryTable
from gpta_tui.widgets.key_footer import KeyFooter
from gpta_tui.widgets.log_pane import LogPane
from gpta_tui.widgets.loss_chart import LossChart
from gpta_tui.widgets.messages import OpenTextView
from gpta_tui.widgets.run_header import RunHeader
from gpta_tui.widgets.windows_panel import WindowsPanel


# Compact layout (one panel at a time, as tabs) below these sizes.
WIDE_AT, TALL_AT = 120, 34
# (tab id, panel id, label); the log is the last tab.
TABS = (("chart", "loss-chart", "Chart"), ("history", "history-panel", "History"),
        ("windows", "windows", "Windows"), ("jobs", "finetune", "Jobs"), ("log", "log", "Log"))


class RunScreen(Screen[None]):
    CSS_PATH = "run.tcss"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE_AT, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (TALL_AT, "-tall")]
    BINDINGS = [
        Binding("p", "toggle_pause", "Pause/resume"),
        Binding("e", "edit_description", "Description"),
        Binding("s", "save", "Save"),
        Binding("x", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("c", "clone", "Clone config"),
        Binding("n", "new", "New run"),
        Binding("v", "summary", "Summary"),
        Binding("escape", "back", "Sessions"),
        *(Binding(str(i), f"show_tab('{tab}')", label, show=False)
          for i, (tab, _, label) in enumerate(TABS, 1)),
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
        yield Tabs(*(Tab(f"{i} {label}", id=f"tab-{tab}") for i, (tab, _, label) in enumerate(TABS, 1)),
                   active="tab-history", id="run-tabs")
        with Grid(id="run-grid"):
            yield LossChart(id="loss-chart")
            yield HistoryPanel(id="history-panel")
            yield WindowsPanel(id="windows")
            yield FinetunePanel(id="finetune")
        yield LogPane(id="log")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sync(set(self.state.revisions), chart_now=True)
        self._live_shown = self.live
        self.show_panel("history")
        self.query_one(HistoryTable).focus()

    # ---- responsive layout -----------------------------------------------------------
    @property
    def compact(self) -> bool:
        """One panel at a time (tabs): the terminal is narrower or shorter than the grid needs."""
        return self.has_class("-narrow") or self.has_class("-short")

    def show_panel(self, tab: str) -> None:
        """Make `tab`'s panel the one shown in the compact layout (no effect on the grid)."""
        self.active_tab = tab
        for name, panel_id, _ in TABS:
            self.query_one(f"#{panel_id}").set_class(name != tab, "-off-tab")
        self.query_one("#run-grid").set_class(tab == "log", "-off-tab")
        tabs = self.query_one(Tabs)
        if tabs.active != f"tab-{tab}":
            tabs.active = f"tab-{tab}"

    def action_show_tab(self, tab: str) -> None:
        self.show_panel(tab)
        panel = self.query_one(f"#{dict((t, p) for t, p, _ in TABS)[tab]}")
        target = panel if panel.can_focus else next(
            (w for w in panel.query("*") if w.can_focus), None)
        if target is not None:
            target.focus()

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        event.stop()
        if event.tab is not None and event.tab.id:
            self.show_panel(event.tab.id.removeprefix("tab-"))

    def on_run_screen_state_changed(self, message: StateChanged) -> None:
        self.sync(message.changed)

    def on_open_text_view(self, message: OpenTextView) -> None:
        """A panel asks for an item in full (a prefix, a dialogue window): the text view."""
        message.stop()
        self.app.push_screen(TextViewScreen(message.title, message.renderable,
                                            message.plain_text, message.copy_label))

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
            when = clock(state.last_save_ts)
            self._note(f"checkpoint saved at {when} (s)")
            self.notify(f"Checkpoint saved at {when}.", timeout=4)
        self._saves_seen = state.saves
        self.sub_title = state.status
        if self.live != getattr(self, "_live_shown", None):
            self._live_shown = self.live
            self.refresh_bindings()

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
        """Back to the sessions list; a live run keeps going (the list shows it)."""
        back = getattr(self.app, "show_sessions", None)
        if back is not None:
            back()

    def action_resume(self) -> None:
        self.app.open_session(self.state.name, resume=True)

    def action_summary(self) -> None:
        from gpta_tui.screens.run_summary import RunSummaryScreen

        self.app.push_screen(RunSummaryScreen(self.state))

    def action_clone(self) -> None:
        self.app.new_session(config=self.state.config)

    def action_new(self) -> None:
        self.app.new_session()

    def action_export_curves(self, folder: str | None = None) -> None:
        """Write the loss and validation curves (curves.png, loss.csv, validation.csv) to
        ./<session>-curves, in a worker thread (files on disk, off the UI thread)."""
        state = self.state
        target = Path(folder or f"{state.name or 'run'}-curves")
        loss = [(step, state.step_epoch.get(step, 0), value) for step, value in sorted(state.losses.items())]
        val = sorted(state.val.items())
        best = state.best.get("epoch") if state.best else None
        title = f"{state.name}: student loss and validation {state.metric}"

        def write() -> None:
            from engine.errors import GptaError
            from sessions.curves import write_curves

            try:
                written = write_curves(target, loss, val, state.metric, best, title)
            except GptaError as exc:
                self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=8)
                return
            self.app.call_from_thread(self._note, f"curves written to {written[0].parent.resolve()} "
                                      f"({', '.join(p.name for p in written)})")
            self.app.call_from_thread(self.notify, f"Curves written to {written[0].parent}",
                                      timeout=5)

        self.run_worker(write, thread=True, group="export-curves", exit_on_error=False)

    # ---- contextual keys ---------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """Live-run keys while the run goes; resume/clone/new once it has ended."""
        if action in ("toggle_pause", "edit_description", "save", "stop"):
            return self.live
        if action == "resume":
            return not self.live and self.controller_free and resumable(self.state.status)
        if action in ("clone", "new"):
            return not self.live and self.controller_free
        if action == "summary":
            return not self.live and self.state.status in ("finished", "failed", "stopped")
        if action == "show_tab":
            return self.compact
        return True

    @property
    def controller_free(self) -> bool:
        """No run of this app is going (one run at a time)."""
        controller = getattr(self.app, "controller", None)
        return controller is None or not controller.running
