"""LogPane: warnings and errors (TA garbage, retries, failed jobs) plus key run milestones."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog

from gpta_tui.dashboard import DashboardState, LogEntry
from gpta_tui.formatting import LEVEL_ICON, LEVEL_STYLE, clock


def render_entry(entry: LogEntry) -> Text:
    style = LEVEL_STYLE.get(entry.level, "")
    return Text.assemble((clock(entry.ts) + " ", "dim"), (LEVEL_ICON.get(entry.level, "·") + " ", style),
                         (entry.text, "" if entry.level == "info" else style))


class LogPane(RichLog):
    """Appends only the entries it has not written yet."""

    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=1000, wrap=True, markup=False, highlight=False, **kwargs)
        self._written = 0  # absolute index (counting entries the state trimmed)
        self.warnings = 0
        self.errors = 0

    def on_mount(self) -> None:
        self.border_title = "Log"

    def update_from(self, state: DashboardState) -> None:
        end = state.log_dropped + len(state.log)
        start = max(self._written, state.log_dropped)
        for entry in state.log[start - state.log_dropped:]:
            self.write(render_entry(entry))
            self.warnings += entry.level == "warning"
            self.errors += entry.level == "error"
        self._written = end
        if start < end:
            self.border_subtitle = (f"{self.warnings} warning{'s' * (self.warnings != 1)} · "
                                    f"{self.errors} error{'s' * (self.errors != 1)}")
