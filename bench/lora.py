"""The local LoRA fine-tune step on real dialogue windows: float32 against bf16 autocast.

    python -m bench.lora --threads 1            # Gemma 3 270M (offline default), CPU

The training examples are the engine's own dialogue windows (`engine.history.build_windows`
over a smoke-like history, rendered by `engine.prompts.window_example` and encoded as the
local fine-tune backend encodes them). Each contender trains a fresh LoRA adapter (the
backend's defaults: r, alpha, dropout, lr, batch size, all-linear targets) from the same seed
on the same batches with the backend's own `_train_step`; reported: CPU and wall seconds per
step (median), the ratio, the loss curves and their largest difference, and how much of each
padded batch is padding (what packing windows could save).
"""

from __future__ import annotations

import random
import time
from typing import Any

from bench.common import (Report, base_parser, machine_info, median, prepare, progress, publish,
                          run_main)
from bench.ta import DESCRIPTION, FOUND, LABELS


def window_examples(window: int) -> list[list[dict]]:
    """The fine-tune conversations of one epoch's windows over the FOUND history."""
    from engine import prompts
    from engine.history import build_windows

    system = prompts.system_prompt("classification", "BERT", "[CLS]prefix + context", LABELS)
    pairs = sorted(FOUND, key=lambda p: p[1])
    return [prompts.window_example(system, DESCRIPTION, pairs_, target, label_names=LABELS)["messages"]
            for pairs_, target in build_windows(pairs, window)]


def train(model: Any, tokenizer: Any, encoded: list, steps: int, batch_size: int, amp: Any,
          seed: int) -> dict:
    """`steps` optimizer steps of a fresh LoRA adapter; the adapter is removed afterwards."""
    import torch
    from peft import LoraConfig, get_peft_model

    from engine.config import FinetuneConfig
    from engine.finetune.local_lora import _train_step

    cfg = FinetuneConfig()
    torch.manual_seed(seed)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    peft = get_peft_model(model, lora)
    try:
        peft.train()
        params = [p for p in peft.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr)
        order = list(range(len(encoded)))
        random.Random(seed).shuffle(order)
        pad_id = tokenizer.pad_token_id or 0
        out: dict = {"cpu": [], "wall": [], "loss": [], "padding": []}
        for step in range(steps):
            batch = [encoded[order[(step * batch_size + j) % len(order)]] for j in range(batch_size)]
            lengths = [len(p) + len(t) for p, t in batch]
            out["padding"].append(1 - sum(lengths) / (len(batch) * max(lengths)))
            wall, cpu = time.perf_counter(), time.process_time()
            loss, _ = _train_step(peft, optimizer, params, batch, pad_id, "cpu", amp)
            out["cpu"].append(time.process_time() - cpu)
            out["wall"].append(time.perf_counter() - wall)
            out["loss"].append(loss)
            progress(f"  step {step + 1}/{steps}: loss {loss:.4f}, {out['cpu'][-1]:.1f} CPU s")
    finally:
        peft.unload()
        model.eval()
        model.requires_grad_(False)
    return out


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0], repeats=1)
    parser.add_argument("--model", default="gemma-3-270m", help="TA model (alias, directory or hub name)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per contender")
    parser.add_argument("--window", type=int, default=3, help="pairs per dialogue window")
    args = parser.parse_args()
    device = prepare(args)
    machine = machine_info(device)
    import torch

    from engine.config import FinetuneConfig
    from engine.finetune.local_lora import _truncate
    from engine.ta.packed import cpu_has_bf16
    from engine.ta.local import LocalTA, encode_training_example

    progress(f"loading {args.model}")
    ta = LocalTA(args.model, device=device)
    conversations = window_examples(args.window)
    encoded = [_truncate(*encode_training_example(ta.tokenizer, m, ta.chat), 1024) for m in conversations]
    batch_size = FinetuneConfig().batch_size
    results = {}
    for name, amp in (("float32", None), ("bf16 autocast", torch.bfloat16)):
        progress(name)
        results[name] = train(ta.model, ta.tokenizer, encoded, args.steps, batch_size, amp, args.seed)
    base, fast = results["float32"], results["bf16 autocast"]
    # the first step of each pays one-time allocation; the median of the rest is the step
    rest = slice(1, None) if args.steps > 2 else slice(None)
    step_cpu = {k: median(v["cpu"][rest]) for k, v in results.items()}
    step_wall = {k: median(v["wall"][rest]) for k, v in results.items()}
    gaps = [abs(a - b) for a, b in zip(base["loss"], fast["loss"])]
    report = Report("lora", "Local LoRA fine-tune step: float32 against bf16 autocast", device)
    report.settings = {"model": args.model, "examples (dialogue windows)": len(encoded),
                       "window": args.window, "batch size": batch_size, "steps": args.steps,
                       "tokens per example": f"{min(len(p) + len(t) for p, t in encoded)}-"
                                             f"{max(len(p) + len(t) for p, t in encoded)}",
                       "CPU bf16": cpu_has_bf16()}
    report.table(["contender", "s per step, CPU (median)", "s per step, wall (median)",
                  "speed vs float32, CPU", "losses"],
                 [[k, f"{step_cpu[k]:.1f}", f"{step_wall[k]:.1f}", f"{step_cpu['float32'] / step_cpu[k]:.2f}x",
                   " / ".join(f"{x:.5f}" for x in v["loss"])] for k, v in results.items()])
    report.table(["check", "value"], [
        ["largest abs(loss float32 - loss bf16) over the steps", f"{max(gaps):.5f}"],
        ["largest relative loss difference", f"{max(g / abs(a) for g, a in zip(gaps, base['loss'])):.2%}"],
        ["padding share of the padded batches (mean)", f"{sum(base['padding']) / len(base['padding']):.1%}"],
    ])
    report.notes += [
        "both contenders train a fresh adapter from the same seed on the same batches, one after "
        "the other (not interleaved: an optimizer's state runs through its steps)",
        "first step excluded from the medians when there are 3 or more",
    ]
    publish(report, args, machine)


if __name__ == "__main__":
    run_main(main)
