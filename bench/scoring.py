"""Prefix scoring throughput: the student's fast path vs the straightforward one.

    python -m bench.scoring                       # k=50 prefixes x 100 validation rows, MiniLM
    python -m bench.scoring --k 20 --repeats 5 --device cuda

Contenders, on the same student (the real default all-MiniLM-L6-v2 on twitter-sentiment) and
the same synthetic TA-like prefixes:

- plain: `score_prefixes_plain`, one prefix at a time, joined strings padded to max_length;
- HF pipeline: the same baseline written with `transformers.pipeline("text-classification")`
  (one prefix at a time, `padding="max_length"`, batch_size = eval_batch_size), the other
  straightforward approach the target names;
- fast: `score_prefixes` with all k prefixes in one call (batched across prefixes and rows,
  sorted by length, dynamic padding, cached text tokenization, the last layer computed for
  the first position only since the head reads nothing else, AMP on CUDA);
- fast, full last layer: the same without the first-token shortcut, to show what it is worth;
- fast, l per call: `score_prefixes` called with l prefixes at a time, the engine's pattern
  (one call per TA reply).

Reports samples/s (prefix x row pairs per second), the ratio to plain and whether every metric
is identical. The target is fast >= 2x plain with identical metrics. A run with another
--max-length than the engine's default writes its own section (e.g. scoring-maxlen128-cpu).

Under mixed precision (CUDA, student.amp) "identical" cannot hold: the fast path pads less,
so its bf16/fp16 sums round differently, and a row whose two best logits are nearly tied can
flip. The rule there: every prediction that differs between fast and plain must be a near tie
in the plain path's logits (top-2 margin below AMP_TIE_MARGIN for the autocast dtype), and the
largest metric difference is reported. On CUDA the table also has each path's peak GPU memory
(the peak counter is reset before every run).
"""

from __future__ import annotations

from bench.common import (GpuPeaks, Report, Timings, base_parser, default_task_data, machine_info,
                          prepare, progress, publish, ratio, run_main, speed_rows, stopwatch,
                          synthetic_prefixes, verdict)

TARGET = 2.0

#: logit margin under which two labels count as tied, per autocast dtype name: bf16 keeps 8
#: significant bits (relative error 2^-8, ~0.02 on logits of magnitude 5), fp16 11 bits
AMP_TIE_MARGIN = {"bfloat16": 0.1, "float16": 0.02}


def amp_agreement(fast, plain, margin: float) -> dict[str, int]:
    """Compare predictions of two (prefixes, rows, labels) logit tensors under the AMP rule:
    rows may disagree only where the plain logits' two largest values are closer than `margin`.
    Returns counts: rows, near ties, flipped predictions, and flips outside the near ties."""
    top2 = plain.float().topk(2, dim=-1).values
    tie = (top2[..., 0] - top2[..., 1]) < margin
    differ = fast.argmax(-1) != plain.argmax(-1)
    return {"rows": differ.numel(), "ties": int(tie.sum()), "flipped": int(differ.sum()),
            "outside_ties": int((differ & ~tie).sum())}


def metric_gap(results: dict[str, list[list[dict]]], reference: list[dict]) -> float:
    """The largest absolute difference of any metric, prefix and repeat to `reference`."""
    return max((abs(m[key] - ref[key]) for runs in results.values() for run in runs
                for m, ref in zip(run, reference) for key in ref), default=0.0)


def padded_tokens(lengths: list[int], batch_size: int) -> int:
    """Tokens the fast path computes: length-sorted batches padded to their longest row."""
    ordered = sorted(lengths)
    return sum(max(ordered[i:i + batch_size]) * len(ordered[i:i + batch_size])
               for i in range(0, len(ordered), batch_size))


def hf_pipeline(student, device: str):
    """A text-classification pipeline over the student's own model and tokenizer."""
    from transformers import pipeline

    return pipeline("text-classification", model=student.model, tokenizer=student.tokenizer,
                    device=device)


def pipeline_predictions(pipe, student, prefix: str, data, args) -> list[int]:
    """Predicted label ids for one prefix: joined strings, padded to max_length, batched."""
    from engine.student.classification import join_input

    texts = [join_input(prefix, row["text"]) for row in data.validation]
    out = pipe(texts, batch_size=args.eval_batch_size, top_k=1, truncation=True,
               padding="max_length", max_length=args.max_length)
    id_of = {name: i for i, name in student.model.config.id2label.items()}
    return [id_of[o[0]["label"]] for o in out]


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=50, help="prefixes scored")
    parser.add_argument("--rows", type=int, default=100, help="validation rows")
    parser.add_argument("--chunk", type=int, default=5,
                        help="l: prefixes per call for the engine-pattern contender (0: skip it)")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--max-length", type=int, default=96, help="student.max_length")
    parser.add_argument("--eval-batch-size", type=int, default=64, help="student.eval_batch_size")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the HF pipeline contender")
    parser.add_argument("--no-full-layer", action="store_true",
                        help="skip the fast path without the first-token shortcut")
    args = parser.parse_args()
    device = prepare(args)
    machine = machine_info(device)

    import torch

    from engine.config import RunConfig, StudentConfig
    from engine.device import amp_dtype
    from engine.metrics import classification_metrics
    from engine.student import build_student

    cfg = RunConfig(device=device, seed=args.seed)
    cfg.student.model = args.model
    cfg.student.max_length = args.max_length
    cfg.student.eval_batch_size = args.eval_batch_size
    cfg.validate()
    progress(f"loading twitter-sentiment ({args.rows} validation rows) and {args.model} on {device}")
    data = default_task_data(train_size=32, val_size=args.rows, test_size=16, seed=args.seed)
    student = build_student(cfg, data, device)
    prefixes = synthetic_prefixes(args.k, args.seed)
    pairs = args.k * len(data.validation)

    def fast_all() -> list[dict]:
        return student.score_prefixes(prefixes)

    def fast_full_layer() -> list[dict]:
        student.first_token_shortcut = False
        try:
            return student.score_prefixes(prefixes)
        finally:
            student.first_token_shortcut = True

    def fast_chunked() -> list[dict]:
        out: list[dict] = []
        for i in range(0, len(prefixes), args.chunk):
            out.extend(student.score_prefixes(prefixes[i:i + args.chunk]))
        return out

    def plain() -> list[dict]:
        return student.score_prefixes_plain(prefixes)

    pipe = None if args.no_pipeline else hf_pipeline(student, device)
    labels = [row["label"] for row in data.validation]

    def pipeline_loop() -> list[dict]:
        return [classification_metrics(labels, pipeline_predictions(pipe, student, prefix, data, args))
                for prefix in prefixes]

    plain_name = "plain: one prefix at a time, padded to max_length"
    pipeline_name = "plain, HF pipeline: one prefix at a time, padded to max_length"
    all_name = f"fast: all {args.k} prefixes in one call"
    full_name = f"{all_name}, full last layer"
    chunk_name = f"fast: {args.chunk} prefixes per call (engine pattern)"
    contenders = {plain_name: plain}
    if not args.no_pipeline:
        contenders[pipeline_name] = pipeline_loop
    contenders[all_name] = fast_all
    if not args.no_full_layer:
        contenders[full_name] = fast_full_layer
    if args.chunk:
        contenders[chunk_name] = fast_chunked
    names = list(contenders)
    fast_names = [name for name in (all_name, chunk_name) if name in contenders]

    progress("warm-up (split tokenization cache, kernels)")
    student.score_prefixes(prefixes[:2])
    student.score_prefixes_plain(prefixes[:2])
    if not args.no_pipeline:
        pipeline_predictions(pipe, student, prefixes[0], data, args)

    times = {name: Timings() for name in names}
    peaks = GpuPeaks(device)
    results: dict[str, list[list[dict]]] = {name: [] for name in names}
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate to spread load drift
        for name in order:
            with peaks.measure(name), stopwatch(device) as t:
                results[name].append(contenders[name]())
            times[name].add(*t)
            progress(f"repeat {r + 1}/{args.repeats}  {name}: {t[0]:.2f}s wall, {t[1]:.2f}s CPU")

    reference = results[plain_name][0]
    identical = all(res == reference for name in names for res in results[name])
    with torch.inference_mode():
        sample = prefixes[:4]
        delta = (student.prefix_logits(sample) - student.prefix_logits_plain(sample)).abs().max().item()
    amp = amp_dtype(device, cfg.student.amp)
    agreement = None
    if amp is not None:
        margin = AMP_TIE_MARGIN[str(amp).replace("torch.", "")]
        with torch.inference_mode():
            agreement = amp_agreement(student.prefix_logits(prefixes),
                                      student.prefix_logits_plain(prefixes), margin)

    real = [len(ids) for p in prefixes for ids in student.encode_inputs(p)]
    fast_padded = padded_tokens(real, args.eval_batch_size)
    plain_padded = pairs * args.max_length

    key = "scoring" if args.max_length == StudentConfig().max_length else f"scoring-maxlen{args.max_length}"
    report = Report(key, "Prefix scoring: fast vs plain", device, settings={
        "model": args.model, "dataset": "twitter-sentiment", "k": args.k,
        "rows": len(data.validation), "max_length": args.max_length,
        "eval_batch_size": args.eval_batch_size, "repeats": args.repeats})
    headers = ["path", "wall s, median (min-max)", "CPU s, median (min-max)",
               "samples/s (wall)", "speed vs plain (wall)", "speed vs plain (CPU)"]
    rows = speed_rows(times, plain_name, pairs)
    if peaks.mib:
        headers.append("peak GPU MiB")
        rows = [row + [peak] for row, peak in zip(rows, peaks.column(names))]
    report.table(headers, rows)
    if agreement is None:
        checks = [["metrics identical (accuracy, macro_f1, every prefix, every repeat)",
                   "yes" if identical else "NO"]]
    else:
        dtype = str(amp).replace("torch.", "")
        ok = agreement["outside_ties"] == 0
        checks = [
            [f"{dtype} autocast: fast and plain predictions differ only at near ties "
             f"(plain top-2 logit margin < {margin})",
             f"{'yes' if ok else 'NO'}: {agreement['flipped']} of {agreement['rows']} differ, "
             f"{agreement['outside_ties']} outside the {agreement['ties']} near ties"],
            ["largest metric difference to plain (any contender, prefix, repeat)",
             f"{metric_gap(results, reference):.4f}" + (" (identical)" if identical else "")],
        ]
    checks += [
        ["max abs logit difference fast vs plain (first 4 prefixes)", f"{delta:.2e}"],
        ["tokens: real / fast padded / plain padded",
         f"{sum(real)} / {fast_padded} / {plain_padded}"],
    ]
    for name in fast_names:
        checks.append([f"{name} >= {TARGET:.0f}x plain", verdict(ratio(times[plain_name], times[name]), TARGET)])
    if pipeline_name in times:
        for name in fast_names:
            checks.append([f"{name} >= {TARGET:.0f}x HF pipeline",
                           verdict(ratio(times[pipeline_name], times[name]), TARGET)])
    if full_name in times:
        wall, cpu = ratio(times[full_name], times[all_name])
        checks.append(["first-token shortcut: fast all-in-one-call vs its full-last-layer twin",
                       f"{wall:.2f}x wall, {cpu:.2f}x CPU"])
    report.table(["check", "value"], checks)
    report.notes.append("samples: prefix x validation-row pairs scored; speed: median time of "
                        "plain / median time of the path")
    publish(report, args, machine)


if __name__ == "__main__":
    run_main(main)
