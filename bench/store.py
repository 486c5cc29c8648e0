"""Session storage at the paper's scale: is the cost of an event flat over a long run?

    python -m bench.store                       # 31,250 steps, this store and the schema-2 store
    python -m bench.store --steps 5000 --no-baseline --no-write

A paper-scale run (100k training rows, batch 16, 5 epochs) emits 31,250 `TrainStep` events.
The script feeds a synthetic run of that length to a session's listener, as the engine
thread does: 5 epochs of training steps with a checkpoint every `--checkpoint-every` steps
(the engine's default, 50), and after each epoch what the GPTA loop records besides loss
points: a validation, `--k` scored prefixes from `--k / --l` TA calls (each with a history
prompt of the size the TA sees), the sorted history, the dialogue-gradient windows, a
fine-tune job and a TA model change. Each listener call is timed on that thread.

Reported for each store:
- the cost per training step over the first and the last `--window` steps (the listener
  calls of those steps, the flushes they trigger included; and with the checkpoints that fall
  among them), and their ratio (target: <= 1.5);
- the longest a single event blocked the engine thread, for training steps (target:
  <= 10 ms), checkpoint records (durable by contract: fsync-bound, see the notes) and the rest;
- bytes handed to write(2) per step (/proc/self/io `wchar`), and the session's size on disk;
- reading the finished session: open, `events()` replay, the TUI's `load_past` (the
  dashboard reducer over every event) and one loss-chart figure of all points,
  `gpta show` / `gpta export` as commands (a fresh process each: imports included) and the
  real TUI opening it (a Textual pilot), the last two also with the code of `--old-rev`.

The baseline is the store before issue 20 (loss points in the TinyDB database, schema 2),
loaded from git (`--baseline-rev`) and run in the same process, one after the other.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (REPO_ROOT, Report, base_parser, machine_info, progress, publish,
                          run_main)

BASELINE_REV = "2022aa7"  # the last commit with loss points in the database (schema 2)
OLD_READERS_REV = "4aa4e27"  # main before round 3 of issue 20 (the readers' old path)
TUI_OPEN = "TUI: open it until chart and history show its past (pilot), wall"
NEWER_TA_KEYS = ("system_template", "user_template", "history_item_template")  # issue 14


def _wchar() -> int | None:
    """Bytes this process has handed to write(2) so far (Linux), else None."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def baseline_store(rev: str):
    """sessions/store.py as of `rev`, imported as its own module (None without git)."""
    try:
        source = subprocess.run(["git", "show", f"{rev}:sessions/store.py"], cwd=REPO_ROOT,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader("sessions._store_baseline", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    exec(compile(source, f"{rev}:sessions/store.py", "exec"), module.__dict__)
    return module


def synthetic_run(config, steps: int, epochs: int, every: int, k: int, l: int):
    """The events of a run of `steps` training steps, in the engine's order."""
    from engine import events as ev
    from engine.state import RunState

    from bench.common import synthetic_prefixes

    prefixes = synthetic_prefixes(k * epochs + 1, 7)
    st = RunState()
    per_epoch = steps // epochs

    def checkpoint():
        return ev.CheckpointSaved(epoch=st.epoch, phase=st.phase, step=st.step,
                                  state=st.to_dict(), path=f"checkpoints/step-{st.step}")

    yield ev.RunStarted(name=config.name, mode=config.mode, config=config.to_dict(),
                        label_names=["negative", "neutral", "positive"])
    yield ev.StatusChanged(status="running")
    st.description, st.training_prefix, st.phase = "Tweets labelled by sentiment.", "", "training"
    yield checkpoint()
    used = 0
    for epoch in range(1, epochs + 1):
        st.epoch, st.epoch_step, st.phase = epoch, 0, "training"
        yield ev.PhaseChanged(epoch=epoch, phase="training", total=per_epoch)
        for i in range(1, per_epoch + 1):
            st.step += 1
            st.epoch_step = i
            yield ev.TrainStep(epoch=epoch, step=st.step, epoch_step=i, epoch_steps=per_epoch,
                               loss=1.0 / (1 + 0.001 * st.step) + 0.05 * ((st.step * 7919) % 13) / 13,
                               lr=2e-5)
            if i % every == 0 and i < per_epoch:
                yield checkpoint()
        st.phase = "validating"
        yield checkpoint()
        score = 0.6 + 0.02 * epoch
        yield ev.ValidationResult(epoch=epoch, prefix=st.training_prefix,
                                  metrics={"accuracy": score, "macro_f1": score - 0.05},
                                  best_epoch=epoch, improved=True)
        st.history, st.phase = [[st.training_prefix, score]], "collecting"
        yield checkpoint()
        yield ev.PhaseChanged(epoch=epoch, phase="collecting", total=k)
        while len(st.history) < k:
            st.request_id += 1
            shown = "\n".join(f"text: {p}\nscore: {s:.3f}" for p, s in sorted(st.history, key=lambda x: x[1]))
            yield ev.TARequest(request_id=st.request_id, epoch=epoch, backend="local",
                               model="gemma-3-270m", params={"n": l, "temperature": 1.0},
                               messages=[{"role": "system", "content": "You write prefixes."},
                                         {"role": "user", "content": shown}],
                               description_version=1)
            new = prefixes[used:used + l]
            used += l
            yield ev.TAResponse(request_id=st.request_id, epoch=epoch, texts=new, prefixes=new,
                                rejected=[], latency_s=2.0,
                                usage={"prompt_tokens": len(shown) // 4, "completion_tokens": 60,
                                       "total_tokens": len(shown) // 4 + 60})
            for j, p in enumerate(new):
                s = 0.5 + ((st.request_id * 7 + j * 3) % 20) / 50
                st.history.append([p, s])
                yield ev.PrefixScored(epoch=epoch, prefix=p, score=s, metrics={"accuracy": s},
                                      reused=False, request_id=st.request_id)
            yield ev.HistoryUpdated(epoch=epoch, history=sorted(st.history, key=lambda x: x[1]),
                                    training_prefix=st.training_prefix)
            yield checkpoint()
        pairs = sorted(st.history, key=lambda x: x[1])
        yield ev.WindowsBuilt(epoch=epoch, path=f"windows/epoch-{epoch}.jsonl", windows=[
            {"messages": [{"role": "user", "content": str(pairs[i:i + 5])},
                          {"role": "assistant", "content": pairs[i + 5][0]}]}
            for i in range(len(pairs) - 5)])
        for status in ("submitted", "running", "succeeded"):
            yield ev.FinetuneUpdate(epoch=epoch, backend="local", job_id=f"job-{epoch}",
                                    status=status, model=f"ta-adapters/epoch-{epoch}"
                                    if status == "succeeded" else "")
        yield ev.TAModelChanged(epoch=epoch, model=f"ta-adapters/epoch-{epoch}", reason="tuned")
        st.training_prefix = max(pairs, key=lambda x: x[1])[0]
        st.best = {"epoch": epoch, "score": score, "prefix": st.training_prefix,
                   "metrics": {"accuracy": score}, "path": f"checkpoints/best-e{epoch}"}
        st.phase = "next"
        yield checkpoint()
    st.phase = "done"
    yield checkpoint()
    yield ev.StatusChanged(status="finished")
    yield ev.RunFinished(status="finished", best_epoch=epochs, best_prefix=st.training_prefix,
                         val_metrics={"accuracy": 0.7}, test_metrics={"accuracy": 0.69},
                         test_metrics_no_prefix={"accuracy": 0.66}, summary={"steps": st.step})


@dataclass
class Fed:
    """One store's run: listener seconds per event, by kind."""

    step_wall: list[float] = field(default_factory=list)     # per training step, in order
    window_wall: dict[str, float] = field(default_factory=dict)   # all events in a window
    window_cpu: dict[str, float] = field(default_factory=dict)
    checkpoint_max: float = 0.0
    checkpoint_total: float = 0.0
    checkpoints: int = 0
    other_max: float = 0.0
    total_wall: float = 0.0
    wchar: int | None = None
    disk_bytes: int = 0


def feed(store_module, home: Path, name: str, args) -> Fed:
    from engine.config import build_config

    config = build_config("default", overrides={
        "name": name, "data": {"dataset": "twitter-sentiment"},
        "loop": {"epochs": args.epochs, "k": args.k, "l": args.l, "window": 5}})
    events = list(synthetic_run(config, args.steps, args.epochs, args.checkpoint_every,
                                args.k, args.l))
    handle = store_module.SessionStore(home).create(config)
    out = Fed()
    windows = {"first": range(1, args.window + 1),
               "last": range(args.steps - args.window + 1, args.steps + 1)}
    open_window: str | None = None
    w_start = c_start = 0.0
    written = _wchar()
    started = time.perf_counter()
    for event in events:
        step = getattr(event, "step", None) if event.kind == "train_step" else None
        if step is not None and open_window is None:
            for label, steps in windows.items():
                if step == steps[0]:
                    open_window, w_start, c_start = label, time.perf_counter(), time.process_time()
        t0 = time.perf_counter()
        handle.listener(event)
        took = time.perf_counter() - t0
        if step is not None:
            out.step_wall.append(took)
            if open_window and step == windows[open_window][-1]:
                out.window_wall[open_window] = time.perf_counter() - w_start
                out.window_cpu[open_window] = time.process_time() - c_start
                open_window = None
        elif event.kind == "checkpoint":
            out.checkpoint_max = max(out.checkpoint_max, took)
            out.checkpoint_total += took
            out.checkpoints += 1
        else:
            out.other_max = max(out.other_max, took)
    handle.close()
    out.total_wall = time.perf_counter() - started
    after = _wchar()
    out.wchar = after - written if written is not None and after is not None else None
    folder = home / "sessions" / name
    out.disk_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return out


def window_ms(fed: Fed, label: str, steps: range) -> float:
    return 1000 * sum(fed.step_wall[s - 1] for s in steps) / len(steps)


def time_call(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def readers(home: Path, name: str) -> dict[str, float]:
    """Seconds to read the finished session the ways the front ends do (warm process)."""
    from textual_plotext.plot import Plot

    from gpta_tui.run_control import load_past
    from gpta_tui.widgets.loss_chart import chart_series, draw
    from sessions.export import export_session
    from sessions.store import SessionStore

    out: dict[str, float] = {}
    out["open (reader)"], handle = time_call(lambda: SessionStore(home).open(name))
    out["events() replay"], events = time_call(handle.events)
    handle.close()
    out["TUI load_past (reducer)"], state = time_call(lambda: load_past(home, name))
    plot = Plot()
    out["loss chart: series + one figure (150x30)"], _ = time_call(
        lambda: draw(plot, *chart_series(state), state.metric, 150, 30, "pro", None))
    tmp = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        out["export_session (in process)"], _ = time_call(
            lambda: export_session(SessionStore(home).open(name), tmp / "out"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def tui_open(home: Path, name: str, size: tuple[int, int] = (160, 48)) -> dict[str, float]:
    """Seconds from asking the real app (a Textual pilot) to open a finished session until its
    dashboard shows the past: the RunScreen is up, the loss chart has drawn every step and
    the history table holds the last epoch's rows. `cpu` is this process's CPU time over the
    same span (the app's threads included)."""
    import asyncio

    from gpta_tui.app import GptaApp
    from gpta_tui.screens.run import RunScreen
    from gpta_tui.widgets.history_table import HistoryTable
    from gpta_tui.widgets.loss_chart import LossChart

    async def measure() -> dict[str, float]:
        app = GptaApp(home)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            c0, t0 = time.process_time(), time.perf_counter()
            app.open_session(name, resume=False)
            deadline = t0 + 120
            while time.perf_counter() < deadline:
                screen = app.screen
                if isinstance(screen, RunScreen) and screen.is_mounted:
                    chart = screen.query_one(LossChart)
                    table = screen.query_one(HistoryTable)
                    if (chart.builds and chart.point_count == len(screen.state.losses)
                            and table.row_count == len(screen.state.history) > 0):
                        break
                await asyncio.sleep(0.005)
            else:
                raise RuntimeError(f"the dashboard of {name} did not show its past in 120 s")
            took, cpu = time.perf_counter() - t0, time.process_time() - c0
            return {"wall": took, "cpu": cpu, "points": chart.point_count}

    return asyncio.run(measure())


def commands(home: Path, name: str, root: Path = REPO_ROOT, repeats: int = 3
             ) -> dict[str, float]:
    """Wall seconds of `gpta show` and `gpta export` in a fresh process each (the median of
    `repeats`), run from the source tree `root` (this branch, or an older commit's tree)."""
    # the app's remembered theme and load times go to the benchmark's home, never the user's
    # config (which a newer gpta-tui may have written in a form an older tree does not read)
    env = {**os.environ, "GPTA_HOME": str(home), "PYTHONPATH": str(root),
           "GPTA_CONFIG": str(home / f"tui-{root.name}.json")}
    out = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        for label, argv in (("`gpta list` (process start and imports, for reference)", ["list"]),
                            ("`gpta show NAME`", ["show", name]),
                            ("`gpta export NAME DIR`", ["export", name, str(tmp / "out")])):
            times = []
            for _ in range(repeats):
                shutil.rmtree(tmp / "out", ignore_errors=True)
                t0 = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "gpta_tui.cli", *argv], env=env,
                                      cwd=root, capture_output=True, text=True)
                times.append(time.perf_counter() - t0)
                if done.returncode != 0:
                    raise RuntimeError(f"{argv}: {done.stderr.strip()[-300:]}")
            out[label] = sorted(times)[len(times) // 2]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


_TUI_OPEN = """
import importlib.util, json, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("bench_store_tui", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
runs = [module.tui_open(Path(sys.argv[2]), sys.argv[3]) for _ in range(int(sys.argv[4]))]
print(json.dumps(runs))
"""


def tui_open_in(root: Path, home: Path, name: str, repeats: int = 3) -> dict[str, float]:
    """`tui_open` in a fresh process whose gpta_tui/sessions come from the source tree `root`
    (this file's `tui_open` is loaded by path, so an older tree needs none of its own); the
    median of `repeats` opens in that process (the first one includes no import: the app
    is already up)."""
    # the app's remembered theme and load times go to the benchmark's home, never the user's
    # config (which a newer gpta-tui may have written in a form an older tree does not read)
    env = {**os.environ, "GPTA_HOME": str(home), "PYTHONPATH": str(root),
           "GPTA_CONFIG": str(home / f"tui-{root.name}.json")}
    done = subprocess.run([sys.executable, "-c", _TUI_OPEN, str(Path(__file__).resolve()),
                           str(home), name, str(repeats)], env=env, cwd=root,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"tui_open in {root}: {done.stderr.strip()[-500:]}")
    runs = sorted(json.loads(done.stdout.strip().splitlines()[-1]), key=lambda r: r["wall"])
    return runs[len(runs) // 2]


def as_schema_4(folder: Path, to: Path) -> None:
    """A copy of a session as the schema-4 store (--old-rev) wrote it: the scored prefixes
    and histories of scored.jsonl / history.jsonl in the database's `scored` / `history`
    tables (the code of --old-rev refuses a schema-5 session), without the TA template keys
    it does not know."""
    shutil.copytree(folder, to)
    data = json.loads((to / "session.json").read_text())
    logs = {}
    for name in ("scored", "history"):
        path = to / f"{name}.jsonl"
        logs[name] = [json.loads(line) for line in path.read_text().splitlines()]
        path.unlink()
    data["scored"] = {str(i): x for i, x in enumerate(logs["scored"], start=1)}
    data["history"] = {str(x["epoch"]): x for x in logs["history"]}
    data["meta"]["1"]["schema"] = 4
    # settings added after --old-rev, at their defaults (its config check refuses unknown keys)
    record = data["session"]["1"]
    for config in (record.get("config"), (record.get("run_started") or {}).get("config")):
        ta = (config or {}).get("ta") or {}
        for key in NEWER_TA_KEYS:
            if ta.get(key) == "":
                del ta[key]
    (to / "session.json").write_text(json.dumps(data))


def source_tree(rev: str, into: Path) -> Path | None:
    """The files of commit `rev` (git archive) under `into`, or None without git."""
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=REPO_ROOT,
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0], repeats=1)
    parser.add_argument("--steps", type=int, default=31_250, help="training steps (paper: 31,250)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--window", type=int, default=1000, help="steps in the first/last window")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--k", type=int, default=50, help="scored prefixes per epoch (paper: 50)")
    parser.add_argument("--l", type=int, default=5, help="prefixes per TA call")
    parser.add_argument("--small-steps", type=int, default=250,
                        help="steps of the short session read for reference")
    parser.add_argument("--baseline-rev", default=BASELINE_REV,
                        help="git revision of the schema-2 store to run as the baseline")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--old-rev", default=OLD_READERS_REV,
                        help="git revision whose `gpta show/export` and TUI open the same "
                             "finished session, for the reading table ('' to skip)")
    parser.add_argument("--home", type=Path, default=None,
                        help="where the sessions go (default: a temporary folder on the "
                             "repository's disk, removed at the end)")
    args = parser.parse_args()
    if args.window * 2 > args.steps:
        parser.error("--window must be at most half of --steps")
    from sessions import store as current

    machine = machine_info("cpu")
    home = Path(tempfile.mkdtemp(prefix=".bench-store-", dir=args.home or REPO_ROOT))
    contenders = {"schema-5 store: loss, TA calls, windows, scores, history in .jsonl (this branch)":
                  current}
    if not args.no_baseline:
        old = baseline_store(args.baseline_rev)
        if old is None:
            progress(f"no baseline: `git show {args.baseline_rev}:sessions/store.py` failed")
        else:
            contenders[f"schema-2 store ({args.baseline_rev}, baseline)"] = old
    try:
        results: dict[str, Fed] = {}
        for i, (label, module) in enumerate(contenders.items()):
            progress(f"feeding {args.steps} steps to the {label} ...")
            results[label] = feed(module, home, f"run-{i}", args)
        progress(f"a {args.small_steps}-step session for reference, then reading both ...")
        small = argparse.Namespace(**{**vars(args), "steps": args.small_steps,
                                      "window": args.small_steps // 2})
        feed(current, home, "small", small)
        readers(home, "small")  # warm: imports (matplotlib, textual) and font caches
        reading, tui_cpu = {}, {}
        for name in ("run-0", "small"):
            tui = tui_open_in(REPO_ROOT, home, name)
            reading[name] = {**readers(home, name), **commands(home, name), TUI_OPEN: tui["wall"]}
            tui_cpu[name] = tui["cpu"]
        old_reading: dict[str, float] = {}
        old_root = source_tree(args.old_rev, home / "old-tree") if args.old_rev else None
        if old_root is not None:
            progress(f"reading the long session with the code of {args.old_rev} ...")
            as_schema_4(home / "sessions" / "run-0", home / "sessions" / "run-0-s4")
            tui = tui_open_in(old_root, home, "run-0-s4")
            old_reading = {**commands(home, "run-0-s4", old_root), TUI_OPEN: tui["wall"]}
            tui_cpu["old"] = tui["cpu"]
    finally:
        shutil.rmtree(home, ignore_errors=True)

    first = range(1, args.window + 1)
    last = range(args.steps - args.window + 1, args.steps + 1)
    report = Report(key="store", title=f"Session storage over a {args.steps:,}-step run",
                    device="cpu", settings={
                        "steps": args.steps, "epochs": args.epochs, "window": args.window,
                        "checkpoint_every": args.checkpoint_every, "k": args.k, "l": args.l})
    rows = []
    for label, fed in results.items():
        p999 = sorted(fed.step_wall)[int(0.999 * (len(fed.step_wall) - 1))]
        a, b = window_ms(fed, label, first), window_ms(fed, label, last)
        wa = 1000 * fed.window_wall["first"] / args.window
        wb = 1000 * fed.window_wall["last"] / args.window
        ca = 1000 * fed.window_cpu["first"] / args.window
        cb = 1000 * fed.window_cpu["last"] / args.window
        rows.append([label, f"{a:.3f}", f"{b:.3f}", f"{b / a:.2f}",
                     f"{wa:.3f} / {wb:.3f} ({wb / wa:.2f})", f"{ca:.3f} / {cb:.3f} ({cb / ca:.2f})",
                     f"{1000 * max(fed.step_wall):.2f} / {1000 * p999:.2f}",
                     f"{1000 * fed.checkpoint_max:.1f} (mean {1000 * fed.checkpoint_total / fed.checkpoints:.1f})",
                     f"{1000 * fed.other_max:.1f}",
                     f"{fed.wchar / args.steps / 1024:.1f}" if fed.wchar is not None else "-",
                     f"{fed.disk_bytes / 2**20:.1f}", f"{fed.total_wall:.1f}"])
    report.table(["store", f"ms/step, first {args.window}", f"ms/step, last {args.window}",
                  "last/first (target <= 1.5)", "with checkpoints: first / last ms/step (ratio)",
                  "CPU ms/step first / last (ratio)", "train-step block ms: longest / 99.9th pct (target <= 10)",
                  "longest checkpoint record ms", "longest other event ms",
                  "KiB written per step", "session MiB on disk", "whole run s"], rows)
    old_label = args.old_rev or "old"
    report.table(["reading a finished session", f"{args.steps:,} steps, s",
                  f"{args.small_steps:,} steps, s", "ratio long/short",
                  f"{args.steps:,} steps, code of {old_label}, s", "this / old"],
                 [[k, f"{v:.3f}", f"{reading['small'][k]:.3f}", f"{v / reading['small'][k]:.2f}",
                   f"{old_reading[k]:.3f}" if k in old_reading else "-",
                   f"{v / old_reading[k]:.2f}" if k in old_reading else "-"]
                  for k, v in reading["run-0"].items()])
    report.notes.append(
        "TUI open, CPU seconds of that process over the same span: "
        + ", ".join(f"{label} {tui_cpu[key]:.3f}" for key, label in (
            ("run-0", f"{args.steps:,} steps"), ("small", f"{args.small_steps:,} steps"),
            ("old", f"{args.steps:,} steps with {old_label}")) if key in tui_cpu) + ".")
    report.notes += [
        "ms/step: the listener calls of the training steps in the window, the flushes they "
        "trigger included (loss points are written every 25 steps or 5 s). 'With "
        "checkpoints': wall time of every event in the window, the checkpoint records "
        f"(one per {args.checkpoint_every} steps) included.",
        "A checkpoint record is durable before it returns (the engine deletes the previous "
        "checkpoint folder after it): the two logs are fsynced, then the database replaced "
        "(temp file, fsync, rename, folder fsync). Its time is the disk's fsync/rename time, "
        "the same at step 100 as at step 31,000 for this store; the engine's own checkpoint "
        "of the student weights at the same moment takes far longer.",
        "Blocking is wall time on the engine thread, so on a loaded machine a step that was "
        "merely descheduled counts too: the 99.9th percentile shows what is typical.",
        "KiB written per step: bytes passed to write(2) by the whole process during the run "
        "(/proc/self/io wchar) divided by the steps; the baseline rewrites its whole database "
        "on every flush.",
        "TA calls and windows are in ta_calls.jsonl / windows.jsonl since schema 4, scored "
        "prefixes and each epoch's history in scored.jsonl / history.jsonl since schema 5 "
        "(before: in the database, rewritten with it at every checkpoint); the checkpoint's "
        "state still holds the current epoch's history.",
        "Commands run in a fresh Python process (median of 3): most of their time is imports "
        "(`gpta list` is about that start-up alone). Since round 3 export's curves.png is "
        "drawn with Pillow through one min/max bucket per pixel column (before: matplotlib, "
        "whose import alone was ~0.3 s of CPU), so its cost hardly depends on the length. The short session, read the same way in the "
        "same run, shows what the length itself adds; the old code's column reads the same "
        "session files with the tree of --old-rev (git archive), in the same run.",
        "TUI open: the real app (GptaApp under a Textual pilot, 160x48) already running; "
        "from `open_session(name, resume=False)` until the RunScreen is mounted, the loss "
        "chart has built its figure of every step and the history table holds the last "
        "epoch's rows; median of 3 opens in one process.",
    ]
    publish(report, args, machine)


if __name__ == "__main__":
    run_main(main)
