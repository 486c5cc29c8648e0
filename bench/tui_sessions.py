"""UI-thread time of the sessions screen's reload (run on every return to the list: esc from
a dashboard or the compare view, a delete) over N finished sessions, headless.

    python -m bench.tui_sessions --home /tmp/bench-sessions      # builds 30 sessions there once

To compare two versions, run the same command with each version's tree on PYTHONPATH and
the same --home, alternating (BENCHMARKS.md, "sessions screen reload").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path


def build(home: Path, count: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from sessions.store import SessionStore
    from test_sessions_helpers import SyntheticRun, feed, small_config

    store = SessionStore(home)
    for i in range(count):
        handle = store.create(small_config(f"s{i}", loop={"epochs": 3, "k": 24, "l": 2,
                                                            "window": 2}))
        feed(handle, SyntheticRun(handle.config, steps_per_epoch=20).events())
        handle.close()


async def measure(home: Path, reloads: int) -> list[float]:
    from gpta_tui.app import GptaApp

    app = GptaApp(home)
    times: list[float] = []
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        screen = app.screen
        for _ in range(reloads):
            start = time.perf_counter()
            screen.reload()
            times.append(time.perf_counter() - start)
            await pilot.pause()
        if screen.rows and screen.rows[0].test == "-":
            raise SystemExit("the list shows no test figures: not the screen measured before")
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="sessions home (built if empty)")
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--reloads", type=int, default=15)
    args = parser.parse_args(argv)
    if not (args.home / "sessions").is_dir():
        build(args.home, args.sessions)
    times = asyncio.run(measure(args.home, args.reloads))
    print(f"reload median {statistics.median(times) * 1000:.1f} ms, min {min(times) * 1000:.1f} ms "
          f"({len(times)} reloads), load {os.getloadavg()[0]:.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
