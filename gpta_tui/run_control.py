"""RunController: one session's engine, run in a background thread, seen through a buffer.

The engine thread never touches widgets. Its listener (`EventBuffer`) only appends events to
a locked list; the app drains that list a few times a second on its own thread, folds the
events into the controller's `DashboardState` and redraws. Pause, stop, description edits and
save requests go through `engine.controls.Controls`; nothing is ever killed.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from pathlib import Path
from typing import Any, Callable

from engine.config import RunConfig
from engine.controls import Controls
from engine.events import Event, Notice, RunFinished, RunStarted, StatusChanged
from gpta_tui.dashboard import DashboardState
from sessions.status import shown


def freeze_heap() -> None:
    """Move everything alive now (libraries, model weights' Python objects, widgets) out of
    the garbage collector's reach.

    Once the engine has loaded its models the process holds millions of long-lived objects,
    and every full (generation 2) collection walks them all: 250-600 ms with the GIL held,
    during which no key is handled. Frozen objects are never scanned again, so those pauses
    shrink to the size of what the run allocates afterwards.
    """
    gc.freeze()


def _without_frames(exc: BaseException) -> BaseException:
    """`exc` with the tracebacks of it and its causes dropped.

    The UI keeps a failed run's error to show it; its traceback would keep every frame of
    the engine thread alive, and with them the student and TA on the GPU, so the next run in
    the same app could run out of memory. (The engine logs an unexpected error's traceback.)"""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
    return exc


class EventBuffer:
    """A thread-safe event inbox: `buffer(event)` from any thread, `drain()` from the UI."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    def drain(self) -> list[Event]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)


def config_dict(config: Any) -> dict:
    """A handle's config as plain data, whether it is a RunConfig or already a dict."""
    if isinstance(config, RunConfig):
        return config.to_dict()
    if isinstance(config, dict):
        return dict(config)
    to_dict = getattr(config, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else {}


def load_past(home: Path | None, name: str) -> DashboardState:
    """A session's full stored past as dashboard state (read-only; the session stays closed)."""
    from sessions.store import SessionStore

    handle = SessionStore(home).open(name, write=False)
    try:
        state = DashboardState(handle.name, config_dict(handle.config))
        events = list(handle.events())  # ends with the stored (effective) status
    finally:
        handle.close()
    if len(events) >= 2 and isinstance(events[-1], RunFinished) and isinstance(events[-2], StatusChanged):
        del events[-2]  # the stored status restates the RunFinished that follows (in store words)
    state.apply_all(events)
    state.status = shown(state.status, live=False)  # nobody runs it now
    return state


class RunController:
    """Owns a session's Controls, event buffer, dashboard state and engine thread.

    `start()` runs the session in its own (non-daemon) thread: it starts or resumes the
    session, runs the engine to the end and closes the session. The UI awaits it with
    `wait()` inside a Textual worker. The engine does not live in Textual's thread pool on
    purpose: that pool is joined before `App.run()` returns, so a long engine step would
    hold a blank terminal; with our own thread the UI leaves at once and `gpta-tui` waits
    for the save in plain view (see `gpta_tui.app.main`).
    """

    def __init__(self, home: Path | None, *, name: str, config: RunConfig | None = None,
                 resume: bool = False, state: DashboardState | None = None,
                 engine_kwargs: dict | None = None) -> None:
        """`engine_kwargs`: handed to the Engine (e.g. `ta=` a teaching assistant object)."""
        if config is None and not resume:
            raise ValueError("a new run needs a config")
        self.home = home
        self.name = name
        self.config = config
        self.resume = resume
        self.controls = Controls()
        self.engine_kwargs = dict(engine_kwargs or {})
        self.buffer = EventBuffer()
        self.state = state or DashboardState(name, config.to_dict() if config else None)
        self.handle = None
        self.engine = None
        self.result: RunFinished | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._on_done: list[Callable[[], None]] = []

    # ---- the engine thread ---------------------------------------------------------
    def start(self) -> None:
        """Start the engine thread (once)."""
        if self._thread is not None:
            raise RuntimeError(f"session {self.name!r} was already started")
        self._thread = threading.Thread(target=self._main, name=f"gpta-engine:{self.name}")
        self._thread.start()

    def _main(self) -> None:
        try:
            self.result = self._run()
        except BaseException as exc:  # noqa: BLE001 - handed to the UI by wait()
            self.error = _without_frames(exc)
        finally:
            with self._lock:
                self._done.set()
                callbacks, self._on_done = self._on_done, []
            for callback in callbacks:
                callback()

    def _run(self) -> RunFinished:
        from sessions.runner import resume_session, run_session, start_session

        # Interactive: an unreachable TA pauses the run (the user fixes it and resumes).
        kwargs = {"listeners": [self.buffer], "controls": self.controls,
                  "on_ta_unavailable": "pause", **self.engine_kwargs}
        if self.resume:
            handle, engine = resume_session(self.name, self.home, **kwargs)
        else:
            handle, engine = start_session(self.config, self.home, **kwargs)
        self.handle, self.engine = handle, engine
        self.name = handle.name

        def removed(name: str) -> None:
            self.buffer(Notice(level="warning", message=f"removed the new session {name}: it "
                               "failed before training started, so there is nothing to resume"))

        try:
            return run_session(handle, engine, new=not self.resume, on_removed=removed)
        finally:
            # The run is over: nothing may keep its models (GPU memory) alive for the next run.
            self.engine = None

    async def wait(self) -> RunFinished | None:
        """Await the engine thread from the UI's event loop: its result, or its error raised."""
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()
        def wake() -> None:
            try:
                loop.call_soon_threadsafe(finished.set)
            except RuntimeError:  # the UI left first (hangup, a second q): nobody waits
                pass

        with self._lock:
            if not self._done.is_set():
                self._on_done.append(wake)
            else:
                finished.set()
        await finished.wait()
        if self.error is not None:
            raise self.error
        return self.result

    # ---- called from the UI thread -------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and not self._done.is_set()

    def drain(self) -> set[str]:
        """Fold buffered events into the state. Returns the sections that changed."""
        events = self.buffer.drain()
        if not events:
            return set()
        if any(isinstance(e, RunStarted) for e in events):
            freeze_heap()  # the engine has finished loading its models
        return self.state.apply_all(events)

    def note(self, message: str, level: str = "info") -> set[str]:
        """A UI-side log line (not stored in the session)."""
        return self.state.apply(Notice(level=level, message=message))

    def toggle_pause(self) -> bool:
        return self.controls.toggle_pause()

    def stop(self) -> None:
        self.controls.stop()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the engine thread to finish. True if it has (or never started)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()
