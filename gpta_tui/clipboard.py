"""Copying to the clipboard, for widgets and screens alike (below both: no import cycle).

Textual's `copy_to_clipboard` sends OSC 52 to the terminal; a toast says what was copied.
"""

from __future__ import annotations

from textual.app import App


def copy_text(app: App, text: str, what: str) -> None:
    """Copy `text` to the clipboard and say so in a toast."""
    app.copy_to_clipboard(text)
    app.notify(f"Copied {what} ({len(text)} characters) to the clipboard.", timeout=3)
