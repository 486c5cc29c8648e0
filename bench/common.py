"""What every benchmark shares: arguments, machine facts, timing, tables and BENCHMARKS.md.

A script builds its numbers, then calls `publish(...)`, which prints the table and replaces
(or appends) the script's own section of BENCHMARKS.md, delimited by HTML comments:

    <!-- bench:scoring-cpu:start -->
    ...
    <!-- bench:scoring-cpu:end -->

Sections are keyed by script and device kind, so CPU and GPU figures live side by side and a
rerun only replaces its own section; text outside the markers is never touched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import re
import resource
import shlex
import statistics
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

# Benchmarks never touch the network: the defaults ship in local packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = REPO_ROOT / "BENCHMARKS.md"
MD_HEADER = """# Benchmarks

Rerun any section with the command it shows (`make bench` runs scoring and training). Each
script measures its contenders in one process, interleaved, and reports the median of the
repeats; sections are rewritten by the scripts, text outside them is kept.
"""


# ---- arguments and environment -------------------------------------------------------


def base_parser(description: str, repeats: int = 3) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=repeats,
                        help="timed repeats per contender; the median is reported")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default, one per core)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--md", type=Path, default=BENCHMARKS_MD, help="the markdown file to update")
    parser.add_argument("--tag", default="",
                        help="suffix for this run's section key, to keep it beside the default "
                             "run's (e.g. --tag threads2 writes scoring-cpu-threads2)")
    return parser


def prepare(args: argparse.Namespace) -> str:
    """Apply --threads, quiet the libraries and return the resolved device ("cpu", "cuda:0"...)."""
    import torch
    from transformers.utils import logging as hf_logging

    from engine.device import resolve_device
    from engine.errors import UsageError

    if args.repeats < 1:
        raise UsageError(f"--repeats {args.repeats} is below 1", "use --repeats 1 or more")
    if args.threads < 0:
        raise UsageError(f"--threads {args.threads} is negative", "use 0 (default) or a positive count")
    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return resolve_device(args.device)


def run_main(main: Callable[[], None]) -> None:
    """Run a script's main; the project's errors end it with their one-line message."""
    from engine.errors import GptaError, UsageError

    try:
        main()
    except (GptaError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2 if isinstance(exc, UsageError) else 1) from None


def command_line() -> str:
    """The command that reproduces this run, e.g. `python -m bench.scoring --k 50`."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    module = spec.name if spec is not None else Path(sys.argv[0]).stem
    return " ".join(["python -m", module, *map(shlex.quote, sys.argv[1:])])


# ---- machine and versions ------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict[str, str]:
    import psutil
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "CPU": f"{cpu_model()} ({os.cpu_count()} logical cores, {usable} usable, "
               f"torch threads {torch.get_num_threads()})",
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "device": device,
    }
    if device.startswith("cuda"):
        from engine.device import amp_dtype

        props = torch.cuda.get_device_properties(torch.device(device))
        dtype = amp_dtype(device, True)
        info["GPU"] = (f"{props.name} ({props.total_memory / 2**30:.0f} GiB), "
                       f"AMP {str(dtype).replace('torch.', '')}")
    if hasattr(os, "getloadavg"):
        info["load average at start (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def versions() -> dict[str, str]:
    import torch
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__}
    try:
        import accelerate

        out["accelerate"] = accelerate.__version__
    except ImportError:
        pass
    return out


def device_kind(device: str) -> str:
    return device.split(":", 1)[0]


# ---- timing and memory ---------------------------------------------------------------


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(torch.device(device))


@contextmanager
def stopwatch(device: str = "cpu") -> Iterator[list[float]]:
    """`with stopwatch(dev) as t: ...` then `t == [wall seconds, CPU seconds]` of the block.

    CPU seconds are this process's user+system time (all its threads). On a shared machine
    they measure the work done with little of the noise other processes add to wall time,
    as long as torch runs one thread (more threads add their spin-waits). CUDA work queued
    inside the block is waited for."""
    result: list[float] = []
    synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield result
    finally:
        synchronize(device)
        result.extend([time.perf_counter() - start, time.process_time() - cpu])


@dataclass
class Timings:
    """Wall and CPU seconds of the repeats of one contender."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """`median (min-max)` of a list of seconds, for tables."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def speed_rows(timings: dict[str, "Timings"], baseline: str, work: float
               ) -> list[list[str]]:
    """Table rows: name, wall and CPU seconds (median, min-max), work per wall second, and
    the speed relative to `baseline` (its median time / this one's) by wall and by CPU time."""
    base = timings[baseline]
    rows = []
    for name, t in timings.items():
        rows.append([name, spread(t.wall), spread(t.cpu), f"{work / median(t.wall):.1f}",
                     f"{median(base.wall) / median(t.wall):.2f}x",
                     f"{median(base.cpu) / median(t.cpu):.2f}x"])
    return rows


def ratio(numerator: "Timings", denominator: "Timings") -> tuple[float, float]:
    """(wall, CPU) ratios of median times: numerator / denominator."""
    return (median(numerator.wall) / median(denominator.wall),
            median(numerator.cpu) / median(denominator.cpu))


def verdict(ratios: tuple[float, float], target: float) -> str:
    """"2.31x wall, 2.28x CPU: met" (met / NOT met / mixed, judged on both measures)."""
    wall, cpu = ratios
    status = ("met" if min(wall, cpu) >= target else "NOT met" if max(wall, cpu) < target
              else "mixed")
    return f"{wall:.2f}x wall, {cpu:.2f}x CPU: {status}"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (getrusage; KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def gpu_peak_mib(device: str) -> float | None:
    """Peak CUDA memory allocated on `device` since the last `reset_gpu_peak` (None off CUDA)."""
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20


def reset_gpu_peak(device: str) -> None:
    """Start a new peak-memory window on `device`: without it every contender would report
    the largest peak of all the runs before it. (Allocated memory, not the allocator's cache:
    the cache is left alone so timings do not pay for fresh allocations.)"""
    if not device.startswith("cuda"):
        return
    import torch

    torch.cuda.reset_peak_memory_stats(torch.device(device))


class GpuPeaks:
    """Peak CUDA memory per contender: `with peaks.measure(name): ...` (nothing off CUDA)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.mib: dict[str, list[float]] = defaultdict(list)

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        reset_gpu_peak(self.device)
        try:
            yield
        finally:
            peak = gpu_peak_mib(self.device)
            if peak is not None:
                self.mib[name].append(peak)

    def column(self, names: Sequence[str]) -> list[str]:
        """"max MiB over the repeats" per name, for a table column."""
        return [f"{max(self.mib[n]):.0f}" if self.mib.get(n) else "-" for n in names]


# ---- tables and BENCHMARKS.md --------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


@dataclass
class Report:
    """One benchmark's result: a titled section of tables and notes."""

    key: str                       # "scoring": the section key is f"{key}-{device kind}"
    title: str
    device: str
    tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.tables.append(markdown_table(headers, rows))

    def section(self, machine: dict[str, str], when: str, command: str) -> str:
        kind = device_kind(self.device)
        lines = [f"## {self.title} ({kind})", ""]
        lines += [f"- date: {when}", f"- command: `{command}`"]
        lines += [f"- {k}: {v}" for k, v in machine.items()]
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
        if self.settings:
            lines.append("- settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items()))
        for table in self.tables:
            lines += ["", table]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def write_section(path: Path, key: str, body: str) -> None:
    """Replace the section `key` of the markdown file (or append it; create the file)."""
    start, end = f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else MD_HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def publish(report: Report, args: argparse.Namespace, machine: dict[str, str]) -> str:
    """Print the report and, unless --no-write, update its section of the markdown file."""
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    if hasattr(os, "getloadavg"):
        machine = {**machine, "load average at end": " / ".join(f"{x:.2f}" for x in os.getloadavg())}
    body = report.section(machine, when, command_line())
    print()
    print(body)
    if not args.no_write:
        key = f"{report.key}-{device_kind(report.device)}" + (f"-{args.tag}" if args.tag else "")
        write_section(args.md, key, body)
        print(f"\nupdated section {key!r} of {args.md}")
    return body


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- the offline defaults: data and prefixes -----------------------------------------


def default_task_data(train_size: int, val_size: int, test_size: int, seed: int):
    """The built-in twitter-sentiment task (offline default), seeded splits of these sizes."""
    from engine.config import DataConfig
    from engine.data import load_task_data

    cfg = DataConfig(dataset="twitter-sentiment", train_size=train_size, val_size=val_size,
                     test_size=test_size)
    return load_task_data(cfg, seed)


_OPENERS = ["Classify", "Decide", "Determine", "Identify", "Judge", "Read the tweet and state",
            "As a social media analyst, label", "Tell me", "Carefully assess", "Rate"]
_OBJECTS = ["the sentiment of this tweet", "whether this tweet is negative, neutral or positive",
            "the mood of the author", "how the customer feels about the airline",
            "the attitude the writer expresses", "the emotional tone of the message",
            "if the author is happy, unhappy or indifferent",
            "the polarity of the opinion in this post", "the feeling behind these words"]
_EXTRAS = ["Consider sarcasm.", "Ignore @mentions and links.", "Hashtags can carry sentiment.",
           "Answer negative, neutral or positive.", "Complaints about delays are negative.",
           "Plain facts and news are neutral.", "Praise and thanks are positive.",
           "Focus on the author's own opinion.", "Emojis and exclamation marks matter.",
           "Questions without emotion are neutral.", "Swearing usually signals anger."]


def synthetic_prefixes(k: int, seed: int) -> list[str]:
    """`k` distinct TA-like prefixes of 4 to ~35 words, deterministic for `seed`."""
    rng = random.Random(f"bench-prefixes|{seed}")
    out: dict[str, None] = {}
    while len(out) < k:
        extras = rng.sample(_EXTRAS, rng.choice([0, 0, 1, 1, 2, 3, 4]))
        text = f"{rng.choice(_OPENERS)} {rng.choice(_OBJECTS)}:"
        out.setdefault(" ".join([text, *extras]) if extras else text)
    return list(out)


def ta_for(kind: str) -> str:
    """Check that the TA backend `kind` exists in this checkout; its description for reports.
    The engine builds the TA itself from the config (ta.backend)."""
    import importlib.util

    from engine.errors import UsageError

    modules = {"scripted": "engine.ta.scripted", "local": "engine.ta.local"}
    if kind not in modules:
        raise UsageError(f"unknown TA {kind!r}", "use --ta scripted or --ta local")
    if importlib.util.find_spec(modules[kind]) is None:
        raise UsageError(f"the {kind} TA backend ({modules[kind]}) is not in this checkout",
                         "update the checkout, or pick the other --ta")
    return {"scripted": "engine scripted TA (offline, deterministic)",
            "local": "engine local TA (Gemma 3 270M GGUF by default)"}[kind]


class CallTimer:
    """Wraps methods of objects to time them (wall and CPU seconds). Totals are keyed by
    (phase, label), where
    `phase` is whatever the caller last set (e.g. from PhaseChanged events); nested wrapped
    calls count once, in the outermost one."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.phase = ""
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)  # wall
        self.cpu: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self._depth = 0

    def wrap(self, obj: Any, name: str, label: str | None = None) -> None:
        original = getattr(obj, name)
        label = label or name

        def timed(*a: Any, **kw: Any) -> Any:
            if self._depth:
                return original(*a, **kw)
            key = (self.phase, label)
            self._depth += 1
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return original(*a, **kw)
            finally:
                synchronize(self.device)
                self._depth -= 1
                self.seconds[key] += time.perf_counter() - start
                self.cpu[key] += time.process_time() - cpu
                self.calls[key] += 1

        setattr(obj, name, timed)

    def total(self, label: str) -> float:
        return sum(v for (_, lab), v in self.seconds.items() if lab == label)
