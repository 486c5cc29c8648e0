"""ExportScreen: ask where to export a session. Dismisses with a directory path or None."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label

from gpta_tui.screens.modal import Modal


class ExportScreen(Modal[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, name: str, default_dir: str) -> None:
        super().__init__(classes="dialog-screen")
        self.session, self.default_dir = name, default_dir

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Export session {self.session!r} to:", classes="dialog-question")
            yield Input(self.default_dir, id="export-dir")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Export", id="export", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._finish(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "export":
            self._finish(self.query_one(Input).value)
        else:
            self.dismiss(None)

    def _finish(self, value: str) -> None:
        if not value.strip():
            self.notify("Give a directory to export to.", severity="error")
            return
        self.dismiss(value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
