"""WindowsPanel: the dialogue gradients; selecting one shows its user and assistant messages."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from gpta_tui.clipboard import copy_text
from gpta_tui.dashboard import DashboardState, WindowView, target_prefixes
from gpta_tui.formatting import one_line, printable
from gpta_tui.widgets.messages import OpenTextView


def render_window(window: WindowView) -> Group:
    """The user message (the w sorted pairs) and the assistant message (the next prefix)."""
    prefixes = target_prefixes(window.assistant)
    parts = [
        Text(f"epoch {window.epoch} · window {window.index}", style="bold magenta"),
        Text("assistant: the next prefix", style="bold green"),
    ]
    parts += [Text(f"  {printable(p)}", style="green") for p in prefixes] or [Text("  (empty)", style="dim")]
    parts += [Text(""), Text("user: the w sorted (prefix, score) pairs", style="bold cyan"),
              Text(printable(window.user) or "(empty)")]
    return Group(*parts)


def window_text(window: WindowView) -> str:
    """A window as plain text (what `y` copies): each message with its role."""
    parts = [f"{role}:\n{text}" for role, text in (("system", window.system), ("user", window.user),
                                                   ("assistant", window.assistant)) if text]
    return "\n\n".join(parts)


class WindowsPanel(Horizontal):
    BINDINGS = [Binding("y", "copy_window", "Copy window")]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._rev = -1
        self._windows: list[WindowView] = []

    def compose(self) -> ComposeResult:
        yield OptionList(id="window-list")
        with VerticalScroll(id="window-detail"):
            yield Static(Text("No dialogue windows yet: they are built after the prefix history "
                              "of an epoch is complete.", style="dim"), id="window-text")

    def on_mount(self) -> None:
        self.border_title = "Dialogue gradients"

    @property
    def windows(self) -> list[WindowView]:
        return list(self._windows)

    def update_from(self, state: DashboardState) -> None:
        if state.revisions["windows"] == self._rev:
            return
        self._rev = state.revisions["windows"]
        options = self.query_one("#window-list", OptionList)
        highlighted = options.highlighted
        self._windows = state.all_windows()
        options.clear_options()
        options.add_options(
            Option(Text.assemble((f"e{w.epoch}·{w.index:<3}", "dim"),
                                 one_line(" | ".join(target_prefixes(w.assistant)), 21)))
            for w in self._windows
        )
        total = len(self._windows)
        self.border_title = f"Dialogue gradients · {total}" if total else "Dialogue gradients"
        if total:
            options.highlighted = min(highlighted, total - 1) if highlighted is not None else total - 1

    @property
    def selected(self) -> WindowView | None:
        index = self.query_one("#window-list", OptionList).highlighted
        return self._windows[index] if index is not None and 0 <= index < len(self._windows) else None

    def action_copy_window(self) -> None:
        window = self.selected
        if window is None:
            self.notify("No dialogue window to copy yet.", severity="warning", timeout=2)
            return
        copy_text(self.app, window_text(window), f"window e{window.epoch}·{window.index}")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        window = self.selected
        if window is not None:
            self.post_message(OpenTextView(
                f"Dialogue window e{window.epoch}·{window.index}", render_window(window),
                window_text(window), f"window e{window.epoch}·{window.index}"))

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        if 0 <= event.option_index < len(self._windows):
            window = self._windows[event.option_index]
            self.query_one("#window-text", Static).update(render_window(window))
