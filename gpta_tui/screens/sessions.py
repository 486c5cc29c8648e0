"""SessionsScreen: the start screen, a table of saved sessions.

Keys: enter/r open or resume, n new, d delete (asks first), x export, o sort order, / filter
(esc clears it), space marks a session, C compares the marked ones (two or more), q quit. The session this app is running is shown live (status, epoch, best)
from its dashboard state. From PREVIEW_AT columns a preview pane beside the table shows the
highlighted session's facts and best prefix.
"""

from __future__ import annotations

import re
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from gpta_tui.widgets.key_footer import KeyFooter
from gpta_tui.widgets.session_preview import SessionPreview

from gpta_tui.formatting import STATUS_ICON, STATUS_STYLE, literal, one_line, when
from gpta_tui.session_rows import SessionRow, figure, session_row
from sessions.status import SHOWN

COLUMNS = (("name", "name"), ("mode", "mode"), ("dataset", "dataset"), ("status", "status"),
           ("epoch", "epoch"), ("best val", "best"), ("test", "test"), ("updated", "updated"))
PREVIEW_AT = 150  # the preview pane needs this many columns beside the table
# Beside the preview (which shows mode and dataset) the table drops those two columns.
PREVIEW_COLUMNS = tuple(c for c in COLUMNS if c[1] not in ("mode", "dataset"))

_NEWEST = lambda r: -(r.updated or 0.0)  # noqa: E731
# (label, key): "o" cycles through them; ties keep the newest first.
SORTS = (("newest first", lambda r: (_NEWEST(r),)),
         ("name", lambda r: (r.name.lower(), _NEWEST(r))),
         ("best val", lambda r: (-(r.best_score if r.best_score is not None else float("-inf")),
                                 _NEWEST(r))),
         ("status", lambda r: (SHOWN.index(r.status) if r.status in SHOWN else len(SHOWN),
                               _NEWEST(r))))


class SessionsScreen(Screen[None]):
    CSS_PATH = "sessions.tcss"
    BINDINGS = [
        Binding("enter,r", "open", "Open/resume"),
        Binding("n", "new", "New"),
        Binding("d", "delete", "Delete"),
        Binding("x", "export", "Export"),
        Binding("o", "sort", "Sort"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("space", "mark", "Mark"),
        Binding("C", "compare", "Compare", key_display="C"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (PREVIEW_AT, "-wide")]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[SessionRow] = []      # shown, in table order
        self.all_rows: list[SessionRow] = []  # every session, as read
        self.sort_index = 0
        self.filter_text = ""
        self.marked: list[str] = []  # marked for the compare view, in the order marked
        self._live_name: str | None = None
        self._columns: tuple = ()

    def compose(self) -> ComposeResult:
        with Vertical(id="sessions-box"):
            yield Static("Sessions", id="sessions-title")
            yield Input(placeholder="filter: part of a name, mode, dataset, status, model",
                        id="sessions-filter")
            with Horizontal(id="sessions-main"):
                yield DataTable(id="sessions-table", cursor_type="row", zebra_stripes=True)
                yield SessionPreview(id="sessions-preview")
            yield Static("", id="sessions-empty")
        yield KeyFooter()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        self.query_one(SessionPreview).border_title = "Selected session"
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
        try:
            self.all_rows = [self._row(item) for item in self.app.list_sessions()]
        except Exception as exc:  # noqa: BLE001 - shown, not fatal
            self.all_rows = []
            self.notify(f"Could not list sessions: {exc}", severity="error", markup=False)
        names = {r.name for r in self.all_rows}
        self.marked = [name for name in self.marked if name in names]  # deleted: unmarked
        self.redraw()

    def redraw(self) -> None:
        """Show `all_rows` filtered and sorted, keeping the cursor on the same session."""
        table = self.query_one(DataTable)
        current = self.selected.name if self.selected else None
        needle = self.filter_text.strip().lower()
        self.rows = sorted((r for r in self.all_rows if needle in r.searchable),
                           key=SORTS[self.sort_index][1])
        columns = PREVIEW_COLUMNS if self.size.width >= PREVIEW_AT else COLUMNS
        if columns != self._columns:
            table.clear(columns=True)
            for label, key in columns:
                table.add_column(label, key=key)
            self._columns = columns
        table.clear()
        now = self.app.clock() if hasattr(self.app, "clock") else None
        for row in self.rows:
            style = STATUS_STYLE.get(row.status, "")
            dataset = literal(one_line(row.dataset, 40))
            if row.status == "unreadable":  # the reason (the row names the session already)
                reason = re.sub(r"^session database '[^']*' ", "", row.error)
                dataset = literal(one_line(reason, 60), style="red")
            cells = {"name": self._name_cell(row.name), "mode": literal(row.mode),
                     "dataset": dataset,
                     "status": literal(f"{STATUS_ICON.get(row.status, '·')} {row.status}",
                                       style=style),
                     "epoch": literal(row.epoch), "best": literal(row.best, style="green"),
                     "test": literal(row.test, style="bold cyan"),
                     "updated": literal(when(row.updated, now))}
            table.add_row(*(cells[key] for _, key in self._columns), key=row.name)
        names = [r.name for r in self.rows]
        if current in names:
            table.move_cursor(row=names.index(current), animate=False)
        self.show_live()
        empty = self.query_one("#sessions-empty", Static)
        if not self.all_rows:
            empty.update("No sessions yet. Press n to start one.")
        elif not self.rows:
            empty.update("No session matches the filter. Press esc to clear it.")
        else:
            empty.update("")
        self.show_title()
        self.show_preview()

    def show_title(self) -> None:
        needle = self.filter_text.strip()
        shown_count = (f"{len(self.rows)} of {len(self.all_rows)}" if needle
                       else str(len(self.all_rows)))
        marked = f" · {len(self.marked)} marked (C: compare)" if self.marked else ""
        self.query_one("#sessions-title", Static).update(
            literal(f"Sessions · {shown_count} saved in {self.app.home_label} · "
                    f"sorted by {SORTS[self.sort_index][0]}{marked}"))

    def _name_cell(self, name: str) -> Text:
        """The name, with a mark when it is marked for comparing (no column of its own:
        the table keeps its width)."""
        cell = literal(name, style="bold")
        return cell + Text(" ✓", style="bold magenta") if name in self.marked else cell

    def action_mark(self) -> None:
        """Mark or unmark the selected session for the compare view."""
        row = self.selected
        if row is None:
            return
        if row.status == "unreadable":
            self.notify(f"{row.name} cannot be read, so it cannot be compared.",
                        severity="warning", markup=False)
            return
        if row.name in self.marked:
            self.marked.remove(row.name)
        else:
            self.marked.append(row.name)
        self.query_one(DataTable).update_cell(row.name, "name", self._name_cell(row.name),
                                              update_width=True)
        self.show_title()

    def action_compare(self) -> None:
        """The marked sessions side by side (two or more)."""
        if len(self.marked) < 2:
            self.notify(f"Mark two or more sessions with space to compare them "
                        f"({len(self.marked)} marked).", severity="warning", markup=False)
            return
        from gpta_tui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen(self.marked))

    def show_preview(self) -> None:
        now = self.app.clock() if hasattr(self.app, "clock") else None
        self.query_one(SessionPreview).show(self.selected, now)

    def on_resize(self) -> None:
        if (PREVIEW_COLUMNS if self.size.width >= PREVIEW_AT else COLUMNS) != self._columns:
            self.redraw()  # the preview came or went: the table's columns change with it

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_preview()

    def action_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(SORTS)
        self.redraw()

    def action_filter(self) -> None:
        box = self.query_one("#sessions-filter", Input)
        box.add_class("-shown")
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "sessions-filter":
            self.filter_text = event.value
            self.redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "sessions-filter":
            event.stop()
            self.query_one(DataTable).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#sessions-filter", Input)
        if not box.has_class("-shown") and not self.filter_text:
            return
        box.value = ""
        box.remove_class("-shown")
        self.filter_text = ""
        self.redraw()
        self.query_one(DataTable).focus()

    def _row(self, item: Any) -> SessionRow:
        status = getattr(item, "status", "")
        live = status == "paused" and self.app.session_locked(item.name)
        # the test figures come with the list (one read of each session, not two)
        test = dict(getattr(item, "test_metrics", None) or {}) if status == "finished" else None
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
