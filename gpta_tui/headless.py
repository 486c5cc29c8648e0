"""Headless rendering of engine events with rich: progress bars and a final summary.

Used by `gpta run` / `gpta resume`. It is an ordinary event listener: it never touches the
engine's internals.

While the models load (setup phase until RunStarted) it shows what is loading with a
percentage and ETA once a load of the same models was timed on this machine (the TUI's
remembered load times, gpta_tui/prefs.py; the first Gemma dequantization counts its typical
2 minutes), else only the time so far: no invented percentage. Each load is timed for the
next one (`expect_load`).
"""

from __future__ import annotations

import time
from typing import Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from engine import events as ev
from engine.errors import strip_control
from gpta_tui.formatting import one_line


def lit(value: object) -> str:
    """Text from users, files or the TA as Rich prints it literally (markup escaped, control
    characters dropped)."""
    return escape(strip_control(value))


class _LoadBar(ProgressColumn):
    """The loading bar: filled by the expected load time, pulsing when there is none."""

    def __init__(self, view: "HeadlessView") -> None:
        super().__init__()
        self.view = view

    def render(self, task) -> ProgressBar:
        fraction, _ = self.view.load_status()
        if fraction is None:
            return ProgressBar(total=None, pulse=True, width=40)
        return ProgressBar(total=1000, completed=round(1000 * fraction), width=40)


class _LoadInfo(ProgressColumn):
    def __init__(self, view: "HeadlessView") -> None:
        super().__init__()
        self.view = view

    def render(self, task) -> Text:
        return Text(self.view.load_status()[1], style="bold")


class HeadlessView(ev.EventHandler):
    """Listener that shows a run in a terminal (or plain lines when not a TTY)."""

    def __init__(self, console: Console | None = None, verbose: bool = False,
                 clock: Callable[[], float] = time.time):
        self.console = console or Console(stderr=True)
        self.verbose = verbose
        self.clock = clock
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=self.console, transient=True)
        self._task = None
        self._epochs = 0
        self.finished: ev.RunFinished | None = None
        # loading (see the module docstring)
        self.prefs = None
        self.load_estimates: dict[str, float] = {}
        self.setup_since: float | None = None
        self.dequantize_at: float | None = None
        self.loaded_in: float | None = None  # this load's duration, once over
        self.loading = Progress(TextColumn("[bold]{task.description}"), _LoadBar(self),
                                _LoadInfo(self), console=self.console, transient=True)
        self._load_task = None

    def expect_load(self, config: dict, resumed: bool, prefs=None) -> None:
        """Show load progress from the remembered time of the same models and remember this
        load's time (`prefs`: a gpta_tui.prefs.Prefs, default the user's)."""
        from gpta_tui.prefs import Prefs, load_estimates

        self.prefs = prefs if prefs is not None else Prefs()
        self.load_estimates = load_estimates(self.prefs, config, resumed)

    def load_status(self, now: float | None = None) -> tuple[float | None, str]:
        """(fraction done or None when never timed, "NN%  ETA m:ss" or the time so far)."""
        from gpta_tui.formatting import duration
        from gpta_tui.prefs import expected_load_s

        if self.setup_since is None:
            return None, ""
        elapsed = max(0.0, (self.clock() if now is None else now) - self.setup_since)
        expected = expected_load_s(self.load_estimates, self.setup_since, self.dequantize_at)
        if not expected:
            return None, duration(elapsed)
        left = expected - elapsed
        eta = f"ETA {duration(left)}" if left >= 1 else f"over by {duration(-left)}"
        fraction = min(0.99, elapsed / expected)
        return fraction, f"{100 * fraction:.0f}%  {eta}"

    # listener -------------------------------------------------------------------------
    def __call__(self, event: ev.Event) -> None:
        self.handle(event)

    def close(self) -> None:
        self.progress.stop()
        self.loading.stop()

    def _loading_step(self, step: str) -> None:
        """Show (or retitle) the loading bar; a plain line when the console is no terminal."""
        if not self.console.is_terminal:
            return
        if self._load_task is None:
            self.loading.start()
            self._load_task = self.loading.add_task(lit(step), total=None)
        else:
            self.loading.update(self._load_task, description=lit(step))

    def _bar(self, description: str, total: int) -> None:
        if self._task is not None:
            self.progress.remove_task(self._task)
        self.progress.start()
        self._task = self.progress.add_task(description, total=total or None, info="")

    def _say(self, text: str) -> None:
        """Print a line; callers escape any text that did not come from this module."""
        self.console.print(text, highlight=False)

    # events ---------------------------------------------------------------------------
    def on_run_started(self, e: ev.RunStarted) -> None:
        if self.setup_since is not None:  # the models are loaded: time it for next time
            from gpta_tui.formatting import duration
            from gpta_tui.prefs import load_key

            self.loaded_in = max(0.0, e.ts - self.setup_since)
            dequantized = self.dequantize_at is not None
            expected = self.load_estimates.get("dequantize" if dequantized else "plain")
            self.loading.stop()
            self._load_task = None
            self.setup_since = self.dequantize_at = None
            self._say(f"[dim]models loaded in {duration(self.loaded_in)}"
                      + (f" (last time {duration(expected)})" if expected else "") + "[/]")
            if self.prefs is not None:
                self.prefs.remember_load(load_key(e.config, e.resumed, dequantized), self.loaded_in)
        self._epochs = e.config["loop"]["epochs"]
        data, student, ta = e.config["data"], e.config["student"], e.config["ta"]
        verb = "resuming" if e.resumed else "starting"
        teacher = "none" if e.mode == "baseline" else f"{ta['backend']}:{ta['model']}"
        self._say(f"[bold]{verb} {lit(e.name or 'run')}[/]: " + lit(
            f"mode {e.mode}, dataset {data['dataset']} "
            f"({data['train_size']} train / {data['val_size']} val / {data['test_size']} test), "
            f"student {student['model']}, TA {teacher}, device {e.device}"))

    def on_phase(self, e: ev.PhaseChanged) -> None:
        if e.phase == "setup" and self.setup_since is None and self._epochs == 0:
            from gpta_tui.formatting import duration

            self.setup_since = e.ts
            plain = self.load_estimates.get("plain")
            if not self.console.is_terminal:
                self._say("[dim]loading the data and the models"
                          + (f" (took {duration(plain)} last time)" if plain else "") + "[/]")
            self._loading_step("loading the data and the models")
        if e.phase in ("training", "collecting", "finetuning", "windows", "testing"):
            self._bar(f"epoch {e.epoch}/{self._epochs} {e.phase}", e.total)

    def on_train_step(self, e: ev.TrainStep) -> None:
        if self._task is not None:
            self.progress.update(self._task, completed=e.epoch_step, total=e.epoch_steps,
                                 info=f"loss {e.loss:.4f}")

    def on_progress(self, e: ev.Progress) -> None:
        if self._task is not None:
            self.progress.update(self._task, completed=e.done, total=e.total)

    def on_validation(self, e: ev.ValidationResult) -> None:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in e.metrics.items())
        self._say(lit(f"epoch {e.epoch}: validation {metrics} with prefix {e.prefix!r}"))

    def on_prefix_scored(self, e: ev.PrefixScored) -> None:
        if self._task is not None:
            self.progress.update(self._task, info=lit(f"{e.score:.4f} {e.prefix[:40]!r}"))
        if self.verbose:
            self._say(f"  {e.score:.4f}  {lit(e.prefix)}" + ("  (known)" if e.reused else ""))

    def on_prefix_accuracy(self, e: ev.PrefixFindingAccuracy) -> None:
        self._say(f"epoch {e.epoch}: TA prefix-finding accuracy {e.accuracy:.2%} "
                  f"({e.better}/{e.generated} new prefixes beat the best shown)")

    def on_history(self, e: ev.HistoryUpdated) -> None:
        pass

    def on_windows(self, e: ev.WindowsBuilt) -> None:
        self._say(lit(f"epoch {e.epoch}: {len(e.windows)} dialogue-gradient windows -> {e.path} (in the session folder)"))

    def on_finetune(self, e: ev.FinetuneUpdate) -> None:
        if e.status == "running" and e.total_steps and self._task is not None:
            self.progress.update(self._task, completed=e.step, total=e.total_steps,
                                 info=f"loss {e.loss:.4f}" if e.loss is not None else "")
            return
        if e.message or e.status in ("succeeded", "failed", "cancelled", "timeout", "skipped"):
            self._say(lit(f"epoch {e.epoch}: fine-tune ({e.backend}) {e.job_id or '-'} {e.status}"
                          + (f": {e.message}" if e.message else "")))

    def on_ta_model(self, e: ev.TAModelChanged) -> None:
        self._say(lit(f"epoch {e.epoch}: TA now answers with {e.model}"))

    def on_description(self, e: ev.DescriptionChanged) -> None:
        self._say(f"description v{e.version} applies from TA request {e.applies_from_request}")

    def on_notice(self, e: ev.Notice) -> None:
        if self.setup_since is not None and e.level == "info":
            if e.message.startswith("dequantizing") and self.dequantize_at is None:
                self.dequantize_at = e.ts
            self._loading_step(one_line(e.message, 70))
        style = {"error": "red", "warning": "yellow"}.get(e.level, "dim")
        self._say(f"[{style}]{lit(e.level)}: {lit(e.message)}[/]")

    def on_finished(self, e: ev.RunFinished) -> None:
        self.finished = e
        self.close()
        if e.summary.get("epochs") or e.status == "finished":
            self.console.print(summary_table(e))


def summary_table(e: ev.RunFinished) -> Table:
    metric = e.summary.get("metric", "accuracy")
    table = Table(title=lit(f"Run {e.status}" + (f" — {e.reason}" if e.reason else "")),
                  show_header=True, header_style="bold")
    table.add_column("epoch", justify="right")
    table.add_column("training prefix")
    table.add_column(f"val {metric}", justify="right")
    table.add_column("best prefix of epoch")
    table.add_column("best val", justify="right")
    table.add_column("TA acc.", justify="right")
    table.add_column("fine-tune")
    for r in e.summary.get("epochs", []):
        table.add_row(str(r["epoch"]), _short(r.get("prefix", "")), f"{r.get('val_score', 0):.4f}",
                      _short(r.get("best_prefix", "")),
                      f"{r['best_score']:.4f}" if "best_score" in r else "-",
                      f"{r['prefix_accuracy']:.0%}" if "prefix_accuracy" in r else "-",
                      (r.get("finetune") or {}).get("status", "-"))
    if e.test_metrics:
        table.caption = lit(f"best epoch {e.best_epoch}, prefix {e.best_prefix!r}: test "
                         + ", ".join(f"{k} {v:.4f}" for k, v in e.test_metrics.items())
                         + " | no prefix: "
                         + ", ".join(f"{k} {v:.4f}" for k, v in e.test_metrics_no_prefix.items())
                         + f" | TA requests {e.summary.get('ta_requests', 0)}, "
                         f"tokens {e.summary.get('ta_tokens', 0)}")
    return table


def _short(text: str, n: int = 48) -> str:
    text = text if len(text) <= n else text[: n - 1] + "…"
    return lit(text)
