"""The one status vocabulary of runs and sessions, defined here and nowhere else.

Engine statuses (StatusChanged / RunFinished): running, paused, stopping, stopped, interrupted,
failed, finished. A session stores fewer: a stopped run is saved and resumable, which the store
records as "paused" (ENGINE_TO_SESSION). What a user reads is one word per situation (`shown`):

    running      a process is running it
    paused       a process holds it at a step boundary (p pressed; or the TA is unreachable)
    stopping     a stop was asked for; it saves at the next step boundary
    stopped      saved and resumable, nobody runs it (stored as "paused")
    interrupted  the process running it ended without saving a status; resumable
    failed       it ended with an error; resumable from its last checkpoint
    finished     done, with test results; opens read-only
    loading      a resumed run is loading its models (before the engine says "running")
"""

from __future__ import annotations

ENGINE_TO_SESSION = {"running": "running", "paused": "paused", "stopping": "running",
                     "stopped": "paused", "interrupted": "interrupted", "failed": "failed",
                     "finished": "finished"}
SESSION_STATUSES = ("running", "paused", "interrupted", "failed", "finished")
SHOWN = ("new", "loading", "running", "paused", "stopping", "stopped", "interrupted", "failed",
         "finished", "unreadable")
_RESUMABLE = {"paused", "stopped", "interrupted", "failed"}


def session_status(engine_status: str) -> str:
    """The status a session stores for an engine status."""
    return ENGINE_TO_SESSION.get(engine_status, engine_status)


def shown(status: str, live: bool) -> str:
    """The word shown for a session or run status; `live`: a process is running it now."""
    if status == "paused" and not live:
        return "stopped"
    if status == "stopped" and live:
        return "stopping"
    return status


def resumable(shown_status: str) -> bool:
    """Whether a session showing `shown_status` (and run by nobody) can be resumed."""
    return shown_status in _RESUMABLE
