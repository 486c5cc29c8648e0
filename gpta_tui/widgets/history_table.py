"""HistoryTable: the epoch's (prefix, validation score) history, best on top.

Marks: ▶ the prefix the student trains with, ★ the best, + scored from the latest TA request,
↑ beat the best score shown to the TA in its request (prefix-finding accuracy).
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from gpta_tui.clipboard import copy_text
from gpta_tui.dashboard import DashboardState
from gpta_tui.formatting import one_line

LEGEND = "▶ training  ★ best  + new  ↑ beat shown best"


class HistoryTable(DataTable):
    BINDINGS = [
        Binding("enter", "select_cursor", "View prefix", show=False),
        Binding("y", "copy_prefix", "Copy prefix"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._rev = -1
        self._state: DashboardState | None = None
        self._prefix_width = 0
        self.row_prefixes: list[str] = []  # full text, in display order
        self.row_ranks: list[int | None] = []

    def on_mount(self) -> None:
        self.add_column("", key="mark", width=3)
        self.add_column("#", key="rank", width=3)
        self.add_column("score", key="score", width=7)
        self.add_column("prefix", key="prefix")

    @property
    def prefixes(self) -> list[str]:
        """Prefixes in display order (best first), as shown (possibly shortened)."""
        return [str(self.get_row_at(i)[3]) for i in range(self.row_count)]

    @property
    def selected_prefix(self) -> tuple[str, int | None] | None:
        """The full prefix under the cursor and its rank (None for the unscored training one)."""
        row = self.cursor_row
        if not self.row_prefixes or not 0 <= row < len(self.row_prefixes):
            return None
        return self.row_prefixes[row], self.row_ranks[row]

    def action_copy_prefix(self) -> None:
        selected = self.selected_prefix
        if selected is None:
            self.notify("No prefix to copy yet.", severity="warning", timeout=2)
            return
        copy_text(self.app, selected[0], "the prefix")

    def _fit_prefix_width(self) -> int:
        """The prefix column takes what the three narrow columns leave."""
        width = max(16, self.scrollable_content_region.width - (3 + 3 + 7) - 4 * 2 - 1)
        column = self.columns.get("prefix")
        if column is not None and width != self._prefix_width:
            column.auto_width, column.width = False, width
        self._prefix_width = width
        return width

    def on_resize(self) -> None:
        if self._state is not None:
            self._rev = -1
            self.update_from(self._state)

    def update_from(self, state: DashboardState) -> None:
        self._state = state
        if state.revisions["history"] == self._rev:
            return
        self._rev = state.revisions["history"]
        width = self._fit_prefix_width()
        rows = state.sorted_history
        cursor = self.cursor_row
        self.clear()
        self.row_prefixes, self.row_ranks = [], []
        shown = {p for p, _ in rows}
        if state.training_prefix and state.training_prefix not in shown and state.mode != "baseline":
            # The prefix the student trains with, before this epoch's history has scored it.
            self.add_row(Text("▶", style="bold"), Text("-", style="dim"), Text("…", style="dim"),
                         Text(one_line(state.training_prefix, width), style="italic"),
                         key="training")
            self.row_prefixes.append(state.training_prefix)
            self.row_ranks.append(None)
        best_score = rows[0][1] if rows else None
        for rank, (prefix, value) in enumerate(rows, 1):
            marks, style = "", ""
            if prefix == state.training_prefix:
                marks += "▶"
            if value == best_score and rank == 1:
                marks += "★"
                style = "bold green"
            if prefix in state.new_prefixes:
                marks += "+"
                style = style or "yellow"
            if prefix in state.beat_best:
                marks += "↑"
            self.add_row(Text(marks, style="bold"), Text(str(rank), style="dim"),
                         Text(f"{value:.4f}", style=style or "bold"),
                         Text(one_line(prefix, width), style=style), key=f"{rank}")
            self.row_prefixes.append(prefix)
            self.row_ranks.append(rank)
        if self.row_count:
            self.move_cursor(row=min(max(cursor, 0), self.row_count - 1), animate=False)
