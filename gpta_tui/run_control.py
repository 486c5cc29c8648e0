"""RunController: one session's engine, run in a background thread, seen through a buffer.

The engine thread never touches widgets. Its listener (`EventBuffer`) only appends events to
a locked list; the app drains that list a few times a second on its own thread, folds the
events into the controller's `DashboardState` and redraws. Pause, stop, description edits and
save requests go through `engine.controls.Controls`; nothing is ever killed.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

from engine.config import RunConfig
from engine.controls import Controls
from engine.events import Event, Notice, RunFinished, RunStarted
from gpta_tui.dashboard import DashboardState


def freeze_heap() -> None:
    """Move everything alive now (libraries, model weights' Python objects, widgets) out of
    the garbage collector's reach.

    Once the engine has loaded its models the process holds millions of long-lived objects,
    and every full (generation 2) collection walks them all: 250-600 ms with the GIL held,
    during which no key is handled. Frozen objects are never scanned again, so those pauses
    shrink to the size of what the run allocates afterwards.
    """
    gc.freeze()


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
        state.apply_all(handle.events())  # ends with the stored (effective) status
    finally:
        handle.close()
    return state


class RunController:
    """Owns a session's Controls, event buffer, dashboard state and engine thread.

    `work()` is the worker body: it starts (or resumes) the session, runs the engine to the
    end and closes the session. Call it in exactly one thread.
    """

    def __init__(self, home: Path | None, *, name: str, config: RunConfig | None = None,
                 resume: bool = False, state: DashboardState | None = None) -> None:
        if config is None and not resume:
            raise ValueError("a new run needs a config")
        self.home = home
        self.name = name
        self.config = config
        self.resume = resume
        self.controls = Controls()
        self.buffer = EventBuffer()
        self.state = state or DashboardState(name, config.to_dict() if config else None)
        self.handle = None
        self.engine = None
        self.result: RunFinished | None = None
        self.error: BaseException | None = None
        self._launched = False
        self._done = threading.Event()

    # ---- the worker thread ---------------------------------------------------------
    def work(self) -> RunFinished | None:
        self._launched = True
        try:
            from sessions.runner import resume_session, start_session

            # Interactive: an unreachable TA pauses the run (the user fixes it and resumes).
            kwargs = {"listeners": [self.buffer], "controls": self.controls,
                      "on_ta_unavailable": "pause"}
            if self.resume:
                handle, engine = resume_session(self.name, self.home, **kwargs)
            else:
                handle, engine = start_session(self.config, self.home, **kwargs)
            self.handle, self.engine = handle, engine
            self.name = handle.name
            try:
                self.result = engine.run()
            finally:
                handle.close()
            return self.result
        except BaseException as exc:  # the app reports it (worker state ERROR)
            self.error = exc
            raise
        finally:
            self._done.set()

    # ---- called from the UI thread -------------------------------------------------
    def mark_launched(self) -> None:
        """Call just before handing `work` to a thread, so `running` is true from then on."""
        self._launched = True

    @property
    def running(self) -> bool:
        return self._launched and not self._done.is_set()

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
        if not self._launched:
            return True
        return self._done.wait(timeout)
