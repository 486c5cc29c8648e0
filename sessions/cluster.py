"""`gpta compare --executor ray`: the runs of a comparison as Ray tasks, side by side.

    options = ClusterOptions(address=None, gpus_per_run=1, cpus_per_run=4)
    outcome = run_compare_ray(spec, home, out_dir, options, on_progress=view.update)

Each planned run (arm x seed x size x windows) is one Ray task asking for `cpus_per_run` CPUs
and `gpus_per_run` GPUs (fractions share a GPU); Ray places them on the cluster's nodes and
sets each task's CUDA_VISIBLE_DEVICES, so a task trains on "cuda" (its first visible GPU),
or on the CPU when it asked for no GPU. Its torch thread pool is sized to its CPUs.

Storage. Without a shared filesystem a task runs in a temporary home of its own and returns
its session as `sessions.export.session_files` (the database and window files, no
checkpoints); the driver imports it into the user's home through `sessions.export`'s
validated import (`import_files`), so `gpta list/show` and the TUI see every run. Such a
session is marked `imported_from = "ray:NODE"`: an unfinished one is rerun from the start by
the next `gpta compare`. With `shared_home` (every node sees the same home at the same path)
tasks write there directly; a task retried after its worker died resumes the session from
its last checkpoint.

Faults. A worker that dies is Ray's business: the task is retried up to `max_retries` times.
A run that fails for its own reasons is recorded failed with its one-line reason; the others
go on. A stop (`controls.stop()`, the CLI's first Ctrl-C) cancels the queued tasks and asks
the running ones to stop at their next step boundary; a KeyboardInterrupt (the second
Ctrl-C) cancels every task at once. The manifest is saved at every change, and running the
comparison again skips the finished runs.

Progress. Tasks report to a small actor (`ProgressBoard`): started on which node, the share
of training done (at most once a second), and they poll it for a stop. The driver turns
that into a `ClusterProgress` (runs queued / running / finished / failed, per node) and
hands it to `on_progress` about twice a second.

Ray is optional (`pip install 'gpta-tui[cluster]'`); nothing here imports it before a
comparison asks for it.
"""

from __future__ import annotations

import collections
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.errors import GptaError, UsageError
from sessions.compare import (RAY_ORIGIN, CompareOutcome, finish_run, open_run, pending_runs,
                              prepare, record_result, save_manifest)
from sessions.export import import_files, session_files

#: how often a task may report its progress and ask whether to stop (seconds)
REPORT_EVERY_S = 1.0
#: Ray's retries of a task whose worker process or node died (Ray's own default)
MAX_RETRIES = 3


@dataclass(frozen=True)
class ClusterOptions:
    address: str | None = None    # None: a local Ray instance (or the one this process runs)
    gpus_per_run: float = 0.0
    cpus_per_run: int = 1
    shared_home: bool = False
    max_retries: int = MAX_RETRIES

    def validate(self) -> "ClusterOptions":
        if not isinstance(self.cpus_per_run, int) or self.cpus_per_run < 1:
            raise UsageError(f"invalid --cpus-per-run {self.cpus_per_run!r}",
                             "give a whole number of CPUs, 1 or more")
        gpus = self.gpus_per_run
        if not (gpus >= 0) or (gpus > 1 and gpus != int(gpus)):
            raise UsageError(f"invalid --gpus-per-run {gpus!r}",
                             "give 0, a fraction below 1 (runs share a GPU) or a whole number")
        if self.max_retries < 0:
            raise UsageError(f"invalid max_retries {self.max_retries!r}", "use 0 or more")
        return self


# ---- progress -------------------------------------------------------------------------------
@dataclass
class RunProgress:
    session: str
    status: str = "queued"     # queued | running | finished | failed | stopped | interrupted
    node: str = ""
    fraction: float = 0.0      # share of the run's training done (0..1)
    starts: int = 0            # how many times a worker started it (> 1: Ray retried it)
    message: str = ""


@dataclass
class ClusterProgress:
    """What the driver knows of the runs of this call (finished-earlier runs are not in it)."""

    runs: dict[str, RunProgress] = field(default_factory=dict)
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)

    ENDED = ("finished", "failed", "stopped", "interrupted")

    def counts(self) -> collections.Counter:
        return collections.Counter(r.status for r in self.runs.values())

    def per_node(self) -> dict[str, collections.Counter]:
        nodes: dict[str, collections.Counter] = {}
        for r in self.runs.values():
            if r.node:
                nodes.setdefault(r.node, collections.Counter())[r.status] += 1
        return dict(sorted(nodes.items()))

    def done(self) -> float:
        """Runs done, counting a running run by its share of training."""
        return sum(1.0 if r.status in self.ENDED else r.fraction if r.status == "running" else 0.0
                   for r in self.runs.values())

    def retried(self) -> int:
        return sum(r.starts > 1 for r in self.runs.values())


class ProgressBoard:
    """A Ray actor (num_cpus=0): tasks post their progress to it, the driver drains it, and a
    stop request reaches the tasks through it."""

    def __init__(self):
        self._events: list[tuple] = []
        self._starts: dict[str, int] = {}
        self._stop = False

    def start(self, session: str, node: str) -> int:
        """A worker starts `session`; returns which attempt this is (2 and up: Ray retried it)."""
        self._starts[session] = self._starts.get(session, 0) + 1
        self._events.append((session, "started", node, 0.0))
        return self._starts[session]

    def report(self, session: str, status: str, node: str, fraction: float) -> None:
        self._events.append((session, status, node, float(fraction)))

    def drain(self) -> list[tuple]:
        events, self._events = self._events, []
        return events

    def request_stop(self) -> None:
        self._stop = True

    def stopping(self) -> bool:
        return self._stop


class TaskListener:
    """In a task: the run's share of training to the board, and the board's stop request to
    the run's controls (a stop at the next step boundary); both at most once a second, the
    first time at the run's first event. `get` is ray.get (tests pass a stand-in)."""

    def __init__(self, board, session: str, node: str, epochs: int, controls,
                 get: Callable | None = None):
        self.board, self.session, self.node = board, session, node
        self.epochs, self.controls = max(1, int(epochs)), controls
        self.get = get
        self.last = -REPORT_EVERY_S

    def __call__(self, event) -> None:
        now = time.monotonic()
        if now - self.last < REPORT_EVERY_S:
            return
        self.last = now
        steps = getattr(event, "epoch_steps", 0)
        if steps:
            done = (event.epoch - 1 + event.epoch_step / steps) / self.epochs
            self.board.report.remote(self.session, "running", self.node, min(1.0, done))
        if self.get is None:
            import ray

            self.get = ray.get
        if not self.controls.stop_requested and self.get(self.board.stopping.remote(), timeout=30):
            self.controls.stop()


def node_label() -> str:
    """The node a task runs on, as shown in the progress and stored in the manifest."""
    import ray

    host = socket.gethostname()
    try:
        ip = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - a label only
        return host
    return f"{host} ({ip})" if ip and ip != host else host


# ---- the task ---------------------------------------------------------------------------------
def run_task(config: dict, session: str, home: str | None, cpus: int, gpus: float, board,
             engine_kwargs: Callable | None = None) -> dict:
    """One run, in a Ray worker. `home` is the shared home, or None for a temporary home of
    its own whose session is returned as `session_files`. Returns a plain dict."""
    import ray
    import torch

    from engine.config import RunConfig
    from engine.controls import Controls
    from sessions.store import SessionStore

    torch.set_num_threads(max(1, int(cpus)))  # one pool per run, sized to its CPUs
    node = node_label()
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    attempt = ray.get(board.start.remote(session, node))  # before the result can be ready
    cfg = RunConfig.from_dict(config, "comparison run")
    # Ray made the task's GPUs (if any) the only visible ones: "cuda" is the first of them
    cfg.device = "cuda" if gpus > 0 else "cpu"
    controls = Controls()
    own_home = tempfile.mkdtemp(prefix="gpta-ray-") if home is None else None
    store = SessionStore(own_home or home)
    started = time.perf_counter()
    out: dict[str, Any] = {"session": session, "node": node, "gpu_ids": gpu_ids, "attempt": attempt,
                           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                           "files": None}
    try:
        resume = store.exists(session)
        if resume:  # a shared home: a retried task, or a run stopped earlier
            with store.open(session) as reader:
                if reader.status == "finished":  # its worker died after the end
                    return {**out, "result": "finished", "message": "", "wall_s": 0.0}
        try:
            kwargs = engine_kwargs(cfg) if engine_kwargs else {}
            listener = TaskListener(board, session, node, cfg.loop.epochs, controls)
            handle, engine = open_run(session, cfg, store.home, resume=resume, listeners=[listener],
                                      controls=controls, engine_kwargs=kwargs)
        except GptaError as exc:
            result, message = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - the run's own failure: recorded, not retried
            result, message = "failed", f"{type(exc).__name__}: {exc}"
        else:
            result, message = finish_run(handle, engine)
        if own_home is not None and result in ("finished", "failed") and store.exists(session):
            with store.open(session) as reader:
                out["files"] = session_files(reader)
        return {**out, "result": result, "message": message,
                "wall_s": round(time.perf_counter() - started, 2)}
    finally:
        if own_home is not None:
            shutil.rmtree(own_home, ignore_errors=True)


# ---- the driver -------------------------------------------------------------------------------
def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray, which is not installed",
                         "pip install 'gpta-tui[cluster]' (on every node of the cluster)") from None
    return ray


def init_ray(ray, **kwargs) -> None:
    """`ray.init`, keeping this process's SIGINT and SIGTERM handlers: Ray's driver installs
    its own (a SIGTERM handler that exits), which would replace gpta's stop-at-a-step-boundary
    handling and outlive `ray.shutdown()`."""
    import signal

    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        ray.init(**kwargs)
    finally:
        for sig, handler in kept.items():
            if handler is not None:
                signal.signal(sig, handler)


def connect(options: ClusterOptions) -> bool:
    """Join the Ray cluster at options.address, or start a local instance; True if this call
    started it (the caller shuts it down). A Ray already initialised in this process is used."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    import logging

    try:
        init_ray(ray, address=options.address or None, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING, configure_logging=True)
    except Exception as exc:  # noqa: BLE001 - Ray raises plain Exception when its node is slow to start
        ray.shutdown()
        where = f"the Ray cluster at {options.address}" if options.address else "a local Ray instance"
        raise GptaError(f"cannot start or join {where} ({' '.join(str(exc).split())[:200]})",
                        "try again (a busy machine can miss Ray's 30 s start limit), or start "
                        "Ray yourself with `ray start --head` and pass --ray-address auto") from None
    return True


def check_resources(ray, options: ClusterOptions) -> None:
    """Refuse at once a run that no node can hold (Ray would wait for it forever)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    cpus = max((r.get("CPU", 0) for r in nodes), default=0)
    gpus = max((r.get("GPU", 0) for r in nodes), default=0)
    if options.cpus_per_run > cpus:
        raise UsageError(f"--cpus-per-run {options.cpus_per_run}: no node of the Ray cluster has "
                         f"that many CPUs (the largest has {cpus:g})",
                         f"use --cpus-per-run {max(1, int(cpus))} or less")
    if options.gpus_per_run > gpus:
        raise UsageError(f"--gpus-per-run {options.gpus_per_run:g}: no node of the Ray cluster "
                         f"has that many GPUs (the largest has {gpus:g})",
                         "use --gpus-per-run 0 to train on CPUs, or add GPU nodes")


def run_compare_ray(spec, home: Path | str | None, out_dir: Path | str | None,
                    options: ClusterOptions, *, controls=None, engine_kwargs: Callable | None = None,
                    say: Callable[[str], None] = lambda s: None,
                    on_progress: Callable[[ClusterProgress], None] | None = None):
    """Run (or continue) the runs of `spec` as Ray tasks; returns a CompareOutcome like
    `run_compare`. `engine_kwargs(config)` is called in the worker (it must pickle)."""
    from engine.controls import Controls

    ray = _import_ray()
    options.validate()
    controls = controls or Controls()
    store, out, manifest = prepare(spec, home, out_dir)
    skipped: list[str] = []
    todo = [(run, config, state) for _i, run, config, _entry, state
            in pending_runs(spec, store, manifest, skipped, say)]
    save_manifest(out, manifest)
    stranded = [run.session for run, _, state in todo if state == "resume"]
    if stranded and not options.shared_home:
        raise UsageError(f"session(s) {', '.join(stranded[:3])} of this comparison are unfinished "
                         f"in {str(store.home)!r}, and Ray workers cannot reach their checkpoints",
                         "pass --shared-home if every node sees that folder, finish them with "
                         "--executor local, or delete them (gpta delete NAME) to run them afresh")
    home_for_tasks = str(store.home.resolve()) if options.shared_home else None

    progress = ClusterProgress(skipped=len(skipped))
    failed: dict[str, str] = {}
    ran: list[str] = []
    stopping = False
    started = time.perf_counter()
    started_ray = connect(options) if todo else False
    board = None
    pending: dict[Any, Any] = {}
    try:
        if todo:
            check_resources(ray, options)
            board = ray.remote(ProgressBoard).options(num_cpus=0).remote()
            task = ray.remote(run_task)
        for run, config, _state in todo:
            ref = task.options(
                name=f"gpta:{run.session}", num_cpus=options.cpus_per_run,
                num_gpus=options.gpus_per_run, max_retries=options.max_retries,
                retry_exceptions=False).remote(
                config.to_dict(), run.session, home_for_tasks, options.cpus_per_run,
                options.gpus_per_run, board, engine_kwargs)
            pending[ref] = run
            progress.runs[run.session] = RunProgress(run.session)
            entry = manifest["runs"][run.session]
            entry.update(status="queued", executor="ray")
            ran.append(run.session)
        save_manifest(out, manifest)
        if todo:
            say(f"{len(todo)} run(s) queued on Ray: {options.cpus_per_run} CPU(s)"
                + (f" and {options.gpus_per_run:g} GPU(s)" if options.gpus_per_run else "")
                + " each" + (", shared home" if options.shared_home else ""))
        last_shown = 0.0
        while pending:
            if controls.stop_requested and not stopping:
                stopping = True
                say("stopping: queued runs cancelled, running runs stop at their next step boundary")
                board.request_stop.remote()
                for ref, run in pending.items():
                    if progress.runs[run.session].status == "queued":
                        ray.cancel(ref)
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
            changed = _apply_board(ray, board, progress, manifest)
            for ref in ready:
                run = pending.pop(ref)
                _settle(ray, ref, run, progress, manifest, store, failed, say, options)
                changed = True
            if changed:
                save_manifest(out, manifest)
            if on_progress is not None and (changed or time.monotonic() - last_shown > 0.5):
                on_progress(progress)
                last_shown = time.monotonic()
    except BaseException:
        for ref, run in pending.items():
            ray.cancel(ref, force=True)
            entry = manifest["runs"][run.session]
            entry["status"] = "interrupted"
            progress.runs[run.session].status = "interrupted"
        manifest["wall_s"] = round(manifest.get("wall_s", 0.0) + time.perf_counter() - started, 2)
        save_manifest(out, manifest)
        raise
    finally:
        if board is not None:
            ray.kill(board)
        if started_ray:
            ray.shutdown()
    if on_progress is not None and todo:
        on_progress(progress)
    manifest["wall_s"] = round(manifest.get("wall_s", 0.0) + time.perf_counter() - started, 2)
    save_manifest(out, manifest)
    status = "stopped" if stopping else "failed" if failed else "finished"
    return CompareOutcome(spec, out, manifest, status, ran, skipped, failed,
                          round(time.perf_counter() - started, 2))


def _apply_board(ray, board, progress: ClusterProgress, manifest: dict) -> bool:
    if board is None:
        return False
    events = ray.get(board.drain.remote())
    for session, status, node, fraction in events:
        run = progress.runs.get(session)
        if run is None or run.status in ClusterProgress.ENDED:
            continue
        if status == "started":  # a worker started it (again, if Ray retried it)
            run.starts += 1
            entry = manifest["runs"][session]
            entry.update(status="running", node=node, attempts=run.starts)
            entry.setdefault("started", time.time())
        run.status, run.node, run.fraction = "running", node, fraction
    return bool(events)


def _settle(ray, ref, run, progress: ClusterProgress, manifest: dict, store, failed: dict, say,
            options: ClusterOptions) -> None:
    """Record one ended task: its session imported (own home), its status in the manifest."""
    entry = manifest["runs"][run.session]
    shown = progress.runs[run.session]
    try:
        res = ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        entry["status"] = "pending" if shown.status == "queued" else "interrupted"
        shown.status = "interrupted"
        return
    except ray.exceptions.RayError as exc:
        died = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.LocalRayletDiedError, ray.exceptions.OutOfMemoryError)
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        reason = (f"its Ray worker died and {options.max_retries} retries did not finish it "
                  f"({type(exc).__name__})" if isinstance(exc, died)
                  else f"Ray could not run it ({type(exc).__name__}: {first})")
        record_result(entry, "failed", reason, 0.0)
        failed[run.session] = reason
        shown.status, shown.message = "failed", reason
        say(f"{run.session}: failed: {reason}")
        return
    result, message = res["result"], res["message"]
    entry.update(node=res["node"], gpu_ids=res["gpu_ids"], attempts=res["attempt"])
    shown.node, shown.starts = res["node"], max(shown.starts, res["attempt"])
    if res.get("files") is not None:
        try:
            import_files(store, res["files"], origin=f"{RAY_ORIGIN}{res['node']}")
        except GptaError as exc:
            result, message = "failed", f"its session could not be imported: {exc}"
    record_result(entry, result, message, res["wall_s"])
    if result == "stopped" and not options.shared_home:
        entry["status"] = "pending"  # its session stayed in the worker's home: it runs afresh
        entry["message"] = "stopped; it runs again from the start"
    shown.status, shown.message = result, message
    if result == "failed":
        failed[run.session] = message
        say(f"{run.session}: failed: {message}")
    else:
        say(f"{run.session}: {result} on {res['node']} ({res['wall_s']:.0f} s)")
