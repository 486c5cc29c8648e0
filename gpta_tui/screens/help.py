"""HelpScreen: keys and a short explanation of what the dashboard shows."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Static

from gpta_tui.screens.modal import Modal

KEYS = [
    ("Sessions", [("enter / r", "open or resume the selected session"), ("n", "new session"),
                  ("d", "delete the selected session (asks first)"), ("x", "export the selected session"),
                  ("o", "sort: newest, name, best val, status"),
                  ("/", "filter by name, mode, dataset, status, model (esc clears)"),
                  ("space", "mark / unmark the selected session for comparing"),
                  ("C", "compare the marked sessions side by side (two or more)")]),
    ("Compare", [("up / down / pgup / pgdn", "scroll"), ("y", "copy the comparison as text"),
                 ("esc", "back to the sessions")]),
    ("New session", [("enter", "on Start: start the run"), ("ctrl+s", "start the run"),
                     ("esc", "back to the sessions")]),
    ("Run dashboard", [("p", "pause / resume (at the next step boundary)"),
                       ("e", "edit the dataset description (applies from the next TA request)"),
                       ("s", "save a checkpoint now"), ("x", "stop the run (resumable)"),
                       ("enter / y", "history or windows: view the selected item in full / copy it"),
                       ("1-5", "small terminals: show chart, history, windows, jobs or log"),
                       ("esc", "back to the sessions (a live run keeps going)"),
                       ("r / c / n", "after the run: resume, clone its config, new run"),
                       ("v", "after the run: its summary (opens by itself when it ends)")]),
    ("Everywhere", [("q", "quit (the session is saved and resumable)"), ("?", "this help"),
                    ("ctrl+p", "command palette (theme, remembered; export curves)"),
                    ("tab / shift+tab", "move between panels (the focused one has a heavy border)")]),
]

ABOUT = (
    "GPTA trains a small student model with a natural-language prefix in front of every input. "
    "A teaching-assistant LLM (TA) proposes prefixes from the dataset description only, never the "
    "data. Each epoch: train the student with the best prefix; collect a history of k prefixes, "
    "scored on validation, by asking the TA for l at a time; turn the sorted history into "
    "'dialogue gradients' (w pairs -> the next prefix); fine-tune the TA on them."
)


def keys_table() -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for section, rows in KEYS:
        table.add_row(Text(section, style="bold magenta"), "")
        for key, what in rows:
            table.add_row(key, what)
    return table


class HelpScreen(Modal[None]):
    # q closes the help (as it did before Modal, and as in less): a q meant for the help must
    # not stop a live run
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self) -> None:
        super().__init__(classes="dialog-screen -opaque")

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("gpta-tui help", classes="dialog-title")
            with VerticalScroll():
                yield Static(Text(ABOUT), classes="help-about")
                yield Static(keys_table())
            yield Label("esc, q or ? to close", classes="dim")

    def action_close(self) -> None:
        self.dismiss(None)
