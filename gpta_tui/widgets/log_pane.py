"""LogPane: warnings and errors (TA garbage, retries, failed jobs) plus key run milestones."""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.events import Resize
from textual.widgets import RichLog

from gpta_tui.dashboard import DashboardState, LogEntry
from gpta_tui.formatting import LEVEL_ICON, LEVEL_STYLE, clock

MAX_LINES = 1000


def render_entry(entry: LogEntry) -> Text:
    style = LEVEL_STYLE.get(entry.level, "")
    return Text.assemble((clock(entry.ts) + " ", "dim"), (LEVEL_ICON.get(entry.level, "·") + " ", style),
                         (entry.text, "" if entry.level == "info" else style))


class LogPane(RichLog):
    """Appends only the entries it has not written yet, wrapped to the pane's width; when the
    width changes the kept entries are wrapped again (a RichLog keeps the lines it rendered at
    the old width, so a narrower pane cut them and a wider one kept the old breaks). Every write
    names the width: RichLog would otherwise measure against the console and its 78-column
    minimum."""

    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=MAX_LINES, wrap=True, markup=False, highlight=False, **kwargs)
        self._written = 0  # absolute index (counting entries the state trimmed)
        self._entries: deque[Text] = deque(maxlen=MAX_LINES)  # what is shown, for reflowing
        self._wrapped_at = 0  # the content width the shown lines were wrapped to
        self.warnings = 0
        self.errors = 0

    def on_mount(self) -> None:
        self.border_title = "Log"

    def update_from(self, state: DashboardState) -> None:
        end = state.log_dropped + len(state.log)
        start = max(self._written, state.log_dropped)
        for entry in state.log[start - state.log_dropped:]:
            text = render_entry(entry)
            self._entries.append(text)
            if self._wrapped_at:  # else written at the first resize, once the width is known
                self.write(text, width=self._wrapped_at)
            self.warnings += entry.level == "warning"
            self.errors += entry.level == "error"
        self._written = end
        if start < end:
            self.border_subtitle = (f"{self.warnings} warning{'s' * (self.warnings != 1)} · "
                                    f"{self.errors} error{'s' * (self.errors != 1)}")

    def on_resize(self, event: Resize) -> None:
        width = self.scrollable_content_region.width
        if not width or width == self._wrapped_at:
            return
        at_end = not self._wrapped_at or self.is_vertical_scroll_end
        self._wrapped_at = width
        self.clear()
        for text in self._entries:
            self.write(text, width=width, scroll_end=False)
        if at_end:
            self.scroll_end(animate=False, x_axis=False)
