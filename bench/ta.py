"""The local TA's generation, as the engine calls it, against stock `model.generate`.

    python -m bench.ta --threads 1                 # Gemma 3 270M (offline default), CPU
    python -m bench.ta --device cuda --bf16-model  # also time the whole model in bf16

Prompts are the engine's (`engine.prompts`, transcript form) for a smoke-like run on
twitter-sentiment: each configuration (l prefixes per request, max new tokens) runs a short
epoch of `--requests` requests whose history grows by the prefixes of the previous one, as in
the engine. Both contenders run the same requests with the same seeds in this process:
"stock" is one batched `model.generate(num_return_sequences=l)` call (the TA before #19),
"fast" the TA's own path (engine.ta.generate). Reported: generated tokens/s, time to first
token, prompt tokens, whether the same texts came out, a time split of one decode step
(transformer body with transformers' cache and nn.Linear, with the in-place cache, with
oneDNN-packed linears; vocabulary head in fp32 and exact-bf16; sampling), the largest
log-likelihood difference the packed float32 kernels make, and the weight-read / FLOP bound of
a step from this machine's measured bandwidth and matmul speed.
"""

from __future__ import annotations

import time
from typing import Any

from engine.errors import UsageError

from bench.common import (Report, base_parser, machine_info, median, prepare, progress, publish,
                          run_main)

DESCRIPTION = ("English tweets from 2014-2015 on a handful of topics (airlines, the NFL, Apple, "
               "Coachella, self-driving cars). Each tweet is labelled with the sentiment it "
               "expresses: negative, neutral or positive.")
LABELS = ["negative", "neutral", "positive"]
#: plausible prefixes with validation accuracies, in the order a smoke run might find them
FOUND = [
    ("Classify the sentiment of this tweet.", 0.521),
    ("Is this tweet negative, neutral or positive?", 0.583),
    ("Read the tweet and say whether the writer feels negative, neutral or positive.", 0.604),
    ("Decide the mood of this tweet: negative, neutral or positive.", 0.562),
    ("What sentiment does this tweet about an airline or a product express?", 0.542),
    ("Label the tweet as negative, neutral or positive.", 0.615),
    ("Does the writer of this tweet sound angry, calm or happy?", 0.497),
    ("Tell whether this tweet complains, informs or praises.", 0.575),
    ("Name the sentiment of the tweet.", 0.531),
    ("Is the author of this tweet pleased, neutral or upset?", 0.598),
]


def requests(l: int, count: int) -> list[list[dict]]:
    """The messages of `count` requests of one epoch: the history grows by l each time."""
    from engine import prompts

    system = prompts.system_prompt("classification", "BERT", "[CLS]prefix + context", LABELS)
    out, shown = [], 1
    for _ in range(count):
        history = sorted(FOUND[:shown], key=lambda p: p[1])
        out.append(prompts.build_messages(system, prompts.user_prompt(DESCRIPTION, history, l)))
        shown = min(len(FOUND), shown + l)
    return out


def run_epochs(ta: Any, contenders: tuple[bool, ...], msgs: list[list[dict]], l: int,
               seed: int) -> dict[bool, dict]:
    """One simulated epoch per contender (True: fast, False: stock), interleaved request by
    request so that load changes on the shared machine hit both alike. Wall and CPU seconds."""
    ta.generator.reset()
    out = {c: {"s": 0.0, "cpu": 0.0, "tokens": 0, "prompt": [], "texts": [], "prefilled": []}
           for c in contenders}
    for i, m in enumerate(msgs):
        for fast in contenders:
            ta.fast = fast
            rec = out[fast]
            wall, cpu = time.perf_counter(), time.process_time()
            reply = ta.propose(m, n=l, temperature=1.0, seed=seed + i)
            rec["s"] += time.perf_counter() - wall
            rec["cpu"] += time.process_time() - cpu
            rec["tokens"] += reply.usage["completion_tokens"]
            rec["prompt"].append(reply.usage["prompt_tokens"])
            rec["prefilled"].append(ta.last_timings.get("prefilled", reply.usage["prompt_tokens"])
                                    if fast else reply.usage["prompt_tokens"])
            rec["texts"].append(reply.texts)
    return out


def first_token_s(ta: Any, fast: bool, msgs: list[list[dict]], l: int, seed: int) -> float:
    """Seconds to the first generated token of the epoch's last request (warm prefix cache)."""
    keep = ta.max_new_tokens
    ta.fast = fast
    try:
        ta.generator.reset()
        for m in msgs[:-1]:
            ta.max_new_tokens = 1
            ta.propose(m, n=l, temperature=1.0, seed=seed)
        started = time.perf_counter()
        ta.propose(msgs[-1], n=l, temperature=1.0, seed=seed)
        return time.perf_counter() - started
    finally:
        ta.max_new_tokens = keep


def timeit(fn, repeats: int = 5) -> float:
    """Median CPU seconds of this process per call (steadier than wall time on a shared box)."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return median(times)


def step_split(ta: Any, msgs: list[dict], l: int) -> dict[str, float]:
    """Seconds of one decode step's parts at the request shape (l rows, this prompt's cache)."""
    import torch

    from engine.ta.generate import ExactBf16Head, SparseMultinomial, _decoder, logits_warpers
    from engine.ta.local import encode_prompt

    model = ta.model
    decoder = _decoder(model)
    ids = encode_prompt(ta.tokenizer, ta.render(msgs), ta.chat)
    import copy

    with torch.inference_mode():
        cache = ta.generator._new_cache()
        ta.generator._forward(decoder, torch.tensor([ids]), cache)
        cache.batch_repeat_interleave(l)
        token = torch.full((l, 1), 100)

        hidden = ta.generator._forward(decoder, token, copy.deepcopy(cache)).last_hidden_state[:, -1, :]
        weight = model.get_output_embeddings().weight
        exact = ExactBf16Head(weight)
        warpers = logits_warpers(1.0, ta.top_k, ta.top_p)
        logits = hidden.float() @ weight.T

        def sample(sparse: bool = False):
            scores = logits
            for warp in warpers:
                scores = warp(None, scores)
            probs = torch.softmax(scores, dim=-1)
            SparseMultinomial.sample(probs) if sparse else torch.multinomial(probs, 1)

        # consecutive real decode steps (the cache grows by one token each), alternating
        # between the contenders step by step; the first step after the batch repeat left out
        from transformers import DynamicCache

        plain = DynamicCache(config=model.config)
        ta.generator._forward(decoder, torch.tensor([ids]), plain)
        plain.batch_repeat_interleave(l)
        bodies = {"body, transformers' DynamicCache and nn.Linear (before)": plain,
                  "body, in-place KV cache and nn.Linear": cache,
                  "body, in-place KV cache and oneDNN-packed linears": copy.deepcopy(cache)}
        times: dict[str, list[float]] = {name: [] for name in bodies}
        packs = ta.generator.packs
        for _ in range(13):
            for name, kv in bodies.items():
                with packs.patched(decoder if "packed" in name else None):
                    started = time.process_time()
                    ta.generator._forward(decoder, token, kv)
                    times[name].append(time.process_time() - started)
        split = {name: median(t[1:]) for name, t in times.items()}
        return {**split,
                "head fp32 (nn.Linear)": timeit(lambda: hidden.float() @ weight.T),
                "head exact-bf16": timeit(lambda: exact(hidden, ta.top_k)),
                "sampling, stock (warpers, softmax, torch.multinomial)": timeit(sample),
                "sampling, fast (warpers, softmax, SparseMultinomial)": timeit(lambda: sample(True))}


def machine_bounds(ta: Any) -> dict[str, float]:
    """Measured single-process read bandwidth (GB/s) and fp32 / bf16 matmul speed (GFLOP/s)."""
    import torch

    big = torch.ones(64 * 2**20)  # 256 MiB
    a32, b32 = torch.randn(8, 640), torch.randn(640, 2048 * 16)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    x, w = torch.randn(256, 640), torch.randn(640, 2048)
    return {"read GB/s": big.numel() * 4 / timeit(big.sum) / 1e9,
            "matmul fp32 GFLOP/s (256x640x2048)": 2 * 256 * 640 * 2048 / timeit(lambda: x @ w) / 1e9,
            "gemv-like fp32 GB/s (8 rows)": b32.numel() * 4 / timeit(lambda: a32 @ b32) / 1e9,
            "gemv-like bf16 GB/s (8 rows)": b16.numel() * 2 / timeit(lambda: a16 @ b16) / 1e9}


def token_log_probs(ta: Any, msgs: list[dict], text: str, packed: bool = False) -> Any:
    """log p of each token of `text` (and its closing quote) continuing the prompt `msgs`,
    from one forward of the whole sequence; `packed`: through oneDNN-packed linears."""
    import torch

    from engine.ta.local import encode_prompt

    prompt = encode_prompt(ta.tokenizer, ta.render(msgs), ta.chat)
    new = ta.tokenizer(text + '"', add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + new])
    with torch.inference_mode(), ta.generator.packs.patched(ta.model if packed else None):
        logits = ta.model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(1, ids[0, len(prompt):, None])


def log_likelihood_gap(ta_a: Any, ta_b: Any, msgs: list[dict], texts: list[str],
                       packed: tuple[bool, bool] = (False, False)) -> float:
    """Largest |log p_a - log p_b| over the tokens of `texts` continuing the prompt `msgs`."""
    return max(float((token_log_probs(ta_a, msgs, t, packed[0])
                      - token_log_probs(ta_b, msgs, t, packed[1])).abs().max()) for t in texts)


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0], repeats=1)
    parser.add_argument("--model", default="gemma-3-270m", help="TA model (alias, directory or hub name)")
    parser.add_argument("--requests", type=int, default=3, help="requests per simulated epoch")
    parser.add_argument("--shapes", default="3x24,5x24,3x48,5x48",
                        help="request shapes to time, l x max new tokens, comma-separated")
    parser.add_argument("--no-ttft", action="store_true", help="skip the time-to-first-token runs")
    parser.add_argument("--split-only", action="store_true",
                        help="only the decode-step split and the bounds (no request shapes)")
    parser.add_argument("--bf16-model", action="store_true",
                        help="also load the whole TA in bf16: speed and log-likelihood gap")
    args = parser.parse_args()
    device = prepare(args)
    machine = machine_info(device)
    import torch

    from engine.ta.packed import cpu_has_bf16
    from engine.ta.local import LocalTA

    progress(f"loading {args.model}")
    started = time.perf_counter()
    ta = LocalTA(args.model, device=device, max_new_tokens=48)
    load_s = time.perf_counter() - started
    report = Report("ta", "Local TA generation: engine path against stock generate", device)
    report.settings = {"model": args.model, "dtype": str(next(ta.model.parameters()).dtype).replace("torch.", ""),
                       "requests per epoch": args.requests, "temperature": 1.0, "top_k": ta.top_k,
                       "top_p": ta.top_p, "CPU bf16": cpu_has_bf16(), "load s": f"{load_s:.1f}"}
    rows, ratios, cpu_ratios = [], [], []
    sampled: dict = {}
    try:
        shapes = [tuple(int(x) for x in shape.split("x")) for shape in args.shapes.split(",")]
        if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
            raise ValueError
    except ValueError:
        raise UsageError(f"bad --shapes {args.shapes!r}", "give l x tokens pairs, e.g. --shapes 5x24,3x48") from None
    if args.split_only:
        shapes, args.no_ttft = [], True
    # one-time work (the stop table, the bf16 head, packing the weights) out of the timed
    # epochs: one short untimed request per contender, on a prompt the epochs do not use
    warm_cpu = {}
    if shapes:
        progress("warm-up")
        ta.max_new_tokens = 2
        for fast in (False, True):
            ta.fast, started = fast, time.process_time()
            ta.propose(requests(1, 1)[0], n=1, temperature=1.0, seed=args.seed)
            warm_cpu[fast] = time.process_time() - started
        ta.generator.reset()
    for l, tokens in shapes:
        ta.max_new_tokens = tokens
        msgs = requests(l, args.requests)
        progress(f"l={l} max_new_tokens={tokens}")
        result = run_epochs(ta, (False, True), msgs, l, args.seed)
        stock, fast = result[False], result[True]
        rate = {k: v["tokens"] / v["s"] for k, v in result.items()}
        cpu_rate = {k: v["tokens"] / v["cpu"] for k, v in result.items()}
        ratios.append(rate[True] / rate[False])
        cpu_ratios.append(cpu_rate[True] / cpu_rate[False])
        same = sum(a == b for a, b in zip(stock["texts"], fast["texts"]))
        rows.append([l, tokens, "/".join(map(str, stock["prompt"])), "/".join(map(str, fast["prefilled"])),
                     f"{stock['s']:.1f} / {stock['cpu']:.1f}", f"{fast['s']:.1f} / {fast['cpu']:.1f}",
                     f"{rate[False]:.1f} / {cpu_rate[False]:.1f}", f"{rate[True]:.1f} / {cpu_rate[True]:.1f}",
                     f"{rate[True] / rate[False]:.2f}x / {cpu_rate[True] / cpu_rate[False]:.2f}x",
                     f"{same}/{len(msgs)}"])
        sampled[(l, tokens)] = (msgs, fast["texts"])
    if rows:
        report.table(["l", "max new", "prompt tokens per request", "fast: tokens prefilled",
                      "stock s, wall / CPU", "fast s, wall / CPU", "stock tok/s, wall / CPU",
                      "fast tok/s, wall / CPU", "speed-up, wall / CPU", "same texts"], rows)
    l, msgs = 5, requests(5, args.requests)
    ta.max_new_tokens = 24
    progress("time to first token")
    ttft = {} if args.no_ttft else {fast: first_token_s(ta, fast, msgs, l, args.seed) for fast in (False, True)}
    progress("decode step split")
    split = step_split(ta, msgs[-1], l)
    bounds = machine_bounds(ta)
    body_params = sum(p.numel() for n, p in ta.model.named_parameters() if "embed" not in n)
    head_params = ta.model.get_output_embeddings().weight.numel()
    read32 = (body_params + head_params) * 4 / 1e9
    read_mixed = (body_params * 4 + head_params * 2) / 1e9
    bw = bounds["read GB/s"]
    step_s = (split["body, in-place KV cache and oneDNN-packed linears"] + split["head exact-bf16"]
              + split["sampling, fast (warpers, softmax, SparseMultinomial)"])
    report.table(["part of one decode step (l=5, last request's cache)", "CPU ms"],
                 [[k, f"{v * 1000:.1f}"] for k, v in split.items()]
                 + [["fast step (packed body + exact-bf16 head + fast sampling)", f"{step_s * 1000:.1f}"]])
    if sampled:
        progress("log-likelihood gap, packed against plain linears")
        gap_msgs, gap_texts = next(iter(sampled.values()))
        gap = max(log_likelihood_gap(ta, ta, m, t, packed=(False, True)) for m, t in zip(gap_msgs, gap_texts))
        report.table(["float32 kernels (same weights)", "value"], [
            ["largest per-token |log p nn.Linear - log p oneDNN-packed| on the fast path's samples",
             f"{gap:.2e}"],
            ["texts compared (requests x l)", f"{sum(len(t) for t in gap_texts)}"]])
    report.table(["bound", "value"], [
        *[[k, f"{v:.1f}"] for k, v in bounds.items()],
        ["weights read per step, fp32 / body fp32 + head bf16 (GB)", f"{read32:.2f} / {read_mixed:.2f}"],
        ["bandwidth bound, l=5 rows: tokens/s at fp32 / at body fp32 + head bf16",
         f"{5 * bw / read32:.0f} / {5 * bw / read_mixed:.0f}"],
        ["FLOP bound, l=5 rows: tokens/s (2 x params per token at the matmul speed)",
         f"{bounds['matmul fp32 GFLOP/s (256x640x2048)'] * 1e9 / (2 * (body_params + head_params)):.0f}"],
        ["measured fast decode, l=5 rows: tokens/s (5 / step)", f"{5 / step_s:.0f}"],
    ] + ([["time to first token, l=5, last request: stock / fast (s)", f"{ttft[False]:.2f} / {ttft[True]:.2f}"]]
          if ttft else []))
    if args.bf16_model:
        progress("bf16 model")
        ta16 = LocalTA(args.model, device=device, max_new_tokens=24, dtype=torch.bfloat16)
        shape = (5, 24) if (5, 24) in sampled else next(iter(sampled))
        msgs16, texts = sampled[shape]
        ta16.max_new_tokens = ta.max_new_tokens = shape[1]
        r16 = run_epochs(ta16, (True,), msgs16, shape[0], args.seed)[True]
        r32 = run_epochs(ta, (True,), msgs16, shape[0], args.seed)[True]
        gap = max(log_likelihood_gap(ta, ta16, m, t) for m, t in zip(msgs16, texts))
        report.table([f"whole model in bf16 (l={shape[0]}, {shape[1]} new)", "value"], [
            ["fast fp32 / fast bf16: tok/s by wall", f"{r32['tokens'] / r32['s']:.1f} / {r16['tokens'] / r16['s']:.1f}"],
            ["fast fp32 / fast bf16: tok/s by CPU", f"{r32['tokens'] / r32['cpu']:.1f} / {r16['tokens'] / r16['cpu']:.1f}"],
            ["same texts as fp32", f"{sum(a == b for a, b in zip(r32['texts'], r16['texts']))}/{len(msgs16)}"],
            ["largest per-token |log p fp32 - log p bf16| on the fp32 samples", f"{gap:.3f}"]])
    if ratios:
        report.notes.append(
            f"speed-up (fast / stock generated tokens per second): {min(ratios):.2f}x to "
            f"{max(ratios):.2f}x by wall time, {min(cpu_ratios):.2f}x to {max(cpu_ratios):.2f}x by CPU "
            "time (the process's own CPU seconds; on a shared machine the steadier figure)")
    report.notes += [
        "decode-step body: median CPU ms of 12 consecutive real decode steps (the first step "
        "after the batch repeat left out)",
        "stock and fast run the same requests interleaved (stock, fast, stock, ...)",
        "stock: one model.generate(num_return_sequences=l) per request, i.e. the prompt is "
        "prefilled l times; fast: prefilled once, in fixed 32-token chunks, the chunks shared "
        "with the previous request taken from the KV cache",
        "fast also drops finished rows from the batch (they still draw from the random "
        "stream) and samples with SparseMultinomial (torch.multinomial's draws, exponentials "
        "only where probs > 0)",
        "fast keeps the KV cache of the stable prompt part (system message, examples, "
        "description) as well as the deepest boundary shared with the previous prompt; its KV "
        "cache appends in place; on a CPU with oneDNN its matmuls use packed weights "
        "(float32, another summation order than MKL's: the log-likelihood gap above)",
        "same texts: requests whose l texts are identical between the two (same seeds)",
        *([f"warm-up, untimed: one 2-token request per contender first (CPU s: stock "
           f"{warm_cpu[False]:.1f} incl. the stop table, fast {warm_cpu[True]:.1f} incl. the bf16 "
           "head and packing); in a run this is the setup's first request"] if warm_cpu else []),
        f"head: exact-bf16 steps {ta.generator._head.used if ta.generator._head else 0}, "
        f"fp32 fallbacks {ta.generator._head.fallbacks if ta.generator._head else 0}",
    ]
    publish(report, args, machine)


if __name__ == "__main__":
    run_main(main)
