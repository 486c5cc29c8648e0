"""Full fine-tuning vs L-Tuning (lt-prefix, lt-prompt) vs the L-Tuning paper's baselines
(peft prefix and prompt tuning) on the offline default data and model, over several seeds.

    python -m bench.ltuning                              # 2,000 rows, 3 seeds, 5 tunings, 1 thread
    python -m bench.ltuning --tunings lt-prefix,lt-prompt --train-size 600 --epochs 3 \\
        --seeds 42 --csv docs/ltuning_acceptance.csv --no-write
    python -m bench.ltuning --render-only                # rewrite the doc from the CSV

Every (tuning, seed) run is one child process (`--one`), so its peak memory is its own; it
appends one row to the raw CSV as soon as it finishes, so a long grid that is interrupted keeps
what it finished, and a rerun skips the (tuning, seed) pairs the CSV already holds. Each student
is built by `engine.student.build_student` from the seed's splits, with the tuning's default
learning rate (engine.config.DEFAULT_LR) unless `--lr TUNING=VALUE`, and trained with the same
text prefix (empty by default, as in the baseline mode).

Per run: trainable / total parameters, training wall time per epoch, the process's peak
resident memory (VmHWM: model, data, training and evaluation), validation metrics after the
last epoch, test accuracy and macro-F1, and the share of the most often predicted label.
docs/LTUNING_RESULTS.md is rewritten from the CSV (mean ± sample std over seeds) unless
--no-write.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from engine.tasks import TUNINGS  # light: no torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "LTUNING_RESULTS.md"
RAW = ROOT / "docs" / "ltuning_runs.csv"
ACCEPTANCE = ROOT / "docs" / "ltuning_acceptance.csv"
FIELDS = ["tuning", "seed", "lr", "lt_objective", "lt_map", "train_rows", "val_rows", "test_rows",
          "epochs", "max_length", "batch_size", "trainable", "total", "train_s_per_epoch",
          "peak_rss_mb", "val_accuracy", "test_accuracy", "test_macro_f1", "top_share",
          "majority", "threads", "load_avg", "date", "cpu", "torch", "transformers", "peft"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ltuning", description=__doc__.split("\n")[0])
    p.add_argument("--tunings", default=",".join(TUNINGS),
                   help="comma-separated subset of " + ", ".join(TUNINGS))
    p.add_argument("--seeds", default="42,43,44", help="comma-separated seeds (data split and init)")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--dataset", default="twitter-sentiment")
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--val-size", type=int, default=100)
    p.add_argument("--test-size", type=int, default=300)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--lr", action="append", default=[], metavar="TUNING=VALUE",
                   help="learning rate of one tuning (default: engine.config.DEFAULT_LR)")
    p.add_argument("--lt-objective", default="softmax", help="softmax or binary (L-Tuning)")
    p.add_argument("--lt-map", default="pooled", help="pooled or token (L-Tuning)")
    p.add_argument("--prefix", default="", help="GPTA text prefix used for training and testing")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    p.add_argument("--csv", type=Path, default=RAW, help="raw results, one row per finished run")
    p.add_argument("--acceptance-csv", type=Path, default=None,
                   help="raw rows of the defaults-only acceptance check, shown in their own "
                        "section (default with the default --csv: docs/ltuning_acceptance.csv)")
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--no-write", action="store_true", help="do not rewrite the results document")
    p.add_argument("--render-only", action="store_true", help="only rewrite the document from --csv")
    p.add_argument("--one", nargs=2, metavar=("TUNING", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.tunings = [t.strip() for t in args.tunings.split(",") if t.strip()]
    unknown = [t for t in args.tunings if t not in TUNINGS]
    if unknown or not args.tunings:
        p.error(f"--tunings: use names from {', '.join(TUNINGS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        args.lrs = {t: float(v) for t, v in (item.split("=", 1) for item in args.lr)}
    except ValueError:
        p.error("--seeds takes integers, --lr takes TUNING=VALUE, e.g. --lr lt-prefix=3e-3")
    if set(args.lrs) - set(TUNINGS):
        p.error(f"--lr: use tunings from {', '.join(TUNINGS)}")
    return args


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    """The process's peak resident memory (VmHWM), MB; ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(tuning: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train and test one student in this process; the CSV row."""
    import peft
    import torch
    import transformers

    from engine.config import DataConfig, build_config
    from engine.data import load_task_data
    from engine.device import resolve_device
    from engine.metrics import classification_metrics
    from engine.student import build_student

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    student_cfg = {"model": args.model, "tuning": tuning, "max_length": args.max_length,
                   "batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size,
                   "lt_objective": args.lt_objective, "lt_map": args.lt_map}
    if tuning in args.lrs:
        student_cfg["lr"] = args.lrs[tuning]
    cfg = build_config("default", overrides={
        "seed": seed, "student": student_cfg, "loop": {"epochs": args.epochs},
        "data": {"dataset": args.dataset, "train_size": args.train_size,
                 "val_size": args.val_size, "test_size": args.test_size}})
    data = load_task_data(DataConfig(dataset=args.dataset, train_size=args.train_size,
                                     val_size=args.val_size, test_size=args.test_size), seed)
    student = build_student(cfg, data, device)
    params = list(student.model.parameters())
    train_s = 0.0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        losses = [r.loss for r in student.train_epoch(args.prefix, epoch)]
        train_s += time.perf_counter() - t0
        print(f"  {tuning} seed {seed} epoch {epoch}: mean loss {sum(losses) / len(losses):.4f} "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    val = student.evaluate(args.prefix, "validation")
    predictions = student.prefix_logits([args.prefix], "test")[0].argmax(-1).tolist()
    labels = [row["label"] for row in data.test]
    test = classification_metrics(labels, predictions)
    return {
        "tuning": tuning, "seed": seed, "lr": cfg.student.lr,
        "lt_objective": args.lt_objective if tuning.startswith("lt-") else "",
        "lt_map": args.lt_map if tuning.startswith("lt-") else "",
        "train_rows": len(data.train), "val_rows": len(data.validation),
        "test_rows": len(data.test), "epochs": args.epochs, "max_length": args.max_length,
        "batch_size": args.batch_size,
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "total": sum(p.numel() for p in params),
        "train_s_per_epoch": round(train_s / args.epochs, 1), "peak_rss_mb": round(peak_rss_mb()),
        "val_accuracy": round(val["accuracy"], 4), "test_accuracy": round(test["accuracy"], 4),
        "test_macro_f1": round(test["macro_f1"], 4),
        "top_share": round(max(Counter(predictions).values()) / len(predictions), 4),
        "majority": round(max(Counter(labels).values()) / len(labels), 4),
        "threads": torch.get_num_threads(), "load_avg": f"{os.getloadavg()[0]:.2f}",
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "cpu": cpu_name(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file()
    with path.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def spread(values: list[float], digits: int = 3) -> str:
    """mean ± sample standard deviation (just the value for one run)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def settings(rows: list[dict[str, str]]) -> str:
    """One line: the data and training settings the rows share."""
    first = rows[0]
    lt = next((r for r in rows if r["tuning"].startswith("lt-")), {})
    return (f"twitter-sentiment, {first['train_rows']} train / {first['val_rows']} validation / "
            f"{first['test_rows']} test rows drawn per seed; all-MiniLM-L6-v2, max_length "
            f"{first['max_length']}, batch {first['batch_size']}, {first['epochs']} epoch(s), "
            "empty text prefix; L-Tuning objective "
            f"{lt.get('lt_objective') or 'softmax'}, map {lt.get('lt_map') or 'pooled'}")


def table(rows: list[dict[str, str]]) -> list[str]:
    """Mean ± std per tuning over the seeds of `rows`, with the gap to full fine-tuning."""
    by_tuning: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_tuning.setdefault(row["tuning"], []).append(row)
    full = by_tuning.get("full")
    full_acc = statistics.fmean(float(r["test_accuracy"]) for r in full) if full else None
    lines = [
        "| tuning | lr | seeds | trainable params | of total | train s / epoch | peak memory "
        "| test accuracy | test macro-F1 | accuracy vs full | top class share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for tuning in [t for t in TUNINGS if t in by_tuning]:
        rs = by_tuning[tuning]
        accuracy = [float(r["test_accuracy"]) for r in rs]
        versus = f"{statistics.fmean(accuracy) - full_acc:+.3f}" if full_acc is not None else "–"
        trainable, total = int(rs[0]["trainable"]), int(rs[0]["total"])
        lines.append(
            f"| {tuning} | {float(rs[0]['lr']):g} | {', '.join(r['seed'] for r in rs)} "
            f"| {trainable:,} | {100 * trainable / total:.2f}% "
            f"| {spread([float(r['train_s_per_epoch']) for r in rs], 0)} "
            f"| {spread([float(r['peak_rss_mb']) for r in rs], 0)} MB "
            f"| {spread(accuracy)} | {spread([float(r['test_macro_f1']) for r in rs])} "
            f"| {versus} | {spread([100 * float(r['top_share']) for r in rs], 0)}% |")
    majority = sorted({(r["seed"], r["majority"]) for r in rows})
    lines += ["", "Majority-class test accuracy: " + ", ".join(
        f"{float(m):.3f} (seed {seed})" for seed, m in majority) + ".", ""]
    for tuning in [t for t in TUNINGS if t in by_tuning]:
        lines.append("- " + verdict(tuning, by_tuning[tuning], full_acc))
    return lines


#: a tuning "learns" when its mean test accuracy clears the majority class by this much and
#: fewer than this share of its predictions go to one label
LEARNS_MARGIN = 0.05
LEARNS_TOP_SHARE = 0.9


def verdict(tuning: str, rows: list[dict[str, str]], full_acc: float | None) -> str:
    """Whether a tuning learns (against the majority class) and its distance from full."""
    accuracy = statistics.fmean(float(r["test_accuracy"]) for r in rows)
    majority = statistics.fmean(float(r["majority"]) for r in rows)
    top = statistics.fmean(float(r["top_share"]) for r in rows)
    learns = accuracy >= majority + LEARNS_MARGIN and top < LEARNS_TOP_SHARE
    text = (f"{tuning}: {'learns' if learns else 'does not learn'} (test accuracy "
            f"{accuracy:.3f} against the majority class's {majority:.3f}, "
            f"{100 * top:.0f}% of predictions on one label)")
    if full_acc is not None and tuning != "full":
        gap = accuracy - full_acc
        text += f"; {abs(gap) * 100:.1f} points {'below' if gap < 0 else 'above'} full fine-tuning"
    return text + "."


def render(rows: list[dict[str, str]], csv_path: Path, missing: list[tuple[str, int]],
           acceptance: list[dict[str, str]], acceptance_path: Path) -> str:
    """The results document from the raw CSV rows (and the acceptance check's, if any)."""
    every = rows + acceptance
    first = every[0]
    dates = sorted(r["date"] for r in every)
    loads = [float(r["load_avg"]) for r in every]
    lines = [
        "# L-Tuning vs prefix / prompt tuning vs full fine-tuning",
        "",
        f"Written by `python -m bench.ltuning` from the raw results in `{shown(csv_path)}` "
        "(one row per finished run; `python -m bench.ltuning --render-only` rewrites this file "
        "from it). Students: `engine/student/classification.py` (full), "
        "`engine/student/ltuning.py` (lt-prefix, lt-prompt: Kowsher et al. 2024, arXiv "
        "2402.01643) and `engine/student/soft_prompt.py` (prefix, prompt: peft's PrefixTuning / "
        "PromptTuning on the same frozen encoder). Every tuning runs with its default learning "
        "rate (engine.config.DEFAULT_LR), as `gpta run --tuning X` does without `--lr`.",
        "",
        f"- Machine: {first['cpu']}, 2 cores shared with other work; torch {first['torch']}, "
        f"transformers {first['transformers']}, peft {first['peft']}; {first['threads']} torch "
        f"thread per run; runs from {dates[0]} to {dates[-1]}; 1-minute load average at the "
        f"start of a run {min(loads):.2f} to {max(loads):.2f}, so wall times are slow and vary "
        "by tens of percent",
        "- Peak memory: the run process's peak resident set (VmHWM), Python, torch and the "
        "model included. \"train s / epoch\": the training steps only; an L-Tuning step scores "
        "every text against all K = 3 labels (K forward and backward passes per row). \"top "
        "class share\": the share of test predictions that go to the most often predicted "
        "label (100%: one label for every row). Mean ± sample standard deviation over seeds.",
        "",
    ]
    if rows:
        test_rows = int(rows[0]["test_rows"])
        lines += ["## The comparison", "", f"Settings: {settings(rows)}.", "", *table(rows), "",
                  f"Caveats: every tuning at its default learning rate, none tuned per run "
                  f"(full fine-tuning's 2e-5 for {rows[0]['epochs']} epoch(s) is a short budget "
                  f"for it); one test accuracy on {test_rows} rows carries a standard error of "
                  f"about {100 * (0.25 / test_rows) ** 0.5:.0f} points.", ""]
    if missing:
        lines += ["Not run (the grid did not finish in the time available): " + ", ".join(
            f"{tuning} seed {seed}" for tuning, seed in missing) + ".", ""]
    if acceptance:
        lines += [
            "## Acceptance check: defaults only", "",
            f"`--tuning lt-prefix` / `--tuning lt-prompt` with nothing else set, raw rows in "
            f"`{shown(acceptance_path)}`. Settings: {settings(acceptance)}. The bench uses "
            "max_length 64 where the config default is 96: rows are padded to the longest of "
            "their batch, so this only cuts the few tweets longer than 64 tokens.", "",
            *table(acceptance), ""]
        rejected = ROOT / "docs" / "ltuning_rejected_lr.csv"
        for r in read_rows(rejected):
            lines += [f"Rejected default: {r['tuning']} at lr {float(r['lr']):g} (seed {r['seed']}, "
                      f"same settings) reached test accuracy {float(r['test_accuracy']):.3f} with "
                      f"{100 * float(r['top_share']):.0f}% of predictions on one label; raw row in "
                      f"`{shown(rejected)}`.", ""]
    return "\n".join(lines)


def write_doc(args: argparse.Namespace) -> None:
    rows = read_rows(args.csv)
    if args.acceptance_csv is None and args.csv == RAW:  # a rewrite keeps the section
        args.acceptance_csv = ACCEPTANCE
    acceptance = read_rows(args.acceptance_csv) if args.acceptance_csv else []
    if not rows and not acceptance:
        print(f"{args.csv} holds no runs; nothing to render", file=sys.stderr)
        return
    done = {(r["tuning"], r["seed"]) for r in rows}
    missing = [(t, seed) for seed in args.seeds for t in args.tunings if (t, str(seed)) not in done]
    text = render(rows, args.csv, missing, acceptance, args.acceptance_csv)
    print(text)
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_name(args.output.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        shutil.move(str(tmp), args.output)
        print(f"wrote {args.output}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args)), flush=True)
        return 0
    if args.render_only:
        write_doc(args)
        return 0
    done = {(r["tuning"], r["seed"]) for r in read_rows(args.csv)}
    child_argv = [a for a in (argv if argv is not None else sys.argv[1:])]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT))
    for seed in args.seeds:  # seed by seed: after the first, every tuning has a result
        for tuning in args.tunings:
            if (tuning, str(seed)) in done:
                print(f"{tuning} seed {seed}: in {args.csv} already, skipped", flush=True)
                continue
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "bench.ltuning", *child_argv,
                                   "--one", tuning, str(seed)],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                print(f"{tuning} seed {seed}: failed (exit {proc.returncode})", flush=True)
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            append_row(args.csv, row)
            print(f"{tuning} seed {seed}: test accuracy {row['test_accuracy']:.3f}, macro-F1 "
                  f"{row['test_macro_f1']:.3f}, {row['train_s_per_epoch']:.0f} s/epoch, "
                  f"{row['peak_rss_mb']} MB ({time.perf_counter() - t0:.0f} s)", flush=True)
    write_doc(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
