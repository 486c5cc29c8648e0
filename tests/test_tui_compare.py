"""The compare view (sessions screen: space marks, C compares) on real sessions written
through the store (test_tui_snapshots.compare_home), and its figures against `gpta show` and
`gpta compare`'s reading of the same sessions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_tui_snapshots import COMPARED, HOSTILE_PREFIX, NOW, compare_home  # noqa: E402
from test_tui_views import screen_text  # noqa: E402

from gpta_tui.app import GptaApp  # noqa: E402
from gpta_tui.screens.compare import CompareScreen  # noqa: E402
from gpta_tui.screens.sessions import SessionsScreen  # noqa: E402
from gpta_tui.widgets.compare_chart import CompareChart  # noqa: E402
from gpta_tui.widgets.compare_facts import CompareFacts  # noqa: E402

pytestmark = pytest.mark.anyio


def toasts(app) -> str:
    return " ".join(str(n.message) for n in app._notifications)


async def until_compared(pilot) -> CompareScreen:
    """Wait for the compare view to have read its sessions and drawn its chart."""
    screen = pilot.app.screen
    assert isinstance(screen, CompareScreen)
    for _ in range(1200):
        if screen.results and screen.query_one(CompareChart).ready:
            break
        await pilot.pause(0.025)
    assert screen.results, "the sessions were never read"
    return screen


async def open_compare(pilot, names: list[str]) -> CompareScreen:
    """Open the compare view on `names` straight from the app, once it has read them."""
    await pilot.pause()
    pilot.app.push_screen(CompareScreen(names))
    return await until_compared(pilot)


async def test_space_marks_and_c_compares_two_or_more_sessions(tmp_path):
    app = GptaApp(compare_home(tmp_path), clock=lambda: NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        sessions = app.screen
        assert isinstance(sessions, SessionsScreen)
        await pilot.press("o")  # by name: sentiment-baseline, sentiment-gpta, sentiment-stopped
        assert [r.name for r in sessions.rows] == ["sentiment-baseline", "sentiment-gpta",
                                                   "sentiment-stopped"]
        # the list's test figures come from the same read as the rest of the row
        assert [r.test for r in sessions.rows] == ["accuracy 0.6375", "accuracy 0.6917", "-"]
        await pilot.press("C")  # nothing marked: a clear message, no view
        await pilot.pause()
        assert app.screen is sessions and "Mark two or more sessions" in toasts(app)
        table = sessions.query_one("#sessions-table")
        table.move_cursor(row=0)  # the cursor stayed on the newest session while sorting
        await pilot.press("space")
        assert str(table.get_cell("sentiment-baseline", "name")) == "sentiment-baseline ✓"
        assert "1 marked" in str(sessions.query_one("#sessions-title").content)
        app.clear_notifications()
        await pilot.press("C")  # one is not enough
        await pilot.pause()
        assert app.screen is sessions and "(1 marked)" in toasts(app)
        await pilot.press("space")  # space again unmarks
        assert sessions.marked == [] and str(table.get_cell("sentiment-baseline", "name")) == \
            "sentiment-baseline"
        await pilot.press("down", "down", "space", "up", "space", "C")
        await pilot.pause()
        screen = await until_compared(pilot)
        # in the order marked: the stopped one first, then the gpta one
        assert screen.names == ["sentiment-stopped", "sentiment-gpta"]
        facts = screen_text(screen.query_one(CompareFacts))
        assert "stopped: stopped by the user" in facts and "finished" in facts
        assert "not measured" in facts  # the stopped run has no test figures
        assert "accuracy 0.6917 (no prefix 0.6542, +0.0375)" in facts
        assert "macro_f1 0.6512 (no prefix 0.6101, +0.0411)" in facts
        assert "accuracy 0.7083 (epoch 2)" in facts and "accuracy 0.5917 (epoch 1)" in facts
        assert "2 requests · 300 tokens · $0.0042" in facts
        assert "1 request · 150 tokens · $0.0011" in facts
        assert "≠ seed 44 42" in facts  # the settings that differ are flagged
        assert "≠ mode" not in facts  # both gpta
        await pilot.press("y")  # the comparison as plain text
        assert "validation accuracy of sentiment-gpta: epoch 1 0.6250 · epoch 2 0.7083" in \
            app.clipboard and "no prefix 0.6542, +0.0375" in app.clipboard
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is sessions and sessions.marked == ["sentiment-stopped",
                                                              "sentiment-gpta"]


async def test_the_compare_view_shows_hostile_prefixes_as_written(tmp_path):
    """A prefix is TA output: its markup is not parsed and no escape byte reaches the screen."""
    app = GptaApp(compare_home(tmp_path), clock=lambda: NOW)
    names = [c[0] for c in COMPARED]
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_compare(pilot, names)
        facts = screen.query_one(CompareFacts)
        text = screen_text(facts)
        assert "[bold]x[/]" in text and "[link=http://e]Classify the tweet's mood:" in text
        assert "\x1b" not in text and "[31mred" in text
        # every session's prefix in full (wrapped in its column, never cut)
        assert "reading every word with care before answering:" in text
        assert "none (baseline)" in text and "≠ TA" in text and "≠ train size" in text
        assert "≠ student.lr 2e-05 3e-05 2e-05" in text  # every other differing setting
        assert "≠loop.max_requests_p 0 0 9 er_epoch" in text  # a long key folds
        # the figures side by side: one column per session
        assert facts.content.columns[1].header.plain.endswith(names[0])
        assert len(facts.content.columns) == 1 + len(names)
        assert HOSTILE_PREFIX.split()[0] in text


async def test_the_compare_view_stacks_at_80x24_and_scrolls(tmp_path):
    app = GptaApp(compare_home(tmp_path), clock=lambda: NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_compare(pilot, [c[0] for c in COMPARED])
        facts = screen.query_one(CompareFacts)
        assert not hasattr(facts.content, "columns")  # one block per session
        scroll = screen.query_one("#compare-scroll")
        assert scroll.max_scroll_y > 0 and scroll.has_focus
        await pilot.press("end")
        await pilot.pause()
        assert scroll.scroll_y == scroll.max_scroll_y
        await pilot.resize_terminal(160, 48)  # wider: back to columns
        for _ in range(400):  # wait for the resize to reach the widget (no fixed delay)
            if hasattr(facts.content, "columns"):
                break
            await pilot.pause(0.025)
        assert hasattr(facts.content, "columns")


async def test_an_unreadable_marked_session_says_why(tmp_path):
    home = compare_home(tmp_path)
    (home / "sessions" / "sentiment-baseline" / "session.json").write_text("{not json")
    app = GptaApp(home, clock=lambda: NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await open_compare(pilot, ["sentiment-gpta", "sentiment-baseline"])
        text = screen_text(screen.query_one(CompareFacts))
        assert "unreadable" in text and "accuracy 0.6917" in text
        # the sessions screen refuses to mark it
        await pilot.press("escape")
        await pilot.pause()
        sessions = app.screen
        row = [r.name for r in sessions.rows].index("sentiment-baseline")
        sessions.query_one("#sessions-table").move_cursor(row=row)
        await pilot.press("space")
        assert sessions.marked == [] and "cannot be read" in toasts(app)


def test_the_figures_agree_with_gpta_show_and_gpta_compare(tmp_path, capsys):
    """One reading: the compare view's RunResults are `gpta compare`'s (session_result), and
    the TA use is the one `gpta show` prints (SessionReader.ta_usage)."""
    from engine.experiments import RunSpec
    from gpta_tui.cli import main
    from gpta_tui.formatting import ta_usage_text
    from sessions.compare import read_sessions, session_result
    from sessions.store import SessionStore

    home = compare_home(tmp_path)
    results = {r.run.session: r for r in read_sessions([c[0] for c in COMPARED], home)}
    for name, mode, seed, size, val, test, plain, cost, prefix in COMPARED:
        r = results[name]
        assert (r.run.arm, r.run.seed, r.run.train_size) == (mode, seed, size)
        assert r.val_curve == list(enumerate(val, 1)) and r.best_prefix == prefix
        assert r.test_metrics == (test or {}) and r.test_metrics_no_prefix == (plain or {})
        assert r.test == (test or {}).get("accuracy")
        assert r.ta_cost == pytest.approx(cost, abs=1e-12)
        with SessionStore(home).open(name) as handle:  # as a comparison plan reads it
            planned = session_result(handle, RunSpec(name, mode, seed, size, None), "accuracy")
        assert planned == r
        assert main(["--home", str(home), "show", name]) == 0
        out = capsys.readouterr().out
        if r.ta_requests:
            assert f"TA: {ta_usage_text(r.ta_requests, r.ta_tokens, r.ta_cost)}" in out
        else:
            assert "TA:" not in out
    bad = read_sessions(["no-such-session"], home)[0]
    assert bad.status == "unreadable" and "no-such-session" in bad.status_reason


def edit_record(home, name, change) -> None:
    """Edit a stored session's record in place, as a hand-edited or hostile file would."""
    import json

    path = home / "sessions" / name / "session.json"
    data = json.loads(path.read_text())
    change(data["session"]["1"])
    path.write_text(json.dumps(data))


async def test_control_characters_in_a_session_file_never_reach_the_compare_view(tmp_path):
    """The record's metric, its test metric names and its status are file contents too: an
    escape sequence there is dropped from the title, the chart, the facts and the copy."""
    home = compare_home(tmp_path)

    def hostile(record):
        record["metric"] = "\x1b[31maccuracy"
        record["finished"]["test_metrics"]["\x1b]0;pwned\x07f1"] = 0.5

    edit_record(home, "sentiment-gpta", hostile)
    edit_record(home, "sentiment-stopped", lambda record: record.update(status="\x1b[35mpaused"))
    app = GptaApp(home, clock=lambda: NOW)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_compare(pilot, ["sentiment-gpta", "sentiment-stopped"])
        title = screen.query_one("#compare-title").content
        facts = screen.query_one(CompareFacts).content
        chart = screen.query_one(CompareChart).render()
        for shown in (title, facts, chart):
            text = screen_text(type("W", (), {"content": shown})())
            assert "\x1b" not in text and "\x07" not in text
        assert "[31maccuracy 0.7083 (epoch 2)" in screen_text(screen.query_one(CompareFacts))
        assert "[35mpaused" in screen_text(screen.query_one(CompareFacts))
        await pilot.press("y")
        assert "\x1b" not in app.clipboard and "0;pwnedf1 0.5000" in app.clipboard


async def test_the_compare_view_follows_a_session_that_changes(tmp_path):
    """A session's files change (a running session's next epoch, its test figures at the
    end): the view reads it again and shows the new figures; unchanged files cost no read."""
    home = compare_home(tmp_path)
    app = GptaApp(home, clock=lambda: NOW)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_compare(pilot, ["sentiment-gpta", "sentiment-baseline"])
        assert "accuracy 0.6917" in screen_text(screen.query_one(CompareFacts))
        screen.follow()  # nothing changed: no read
        assert not screen.reading

        def later(record):  # more digits: the file's size changes too (mtimes can be coarse)
            record["finished"]["test_metrics"]["accuracy"] = 0.73210001

        edit_record(home, "sentiment-gpta", later)
        screen.follow()
        assert screen.reading
        for _ in range(400):
            if "accuracy 0.7321" in screen_text(screen.query_one(CompareFacts)):
                break
            await pilot.pause(0.025)
        assert "accuracy 0.7321" in screen_text(screen.query_one(CompareFacts))
        assert "accuracy 0.6917" not in screen_text(screen.query_one(CompareFacts))


async def until_read(screen, pilot) -> str:
    """The compare facts once the read under way has shown (it runs in a thread worker)."""
    for _ in range(400):
        if not screen.reading:
            break
        await pilot.pause(0.025)
    assert not screen.reading, "the read never ended"
    return screen_text(screen.query_one(CompareFacts))


async def test_the_compare_view_reads_one_at_a_time_while_sessions_keep_changing(tmp_path):
    """Files that change again while a read is under way (a long session, a busy run): the
    view starts no second read over it, which would drop the first one's results and, with
    each read longer than the 2 s between checks, never show any; the read in flight shows,
    and the next check reads again what changed meanwhile."""
    import threading

    home = compare_home(tmp_path)
    app = GptaApp(home, clock=lambda: NOW)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_compare(pilot, ["sentiment-gpta", "sentiment-baseline"])
        read = app.compare_sessions
        gate, inside = threading.Event(), []

        def slow(names):  # a read that takes long: it waits for the test
            inside.append(1)
            assert gate.wait(30)
            return read(names)

        app.compare_sessions = slow

        def accuracy(value):
            def change(record):
                record["finished"]["test_metrics"]["accuracy"] = value
            return change

        edit_record(home, "sentiment-gpta", accuracy(0.73210001))
        screen.follow()  # a read starts and blocks in `slow`
        for _ in range(400):
            if inside:
                break
            await pilot.pause(0.025)
        assert len(inside) == 1
        edit_record(home, "sentiment-gpta", accuracy(0.7444))  # changed again meanwhile
        screen.follow()
        screen.follow()
        await pilot.pause()
        assert len(inside) == 1  # no second read over the first
        gate.set()
        # the read in flight shows what it read (either figure: it may have seen the edit)
        text = await until_read(screen, pilot)
        assert "accuracy 0.7321" in text or "accuracy 0.7444" in text
        screen.follow()  # the next check reads the edit made while it was reading
        assert "accuracy 0.7444" in await until_read(screen, pilot)
        assert len(inside) == 2


async def test_the_compare_view_sees_a_running_session_whose_process_died(tmp_path):
    """A session stored as running is shown interrupted once no process holds its lock
    (killed: no file changes, the lock goes with the process): the view reads it again."""
    from sessions.store import SessionStore

    home = compare_home(tmp_path)

    def running(record):
        record["status"] = "running"

    edit_record(home, "sentiment-stopped", running)
    lock = SessionStore(home)._lock("sentiment-stopped")
    lock.acquire(timeout=0)  # the "process" running it
    app = GptaApp(home, clock=lambda: NOW)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            screen = await open_compare(pilot, ["sentiment-stopped", "sentiment-gpta"])
            assert screen.statuses[0] == "running"
            lock.release()  # the process died: the kernel drops its lock, no file changes
            screen.follow()
            await until_read(screen, pilot)
            assert screen.statuses[0] == "interrupted"
    finally:
        lock.release()

async def test_the_copied_curves_name_each_sessions_own_metric(tmp_path):
    """Sessions scored by different metrics: each copied validation line names its own."""

    home = compare_home(tmp_path)
    edit_record(home, "sentiment-baseline", lambda record: record.update(metric="macro_f1"))
    app = GptaApp(home, clock=lambda: NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await open_compare(pilot, ["sentiment-gpta", "sentiment-baseline"])
        chart = screen.query_one(CompareChart)
        # one axis, one metric: the first marked session's accuracy (a tie); the other is named
        assert [curve for _, curve in chart._curves][1] == [] and chart._curves[0][1]
        assert chart._metric == "accuracy"
        assert chart._note == "1 scored by another metric not drawn"
        await pilot.press("y")
    lines = app.clipboard.splitlines()
    assert "validation accuracy of sentiment-gpta: epoch 1 0.6250 · epoch 2 0.7083" in lines
    assert any(line.startswith("validation macro_f1 of sentiment-baseline: ") for line in lines)
    assert not any("accuracy / macro_f1 of" in line for line in lines)


def test_the_selection_figure_the_other_views_call_best_is_shown_beside_best_val(tmp_path):
    """A session with a selection split stores two best figures: validation (best.metrics,
    `gpta compare`'s best_val) and selection (best.score, what the sessions list shows).
    The compare view names both, so its figures can be matched with the list's."""
    import io
    import json

    from rich.console import Console

    from gpta_tui.widgets.compare_facts import render_facts
    from sessions.compare import read_sessions

    home = compare_home(tmp_path)
    path = home / "sessions" / "sentiment-gpta" / "session.json"
    data = json.loads(path.read_text())
    best = data["session"]["1"]["best"]
    best["score"], best["selection_metrics"] = 0.7333, {"accuracy": 0.7333}
    path.write_text(json.dumps(data))
    results = read_sessions(["sentiment-gpta", "sentiment-baseline"], home)
    assert results[0].best_val == pytest.approx(0.7083) and results[0].best_selection == 0.7333
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(render_facts(results, ["finished", "finished"], 200))
    lines = {" ".join(line.split()) for line in console.export_text().splitlines()}
    assert "best val accuracy 0.7083 (epoch 2) accuracy 0.6458 (epoch 2)" in lines
    assert "best selection accuracy 0.7333 -" in lines
    # no selection figure anywhere: no row
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(render_facts(results[1:], ["finished"], 200))
    assert "best selection" not in console.export_text()


def test_the_chart_draws_the_most_common_metric_and_counts_the_others():
    from types import SimpleNamespace as R

    from gpta_tui.screens.compare import chart_metric

    assert chart_metric([R(metric="accuracy"), R(metric="macro_f1"), R(metric="macro_f1")]) == ("macro_f1", 1)
    assert chart_metric([R(metric="macro_f1"), R(metric="accuracy")]) == ("macro_f1", 1)  # tie: first
    assert chart_metric([R(metric="\x1b[31mf1"), R(metric="[31mf1")]) == ("[31mf1", 0)
    assert chart_metric([R(metric="")]) == ("metric", 0)
