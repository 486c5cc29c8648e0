"""DescriptionScreen: a modal multi-line editor for the dataset description.

Dismisses with the new text, or None when cancelled or unchanged. Saving creates a new
description version that applies from the TA's next request.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, Static, TextArea

from gpta_tui.formatting import description_size
from gpta_tui.screens.modal import Modal


class DescriptionScreen(Modal[str | None]):
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, text: str, version: int, applies_from: int) -> None:
        super().__init__(classes="dialog-screen")
        self.text, self.version, self.applies_from = text, version, applies_from

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"Dataset description · v{self.version} (in use since TA request "
                        f"#{self.applies_from})", classes="dialog-title")
            yield Label("The TA sees only this text, never the training data. Saving makes "
                        f"v{self.version + 1}, used from the next TA request.",
                        classes="dim dialog-help")
            yield TextArea(self.text, id="description-editor", soft_wrap=True, show_line_numbers=False)
            yield Static(description_size(self.text), id="description-size")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (ctrl+s)", id="save", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        editor = self.query_one(TextArea)
        editor.focus()
        editor.move_cursor(editor.document.end)

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        self.query_one("#description-size", Static).update(description_size(event.text_area.text))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_save() if event.button.id == "save" else self.action_cancel()

    def action_save(self) -> None:
        text = self.query_one(TextArea).text.strip()
        if not text:
            self.notify("The description cannot be empty.", severity="error")
            return
        self.dismiss(text if text != self.text.strip() else None)

    def action_cancel(self) -> None:
        self.dismiss(None)
