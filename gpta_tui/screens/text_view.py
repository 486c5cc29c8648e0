"""TextViewScreen: a read-only modal showing one item in full (a prefix, a dialogue window).

`y` copies the item's text (Textual's `copy_to_clipboard`: OSC 52 to the terminal), esc,
enter or q closes; ? opens the help, as everywhere (Modal).
"""

from __future__ import annotations

from rich.console import RenderableType
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Static

from gpta_tui.clipboard import copy_text
from gpta_tui.screens.modal import Modal


class TextViewScreen(Modal[None]):
    BINDINGS = [
        Binding("y", "copy", "Copy"),
        # q closes a viewer (as in less, and as before Modal): a q meant for the viewer must
        # not stop a live run; ? helps (Modal)
        Binding("escape,enter,q", "close", "Close"),
    ]
    HINT = "y copy · esc or q close"  # the keys, under the text

    def __init__(self, title: str, body: RenderableType, text: str, what: str) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text, self.body, self.text, self.what = title, body, text, what

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide text-view"):
            yield Label(self.title_text, classes="dialog-title")
            with VerticalScroll(can_focus=False):
                yield Static(self.body, id="text-view-body")
            yield Label(self.HINT, classes="dim", id="text-view-hint")

    def action_copy(self) -> None:
        copy_text(self.app, self.text, self.what)

    def action_close(self) -> None:
        self.dismiss(None)
