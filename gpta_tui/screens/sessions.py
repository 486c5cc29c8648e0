"""SessionsScreen: the start screen, a table of saved sessions.

Keys: enter/r open or resume, n new, d delete (asks first), x export, q quit. The session this
app is running is shown live (status, epoch, best) from its dashboard state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Static

from gpta_tui.widgets.key_footer import KeyFooter

from gpta_tui.formatting import STATUS_ICON, STATUS_STYLE, literal, one_line, score, when
from sessions.status import resumable, shown

COLUMNS = (("name", "name"), ("mode", "mode"), ("dataset", "dataset"), ("status", "status"),
           ("epoch", "epoch"), ("best val", "best"), ("test", "test"), ("updated", "updated"))


@dataclass(frozen=True)
class SessionRow:
    """What the table shows for one saved session."""

    name: str
    mode: str
    dataset: str
    status: str
    epoch: str
    best: str
    updated: float | None
    error: str = ""
    test: str = "-"

    @property
    def resumable(self) -> bool:
        return resumable(self.status)


def figure(value: Any, metric: str) -> str:
    return f"{metric} {score(float(value))}".strip() if isinstance(value, (int, float)) else "-"


def session_row(item: Any, live: bool = False, test: dict | None = None) -> SessionRow:
    """One `SessionStore.list()` entry (a SessionSummary) -> a table row. `live`: a process
    holds the session; `test`: its stored test metrics."""
    best = getattr(item, "best_metric", None)
    metric = getattr(item, "metric", "") or ""
    epoch, epochs = getattr(item, "epoch", 0), getattr(item, "epochs", 0)
    status = shown(str(getattr(item, "status", "") or "-"), live)
    return SessionRow(
        name=str(item.name),
        mode=str(getattr(item, "mode", "") or "-"),
        dataset=str(getattr(item, "dataset", "") or "-"),
        status=status,
        epoch=f"{epoch}/{epochs}" if epochs else "-",
        best=figure(best, metric),
        updated=float(getattr(item, "updated", 0.0) or 0.0) or None,
        error=str(getattr(item, "error", "") or ""),
        test=figure((test or {}).get(metric), metric),
    )


class SessionsScreen(Screen[None]):
    CSS_PATH = "sessions.tcss"
    BINDINGS = [
        Binding("enter,r", "open", "Open/resume"),
        Binding("n", "new", "New"),
        Binding("d", "delete", "Delete"),
        Binding("x", "export", "Export"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[SessionRow] = []
        self._live_name: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="sessions-box"):
            yield Static("Sessions", id="sessions-title")
            yield DataTable(id="sessions-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="sessions-empty")
        yield KeyFooter()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, key in COLUMNS:
            table.add_column(label, key=key)
        self.reload()
        table.focus()
        self.set_interval(1.0, self.show_live)

    def show_live(self) -> None:
        """The session this app runs, from its live state (no store read)."""
        controller = getattr(self.app, "controller", None)
        if controller is None or controller.name not in {r.name for r in self.rows}:
            return
        state = controller.state
        table = self.query_one(DataTable)
        if not controller.running:
            if self._live_name == controller.name:
                self._live_name = None
                self.reload()  # the run ended: its stored summary is final
            return
        self._live_name = controller.name
        best = state.best.get("score") if state.best else None
        total = state.epochs_total
        for key, value in (
                ("status", Text(f"{STATUS_ICON.get(state.status, '·')} {state.status}",
                                style=STATUS_STYLE.get(state.status, ""))),
                ("epoch", f"{state.epoch}/{total}" if total else "-"),
                ("best", Text(figure(best, state.metric), style="green"))):
            table.update_cell(controller.name, key, value)

    def on_screen_resume(self) -> None:
        self.reload()

    def reload(self) -> None:
        """Re-read the store and redraw the table, keeping the cursor on the same session."""
        table = self.query_one(DataTable)
        current = self.selected.name if self.selected else None
        try:
            self.rows = [self._row(item) for item in self.app.list_sessions()]
        except Exception as exc:  # noqa: BLE001 - shown, not fatal
            self.rows = []
            self.notify(f"Could not list sessions: {exc}", severity="error", markup=False)
        self.rows.sort(key=lambda r: r.updated or 0.0, reverse=True)
        table.clear()
        now = self.app.clock() if hasattr(self.app, "clock") else None
        for row in self.rows:
            style = STATUS_STYLE.get(row.status, "")
            dataset = literal(one_line(row.dataset, 40))
            if row.status == "unreadable":  # the reason (the row names the session already)
                reason = re.sub(r"^session database '[^']*' ", "", row.error)
                dataset = literal(one_line(reason, 60), style="red")
            table.add_row(literal(row.name, style="bold"), literal(row.mode), dataset,
                          literal(f"{STATUS_ICON.get(row.status, '·')} {row.status}", style=style),
                          literal(row.epoch), literal(row.best, style="green"),
                          literal(row.test, style="bold cyan"),
                          literal(when(row.updated, now)), key=row.name)
        names = [r.name for r in self.rows]
        if current in names:
            table.move_cursor(row=names.index(current), animate=False)
        self.show_live()
        empty = self.query_one("#sessions-empty", Static)
        empty.update("" if self.rows else "No sessions yet. Press n to start one.")
        self.query_one("#sessions-title", Static).update(
            literal(f"Sessions · {len(self.rows)} saved in {self.app.home_label}"))

    def _row(self, item: Any) -> SessionRow:
        status = getattr(item, "status", "")
        live = status == "paused" and self.app.session_locked(item.name)
        test = self.app.session_test_metrics(item.name) if status == "finished" else None
        return session_row(item, live=live, test=test)

    @property
    def selected(self) -> SessionRow | None:
        table = self.query_one(DataTable)
        if not self.rows or table.cursor_row < 0 or table.cursor_row >= len(self.rows):
            return None
        return self.rows[table.cursor_row]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        row = self.selected
        if row is None:
            return
        if row.status == "unreadable":
            self.notify(row.error or f"Session {row.name} cannot be read.", severity="error",
                        timeout=8, markup=False)
            return
        self.app.open_session(row.name, resume=row.resumable)

    def action_new(self) -> None:
        self.app.new_session()

    def action_delete(self) -> None:
        row = self.selected
        if row is None:
            return
        from gpta_tui.screens.confirm import ConfirmScreen

        def done(yes: bool | None) -> None:
            if yes:
                self.app.delete_session(row.name)
                self.reload()

        self.app.push_screen(ConfirmScreen(f"Delete session {row.name!r} and all its files? "
                                           "This cannot be undone.", yes="Delete", no="Keep",
                                           danger=True), done)

    def action_export(self) -> None:
        row = self.selected
        if row is None:
            return
        from gpta_tui.screens.export import ExportScreen

        def done(path: str | None) -> None:
            if path:
                self.app.export_session(row.name, path)

        self.app.push_screen(ExportScreen(row.name, f"./{row.name}-export"), done)
