"""One full GPTA epoch on the smoke preset, broken down by phase.

    python -m bench.epoch                         # scripted TA: student and engine costs only
    python -m bench.epoch --ta local              # the real Gemma 3 270M TA (offline default)
    python -m bench.epoch --epochs 2 --finetune local --device cuda

Runs the real engine (MiniLM student, twitter-sentiment, smoke preset) start to finish
`--repeats` times, each in a fresh work directory, and times every phase from the engine's
own event timestamps (PhaseChanged ... RunFinished). Inside each phase it also times the TA's
`propose`, the student's `score_prefixes` / `evaluate` and the checkpoint writes, and counts
the work done (training steps, prefixes scored, TA requests). Memory: RSS at the end of each
phase (psutil) and the process peak (getrusage), plus the CUDA allocator peak on a GPU.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import (CallTimer, Report, base_parser, gpu_peak_mib, machine_info, median,
                          peak_rss_mib, prepare, progress, publish, rss_mib, run_main, spread,
                          ta_for)

PHASE_ORDER = ("startup", "setup", "training", "validating", "collecting", "windows",
               "finetuning", "testing")
INNER = ("TA propose", "scoring", "evaluate", "checkpoint saves")


class PhaseRecorder:
    """An engine listener: per-phase wall time from event timestamps and CPU time from
    process_time() at each phase event, inner call timings (attributed to the phase they ran
    in), RSS at each phase's end and work counters."""

    def __init__(self, device: str, ta_fast: bool = True) -> None:
        self.ta_fast = ta_fast
        self.timer = CallTimer(device)
        self.timer.phase = "startup"
        self.engine: Any = None
        self.events: list = []
        self.rss: dict[str, float] = {}
        self.counts: dict[str, int] = defaultdict(int)
        self.cpu: dict[str, float] = defaultdict(float)
        self._cpu_mark = time.process_time()

    def _close_phase(self) -> None:
        now = time.process_time()
        self.cpu[self.timer.phase] += now - self._cpu_mark
        self._cpu_mark = now
        self.rss[self.timer.phase] = rss_mib()

    def __call__(self, event) -> None:
        self.events.append(event)
        if event.kind == "phase":
            self._close_phase()
            self.timer.phase = event.phase
        elif event.kind == "run_started":  # after setup: the student and the TA exist now
            student, ta = self.engine.student, self.engine.ta
            self.timer.wrap(student, "score_prefixes", "scoring")
            self.timer.wrap(student, "evaluate", "evaluate")
            if ta is not None:
                self.timer.wrap(ta, "propose", "TA propose")
                if hasattr(ta, "fast"):  # the local TA: its fast path, or stock generate
                    ta.fast = self.ta_fast
        elif event.kind == "train_step":
            self.counts["training steps"] += 1
        elif event.kind == "prefix_scored" and not event.reused:
            self.counts["prefixes scored"] += 1
        elif event.kind == "ta_request":
            self.counts["TA requests"] += 1
        elif event.kind == "finished":
            self._close_phase()

    def phase_seconds(self, started: float, ended: float) -> dict[str, float]:
        """Wall seconds per phase: each PhaseChanged lasts until the next one or the end."""
        marks = [("startup", started)] + [(e.phase, e.ts) for e in self.events if e.kind == "phase"]
        finish = next((e.ts for e in self.events if e.kind == "finished"), ended)
        out: dict[str, float] = defaultdict(float)
        for (phase, ts), (_, nxt) in zip(marks, marks[1:] + [("end", finish)]):
            out[phase] += nxt - ts
        return dict(out)


def run_once(cfg, device: str, workdir: Path, ta_fast: bool = True) -> dict[str, Any]:
    """One engine run; phase walls, inner timings, counts and RSS."""
    from engine.loop import Engine

    recorder = PhaseRecorder(device, ta_fast)
    started = time.time()
    engine = Engine(cfg, workdir, listeners=[recorder])
    recorder.engine = engine
    recorder.timer.wrap(engine, "save_checkpoint", "checkpoint saves")
    recorder.timer.wrap(engine, "_save_best", "checkpoint saves")
    finished = engine.run()
    ended = time.time()
    if finished.status != "finished":
        raise RuntimeError(f"the benchmark run ended {finished.status}: {finished.reason}")
    return {"phases": recorder.phase_seconds(started, ended), "cpu": dict(recorder.cpu),
            "inner": dict(recorder.timer.seconds), "inner_cpu": dict(recorder.timer.cpu),
            "counts": dict(recorder.counts), "rss": recorder.rss, "total": ended - started,
            "test": finished.test_metrics,
            "prefixes": [e.prefix for e in recorder.events if e.kind == "prefix_scored"]}


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--ta", default="scripted", choices=("scripted", "local"))
    parser.add_argument("--finetune", default="auto", choices=("auto", "none", "local"),
                        help="TA fine-tune backend (auto: local LoRA for the local TA, else none); "
                             "it runs between epochs only, so with --epochs 2 or more")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--ta-path", default="fast", choices=("fast", "stock"),
                        help="local TA only: its own generation path, or stock model.generate "
                             "(the path before #19; same sampled texts, for comparison)")
    args = parser.parse_args()
    device = prepare(args)
    machine = machine_info(device)

    from engine.config import build_config

    cfg = build_config("smoke", overrides={"seed": args.seed, "device": device,
                                           "ta": {"backend": args.ta},
                                           "finetune": {"backend": args.finetune},
                                           "loop": {"epochs": args.epochs}})
    ta_name = ta_for(args.ta)
    runs = []
    for r in range(args.repeats):
        gc.collect()
        before = rss_mib()
        with tempfile.TemporaryDirectory(prefix="bench-epoch-") as tmp:
            runs.append({**run_once(cfg, device, Path(tmp), args.ta_path == "fast"),
                         "rss_before": before})
        progress(f"repeat {r + 1}/{args.repeats}: {runs[-1]['total']:.1f}s")

    phases = [p for p in PHASE_ORDER if any(p in run["phases"] for run in runs)]
    stock = args.ta == "local" and args.ta_path == "stock"
    report = Report(f"epoch-{args.ta}-ta" + ("-stock" if stock else ""),
                    f"One GPTA run on the smoke preset, {args.ta} TA"
                    + (" (stock model.generate)" if stock else ""), device,
                    settings={"preset": "smoke", "epochs": args.epochs, "TA": ta_name,
                              "finetune": args.finetune, "train rows": cfg.data.train_size,
                              "validation rows": cfg.data.val_size, "test rows": cfg.data.test_size,
                              "k": cfg.loop.k, "l": cfg.loop.l, "repeats": args.repeats})
    # Inner calls in CPU seconds on the CPU (robust on a shared machine), wall seconds on a GPU.
    clock = "wall" if device.startswith("cuda") else "CPU"
    inner_key = "inner" if clock == "wall" else "inner_cpu"

    def inner_median(phase: str | None, label: str) -> str:
        """Median over runs of `label`'s seconds in `phase` (None: in all phases)."""
        per_run = [sum(v for (ph, lab), v in run[inner_key].items()
                       if lab == label and phase in (None, ph)) for run in runs]
        return f"{median(per_run):.2f}"

    rows = []
    for phase in phases:
        rows.append([phase, spread([run["phases"].get(phase, 0.0) for run in runs]),
                     spread([run["cpu"].get(phase, 0.0) for run in runs]),
                     *(inner_median(phase, label) for label in INNER),
                     f"{runs[0]['rss'].get(phase, 0.0):.0f}"])
    rows.append(["total", spread([run["total"] for run in runs]),
                 spread([sum(run["cpu"].values()) for run in runs]),
                 *(inner_median(None, label) for label in INNER), ""])
    report.table(["phase", "wall s, median (min-max)", "CPU s, median (min-max)",
                  *(f"{x}, {clock} s" for x in INNER), "RSS at phase end (first run), MiB"], rows)

    counts = runs[-1]["counts"]
    rows_trained = cfg.data.train_size * args.epochs
    pairs = counts.get("prefixes scored", 0) * cfg.data.val_size

    def per_second(work: float, key: str, phase: str, label: str | None = None) -> str:
        if label is None:
            secs = median([run[key].get(phase, 0.0) for run in runs])
        else:
            secs = median([run[key].get((phase, label), 0.0) for run in runs])
        return f"{work / secs:.1f}" if secs else "-"

    facts = [["training steps / prefixes scored / TA requests",
              f"{counts.get('training steps', 0)} / {counts.get('prefixes scored', 0)} / "
              f"{counts.get('TA requests', 0)}"],
             ["training phase (incl. checkpoints), samples/s by wall / by CPU",
              f"{per_second(rows_trained, 'phases', 'training')} / "
              f"{per_second(rows_trained, 'cpu', 'training')}"],
             ["collecting: score_prefixes, prefix x row pairs/s by wall / by CPU",
              f"{per_second(pairs, 'inner', 'collecting', 'scoring')} / "
              f"{per_second(pairs, 'inner_cpu', 'collecting', 'scoring')}"],
             ["RSS before each run (psutil)",
              ", ".join(f"{run['rss_before']:.0f}" for run in runs) + " MiB"],
             ["peak RSS of the process over all runs (getrusage)", f"{peak_rss_mib():.0f} MiB"],
             [f"TA propose share of the run ({clock} s)",
              f"{100 * float(inner_median(None, 'TA propose')) / median([sum(run[('cpu' if clock == 'CPU' else 'phases')].values()) for run in runs]):.0f}%"],
             ["test metrics (first run)", ", ".join(f"{k} {v:.4f}" for k, v in runs[0]["test"].items()
                                                    if isinstance(v, (int, float)))],
             ["prefixes scored (first run)", " | ".join(runs[0]["prefixes"])]]
    gpu = gpu_peak_mib(device)
    if gpu is not None:
        facts.append(["peak CUDA memory allocated", f"{gpu:.0f} MiB"])
    report.table(["fact", "value"], facts)
    report.notes.append("startup: Engine construction to the setup event; setup: data, student "
                        "and TA loading, plus the first TA request (s0); each phase lasts until "
                        "the next phase event")
    publish(report, args, machine)


if __name__ == "__main__":
    run_main(main)
