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


def curves_png(loss: list[tuple[int, int, float]], val: list[tuple[int, float]], metric: str,
               best_epoch: int | None, title: str) -> bytes:
    """The student loss (raw, smoothed) and validation per epoch, best epoch marked."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    points = sorted(loss)
    fig = Figure(figsize=(9, 4.8), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    steps = [p[0] for p in points]
    losses = [p[2] for p in points]
    if points:
        ax.plot(steps, losses, color="0.7", linewidth=1, label="loss")
        ax.plot(steps, smooth(losses), color="tab:blue", linewidth=2, label="loss (smoothed)")
    ax.set_xlabel("training step")
    ax.set_ylabel("student loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
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
        more_h, more_l = right.get_legend_handles_labels()
        handles, labels = handles + more_h, labels + more_l
    if handles:  # outside the plot, under it
        fig.legend(handles, labels, loc="lower center", ncol=len(handles), frameon=False)
    ax.set_title(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
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
