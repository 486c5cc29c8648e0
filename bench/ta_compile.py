"""torch.compile on the local TA's decoder body: compile time, steady decode step, exactness.

    python -m bench.ta_compile [--mode default|reduce-overhead|max-autotune]

Prefills the engine's last smoke-like request (l=5, as bench/ta.py), repeats the cache for the
5 rows and times 13 consecutive decode steps of the eager decoder, then of
`torch.compile(decoder, dynamic=True)` on a copy of the same cache (the KV length grows by one
each step, so fixed shapes would recompile every step). Prints CPU ms per step, the compile
calls' CPU seconds, the steady-state median (first step left out) and the largest |difference|
of the last hidden state against eager. Prints only (no BENCHMARKS.md section).
"""

from __future__ import annotations

import argparse
import copy
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", default="default", choices=["default", "reduce-overhead", "max-autotune"])
    parser.add_argument("--model", default="gemma-3-270m")
    args = parser.parse_args()
    import torch

    from bench.ta import requests
    from engine.ta.generate import _decoder
    from engine.ta.local import LocalTA, encode_prompt

    torch.set_num_threads(1)
    ta = LocalTA(args.model, device=torch.device("cpu"), max_new_tokens=24)
    decoder = _decoder(ta.model)
    ids = encode_prompt(ta.tokenizer, ta.render(requests(5, 3)[-1]), ta.chat)
    gen = ta.generator

    def steps(module, cache, n=13):
        token = torch.full((5, 1), 100)
        times, outs = [], []
        for _ in range(n):
            started = time.process_time()
            outs.append(gen._forward(module, token, cache).last_hidden_state)
            times.append(time.process_time() - started)
        return times, outs

    with torch.inference_mode():
        cache = gen._new_cache()
        gen._forward(decoder, torch.tensor([ids]), cache)
        cache.batch_repeat_interleave(5)
        other = copy.deepcopy(cache)
        eager, want = steps(decoder, cache)
        compiled = torch.compile(decoder, dynamic=True, mode=None if args.mode == "default" else args.mode)
        fast, got = steps(compiled, other)
    print("eager CPU ms per step:", [round(t * 1000) for t in eager], "median", round(sorted(eager[1:])[6] * 1000, 1))
    print("compiled CPU ms per step:", [round(t * 1000) for t in fast], "median", round(sorted(fast[1:])[6] * 1000, 1))
    print("largest |hidden eager - hidden compiled|:", max(float((a - b).abs().max()) for a, b in zip(want, got)))


if __name__ == "__main__":
    main()
