"""LossChart: student loss per step (raw + smoothed) and the validation metric per epoch.

A long run does not cost more to draw: the raw curve keeps each column's lowest and highest
loss (`minmax_downsample`), the smoothed one each column's mean (`downsample`).

The figure is built off the UI thread (`CachedPlot`). The tick helpers (`nice_ticks` from sessions.curves,
`one_per_row`, `int_ticks`) serve every chart of the app.
"""

from __future__ import annotations


from rich.text import Text
from textual_plotext.plot import Plot

from gpta_tui.dashboard import DashboardState
from gpta_tui.widgets.cached_plot import CachedPlot
from sessions.curves import downsample, minmax_downsample, nice_ticks, smooth


def chart_series(state: DashboardState) -> tuple[list[int], list[float], list[tuple[int, float]]]:
    """(steps, losses, [(step, validation value)]) of a dashboard state, ordered by step."""
    steps = sorted(state.losses)
    losses = [state.losses[s] for s in steps]
    return steps, losses, [(state.val_step.get(e, 0), v) for e, v in sorted(state.val.items())]


def int_ticks(lo: int, hi: int, width: int) -> list[int]:
    """About one tick per 12 columns, on whole steps."""
    if hi <= lo:
        return [lo]
    count = max(2, min(hi - lo + 1, (width - 12) // 12))
    return sorted({round(lo + i * (hi - lo) / (count - 1)) for i in range(count)})


def one_per_row(ticks: list[float], labels: list[str], lo: float, hi: float,
                rows: int) -> tuple[list[float], list[str]]:
    """The ticks that fall on distinct character rows of a `rows`-high axis over [lo, hi].
    Two ticks on one row would leave the choice of label to the plotting library (which then
    varies from run to run); keep the first of each row instead."""
    if hi <= lo:
        return ticks, labels
    seen: set[int] = set()
    kept: list[tuple[float, str]] = []
    for value, label in zip(ticks, labels):
        row = round((value - lo) / (hi - lo) * (rows - 1))
        if row not in seen and lo <= value <= hi:
            seen.add(row)
            kept.append((value, label))
    return [v for v, _ in kept], [lab for _, lab in kept]


LEGEND = ("[$text-muted]━ loss[/]  [cyan]━ smoothed[/]  [green]●─ val {metric}[/]"
          "  [yellow]│ best epoch[/]")


def draw(plt: Plot, steps: list[int], losses: list[float], val: list[tuple[int, float]],
         metric: str, width: int, height: int, theme: str, best_step: int | None = None) -> Text:
    """The whole figure as Rich text (pure: no widget state; safe in a worker thread).
    No legend inside the plot: the panel's subtitle carries it."""
    plt.clear_data()
    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme(theme)
    plt.xlabel("step")
    if not steps:
        plt.title("student loss · waiting for the first training step")
        return Text.from_ansi(plt.build())
    buckets = max(8, width - 14)
    plt.title(f"student loss ({len(steps)} steps) · validation {metric} per epoch")
    xs, ys = minmax_downsample(steps, losses, buckets)
    plt.plot(xs, ys, marker="braille", color="gray")
    xs_s, ys_s = downsample(steps, smooth(losses), buckets)
    plt.plot(xs_s, ys_s, marker="braille", color="cyan")
    ticks, labels = nice_ticks(min(losses), max(losses), max(2, min(5, (height - 6) // 2)))
    if ticks:
        plt.yticks(ticks, labels)
    if val:
        vx, vy = [float(x) for x, _ in val], [y for _, y in val]
        if len(val) > 1:
            plt.plot(vx, vy, marker="braille", color="green", yside="right")
        plt.scatter(vx, vy, marker="●", color="green", yside="right")
        lo, hi = min(vy), max(vy)
        pad = max(0.01, (0.1 - (hi - lo)) / 2)  # at least 0.1 of the metric on the axis
        lo, hi = lo - pad, hi + pad
        plt.ylim(lo, hi, yside="right")  # the tick rows below are computed for this range
        ticks, labels = one_per_row(*nice_ticks(lo, hi, max(2, min(5, (height - 6) // 2))),
                                    lo, hi, max(2, height - 6))
        if ticks:
            plt.yticks(ticks, labels, yside="right")
        plt.ylabel(f"val {metric}", yside="right")
    if best_step is not None:
        plt.vline(float(best_step), color="yellow")
    plt.ylabel("loss")
    plt.xticks(int_ticks(steps[0], steps[-1], width))
    return Text.from_ansi(plt.build())


class LossChart(CachedPlot):
    """The run's loss and validation curves (figures built off the UI thread: CachedPlot)."""

    def __init__(self, min_period: float = 1.0, **kwargs) -> None:
        super().__init__(min_period=min_period, **kwargs)
        self._steps: list[int] = []
        self._losses: list[float] = []
        self._val: list[tuple[int, float]] = []
        self._metric = "accuracy"
        self._best_step: int | None = None

    @property
    def point_count(self) -> int:
        """Training steps on the chart."""
        return len(self._steps)

    def update_from(self, state: DashboardState, now: bool = False) -> None:
        self._steps, self._losses, self._val = chart_series(state)
        self._metric = state.metric
        best_epoch = state.best.get("epoch") if state.best else None
        self._best_step = state.val_step.get(best_epoch) if best_epoch in state.val else None
        self.border_subtitle = LEGEND.format(metric=state.metric)
        self.changed(now)

    def figure_inputs(self) -> tuple:
        return (list(self._steps), list(self._losses), list(self._val), self._metric,
                self._best_step)

    def draw_figure(self, plt: Plot, width: int, height: int, theme: str, inputs: tuple) -> Text:
        steps, losses, val, metric, best_step = inputs
        return draw(plt, steps, losses, val, metric, width, height, theme, best_step)
