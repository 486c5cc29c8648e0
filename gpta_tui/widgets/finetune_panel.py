"""FinetunePanel: the TA fine-tune job (backend, id, status history, progress/loss for local
jobs), the TA model in use and the TA's prefix-finding accuracy per epoch."""

from __future__ import annotations

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from gpta_tui.dashboard import DashboardState, JobView
from gpta_tui.formatting import JOB_STYLE, clock, duration, one_line


def render_job(job: JobView) -> Group:
    parts: list = [Text.assemble(
        ("job ", "dim"), (job.job_id or "–", "bold"), ("  ", ""), (job.backend, "magenta"),
        ("  epoch ", "dim"), (str(job.epoch), "bold"), ("  ", ""),
        (job.status, JOB_STYLE.get(job.status, "")),
    )]
    if job.total_steps:
        line = Table.grid(expand=True, padding=(0, 1))
        line.add_column(ratio=1)
        line.add_column(no_wrap=True)
        extra = f"{job.step}/{job.total_steps}"
        if job.loss is not None:
            extra += f"  loss {job.loss:.4f}"
        if job.active and job.eta_s is not None:
            extra += f"  ETA {duration(job.eta_s)}"
        line.add_row(ProgressBar(total=job.total_steps, completed=min(job.step, job.total_steps)),
                     Text(extra, style="bold"))
        parts.append(line)
    elif job.loss is not None:
        parts.append(Text(f"loss {job.loss:.4f}", style="bold"))
    if job.model:
        parts.append(Text.assemble(("model ", "dim"), one_line(job.model, 70)))
    trail = Text()
    for i, (ts, status, message) in enumerate(job.history):
        if i:
            trail.append(" → ", "dim")
        trail.append(f"{clock(ts)} ", "dim")
        trail.append(status, JOB_STYLE.get(status, ""))
    parts.append(trail)
    if job.message and job.status in ("failed", "cancelled", "timeout", "skipped"):
        parts.append(Text(one_line(job.message, 200), style=JOB_STYLE.get(job.status, "")))
    return Group(*parts)


def render_finetune(state: DashboardState) -> Group:
    backend, why_not = state.finetune_plan()
    if state.mode == "baseline":
        return Group(Text("baseline mode: the student trains without a prefix; no TA, no fine-tuning",
                          style="dim"))
    parts: list = [Text.assemble(
        ("TA ", "dim"), (state.ta_backend or "-", "magenta"), (" · ", "dim"),
        (one_line(state.ta_model_in_use or "-", 40), "bold"),
        (" (tuned)" if state.ta_model else " (base)" if backend != "none" else "", "dim"),
    )]
    jobs = list(state.jobs.values())
    if jobs:
        parts.append(render_job(jobs[-1]))
        if len(jobs) > 1:
            older = Text("earlier: ", style="dim")
            for job in jobs[-2::-1][:4]:
                older.append(f"e{job.epoch} {job.job_id or '–'} ", "dim")
                older.append(job.status + "  ", JOB_STYLE.get(job.status, ""))
            parts.append(older)
    elif backend == "none":
        parts.append(Text(f"fine-tuning is off ({why_not})" if why_not else "fine-tuning is off",
                          style="dim"))
    else:
        parts.append(Text("no fine-tune job yet: one starts after the epoch's windows are built",
                          style="dim"))
    if state.prefix_accuracy:
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="dim")
        table.add_column("epoch", justify="right")
        table.add_column("prefix-finding acc", justify="right")
        table.add_column("better/generated", justify="right")
        for epoch, (acc, generated, better) in sorted(state.prefix_accuracy.items()):
            table.add_row(str(epoch), f"{acc:.1%}", f"{better}/{generated}")
        parts.append(table)
    return Group(*parts)


class FinetunePanel(VerticalScroll):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._rev = -1

    def compose(self):
        yield Static(id="finetune-text")

    def on_mount(self) -> None:
        self.border_title = "TA fine-tuning"

    def update_from(self, state: DashboardState) -> None:
        rev = (state.revisions["finetune"], state.revisions["header"] if state.active_job else 0)
        if rev == self._rev:
            return
        self._rev = rev
        self.query_one("#finetune-text", Static).update(render_finetune(state))
