"""`gpta run` and `gpta resume`: drive the engine headless, persisted as a session."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from engine.config import (DEFAULT_LR, FINETUNE_BACKENDS, MODES, PRESETS, TA_BACKENDS,
                           build_config)
from engine.controls import Controls
from engine.errors import UsageError
from gpta_tui.headless import lit

# flag -> (section, key, type); section None = top level
RUN_FLAGS: dict[str, tuple[str | None, str, type]] = {
    "name": (None, "name", str),
    "mode": (None, "mode", str),
    "seed": (None, "seed", int),
    "device": (None, "device", str),
    "dataset": ("data", "dataset", str),
    "task": ("data", "task", str),
    "metric": ("student", "metric", str),
    "text_column": ("data", "text_column", str),
    "label_column": ("data", "label_column", str),
    "description": ("data", "description", str),
    "train_size": ("data", "train_size", int),
    "val_size": ("data", "val_size", int),
    "test_size": ("data", "test_size", int),
    "student_model": ("student", "model", str),
    "tuning": ("student", "tuning", str),
    "lt_objective": ("student", "lt_objective", str),
    "lt_map": ("student", "lt_map", str),
    "lr": ("student", "lr", float),
    "batch_size": ("student", "batch_size", int),
    "eval_batch_size": ("student", "eval_batch_size", int),
    "max_length": ("student", "max_length", int),
    "ta_backend": ("ta", "backend", str),
    "ta_model": ("ta", "model", str),
    "ta_base_url": ("ta", "base_url", str),
    "temperature": ("ta", "temperature", float),
    "max_ta_tokens": ("ta", "max_tokens_budget", int),
    "max_ta_cost": ("ta", "max_cost", float),
    "finetune_backend": ("finetune", "backend", str),
    "max_windows": ("finetune", "max_windows", int),
    "epochs": ("loop", "epochs", int),
    "k": ("loop", "k", int),
    "l": ("loop", "l", int),
    "window": ("loop", "window", int),
}

HELP = {
    "mode": f"{' | '.join(MODES)} (default gpta)",
    "dataset": "twitter-sentiment (built-in, offline), a hub name such as yelp_review_full or "
               "tweet_eval:sentiment, or a CSV/JSON/JSONL/Parquet path",
    "task": "classification (default) | extractive_qa | multiple_choice | summarization",
    "metric": "validation metric that ranks prefixes and checkpoints (default: the task's own)",
    "description": "dataset description d shown to the TA (default: the dataset's own)",
    "student_model": "encoder by hub name or local path (default all-MiniLM-L6-v2, offline)",
    "tuning": "full (default) | lt-prefix | lt-prompt (L-Tuning) | prefix | prompt (peft "
              "prefix / prompt tuning); all but full freeze the encoder",
    "lt_objective": "L-Tuning objective: softmax (default: cross-entropy over all labels) | "
                    "binary (the paper's (text, label) pairs, balanced per label)",
    "lt_map": "L-Tuning label map: pooled (default: 8 pooled slots + MLP) | token (the paper's "
              "linear map of every label token; prefix length = label length)",
    "lr": "learning rate (default: the tuning's own, " + ", ".join(
        f"{t} {v:g}" for t, v in DEFAULT_LR.items()) + ")",
    "ta_backend": " | ".join(TA_BACKENDS) + " (default local)",
    "ta_model": "local: causal LM name/path (default gemma-3-270m, offline); openai: model id",
    "ta_base_url": "OpenAI-compatible endpoint (default $OPENAI_BASE_URL)",
    "finetune_backend": " | ".join(FINETUNE_BACKENDS) + " (default auto: local LoRA for a local "
                        "TA, none otherwise)",
    "k": "history size per epoch (paper: 50)",
    "l": "prefixes asked per TA request",
    "window": "dialogue-gradient window w (paper: 5)",
    "device": "auto | cpu | cuda | cuda:N | mps",
    "batch_size": "student training batch (lower it when training runs out of GPU memory)",
    "eval_batch_size": "rows per scoring pass (default 0 = auto: 256 on CUDA, 64 elsewhere; "
                       "lower it when scoring runs out of GPU memory)",
    "max_ta_tokens": "stop TA calls after this many tokens (0 = no limit)",
    "max_ta_cost": "stop TA calls after this estimated cost (0 = no limit)",
}


def overrides_from_args(args: argparse.Namespace) -> dict:
    out: dict = {}
    for flag, (section, key, _typ) in RUN_FLAGS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if section is None:
            out[key] = value
        else:
            out.setdefault(section, {})[key] = value
    return out


def check_paper_preset(args: argparse.Namespace, config) -> None:
    """The `paper` preset names Hub and OpenAI models: refuse at once, in one line, when they
    cannot be had here (rather than failing minutes later at model loading)."""
    from engine.config import load_toml, paper_preset_problem

    preset = args.preset or (load_toml(args.config).get("preset") if args.config else None)
    if preset == "paper":
        problem = paper_preset_problem(config)
        if problem:
            raise UsageError(problem, "set the missing key / go online, or use --preset paper-sizes")


def register(subparsers) -> None:
    run = subparsers.add_parser(
        "run", help="start a new run (a saved, resumable session)",
        description="Run the GPTA loop headless. Settings: preset <- --config TOML <- flags.")
    run.add_argument("--config", type=Path, help="TOML file with [data] [student] [ta] "
                     "[finetune] [loop] sections (see README)")
    run.add_argument("--preset", choices=sorted(PRESETS), help="smoke (minutes on CPU), "
                     "default, paper-sizes (the paper's sizes, offline models) or paper (the "
                     "paper's sizes and models: bert-base-uncased and an OpenAI TA with "
                     "fine-tuning; needs the Hub and OPENAI_API_KEY)")
    for flag, (_section, _key, typ) in RUN_FLAGS.items():
        run.add_argument("--" + flag.replace("_", "-"), dest=flag, type=typ, default=None,
                         help=HELP.get(flag))
    run.add_argument("--seed-prefixes", type=Path, metavar="FILE",
                     help="prefix set (from `gpta prefixes export`) that replaces the first TA "
                          "call: the first trains epoch 1, the rest join the history")
    run.add_argument("--fixed-prefix", action="store_true",
                     help="with --seed-prefixes: train every epoch with its first prefix, no TA")
    run.add_argument("--verbose", "-v", action="store_true", help="print every scored prefix")
    run.set_defaults(handler=cmd_run)

    resume = subparsers.add_parser("resume", help="continue a saved session where it stopped")
    resume.add_argument("name", help="session name (see `gpta list`)")
    resume.add_argument("--verbose", "-v", action="store_true")
    # settings a resumed session may change: they do not change its results
    resume.add_argument("--device", default=None, help=HELP["device"] + " (default: the session's)")
    resume.add_argument("--eval-batch-size", dest="eval_batch_size", type=int, default=None,
                        help="rows per scoring pass (e.g. after running out of GPU memory)")
    resume.add_argument("--ta-base-url", dest="ta_base_url", default=None,
                        help="OpenAI-compatible endpoint for this run; credentials in it "
                             "(user:password@host) are used but never stored")
    resume.set_defaults(handler=cmd_resume)


def _drive(handle, engine, view, new: bool = False) -> int:
    """Run the engine in this thread; Ctrl-C or SIGTERM asks it to stop at the next step
    boundary (saved, resumable; exit 130 or 143), a second one aborts.

    A new session whose run fails before it got past setup (bad dataset, missing model, an
    unreachable TA) holds nothing worth keeping: it is deleted, and the user is told so.
    """
    from sessions.runner import run_session

    controls: Controls = engine.controls
    received: list[int] = []

    def on_signal(signum, frame):  # first: graceful stop; second: hard interrupt
        if controls.stop_requested:
            if signum == signal.SIGTERM:
                raise SystemExit(128 + signum)
            raise KeyboardInterrupt
        received.append(signum)
        what = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        view.console.print(f"[yellow]{what}: stopping at the next step boundary "
                           f"({what} again to abort)...[/]")
        controls.stop()

    def removed(name: str) -> None:
        view.console.print(f"removed the new session {lit(name)}: it failed before "
                           "training started, so there is nothing to resume")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        finished = run_session(handle, engine, new=new, on_removed=removed)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        view.close()
    if finished.status == "stopped":
        view.console.print(f"session saved; continue with: gpta resume {lit(handle.name)}")
        return 128 + (received[0] if received else signal.SIGINT)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from gpta_tui.headless import HeadlessView
    from sessions.runner import start_session

    overrides = overrides_from_args(args)
    if args.fixed_prefix and not args.seed_prefixes:
        raise UsageError("--fixed-prefix needs --seed-prefixes FILE",
                         "export one with: gpta prefixes export NAME FILE")
    if args.seed_prefixes:
        from engine.experiments import seed_prefix_settings

        overrides.setdefault("loop", {}).update(
            seed_prefix_settings(args.seed_prefixes, args.fixed_prefix))
    config = build_config(args.preset, args.config, overrides)
    check_paper_preset(args, config)
    view = HeadlessView(verbose=args.verbose)
    handle, engine = start_session(config, args.home, listeners=[view], controls=Controls())
    view.expect_load(handle.config.to_dict(), resumed=False)
    view.console.print(f"session [bold]{lit(handle.name)}[/] in {lit(handle.dir)}")
    return _drive(handle, engine, view, new=True)


def cmd_resume(args: argparse.Namespace) -> int:
    from gpta_tui.headless import HeadlessView
    from sessions.runner import resume_session

    overrides: dict = {}
    if args.device is not None:
        overrides["device"] = args.device
    if args.eval_batch_size is not None:
        overrides["student"] = {"eval_batch_size": args.eval_batch_size}
    view = HeadlessView(verbose=args.verbose)
    if args.ta_base_url:
        overrides["ta"] = {"base_url": args.ta_base_url}
    handle, engine = resume_session(args.name, args.home, listeners=[view], controls=Controls(),
                                    overrides=overrides or None)
    view.expect_load(handle.config.to_dict(), resumed=True)
    return _drive(handle, engine, view)
