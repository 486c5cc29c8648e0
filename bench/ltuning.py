"""Full fine-tuning vs L-Tuning (lt-prefix, lt-prompt) on the offline default data and model.

    python -m bench.ltuning                       # twitter-sentiment, MiniLM, ~10 min on 2 cores
    python -m bench.ltuning --train-size 1000 --epochs 3 --threads 2
    python -m bench.ltuning --tunings lt-prefix --no-write

Every student is built by `engine.student.build_student` from the same seeded splits and trained
with the same text prefix (empty by default, as in the baseline mode) for the same number of
epochs. Reported per tuning: trainable / total parameters, checkpoint sizes (weights only, and
with optimizer + scheduler as the GPTA loop saves them), training wall time and rows per second,
validation metrics after every epoch, test metrics, and the time to score a batch of 5 text
prefixes on the validation split (the hot path of GPTA's history collection; L-Tuning scores
every label, so it costs about K forward passes per row).

Results go to docs/LTUNING_RESULTS.md (the whole file is rewritten) unless --no-write.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "LTUNING_RESULTS.md"
TUNINGS = ("full", "lt-prefix", "lt-prompt")
SCORED_PREFIXES = [
    "Classify the sentiment of this tweet:",
    "Is the mood of this tweet negative, neutral or positive?",
    "Tweet:",
    "Read the tweet carefully and decide its sentiment.",
    "Sentiment (negative / neutral / positive) of the following text:",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ltuning", description=__doc__.split("\n")[0])
    p.add_argument("--tunings", default=",".join(TUNINGS),
                   help="comma-separated subset of full, lt-prefix, lt-prompt")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--dataset", default="twitter-sentiment")
    p.add_argument("--train-size", type=int, default=600)
    p.add_argument("--val-size", type=int, default=100)
    p.add_argument("--test-size", type=int, default=300)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--lr-full", type=float, default=5e-5, help="learning rate of full fine-tuning")
    p.add_argument("--lr-lt", type=float, default=3e-3, help="learning rate of the L-Tuning maps")
    p.add_argument("--negatives", type=int, default=1)
    p.add_argument("--verbalizer", default="The text has {label} sentiment.")
    p.add_argument("--prefix", default="", help="GPTA text prefix used for training and testing")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    args.tunings = [t.strip() for t in args.tunings.split(",") if t.strip()]
    unknown = [t for t in args.tunings if t not in TUNINGS]
    if unknown or not args.tunings:
        p.error(f"--tunings: use names from {', '.join(TUNINGS)}")
    return args


def machine_info(device: str) -> dict[str, str]:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from engine.device import device_label

    return {"cpu": cpu, "cores": str(os.cpu_count()), "torch threads": str(torch.get_num_threads()),
            "device": device_label(device), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "os": f"{platform.system()} {platform.release()}"}


def dir_bytes(path: Path, names: set[str] | None = None) -> int:
    return sum(f.stat().st_size for f in path.iterdir()
               if f.is_file() and (names is None or f.name in names))


def counts(student: Any) -> tuple[int, int]:
    params = list(student.model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def run_one(tuning: str, args: argparse.Namespace, data: Any, device: str) -> dict[str, Any]:
    from engine.config import RunConfig
    from engine.metrics import classification_metrics
    from engine.student import build_student

    cfg = RunConfig(seed=args.seed)
    cfg.loop.epochs = args.epochs
    s = cfg.student
    s.model, s.tuning, s.max_length = args.model, tuning, args.max_length
    s.batch_size, s.eval_batch_size = args.batch_size, args.eval_batch_size
    s.negatives, s.verbalizer = args.negatives, args.verbalizer
    s.lr = args.lr_full if tuning == "full" else args.lr_lt
    cfg.validate()
    started = time.perf_counter()
    student = build_student(cfg, data, device)
    result: dict[str, Any] = {"tuning": tuning, "lr": s.lr, "load_s": time.perf_counter() - started}
    result["trainable"], result["total"] = counts(student)
    train_s, val = 0.0, []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        losses = [r.loss for r in student.train_epoch(args.prefix, epoch)]
        train_s += time.perf_counter() - t0
        metrics = student.evaluate(args.prefix, "validation")
        val.append(metrics)
        print(f"  {tuning} epoch {epoch}: mean loss {sum(losses) / len(losses):.4f}, "
              f"val accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}",
              flush=True)
    result.update(train_s=train_s, rows_per_s=len(data.train) * args.epochs / train_s, val=val)
    t0 = time.perf_counter()
    predictions = student.prefix_logits([args.prefix], "test")[0].argmax(-1).tolist()
    result["test_s"] = time.perf_counter() - t0
    result["test"] = classification_metrics([row["label"] for row in data.test], predictions)
    result["top_share"] = max(Counter(predictions).values()) / len(predictions)
    t0 = time.perf_counter()
    student.score_prefixes(SCORED_PREFIXES, "validation")
    result["score_s"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        weights, current = Path(tmp) / "weights", Path(tmp) / "current"
        student.save(weights, training_state=False)
        t0 = time.perf_counter()
        student.save(current, training_state=True)
        result["save_s"] = time.perf_counter() - t0
        result["weights_bytes"] = dir_bytes(weights, {"model.safetensors", "ltuning.safetensors"})
        result["checkpoint_bytes"] = dir_bytes(current)
    result["wall_s"] = time.perf_counter() - started
    return result


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def render(results: list[dict], args: argparse.Namespace, info: dict[str, str], wall_s: float,
           data: Any) -> str:
    from engine.student.ltuning import VIRTUAL_TOKENS

    command = "python -m bench.ltuning " + " ".join(sys.argv[1:])
    lines = [
        "# L-Tuning vs full fine-tuning",
        "",
        "Written by `bench/ltuning.py`; rerun it to refresh this file. Students: "
        "`engine/student/classification.py` (full) and `engine/student/ltuning.py` (lt-prefix, "
        "lt-prompt: Kowsher et al. 2024, arXiv 2402.01643).",
        "",
        f"- Command: `{command.strip()}`",
        f"- Date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; "
        f"whole benchmark {wall_s / 60:.1f} min",
        "- Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()),
        f"- Data: {args.dataset} ({', '.join(data.label_names)}), seed {args.seed}: "
        f"{len(data.train)} train / {len(data.validation)} validation / {len(data.test)} test rows",
        f"- Student: {args.model}, max_length {args.max_length}, batch {args.batch_size}, "
        f"{args.epochs} epochs, text prefix {args.prefix!r}; lr {args.lr_full:g} (full) / "
        f"{args.lr_lt:g} (L-Tuning), {args.negatives} wrong label(s) per example, "
        f"verbalizer {args.verbalizer!r}, {VIRTUAL_TOKENS} virtual tokens",
        "",
        "| tuning | trainable params | of total | weights | checkpoint (+optimizer) "
        "| train time | train rows/s | val accuracy by epoch | test accuracy | test macro-F1 "
        "| top class share | score 5 prefixes |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        val = " → ".join(f"{m['accuracy']:.3f}" for m in r["val"])
        lines.append(
            f"| {r['tuning']} | {r['trainable']:,} | {100 * r['trainable'] / r['total']:.1f}% "
            f"| {mb(r['weights_bytes'])} | {mb(r['checkpoint_bytes'])} | {r['train_s']:.0f} s "
            f"| {r['rows_per_s']:.1f} | {val} | {r['test']['accuracy']:.3f} "
            f"| {r['test']['macro_f1']:.3f} | {r['top_share']:.0%} | {r['score_s']:.1f} s |")
    majority = max(sum(1 for row in data.test if row["label"] == k)
                   for k in range(len(data.label_names))) / len(data.test)
    lines += [
        "",
        f"Majority-class test accuracy: {majority:.3f}; \"top class share\" is the share of "
        "test predictions that go to the most often predicted label (100%: one label for every "
        "row). \"score 5 prefixes\" is "
        f"`score_prefixes` of 5 text prefixes on the {len(data.validation)} validation rows "
        "(what GPTA does for every TA request). Rows/s counts training examples; an L-Tuning "
        f"example is {1 + min(args.negatives, len(data.label_names) - 1)} (text, label) pairs. "
        "Weights: the trainable state a checkpoint stores (full: the whole model; L-Tuning: "
        "label maps + head, the frozen backbone is the configured model). Wall times come from a "
        "machine shared with other work and vary by tens of percent between runs.",
        "",
        f"Caveats: one seed, {len(data.train)} training rows and {args.epochs} epochs, one "
        "learning rate per method (not tuned per method beyond a quick check), accuracies on "
        f"{len(data.test)} test rows carry a standard error of about "
        f"{100 * (0.25 / max(1, len(data.test))) ** 0.5:.0f} points.",
        "",
    ]
    full = next((r for r in results if r["tuning"] == "full"), None)
    if full is not None:
        for r in results:
            if r is full:
                continue
            accuracy = r["test"]["accuracy"] - full["test"]["accuracy"]
            macro_f1 = r["test"]["macro_f1"] - full["test"]["macro_f1"]
            lines.append(
                f"- {r['tuning']}: {r['trainable'] / full['trainable']:.1%} of full fine-tuning's "
                f"trainable parameters, {r['rows_per_s'] / full['rows_per_s']:.2f}x its training "
                f"throughput, test accuracy {accuracy:+.3f} and macro-F1 {macro_f1:+.3f} against "
                f"it, prefix scoring {r['score_s'] / full['score_s']:.1f}x as long.")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from engine.config import DataConfig
    from engine.data import load_task_data
    from engine.device import resolve_device

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    started = time.perf_counter()
    data = load_task_data(DataConfig(dataset=args.dataset, train_size=args.train_size,
                                     val_size=args.val_size, test_size=args.test_size), args.seed)
    info = machine_info(device)
    print(f"{len(data.train)} train / {len(data.validation)} val / {len(data.test)} test rows; "
          f"{info['cpu']}, {info['torch threads']} threads, {info['device']}", flush=True)
    results = []
    for tuning in args.tunings:
        results.append(run_one(tuning, args, data, device))
        r = results[-1]
        print(f"{tuning}: {r['trainable']:,} trainable params, {r['rows_per_s']:.1f} rows/s, "
              f"test accuracy {r['test']['accuracy']:.3f} ({r['wall_s']:.0f} s)", flush=True)
    text = render(results, args, info, time.perf_counter() - started, data)
    print()
    print(text)
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_name(args.output.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        shutil.move(str(tmp), args.output)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
