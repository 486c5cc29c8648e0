"""CachedPlot: a plotext chart whose figure is built in a thread worker and cached.

Building a plotext figure is by far the most expensive drawing in the app (tens of
milliseconds, more on a busy CPU), so a chart never builds on the UI thread's render path: a
thread worker builds the figure into a Rich `Text` when the data changed (at most once per
`min_period` seconds, and less often if builds are slow), and `render()` returns the last
finished figure. Screen switches, modals and key presses repaint from that cache for free.

A subclass keeps its data, calls `changed()` when it changes, and says how to draw:
`figure_inputs()` (a copy of the data, taken on the UI thread) and `draw_figure(plt, width,
height, theme, inputs)` (pure: runs in the worker).
"""

from __future__ import annotations

import threading
import time

from rich.text import Text
from textual import work
from textual.app import RenderResult
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot


class CachedPlot(PlotextPlot):
    def __init__(self, min_period: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self._min_period = min_period
        self._period = min_period
        self._dirty = True
        self._building = threading.Lock()
        self._figure: Text | None = None
        self._figure_size = (0, 0)
        self._last_build = 0.0
        self._wanted = 0      # bumped by every change of data or size
        self._drawn = -1      # the change the shown figure is of
        self.builds = 0
        self.waiting = False  # True: no data yet (nothing is drawn; "drawing…" is shown)

    # ---- what a subclass provides ---------------------------------------------------
    def figure_inputs(self) -> tuple:
        """A copy of what the figure shows (called on the UI thread)."""
        raise NotImplementedError

    def draw_figure(self, plt: Plot, width: int, height: int, theme: str, inputs: tuple) -> Text:
        """The whole figure as Rich text (called in the worker thread)."""
        raise NotImplementedError

    # ---- the machinery ----------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """A figure of the current size is shown (tests and snapshots wait for it)."""
        return self._drawn == self._wanted and self._figure_size == tuple(self.size)

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(0.25, self._maybe_build)

    def changed(self, now: bool = False) -> None:
        """The data changed: rebuild (at once with `now`, else within the period)."""
        self._dirty = True
        self._wanted += 1
        if now:
            self._last_build = 0.0
            self._maybe_build()

    def on_resize(self) -> None:
        self.changed(now=True)

    def _maybe_build(self) -> None:
        width, height = self.size
        if not self._dirty or self.waiting or width <= 0 or height <= 0:
            return
        if time.monotonic() - self._last_build < self._period or self._building.locked():
            return
        self._dirty = False
        self._last_build = time.monotonic()
        theme = self._get_plotext_theme_name(self.app.theme)
        self._build(self.figure_inputs(), width, height, theme, self._wanted)

    @work(thread=True, exclusive=True, group="cached-plot", exit_on_error=False)
    def _build(self, inputs: tuple, width: int, height: int, theme: str, wanted: int) -> None:
        with self._building:
            started = time.monotonic()
            figure = self.draw_figure(self.plt, width, height, theme, inputs)
            took = time.monotonic() - started
        try:
            self.app.call_from_thread(self._show, figure, (width, height), took, wanted)
        except RuntimeError:  # the app closed meanwhile
            pass

    def _show(self, figure: Text, size: tuple[int, int], took: float, wanted: int) -> None:
        self._figure, self._figure_size, self._drawn = figure, size, wanted
        self.builds += 1
        # Slow builds (a busy CPU) redraw less often: keep the chart under ~10% of a core.
        self._period = max(self._min_period, 10 * took)
        if size != tuple(self.size):  # resized while drawing: redraw at once, not after the period
            self._dirty = True
            self._last_build = 0.0
        self.refresh()

    def render(self) -> RenderResult:
        if self._figure is None:
            return Text("drawing…", style="dim")
        return self._figure
