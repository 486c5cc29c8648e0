"""CPU time the dashboard spends per key: `?` opens the help, `?` closes it, on the canned run
of the snapshot tests, headless (Textual's pilot), no training.

    python -m bench.tui_cpu                       # 40 presses at 130x40
    python -m bench.tui_cpu --profile out.pstats  # and a cProfile of the presses

`bench.tui_latency` measures what a user feels (a real terminal, training beside it) but
swings with the machine's load; this counts the UI thread's own CPU time (process_time: the
app runs on one thread here), which a busy machine barely moves. It is how the footer
rebuild behind the issue-15 latency regression was found (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path


async def measure(presses: int, size: tuple[int, int], profile: str) -> list[float]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_tui_snapshots import run_app  # the canned run: no engine, fixed data

    app = run_app()
    times: list[float] = []
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        await asyncio.sleep(1.5)  # the chart's first drawing
        await pilot.pause()
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile(time.process_time)
        for _ in range(presses):
            start = time.process_time()
            if profiler:
                profiler.enable()
            await pilot.press("question_mark")
            await pilot.pause()
            if profiler:
                profiler.disable()
            times.append((time.process_time() - start) * 1000)
        if profiler:
            profiler.dump_stats(profile)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tui_cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presses", type=int, default=40)
    parser.add_argument("--size", default="130x40", help="terminal COLSxROWS")
    parser.add_argument("--profile", default="", help="write a cProfile (pstats) here")
    args = parser.parse_args(argv)
    cols, rows = (int(x) for x in args.size.lower().split("x"))
    times = asyncio.run(measure(args.presses, (cols, rows), args.profile))
    print(f"UI CPU per key ({args.presses} presses, {cols}x{rows}): median "
          f"{statistics.median(times):.1f} ms  mean {statistics.fmean(times):.1f} ms  "
          f"max {max(times):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
