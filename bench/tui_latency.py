"""Key press -> handled and drawn latency of gpta-tui while the student trains.

    python -m bench.tui_latency                    # real MiniLM student (offline default)
    python -m bench.tui_latency --student tiny     # a 2-layer random BERT (fast to load)
    python -m bench.tui_latency --presses 50 --train-size 960

The app runs as a child process on a real pseudo-terminal with Textual's normal terminal
driver, exactly as a user would run it, and trains the student in its worker thread. This
process plays the user: it writes `?` to the terminal (opens the help screen, then closes it
again) and timestamps the moment the child's screen output carries the change ("gpta-tui help"
appears; the dashboard's "Prefix history" comes back). That is the full path a key takes:
terminal input parsing, the binding, the screen change, layout, rendering and the write to the
terminal, under the GIL contention and CPU load of training on the same cores.

Prints p50 / p95 / max over the presses. The target is p95 <= 100 ms on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import os
import random
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

OPEN_MARK = b"gpta-tui help"
CLOSE_MARK = b"Prefix history"
TRAIN_MARK = b"training student"


# ---- child: the app under test ---------------------------------------------------------


def _tiny_bert(out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from engine.resources import minilm_dir

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=256,
                     num_labels=3)
    BertForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def run_child(args: argparse.Namespace) -> int:
    """The app, starting a baseline run at once so the student trains during the presses."""
    from engine.config import build_config
    from gpta_tui.app import SWITCH_INTERVAL_S, GptaApp, _quiet_libraries

    home = Path(args.home)
    _quiet_libraries(home)
    student = "all-MiniLM-L6-v2"
    if args.student == "tiny":
        student = str(_tiny_bert(home / "tiny-bert"))
    config = build_config("smoke", overrides={
        "name": f"latency-{int(time.time())}", "mode": "baseline",
        "data": {"train_size": args.train_size},
        "student": {"model": student},
        "loop": {"epochs": 1},
    })
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # as gpta_tui.app.main does
    app = GptaApp(home, run_config=config)
    if args.profile:
        import cProfile

        profiler = cProfile.Profile(time.thread_time)  # CPU time of the UI thread only
        profiler.runcall(app.run)
        profiler.dump_stats(args.profile)
    else:
        app.run()
    return 0


# ---- parent: the user ------------------------------------------------------------------


class Terminal:
    """A child process on a pseudo-terminal; its output is read into a timestamped log."""

    def __init__(self, argv: list[str], size: tuple[int, int], env: dict[str, str]):
        self.master, slave = os.openpty()
        cols, rows = size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.chunks: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.master], [], [], 0.5)
                if not ready:
                    if self.proc.poll() is not None:
                        return
                    continue
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            now = time.perf_counter()
            with self._lock:
                self.chunks.append((now, data))

    def mark(self) -> int:
        with self._lock:
            return len(self.chunks)

    def wait_for(self, needle: bytes, since: int, timeout: float) -> float | None:
        """perf_counter time of the first chunk after `since` whose text (joined with the
        chunks around it) contains `needle`; None on timeout."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self._lock:
                chunks = self.chunks[since:]
            data = b""
            for ts, chunk in chunks:
                data += chunk
                if needle in data[-(len(chunk) + len(needle)):]:
                    return ts
            time.sleep(0.001)
        return None

    def send(self, data: bytes) -> float:
        t = time.perf_counter()
        os.write(self.master, data)
        return t

    def close(self, timeout: float = 120.0) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            return self.proc.wait(10)
        finally:
            os.close(self.master)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tui_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", choices=("minilm", "tiny"), default="minilm",
                        help="minilm: the real offline default student; tiny: a 2-layer BERT")
    parser.add_argument("--presses", type=int, default=50)
    parser.add_argument("--train-size", type=int, default=960,
                        help="training examples: enough steps to keep training during the presses")
    parser.add_argument("--size", default="130x40", help="terminal COLSxROWS")
    parser.add_argument("--home", default="", help="sessions folder (default: a temp dir)")
    parser.add_argument("--csv", default="", help="also write every latency (ms) to this CSV")
    parser.add_argument("--profile", default="",
                        help="cProfile the app's main thread into this file (pstats format)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)

    home = Path(args.home or tempfile.mkdtemp(prefix="gpta-latency-"))
    cols, rows = (int(x) for x in args.size.lower().split("x"))
    env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor",
           "GPTA_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    argv_child = [sys.executable, "-m", "bench.tui_latency", "--child", "--home", str(home),
                  "--student", args.student, "--train-size", str(args.train_size)]
    if args.profile:
        argv_child += ["--profile", str(Path(args.profile).resolve())]
    root = Path(__file__).resolve().parent.parent
    print(f"starting gpta-tui ({args.student} student, {cols}x{rows}, {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}) ...", flush=True)
    os.chdir(root)
    term = Terminal(argv_child, (cols, rows), env)
    latencies: list[float] = []
    try:
        if term.wait_for(TRAIN_MARK, 0, timeout=600) is None:
            print("the run never reached training; see", home / "gpta-tui.log", file=sys.stderr)
            return 1
        time.sleep(3.0)  # let training settle into its steady state
        window = [time.time(), 0.0]
        rng = random.Random(0)
        open_ = True
        for i in range(args.presses):
            time.sleep(rng.uniform(0.15, 0.35))  # a user's pace, off the redraw beat
            since = term.mark()
            sent = term.send(b"?")
            drawn = term.wait_for(OPEN_MARK if open_ else CLOSE_MARK, since, timeout=10)
            if drawn is None:
                print(f"press {i + 1}: no redraw within 10 s", file=sys.stderr)
                return 1
            latencies.append((drawn - sent) * 1000)
            open_ = not open_
        window[1] = time.time()
        if not open_:
            term.send(b"?")
            time.sleep(0.3)
        term.send(b"q")
    finally:
        code = term.close()
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["press", "latency_ms"])
            writer.writerows(enumerate((round(x, 2) for x in latencies), 1))
    p50, p95 = percentile(latencies, 0.50), percentile(latencies, 0.95)
    print(f"key -> drawn latency over {len(latencies)} presses while training: "
          f"p50 {p50:.1f} ms  p95 {p95:.1f} ms  max {max(latencies):.1f} ms  "
          f"mean {statistics.fmean(latencies):.1f} ms")
    steps, during = training_steps(home, window)
    print(f"target p95 <= 100 ms: {'met' if p95 <= 100 else 'NOT met'}; app exit code {code}; "
          f"{during} of the run's {steps} training steps happened during the presses")
    return 0


def training_steps(home: Path, window: list[float]) -> tuple[int, int]:
    """(steps recorded, steps whose time falls inside the measuring window), from the session."""
    from sessions.store import SessionStore

    store = SessionStore(home)
    names = store.names()
    if not names:
        return 0, 0
    handle = store.open(names[0])
    try:
        points = handle.loss_points()
    finally:
        handle.close()
    during = sum(1 for p in points if window[0] <= p.get("ts", 0) <= window[1])
    return len(points), during


if __name__ == "__main__":
    sys.exit(main())
