"""`make gpu-check`: everything that needs a CUDA GPU, in one run (under 8 minutes on one GPU
before the TA benchmark, which may take up to 7 more).

    python -m bench.gpu_check                 # on a machine with a CUDA device
    python -m bench.gpu_check --quick         # smaller benchmarks (about half the time)

Runs, on the first CUDA device (or --device cuda:N):

1. the smoke preset end to end with AMP (`gpta run --preset smoke --device cuda`, the real
   offline defaults: MiniLM student, Gemma 3 270M TA with local LoRA);
2. the scoring and training benchmarks with --device cuda (their own BENCHMARKS.md sections,
   scoring-cuda and training-cuda: AMP tolerance rule, HF Trainer on the chosen device, peak
   GPU memory per contender), and the TA generation benchmark (section ta-cuda: the local
   TA's fast path against stock generate at the engine's default request shape, 5 x 48);
3. the TUI latency benchmark, the student training on the GPU;
4. a check of every CUDA fix of issue 21 (in this process, small models): native-bf16 choice,
   fp16 resume of a checkpoint without scaler state, host syncs of scoring (classification,
   QA, multiple choice) and of a training step, out-of-memory handling (headless and the TUI
   controller: one line, memory given back), resume equivalence within the stated tolerance,
   LoRA adapters on the run's device, the device shown at start;
5. `gpta compare --executor ray --gpus-per-run 0.5`: two smoke runs side by side on the GPU
   as Ray tasks (issue 18), each finished on cuda with the GPU id Ray assigned.

The results go into BENCHMARKS.md: the section gpu-check-cuda (this script) plus the
benchmarks' own sections. Exit 0 when every hard check passes, 1 otherwise, 2 when there is
no CUDA device (one line). Further checks plug in through `EXTRA_CHECKS`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.common import BENCHMARKS_MD, REPO_ROOT, machine_info, markdown_table, progress, write_section

#: GPU resume tolerance (docs/ARCHITECTURE.md): largest per-step loss difference between a
#: resumed and an uninterrupted run on CUDA
RESUME_LOSS_TOLERANCE = 0.05
#: host syncs allowed for one scoring call, whatever its number of batches (the transfer of
#: the results, the first-token shortcut's one-time check, slack for library internals)
SCORING_SYNC_BUDGET = 4


@dataclass
class Check:
    name: str
    value: str
    ok: bool | None  # None: measured, no pass/fail


@dataclass
class Context:
    args: argparse.Namespace
    device: str
    work: Path
    checks: list[Check] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)

    def add(self, name: str, value: str, ok: bool | None = True) -> None:
        self.checks.append(Check(name, value, ok))
        mark = {True: "ok", False: "FAILED", None: "measured"}[ok]
        progress(f"  [{mark}] {name}: {value}")


#: Further checks (e.g. the Ray scale-out check): functions taking the Context, appended by
#: the modules that provide them; each adds its rows with ctx.add(...).
EXTRA_CHECKS: list[Callable[[Context], None]] = []


# ---- no GPU: one line -------------------------------------------------------------------------


def require_cuda(device: str) -> None:
    import torch

    from engine.device import cuda_unavailable_reason

    if not torch.cuda.is_available():
        why = cuda_unavailable_reason()
        detail = why.split(". Fix:")[0] if why else f"torch {torch.__version__} sees no CUDA device"
        print(f"gpu-check: no CUDA device ({detail}). Fix: run it on a machine with an NVIDIA "
              f"GPU and a CUDA build of torch (make setup TORCH_SPEC=...)", file=sys.stderr)
        raise SystemExit(2)
    from engine.device import resolve_device
    from engine.errors import UsageError

    try:
        resolve_device(device)
    except UsageError as exc:
        print(f"gpu-check: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


# ---- small models and data --------------------------------------------------------------------


def tiny_models(work: Path) -> dict[str, Path]:
    """2-layer random BERTs (classification, QA, multiple choice) and a 2-layer Llama, with the
    MiniLM tokenizer (offline)."""
    import torch
    from transformers import (AutoTokenizer, BertConfig, BertForMultipleChoice,
                              BertForQuestionAnswering, BertForSequenceClassification, LlamaConfig,
                              LlamaForCausalLM)

    from engine.resources import minilm_dir

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    bert = dict(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2,
                num_attention_heads=2, intermediate_size=128, max_position_embeddings=512)
    out = {}
    for name, cls, extra in (("cls", BertForSequenceClassification, {"num_labels": 3}),
                             ("qa", BertForQuestionAnswering, {}),
                             ("mc", BertForMultipleChoice, {})):
        torch.manual_seed(0)
        cls(BertConfig(**bert, **extra)).save_pretrained(work / name)
        tok.save_pretrained(work / name)
        out[name] = work / name
    torch.manual_seed(0)
    lm = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                     num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                     max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                     bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    LlamaForCausalLM(lm).save_pretrained(work / "lm")
    tok.chat_template = None
    tok.save_pretrained(work / "lm")
    out["lm"] = work / "lm"
    return out


@dataclass
class Data:
    task: str
    train: list[dict]
    validation: list[dict]
    test: list[dict]
    label_names: list[str] = field(default_factory=list)
    default_description: str = "generated rows"
    warnings: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[dict]:
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]


def qa_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        city = ["paris", "rome", "lima", "oslo"][i % 4]
        context = " ".join(["the weather was mild that year"] * (8 + i % 5)) + f" and she lived in {city} ."
        rows.append({"question": "where did she live ?", "context": context,
                     "answers": {"text": [city], "answer_start": [context.index(city)]}})
    return rows


def mc_rows(n: int) -> list[dict]:
    return [{"article": "the cat sat on the mat and looked at the bird " * (2 + i % 3),
             "question": "what did the cat look at ?",
             "options": ["the bird", "the dog", "the sky", "the mat"], "label": 0}
            for i in range(n)]


# ---- the checks -------------------------------------------------------------------------------


def check_precision(ctx: Context) -> None:
    """1: bf16 only where native (compute capability 8.0+), else fp16 with a GradScaler."""
    import torch

    from engine.device import amp_dtype, cuda_unavailable_reason, device_label

    major, minor = torch.cuda.get_device_capability(torch.device(ctx.device))
    dtype = amp_dtype(ctx.device)
    want = torch.bfloat16 if major >= 8 else torch.float16
    ctx.add("autocast dtype for compute capability " f"{major}.{minor}",
            str(dtype).replace("torch.", ""), dtype == want)
    ctx.add("device shown at start", device_label(ctx.device, True), True)
    ctx.add("no 'nvidia-smi but no CUDA' warning on a working GPU",
            "none" if cuda_unavailable_reason() is None else "WARNED",
            cuda_unavailable_reason() is None)


def check_fp16_resume(ctx: Context, models: dict[str, Path]) -> None:
    """2: a checkpoint written on the CPU (no scaler.pt) resumes in an fp16 run."""
    import torch

    from engine.config import StudentConfig
    from engine.student.classification import ClassificationStudent

    rows = [{"text": f"row {i} is {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(64)]
    data = Data("classification", rows[:48], rows[48:56], rows[56:], ["bad", "good"])
    cfg = StudentConfig(model=str(models["cls"]), max_length=32, batch_size=8, lr=1e-3)
    cpu = ClassificationStudent(cfg, data, epochs=1, seed=1, device="cpu")
    steps = cpu.train_epoch("p:", 1)
    next(steps), next(steps)
    cpu.save(ctx.work / "cpu-ckpt")
    gpu = ClassificationStudent(cfg, data, epochs=1, seed=1, device=ctx.device)
    gpu._amp_dtype = torch.float16  # the fp16 path, whatever this GPU's native precision
    gpu.scaler = gpu._new_scaler()
    gpu.load(ctx.work / "cpu-ckpt")
    losses = [r.loss for r in gpu.train_epoch("p:", 1, start_step=2)]
    finite = all(torch.isfinite(torch.tensor(losses)))
    ctx.add("fp16 run resumes a CPU checkpoint (no scaler.pt)",
            f"{len(losses)} steps, losses finite: {finite}, scale {gpu.scaler.get_scale():.0f}",
            finite and len(losses) == gpu.steps_per_epoch() - 2)


@contextlib.contextmanager
def count_syncs():
    """Count host-device synchronisations (torch's sync debug mode) inside the block."""
    import torch

    found: list[int] = [0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode("default")
            found[0] = sum("synchroniz" in str(w.message) for w in caught)


def check_syncs(ctx: Context, models: dict[str, Path]) -> None:
    """4: scoring moves its results once per call (QA once per batch), training steps do not
    wait for the GPU before the next batch is prepared."""
    from engine.config import StudentConfig
    from engine.student.classification import ClassificationStudent
    from engine.student.multiple_choice import MultipleChoiceStudent
    from engine.student.qa import QAStudent

    rows = [{"text": f"tweet number {i} " + "very " * (i % 20) + "nice", "label": i % 3}
            for i in range(400)]
    data = Data("classification", rows[:96], rows[96:356], rows[356:], ["a", "b", "c"])
    cls = ClassificationStudent(StudentConfig(model=str(models["cls"]), max_length=64,
                                              batch_size=16, eval_batch_size=32), data,
                                epochs=1, seed=1, device=ctx.device)
    prefixes = [f"prefix {i}:" for i in range(5)]
    cls.score_prefixes(prefixes[:1])  # the one-time shortcut check
    with count_syncs() as syncs:
        cls.score_prefixes(prefixes)
    batches = -(-len(prefixes) * len(data.validation) // 32)
    ctx.add(f"classification scoring, {batches} batches: host syncs",
            str(syncs[0]), syncs[0] <= SCORING_SYNC_BUDGET)
    steps = cls.train_epoch("p:", 1)
    next(steps)
    with count_syncs() as syncs:
        for _ in range(4):
            next(steps)
    ctx.add("training (bf16/fp32 path): host syncs in 4 steps (loss read by event)",
            str(syncs[0]), None)

    qa = Data("extractive_qa", qa_rows(24), qa_rows(60), qa_rows(8))
    student = QAStudent(StudentConfig(model=str(models["qa"]), max_length=64, doc_stride=16,
                                      batch_size=8, eval_batch_size=16, metric="f1"), qa,
                        epochs=1, seed=1, device=ctx.device)
    features = sum(len(student.features(p, student._split("validation"))) for p in prefixes)
    qa_batches = -(-features // 16)
    with count_syncs() as syncs:
        student.score_prefixes(prefixes)
    ctx.add(f"QA scoring, {features} features in {qa_batches} batches: host syncs "
            "(one per batch, was 3 per feature)", str(syncs[0]),
            syncs[0] <= qa_batches + SCORING_SYNC_BUDGET)

    mc = Data("multiple_choice", mc_rows(16), mc_rows(64), mc_rows(8))
    mcs = MultipleChoiceStudent(StudentConfig(model=str(models["mc"]), max_length=64,
                                              batch_size=8, eval_batch_size=32), mc,
                                epochs=1, seed=1, device=ctx.device)
    with count_syncs() as syncs:
        mcs.score_prefixes(prefixes)
    ctx.add("multiple-choice scoring: host syncs", str(syncs[0]), syncs[0] <= SCORING_SYNC_BUDGET)


def smoke_config(ctx: Context, name: str, **over: Any):
    from engine.config import build_config

    base = {"name": name, "mode": "baseline", "device": ctx.device,
            "data": {"train_size": 192, "val_size": 48, "test_size": 48},
            "loop": {"epochs": 2, "k": 6, "l": 3, "window": 2}}
    base.update(over)
    return build_config("smoke", overrides=base)


def check_resume(ctx: Context) -> None:
    """7: a run resumed on CUDA replays the uninterrupted one within the stated tolerance."""
    from engine import events as ev
    from engine.controls import Controls
    from engine.loop import Engine

    cfg = smoke_config(ctx, "resume")
    seen: list = []
    Engine(cfg, ctx.work / "straight", listeners=[seen.append]).run()
    want = {e.step: e.loss for e in seen if isinstance(e, ev.TrainStep)}
    controls = Controls()
    first: list = []

    def stop(event) -> None:
        first.append(event)
        if isinstance(event, ev.TrainStep) and event.step == 5:
            controls.stop()

    assert Engine(cfg, ctx.work / "resumed", controls=controls, listeners=[stop]).run().status == "stopped"
    state = json.loads(json.dumps([e for e in first if isinstance(e, ev.CheckpointSaved)][-1].state))
    second: list = []
    Engine(cfg, ctx.work / "resumed", resume=state, listeners=[second.append]).run()
    got = {e.step: e.loss for e in first + second if isinstance(e, ev.TrainStep)}
    gap = max(abs(got[s] - want[s]) for s in want)
    ctx.add(f"resume on CUDA: largest per-step loss difference over {len(want)} steps "
            f"(tolerance {RESUME_LOSS_TOLERANCE})", f"{gap:.2e}",
            set(got) == set(want) and gap <= RESUME_LOSS_TOLERANCE)


def _allocate_too_much(device: str):
    """A patched optimizer step that asks the GPU for more than it has: a real CUDA OOM."""
    import torch

    from engine.student.classification import ClassificationStudent

    original = ClassificationStudent._optimizer_step
    count = {"n": 0}

    def step(self, loss):
        count["n"] += 1
        if count["n"] == 3:
            total = torch.cuda.get_device_properties(torch.device(device)).total_memory
            torch.empty(total + 2**30, dtype=torch.uint8, device=device)
        return original(self, loss)

    return ClassificationStudent, original, step


def check_oom(ctx: Context) -> None:
    """6: out of GPU memory is one line naming the knob, and the memory comes back (headless
    engine, and the TUI's controller, which keeps the failed run's error)."""
    import torch

    from engine.oom import OutOfMemory
    from engine.loop import Engine
    from gpta_tui.run_control import RunController

    cls, original, step = _allocate_too_much(ctx.device)
    gc.collect()
    before = torch.cuda.memory_allocated(torch.device(ctx.device))
    cls._optimizer_step = step
    try:
        engine = Engine(smoke_config(ctx, "oom"), ctx.work / "oom")
        try:
            engine.run()
            error: BaseException | None = None
        except OutOfMemory as exc:
            error = exc
        one_line = error is not None and "\n" not in str(error) and "student.batch_size" in str(error)
        ctx.add("headless OOM: one line naming student.batch_size", str(error)[:140], one_line)
        del engine
        gc.collect()
        left = (torch.cuda.memory_allocated(torch.device(ctx.device)) - before) / 2**20
        ctx.add("memory allocated after the failed run (engine dropped)", f"{left:.1f} MiB", left < 1)

        cls._optimizer_step = _allocate_too_much(ctx.device)[2]
        controller = RunController(ctx.work / "tui-home", name="oom-tui",
                                   config=smoke_config(ctx, "oom-tui"))
        controller.start()
        controller.join()
        gc.collect()
        left = (torch.cuda.memory_allocated(torch.device(ctx.device)) - before) / 2**20
        ctx.add("TUI controller after an OOM: error kept without frames, memory given back",
                f"{type(controller.error).__name__}, {left:.1f} MiB still allocated",
                isinstance(controller.error, OutOfMemory) and left < 1)
    finally:
        cls._optimizer_step = original


def check_adapter_device(ctx: Context, models: dict[str, Path]) -> None:
    """8: a LoRA adapter lands on the run's device (a CPU run on a GPU box keeps it on the CPU)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from engine.ta.local import LocalTA

    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(models["lm"]),
                          LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(ctx.work / "adapter")
    for device in ("cpu", ctx.device):
        ta = LocalTA(str(models["lm"]), device=device, max_new_tokens=4)
        try:
            ta.use_model(str(ctx.work / "adapter"))
            where = sorted({str(p.device) for p in ta.model.parameters()})
        finally:
            ta.close()
        want = "cpu" if device == "cpu" else f"cuda:{_index(ctx.device)}"
        ctx.add(f"LoRA adapter of a {device} run lands on", ", ".join(where), where == [want])


def _index(device: str) -> int:
    import torch

    index = torch.device(device).index
    return torch.cuda.current_device() if index is None else index


# ---- subprocesses: smoke run and benchmarks ---------------------------------------------------


def run_command(ctx: Context, label: str, argv: list[str], timeout: float,
                env: dict[str, str] | None = None) -> tuple[int, str, float]:
    progress(f"- {label}: {' '.join(argv)}")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           **(env or {})}
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code, output = 124, f"timed out after {timeout:.0f} s\n{exc.stdout or ''}{exc.stderr or ''}"
    seconds = time.perf_counter() - start
    if not isinstance(output, str):
        output = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
    if code != 0:  # the temporary folder goes away: show the end of the output now
        progress("\n".join(f"    | {line}" for line in output.splitlines()[-30:]))
    return code, output, seconds


def check_smoke(ctx: Context) -> None:
    py = sys.executable
    code, out, seconds = run_command(
        ctx, "smoke preset on CUDA with AMP",
        [py, "-m", "gpta_tui.cli", "--home", str(ctx.work / "smoke-home"), "run", "--preset",
         "smoke", "--device", ctx.device, "--name", "gpu-smoke"], timeout=300)
    shown = re.search(r"device (cuda:\d+ \([^)]*\))", out)
    ctx.add("gpta run --preset smoke --device cuda (exit code, wall time)",
            f"exit {code}, {seconds:.0f} s, device {shown.group(1) if shown else 'not shown'}",
            code == 0 and shown is not None and "autocast" in shown.group(1))
    test = re.search(r"test accuracy ([0-9.]+)", out)
    if test:
        ctx.add("smoke run test accuracy", test.group(1), None)


def check_ray_compare(ctx: Context) -> None:
    """A 2-run `gpta compare --executor ray` on the GPU (issue 18): two smoke runs at half a GPU
    each on a local Ray instance; both must finish on cuda with the GPU Ray gave them."""
    import json

    from sessions.store import SessionStore

    py = sys.executable
    home = ctx.work / "ray-home"
    index = int(ctx.device.partition(":")[2] or 0)
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    gpu = visible[index] if index < len(visible) else str(index)  # the checked GPU, for Ray
    cpus = max(1, min(4, (os.cpu_count() or 2) // 2))
    code, out, seconds = run_command(
        ctx, "2-run comparison as Ray tasks on the GPU",
        [py, "-m", "gpta_tui.cli", "--home", str(home), "compare", "--name", "gpu-ray",
         "--preset", "smoke", "--modes", "baseline,gpta", "--seeds", "1", "--executor", "ray",
         "--gpus-per-run", "0.5", "--cpus-per-run", str(cpus)], timeout=420,
        env={"CUDA_VISIBLE_DEVICES": gpu})
    manifest_path = home / "compare" / "gpu-ray" / "manifest.json"
    runs = json.loads(manifest_path.read_text())["runs"] if manifest_path.is_file() else {}
    devices, gpu_ids = [], []
    store = SessionStore(home)
    for name, entry in sorted(runs.items()):
        gpu_ids.append(f"{name}: gpu {','.join(entry.get('gpu_ids') or []) or 'none'} "
                       f"on {entry.get('node', '?')}, {entry.get('wall_s', 0):.0f} s, {entry.get('status')}")
        if store.exists(name):
            with store.open(name) as handle:
                devices.append(str(handle.record().get("device", "")))
    ok = (code == 0 and len(runs) == 2 and all(e.get("status") == "finished" for e in runs.values())
          and all(e.get("gpu_ids") for e in runs.values()) and len(devices) == 2
          and all(d.startswith("cuda") for d in devices))
    ctx.add("gpta compare --executor ray --gpus-per-run 0.5 (2 smoke runs: exit code, wall time)",
            f"exit {code}, {seconds:.0f} s; " + "; ".join(gpu_ids) + f"; devices {devices}", ok)


def check_benchmarks(ctx: Context) -> None:
    py = sys.executable
    md = ["--md", str(ctx.args.md)] + (["--no-write"] if ctx.args.no_write else [])
    repeats = ["--repeats", "2" if ctx.args.quick else "3"]
    for label, argv, timeout in (
            ("scoring benchmark", [py, "-m", "bench.scoring", "--device", ctx.device, *repeats,
                                   "--eval-batch-size", "256", *md], 240),
            ("training benchmark", [py, "-m", "bench.training", "--device", ctx.device, *repeats,
                                    *md], 300),
            # the local TA (Gemma 3 270M; the first start dequantizes it) at the engine's
            # default request shape, fast path against stock generate
            ("TA generation benchmark", [py, "-m", "bench.ta", "--device", ctx.device, "--shapes",
                                         "5x48", "--no-ttft", *md], 420)):
        code, out, seconds = run_command(ctx, label, argv, timeout)
        failed = [line for line in out.splitlines() if "| NO" in line or "NO:" in line]
        ctx.add(f"{label} --device {ctx.device}",
                f"exit {code}, {seconds:.0f} s" + (f"; {failed[0].strip()[:120]}" if failed else ""),
                code == 0 and not failed)
    code, out, seconds = run_command(
        ctx, "TUI latency benchmark",
        [py, "-m", "bench.tui_latency", "--presses", "20" if ctx.args.quick else "40",
         "--train-size", "9600"], timeout=240)
    lines = [line for line in out.splitlines() if "latency over" in line or "target p95" in line]
    ctx.add("TUI key latency while the student trains on the GPU",
            " / ".join(lines) or f"exit {code}: no result", None if code == 0 and lines else False)


# ---- report -----------------------------------------------------------------------------------


def publish(ctx: Context, started: float) -> int:
    import datetime as dt

    failed = [c for c in ctx.checks if c.ok is False]
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    machine = machine_info(ctx.device)
    lines = ["## GPU check: the CUDA fixes of issue 21 (cuda)", "", f"- date: {when}",
             "- command: `make gpu-check` (python -m bench.gpu_check"
             + (" --quick" if ctx.args.quick else "") + ")"]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    if hasattr(os, "getloadavg"):
        lines.append("- load average at end: " + " / ".join(f"{x:.2f}" for x in os.getloadavg()))
    lines += [f"- total wall time: {time.perf_counter() - started:.0f} s", ""]
    rows = [[c.name, c.value.replace("|", "/"), {True: "ok", False: "**FAILED**", None: "-"}[c.ok]]
            for c in ctx.checks]
    lines.append(markdown_table(["check", "result", "status"], rows))
    lines += ["", f"- verdict: {'all hard checks passed' if not failed else f'{len(failed)} FAILED'}; "
              "the scoring and training figures are in their own sections (scoring-cuda, "
              "training-cuda)"]
    body = "\n".join(lines)
    print("\n" + body)
    if not ctx.args.no_write:
        write_section(ctx.args.md, "gpu-check-cuda", body)
        print(f"\nupdated section 'gpu-check-cuda' of {ctx.args.md}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0", help="cuda or cuda:N")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and key presses")
    parser.add_argument("--md", type=Path, default=BENCHMARKS_MD, help="the markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--skip", default="", help="comma-separated steps to skip: "
                        "smoke, ray, bench, fixes")
    args = parser.parse_args(argv)
    if not args.device.startswith("cuda"):
        print(f"gpu-check: --device {args.device} is not a CUDA device. Fix: use cuda or cuda:N",
              file=sys.stderr)
        return 2
    require_cuda(args.device)
    from engine.device import resolve_device

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpta-gpu-check-") as tmp:
        ctx = Context(args, resolve_device(args.device), Path(tmp))
        steps: list[tuple[str, Callable[[], None]]] = []
        if "fixes" not in skip:
            models = tiny_models(ctx.work)
            steps += [("precision", lambda: check_precision(ctx)),
                      ("fp16 resume", lambda: check_fp16_resume(ctx, models)),
                      ("host syncs", lambda: check_syncs(ctx, models)),
                      ("resume tolerance", lambda: check_resume(ctx)),
                      ("out of memory", lambda: check_oom(ctx)),
                      ("adapter device", lambda: check_adapter_device(ctx, models))]
        if "smoke" not in skip:
            steps.append(("smoke", lambda: check_smoke(ctx)))
        if "ray" not in skip:
            steps.append(("ray compare", lambda: check_ray_compare(ctx)))
        if "bench" not in skip:
            steps.append(("benchmarks", lambda: check_benchmarks(ctx)))
        steps += [(getattr(extra, "__name__", "extra"), lambda extra=extra: extra(ctx))
                  for extra in EXTRA_CHECKS]
        for name, step in steps:
            progress(f"== {name}")
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - one failed step must not hide the others
                progress(traceback.format_exc())
                ctx.add(f"{name}: step raised", f"{type(exc).__name__}: "
                        + " ".join(str(exc).split())[:160], False)
        return publish(ctx, started)


if __name__ == "__main__":
    sys.exit(main())
