"""RunHeader: session, mode, status, phase, epoch x/N, phase progress with ETA, elapsed, device."""

from __future__ import annotations

import time
from typing import Callable

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from gpta_tui.dashboard import DashboardState
from gpta_tui.formatting import STATUS_ICON, STATUS_STYLE, duration, score

def _metric(metrics: dict, name: str) -> float | None:
    value = metrics.get(name)
    return float(value) if isinstance(value, (int, float)) else None


PHASE_LABEL = {
    "setup": "setting up", "training": "training student", "validating": "validating",
    "collecting": "collecting prefixes", "windows": "building windows",
    "finetuning": "fine-tuning TA", "testing": "testing", "done": "done",
}


class RunHeader(Static):
    """Two dense lines at the top of the dashboard. Re-rendered on state changes and once a
    second (elapsed time); cheap: one Rich grid."""

    def __init__(self, clock: Callable[[], float] = time.time, **kwargs) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self._state: DashboardState | None = None

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick)

    def _tick(self) -> None:
        if self._state is not None and self._state.status == "running":
            self.update_from(self._state)

    def update_from(self, state: DashboardState) -> None:
        self._state = state
        # Fixed height: never worth a layout pass (this runs every second and on every step).
        self.update(self.render_state(state, self._clock()), layout=False)

    @staticmethod
    def render_state(state: DashboardState, now: float) -> Group:
        style = STATUS_STYLE.get(state.status, "")
        title = Text.assemble(
            ("◆ ", "bold magenta"), (state.name or "new session", "bold"),
            ("  ", ""), (state.mode or "-", "magenta"),
            ("  ", ""), (f"{STATUS_ICON.get(state.status, '·')} {state.status}", style),
        )
        if state.status_reason and state.status in ("failed", "interrupted", "stopped"):
            title.append(f"  {state.status_reason}", "dim")
        clock = Text.assemble(
            ("TA ", "dim"), (f"{state.ta_requests} req · {state.ta_tokens} tok", "bold"),
            (f" · ${state.ta_cost:.4f}" if state.ta_cost else "", "bold"),
            (" · examples sent ", "dim"),
            (str(state.examples_sent), "bold green" if not state.examples_sent else "bold yellow"),
            (" · elapsed ", "dim"), (duration(state.elapsed_s(now)), "bold"),
            (" · ", "dim"), (state.device or "-", "bold"),
        )
        top = Table.grid(expand=True, padding=(0, 1))
        top.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        top.add_column(justify="right", no_wrap=True)
        top.add_row(title, clock)

        total = state.epochs_total
        where = Text.assemble(("epoch ", "dim"), (f"{state.epoch or '-'}/{total or '-'}", "bold"),
                              ("  ", ""), (PHASE_LABEL.get(state.phase, state.phase), "cyan"))
        done, all_ = state.progress_done, state.progress_total
        finished = state.finished
        job = state.active_job
        if finished is not None and finished.test_metrics:
            test = score(_metric(finished.test_metrics, state.metric))
            bar = Text.assemble(("test ", "dim"), (f"{state.metric} {test}", "bold cyan"))
            if finished.test_metrics_no_prefix and finished.best_prefix:
                plain = score(_metric(finished.test_metrics_no_prefix, state.metric))
                bar.append(f"  (no prefix {plain})", "dim")
            count = Text("")
        elif state.ta_waiting is not None and state.status == "running":
            request, since, model = state.ta_waiting
            bar = Text.assemble(("waiting for the TA ", "yellow"),
                                (f"(request #{request}, {model or state.ta_model_in_use}) ", "dim"),
                                (duration(now - since), "bold yellow"))
            count = Text("")
        elif state.phase == "finetuning" and job is not None and job.total_steps and state.live:
            # The fine-tune job's own steps say more than the phase's example count.
            bar = ProgressBar(total=job.total_steps, completed=min(job.step, job.total_steps))
            eta = f"  ETA {duration(job.eta_s)}" if job.eta_s is not None else ""
            count = Text(f"job {job.step}/{job.total_steps}{eta}", style="bold")
        elif all_ and state.live:
            bar: ProgressBar | Text = ProgressBar(total=all_, completed=min(done, all_))
            eta = f"  ETA {duration(state.eta_s())}" if state.status == "running" else ""
            count = Text(f"{done}/{all_} {100.0 * done / all_:3.0f}%{eta}", style="bold")
        else:
            bar, count = Text(""), Text("")
        best = state.best.get("score") if state.best else None
        best_text = Text.assemble(("best ", "dim"), (f"{state.metric} {score(best)}", "bold green"))
        if best is not None:
            best_text.append(f" (epoch {state.best.get('epoch')})", "dim")
        bottom = Table.grid(expand=True, padding=(0, 2))
        bottom.add_column(width=30, no_wrap=True)
        bottom.add_column(ratio=1)
        bottom.add_column(no_wrap=True)
        bottom.add_column(justify="right", no_wrap=True)
        bottom.add_row(where, bar, count, best_text)
        return Group(top, bottom)
