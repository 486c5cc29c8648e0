"""TooSmallScreen: shown over everything while the terminal is smaller than the dashboard needs.

The app pushes it when the terminal shrinks below MIN_SIZE and pops it when it grows back; the
run (if any) goes on underneath. q still quits.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Center, Middle
from textual.screen import Screen
from textual.widgets import Static

MIN_SIZE = (80, 24)


def too_small(width: int, height: int) -> bool:
    return width < MIN_SIZE[0] or height < MIN_SIZE[1]


class TooSmallScreen(Screen[None]):
    DEFAULT_CSS = """
    TooSmallScreen {
        align: center middle;
    }
    TooSmallScreen #too-small {
        width: auto;
        max-width: 100%;
        text-align: center;
        color: $warning;
    }
    """

    def compose(self) -> ComposeResult:
        with Middle():
            with Center():
                yield Static(self.message(), id="too-small")

    def message(self) -> str:
        width, height = self.app.size
        return (f"Terminal too small (need {MIN_SIZE[0]}x{MIN_SIZE[1]}, have {width}x{height}).\n"
                "Enlarge the window; a run keeps going meanwhile. q quits.")

    def on_resize(self) -> None:
        self.query_one("#too-small", Static).update(self.message())
