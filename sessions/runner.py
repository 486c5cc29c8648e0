"""Start and resume engine runs as persisted sessions.

    handle, engine = start_session(config, home, listeners=[view])
    finished = run_session(handle, engine, new=True)   # blocking; a UI runs it in a thread

`resume_session` reopens a saved session for writing and builds the engine from its last
checkpoint: the run continues in the same phase as if it had never stopped. `run_session` is
the one run loop that `gpta run`/`resume`, the TUI and `gpta compare` share: run to the end,
close the session, delete a new session whose run failed during setup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from engine.config import RunConfig, apply_mapping
from engine.controls import Controls
from engine.errors import GptaError, UsageError
from engine.events import Listener, RunFinished
from engine.paths import contained
from sessions.store import SessionHandle, SessionStore

# Settings a resume may change: where and how to reach things, never what is computed.
RESUME_OVERRIDABLE = {
    "device", "ta.base_url", "ta.api_key_env", "ta.timeout_s", "ta.retries",
    "ta.max_tokens_budget", "ta.max_cost", "finetune.timeout_s", "finetune.poll_interval_s",
    "student.eval_batch_size",
}


def _flat_keys(mapping: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            keys.extend(_flat_keys(value, f"{prefix}{key}."))
        else:
            keys.append(f"{prefix}{key}")
    return keys


def start_session(config: RunConfig, home: Path | str | None = None, *,
                  listeners: Iterable[Listener] = (), controls: Controls | None = None,
                  **engine_kwargs: Any):
    """Create a session for `config` (locked for writing) and the engine that will run it.

    The session's listener comes first, so every event is persisted before a front end
    sees it. Returns (handle, engine); the engine has not run yet. Close the handle after
    the run. `config` may carry an api_key: it reaches the engine but is never stored.
    """
    from engine.loop import Engine

    store = SessionStore(home)
    config = config.copy().validate()
    handle = store.create(config)
    try:
        config.name = handle.name
        engine = Engine(config, handle.dir, controls=controls,
                        listeners=[handle.listener, *listeners],
                        record_checkpoint=handle.record_checkpoint, **engine_kwargs)
    except BaseException:
        handle.close()
        store.delete(handle.name)
        raise
    _stop_on_write_error(handle, engine)
    return handle, engine


def _stop_on_write_error(handle: SessionHandle, engine) -> None:
    """A session that cannot be written (disk full) stops its run at the next step boundary:
    the stored state stays at the last complete write, and closing the handle raises the
    one-line SessionWriteError that says how to continue."""
    controls = engine.controls  # not the engine: the handle must not keep the student alive
    handle.on_write_error = lambda _error: controls.stop()


def resume_session(name: str, home: Path | str | None = None, *,
                   listeners: Iterable[Listener] = (), controls: Controls | None = None,
                   api_key: str | None = None, overrides: dict | None = None,
                   **engine_kwargs: Any):
    """Reopen session `name` for writing and build an engine that continues it.

    Refuses a finished session, one another process is running, and one whose checkpoint
    files are gone. `api_key` (memory only) is handed to the TA for this run. `overrides`
    is a nested mapping of the settings in RESUME_OVERRIDABLE (device, endpoints, timeouts,
    budgets); anything that would change the results is refused.
    """
    from engine.loop import Engine

    store = SessionStore(home)
    handle = store.open(name, write=True)
    try:
        status = handle.status
        if status == "finished":
            raise UsageError(f"session {name!r} has already finished",
                             f"see its results with `gpta show {name}` or export them; "
                             "start a new run to train again")
        state = handle.last_state
        if handle.record().get("imported_from"):
            raise GptaError(f"session {name!r} was imported from an export, which carries no "
                            "checkpoints, so it cannot be resumed",
                            "view it with `gpta show`, or start a new run with its config")
        checkpoint = (state or {}).get("checkpoint")
        if checkpoint:
            path = contained(handle.dir, checkpoint, "checkpoint")
            if not path.exists():
                raise GptaError(
                    f"session {name!r} cannot be resumed: its checkpoint {str(path)!r} is missing",
                    "view it with `gpta show`, or start a new run with its config")
        config = handle.config
        if overrides:
            refused = sorted(set(_flat_keys(overrides)) - RESUME_OVERRIDABLE)
            if refused:
                raise UsageError(f"cannot change {', '.join(refused)} when resuming session {name!r}",
                                 "start a new session to change settings that affect results")
            apply_mapping(config, overrides, "resume options")
            config.validate()
            handle.update_config(config)
        if api_key:
            config.ta.api_key = api_key
        controls = controls or Controls()
        handle.begin_resume()
        pending = handle.pending_description()
        if pending is not None and state and pending != state.get("description"):
            controls.set_description(pending)  # a description the user set after the checkpoint
        engine = Engine(config, handle.dir, controls=controls, resume=state,
                        listeners=[handle.listener, *listeners],
                        record_checkpoint=handle.record_checkpoint, **engine_kwargs)
    except BaseException:
        handle.close()
        raise
    _stop_on_write_error(handle, engine)
    return handle, engine


def run_session(handle: SessionHandle, engine, *, new: bool = False,
                on_removed: Callable[[str], None] | None = None) -> RunFinished:
    """Run the engine to its end in this thread, then close the session; return its RunFinished
    (status finished or stopped; `sessions.status.session_status` maps it to the stored word).

    The engine's error is raised after the session is closed. A `new` session whose run ended
    (an error, or an abort) before it got past setup (bad dataset, missing model, an
    unreachable TA) holds nothing worth keeping: it is deleted and `on_removed(name)` is
    called. Closing raises SessionWriteError (one line) if the session could not be written.
    """
    try:
        return engine.run()
    except BaseException:
        handle.close()
        if new and engine.state.phase == "setup":
            handle.store.delete(handle.name)
            if on_removed is not None:
                on_removed(handle.name)
        raise
    finally:
        handle.close()
