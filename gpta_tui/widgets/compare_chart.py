"""CompareChart: the validation curves of several sessions overlaid, one colour and marker
per session (SERIES; the compare view's legend and column heads use the same).

Drawn off the UI thread like the dashboard's chart (`CachedPlot`), with its tick helpers.
"""

from __future__ import annotations

from rich.text import Text
from textual_plotext.plot import Plot

from gpta_tui.formatting import literal
from gpta_tui.widgets.cached_plot import CachedPlot
from gpta_tui.widgets.loss_chart import int_ticks, one_per_row
from sessions.curves import nice_ticks

# (colour, marker) per session, in the order they were marked; shapes tell the sessions
# apart where colours do not (256-colour terminals, colour blindness).
SERIES = (("cyan", "●"), ("magenta", "■"), ("green", "▲"), ("yellow", "◆"), ("blue", "✚"),
          ("red", "★"))


def series_of(index: int) -> tuple[str, str]:
    return SERIES[index % len(SERIES)]


def series_label(index: int, name: str) -> Text:
    """'● name' in the session's colour (legend and column heads); the name as written."""
    colour, marker = series_of(index)
    return Text(f"{marker} ", style=colour) + literal(name, style=f"bold {colour}")


def legend(names: list[str]) -> Text:
    return Text("   ").join(series_label(i, name) for i, name in enumerate(names))


Curve = tuple[str, list[tuple[int, float]]]  # (session name, [(epoch, validation value)])


def draw_curves(plt: Plot, curves: list[Curve], metric: str, width: int, height: int,
                theme: str, note: str = "") -> Text:
    """Every session's validation metric per epoch on one pair of axes (pure; no legend
    inside the plot: the view prints it above)."""
    plt.clear_data()
    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme(theme)
    plt.xlabel("epoch")
    points = [(e, v) for _, curve in curves for e, v in curve]
    if not points:
        plt.title(f"validation {metric} per epoch · no validation results yet")
        return Text.from_ansi(plt.build())
    plt.title(f"validation {metric} per epoch" + (f" · {note}" if note else ""))
    for index, (_, curve) in enumerate(curves):
        if not curve:
            continue
        colour, marker = series_of(index)
        xs, ys = [float(e) for e, _ in curve], [v for _, v in curve]
        if len(curve) > 1:
            plt.plot(xs, ys, marker="braille", color=colour)
        plt.scatter(xs, ys, marker=marker, color=colour)
    values = [v for _, v in points]
    lo, hi = min(values), max(values)
    pad = max(0.01, (0.1 - (hi - lo)) / 2)  # at least 0.1 of the metric on the axis
    lo, hi = lo - pad, hi + pad
    plt.ylim(lo, hi)
    rows = max(2, height - 6)
    ticks, labels = one_per_row(*nice_ticks(lo, hi, max(2, min(5, (height - 6) // 2))),
                                lo, hi, rows)
    if ticks:
        plt.yticks(ticks, labels)
    epochs = sorted({e for e, _ in points})
    first, last = epochs[0], epochs[-1]
    if last > first:
        plt.xlim(first - 0.2, last + 0.2)
    plt.xticks(int_ticks(first, last, width))
    plt.ylabel(f"val {metric}")
    return Text.from_ansi(plt.build())


class CompareChart(CachedPlot):
    def __init__(self, **kwargs) -> None:
        super().__init__(min_period=0.0, **kwargs)
        self._curves: list[Curve] = []
        self._metric = "accuracy"
        self._note = ""  # e.g. sessions left out because they were scored by another metric
        self.waiting = True  # nothing to draw before the sessions are read (show_curves)

    def show_curves(self, curves: list[Curve], metric: str, note: str = "") -> None:
        self._curves = [(name, list(curve)) for name, curve in curves]
        self._metric, self._note = metric, note
        self.waiting = False
        self.changed(now=True)

    def figure_inputs(self) -> tuple:
        return (list(self._curves), self._metric, self._note)

    def draw_figure(self, plt: Plot, width: int, height: int, theme: str, inputs: tuple) -> Text:
        curves, metric, note = inputs
        return draw_curves(plt, curves, metric, width, height, theme, note)
