"""curves.png: min/max buckets keep a long run's picture, fixed margins keep every text on
the figure, and an export copies a clean loss.jsonl as it is (sessions/curves.py, export)."""

from __future__ import annotations

import json
import math
import random

import pytest

from engine import events as ev
from sessions.curves import PNG_BUCKETS, curves_figure, curves_png, minmax_downsample, smooth
from sessions.export import export_session
from sessions.losslog import LOSS_FILE
from sessions.store import SessionStore

from test_sessions_helpers import SyntheticRun, feed, small_config

PAPER_STEPS = 31_250


def _noisy(n: int, seed: int = 3) -> list[tuple[int, int, float]]:
    rng = random.Random(seed)
    return [(s, 1 + (s - 1) * 5 // n, 1 / (1 + 0.001 * s) + rng.random() * 0.05)
            for s in range(1, n + 1)]


def test_minmax_downsample_keeps_every_buckets_extremes_in_step_order():
    rng = random.Random(1)
    xs = list(range(1, 10_001))
    ys = [rng.gauss(0, 1) for _ in xs]
    ys[4321] = 50.0
    ys[777] = -50.0
    out_x, out_y = minmax_downsample(xs, ys, 100)
    assert len(out_x) == len(out_y) <= 202
    assert (out_x[0], out_x[-1]) == (1, 10_000)  # the line spans the whole run
    assert out_x == sorted(out_x) and len(set(out_x)) == len(out_x)
    assert max(out_y) == 50.0 and min(out_y) == -50.0
    for b in range(100):  # each bucket of 100 steps: its lowest and highest point are drawn
        part = ys[b * 100:(b + 1) * 100]
        kept = [y for x, y in zip(out_x, out_y) if b * 100 < x <= (b + 1) * 100]
        assert min(kept) == min(part) and max(kept) == max(part)
    # short series are drawn point by point
    assert minmax_downsample([1, 2, 3], [3.0, 1.0, 2.0], 100) == ([1.0, 2.0, 3.0], [3.0, 1.0, 2.0])


def test_the_png_of_a_papers_length_run_draws_buckets_with_the_spikes():
    loss = _noisy(PAPER_STEPS)
    loss[20_000] = (loss[20_000][0], loss[20_000][1], 7.5)
    fig = curves_figure(loss, [(e, 0.6 + e / 100) for e in range(1, 6)], "accuracy", 5, "t")
    raw, smoothed = fig.axes[0].get_lines()
    values = [p[2] for p in loss]
    for line, series in ((raw, values), (smoothed, smooth(values))):
        ys = list(line.get_ydata())
        assert len(ys) <= 2 * PNG_BUCKETS + 2
        assert max(ys) == max(series) and min(ys) == min(series)
        assert line.get_xdata()[0] == 1 and line.get_xdata()[-1] == PAPER_STEPS
    # a short run: every point, as before
    short = _noisy(300)
    raw, _ = curves_figure(short, [], "accuracy", None, "t").axes[0].get_lines()
    assert list(raw.get_ydata()) == [p[2] for p in short]


@pytest.mark.parametrize("scale, metric, val", [
    (1.0, "accuracy", [(1, 0.61), (2, 0.65), (3, 0.7)]),
    (1e-4, "macro_f1", [(1, 0.1234), (2, 0.1236)]),       # six-character tick labels
    (12.0, "rouge_l", [(1, 31.5), (2, 44.25)]),
    (0.5, "accuracy", []),                                 # no validation axis
])
def test_every_text_of_the_png_stays_on_the_figure(scale, metric, val):
    """The margins are fixed, not measured: tick labels, axis labels, title and legend of
    typical and awkward ranges must still fit inside the picture."""
    loss = [(s, e, v * scale) for s, e, v in _noisy(2_000)]
    fig = curves_figure(loss, val, metric, val[-1][0] if val else None,
                        "a-session-name: student loss and validation accuracy")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    drawn = fig.get_tightbbox(canvas.get_renderer())  # every drawn artist, in inches
    width, height = fig.get_size_inches()
    assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01, drawn
    assert drawn.x1 <= width + 0.01 and drawn.y1 <= height + 0.01, drawn
    # and the margins are not wasted: the drawing reaches near every edge
    assert drawn.x0 < 0.3 and drawn.y0 < 0.3 and drawn.y1 > height - 0.3
    labels = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    assert "training step" in labels and ("loss (smoothed)" in labels)
    assert curves_png(loss, val, metric, None, "t")[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_export_copies_a_clean_loss_log_and_re_encodes_any_other(gpta_home, tmp_path):
    store = SessionStore()
    h = store.create(small_config("src"))
    feed(h, SyntheticRun(h.config).events())
    h.close()
    log = store.session_dir("src") / LOSS_FILE
    clean = log.read_bytes()
    want = store.open("src").loss_points()
    assert (export_session(store.open("src"), tmp_path / "a") / LOSS_FILE).read_bytes() == clean

    lines = clean.decode().splitlines(keepends=True)
    odd = json.loads(lines[0])
    odd["note"] = "not a point key"          # accepted (display data), never exported
    damaged = [json.dumps(odd) + "\n", *lines[2:], lines[1], "not json\n", '{"torn": ']
    log.write_text("".join(damaged))
    reader = store.open("src")
    assert reader.loss_points() == want and reader.loss_log_problem
    exported = (export_session(reader, tmp_path / "b") / LOSS_FILE).read_text().splitlines()
    points = [json.loads(line) for line in exported]
    assert [p["step"] for p in points] == sorted(p["step"] for p in want)
    assert all("note" not in p for p in points) and len(points) == len(want)

    # a writer's points move on: its export holds what it holds, not the file it opened
    log.write_bytes(clean)
    w = store.open("src", write=True)
    w.listener(ev.TrainStep(epoch=9, step=10_000, epoch_step=1, epoch_steps=1, loss=math.pi,
                            lr=1e-3))
    text = w.loss_log_text()
    w.close()
    assert text.startswith(clean.decode()) and json.loads(text.splitlines()[-1])["loss"] == math.pi
