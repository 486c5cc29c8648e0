"""Loss and validation curves as files: CSV and a PNG chart (matplotlib, headless).

Used by `gpta export` (sessions/export.py) and the dashboard's "Export curves" command. Input
is plain data: loss points (step, epoch, loss) and validation points (epoch, value); the
validation of an epoch is drawn at that epoch's last training step.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable

from engine.errors import GptaError
from engine.fsutil import write_bytes_atomic


def _last_step(loss: list[tuple[int, int, float]]) -> dict[int, int]:
    last: dict[int, int] = {}
    for step, epoch, _ in loss:
        last[epoch] = max(last.get(epoch, 0), step)
    return last


def validation_csv(loss: list[tuple[int, int, float]], val: list[tuple[int, float]],
                   metric: str, best_epoch: int | None) -> str:
    last = _last_step(loss)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", "step", f"val_{metric}", "best"])
    for epoch, value in sorted(val):
        writer.writerow([epoch, last.get(epoch, ""), value, int(epoch == best_epoch)])
    return buf.getvalue()


def loss_csv(loss: list[tuple[int, int, float]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", "epoch", "loss"])
    writer.writerows(sorted(loss))
    return buf.getvalue()


def smooth(values: Iterable[float], weight: float = 0.9) -> list[float]:
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


def minmax_downsample(xs: list[int], ys: list[float], buckets: int
                      ) -> tuple[list[float], list[float]]:
    """The lowest and the highest point of each bucket, in step order, so a long run (31,250
    steps) draws as cheaply as a short one and still shows its spikes, which means hide.
    The first and the last point are kept too: the line spans the whole run."""
    if buckets <= 0 or len(xs) <= 2 * buckets:
        return list(map(float, xs)), list(ys)
    size = len(xs) / buckets
    out_x: list[float] = []
    out_y: list[float] = []
    for b in range(buckets):
        lo, hi = int(b * size), max(int((b + 1) * size), int(b * size) + 1)
        part = ys[lo:hi]
        i_min = lo + min(range(len(part)), key=part.__getitem__)
        i_max = lo + max(range(len(part)), key=part.__getitem__)
        ends = {0} if b == 0 else {len(xs) - 1} if b == buckets - 1 else set()
        for i in sorted({i_min, i_max} | ends):
            out_x.append(float(xs[i]))
            out_y.append(ys[i])
    return out_x, out_y


# The PNG's plot area is about 800 pixels wide: past 1,000 buckets (at most 2,000 points per
# line) a longer run draws the same picture, only slower.
PNG_BUCKETS = 1000
PNG_SIZE = (9.0, 4.8)   # inches, at 110 dpi


def _margins(fig, axes_and_sides) -> tuple[float, float]:
    """(left, right) margins in inches for the vertical axes: the widest tick label of each
    side, measured with the renderer's font metrics (a few strings), plus the ticks, the pads
    and the axis label. `tight_layout` would find the same room but renders every text of the
    figure once more for it (a third of the render)."""
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    renderer = fig.canvas.get_renderer()
    dpi = fig.dpi
    room = {"left": 0.3, "right": 0.3}   # nothing on that side: a little air
    for ax, side in axes_and_sides:
        axis = ax.yaxis
        labels = axis.get_major_formatter().format_ticks(axis.get_majorticklocs())
        font = FontProperties(size=rcParams["ytick.labelsize"])
        widest = max((renderer.get_text_width_height_descent(s, font, ismath=False)[0]
                      for s in labels if s), default=0.0) / dpi
        label_font = FontProperties(size=rcParams["axes.labelsize"])
        label_h = renderer.get_text_width_height_descent("Xg", label_font, ismath=False)[1] / dpi
        ticks = (rcParams["ytick.major.size"] + rcParams["ytick.major.pad"]
                 + rcParams["axes.labelpad"]) / 72
        room[side] = 0.12 + label_h + ticks + widest
    return room["left"], room["right"]


def curves_figure(loss: list[tuple[int, int, float]], val: list[tuple[int, float]],
                  metric: str, best_epoch: int | None, title: str):
    """The student loss (raw, smoothed) and validation per epoch, best epoch marked, as a
    matplotlib `Figure` (not drawn yet).
    A long run is drawn through min/max buckets, as the dashboard's chart: each line keeps
    each bucket's lowest and highest value (spikes survive; the smoothed line is computed over
    every point first), so the picture is the one all points draw at this resolution.
    Only `matplotlib.figure` and the Agg canvas are imported (no pyplot); the side margins
    come from the tick labels' widths (`_margins`), not from `tight_layout`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = sorted(loss)
    width, height = PNG_SIZE
    fig = Figure(figsize=PNG_SIZE, dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    steps = [p[0] for p in points]
    losses = [p[2] for p in points]
    if points:
        ax.plot(*minmax_downsample(steps, losses, PNG_BUCKETS), color="0.7", linewidth=1,
                label="loss")
        ax.plot(*minmax_downsample(steps, smooth(losses), PNG_BUCKETS), color="tab:blue",
                linewidth=2, label="loss (smoothed)")
    ax.set_xlabel("training step")
    ax.set_ylabel("student loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    sides = [(ax, "left")]
    if val:
        last = _last_step(points)
        right = ax.twinx()
        xs = [last.get(e, 0) for e, _ in sorted(val)]
        ys = [v for _, v in sorted(val)]
        right.plot(xs, ys, color="tab:green", marker="o", linewidth=1.5, label=f"val {metric}")
        right.set_ylabel(f"validation {metric}")
        for epoch, value in sorted(val):
            if epoch == best_epoch:
                right.plot([last.get(epoch, 0)], [value], marker="*", markersize=16,
                           color="tab:orange", linestyle="none", label=f"best (epoch {epoch})")
        sides.append((right, "right"))
        more_h, more_l = right.get_legend_handles_labels()
        handles, labels = handles + more_h, labels + more_l
    if handles:  # outside the plot, under it
        fig.legend(handles, labels, loc="lower center", ncol=len(handles), frameon=False)
    ax.set_title(title)
    # title on top; the step label and the legend under the plot. The height is set first:
    # it decides the y ticks, whose labels decide the side margins.
    fig.subplots_adjust(bottom=1.0 / height, top=1 - 0.4 / height)
    left, right_in = _margins(fig, sides)
    fig.subplots_adjust(left=left / width, right=1 - right_in / width)
    return fig


def curves_png(loss: list[tuple[int, int, float]], val: list[tuple[int, float]], metric: str,
               best_epoch: int | None, title: str) -> bytes:
    """`curves_figure` as PNG bytes (matplotlib's Agg canvas, headless)."""
    buf = io.BytesIO()
    curves_figure(loss, val, metric, best_epoch, title).savefig(buf, format="png")
    return buf.getvalue()


def write_curves(out_dir: Path | str, loss: list[tuple[int, int, float]],
                 val: list[tuple[int, float]], metric: str, best_epoch: int | None,
                 title: str, *, with_loss_csv: bool = True) -> list[Path]:
    """Write curves.png, validation.csv (and loss.csv) into `out_dir`. Returns the paths."""
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        files = {"curves.png": curves_png(loss, val, metric, best_epoch, title),
                 "validation.csv": validation_csv(loss, val, metric, best_epoch).encode()}
        if with_loss_csv:
            files["loss.csv"] = loss_csv(loss).encode()
        written = []
        for name, data in files.items():
            write_bytes_atomic(out / name, data)
            written.append(out / name)
    except OSError as exc:
        raise GptaError(f"cannot write the curves to {str(out)!r}: {exc.strerror or exc}",
                        "choose a folder you can write to") from exc
    return written
