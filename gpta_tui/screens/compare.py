"""CompareScreen: sessions marked on the sessions screen (space), side by side (C).

The validation curves overlaid (`CompareChart`), then the sessions in columns
(`CompareFacts`): status, the settings that differ, best validation figure, test figures with
the no-prefix figure and gain, TA use and cost, best prefix in full. The sessions are read
through the sessions layer (`GptaApp.compare_sessions` -> `sessions.compare.read_sessions`,
the reading `gpta compare`'s report makes) in a thread worker, so a long session does not
freeze the keys. It follows running sessions: every 2 s a few stat calls and lock probes tell
whether any session changed, and only then are they read again, one read at a time. Everything scrolls (80x24 up);
`y` copies the comparison as plain text; esc goes back to the sessions.
"""

from __future__ import annotations

import io

from rich.console import Console
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from engine.errors import strip_control
from engine.experiments import RunResult
from gpta_tui.clipboard import copy_text
from gpta_tui.formatting import literal, score
from gpta_tui.widgets.compare_chart import CompareChart, legend
from gpta_tui.widgets.compare_facts import CompareFacts, render_facts
from gpta_tui.widgets.key_footer import KeyFooter
from sessions.status import shown


def chart_metric(results: list[RunResult]) -> tuple[str, int]:
    """The metric the chart draws (the most common; a tie goes to the first marked session's)
    and how many sessions it leaves out: curves of different metrics share no axis."""
    names = [strip_control(r.metric) for r in results if r.metric]
    if not names:
        return "metric", 0
    drawn = max(dict.fromkeys(names), key=names.count)  # first-seen order breaks ties
    return drawn, sum(1 for r in results if strip_control(r.metric) != drawn)


def metric_names(results: list[RunResult]) -> list[str]:
    """The sessions' metrics, sorted, as plain words (a session file is untrusted: no control
    characters reach the title, the chart or the copied text)."""
    return sorted({strip_control(r.metric) for r in results if r.metric})


class CompareScreen(Screen[None]):
    CSS_PATH = "compare.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("y", "copy", "Copy"),
    ]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (40, "-tall")]
    FOLLOW_S = 2.0  # how often the view checks whether the sessions changed

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = list(names)
        self.results: list[RunResult] = []
        self.statuses: list[str] = []
        self.stamp: tuple | None = None  # the sessions' files as the last read found them
        self.reading = False  # a read is under way (main thread only, as `stamp`)

    def compose(self) -> ComposeResult:
        with Vertical(id="compare-box"):
            yield Static(Text(f"Compare · {len(self.names)} sessions · reading…"),
                         id="compare-title")
            with VerticalScroll(id="compare-scroll"):
                yield Static(legend(self.names), id="compare-legend")
                yield CompareChart(id="compare-chart")
                yield CompareFacts(id="compare-facts")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#compare-scroll").focus()
        self.read()
        self.set_interval(self.FOLLOW_S, self.follow)

    def follow(self) -> None:
        """Read the sessions again when their files changed (a running session's new epoch,
        test figures at its end, a resume elsewhere, a run that died): a few stat calls when
        nothing did. Never over a read under way: a second read would drop the first one's
        results, and with reads longer than FOLLOW_S none would ever show; the next check
        after it compares with the stamp it took."""
        if not self.reading and self.app.sessions_stamp(self.names) != self.stamp:
            self.read()

    def read(self) -> None:
        self.reading = True
        self._read()

    @work(thread=True, exclusive=True, group="compare-read", exit_on_error=False)
    def _read(self) -> None:
        stamp = None
        try:
            stamp = self.app.sessions_stamp(self.names)  # before reading: never misses one
            results = self.app.compare_sessions(self.names)
            statuses = [shown(r.status, r.status == "paused"
                              and self.app.session_locked(r.run.session)) for r in results]
        except Exception as exc:  # noqa: BLE001 - shown, not fatal
            self.app.call_from_thread(self.failed, exc, stamp)
            return
        self.app.call_from_thread(self.show, results, statuses, stamp)

    def failed(self, exc: Exception, stamp: tuple | None = None) -> None:
        self.reading, self.stamp = False, stamp
        if not self.is_attached:
            return
        self.query_one("#compare-title", Static).update(
            literal(f"Compare: the sessions could not be read: {exc}", style="red"))

    def show(self, results: list[RunResult], statuses: list[str],
             stamp: tuple | None = None) -> None:
        self.reading, self.stamp = False, stamp
        if not self.is_attached:  # esc pressed while reading
            return
        self.results, self.statuses = results, statuses
        metrics = metric_names(results)
        finished = sum(s == "finished" for s in statuses)
        self.query_one("#compare-title", Static).update(literal(
            f"Compare · {len(results)} sessions · {finished} finished · validation and test "
            f"{' / '.join(metrics) or 'metric'}"))
        drawn, left_out = chart_metric(results)
        # one axis, one metric: the others keep their colour and place in the legend, undrawn
        self.query_one(CompareChart).show_curves(
            [(r.run.session, r.val_curve if strip_control(r.metric) == drawn else [])
             for r in results], drawn,
            note=f"{left_out} scored by another metric not drawn" if left_out else "")
        self.query_one(CompareFacts).show(results, statuses)

    def plain_text(self, width: int = 120) -> str:
        """The comparison as plain text: the validation figures per epoch, then the facts."""
        console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
        console.print(self.query_one("#compare-title", Static).content)
        for r in self.results:  # each session's own metric (they may differ)
            curve = " · ".join(f"epoch {e} {score(v)}" for e, v in r.val_curve) or "none"
            console.print(literal(f"validation {r.metric or 'metric'} of {r.run.session}: {curve}"))
        console.print(render_facts(self.results, self.statuses, width))
        return console.export_text()

    def action_copy(self) -> None:
        if not self.results:
            self.notify("Still reading the sessions.", severity="warning")
            return
        copy_text(self.app, self.plain_text(), "the comparison")

    def action_back(self) -> None:
        self.dismiss(None)
