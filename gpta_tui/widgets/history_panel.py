"""HistoryPanel: the prefix history table and, under it, the selected prefix in full.

The detail follows the table's cursor; Enter asks the hosting screen for the prefix view
(posts `OpenTextView`), `y` copies the prefix.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable

from gpta_tui.dashboard import DashboardState
from gpta_tui.widgets.history_table import LEGEND, HistoryTable
from gpta_tui.widgets.messages import OpenTextView
from gpta_tui.widgets.prefix_detail import PrefixDetail, render_prefix_view


class HistoryPanel(Vertical):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._state: DashboardState | None = None

    def compose(self) -> ComposeResult:
        yield HistoryTable(id="history")
        yield PrefixDetail(id="prefix-detail")

    def on_mount(self) -> None:
        self.border_title = "Prefix history"
        self.border_subtitle = LEGEND

    @property
    def table(self) -> HistoryTable:
        return self.query_one(HistoryTable)

    def update_from(self, state: DashboardState) -> None:
        self._state = state
        table = self.table
        table.update_from(state)
        rows, k = len(state.history), state.k
        title = f"Prefix history · epoch {state.history_epoch or '-'}"
        self.border_title = title + (f" · {rows}/{k}" if k else f" · {rows}")
        self._show_selected()

    def _show_selected(self) -> None:
        if self._state is None:
            return
        selected = self.table.selected_prefix
        detail = self.query_one(PrefixDetail)
        if selected is None:
            detail.show(None, self._state, None)
        else:
            detail.show(self._state.prefix_details(selected[0]), self._state, selected[1])

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_selected()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.open_selected()

    def open_selected(self) -> None:
        """Ask the hosting screen for the prefix view (OpenTextView)."""
        selected = self.table.selected_prefix
        if selected is None or self._state is None:
            return
        prefix, rank = selected
        info = self._state.prefix_details(prefix)
        title = f"Prefix #{rank}" if rank else "Training prefix (not scored yet this epoch)"
        self.post_message(OpenTextView(title, render_prefix_view(info, self._state, rank),
                                       prefix, "the prefix"))
