"""`gpta compare --executor ray` (sessions/cluster.py) on a real local Ray instance of 2 CPUs:
the same results run for run as the local executor, a failing run recorded while the others
finish, a worker killed mid-run and retried, a stop then a rerun that completes the rest.
Tiny random BERT, generated CSV, the scripted TA (the same in the driver and the workers).

Ray is the `cluster` extra, which `make test` installs: these tests are never skipped. The
ones that start Ray are `slow` (a Ray instance and its workers take most of a minute to
start on a busy 2-core machine); they run in `make test` and CI.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import time
from pathlib import Path

import pytest
import ray

from engine.config import build_config
from engine.controls import Controls
from engine.errors import UsageError
from engine.experiments import CompareSpec
from engine.ta.scripted import ScriptedTA
from sessions.cluster import (ClusterOptions, ClusterProgress, RunProgress, init_ray, max_overlap,
                              run_compare_ray)
from sessions.compare import collect_results, read_manifest, run_compare
from sessions.store import SessionStore
from test_compare import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["cmp-baseline-s3-n48", "cmp-gpta-s3-n48", "cmp-baseline-s4-n48", "cmp-gpta-s4-n48"]


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module: 2 CPUs, workers that import this checkout and
    the test modules (the engine_kwargs factories below travel by reference)."""
    sigterm_before = signal.getsignal(signal.SIGTERM)
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    for attempt in range(3):  # Ray gives its raylet 30 s to start: a busy 2-core box may miss it
        try:
            init_ray(ray, num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield
    ray.shutdown()
    # Ray's own SIGTERM handler must not leak into later tests (nor into a gpta process)
    assert signal.getsignal(signal.SIGTERM) is sigterm_before


def tiny_spec(tiny_bert_dir, sentiment_csv, name="cmp") -> CompareSpec:
    cfg = build_config("default", overrides=tiny_overrides(
        tiny_bert_dir, sentiment_csv, data={"train_size": 48, "val_size": 24, "test_size": 24},
        student={"lr": 1e-2}))
    return CompareSpec.create(name, cfg, arms=["baseline", "gpta"], seeds=[3, 4])


def comparable(results) -> list[dict]:
    """RunResults without the wall time (which differs from run to run)."""
    return [{k: v for k, v in dataclasses.asdict(r).items() if k != "wall_s"} for r in results]


def test_max_overlap_counts_spans_open_at_once():
    assert max_overlap([[0, 1], [1, 2], [2, 3]]) == 1
    assert max_overlap([[0, 5], [1, 2], [1.5, 3], [4, 6]]) == 3


def untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "ts"} for r in records]


# ---- engine parts the workers build (module level: they pickle by reference) -------------------
class DyingTA(ScriptedTA):
    """Kills its worker process at its second request, once (a marker file remembers)."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def propose(self, messages, n, temperature, seed, *, should_stop=None):
        if self.calls == 1 and not os.path.exists(self.marker):
            Path(self.marker).write_text("died once\n")
            os._exit(1)
        return super().propose(messages, n, temperature, seed, should_stop=should_stop)


class StallingTA(ScriptedTA):
    """Waits at every request until the run is asked to stop (then stops, as a TA does)."""

    def propose(self, messages, n, temperature, seed, *, should_stop=None):
        assert should_stop is not None
        while not should_stop():
            time.sleep(0.05)
        return super().propose(messages, n, temperature, seed, should_stop=should_stop)


def stalling_parts(config) -> dict:
    return {"ta": StallingTA()} if config.mode == "gpta" else {}


def faulty_parts(marker: str, config) -> dict:
    """gpta seed 3: the TA becomes unavailable after one call (the run fails for its own
    reason); gpta seed 4: the worker dies once mid-run (Ray retries it)."""
    if config.mode == "gpta" and config.seed == 3:
        return {"ta": ScriptedTA(fail_after=1)}
    if config.mode == "gpta" and config.seed == 4:
        return {"ta": DyingTA(marker)}
    return {}


# ---- Ray against the local executor -------------------------------------------------------------
@pytest.mark.slow
def test_ray_runs_give_the_local_executors_results_run_for_run(
        ray_instance, tiny_bert_dir, sentiment_csv, tmp_path):
    import torch

    spec = tiny_spec(tiny_bert_dir, sentiment_csv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the Ray tasks get 1 CPU each, so 1 torch thread
    try:
        local = run_compare(spec, tmp_path / "local")
    finally:
        torch.set_num_threads(threads)
    assert local.status == "finished"

    seen: list[ClusterProgress] = []
    home = tmp_path / "ray"
    outcome = run_compare_ray(spec, home, None, ClusterOptions(cpus_per_run=1),
                              on_progress=lambda p: seen.append(dataclasses.replace(
                                  p, runs={k: dataclasses.replace(v) for k, v in p.runs.items()})))
    assert outcome.status == "finished" and outcome.failed == {}
    assert outcome.ran == NAMES and outcome.skipped == []

    local_results = collect_results(spec, tmp_path / "local", local.manifest)
    ray_results = collect_results(spec, home, outcome.manifest)
    assert [r.status for r in ray_results] == ["finished"] * 4
    assert comparable(ray_results) == comparable(local_results)
    # the runs differ from one another (seeds, arms), so the equality above has teeth
    assert len({tuple(r.loss_curve) for r in local_results}) == 4

    store = SessionStore(home)
    assert store.names() == sorted(NAMES)  # `gpta list` sees every run
    for name in NAMES:
        with store.open(name) as handle:
            rec = handle.record()
            assert rec["status"] == "finished" and rec["imported_from"].startswith("ray:")
            with SessionStore(tmp_path / "local").open(name) as twin:
                for read in ("loss_points", "scored_prefixes", "validations", "history"):
                    assert untimed(getattr(handle, read)()) == untimed(getattr(twin, read)()), read
    manifest = read_manifest(home / "compare" / "cmp")
    assert {manifest["runs"][n]["status"] for n in NAMES} == {"finished"}
    assert all(manifest["runs"][n]["executor"] == "ray" and manifest["runs"][n]["node"]
               for n in NAMES)
    # never more runs at once than the instance has CPUs (a task waiting on Ray in its main
    # thread would lend its CPU to the next run), each run's CPU time recorded
    spans = [manifest["runs"][n]["task"]["span"] for n in NAMES]
    assert max_overlap(spans) <= 2, spans
    assert all(manifest["runs"][n]["cpu_s"] > 0 and manifest["runs"][n]["task"]["setup_s"] > 0
               for n in NAMES)
    # progress: every run went queued -> running -> finished, on the one node
    final = seen[-1]
    assert final.counts() == {"finished": 4} and final.done() == 4
    (node, counts), = final.per_node().items()
    assert counts == {"finished": 4} and node == manifest["runs"][NAMES[0]]["node"]
    assert all(r.starts == 1 for r in final.runs.values())

    # a rerun runs nothing, on either executor
    again = run_compare_ray(spec, home, None, ClusterOptions())
    assert again.ran == [] and again.skipped == NAMES and again.status == "finished"


@pytest.mark.slow
def test_a_failed_run_a_killed_worker_a_stop_and_the_rerun(
        ray_instance, tiny_bert_dir, sentiment_csv, tmp_path, monkeypatch, capsys):
    spec = tiny_spec(tiny_bert_dir, sentiment_csv, name="flt")
    names = [n.replace("cmp-", "flt-") for n in NAMES]
    home = tmp_path / "home"
    options = ClusterOptions(cpus_per_run=1, shared_home=True, max_retries=1)
    marker = tmp_path / "died"
    seen: list[dict] = []

    first = run_compare_ray(spec, home, None, options,
                            engine_kwargs=functools.partial(faulty_parts, str(marker)),
                            on_progress=lambda p: seen.append({k: v.starts for k, v in p.runs.items()}))
    # the failing run is recorded with its one-line reason; the others finished
    assert first.status == "failed" and list(first.failed) == ["flt-gpta-s3-n48"]
    assert "simulated outage" in first.failed["flt-gpta-s3-n48"]
    manifest = first.manifest["runs"]
    assert manifest["flt-gpta-s3-n48"]["status"] == "failed"
    assert "simulated outage" in manifest["flt-gpta-s3-n48"]["message"]
    for name in (names[0], names[2], names[3]):
        assert manifest[name]["status"] == "finished"
    # the killed worker: Ray ran the task again, which resumed the session in the shared home
    assert marker.is_file()
    assert seen[-1]["flt-gpta-s4-n48"] == 2 and manifest["flt-gpta-s4-n48"]["attempts"] == 2
    with SessionStore(home).open("flt-gpta-s4-n48") as handle:
        rec = handle.record()
        assert rec["status"] == "finished" and "imported_from" not in rec
        assert len(rec["resumes"]) == 1  # resumed from its checkpoint, not started again

    # a stop (the CLI's first Ctrl-C) while the failed run runs again: the driver asks the
    # board, the task's link turns it into a stop at a step boundary (the TA waits for it,
    # so the run cannot end any other way); saved in the shared home, resumable
    controls = Controls()

    def stop_once_running(progress):
        if progress.runs["flt-gpta-s3-n48"].status == "running":
            controls.stop()

    second = run_compare_ray(spec, home, None, options, controls=controls,
                             engine_kwargs=stalling_parts, on_progress=stop_once_running)
    assert second.status == "stopped" and second.ran == ["flt-gpta-s3-n48"]
    assert sorted(second.skipped) == sorted(n for n in names if n != "flt-gpta-s3-n48")
    assert second.manifest["runs"]["flt-gpta-s3-n48"]["status"] == "paused"
    with SessionStore(home).open("flt-gpta-s3-n48") as handle:
        assert handle.status == "paused"  # shown as "stopped": saved, nobody runs it

    # the rerun, through the CLI: it finishes the rest and skips what finished
    from gpta_tui import cli

    code = cli.main(["--home", str(home), "compare", "--name", "flt", "--resume",
                     "--executor", "ray", "--shared-home"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "1 run(s) this time, 3 finished earlier" in err
    manifest = read_manifest(home / "compare" / "flt")
    assert {manifest["runs"][n]["status"] for n in names} == {"finished"}
    results = collect_results(spec, home, manifest)
    assert [r.status for r in results] == ["finished"] * 4


# ---- without Ray running: options, refusals, the import of what a worker sends ---------------------
def test_options_are_checked():
    assert ClusterOptions(gpus_per_run=0.5, cpus_per_run=2).validate()
    for bad, message in ((dict(cpus_per_run=0), "cpus-per-run"), (dict(cpus_per_run=1.5), "cpus-per-run"),
                         (dict(gpus_per_run=-1), "gpus-per-run"), (dict(gpus_per_run=1.5), "gpus-per-run"),
                         (dict(gpus_per_run=float("nan")), "gpus-per-run"),
                         (dict(max_retries=-1), "max-retries"), (dict(max_retries=1.5), "max-retries"),
                         (dict(max_retries=True), "max-retries")):
        with pytest.raises(UsageError, match=message):
            ClusterOptions(**bad).validate()


def test_a_run_no_node_can_hold_is_refused_at_once():
    from sessions.cluster import check_resources

    class FakeRay:
        @staticmethod
        def nodes():
            return [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
                    {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]

    check_resources(FakeRay, ClusterOptions(cpus_per_run=8, gpus_per_run=1))
    with pytest.raises(UsageError, match=r"no node .* has that many CPUs \(the largest has 8\)"):
        check_resources(FakeRay, ClusterOptions(cpus_per_run=9))
    with pytest.raises(UsageError, match=r"no node .* has that many GPUs \(the largest has 1\)"):
        check_resources(FakeRay, ClusterOptions(gpus_per_run=2))


class FakeBoard:
    """ProgressBoard's calls as a task makes them (`.remote(...)`), answered at once."""

    def __init__(self):
        self.log, self.stop, self.starts = [], False, 0
        board = self

        class Call:
            def __init__(self, name):
                self.name = name

            def remote(self, *args):
                board.log.append((self.name, args))
                if self.name == "start":
                    board.starts += 1
                    return board.starts, board.stop
                return board.stop

        self.start, self.report = Call("start"), Call("report")


def test_a_task_reports_progress_and_obeys_a_stop_from_its_board_link():
    """The run's thread only notes its share of training (no Ray call there: Ray would lend
    the task's CPU to another run while it waits); the link sends what changed and turns the
    board's stop request into a stop at the next step boundary."""
    from engine import events as ev
    from sessions.cluster import BoardLink, TaskListener

    board, controls = FakeBoard(), Controls()
    link = BoardLink(board, "s", "node-1", controls, get=lambda ref, timeout=None: ref)
    listener = TaskListener(link, 2)

    def step(epoch, i):
        return ev.TrainStep(epoch=epoch, step=i, epoch_step=i, epoch_steps=4, loss=1.0, lr=0.1)

    assert link.register() == 1
    link.tick()                  # nothing trained yet: only the question
    listener(step(1, 2))
    listener(step(1, 3))         # the listener itself never calls the board
    assert board.log == [("start", ("s", "node-1")), ("report", ("s", "node-1", None))]
    link.tick()                  # the latest share: 3/4 of the first of 2 epochs
    link.tick()                  # unchanged: not sent again
    board.stop = True
    listener(step(2, 2))
    assert not controls.stop_requested
    link.tick()
    assert board.log[2:] == [("report", ("s", "node-1", 0.375)), ("report", ("s", "node-1", None)),
                             ("report", ("s", "node-1", 0.75))]
    assert controls.stop_requested


def test_the_board_link_thread_registers_the_start_before_the_run_begins():
    """open() returns once the start is on the board: a worker that dies at the run's first
    step still counts as an attempt (the retry is attempt 2)."""
    from sessions.cluster import BoardLink

    board = FakeBoard()
    board.starts = 1  # a retry: this is the second start
    link = BoardLink(board, "s", "n", Controls(), get=lambda ref, timeout=None: ref).open()
    assert board.log == [("start", ("s", "n"))] and link.attempt == 2
    assert link.close() == 2
    board.stop, controls = True, Controls()  # a stop requested before the run started
    link = BoardLink(board, "s", "n", controls, get=lambda ref, timeout=None: ref)
    assert link.register() == 3 and controls.stop_requested

    def unreachable(ref, timeout=None):
        raise ConnectionError("board gone")

    with pytest.raises(ConnectionError, match="board gone"):
        BoardLink(board, "s", "n", Controls(), get=unreachable).open()  # the task fails


def test_a_task_that_fails_before_its_run_ends_its_board_thread_and_its_temporary_home(
        monkeypatch, tiny_bert_dir, sentiment_csv):
    """The link's thread starts before the task's home is opened: a home that cannot be
    opened (or a cancel arriving then) used to leave the thread ticking in the reused worker
    for good, and the temporary home on its disk."""
    import threading

    import sessions.store
    from sessions import cluster

    homes = []

    class BrokenStore:
        def __init__(self, home):
            homes.append(home)
            raise OSError("the home cannot be opened")

    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    monkeypatch.setattr(ray, "get", lambda ref, timeout=None: ref)
    monkeypatch.setattr(cluster, "node_label", lambda: "n")
    monkeypatch.setattr(sessions.store, "SessionStore", BrokenStore)
    config = tiny_spec(tiny_bert_dir, sentiment_csv).base
    with pytest.raises(OSError, match="cannot be opened"):
        cluster.run_task(config, "leaky", None, 1, 0.0, FakeBoard())
    threads = [t for t in threading.enumerate() if t.name == "gpta-board-leaky"]
    for thread in threads:
        thread.join(timeout=30)  # it ends at its next wait: at once once told to
    assert not any(t.is_alive() for t in threads)
    assert len(homes) == 1 and not Path(homes[0]).exists()


def test_a_board_that_died_is_said_once_and_the_comparison_goes_on(monkeypatch):
    """The driver drains the board once a second: a dead board actor (its process killed)
    raised RayActorError out of the loop, which cancelled every running task and ended the
    whole comparison with a traceback."""
    from sessions.cluster import _apply_board

    class DeadBoard:
        class drain:
            @staticmethod
            def remote():
                return "ref"

    calls, said = [], []

    def dead_get(ref, timeout=None):
        calls.append(ref)
        raise ray.exceptions.ActorDiedError()

    monkeypatch.setattr(ray, "get", dead_get)
    progress = ClusterProgress(runs={"s": RunProgress("s", status="running")})
    manifest = {"runs": {"s": {"status": "running"}}}
    assert _apply_board(ray, DeadBoard, progress, manifest, said.append) is False
    assert progress.board_lost and len(said) == 1 and "progress board is gone" in said[0]
    assert _apply_board(ray, DeadBoard, progress, manifest, said.append) is False
    assert len(calls) == 1 and len(said) == 1   # not asked again, not said again
    assert progress.runs["s"].status == "running" and manifest["runs"]["s"]["status"] == "running"


def test_the_longest_runs_are_submitted_first(tiny_bert_dir, sentiment_csv):
    """Larger train sizes first, then the TA arms; the plan's order among equals."""
    from sessions.cluster import longest_first

    cfg = build_config("default", overrides=tiny_overrides(tiny_bert_dir, sentiment_csv))
    spec = CompareSpec.create("lpt", cfg, arms=["baseline", "gpta"], seeds=[1, 2],
                              train_sizes=[48, 96])
    todo = [(run, spec.run_config(run), "new") for run in spec.runs()]
    assert [run.session for run, _, _ in longest_first(todo)] == [
        "lpt-gpta-s1-n96", "lpt-gpta-s2-n96", "lpt-baseline-s1-n96", "lpt-baseline-s2-n96",
        "lpt-gpta-s1-n48", "lpt-gpta-s2-n48", "lpt-baseline-s1-n48", "lpt-baseline-s2-n48"]


def test_task_options_carry_resources_and_retries():
    from sessions.cluster import task_options

    opts = task_options(ClusterOptions(cpus_per_run=2, gpus_per_run=0.5, max_retries=0), "a-s1")
    assert opts == dict(name="gpta:a-s1", num_cpus=2, num_gpus=0.5, max_retries=0,
                        retry_exceptions=False)
    assert task_options(ClusterOptions(), "x")["max_retries"] == 3


def test_progress_counts_runs_per_node():
    progress = ClusterProgress(runs={
        "a": RunProgress("a", "running", "n1", 0.5), "b": RunProgress("b", "finished", "n1"),
        "c": RunProgress("c", "failed", "n2"), "d": RunProgress("d")})
    assert progress.counts() == {"running": 1, "finished": 1, "failed": 1, "queued": 1}
    assert progress.per_node() == {"n1": {"running": 1, "finished": 1}, "n2": {"failed": 1}}
    assert progress.done() == 2.5


def test_unfinished_sessions_are_not_stranded_without_a_shared_home(
        tiny_bert_dir, sentiment_csv, tmp_path):
    """A stopped local run holds checkpoints only this machine has: without --shared-home the
    Ray executor refuses rather than rerun it from scratch behind the user's back."""
    spec = tiny_spec(tiny_bert_dir, sentiment_csv)
    home = tmp_path / "home"
    config = spec.run_config(spec.runs()[0])
    SessionStore(home).create(config).close()  # an unfinished session of the plan
    with pytest.raises(UsageError, match="cannot reach their checkpoints") as info:
        run_compare_ray(spec, home, None, ClusterOptions())
    assert "--shared-home" in info.value.fix


def test_what_a_worker_sends_is_imported_through_the_validated_import(tmp_path):
    from sessions.export import import_files

    store = SessionStore(tmp_path / "home")
    for files, message in (({}, "no session.json"), ({"session.json": "{}", "../x": "y"}, "unexpected file"),
                           ({"session.json": "{}", "windows/epoch-1.txt": ""}, "unexpected file"),
                           ({"session.json": "[1]"}, "unreadable")):
        with pytest.raises(UsageError, match=message):
            import_files(store, files, origin="ray:node")
    assert store.names() == []


def test_ray_flags_need_the_ray_executor(capsys):
    from gpta_tui import cli

    assert cli.main(["compare", "--name", "x", "--resume", "--gpus-per-run", "1"]) == 2
    assert "--gpus-per-run needs --executor ray" in capsys.readouterr().err
    assert cli.main(["compare", "--executor", "ray", "--device", "cpu"]) == 2
    assert "--device cannot be combined with --executor ray" in capsys.readouterr().err
    assert cli.main(["compare", "--name", "x", "--resume", "--max-retries", "1"]) == 2
    assert "--max-retries needs --executor ray" in capsys.readouterr().err


def test_a_negative_max_retries_is_refused_before_anything_is_written(tmp_path, capsys):
    from gpta_tui import cli

    home = tmp_path / "home"
    assert cli.main(["--home", str(home), "compare", "--preset", "smoke", "--name", "r",
                     "--executor", "ray", "--max-retries", "-1"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "gpta: error: invalid --max-retries -1. Fix: give a whole number of retries, 0 or more "
        "(default 3)"]
    assert not (home / "compare" / "r").exists()


def test_a_local_ray_instance_runs_its_workers_at_niceness_0(monkeypatch):
    """Ray starts its workers at niceness 15; the runs of a local instance get the priority of
    the local executor's (the raylet reads RAY_worker_niceness when it starts); a user's own
    setting is kept, and the environment is left as it was."""
    from sessions.cluster import start_local_ray

    seen = []

    class FakeRay:
        def init(self, **kwargs):
            seen.append(os.environ.get("RAY_worker_niceness"))

    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    start_local_ray(FakeRay(), num_cpus=1)
    assert seen == ["0"] and "RAY_worker_niceness" not in os.environ
    monkeypatch.setenv("RAY_worker_niceness", "5")
    start_local_ray(FakeRay(), num_cpus=1)
    assert seen == ["0", "5"] and os.environ["RAY_worker_niceness"] == "5"


def test_ray_init_keeps_our_signal_handlers():
    """Ray's driver installs a SIGTERM handler that exits; gpta keeps its own (stop at a step
    boundary) and none of Ray's outlives the comparison."""
    class FakeRay:
        def init(self, **kwargs):
            signal.signal(signal.SIGTERM, lambda *_: None)
            signal.signal(signal.SIGINT, lambda *_: None)

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        init_ray(FakeRay(), num_cpus=1)
        assert {sig: signal.getsignal(sig) for sig in before} == before
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
