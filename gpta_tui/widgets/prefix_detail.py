"""PrefixDetail: the history row under the cursor, in full (wrapped), under the table.

`render_prefix_view` is the same prefix at full length for the prefix view modal (Enter).
"""

from __future__ import annotations

import math

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from gpta_tui.dashboard import DashboardState, PrefixInfo
from gpta_tui.formatting import clock, printable


def _score(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def facts(info: PrefixInfo, state: DashboardState, rank: int | None = None) -> Text:
    """One line: rank, validation score, epoch, source, marks."""
    line = Text()
    if rank:
        line.append(f"#{rank} ", "bold")
    line.append("val ", "dim")
    line.append(f"{state.metric} {_score(info.score)}", "bold green")
    line.append(f" · epoch {info.epoch}", "dim")
    line.append(f" · {info.source}", "dim")
    if info.prefix == state.training_prefix:
        line.append(" · ▶ training", "bold")
    if info.beat_shown_best or info.prefix in state.beat_best:
        line.append(" · ↑ beat the best shown to the TA", "bold yellow")
    return line


def render_prefix_view(info: PrefixInfo, state: DashboardState, rank: int | None = None) -> Group:
    """The prefix view: full text, score, every metric, epoch, request, beat-the-best."""
    parts: list = [Text(printable(info.prefix) or "(empty prefix)", style="bold"), Text("")]
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    if rank:
        table.add_row("rank", f"{rank} of {len(state.history)}")
    table.add_row(f"val {state.metric}", Text(_score(info.score), style="bold green"))
    for name, value in sorted(info.metrics.items()):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and name != state.metric:
            table.add_row(f"val {name}", f"{value:.4f}")
    table.add_row("epoch", str(info.epoch))
    table.add_row("produced by", info.source + (" · score reused" if info.reused else ""))
    beat = info.beat_shown_best or info.prefix in state.beat_best
    table.add_row("beat the best shown", Text("yes ↑", style="bold yellow") if beat else Text("no"))
    table.add_row("training prefix", "yes ▶" if info.prefix == state.training_prefix else "no")
    if info.ts:
        table.add_row("scored at", clock(info.ts))
    table.add_row("length", f"{len(info.prefix)} characters, {len(info.prefix.split())} words")
    parts.append(table)
    return Group(*parts)


class PrefixDetail(Static):
    """Follows the history table's cursor: facts on the first line, then the whole prefix."""

    def show(self, info: PrefixInfo | None, state: DashboardState, rank: int | None) -> None:
        if info is None:
            self.update(Text("No prefix selected.", style="dim"))
            return
        self.update(Group(facts(info, state, rank),
                          Text(printable(info.prefix) or "(empty prefix)", style="italic")))
