"""RunSummaryScreen: what a run came to, in one modal (opened when a live run finishes or
fails, and with `v` on an ended run's dashboard).

Test figures (with the no-prefix baseline and the prefix's gain when the engine measured it),
the best validation figures and epoch, the best prefix in full, the run time, epochs, TA
requests, tokens and cost, fine-tune jobs. The reason and the prefix come from the engine and
the TA (untrusted): shown as written, never parsed as markup. `y` copies the summary as plain
text; esc or enter closes it; q quits the app and ? opens the help, as everywhere.
"""

from __future__ import annotations

from collections import Counter

from rich.text import Text
from textual.binding import Binding

from gpta_tui.dashboard import DashboardState
from gpta_tui.formatting import (STATUS_STYLE, duration, printable, score, ta_usage_text,
                                 test_figure)
from gpta_tui.screens.text_view import TextViewScreen


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summary_text(state: DashboardState) -> Text:
    """The summary of an ended run (its RunFinished) as lines of label and value."""
    text = Text()
    finished = state.finished

    def line(label: str, value: str, style: str = "") -> None:
        text.append(f"{label:<14}", style="dim")
        text.append(printable(value), style=style)
        text.append("\n")

    status = finished.status if finished else state.status
    reason = finished.reason if finished else state.status_reason
    line("status", status + (f": {reason}" if reason else ""), STATUS_STYLE.get(status, ""))
    if finished is not None:
        base = finished.test_metrics_no_prefix or {}
        for metric, value in sorted((finished.test_metrics or {}).items()):
            value = _number(value)
            if value is None:
                continue
            line("test", test_figure(metric, value, _number(base.get(metric))), "bold cyan")
        if not finished.test_metrics:
            line("test", "not measured (the run did not reach the test)", "dim")
    best = state.best or {}
    best_score = _number(best.get("score"))
    if best_score is not None:
        line("best val", f"{state.metric} {score(best_score)} (epoch {best.get('epoch', '?')})",
             "green")
    for metric, value in sorted(((finished.val_metrics if finished else None) or {}).items()):
        if _number(value) is not None and metric != state.metric:
            line("", f"{metric} {score(_number(value))}", "green")
    line("epochs", f"{state.epoch}/{state.epochs_total}" if state.epochs_total else str(state.epoch))
    line("run time", duration(state.elapsed_s()))
    ta = ta_usage_text(state.ta_requests, state.ta_tokens, state.ta_cost)
    line("TA", f"{state.ta_model_in_use} · {ta}" if state.ta_requests else state.ta_model_in_use)
    if state.jobs:
        counts = Counter(job.status or "submitted" for job in state.jobs.values())
        line("fine-tune", "jobs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    prefix = (finished.best_prefix if finished and finished.best_prefix else "") or str(
        best.get("prefix") or "")
    text.append("\nbest prefix\n", style="dim")
    text.append(printable(prefix) if prefix else "none", style="" if prefix else "dim")
    return text


class RunSummaryScreen(TextViewScreen):
    # It opens by itself when the run has ended: q quits here (as before Modal), not closes.
    BINDINGS = [Binding("q", "app.quit", "Quit")]
    HINT = "y copy · esc close · q quit"

    def __init__(self, state: DashboardState) -> None:
        body = summary_text(state)
        super().__init__(f"{state.name}: run {state.finished.status if state.finished else state.status}",
                         body, body.plain, "the run summary")
