"""LossChart: student loss per step (raw + smoothed) and the validation metric per epoch."""

from __future__ import annotations

from textual_plotext import PlotextPlot

from gpta_tui.dashboard import DashboardState


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, value in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * value
        out.append(avg / (1 - weight**i))
    return out


def downsample(xs: list[int], ys: list[float], buckets: int) -> tuple[list[float], list[float]]:
    """Mean per bucket so a long run stays readable (and cheap to draw) in a narrow chart."""
    if buckets <= 0 or len(xs) <= buckets:
        return list(map(float, xs)), list(ys)
    size = len(xs) / buckets
    out_x, out_y = [], []
    for b in range(buckets):
        lo, hi = int(b * size), max(int((b + 1) * size), int(b * size) + 1)
        out_x.append(sum(xs[lo:hi]) / (hi - lo))
        out_y.append(sum(ys[lo:hi]) / (hi - lo))
    return out_x, out_y


class LossChart(PlotextPlot):
    """Replots at most `max_fps` times a second, and only when the curves changed: building a
    plotext figure is the most expensive thing on the dashboard."""

    def __init__(self, max_fps: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self._period = 1.0 / max_fps
        self._dirty = False
        self._steps: list[int] = []
        self._losses: list[float] = []
        self._val: list[tuple[int, float]] = []
        self._metric = "accuracy"

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(self._period, self._flush)
        self._replot()

    @property
    def point_count(self) -> int:
        return len(self._steps)

    def update_from(self, state: DashboardState, now: bool = False) -> None:
        steps = sorted(state.losses)
        self._steps = steps
        self._losses = [state.losses[s] for s in steps]
        self._val = [(state.val_step.get(e, 0), v) for e, v in sorted(state.val.items())]
        self._metric = state.metric
        self._dirty = True
        if now:
            self._flush()

    def _flush(self) -> None:
        if self._dirty:
            self._dirty = False
            self._replot()

    def on_resize(self) -> None:
        self._replot()

    def _replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel("step")
        if not self._steps:
            plt.title("student loss · waiting for the first training step")
            self.refresh()
            return
        width = max(10, self.size.width - 12)
        xs, ys = downsample(self._steps, self._losses, width)
        plt.title(f"student loss ({len(self._steps)} steps) · validation {self._metric} per epoch")
        plt.plot(xs, ys, marker="braille", color="gray", label="loss")
        xs_s, ys_s = downsample(self._steps, smooth(self._losses), width)
        plt.plot(xs_s, ys_s, marker="braille", color="cyan", label="smoothed")
        if self._val:
            vx = [float(x) for x, _ in self._val]
            vy = [y for _, y in self._val]
            plt.plot(vx, vy, marker="●", color="green", yside="right", label=f"val {self._metric}")
            plt.ylabel(self._metric, yside="right")
        plt.ylabel("loss")
        plt.xticks(self._int_ticks(self._steps[0], self._steps[-1]))
        self.refresh()

    def _int_ticks(self, lo: int, hi: int) -> list[int]:
        """About one tick per 12 columns, on whole steps."""
        count = max(2, min(hi - lo + 1, (self.size.width - 12) // 12))
        if hi <= lo:
            return [lo]
        return sorted({round(lo + i * (hi - lo) / (count - 1)) for i in range(count)})
