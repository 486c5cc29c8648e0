"""Resume latency: from the resume call to the first TrainStep of the resumed run.

    python -m bench.resume                        # smoke preset, stopped after training step 4
    python -m bench.resume --repeats 5 --device cuda

A run on the smoke preset (real MiniLM student, twitter-sentiment, scripted TA) is stopped
after training step `--stop-at` and resumed `--repeats` times, two ways, alternating:

- session: `sessions.runner.resume_session(name, home)` (what `gpta resume` and the TUI call:
  open the TinyDB session, check it, build the engine), then `engine.run()` until the first
  TrainStep. Each resume continues the previous one (one more step each time).
- engine: `Engine(config, workdir, resume=state)` with the state of the stopped run (in a fresh
  copy of its work directory each time), then `engine.run()` until the first TrainStep.

Both are measured in a warm process (libraries imported, files in the page cache), as in the
TUI. The time splits into: the resume call (session open + Engine construction), the engine's
setup (data, student, checkpoint, TA) up to RunStarted, and the rest up to the first TrainStep
(one training step included).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (Report, base_parser, machine_info, median, prepare, progress, publish,
                          run_main, spread, ta_for)

SEGMENTS = ("resume call", "setup to RunStarted", "RunStarted to first TrainStep", "total")


class FirstStep:
    """Listener: perf_counter stamps of RunStarted and the first TrainStep, then stop the run."""

    def __init__(self, controls) -> None:
        self.controls = controls
        self.run_started = self.first_step = 0.0
        self.step = 0

    def __call__(self, event) -> None:
        if event.kind == "run_started":
            self.run_started = time.perf_counter()
        elif event.kind == "train_step" and not self.first_step:
            self.first_step = time.perf_counter()
            self.step = event.step
            self.controls.stop()


class StopAt:
    """Listener: stop the run after training step `step`; keep the last checkpoint state and
    the timestamps of the training steps."""

    def __init__(self, controls, step: int) -> None:
        self.controls, self.target = controls, step
        self.state: dict | None = None
        self.step_ts: list[float] = []

    def __call__(self, event) -> None:
        if event.kind == "train_step":
            self.step_ts.append(event.ts)
            if event.step >= self.target:
                self.controls.stop()
        elif event.kind == "checkpoint":
            self.state = event.state


@dataclass
class Prepared:
    """A session and a plain engine work directory, both stopped after the same step."""

    home: Path
    session: str
    workdir: Path
    state: dict
    step_seconds: list[float]  # durations of the training steps 2.. of both runs


def prepare_runs(cfg, root: Path, stop_at: int) -> Prepared:
    """Run `cfg` as a session and as a bare engine, each stopped after training step `stop_at`."""
    from engine.controls import Controls
    from engine.loop import Engine
    from sessions.runner import start_session

    controls = Controls()
    in_session = StopAt(controls, stop_at)
    handle, engine = start_session(cfg, root / "home", listeners=[in_session], controls=controls)
    try:
        engine.run()
    finally:
        handle.close()
    controls = Controls()
    bare = StopAt(controls, stop_at)
    Engine(cfg, root / "engine", controls=controls, listeners=[bare]).run()
    if bare.state is None or bare.state.get("step") != stop_at:
        raise RuntimeError(f"the prepared engine run did not stop after step {stop_at}")
    durations = [b - a for ts in (in_session.step_ts, bare.step_ts) for a, b in zip(ts, ts[1:])]
    return Prepared(root / "home", handle.name, root / "engine", bare.state, durations)


def segments(t0: float, called: float, probe: FirstStep) -> dict[str, float]:
    if not probe.first_step:
        raise RuntimeError("the resumed run ended before its first training step")
    return {"resume call": called - t0, "setup to RunStarted": probe.run_started - called,
            "RunStarted to first TrainStep": probe.first_step - probe.run_started,
            "total": probe.first_step - t0}


def session_resume(name: str, home: Path) -> tuple[dict[str, float], int]:
    from engine.controls import Controls
    from sessions.runner import resume_session

    controls = Controls()
    probe = FirstStep(controls)
    t0 = time.perf_counter()
    handle, engine = resume_session(name, home, listeners=[probe], controls=controls)
    called = time.perf_counter()
    try:
        engine.run()
    finally:
        handle.close()
    return segments(t0, called, probe), probe.step


def engine_resume(cfg, workdir: Path, state: dict) -> tuple[dict[str, float], int]:
    from engine.controls import Controls
    from engine.loop import Engine

    controls = Controls()
    probe = FirstStep(controls)
    t0 = time.perf_counter()
    engine = Engine(cfg, workdir, controls=controls, listeners=[probe], resume=state)
    called = time.perf_counter()
    engine.run()
    return segments(t0, called, probe), probe.step


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--stop-at", type=int, default=4, help="training step the first run stops after")
    parser.add_argument("--ta", default="scripted", choices=("scripted", "local"))
    args = parser.parse_args()
    device = prepare(args)
    machine = machine_info(device)

    from engine.config import build_config
    from engine.errors import UsageError

    cfg = build_config("smoke", overrides={"seed": args.seed, "device": device,
                                           "ta": {"backend": args.ta}})
    steps = -(-cfg.data.train_size // cfg.student.batch_size)
    if args.stop_at < 1 or args.stop_at + args.repeats >= steps:
        raise UsageError(f"--stop-at {args.stop_at} with --repeats {args.repeats} runs past the "
                         f"{steps} training steps of the first epoch",
                         f"keep --stop-at + --repeats below {steps}")
    ta_name = ta_for(args.ta)
    results: dict[str, list[dict[str, float]]] = {"session": [], "engine": []}
    steps_seen: dict[str, list[int]] = {"session": [], "engine": []}
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        root = Path(tmp)
        progress(f"preparing: a session and a bare engine run, both stopped after step {args.stop_at}")
        prepared = prepare_runs(cfg, root, args.stop_at)
        for r in range(args.repeats):
            order = ["session", "engine"] if r % 2 == 0 else ["engine", "session"]
            for kind in order:
                if kind == "session":
                    seg, step = session_resume(prepared.session, prepared.home)
                else:
                    workdir = root / f"engine-{r}"
                    shutil.copytree(prepared.workdir, workdir)
                    seg, step = engine_resume(cfg, workdir, prepared.state)
                    shutil.rmtree(workdir, ignore_errors=True)
                results[kind].append(seg)
                steps_seen[kind].append(step)
                progress(f"repeat {r + 1}/{args.repeats}  {kind}: {seg['total']:.2f}s to step {step}")

    report = Report("resume", "Resume: call to first TrainStep", device,
                    settings={"preset": "smoke", "stopped after step": args.stop_at,
                              "TA": ta_name, "repeats": args.repeats})
    rows = []
    for kind, label in (("session", "sessions.runner.resume_session + engine.run"),
                        ("engine", "Engine(resume=state) + engine.run")):
        rows.append([label, *(spread([seg[s] for seg in results[kind]]) for s in SEGMENTS),
                     ", ".join(map(str, steps_seen[kind]))])
    report.table(["path", *(f"{s}, s" for s in SEGMENTS), "first step"], rows)
    overhead = median([s["total"] for s in results["session"]]) - median([s["total"] for s in results["engine"]])
    report.notes.append(f"sessions overhead over the bare engine (median totals): {overhead:+.2f} s")
    if prepared.step_seconds:
        report.notes.append(f"one training step of the prepared runs takes "
                            f"{median(prepared.step_seconds):.2f} s (median): the last column is "
                            "mostly that step")
    report.notes.append("warm process (imports done, files cached); a cold `gpta resume` also pays "
                        "interpreter start and library imports")
    publish(report, args, machine)


if __name__ == "__main__":
    run_main(main)
