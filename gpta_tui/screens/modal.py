"""Modal: the base of every modal screen of gpta-tui.

A Textual ModalScreen hides the app's keys, so over a dialog `q` and `?` did nothing. Here
they do what they do everywhere: q quits (a live run is saved first), ? opens the help. A
text field with the focus still takes them as typed characters (the field gets keys first).
The read-only viewers (the help, a text view) take q to close themselves instead, as in
less and as before: a q meant for the viewer must not stop a live run.
"""

from __future__ import annotations

from typing import TypeVar

from textual.binding import Binding
from textual.screen import ModalScreen

ResultType = TypeVar("ResultType")


class Modal(ModalScreen[ResultType]):
    BINDINGS = [
        Binding("q", "app.quit", "Quit", show=False),
        Binding("question_mark", "app.help", "Help", key_display="?", show=False),
    ]
