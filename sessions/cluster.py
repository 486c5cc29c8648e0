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

Progress. Tasks report to a small actor (`ProgressBoard`): started on which node, and once a
second the share of training done, the reply saying whether to stop. A task talks to it from
a thread of its own (`BoardLink`): while a task's main thread waits in `ray.get`, Ray lends
the task's CPUs to the next queued task, which would put more runs on a node than it has
CPUs. The driver turns the board's events into a `ClusterProgress` (runs queued / running /
finished / failed, per node) and hands it to `on_progress` about once a second.

Workers are reused: a worker process runs one task after another (Ray's default for tasks
that ask for no GPU at submission), so torch and transformers are imported once per worker,
not once per run.

Ray is optional (`pip install 'gpta-tui[cluster]'`); nothing here imports it before a
comparison asks for it.
"""

from __future__ import annotations

import collections
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.errors import GptaError, UsageError
from sessions.compare import (RAY_ORIGIN, CompareOutcome, finish_run, open_run, pending_runs,
                              prepare, record_result, save_manifest)
from sessions.export import import_files, session_files

#: how often a task reports its progress and asks whether to stop (seconds)
REPORT_EVERY_S = 1.0
#: how often the driver looks at the board when no task ends (seconds)
POLL_S = 1.0
#: default retries of a task whose worker process or node died (Ray's own default)
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
        if (not isinstance(self.max_retries, int) or isinstance(self.max_retries, bool)
                or self.max_retries < 0):
            raise UsageError(f"invalid --max-retries {self.max_retries!r}",
                             "give a whole number of retries, 0 or more (default 3)")
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
    board_lost: str = ""       # why the progress board stopped answering ("" while it answers)

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

    def start(self, session: str, node: str) -> tuple[int, bool]:
        """A worker starts `session`: which attempt this is (2 and up: Ray retried it), and
        whether it should stop."""
        self._starts[session] = self._starts.get(session, 0) + 1
        self._events.append((session, "started", node, 0.0))
        return self._starts[session], self._stop

    def report(self, session: str, node: str, fraction: float | None) -> bool:
        """A running task's share of training (None: nothing new); True: it should stop."""
        if fraction is not None:
            self._events.append((session, "running", node, float(fraction)))
        return self._stop

    def drain(self) -> list[tuple]:
        events, self._events = self._events, []
        return events

    def request_stop(self) -> None:
        self._stop = True


class BoardLink:
    """A task's line to the board, on a thread of its own: the run's thread never waits on Ray.

    Ray lends the CPUs of a task whose main thread blocks in `ray.get` to the next queued task
    (a task waiting on another must not deadlock the node); here that let 3 and 4 runs train
    at once on 2 CPUs, each new one in a newly started worker. Calls from another thread of
    the task keep its CPUs. `register()` says the run started (and learns which attempt this
    is, and whether a stop came first), then `tick()` once a second sends the share of
    training the listener noted and turns the board's stop request into `controls.stop()` (a
    stop at the next step boundary). `get` is ray.get (tests pass a stand-in and call
    register/tick themselves)."""

    def __init__(self, board, session: str, node: str, controls, get: Callable | None = None):
        self.board, self.session, self.node, self.controls = board, session, node, controls
        self.get = get
        self.fraction: float | None = None   # set by the run's thread (TaskListener)
        self._sent: float | None = None
        self.attempt = 0
        self._error: BaseException | None = None
        self._closed = threading.Event()
        self._registered = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self) -> int:
        self.attempt, stop = self._get(self.board.start.remote(self.session, self.node))
        self._obey(stop)
        return self.attempt

    def tick(self) -> None:
        fraction = self.fraction
        new = fraction if fraction != self._sent else None
        self._obey(self._get(self.board.report.remote(self.session, self.node, new), timeout=30))
        self._sent = fraction

    def _obey(self, stop: bool) -> None:
        if stop and not self.controls.stop_requested:
            self.controls.stop()

    def open(self) -> "BoardLink":
        """Starts the thread and waits (on a Python event, not on Ray) until the start is on
        the board: a worker that dies later still counts as an attempt."""
        self._thread = threading.Thread(target=self._loop, name=f"gpta-board-{self.session}",
                                        daemon=True)
        self._thread.start()
        self._registered.wait()
        if self._error is not None:
            self.close()
        return self

    def end(self) -> None:
        """Asks the thread to end, without waiting."""
        self._closed.set()

    def close(self) -> int:
        """Ends the thread; returns the attempt number."""
        self.end()
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self.attempt

    def _loop(self) -> None:
        try:
            self.register()
        except BaseException as exc:  # noqa: BLE001 - raised by open(), in the run's thread
            self._error = exc
            return
        finally:
            self._registered.set()
        while not self._closed.wait(REPORT_EVERY_S):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - progress only: a slow board skips a beat
                pass

    def _get(self, ref, timeout: float | None = None):
        if self.get is None:
            import ray

            self.get = ray.get
        return self.get(ref, timeout=timeout)


class TaskListener:
    """In a task: notes the run's share of training for the BoardLink (no Ray call here)."""

    def __init__(self, link: BoardLink, epochs: int):
        self.link, self.epochs = link, max(1, int(epochs))

    def __call__(self, event) -> None:
        steps = getattr(event, "epoch_steps", 0)
        if steps:
            self.link.fraction = min(1.0, (event.epoch - 1 + event.epoch_step / steps) / self.epochs)


def max_overlap(spans: list[list[float]]) -> int:
    """How many runs trained at once: the most [start, end] spans (task `span`s) open at one instant (an end before a start at the same time)."""
    edges = sorted([(end, -1) for _, end in spans] + [(start, 1) for start, _ in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


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
    its own whose session is returned as `session_files`. Returns a plain dict, with the
    task's wall seconds, `setup_s` (wall seconds to the engine built: a new worker pays the
    imports of torch and transformers, a reused one does not) and `cpu_s` (the CPU seconds of
    the run once built, as the local executor records them)."""
    started, started_at = time.perf_counter(), time.time()
    import ray
    import torch

    from engine.config import RunConfig
    from engine.controls import Controls
    from sessions.store import SessionStore

    torch.set_num_threads(max(1, int(cpus)))  # one pool per run, sized to its CPUs
    node = node_label()
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    controls = Controls()
    cfg = RunConfig.from_dict(config, "comparison run")
    # Ray made the task's GPUs (if any) the only visible ones: "cuda" is the first of them
    cfg.device = "cuda" if gpus > 0 else "cpu"
    link = BoardLink(board, session, node, controls)
    out: dict[str, Any] = {"session": session, "node": node, "gpu_ids": gpu_ids, "attempt": 0,
                           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                           "files": None, "setup_s": 0.0, "cpu_s": 0.0, "pid": os.getpid()}

    def ended(**fields) -> dict:
        out["attempt"] = link.close()
        return {**out, **fields, "wall_s": round(time.perf_counter() - started, 2),
                "span": [round(started_at, 3), round(time.time(), 3)]}

    own_home = None
    # Everything after the link's thread starts is inside the try: a cancel (KeyboardInterrupt)
    # during open() or a home that cannot be opened must not leave the thread ticking in the
    # reused worker for good, nor the temporary home on its disk.
    try:
        link.open()  # raises if the board is gone
        own_home = tempfile.mkdtemp(prefix="gpta-ray-") if home is None else None
        store = SessionStore(own_home or home)
        resume = store.exists(session)
        if resume:  # a shared home: a retried task, or a run stopped earlier
            with store.open(session) as reader:
                if reader.status == "finished":  # its worker died after the end
                    return {**ended(result="finished", message=""), "wall_s": 0.0}
        try:
            kwargs = engine_kwargs(cfg) if engine_kwargs else {}
            listener = TaskListener(link, cfg.loop.epochs)
            handle, engine = open_run(session, cfg, store.home, resume=resume, listeners=[listener],
                                      controls=controls, engine_kwargs=kwargs)
        except GptaError as exc:
            result, message = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - the run's own failure: recorded, not retried
            result, message = "failed", f"{type(exc).__name__}: {exc}"
        else:
            out["setup_s"] = round(time.perf_counter() - started, 2)
            cpu0 = time.process_time()
            result, message = finish_run(handle, engine)
            out["cpu_s"] = round(time.process_time() - cpu0, 2)
        if own_home is not None and result in ("finished", "failed") and store.exists(session):
            with store.open(session) as reader:
                out["files"] = session_files(reader)
        return ended(result=result, message=message)
    finally:
        link.end()  # an interrupted task: its thread ends too
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


#: niceness of the workers of a local Ray instance gpta starts (Ray's own default is 15)
LOCAL_WORKER_NICENESS = "0"


def start_local_ray(ray, **kwargs) -> None:
    """`init_ray` for a local instance whose workers run at niceness 0, as the local executor's
    runs do: Ray starts its workers at 15, which hands the runs' cores to any other work on
    the machine. A RAY_worker_niceness of the user's own is kept; on a cluster started with
    `ray start` its own setting holds."""
    before = os.environ.get("RAY_worker_niceness")
    os.environ.setdefault("RAY_worker_niceness", LOCAL_WORKER_NICENESS)  # the raylet reads it
    try:
        init_ray(ray, **kwargs)
    finally:
        if before is None:
            os.environ.pop("RAY_worker_niceness", None)


def connect(options: ClusterOptions) -> bool:
    """Join the Ray cluster at options.address, or start a local instance; True if this call
    started it (the caller shuts it down). A Ray already initialised in this process is used."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    import logging

    try:
        start = start_local_ray if not options.address else init_ray
        start(ray, address=options.address or None, include_dashboard=False,
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


def task_options(options: ClusterOptions, session: str) -> dict:
    """Ray options of one run's task: its resources, and retries only when its worker died
    (a run's own exception is a result, never retried)."""
    return dict(name=f"gpta:{session}", num_cpus=options.cpus_per_run,
                num_gpus=options.gpus_per_run, max_retries=options.max_retries,
                retry_exceptions=False)


def longest_first(todo: list) -> list:
    """The order the runs are submitted in: the likely longest first (more training examples
    x epochs, then the arms that consult a TA), the plan's order among equals. Ray starts
    queued tasks in submission order, so the runs that start last are short ones and the
    workers end close together (longest-processing-time-first). Every run is seeded on its
    own: the order changes no result."""
    from engine.experiments import NO_TA_ARMS

    return sorted(todo, key=lambda item: (-item[0].train_size * item[1].loop.epochs,
                                          item[0].arm in NO_TA_ARMS))


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
        for run, _config, _state in todo:
            progress.runs[run.session] = RunProgress(run.session)
            manifest["runs"][run.session].update(status="queued", executor="ray")
            ran.append(run.session)
        for run, config, _state in longest_first(todo):
            ref = task.options(**task_options(options, run.session)).remote(
                config.to_dict(), run.session, home_for_tasks, options.cpus_per_run,
                options.gpus_per_run, board, engine_kwargs)
            pending[ref] = run
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
                    # without a board a running task cannot hear the stop: it is cancelled
                    if progress.runs[run.session].status == "queued" or progress.board_lost:
                        ray.cancel(ref)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            changed = _apply_board(ray, board, progress, manifest, say)
            for ref in ready:
                run = pending.pop(ref)
                _settle(ray, ref, run, progress, manifest, store, failed, say, options)
                changed = True
            if changed:
                save_manifest(out, manifest)
            if on_progress is not None and (changed or time.monotonic() - last_shown > POLL_S):
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


def _apply_board(ray, board, progress: ClusterProgress, manifest: dict,
                 say: Callable[[str], None] = lambda s: None) -> bool:
    """The board's news into `progress` and the manifest; True if there was any. A board that
    died (its actor's process was killed) is said once and ignored from then on: the runs'
    results come back with their tasks, so the comparison goes on without progress."""
    if board is None or progress.board_lost:
        return False
    try:
        events = ray.get(board.drain.remote())
    except ray.exceptions.RayActorError as exc:
        progress.board_lost = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        say(f"the progress board is gone ({progress.board_lost}): runs that are running go "
            "on without progress; runs that start now fail (rerun them with the same command)")
        return False
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
    entry.update(node=res["node"], gpu_ids=res["gpu_ids"], attempts=res["attempt"],
                 # its last attempt in the worker: process, clock times, imports + engine build
                 task={"pid": res["pid"], "span": res["span"], "setup_s": res["setup_s"]})
    shown.node, shown.starts = res["node"], max(shown.starts, res["attempt"])
    if res.get("files") is not None:
        try:
            import_files(store, res["files"], origin=f"{RAY_ORIGIN}{res['node']}")
        except GptaError as exc:
            result, message = "failed", f"its session could not be imported: {exc}"
    record_result(entry, result, message, res["wall_s"], res.get("cpu_s"))
    if result == "stopped" and not options.shared_home:
        entry["status"] = "pending"  # its session stayed in the worker's home: it runs afresh
        entry["message"] = "stopped; it runs again from the start"
    shown.status, shown.message = result, message
    if result == "failed":
        failed[run.session] = message
        say(f"{run.session}: failed: {message}")
    else:
        say(f"{run.session}: {result} on {res['node']} ({res['wall_s']:.0f} s)")
