"""Messages widgets post to the screen that hosts them.

Widgets never import screens (an import-linter contract in pyproject.toml forbids it): a widget
that wants a screen shown posts a message; it bubbles up to the hosting screen, which acts.
"""

from __future__ import annotations

from rich.console import RenderableType
from textual.message import Message


class OpenTextView(Message):
    """Show one item in full in a read-only view (`screens/text_view.TextViewScreen`).

    `title` heads the view, `renderable` is its body, `plain_text` is what `y` copies there and
    `copy_label` names it in the "Copied ..." toast.
    """

    def __init__(self, title: str, renderable: RenderableType, plain_text: str,
                 copy_label: str) -> None:
        super().__init__()
        self.title = title
        self.renderable = renderable
        self.plain_text = plain_text
        self.copy_label = copy_label
