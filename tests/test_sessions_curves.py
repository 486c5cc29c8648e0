"""curves.png: min/max buckets keep a long run's picture, the margins keep every text on the
picture, and an export copies a clean loss.jsonl as it is (sessions/curves.py, export)."""

from __future__ import annotations

import json
import math
import random

import pytest

from engine import events as ev
from sessions.curves import PNG_SIZE, curves_png, minmax_downsample, render_curves
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
    image, drawn = render_curves(loss, [(e, 0.6 + e / 100) for e in range(1, 6)], "accuracy", 5,
                                 "t")
    assert image.size == PNG_SIZE
    x0, y0, x1, y1 = drawn["plot"]
    columns = int(x1 - x0)
    for label in ("loss", "loss (smoothed)"):
        line = drawn["lines"][label]
        assert len(line) <= 2 * columns + 2   # one min/max bucket per pixel column
        assert line[0][0] == pytest.approx(x0 + (x1 - x0) * 0.05 / 1.1, abs=0.01)  # step 1
        assert line[-1][0] == pytest.approx(x1 - (x1 - x0) * 0.05 / 1.1, abs=0.01)  # the last
    # the spike is the raw line's top: the highest value sits 5% under the frame
    raw = drawn["lines"]["loss"]
    top = min(y for _, y in raw)
    assert top == pytest.approx(y0 + (y1 - y0) * 0.05 / 1.1, abs=0.01)
    spike_x = next(x for x, y in raw if y == top)
    assert spike_x == pytest.approx(x0 + (x1 - x0) * (0.05 + 20_000 / (PAPER_STEPS - 1)) / 1.1,
                                    abs=0.01)
    # and it is on the picture: the pixels there are not white
    assert image.getpixel((round(spike_x), round(top) + 2)) != (255, 255, 255)
    # the validation line, its points and the best epoch's star
    assert len(drawn["lines"]["val accuracy"]) == 5 and "best (epoch 5)" in drawn["lines"]
    # a short run: every point, as before
    short = _noisy(300)
    _, drawn = render_curves(short, [], "accuracy", None, "t")
    assert len(drawn["lines"]["loss"]) == 300 and "val accuracy" not in drawn["lines"]


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("scale, metric, val", [
    (1.0, "accuracy", [(1, 0.61), (2, 0.65), (3, 0.7)]),
    (1e-4, "macro_f1", [(1, 0.1234), (2, 0.1236)]),       # long tick labels on both sides
    (12.0, "rouge_l", [(1, 31.5), (2, 44.25)]),
    (0.5, "accuracy", []),                                 # no validation axis
    (1.0, "accuracy", [(1, 0.7)]),                         # one epoch
])
def test_every_text_of_the_png_is_on_it_and_none_overlaps(scale, metric, val):
    """Margins come from the tick labels: tick labels, axis labels, title and legend of
    typical and awkward ranges fit inside the picture, apart from each other."""
    loss = [(s, e, v * scale) for s, e, v in _noisy(2_000)]
    image, drawn = render_curves(loss, val, metric, val[-1][0] if val else None,
                                 "a-session-name: student loss and validation accuracy")
    width, height = image.size
    texts = drawn["texts"]
    names = [t for t, _ in texts]
    assert "training step" in names and "student loss" in names and "loss (smoothed)" in names
    assert (f"validation {metric}" in names) == bool(val)
    for text, box in texts:
        assert 0 <= box[0] and box[2] <= width and 0 <= box[1] and box[3] <= height, text
    for i, (a, box_a) in enumerate(texts):
        for b, box_b in texts[i + 1:]:
            assert not _overlap(box_a, box_b), (a, b)
    assert curves_png(loss, val, metric, None, "t")[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_points_and_non_finite_losses_still_draw():
    assert curves_png([], [], "accuracy", None, "empty")[:4] == b"\x89PNG"
    loss = [(1, 1, 0.5), (2, 1, float("nan")), (3, 1, float("inf")), (4, 1, 0.25)]
    _, drawn = render_curves(loss, [(1, float("nan"))], "accuracy", 1, "t")
    assert len(drawn["lines"]["loss"]) == 2 and "val accuracy" not in drawn["lines"]
    _, drawn = render_curves([(7, 1, 0.5)], [(1, 0.6)], "accuracy", 1, "one step")
    assert len(drawn["lines"]["loss"]) == 1 and "best (epoch 1)" in drawn["lines"]


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
