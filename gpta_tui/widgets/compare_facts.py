"""CompareFacts: marked sessions side by side, one column each (stacked one block each when
the columns would be too narrow): status, the settings that tell them apart (mode, seed,
sizes and every other config key that differs), best validation figure (and the selection
figure that chose the best), test figures with the no-prefix figure and the gain, TA use and
cost, and the best prefix in full.

The figures are `sessions.compare.session_result`'s, the same reading `gpta compare`'s report
makes, and they are worded as the run summary words them (`formatting.test_figure`,
`ta_usage_text`). Names, prefixes, reasons and config values come from the sessions' files
(untrusted): shown as written, never parsed as markup, without control characters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from engine.config import RunConfig
from engine.errors import GptaError
from engine.experiments import RunResult, dotted_differences
from gpta_tui.formatting import (STATUS_ICON, STATUS_STYLE, literal, one_line, printable, score,
                                 ta_usage_text, test_figure)
from gpta_tui.widgets.compare_chart import series_label

LABEL_WIDTH = (12, 20)  # the label column: at least, at most (a long config key folds)
MIN_COLUMN = 22  # narrower than this per session: one block per session instead of columns
# Config keys with a row of their own (or nothing to compare: the name differs by definition).
OWN_ROWS = {"name", "mode", "seed", "data.train_size", "data.dataset", "student.model",
            "student.tuning", "ta.backend", "ta.model", "loop.epochs"}
MAX_DIFFERENCES = 12


@dataclass
class Row:
    label: str
    values: list[Text]
    differs: bool = False  # a setting whose values differ between the sessions


def _get(config: dict, dotted: str) -> object:
    value: object = config
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _setting(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _ta(config: dict) -> str:
    """'backend:model' of the TA that writes the run's prefixes, else why there is none."""
    ta = config.get("ta") if isinstance(config.get("ta"), dict) else {}
    try:
        if not RunConfig.from_dict(config, "session config").uses_ta:
            return f"none ({config.get('mode')})"
    except GptaError:
        pass
    if not ta.get("backend") or ta.get("backend") == "none":
        return "none"
    return f"{ta['backend']}:{ta.get('model')}" if ta.get("model") else str(ta["backend"])


def compare_rows(results: list[RunResult], statuses: list[str]) -> list[Row]:
    """The rows of the comparison, one value per session (`statuses`: the words shown)."""
    readable = [r for r in results if r.status != "unreadable"]
    rows: list[Row] = []

    def row(label: str, values: list[str | Text], setting: bool = False) -> None:
        texts = [v if isinstance(v, Text) else literal(v) for v in values]
        plain = {t.plain for t, r in zip(texts, results) if r.status != "unreadable"}
        rows.append(Row(label, texts, setting and len(plain) > 1))

    row("status", [literal(f"{STATUS_ICON.get(s, '·')} {s}", style=STATUS_STYLE.get(s, ""))
                   + (literal(f": {one_line(r.status_reason, 200)}") if r.status_reason else Text())
                   for r, s in zip(results, statuses)])

    def settings(label: str, fn) -> None:
        row(label, [fn(r) if r.status != "unreadable" else "-" for r in results], setting=True)

    settings("mode", lambda r: r.run.arm)
    settings("seed", lambda r: str(r.run.seed))
    settings("train size", lambda r: str(r.run.train_size))
    settings("dataset", lambda r: _setting(_get(r.config, "data.dataset")))
    settings("student", lambda r: f"{_get(r.config, 'student.model')} "
                                  f"({_get(r.config, 'student.tuning')})")
    settings("TA", lambda r: _ta(r.config))
    differing: list[str] = []
    for other in readable[1:]:
        for key in dotted_differences(readable[0].config, other.config):
            if key not in OWN_ROWS and key not in differing:
                differing.append(key)
    for key in sorted(differing)[:MAX_DIFFERENCES]:
        settings(key, lambda r, key=key: _setting(_get(r.config, key)))
    if len(differing) > MAX_DIFFERENCES:
        rows.append(Row(f"+{len(differing) - MAX_DIFFERENCES} more", [
            Text("settings differ (gpta show --json NAME)", style="dim") for _ in results]))

    row("epochs", [f"{r.epochs_done}/{_get(r.config, 'loop.epochs')}"
                   if r.status != "unreadable" else "-" for r in results])
    row("best val", [literal(f"{r.metric} {score(float(r.best_val))}"
                          + (f" (epoch {r.best_epoch})" if r.best_epoch else ""), style="green")
                     if isinstance(r.best_val, (int, float)) else Text("-", style="dim")
                     for r in results])
    # The figure that chose the checkpoint and test prefix (the selection split; the sessions
    # list, the run header and the run summary show this one as the session's best).
    if any(isinstance(r.best_selection, (int, float)) for r in results):
        row("best selection", [literal(f"{r.metric} {score(float(r.best_selection))}", style="green")
                               if isinstance(r.best_selection, (int, float))
                               else Text("-", style="dim") for r in results])
    metrics = sorted({m for r in results for m in r.test_metrics},
                     key=lambda m: (m not in {r.metric for r in results}, m))
    for i, metric in enumerate(metrics or [""]):
        values: list[Text] = []
        for r in results:
            value = r.test_metrics.get(metric)
            if value is not None:
                values.append(literal(test_figure(metric, value, r.test_metrics_no_prefix.get(metric)),
                                   style="bold cyan"))
            else:
                values.append(Text("-" if r.test_metrics or i else "not measured", style="dim"))
        row("test" if i == 0 else "", values)
    row("TA use", [ta_usage_text(r.ta_requests, r.ta_tokens, r.ta_cost) if r.ta_requests
                   else Text("no requests", style="dim") for r in results])
    row("best prefix", [Text(printable(r.best_prefix)) if r.best_prefix
                        else Text("none", style="dim") for r in results])
    return rows


def _label(row: Row) -> Text:
    """The row's name (a config key for the other settings: shown as written), marked ≠ when
    the sessions differ there; a key too long for the column folds (no space to break at)."""
    mark = ("≠ " if len(row.label) + 2 <= LABEL_WIDTH[1] else "≠") if row.differs else ""
    return literal(mark + row.label, style="bold yellow" if row.differs else "dim")


def render_facts(results: list[RunResult], statuses: list[str], width: int) -> RenderableType:
    """Columns side by side when each gets MIN_COLUMN cells, else one block per session."""
    rows = compare_rows(results, statuses)
    if not results:
        return Text("")
    label = max(LABEL_WIDTH[0], min(LABEL_WIDTH[1], max(len(_label(r)) for r in rows)))
    if (width - label - 2) // len(results) >= MIN_COLUMN:
        table = Table(box=None, padding=(0, 1), expand=True, show_edge=False)
        table.add_column("", width=label, overflow="fold")
        for i, r in enumerate(results):
            table.add_column(series_label(i, r.run.session), ratio=1, overflow="fold")
        for row in rows:
            table.add_row(_label(row), *row.values)
        return table
    blocks: list[RenderableType] = []
    for i, r in enumerate(results):
        block = Table(box=None, padding=(0, 1), expand=True, show_header=False, show_edge=False)
        block.add_column(width=label, overflow="fold")
        block.add_column(ratio=1, overflow="fold")
        for row in rows:
            block.add_row(_label(row), row.values[i])
        blocks += [series_label(i, r.run.session), block, Text("")]
    return Group(*blocks)


class CompareFacts(Static):
    """Re-lays itself out (columns or blocks) when its width changes."""

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.results: list[RunResult] = []
        self.statuses: list[str] = []
        self._width = 0

    def show(self, results: list[RunResult], statuses: list[str]) -> None:
        self.results, self.statuses = results, statuses
        self._width = self.content_region.width or self.app.size.width
        self.update(render_facts(results, statuses, self._width))

    def on_resize(self) -> None:
        if self.results and self.content_region.width != self._width:
            self.show(self.results, self.statuses)
