"""KeyBar: a one-line key legend at the bottom of a screen.

Textual's Footer recomposes itself (mounting a widget per key) whenever focus or the screen
changes; with a busy dashboard behind it that cost tens of milliseconds per key press. Our
screens' keys do not change while they are shown, so the legend is rendered once.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.content import Content
from textual.widgets import Static


class KeyBar(Static):
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        width: 100%;
        background: $footer-background;
        color: $footer-foreground;
    }
    """

    def on_mount(self) -> None:
        self.update(self.legend(), layout=False)

    def legend(self) -> Content:
        parts: list[Content] = []
        seen: set[str] = set()
        for source in (self.screen, self.app):
            for item in getattr(source, "BINDINGS", []):
                binding = item if isinstance(item, Binding) else Binding(*item)
                if not binding.show or binding.description in seen:
                    continue
                seen.add(binding.description)
                first = binding.key.split(",")[0].strip()
                key = binding.key_display or self.app.get_key_display(
                    Binding(first, binding.action, binding.description))
                parts.append(Content.from_markup(
                    "[bold $footer-key-foreground on $footer-key-background] $key [/] $what ",
                    key=key, what=binding.description))
        palette = Content.from_markup(
            "[bold $footer-key-foreground on $footer-key-background] ^p [/] palette ")
        return Content("").join([*parts, palette])
