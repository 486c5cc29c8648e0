"""Pilot tests of gpta-tui driving real (tiny) runs: the engine trains a 2-layer BERT on a
generated CSV with the deterministic offline TA, in the app's worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import Button, Input, Select, TextArea

from engine.config import RunConfig, build_config
from engine.events import DescriptionChanged, TARequest
from gpta_tui.app import GptaApp
from gpta_tui.prefs import Prefs, load_key
from gpta_tui.screens.confirm import ConfirmScreen
from gpta_tui.screens.description import DescriptionScreen
from gpta_tui.screens.help import HelpScreen
from gpta_tui.screens.new_session import NewSessionScreen
from gpta_tui.screens.run import RunScreen
from gpta_tui.screens.run_summary import RunSummaryScreen
from gpta_tui.screens.sessions import SessionsScreen
from gpta_tui.widgets.history_table import HistoryTable
from gpta_tui.widgets.log_pane import LogPane
from gpta_tui.widgets.loss_chart import LossChart
from sessions.store import SessionStore

pytestmark = pytest.mark.anyio  # async tests run on asyncio (anyio's pytest plugin)

SIZE = (130, 40)
WAIT_S = 240.0  # generous: 2 shared cores


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def tiny_config(tiny_bert_dir: Path, sentiment_csv: Path, name: str, epochs: int = 2,
                **sections: dict) -> RunConfig:
    overrides = {
        "name": name, "mode": "gpta", "device": "cpu",  # exact replay is a CPU promise
        "data": {"dataset": str(sentiment_csv), "train_size": 48, "val_size": 24, "test_size": 24},
        "student": {"model": str(tiny_bert_dir), "max_length": 32, "batch_size": 16,
                    "checkpoint_every": 1},
        "ta": {"backend": "scripted"},
        "loop": {"epochs": epochs, "k": 6, "l": 3, "window": 2},
    }
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    return build_config("smoke", overrides=overrides)


async def wait_for(pilot, predicate, what: str, timeout: float = WAIT_S) -> None:
    """Let the app run until `predicate()` holds (a deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        await pilot.pause(0.05)


async def run_ended(pilot, app: GptaApp, what: str = "the run to end"):
    """Wait for the engine thread to finish; fail with the run's own error if it raised."""
    await wait_for(pilot, lambda: not app.controller.running, what)
    await pilot.pause(0.3)  # the last drain
    if app.controller.error is not None:
        raise AssertionError(f"the run failed: {app.controller.error!r}")
    return app.controller.result


def table_rows(state) -> int:
    """Rows the history table shows: the history, plus the training prefix while unscored."""
    return len(state.history) + (state.training_prefix not in dict(state.history))


def run_screen(app: GptaApp) -> RunScreen:
    screen = app.run_screen
    assert screen is not None, f"no run screen; stack: {app.screen_stack}"
    return screen


async def test_first_launch_goes_to_the_form_and_one_enter_starts_a_run(gpta_home, tiny_bert_dir,
                                                                          sentiment_csv):
    app = GptaApp(gpta_home, bell=True)
    rings = []
    app.bell = lambda: rings.append(1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        form = app.screen
        assert isinstance(form, NewSessionScreen) and form.first_launch
        assert isinstance(app.focused, Button) and app.focused.id == "start"
        assert form.query_one("#f-student", Input).value == "all-MiniLM-L6-v2"
        assert form.query_one("#f-dataset", Input).value == "twitter-sentiment"
        # Shrink the offline defaults to the test-sized model and data, then press Enter once.
        for fid, value in {"student": str(tiny_bert_dir), "dataset": str(sentiment_csv),
                           "train_size": "48", "epochs": "1", "k": "6", "l": "3",
                           "window": "2"}.items():
            form.query_one(f"#f-{fid}", Input).value = value
        form.query_one("#f-ta_backend", Select).value = "scripted"
        await pilot.pause()
        assert form.errors == {}
        name = form.query_one("#f-name", Input).value
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.run_screen is not None, "the dashboard")
        await run_ended(pilot, app, "the run to finish")
        await pilot.pause(0.5)
        state = run_screen(app).state
        assert state.status == "finished" and state.name == name
        assert state.losses and state.history and state.val
        assert run_screen(app).query_one(HistoryTable).row_count == table_rows(state)
        assert run_screen(app).query_one(LossChart).point_count == len(state.losses)
        # The end is announced: a toast with the figures, and the bell asked for (--bell).
        toast = " ".join(n.message for n in app._notifications)
        assert "Run finished" in toast and "test accuracy" in toast and "best val" in toast
        assert rings == [1]
        # ... and the summary opens over the dashboard (esc closes it; q still quits)
        assert isinstance(app.screen, RunSummaryScreen) and "no prefix" in app.screen.text
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is run_screen(app)
    summary = {s.name: s for s in SessionStore(gpta_home).list()}
    assert summary[name].status == "finished"
    # The load was timed for the next launch's loading bar (same models, new run).
    key = load_key(state.config, resumed=False, dequantized=False)
    assert 0 < Prefs().load_times[key] < WAIT_S


async def test_form_shows_config_errors_and_refuses_to_start(gpta_home):
    app = GptaApp(gpta_home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        form = app.screen
        form.query_one("#f-k", Input).value = "2"  # window 3 >= k 2
        await pilot.pause()
        assert '"w (window)"' in form.errors["window"] and "loop.window" not in form.errors["k"]
        assert form.query_one("#start", Button).disabled
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is form and app.controller is None


async def test_pause_and_resume(gpta_home, tiny_bert_dir, sentiment_csv):
    app = GptaApp(gpta_home)
    async with app.run_test(size=SIZE) as pilot:
        app.start_run(tiny_config(tiny_bert_dir, sentiment_csv, "pausing"))
        await wait_for(pilot, lambda: app.run_screen is not None, "the dashboard")
        screen = run_screen(app)
        await pilot.press("p")
        await wait_for(pilot, lambda: screen.state.status == "paused", "the engine to pause")
        assert app.controller.running
        seen = screen.state.events_seen
        for _ in range(10):  # while paused, nothing moves
            await pilot.pause(0.1)
        assert screen.state.events_seen == seen and screen.state.status == "paused"
        await pilot.press("p")
        await run_ended(pilot, app, "the run to finish")
        await pilot.pause(0.3)
        assert screen.state.status == "finished"
        texts = [e.text for e in screen.state.log]
        assert "status paused" in texts and any("pause requested" in t for t in texts)


async def test_edit_description_mid_run_reaches_the_next_ta_request(gpta_home, tiny_bert_dir,
                                                                      sentiment_csv):
    new_text = "Short tweets; the label is the writer's mood: negative, neutral or positive."
    app = GptaApp(gpta_home)
    async with app.run_test(size=SIZE) as pilot:
        app.start_run(tiny_config(tiny_bert_dir, sentiment_csv, "describing"))
        await wait_for(pilot, lambda: app.run_screen is not None, "the dashboard")
        screen = run_screen(app)
        # pause once the first TA request went out, so some requests precede the edit
        await wait_for(pilot, lambda: screen.state.ta_requests >= 1, "the first TA request")
        await pilot.press("p")
        await wait_for(pilot, lambda: screen.state.status == "paused", "the engine to pause")
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, DescriptionScreen), "the editor")
        editor = app.screen.query_one(TextArea)
        assert editor.text == screen.state.description  # the current version is shown
        editor.load_text(new_text)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is screen, "the editor to close")
        await pilot.press("p")
        await run_ended(pilot, app, "the run to finish")
        await pilot.pause(0.3)
        assert screen.state.description == new_text and screen.state.description_version == 2
        assert any("description v2" in e.text for e in screen.state.log)
    handle = SessionStore(gpta_home).open("describing")
    try:
        events = handle.events()
    finally:
        handle.close()
    changed = [e for e in events if isinstance(e, DescriptionChanged) and e.version == 2]
    assert changed and changed[0].text == new_text
    requests = [e for e in events if isinstance(e, TARequest)]
    after = [r for r in requests if r.request_id >= changed[0].applies_from_request]
    before = [r for r in requests if r.request_id < changed[0].applies_from_request]
    assert after and before
    def carries(request: TARequest) -> bool:
        return any(new_text in str(m.get("content", "")) for m in request.messages)

    assert all(r.description_version == 2 and carries(r) for r in after)
    assert not any(carries(r) for r in before)


async def test_quit_saves_and_resume_shows_the_past_then_continues(gpta_home, tiny_bert_dir,
                                                                    sentiment_csv):
    app = GptaApp(gpta_home)
    async with app.run_test(size=SIZE) as pilot:
        # 3 epochs of 30 steps; quit early in epoch 2, once epoch 1 has a full history.
        app.start_run(tiny_config(tiny_bert_dir, sentiment_csv, "quitter", epochs=3,
                                  data={"train_size": 480}))
        await wait_for(pilot, lambda: app.run_screen is not None, "the dashboard")
        state = run_screen(app).state
        await wait_for(pilot, lambda: state.epoch >= 2 and state.history, "epoch 2")
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    assert not app.controller.running  # the engine thread has ended
    assert app.controller.result is not None and app.controller.result.status == "stopped"
    stored = {s.name: s for s in SessionStore(gpta_home).list()}
    assert stored["quitter"].status == "paused"  # stopped by the user: resumable

    again = GptaApp(gpta_home, resume="quitter")
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = run_screen(again)
        # The past is on screen before the resumed engine says anything.
        screen.sync({"chart", "history"})  # the same moment for the state and the widgets
        past_steps = len(screen.state.losses)
        assert past_steps > 0 and screen.state.history
        assert run_screen(again).query_one(HistoryTable).row_count == table_rows(screen.state)
        assert run_screen(again).query_one(LossChart).point_count == past_steps
        await run_ended(pilot, again, "the resumed run")
        await pilot.pause(0.3)
        assert screen.state.status == "finished" and screen.state.resumed
        assert past_steps < 90
        assert sorted(screen.state.losses) == list(range(1, 91))  # one curve, no gap, no dup
        assert run_screen(again).query_one(LossChart).point_count == len(screen.state.losses)


async def test_garbage_from_the_ta_is_logged_and_the_run_goes_on(gpta_home, tiny_bert_dir,
                                                                sentiment_csv, fake_openai,
                                                                monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
    # The first request's three choices are unusable (history echoes, a rambling reply);
    # the retry gets the fake's well-formed default replies.
    fake_openai.set_chat_replies(["Score: 0.71", "Score: 0.65", "sentiment " * 120])
    config = tiny_config(tiny_bert_dir, sentiment_csv, "garbage", epochs=1,
                         ta={"backend": "openai", "model": "gpt-4o-mini",
                             "base_url": fake_openai.base_url, "retries": 3})
    app = GptaApp(gpta_home)
    async with app.run_test(size=SIZE) as pilot:
        app.start_run(config)
        await run_ended(pilot, app, "the run to finish")
        await pilot.pause(0.3)
        state = run_screen(app).state
        assert state.status == "finished"
        warnings = [e.text for e in state.log if e.level == "warning"]
        assert any("no usable prefix" in w or "rejected" in w for w in warnings), warnings
        assert run_screen(app).query_one(LogPane).warnings == len(warnings)
        await pilot.press("question_mark")  # still responsive
        assert isinstance(app.screen, HelpScreen)


async def test_unreachable_ta_pauses_with_an_error_and_stop_still_works(gpta_home, tiny_bert_dir,
                                                                       sentiment_csv,
                                                                       fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key")  # the fake answers 401
    config = tiny_config(tiny_bert_dir, sentiment_csv, "unreachable", epochs=1,
                         ta={"backend": "openai", "model": "gpt-4o-mini",
                             "base_url": fake_openai.base_url, "retries": 0})
    app = GptaApp(gpta_home)
    async with app.run_test(size=SIZE) as pilot:
        app.start_run(config)
        await wait_for(pilot, lambda: app.run_screen is not None, "the dashboard")
        state = run_screen(app).state
        await wait_for(pilot, lambda: any(e.level == "error" for e in state.log), "an error")
        await wait_for(pilot, lambda: state.status == "paused", "the run to pause")
        assert app.controller.running and app.is_running
        assert "sk-wrong-key" not in str([e.text for e in state.log])
        await pilot.press("x")
        await pilot.press("y")
        await run_ended(pilot, app, "the run to stop")
        assert app.controller.result.status == "stopped"


async def test_sessions_screen_open_delete_and_export(gpta_home, tiny_bert_dir, sentiment_csv,
                                                      tmp_path):
    from sessions.runner import run_session, start_session

    for name in ("first", "second"):
        handle, engine = start_session(tiny_config(tiny_bert_dir, sentiment_csv, name, epochs=1),
                                       gpta_home)
        await asyncio.to_thread(run_session, handle, engine)
    app = GptaApp(gpta_home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SessionsScreen)
        assert sorted(r.name for r in screen.rows) == ["first", "second"]
        assert all(r.status == "finished" for r in screen.rows)
        # export the selected session
        target = tmp_path / "export"
        selected = screen.selected.name
        await pilot.press("x")
        app.screen.query_one(Input).value = str(target)
        await pilot.press("enter")
        await wait_for(pilot, lambda: (target / "report.md").exists(), "the export")
        # open it: a finished session is shown read-only with its past
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.run_screen is not None, "the dashboard")
        assert app.controller is None and app.run_screen.state.losses
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen), "the sessions list")
        # delete asks first; "n" keeps it, "y" deletes it
        await pilot.press("d", "n")
        await pilot.pause()
        assert len(screen.rows) == 2
        await pilot.press("d", "y")
        await pilot.pause()
        assert [r.name for r in screen.rows] == [n for n in ("first", "second") if n != selected]
    assert not (gpta_home / "sessions" / selected).exists()


async def test_quit_asks_while_a_fine_tune_job_runs(gpta_home, tiny_bert_dir, sentiment_csv,
                                                  fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
    fake_openai.set_job_behaviour("never")  # the job stays running until cancelled
    config = tiny_config(tiny_bert_dir, sentiment_csv, "tuning", epochs=2,
                         ta={"backend": "openai", "model": "gpt-4o-mini",
                             "base_url": fake_openai.base_url},
                         finetune={"backend": "openai", "poll_interval_s": 0.2},
                         loop={"k": 14, "l": 7, "window": 2})  # 12 windows: enough for OpenAI
    app = GptaApp(gpta_home)
    async with app.run_test(size=SIZE) as pilot:
        app.start_run(config)
        await wait_for(pilot, lambda: app.run_screen is not None, "the dashboard")
        state = run_screen(app).state
        await wait_for(pilot, lambda: state.active_job is not None and state.active_job.job_id,
                       "a running fine-tune job")
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        assert state.active_job.job_id in str(app.screen.question)
        await pilot.press("n")
        await pilot.pause(0.3)
        assert app.is_running and app.controller.running
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    assert app.controller.result.status == "stopped" and not app.controller.running
    assert fake_openai.requests_to(r"/fine_tuning/jobs/.+/cancel", "POST")


async def test_command_palette_runs_dashboard_actions(gpta_home, tiny_bert_dir, sentiment_csv,
                                                      fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
    # The first TA reply takes 8 s: the run is surely still going when the command arrives.
    fake_openai.add_fault(path="chat/completions", delay_s=8.0)
    config = tiny_config(tiny_bert_dir, sentiment_csv, "palette", epochs=1,
                         ta={"backend": "openai", "model": "gpt-4o-mini",
                             "base_url": fake_openai.base_url})
    app = GptaApp(gpta_home)
    async with app.run_test(size=SIZE) as pilot:
        app.start_run(config)
        await wait_for(pilot, lambda: app.run_screen is not None, "the dashboard")
        screen = run_screen(app)
        await pilot.press("ctrl+p")
        await pilot.press(*"pause")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette)
                       and app.screen.query_one(CommandList).option_count > 0, "the palette's matches")
        options = app.screen.query_one(CommandList)
        if options.highlighted is None:
            await pilot.press("down")
        assert "Pause / resume run" in str(options.get_option_at_index(options.highlighted).prompt)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.state.status == "paused" or not app.controller.running,
                       "the engine to pause")
        assert screen.state.status == "paused"
        screen.action_stop()
        await pilot.press("y")
        result = await run_ended(pilot, app, "the run to stop")
        assert result.status == "stopped"


async def test_q_during_a_slow_http_ta_reply_abandons_it_and_saves(gpta_home, tiny_bert_dir,
                                                                    sentiment_csv, fake_openai,
                                                                    monkeypatch):
    """The in-flight HTTP request of an OpenAI-compatible TA is abandoned on q: the engine
    stops at once (it does not wait for the 10 s reply), saves, and the app leaves."""
    monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
    config = tiny_config(tiny_bert_dir, sentiment_csv, "slow-ta", epochs=1,
                         ta={"backend": "openai", "model": "gpt-4o-mini",
                             "base_url": fake_openai.base_url, "timeout_s": 60.0})
    fake_openai.add_fault(path="chat/completions", delay_s=10.0)  # the first TA reply is slow
    app = GptaApp(gpta_home)
    async with app.run_test(size=SIZE) as pilot:
        app.start_run(config)
        await wait_for(pilot, lambda: app.run_screen is not None, "the dashboard")
        state = run_screen(app).state
        await wait_for(pilot, lambda: state.ta_waiting is not None, "the slow TA request")
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    assert app.shutdown_engine(timeout=120)  # what gpta-tui's main() does after the UI is gone
    assert app.controller.result is not None and app.controller.result.status == "stopped"
    assert {s.name: s.status for s in SessionStore(gpta_home).list()}["slow-ta"] == "paused"


async def test_a_session_running_elsewhere_opens_read_only(gpta_home, tiny_bert_dir,
                                                           sentiment_csv):
    from engine.controls import Controls
    from sessions.runner import run_session, start_session

    controls = Controls()
    handle, engine = start_session(tiny_config(tiny_bert_dir, sentiment_csv, "busy", epochs=2),
                                   gpta_home, controls=controls)
    engine.subscribe(lambda e: controls.stop() if e.kind == "train_step" else None)
    await asyncio.to_thread(run_session, handle, engine)  # stopped after its first step
    writer = SessionStore(gpta_home).open("busy", write=True)  # "another process" writes it
    try:
        app = GptaApp(gpta_home, resume="busy")
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.run_screen is not None, "the dashboard")
            assert app.controller is None  # nothing started here
            assert run_screen(app).state.losses  # its saved past is shown
    finally:
        writer.close()


class StopWatchingTA:
    """A TA whose every request blocks until the run's stop flag is set (a generation that
    only a stop can end); then it answers like the seeded fake. `controls` is attached by the
    test once the app has made them."""

    def __new__(cls):
        from tests.fake_ta import SeededTA

        class _TA(SeededTA):
            controls = None
            saw_stop = threading.Event()
            waiting = threading.Event()

            def propose(self, messages, n, temperature, seed, should_stop=None):
                deadline = time.monotonic() + WAIT_S
                self.waiting.set()
                while self.controls is None or not self.controls.stop_requested:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the stop flag never came")
                    time.sleep(0.01)
                self.saw_stop.set()
                return super().propose(messages, n, temperature, seed)

        return _TA(["amber", "birch", "cobalt", "dune", "ember", "fjord"])


@pytest.mark.parametrize("how", ["q", "hangup"])
async def test_quit_during_a_blocking_ta_request_stops_at_once(gpta_home, tiny_bert_dir,
                                                              sentiment_csv, how):
    """One q (or the terminal closing) asks the engine to stop while the TA is mid-request;
    the app leaves as soon as the engine thread has saved, with no second key."""
    ta = StopWatchingTA()
    app = GptaApp(gpta_home)
    async with app.run_test(size=SIZE) as pilot:
        app.start_run(tiny_config(tiny_bert_dir, sentiment_csv, f"blocked-{how}", epochs=1),
                      engine_kwargs={"ta": ta})
        ta.controls = app.controller.controls
        await wait_for(pilot, ta.waiting.is_set, "the TA request")
        assert app.controller.running and not ta.saw_stop.is_set()
        if how == "q":
            await pilot.press("q")
        else:
            app.hangup()
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    if how == "hangup":  # the UI leaves at once; gpta-tui's main() then waits for the save
        assert app.shutdown_engine(timeout=WAIT_S)
    assert ta.saw_stop.is_set() and not app.controller.running
    assert app.controller.result is not None and app.controller.result.status == "stopped"
    assert {s.name: s.status for s in SessionStore(gpta_home).list()}[f"blocked-{how}"] == "paused"


async def test_x_stops_a_blocking_ta_request_and_the_dashboard_offers_resume(gpta_home, tiny_bert_dir,
                                                                             sentiment_csv):
    ta = StopWatchingTA()
    app = GptaApp(gpta_home)
    async with app.run_test(size=SIZE) as pilot:
        app.start_run(tiny_config(tiny_bert_dir, sentiment_csv, "blocked-x", epochs=1),
                      engine_kwargs={"ta": ta})
        ta.controls = app.controller.controls
        await wait_for(pilot, ta.waiting.is_set, "the TA request")
        screen = run_screen(app)
        assert screen.check_action("stop", ()) and not screen.check_action("resume", ())
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        result = await run_ended(pilot, app, "the run to stop")
        assert result.status == "stopped" and app.is_running
        await pilot.pause(0.3)
        assert screen.state.status == "stopped"
        assert not screen.check_action("stop", ()) and not screen.check_action("toggle_pause", ())
        assert screen.check_action("resume", ()) and screen.check_action("clone", ())
        # r resumes the same session (the scripted TA this time), live again
        await pilot.press("r")
        await wait_for(pilot, lambda: app.controller.running or app.controller.result, "the resume")
        assert app.run_screen is not screen and app.run_screen.state.name == "blocked-x"
        await run_ended(pilot, app, "the resumed run")
        assert app.controller.result.status == "finished"


async def test_resume_with_a_ta_endpoint_from_the_command_line(gpta_home, tiny_bert_dir,
                                                               sentiment_csv, fake_openai,
                                                               monkeypatch):
    """`gpta-tui --resume NAME --ta-base-url URL`: the endpoint (credentials in it are never
    stored) reaches the resumed run; the stored one is not called again."""
    from engine import events as ev
    from engine.controls import Controls
    from sessions.runner import run_session, start_session
    from tests.fake_openai import FakeOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
    config = tiny_config(tiny_bert_dir, sentiment_csv, "moved", epochs=1,
                         ta={"backend": "openai", "model": "gpt-4o-mini",
                             "base_url": fake_openai.base_url, "retries": 0})
    controls = Controls()

    def stopper(event):
        if isinstance(event, ev.TrainStep) and event.step == 2:
            controls.stop()

    handle, engine = start_session(config, gpta_home, listeners=[stopper], controls=controls)
    assert (await asyncio.to_thread(run_session, handle, engine)).status == "stopped"
    before = len(fake_openai.requests_to("/v1/chat/completions"))
    moved = FakeOpenAI(api_key=fake_openai.api_key).start()
    try:
        app = GptaApp(gpta_home, resume="moved",
                      resume_overrides={"ta": {"base_url": moved.base_url}})
        async with app.run_test(size=SIZE) as pilot:
            await run_ended(pilot, app, "the resumed run to finish")
            assert app.controller.result.status == "finished"
        assert moved.requests_to("/v1/chat/completions")  # the new endpoint answered
        assert len(fake_openai.requests_to("/v1/chat/completions")) == before
    finally:
        moved.close()


def test_ta_base_url_without_resume_is_one_clear_error(capsys):
    from gpta_tui.app import main

    assert main(["--ta-base-url", "http://example.invalid/v1"]) == 2
    err = capsys.readouterr().err
    assert "--ta-base-url goes with --resume NAME" in err and "Fix:" in err
