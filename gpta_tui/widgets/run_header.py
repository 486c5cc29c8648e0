"""RunHeader: two dense lines at the top of the dashboard.

Line 1: session, mode, status (and why) · TA usage, elapsed time, device.
Line 2: epoch and phase, the phase's progress (bar, count, ETA), the best validation figure and
the test figures. The header is fitted to its width: pieces take shorter forms, then the least
important ones go, so phase, epoch, progress, best and test stay visible (in that order of
priority) down to 80 columns. Every figure names its split (val / test).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from gpta_tui.dashboard import DashboardState
from gpta_tui.formatting import STATUS_ICON, STATUS_STYLE, duration, one_line, score

PHASE_LABEL = {
    "setup": "setting up", "training": "training student", "validating": "validating",
    "collecting": "collecting prefixes", "windows": "building windows",
    "finetuning": "fine-tuning TA", "testing": "testing", "done": "done",
}
SHORT_METRIC = {"accuracy": "acc", "f1": "f1", "exact_match": "em", "rougeL": "rL"}


def _metric(metrics: dict, name: str) -> float | None:
    value = metrics.get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class Piece:
    """One header item: its forms, longest first; the last one may be empty (droppable)."""

    forms: list[Text]
    priority: int  # lower: kept longer
    choice: int = 0

    @property
    def text(self) -> Text:
        return self.forms[self.choice]

    @property
    def width(self) -> int:
        return self.text.cell_len


def fit(pieces: list[Piece], width: int, gap: int = 2) -> list[Piece]:
    """Shorten, then drop, the least important pieces until the row fits `width`."""
    def total() -> int:
        shown = [p for p in pieces if p.width]
        return sum(p.width for p in shown) + gap * max(0, len(shown) - 1)

    # One step shorter at a time, least important first, so abbreviations spread evenly.
    order = sorted(pieces, key=lambda p: -p.priority)
    while total() > width:
        piece = next((p for p in order if p.choice < len(p.forms) - 1
                      and p.choice == min(q.choice for q in order if q.choice < len(q.forms) - 1)),
                     None)
        if piece is None:
            break
        piece.choice += 1
    return [p for p in pieces if p.width]


def _figures(state: DashboardState) -> tuple[Piece | None, Piece | None]:
    """(best validation, test) pieces."""
    metric, short = state.metric, SHORT_METRIC.get(state.metric, state.metric[:4])
    best_value = state.best.get("score") if state.best else None
    best = None
    if isinstance(best_value, (int, float)):
        epoch = state.best.get("epoch")
        best = Piece([
            Text.assemble(("best val ", "dim"), (f"{metric} {score(best_value)}", "bold green"),
                          (f" (epoch {epoch})", "dim")),
            Text.assemble(("best val ", "dim"), (f"{short} {score(best_value)}", "bold green"),
                          (f" (e{epoch})", "dim")),
            Text.assemble(("val ", "dim"), (f"{short} {best_value:.3f}", "bold green")),
        ], priority=3)
    test = None
    finished = state.finished
    if finished is not None and finished.test_metrics:
        value = score(_metric(finished.test_metrics, metric))
        plain = _metric(finished.test_metrics_no_prefix or {}, metric) if finished.best_prefix else None
        extra = Text(f" (no prefix {score(plain)})", "dim") if plain is not None else Text("")
        test = Piece([
            Text.assemble(("test ", "dim"), (f"{metric} {value}", "bold cyan"), extra),
            Text.assemble(("test ", "dim"), (f"{metric} {value}", "bold cyan")),
            Text.assemble(("test ", "dim"), (f"{short} {value}", "bold cyan")),
        ], priority=2 if state.status == "finished" else 4)
    return best, test


def _loading(state: DashboardState, now: float) -> tuple[RenderableType, Piece]:
    """The models are loading: what, since when, and (once a load of the same models was timed
    on this machine, or for the first dequantization) a percentage and the time left."""
    since = state.setup_since
    step = state.setup_step or "loading the models"
    elapsed = now - since if since else 0.0
    took = duration(elapsed) if since else ""
    expected = state.load_expected_s() if since else None
    if not expected:
        return ProgressBar(total=None, pulse=True, animation_time=now), Piece([
            Text.assemble((one_line(step, 70), "yellow"), (f"  {took}", "bold")),
            Text.assemble((one_line(step, 40), "yellow"), (f"  {took}", "bold")),
            Text(took, style="bold")], priority=1)
    fraction = min(0.99, elapsed / expected)
    left = expected - elapsed
    eta = f"ETA {duration(left)}" if left >= 1 else f"over by {duration(-left)}"
    pct = f"{100 * fraction:.0f}%"
    return ProgressBar(total=1000, completed=round(1000 * fraction)), Piece([
        Text.assemble((one_line(step, 60), "yellow"), (f"  {pct}  {eta}", "bold"),
                      (f"  ({took})", "dim")),
        Text.assemble((one_line(step, 34), "yellow"), (f"  {pct}  {eta}", "bold")),
        Text(f"{pct}  {eta}", style="bold")], priority=1)


def _progress(state: DashboardState, now: float) -> tuple[RenderableType | None, Piece | None]:
    """(bar, count) of what the run is doing now, or (None, None)."""
    job = state.active_job
    if state.loading or (state.status == "loading" and state.phase == "setup"):
        return _loading(state, now)
    if state.ta_waiting is not None and state.status == "running":
        request, since, model = state.ta_waiting
        waited = duration(now - since)
        return None, Piece([
            Text.assemble(("waiting for the TA ", "yellow"),
                          (f"(request #{request}, {one_line(model or state.ta_model_in_use, 30)}) ", "dim"),
                          (waited, "bold yellow")),
            Text.assemble(("TA request ", "yellow"), (f"#{request} ", "dim"), (waited, "bold yellow")),
            Text.assemble(("TA ", "yellow"), (waited, "bold yellow"))], priority=1)
    if state.phase == "finetuning" and job is not None and job.total_steps and state.live:
        eta = f"  ETA {duration(job.eta_s)}" if job.eta_s is not None else ""
        return (ProgressBar(total=job.total_steps, completed=min(job.step, job.total_steps)),
                Piece([Text(f"job {job.step}/{job.total_steps}{eta}", style="bold"),
                       Text(f"{job.step}/{job.total_steps}", style="bold")], priority=1))
    done, all_ = state.progress_done, state.progress_total
    if all_ and state.live:
        eta = f"  ETA {duration(state.eta_s())}" if state.status == "running" else ""
        pct = f"{100.0 * done / all_:.0f}%"
        return (ProgressBar(total=all_, completed=min(done, all_)),
                Piece([Text(f"{done}/{all_} {pct}{eta}", style="bold"),
                       Text(f"{done}/{all_}{eta}", style="bold"),
                       Text(f"{done}/{all_}", style="bold")], priority=1))
    return None, None


def status_text(state: DashboardState) -> Text:
    return Text(f"{STATUS_ICON.get(state.status, '·')} {state.status}",
                style=STATUS_STYLE.get(state.status, ""))


def identity_row(state: DashboardState, now: float, width: int) -> Table:
    left = Text.assemble(("◆ ", "bold magenta"), (state.name or "new session", "bold"),
                         ("  ", ""), (state.mode or "-", "magenta"), ("  ", ""), status_text(state))
    if state.status_reason and state.status in ("failed", "interrupted", "stopped", "loading"):
        left.append(f"  {one_line(state.status_reason, 200)}", "dim")
    tokens = f"{state.ta_tokens} tok" + (f" · ${state.ta_cost:.4f}" if state.ta_cost else "")
    pieces = [
        Piece([Text.assemble(("elapsed ", "dim"), (duration(state.elapsed_s(now)), "bold")),
               Text(duration(state.elapsed_s(now)), style="bold")], priority=1),
        Piece([Text.assemble(("TA ", "dim"), (f"{state.ta_requests} req", "bold")), Text("")],
              priority=2),
        Piece([Text(state.device or "-", style="bold"), Text("")], priority=3),
        Piece([Text(tokens, style="bold"), Text("")], priority=4),
        Piece([Text.assemble(("examples sent ", "dim"),
                             (str(state.examples_sent),
                              "bold green" if not state.examples_sent else "bold yellow")),
               Text("")], priority=5),
    ]
    order = [pieces[1], pieces[3], pieces[4], pieces[0], pieces[2]]
    room = max(0, width - min(left.cell_len, 30) - 1)
    kept = fit(order, room, gap=3)
    right = Text(" · ", "dim").join(p.text for p in kept)
    row = Table.grid(expand=True, padding=(0, 1))
    row.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    row.add_column(justify="right", no_wrap=True)
    row.add_row(left, right)
    return row


def progress_row(state: DashboardState, now: float, width: int) -> Table:
    total = state.epochs_total
    phase = PHASE_LABEL.get(state.phase, state.phase)
    where = Piece([Text.assemble(("epoch ", "dim"), (f"{state.epoch or '-'}/{total or '-'}", "bold"),
                                 ("  ", ""), (phase, "cyan")),
                   Text.assemble((f"e{state.epoch or '-'}/{total or '-'} ", "bold"),
                                 (phase.split()[0], "cyan"))], priority=0)
    bar, count = _progress(state, now)
    best, test = _figures(state)
    pieces = [p for p in (where, count, best, test) if p is not None]
    bar_min = 6 if bar is not None else 0
    kept = fit(pieces, max(0, width - bar_min - (2 if bar is not None else 0)))
    row = Table.grid(expand=True, padding=(0, 2))
    cells: list[RenderableType] = []
    for piece in kept:
        if piece is where:
            row.add_column(no_wrap=True)
            cells.append(piece.text)
            if bar is not None:
                row.add_column(ratio=1, min_width=bar_min)
                cells.append(bar)
        else:
            row.add_column(no_wrap=True, justify="right" if piece in (best, test) else "left")
            cells.append(piece.text)
    if bar is None:
        row.add_column(ratio=1)
        cells.insert(1 + (count in kept), Text(""))
    row.add_row(*cells)
    return row


class RunHeader(Static):
    """Re-rendered on state changes, on resize and once a second (elapsed time); cheap."""

    def __init__(self, clock: Callable[[], float] = time.time, **kwargs) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self._state: DashboardState | None = None

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick)

    def _tick(self) -> None:
        if self._state is not None and (self._state.status == "running" or self._state.loading
                                        or self._state.status == "loading"):
            self.update_from(self._state)

    def on_resize(self) -> None:
        if self._state is not None:
            self.update_from(self._state)

    def update_from(self, state: DashboardState) -> None:
        self._state = state
        # Fixed height: never worth a layout pass (this runs every second and on every step).
        self.update(self.render_state(state, self._clock(), self.content_region.width or 120),
                    layout=False)

    @staticmethod
    def render_state(state: DashboardState, now: float, width: int = 120) -> Group:
        return Group(identity_row(state, now, width), progress_row(state, now, width))
