"""Snapshot tests (pytest-textual-snapshot) of every screen, with fixed data.

The run dashboard shows the canned run from test_tui_dashboard (fixed timestamps, a fixed
clock, UTC). Snapshots live in tests/snapshots/; refresh them after an intended change with
`pytest tests/test_tui_snapshots.py --snapshot-update` and look at the report.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import pytest_textual_snapshot

sys.path.insert(0, str(Path(__file__).parent))
from test_tui_dashboard import T0, canned_events  # noqa: E402

from gpta_tui import form  # noqa: E402
from gpta_tui.app import GptaApp  # noqa: E402
from gpta_tui.dashboard import build_state  # noqa: E402
from gpta_tui.screens.new_session import NewSessionScreen  # noqa: E402
from gpta_tui.screens.run import RunScreen  # noqa: E402
from gpta_tui.widgets.loss_chart import LossChart  # noqa: E402

SIZE = (140, 42)
NOW = T0 + 200.0


class _SnapshotsDir(pytest_textual_snapshot.SVGImageExtension):
    """Store snapshots in tests/snapshots/<test module>/ instead of __snapshots__/."""

    @classmethod
    def dirname(cls, *, test_location) -> str:
        return str(Path(test_location.filepath).parent / "snapshots" / test_location.basename)


@pytest.fixture(autouse=True)
def _fixed_world(monkeypatch):
    monkeypatch.setattr(pytest_textual_snapshot, "SVGImageExtension", _SnapshotsDir)
    monkeypatch.setenv("TZ", "UTC")
    # plotext clamps a figure to the terminal it thinks it has (80x24 when not a tty)
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("LINES", "200")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def finished_events() -> list:
    """The canned run, finished: validation, the test figures, the end."""
    from engine.events import PhaseChanged, RunFinished, StatusChanged, ValidationResult

    from test_tui_dashboard import PREFIXES

    ts = T0 + 190.0
    return canned_events() + [
        ValidationResult(epoch=2, prefix=PREFIXES[5], metrics={"accuracy": 0.7083}, best_epoch=2,
                         improved=True, ts=ts),
        PhaseChanged(epoch=2, phase="testing", total=1, ts=ts + 1),
        StatusChanged(status="finished", ts=ts + 2),
        RunFinished(status="finished", best_epoch=2, best_prefix=PREFIXES[5],
                    val_metrics={"accuracy": 0.7083}, test_metrics={"accuracy": 0.6917},
                    test_metrics_no_prefix={"accuracy": 0.6542}, summary={}, ts=ts + 3),
    ]


def run_app(events: list | None = None, **kwargs) -> GptaApp:
    state = build_state(canned_events() if events is None else events)
    return GptaApp(start=RunScreen(state, None, clock=lambda: NOW), clock=lambda: NOW, **kwargs)


# Fixed form values (not the live presets, which may be retuned without changing the form).
FORM_VALUES = {
    "name": "twitter-sentiment-1", "preset": "smoke", "mode": "gpta",
    "dataset": "twitter-sentiment", "description": "", "student": "all-MiniLM-L6-v2",
    "ta_backend": "local", "ta_model": "gemma-3-270m", "ta_base_url": "",
    "finetune_backend": "auto", "train_size": "192", "epochs": "2", "k": "8", "l": "4",
    "window": "3", "seed": "42",
}


def test_form_values_cover_every_field():
    assert set(FORM_VALUES) == {f.id for f in form.FIELDS}
    assert set(form.default_values("smoke")) == set(FORM_VALUES)


def form_app(values: dict | None = None, first_launch: bool = True) -> GptaApp:
    return GptaApp(start=NewSessionScreen({**FORM_VALUES, **(values or {})}, {"taken"},
                                          first_launch=first_launch))


def run_screen_of(app):
    return next(s for s in app.screen_stack if isinstance(s, RunScreen))


async def then_press(pilot, *keys: str) -> None:
    chart = run_screen_of(pilot.app).query_one(LossChart)
    for _ in range(1200):
        if not chart.display or (chart.builds and chart._figure_size == tuple(chart.size)):
            break
        await pilot.pause(0.025)
    await pilot.press(*keys)
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (120, 36), (160, 48)],
                         ids=lambda size: f"{size[0]}x{size[1]}")
def test_run_dashboard(snap_compare, size):
    """Below 120x34 the panels are tabs (history first); at 120x36 and up, the 2x2 grid."""
    assert snap_compare(run_app(), terminal_size=size, run_before=then_press)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=lambda size: f"{size[0]}x{size[1]}")
def test_finished_run_shows_test_figures(snap_compare, size):
    assert snap_compare(run_app(finished_events()), terminal_size=size, run_before=then_press)


def test_compact_layout_chart_tab(snap_compare):
    async def chart_tab(pilot):
        await then_press(pilot, "1")
        await then_press(pilot)  # the chart redraws at its new size

    assert snap_compare(run_app(), terminal_size=(100, 30), run_before=chart_tab)


def test_terminal_too_small(snap_compare):
    assert snap_compare(run_app(), terminal_size=(70, 20))


def test_run_dashboard_window_selected(snap_compare):
    """Focus the windows list and pick the first window: its messages show on the right."""
    async def pick_first(pilot):
        run_screen_of(pilot.app).query_one("#window-list").focus()
        await then_press(pilot, "home")

    assert snap_compare(run_app(), terminal_size=SIZE, run_before=pick_first)


def test_description_editor(snap_compare):
    async def edit(pilot):
        await then_press(pilot, "e")

    assert snap_compare(run_app(), terminal_size=SIZE, run_before=edit)


def test_help_screen(snap_compare):
    async def help_(pilot):
        await then_press(pilot, "question_mark")

    assert snap_compare(run_app(), terminal_size=SIZE, run_before=help_)


def test_new_session_first_launch(snap_compare):
    assert snap_compare(form_app(), terminal_size=(120, 40))


def test_new_session_shows_errors_in_place(snap_compare):
    values = {"name": "taken", "k": "2", "epochs": "x"}
    assert snap_compare(form_app(values, first_launch=False), terminal_size=(120, 40))


def sessions_app(monkeypatch, tmp_path) -> GptaApp:
    """The sessions screen over three fixed sessions (one unreadable)."""
    from sessions.store import SessionStore, SessionSummary

    rows = [
        SessionSummary("sentiment-gpta", "gpta", "twitter-sentiment", "paused", 2, 3, "collecting",
                       0.7125, "accuracy", T0 + 100, tmp_path, student="nreimers/MiniLM-L6-H384",
                       ta="local:gemma-3-270m", best_epoch=1,
                       best_prefix="Decide whether the tweet is [bold]positive[/bold] or negative."),
        SessionSummary("yelp-baseline", "baseline", "yelp_review_full", "finished", 3, 3, "done",
                       0.5810, "accuracy", T0 - 86_400 * 3, tmp_path, student="bert-base-uncased",
                       best_epoch=3, test_metrics={"accuracy": 0.5790, "f1": 0.5512}),
        SessionSummary("broken", "?", "?", "unreadable", 0, 0, "", None, "", T0 - 86_400 * 9,
                       tmp_path, error="session database is unreadable"),
    ]
    monkeypatch.setattr(SessionStore, "list", lambda self: list(rows))
    return GptaApp(Path("/srv/gpta-home"), clock=lambda: NOW)


def test_sessions_screen(snap_compare, monkeypatch, tmp_path):
    assert snap_compare(sessions_app(monkeypatch, tmp_path), terminal_size=(120, 24))


def test_sessions_screen_wide_shows_the_preview(snap_compare, monkeypatch, tmp_path):
    assert snap_compare(sessions_app(monkeypatch, tmp_path), terminal_size=(160, 30))


# ---- the compare view ---------------------------------------------------------------
HOSTILE_PREFIX = "[bold]x[/] \x1b[31mred\x1b[0m [link=http://e]Classify the tweet's mood:"
COMPARED = (
    # name, mode, seed, train size, validation per epoch, test, no-prefix test, TA cost, prefix
    ("sentiment-gpta", "gpta", 42, 192, [0.625, 0.7083], {"accuracy": 0.6917, "macro_f1": 0.6512},
     {"accuracy": 0.6542, "macro_f1": 0.6101}, 0.0042, HOSTILE_PREFIX),
    ("sentiment-baseline", "baseline", 43, 384, [0.6, 0.6458], {"accuracy": 0.6375,
                                                                 "macro_f1": 0.6003},
     {}, 0.0, ""),
    ("sentiment-stopped", "gpta", 44, 192, [0.5917], None, None, 0.0011,
     "Decide whether the author of this tweet feels positive, negative or neutral about it, "
     "reading every word with care before answering:"),
)


def compare_home(tmp_path: Path) -> Path:
    """Three real sessions (written through the store, fixed figures): two finished with test
    figures, one stopped after an epoch; one best prefix carries markup and an escape."""
    from engine import events as ev
    from engine.config import build_config
    from engine.state import RunState
    from sessions.store import SessionStore

    home = tmp_path / "home"
    store = SessionStore(home)
    for name, mode, seed, size, val, test, plain, cost, prefix in COMPARED:
        cfg = build_config("smoke", overrides={
            "name": name, "mode": mode, "seed": seed, "data": {"train_size": size},
            "ta": {"backend": "openai", "model": "gpt-4o-mini"} if mode == "gpta" else {},
            # two more settings that differ: the view lists every differing key
            "student": {"lr": 3e-5} if mode == "baseline" else {},
            "loop": {"epochs": 2, "max_requests_per_epoch": 9 if seed == 44 else 0}})
        st = RunState()
        ts = iter(T0 + i for i in range(1000))
        handle = store.create(cfg)
        events: list = [ev.RunStarted(name=name, mode=mode, config=cfg.to_dict(), metric="accuracy",
                                      label_names=["negative", "neutral", "positive"], ts=next(ts)),
                        ev.StatusChanged(status="running", ts=next(ts))]
        for epoch, score_ in enumerate(val, 1):
            st.epoch, st.phase, st.step = epoch, "collecting", epoch * 4
            events.append(ev.ValidationResult(epoch=epoch, prefix=prefix, metrics={"accuracy": score_},
                                              best_epoch=epoch, improved=True, ts=next(ts)))
            if mode == "gpta":
                st.request_id += 1
                events += [ev.TARequest(request_id=st.request_id, epoch=epoch, backend="openai",
                                        model="gpt-4o-mini", messages=[], params={"n": 2},
                                        description_version=1, ts=next(ts)),
                           ev.TAResponse(request_id=st.request_id, epoch=epoch, texts=[prefix],
                                         prefixes=[prefix], rejected=[], latency_s=0.1,
                                         usage={"total_tokens": 150}, cost=cost / len(val),
                                         ts=next(ts))]
            st.best = {"epoch": epoch, "score": score_, "prefix": prefix,
                       "metrics": {"accuracy": score_}}
            events.append(ev.CheckpointSaved(epoch=epoch, phase="collecting", step=st.step,
                                             state=st.to_dict(), path=f"checkpoints/e{epoch}",
                                             ts=next(ts)))
        if test is None:
            events += [ev.StatusChanged(status="stopped", reason="stopped by the user", ts=next(ts)),
                       ev.RunFinished(status="stopped", best_epoch=len(val), best_prefix=prefix,
                                      val_metrics={"accuracy": val[-1]}, test_metrics={},
                                      test_metrics_no_prefix={}, summary={},
                                      reason="stopped by the user", ts=next(ts))]
        else:
            events += [ev.StatusChanged(status="finished", ts=next(ts)),
                       ev.RunFinished(status="finished", best_epoch=len(val), best_prefix=prefix,
                                      val_metrics={"accuracy": val[-1]}, test_metrics=test,
                                      test_metrics_no_prefix=plain, summary={}, ts=next(ts))]
        for event in events:
            handle.listener(event)
        handle.close()
    return home


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=lambda size: f"{size[0]}x{size[1]}")
def test_compare_view(snap_compare, tmp_path, size):
    """Three sessions side by side: curves overlaid, then columns (160x48) or one block per
    session (80x24, scrolling); the hostile prefix shows as written."""
    from gpta_tui.screens.compare import CompareScreen
    from gpta_tui.widgets.compare_chart import CompareChart

    app = GptaApp(compare_home(tmp_path), clock=lambda: NOW)

    async def compare(pilot):
        app.push_screen(CompareScreen([c[0] for c in COMPARED]))
        await pilot.pause()
        for _ in range(1200):
            if app.screen.results and app.screen.query_one(CompareChart).ready:
                break
            await pilot.pause(0.025)
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=compare)
