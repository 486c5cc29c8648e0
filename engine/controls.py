"""Thread-safe controls a front end sends to a running engine.

The engine polls `checkpoint()` at step boundaries (after every training step, every
scored prefix, every TA request, every fine-tune poll). Nothing is ever killed mid-step,
except a TA request: the TA polls `stop_requested` while it generates or waits, gives up, and
the engine replays that request on resume.
"""

from __future__ import annotations

import threading
from typing import Callable

from engine.errors import StopRun


class Controls:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paused = False
        self._stop = False
        self._pending_description: str | None = None
        self._save_requested = False

    # ---- called by front ends (any thread) ----------------------------------------
    def pause(self) -> None:
        with self._cond:
            self._paused = True
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def toggle_pause(self) -> bool:
        with self._cond:
            self._paused = not self._paused
            self._cond.notify_all()
            return self._paused

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._paused = False
            self._cond.notify_all()

    def set_description(self, text: str) -> None:
        with self._cond:
            self._pending_description = text
            self._cond.notify_all()

    def request_save(self) -> None:
        with self._cond:
            self._save_requested = True

    # ---- read by the engine -----------------------------------------------------
    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def take_description(self) -> str | None:
        with self._cond:
            text, self._pending_description = self._pending_description, None
            return text

    def take_save_request(self) -> bool:
        with self._cond:
            asked, self._save_requested = self._save_requested, False
            return asked

    def checkpoint(self, on_pause: Callable[[bool], None] | None = None) -> None:
        """Block while paused; raise StopRun if a stop was requested.

        `on_pause(True)` is called once when the engine starts waiting and `on_pause(False)`
        when it continues, so the engine can emit status events and save.
        """
        with self._cond:
            if self._stop:
                raise StopRun()
            if not self._paused:
                return
        if on_pause:
            on_pause(True)
        with self._cond:
            while self._paused and not self._stop:
                self._cond.wait(timeout=0.5)
            stopped = self._stop
        if stopped:
            raise StopRun()
        if on_pause:
            on_pause(False)

    def sleep(self, seconds: float) -> None:
        """Wait up to `seconds`, waking early on stop (used while polling jobs)."""
        with self._cond:
            if not self._stop:
                self._cond.wait(timeout=seconds)
        if self._stop:
            raise StopRun()
