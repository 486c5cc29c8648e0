"""gpta-tui: the Textual dashboard for GPTA runs.

    gpta-tui                       sessions list (or, with none yet, the new-session form)
    gpta-tui --resume NAME         reopen a session: its past at once, then it continues live
    gpta-tui --home DIR            keep sessions under DIR (default: $GPTA_HOME or the user data dir)
    gpta-tui --preset smoke        preset for the new-session form (smoke, default, paper)

One run at a time: the engine runs in a background thread supervised by a Textual worker; its
events go through a buffer that the app drains five times a second into the dashboard state.
Quitting stops the engine at its next step boundary (the session is saved and resumable) and
waits for the thread.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from textual import events
from rich.markup import escape
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from engine.config import PRESETS, RunConfig
from engine.errors import GptaError, strip_control
from gpta_tui import form
from gpta_tui.prefs import Prefs, load_estimates, load_key
from gpta_tui.run_control import RunController, load_past
from gpta_tui.screens.confirm import ConfirmScreen
from gpta_tui.screens.help import HelpScreen
from gpta_tui.screens.new_session import NewSessionScreen
from gpta_tui.screens.run import RunScreen
from gpta_tui.screens.sessions import SessionsScreen
from gpta_tui.screens.too_small import TooSmallScreen, too_small
from sessions.status import resumable

DRAIN_INTERVAL_S = 0.2
SWITCH_INTERVAL_S = 0.001


class GptaApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "gpta-tui"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    def __init__(self, home: Path | str | None = None, *, resume: str | None = None,
                 preset: str | None = None, clock: Callable[[], float] = time.time,
                 drain_interval: float = DRAIN_INTERVAL_S, start: Screen | None = None,
                 run_config: RunConfig | None = None, prefs: Prefs | None = None,
                 bell: bool = False, resume_overrides: dict | None = None) -> None:
        """`start`: show this screen instead of the sessions flow (demos, snapshots).
        `run_config`: start this run at once (scripts, benchmarks).
        `prefs`: what is remembered between launches (default: the user's gpta_tui.prefs file).
        `bell`: ring the terminal bell when a run finishes or fails.
        `resume_overrides`: settings for resuming `resume` (sessions.runner.resume_session's
        `overrides`, e.g. the TA endpoint with credentials that were never stored)."""
        super().__init__()
        self.prefs = prefs if prefs is not None else Prefs()
        self.ring_bell = bell
        if self.prefs.theme in self.available_themes:
            self.theme = self.prefs.theme
        self.start_screen = start
        self.run_config = run_config
        self.home = Path(home).expanduser() if home else None
        self.resume_name = resume
        self.resume_overrides = dict(resume_overrides or {})
        self.preset = preset
        self.clock = clock
        self.drain_interval = drain_interval
        self.controller: RunController | None = None
        self.worker: Worker | None = None
        self._quitting = False
        self._quit_question: ConfirmScreen | None = None
        self.last_form: dict[str, str] | None = None  # the new-run form as last submitted

    # ---- store access (the only place that talks to sessions/) ------------------------
    def _store(self):
        from sessions.store import SessionStore

        return SessionStore(self.home)

    @property
    def home_label(self) -> str:
        if self.home is not None:
            return str(self.home)
        from engine.resources import default_home

        return str(default_home())

    def list_sessions(self) -> list:
        return list(self._store().list())

    def session_locked(self, name: str) -> bool:
        """A process (this one included) is running the session."""
        return self._store().is_locked(name)

    def compare_sessions(self, names: list[str]) -> list:
        """The sessions side by side, read as `gpta compare` reads its runs (RunResult)."""
        from sessions.compare import read_sessions

        return read_sessions(names, self.home)

    def sessions_stamp(self, names: list[str]) -> tuple:
        """Changes whenever one of the sessions' summaries may have changed (a few stats)."""
        store = self._store()
        return tuple(store.stamp(name) for name in names)

    def session_names(self) -> set[str]:
        return set(self._store().names())

    def delete_session(self, name: str) -> None:
        if self.controller is not None and self.controller.running and self.controller.name == name:
            self.notify("That session is running: stop it first.", severity="error")
            return
        try:
            self._store().delete(name)
        except GptaError as exc:
            self.notify(str(exc), severity="error", markup=False)
        else:
            self.notify(f"Deleted {name}.", markup=False)

    def export_session(self, name: str, out_dir: str) -> None:
        from sessions.export import export_session

        try:
            handle = self._store().open(name, write=False)
            try:
                written = export_session(handle, Path(out_dir).expanduser())
            finally:
                handle.close()
        except GptaError as exc:
            self.notify(str(exc), severity="error", timeout=6, markup=False)
        else:
            self.notify(f"Exported {name} to {written}", timeout=5, markup=False)

    def watch_theme(self, theme: str) -> None:
        """Remember the theme chosen (palette: "Change theme") for the next launch."""
        if self.is_running:
            self.prefs.remember_theme(theme)

    # ---- screens -------------------------------------------------------------------
    def on_mount(self) -> None:
        self.set_interval(self.drain_interval, self.drain)
        self.call_after_refresh(self.check_size)
        self._watch_hangup(True)
        if self.start_screen is not None:
            self.push_screen(self.start_screen)
            return
        self.push_screen(SessionsScreen())
        if self.run_config is not None:
            self.start_run(self.run_config)
            return
        if self.resume_name:
            self.open_session(self.resume_name, resume=True)
            return
        try:
            empty = not self.list_sessions()
        except GptaError as exc:
            self.notify(str(exc), severity="error", timeout=8, markup=False)
            return
        if empty:
            self.new_session(first_launch=True)

    async def on_event(self, event: events.Event) -> None:
        await super().on_event(event)
        if isinstance(event, events.Resize):  # App handles (and stops) it in _on_resize
            self.call_after_refresh(self.check_size)

    def check_size(self) -> None:
        """Cover everything with a 'terminal too small' note below 80x24; lift it when larger."""
        small = too_small(*self.size)
        shown = isinstance(self.screen, TooSmallScreen)
        if small and not shown and self.screen_stack:
            self.push_screen(TooSmallScreen())
        elif not small and shown:
            self.pop_screen()

    def show_sessions(self) -> None:
        """Back to the sessions list (the bottom screen; made if the app started elsewhere)."""
        while len(self.screen_stack) > 1 and not isinstance(self.screen, SessionsScreen):
            self.pop_screen()
        if not isinstance(self.screen, SessionsScreen):
            self.push_screen(SessionsScreen())

    def new_session(self, first_launch: bool = False, config: dict | None = None) -> None:
        """The new-run form: with `config`, a clone of that run's settings; otherwise the form
        as last submitted in this app (a failed run's edits are not lost), else the defaults."""
        if self._busy():
            return
        taken = self.session_names()
        if config is not None:
            values = form.values_from_dict(config, self.preset or "smoke")
        elif self.last_form is not None:
            values = dict(self.last_form)
        else:
            values = form.default_values(self.preset or "smoke")
        if not values.get("name") or values["name"] in taken:
            values["name"] = form.suggest_name(values["dataset"], taken)
        self.show_sessions()

        def done(config: RunConfig | None) -> None:
            if config is not None:
                self.start_run(config)

        screen = NewSessionScreen(values, taken, first_launch=first_launch)
        self.push_screen(screen, done)

    def open_session(self, name: str, resume: bool = True) -> None:
        """Show a session's stored past at once; resume it live when it is not finished.
        The session this app is running opens its live dashboard."""
        controller = self.controller
        if controller is not None and controller.running and controller.name == name:
            self.show_sessions()
            self.push_screen(RunScreen(controller.state, controller, clock=self.clock))
            return
        if self._busy():
            return
        try:
            state = load_past(self.home, name)
        except GptaError as exc:
            self.notify(str(exc), severity="error", timeout=8, markup=False)
            return
        elsewhere = self._store().is_locked(name)
        self.show_sessions()
        if resume and resumable(state.status) and not elsewhere:
            state.status, state.status_reason = "loading", "resuming: loading the models"
            # the command line's settings are for the session it named, once
            overrides = {}
            if name == self.resume_name:
                overrides, self.resume_overrides = self.resume_overrides, {}
            controller = RunController(self.home, name=name, resume=True, state=state,
                                       engine_kwargs={"overrides": overrides} if overrides else None)
            self._launch(controller)
            return
        if elsewhere:
            self.notify(f"{name} is running in another gpta process: showing what it has saved.",
                        severity="warning", timeout=6, markup=False)
        self.push_screen(RunScreen(state, None, clock=self.clock))

    def start_run(self, config: RunConfig, engine_kwargs: dict | None = None) -> None:
        """Start a new run of `config`; `engine_kwargs` go to the Engine (tests, demos)."""
        self.last_form = form.values_from_dict(config.to_dict(), self.preset or "smoke")
        self.show_sessions()
        controller = RunController(self.home, name=config.name, config=config,
                                   engine_kwargs=engine_kwargs)
        controller.state.status = "loading"
        self._launch(controller)

    def _busy(self) -> bool:
        if self.controller is not None and self.controller.running:
            self.notify(f"Session {self.controller.name} is running: one run at a time.",
                        severity="warning", markup=False)
            return True
        return False

    def _launch(self, controller: RunController) -> None:
        """Run the session: its engine thread, supervised by an exclusive per-session worker
        whose state changes (success, error) tell the app when the run is over."""
        self.controller = controller
        state = controller.state
        resumed = controller.resume
        state.last_load = None  # a stored past's load is not this one
        state.load_estimates = load_estimates(self.prefs, state.config, resumed)
        self.push_screen(RunScreen(controller.state, controller, clock=self.clock))
        controller.start()
        self.worker = self.run_worker(controller.wait(), name=f"engine:{controller.name}",
                                      group=f"session:{controller.name}", exclusive=True,
                                      exit_on_error=False)

    @property
    def run_screen(self) -> RunScreen | None:
        for screen in reversed(self.screen_stack):
            if isinstance(screen, RunScreen):
                return screen
        return None

    # ---- engine events -> UI ---------------------------------------------------------
    def drain(self) -> None:
        """Fold buffered engine events into the state; tell the dashboard what changed."""
        controller = self.controller
        if controller is None:
            return
        changed = controller.drain()
        if controller.state.last_load is not None:  # the models are loaded: time it for next time
            seconds, dequantized = controller.state.last_load
            controller.state.last_load = None
            self.prefs.remember_load(load_key(controller.state.config, controller.resume, dequantized),
                                     seconds)
        screen = self.run_screen
        if changed and screen is not None and screen.controller is controller:
            screen.post_message(RunScreen.StateChanged(changed))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self.worker or self.controller is None:
            return
        if event.state not in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        self.drain()
        controller = self.controller
        if self._quitting:
            self.exit()
            return
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            text = str(error) if isinstance(error, GptaError) else f"{type(error).__name__}: {error}"
            self.notify(f"Run failed: {text}", severity="error", timeout=10, markup=False)
            if controller.state.status != "failed":  # it failed before the engine could say so
                changed = controller.note(f"the run stopped with an error: {text}", "error")
                controller.state.status, controller.state.status_reason = "failed", text
                screen = self.run_screen
                if screen is not None:
                    screen.post_message(RunScreen.StateChanged(changed | {"header"}))
        elif controller.result is not None and not self._quitting:
            status = controller.result.status
            self.notify(f"{controller.state.finish_summary()}\nv: the run summary · "
                        "Esc: back to the sessions.",
                        title=f"{controller.name}: {status}",
                        severity="information" if status == "finished" else "warning",
                        timeout=15 if status == "finished" else 8, markup=False)
        if self.ring_bell and controller.state.status in ("finished", "failed"):
            self.bell()
        screen = self.run_screen
        if (controller.state.status in ("finished", "failed") and screen is not None
                and self.screen is screen and screen.state is controller.state):
            from gpta_tui.screens.run_summary import RunSummaryScreen

            self.push_screen(RunSummaryScreen(controller.state))  # q still quits

    # ---- actions -------------------------------------------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            if not self.is_screen_installed("help"):
                self.install_screen(HelpScreen(), "help")  # built once, shown many times
            self.push_screen("help")

    async def action_quit(self) -> None:
        """Quit; a live run is stopped at its next step boundary (saved, resumable) first.

        A step can be long (a local TA generating on a busy CPU): pressing q again leaves the
        screen at once, and `main` waits for the engine to save before the process ends."""
        controller = self.controller
        if self._quitting:
            self.exit()
            return
        if controller is None or not controller.running:
            self.exit()
            return
        job = controller.state.active_job
        if job is not None and self.screen is self._quit_question:
            self._quit_question.dismiss(True)  # q over "Quit?": yes (q twice quits)
            return
        if job is not None:
            question = (f"Fine-tune job {escape(strip_control(job.job_id))} ({job.backend}) is still "
                        f"{escape(strip_control(job.status))}. Quitting "
                        "cancels it; the session is saved and resumes from this epoch's fine-tune. "
                        "Quit?")
            self._quit_question = ConfirmScreen(question, yes="Quit", no="Stay", danger=True)
            self.push_screen(self._quit_question, self._quit_confirmed)
            return
        await self._stop_and_exit()

    async def _quit_confirmed(self, yes: bool | None) -> None:
        if yes:
            await self._stop_and_exit()

    async def _stop_and_exit(self) -> None:
        """Ask the engine to stop; the app exits when the worker reports it has finished."""
        controller = self.controller
        self._quitting = True
        if controller is None or not controller.running:
            self.exit()
            return
        controller.stop()
        screen = self.run_screen
        if screen is not None:
            screen.post_message(RunScreen.StateChanged(controller.note(
                "quitting: saving the session at the next step boundary")))
        self.notify("Saving the session and stopping the run at the end of the current step… "
                    "(q again: leave now and let it finish saving in the background)", timeout=60)
        if self.worker is None or self.worker.is_finished:
            self.exit()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help", "Keys and what the dashboard shows", self.action_help)
        if isinstance(screen, RunScreen):
            yield SystemCommand("Pause / resume run", "Pause at the next step boundary, or continue",
                                screen.action_toggle_pause)
            yield SystemCommand("Edit dataset description", "A new version applies from the next "
                                "TA request", screen.action_edit_description)
            yield SystemCommand("Save now", "Write a checkpoint at the next step boundary",
                                screen.action_save)
            yield SystemCommand("Stop run", "Save and stop; resumable later", screen.action_stop)
            yield SystemCommand("Export curves (PNG, CSV)", "Loss and validation curves to "
                                "./<session>-curves/", screen.action_export_curves)
        if isinstance(screen, SessionsScreen):
            yield SystemCommand("New session", "Open the new-session form", screen.action_new)

    # ---- shutdown --------------------------------------------------------------------
    def _watch_hangup(self, on: bool) -> None:
        """Closing the terminal (SIGHUP) stops the run like q: saved, resumable."""
        if not hasattr(signal, "SIGHUP"):
            return
        try:
            loop = asyncio.get_running_loop()
            if on:
                loop.add_signal_handler(signal.SIGHUP, self.hangup)
            else:
                loop.remove_signal_handler(signal.SIGHUP)
        except (RuntimeError, ValueError, NotImplementedError):  # not the main thread
            pass

    def on_unmount(self) -> None:
        self._watch_hangup(False)

    def hangup(self) -> None:
        """The terminal is gone: ask the engine to stop now and leave; `main` waits for the
        engine to save (nobody can answer a question any more)."""
        self._quitting = True
        if self.controller is not None and self.controller.running:
            self.controller.stop()
        self.exit(return_code=129)

    def shutdown_engine(self, timeout: float | None = None) -> bool:
        """Stop a still-running engine and wait for its thread (used after `run()` returns)."""
        controller = self.controller
        if controller is None or not controller.running:
            return True
        controller.stop()
        return controller.join(timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpta-tui",
        description="Textual dashboard for GPTA: train a small NLP student with an LLM teaching "
                    "assistant, watch the prefix history, dialogue gradients and TA fine-tuning live. "
                    "Sessions are saved and resumable (also with the headless `gpta` command).")
    parser.add_argument("--resume", metavar="NAME", help="reopen session NAME and continue it")
    parser.add_argument("--home", metavar="DIR", type=Path, default=None,
                        help="data directory for sessions (default: $GPTA_HOME or the user data dir)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="preset for the new-session form (default: smoke, minutes on a CPU)")
    parser.add_argument("--bell", action="store_true",
                        help="ring the terminal bell when a run finishes or fails")
    parser.add_argument("--ta-base-url", metavar="URL", default=None,
                        help="with --resume: the OpenAI-compatible endpoint for this run; "
                             "credentials in it (user:password@host) are used but never stored")
    return parser


def _quiet_libraries(home: Path | None) -> None:
    """Keep library chatter (progress bars, warnings) off the terminal the TUI draws on:
    Python logging goes to <home>/gpta-tui.log instead."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from engine.resources import default_home

    folder = home.expanduser() if home else default_home()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(folder / "gpta-tui.log", encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(True)


def _say(message: str, stream=None) -> None:
    """Print to a terminal that may have been closed (SIGHUP): losing the line is fine."""
    try:
        print(message, file=stream or sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries(args.home)
    # The engine thread holds the GIL for long stretches of Python (tokenising, optimiser
    # bookkeeping); a shorter switch interval hands it to the UI thread sooner after a key.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if args.ta_base_url is not None and not args.resume:
        print("gpta-tui: error: --ta-base-url goes with --resume NAME. Fix: for a new run, "
              "fill in the form's TA base URL field", file=sys.stderr)
        return 2
    if args.resume:
        try:  # fail before taking over the terminal
            load_past(args.home, args.resume)
        except GptaError as exc:
            print(f"gpta-tui: error: {exc}", file=sys.stderr)
            return exc.exit_code
    overrides = {"ta": {"base_url": args.ta_base_url}} if args.ta_base_url else None
    app = GptaApp(args.home, resume=args.resume, preset=args.preset, bell=args.bell,
                  resume_overrides=overrides)
    try:
        app.run()
    finally:
        if hasattr(signal, "SIGHUP"):
            # The terminal may be gone: nothing may end this process before the engine saved.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if not app.shutdown_engine(timeout=0.5):
            _say("gpta-tui: waiting for the run to reach a step boundary and save the session…")
            try:
                app.shutdown_engine()
            except KeyboardInterrupt:
                _say("gpta-tui: interrupted; the session resumes from its last checkpoint")
                return 130
    name = app.controller.name if app.controller is not None else ""
    if app.controller is not None and app.controller.result is not None \
            and app.controller.result.status == "stopped":
        _say(f"gpta-tui: session {name!r} saved; continue with: gpta-tui --resume {name}",
             sys.stdout)
    return app.return_code or 0

if __name__ == "__main__":
    sys.exit(main())
