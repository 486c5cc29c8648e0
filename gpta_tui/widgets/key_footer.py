"""KeyFooter: Textual's stock Footer that rebuilds only when the keys it shows change.

The stock Footer recomposes (unmounts and mounts one FooterKey per binding, then lays the
screen out again) on every `bindings_updated` signal, and Textual sends one whenever focus
moves or a screen is pushed or popped: closing the help or any dialog rebuilt the footer
with the very same keys. Measured, that rebuild was most of the dashboard's key latency
regression (BENCHMARKS.md, "TUI key latency"). This subclass remembers what it last
composed (key, label, enabled, tooltip, group of each shown binding) and skips the rebuild
when that is unchanged; it still rebuilds at once when a key appears, goes or is disabled
(check_action + refresh_bindings).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

Signature = tuple


class KeyFooter(Footer):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: Signature | None = None
        self.rebuilds = 0  # how many times it composed (tests)

    def keys_signature(self) -> Signature:
        """What compose() would show now."""
        app = self.app
        shown = []
        for key, (_node, binding, enabled, tooltip) in self.screen.active_bindings.items():
            if binding.show or key == app.COMMAND_PALETTE_BINDING:
                group = binding.group.description if binding.group is not None else None
                shown.append((binding.key, app.get_key_display(binding), binding.description,
                              binding.action, bool(enabled), tooltip, group))
        return (self.compact, self.show_command_palette, tuple(shown))

    def compose(self) -> ComposeResult:
        if self._bindings_ready:
            self._shown = self.keys_signature()
            self.rebuilds += 1
        yield from super().compose()

    def bindings_changed(self, screen: Screen) -> None:
        if (self._shown is not None and self.is_attached and screen is self.screen
                and self.keys_signature() == self._shown):
            return
        super().bindings_changed(screen)
