"""Loss and validation curves as files: CSV and a PNG chart (Pillow, headless).

Used by `gpta export` (sessions/export.py) and the dashboard's "Export curves" command. Input
is plain data: loss points (step, epoch, loss) and validation points (epoch, value); the
validation of an epoch is drawn at that epoch's last training step.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import io
import math
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


def nice_ticks(lo: float, hi: float, count: int = 4) -> tuple[list[float], list[str]]:
    """About `count` round tick values covering [lo, hi] and labels with just enough decimals."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [], []
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / max(1, count - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    values = [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if step / mag == 2.5 else 0)
    return values, [f"{v:.{decimals}f}" for v in values]



# ---- curves.png ---------------------------------------------------------------------------
# Drawn with Pillow: matplotlib's import alone took 0.3 s of CPU, a third of `gpta export`.
# The picture is the one matplotlib drew before (same size, colours, axes, ticks, labels,
# legend under the plot), at twice the size and then reduced, so lines and text are smooth.

PNG_SIZE = (990, 528)   # pixels: 9 x 4.8 in at 110 dpi, as before
_S = 2                   # drawn at twice the size
_PT = 110 / 72 * _S      # one typographic point (matplotlib's unit for widths and sizes)
INK, WHITE, GRID = (0, 0, 0), (255, 255, 255), (235, 235, 235)
RAW, SMOOTH, VAL, BEST = (179, 179, 179), (31, 119, 180), (44, 160, 44), (255, 127, 14)


@functools.lru_cache(maxsize=8)
def _font(size: int):
    """DejaVu Sans (matplotlib's font, found without importing it), else Pillow's own."""
    from PIL import ImageFont

    spec = importlib.util.find_spec("matplotlib")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def _finite(values) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _axis_range(values: list[float]) -> tuple[float, float]:
    """The values' span with 5% air on each side (a flat series gets +-0.5)."""
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        return lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float, count: int, whole: bool = False) -> tuple[list[float], list[str]]:
    values, labels = nice_ticks(lo, hi, count)
    if whole and values and all(float(v).is_integer() for v in values):
        labels = [str(int(v)) for v in values]
    return values, labels


class _Canvas:
    """One picture being drawn: text with its boxes kept (tests check they fit)."""

    def __init__(self, size: tuple[int, int]):
        from PIL import Image, ImageDraw

        self.image = Image.new("RGB", (size[0] * _S, size[1] * _S), WHITE)
        self.draw = ImageDraw.Draw(self.image)
        self.texts: list[tuple[str, tuple[float, float, float, float]]] = []

    def size_of(self, text: str, font) -> tuple[int, int]:
        left, top, right, bottom = font.getbbox(text)
        return right - left, bottom - top

    def text(self, xy: tuple[float, float], text: str, font, anchor: str,
             fill=INK) -> None:
        self.draw.text(xy, text, font=font, fill=fill, anchor=anchor)
        box = self.draw.textbbox(xy, text, font=font, anchor=anchor)
        self.texts.append((text, tuple(v / _S for v in box)))

    def vertical_text(self, center: tuple[float, float], text: str, font) -> None:
        """Text turned a quarter left (an axis label), centred on `center`."""
        from PIL import Image, ImageDraw

        w, h = self.size_of(text, font)
        strip = Image.new("L", (w + 4 * _S, h + 4 * _S), 0)
        ImageDraw.Draw(strip).text((strip.width / 2, strip.height / 2), text, font=font,
                                   fill=255, anchor="mm")
        strip = strip.rotate(90, expand=True)
        x, y = int(center[0] - strip.width / 2), int(center[1] - strip.height / 2)
        self.image.paste(INK, (x, y, x + strip.width, y + strip.height), strip)
        self.texts.append((text, (x / _S, y / _S, (x + strip.width) / _S, (y + strip.height) / _S)))


def _star(cx: float, cy: float, outer: float) -> list[tuple[float, float]]:
    inner = outer * 0.4
    return [(cx + (outer if i % 2 == 0 else inner) * math.sin(i * math.pi / 5),
             cy - (outer if i % 2 == 0 else inner) * math.cos(i * math.pi / 5)) for i in range(10)]


def render_curves(loss: list[tuple[int, int, float]], val: list[tuple[int, float]], metric: str,
                  best_epoch: int | None, title: str):
    """The student loss (raw, smoothed) and validation per epoch, best epoch starred, as a
    Pillow image, and what was drawn: {"texts": [(text, box)], "lines": {label: [(x, y)]},
    "plot": box} in the image's pixels (for tests).
    A long run is drawn through min/max buckets, as the dashboard's chart: each line keeps
    each pixel column's lowest and highest value (spikes survive; the smoothed line is
    computed over every point first), so the picture is the one all points would draw.
    Non-finite losses are left out of the picture (loss.csv keeps them)."""
    from PIL import Image

    points = sorted(p for p in loss if math.isfinite(p[2]))
    steps = [p[0] for p in points]
    losses = [p[2] for p in points]
    smoothed = smooth(losses)
    last = _last_step(sorted(loss))
    vals = [(last.get(e, 0), v, e) for e, v in sorted(val) if math.isfinite(v)]
    width, height = PNG_SIZE
    c = _Canvas(PNG_SIZE)
    tick_font, label_font, title_font = _font(round(10 * _PT)), _font(round(10 * _PT)), \
        _font(round(12 * _PT))
    tick, pad, gap = round(3.5 * _PT), 10 * _S, 6 * _S

    # ranges and ticks; the margins follow from the widest tick labels
    xlo, xhi = _axis_range([float(s) for s in steps] + [float(x) for x, _, _ in vals]) \
        if steps or vals else (0.0, 1.0)
    ylo, yhi = _axis_range(losses)
    y_ticks, y_labels = _ticks(ylo, yhi, 9)
    v_ticks, v_labels = _ticks(*_axis_range([v for _, v, _ in vals]), 9) if vals else ([], [])
    vlo, vhi = _axis_range([v for _, v, _ in vals])
    line_h = c.size_of("0123456789", tick_font)[1]
    label_h = c.size_of("Xg", label_font)[1]
    left = pad + label_h + gap + max((c.size_of(s, tick_font)[0] for s in y_labels), default=0) + gap + tick
    right = (pad + label_h + gap + max((c.size_of(s, tick_font)[0] for s in v_labels), default=0)
             + gap + tick) if vals else 3 * pad
    legend_h = 2 * label_h
    top = pad + c.size_of(title, title_font)[1] + 2 * gap
    bottom = tick + gap + line_h + 2 * gap + label_h + 2 * gap + legend_h + pad
    x0, y0, x1, y1 = left, top, width * _S - right, height * _S - bottom
    x_ticks, x_labels = _ticks(xlo, xhi, max(3, int((x1 - x0) / (95 * _S))), whole=True)

    def px(x: float) -> float:
        return x0 + (x - xlo) / (xhi - xlo) * (x1 - x0)

    def py(y: float, lo: float = ylo, hi: float = yhi) -> float:
        return y1 - (y - lo) / (hi - lo) * (y1 - y0)

    d = c.draw
    for x, text in zip(x_ticks, x_labels):
        if xlo <= x <= xhi:
            d.line([(px(x), y0), (px(x), y1)], fill=GRID, width=_S)
            d.line([(px(x), y1), (px(x), y1 + tick)], fill=INK, width=_S)
            c.text((px(x), y1 + tick + gap), text, tick_font, "mt")
    for y, text in zip(y_ticks, y_labels):
        if ylo <= y <= yhi:
            d.line([(x0, py(y)), (x1, py(y))], fill=GRID, width=_S)
            d.line([(x0 - tick, py(y)), (x0, py(y))], fill=INK, width=_S)
            c.text((x0 - tick - gap, py(y)), text, tick_font, "rm")
    for v, text in zip(v_ticks, v_labels):
        if vlo <= v <= vhi:
            d.line([(x1, py(v, vlo, vhi)), (x1 + tick, py(v, vlo, vhi))], fill=INK, width=_S)
            c.text((x1 + tick + gap, py(v, vlo, vhi)), text, tick_font, "lm")

    drawn: dict[str, list[tuple[float, float]]] = {}
    buckets = int(x1 - x0) // _S   # one bucket per pixel column of the final picture
    for label, series, colour, w in (("loss", losses, RAW, 1), ("loss (smoothed)", smoothed, SMOOTH, 2)):
        if series:
            xs, ys = minmax_downsample(steps, series, buckets)
            line = [(px(x), py(y)) for x, y in zip(xs, ys)]
            d.line(line if len(line) > 1 else line * 2, fill=colour, width=round(w * _PT),
                   joint="curve")
            drawn[label] = [(x / _S, y / _S) for x, y in line]
    if vals:
        line = [(px(x), py(v, vlo, vhi)) for x, v, _ in vals]
        if len(line) > 1:
            d.line(line, fill=VAL, width=round(1.5 * _PT), joint="curve")
        r = 3 * _PT
        for x, y in line:
            d.ellipse([x - r, y - r, x + r, y + r], fill=VAL)
        drawn[f"val {metric}"] = [(x / _S, y / _S) for x, y in line]
        for x, v, epoch in vals:
            if epoch == best_epoch:
                d.polygon(_star(px(x), py(v, vlo, vhi), 8 * _PT), fill=BEST)
                drawn[f"best (epoch {epoch})"] = [(px(x) / _S, py(v, vlo, vhi) / _S)]
    d.rectangle([x0, y0, x1, y1], outline=INK, width=_S)

    c.text(((x0 + x1) / 2, gap + pad / 2), title, title_font, "mt")
    c.text(((x0 + x1) / 2, y1 + tick + gap + line_h + 2 * gap), "training step", label_font, "mt")
    c.vertical_text((pad + label_h / 2, (y0 + y1) / 2), "student loss", label_font)
    if vals:
        c.vertical_text((width * _S - pad - label_h / 2, (y0 + y1) / 2), f"validation {metric}",
                        label_font)

    # the legend, centred under the plot
    entries = [(label, kind) for label, kind in (
        ("loss", "raw"), ("loss (smoothed)", "smooth"), (f"val {metric}", "val"))
        if label in drawn]
    entries += [(label, "best") for label in drawn if label.startswith("best")]
    sample, spacing = 30 * _S, 28 * _S
    widths = [sample + gap + c.size_of(label, label_font)[0] for label, _ in entries]
    x = (width * _S - sum(widths) - spacing * max(0, len(widths) - 1)) / 2
    ly = height * _S - pad - legend_h / 2
    for (label, kind), w in zip(entries, widths):
        mid = x + sample / 2
        if kind == "best":
            d.polygon(_star(mid, ly, 8 * _PT), fill=BEST)
        else:
            colour, lw = {"raw": (RAW, 1), "smooth": (SMOOTH, 2), "val": (VAL, 1.5)}[kind]
            d.line([(x, ly), (x + sample, ly)], fill=colour, width=round(lw * _PT))
            if kind == "val":
                r = 3 * _PT
                d.ellipse([mid - r, ly - r, mid + r, ly + r], fill=VAL)
        c.text((x + sample + gap, ly), label, label_font, "lm")
        x += w + spacing

    image = c.image.resize(PNG_SIZE, Image.Resampling.LANCZOS)
    return image, {"texts": c.texts, "lines": drawn, "plot": (x0 / _S, y0 / _S, x1 / _S, y1 / _S)}


def curves_png(loss: list[tuple[int, int, float]], val: list[tuple[int, float]], metric: str,
               best_epoch: int | None, title: str) -> bytes:
    """`render_curves` as PNG bytes."""
    image, _ = render_curves(loss, val, metric, best_epoch, title)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
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
