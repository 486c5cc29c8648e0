"""SessionPreview: the highlighted session's key facts beside the sessions list.

Everything shown comes from the session's files (untrusted): it is shown as written, never
parsed as markup, without control characters.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from gpta_tui.formatting import STATUS_ICON, STATUS_STYLE, one_line, printable, score, when
from gpta_tui.session_rows import SessionRow


def preview_text(row: SessionRow | None, now: float | None = None) -> Text:
    """The facts of one session, one per line, then its best prefix in full."""
    text = Text()
    if row is None:
        text.append("No session selected.", style="dim")
        return text

    def fact(label: str, value: object, style: str = "") -> None:
        text.append(f"{label:<9}", style="dim")
        text.append(one_line(str(value), 400), style=style)
        text.append("\n")

    text.append(printable(row.name), style="bold")
    text.append("\n\n")
    fact("status", f"{STATUS_ICON.get(row.status, '·')} {row.status}", STATUS_STYLE.get(row.status, ""))
    if row.status == "unreadable":
        text.append(printable(row.error or "the session database cannot be read"), style="red")
        return text
    fact("mode", row.mode)
    fact("dataset", row.dataset)
    fact("student", row.student or "-")
    fact("TA", row.ta or "none")
    fact("epochs", row.epoch)
    best = row.best if row.best == "-" or not row.best_epoch else f"{row.best} (epoch {row.best_epoch})"
    fact("best val", best, "green")
    tests = [f"{metric} {score(value)}" for metric, value in row.test_metrics]
    fact("test", ", ".join(tests) if tests else "-", "bold cyan")
    fact("updated", when(row.updated, now))
    text.append("\nbest prefix\n", style="dim")
    if row.best_prefix:
        text.append(printable(row.best_prefix))
    else:
        text.append("none yet", style="dim")
    return text


class SessionPreview(Static):
    """Follows the sessions table's cursor (see SessionsScreen.on_data_table_row_highlighted)."""

    def show(self, row: SessionRow | None, now: float | None = None) -> None:
        self.update(preview_text(row, now))
