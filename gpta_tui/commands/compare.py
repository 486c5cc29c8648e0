"""`gpta compare` (the paper's comparison as sessions, with a results table and charts) and
`gpta prefixes export` (a session's best prefixes as a prefix set for transfer)."""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path

from engine.config import PRESETS, build_config
from engine.controls import Controls
from engine.errors import UsageError
from engine.experiments import (ARMS, CompareSpec, build_table, export_prefix_set,
                                load_prefix_set, table_markdown, write_reports)
from gpta_tui.commands.run import HELP, RUN_FLAGS, overrides_from_args
from sessions.compare import collect_results, default_out_dir, load_spec, read_manifest, run_compare

# flags of `gpta run` that a comparison sets per run itself
OWN = {"name", "mode", "seed", "train_size", "max_windows"}
PLAN_FLAGS = ("modes", "seeds", "seed", "train_sizes", "max_windows", "preset", "config",
              "seed_prefixes")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="run the paper's comparison (modes x seeds x train sizes) and report it",
        description="Run every mode x seed x train size (x --max-windows) as an ordinary session "
                    "named NAME-MODE-sSEED-nSIZE[-wWINDOWS], then write a results table (mean ± std, "
                    "ranks, gain over baseline with a paired t-test) as Markdown and CSV, and "
                    "charts as PNG, to --out (default $GPTA_HOME/compare/NAME). Running it again "
                    "skips finished sessions and resumes the rest.")
    p.add_argument("--name", help="comparison name, the prefix of its session names "
                   "(default cmp-MMDD-HHMM)")
    p.add_argument("--out", type=Path, help="folder for manifest and reports "
                   "(default $GPTA_HOME/compare/NAME)")
    p.add_argument("--modes", help=f"comma list of {', '.join(ARMS)} (default baseline,gpta); "
                   "fixed and seeded need --seed-prefixes")
    p.add_argument("--seeds", type=int, help="number of seeds per setting (default 3)")
    p.add_argument("--seed", type=int, help="first seed; the others follow it (default: the config's)")
    p.add_argument("--train-sizes", help="comma list of training set sizes (default: the config's)")
    p.add_argument("--max-windows", help="comma list: TA data-scale ablation, windows used to "
                   "fine-tune the TA (paper Table 2: 50,100,150,200); needs a fine-tune backend")
    p.add_argument("--seed-prefixes", type=Path, metavar="FILE",
                   help="prefix set (gpta prefixes export) for the fixed and seeded modes")
    p.add_argument("--config", type=Path, help="TOML file, as for gpta run")
    p.add_argument("--preset", choices=sorted(PRESETS), help="smoke, default, paper-sizes or paper (see gpta run --help)")
    for flag, (_section, _key, typ) in RUN_FLAGS.items():
        if flag not in OWN:
            p.add_argument("--" + flag.replace("_", "-"), dest=flag, type=typ, default=None,
                           help=HELP.get(flag))
    p.add_argument("--resume", action="store_true",
                   help="continue comparison --name with the settings it was started with")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write the reports from the sessions finished so far")
    p.add_argument("--keep-going", action="store_true",
                   help="go on with the next run when one fails (default: stop, resumable); "
                   "with --executor ray a failed run never stops the others")
    ray = p.add_argument_group(
        "scale-out", "Run the runs side by side as Ray tasks (pip install 'gpta-tui[cluster]'). "
        "These options say how, not what: they may change on --resume.")
    ray.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="local: one run after another in this process (default); ray: every "
                     "run a Ray task on a local Ray instance or the cluster at --ray-address")
    ray.add_argument("--ray-address", metavar="ADDR",
                     help="Ray cluster to join (auto, HOST:PORT or ray://HOST:10001); default: "
                     "start a local Ray instance on this machine's CPUs and GPUs")
    ray.add_argument("--gpus-per-run", type=float, default=0.0, metavar="G",
                     help="GPUs per run (default 0: train on CPUs); 0.5 puts two runs on a GPU. "
                     "Ray sets each task's CUDA_VISIBLE_DEVICES and the run uses device cuda")
    ray.add_argument("--cpus-per-run", type=int, default=1, metavar="C",
                     help="CPUs per run, also its torch thread count (default 1)")
    ray.add_argument("--max-retries", type=int, default=3, metavar="N",
                     help="times Ray reruns a run whose worker process or node died (default 3; "
                     "0: never). A run that fails for its own reasons is never retried")
    ray.add_argument("--shared-home", action="store_true",
                     help="every Ray node sees GPTA_HOME at the same path: runs write there "
                     "directly and a retried run resumes from its last checkpoint (default: a "
                     "run works in its worker's own folder and its session is imported here "
                     "when it ends; checkpoints stay behind)")
    p.set_defaults(handler=cmd_compare)

    prefixes = subparsers.add_parser("prefixes", help="prefix sets for prefix transfer",
                                     description="Export the best prefixes of a session, to seed "
                                                 "runs on other datasets (gpta run --seed-prefixes).")
    sub = prefixes.add_subparsers(dest="prefixes_command", metavar="ACTION")
    exp = sub.add_parser("export", help="write a finished session's top prefixes as JSON")
    exp.add_argument("name", help="session name (see `gpta list`)")
    exp.add_argument("file", type=Path, help="JSON file to write")
    exp.add_argument("--top", type=int, default=5, help="how many prefixes (default 5)")
    exp.set_defaults(handler=cmd_prefixes_export)
    prefixes.set_defaults(handler=lambda args: _usage(prefixes))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _csv_ints(flag: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a comma list of whole numbers",
                         f"write it like {flag} 500,1000") from None
    if not values:
        raise UsageError(f"{flag} is empty", f"write it like {flag} 500,1000")
    return values


def spec_from_args(args: argparse.Namespace, name: str) -> CompareSpec:
    """The comparison plan from command-line options (settings layered as for gpta run)."""
    overrides = {k: v for k, v in overrides_from_args(args).items() if k not in OWN}
    if args.seed is not None:
        overrides["seed"] = args.seed
    config = build_config(args.preset, args.config, overrides)
    from gpta_tui.commands.run import check_paper_preset

    check_paper_preset(args, config)
    modes = [m.strip() for m in (args.modes or "baseline,gpta").split(",") if m.strip()]
    n_seeds = 3 if args.seeds is None else args.seeds
    if n_seeds <= 0:
        raise UsageError(f"invalid --seeds {n_seeds}", "use a number of seeds greater than 0")
    sizes = _csv_ints("--train-sizes", args.train_sizes) if args.train_sizes else None
    windows = _csv_ints("--max-windows", args.max_windows) if args.max_windows else []
    prefixes = load_prefix_set(args.seed_prefixes) if args.seed_prefixes else []
    return CompareSpec.create(name, config, arms=modes,
                              seeds=[config.seed + i for i in range(n_seeds)],
                              train_sizes=sizes, max_windows=windows, seed_prefixes=prefixes)


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from gpta_tui.headless import HeadlessView

    console = Console(stderr=True)
    ray_flags = [f for f, default in (("ray_address", None), ("gpus_per_run", 0.0),
                                      ("cpus_per_run", 1), ("max_retries", 3),
                                      ("shared_home", False))
                 if getattr(args, f, default) != default]
    if args.executor != "ray" and ray_flags:
        raise UsageError(f"--{ray_flags[0].replace('_', '-')} needs --executor ray",
                         "add --executor ray, or drop it to run here one run after another")
    if args.executor == "ray" and getattr(args, "device", None) is not None:
        raise UsageError("--device cannot be combined with --executor ray (Ray gives each run "
                         "its GPUs, so a run's device follows --gpus-per-run)",
                         "drop --device; use --gpus-per-run G to train on GPUs")
    given = [f for f in PLAN_FLAGS if getattr(args, f, None) is not None]
    given += [f for f in RUN_FLAGS if f not in OWN and getattr(args, f, None) is not None]
    if args.resume or args.report_only:
        if not args.name:
            raise UsageError("--resume and --report-only need the comparison's --name",
                             "pass --name NAME (see the folders in $GPTA_HOME/compare)")
        if given:
            flags = ", ".join("--" + f.replace("_", "-") for f in given)
            raise UsageError(f"{flags} cannot change a saved comparison",
                             "drop them to continue with its settings, or start a new --name")
        out = args.out or default_out_dir(args.home, args.name)
        spec = load_spec(out)
    else:
        name = args.name or f"cmp-{time.strftime('%m%d-%H%M')}"
        spec = spec_from_args(args, name)
        out = args.out or default_out_dir(args.home, name)

    status = "finished"
    if not args.report_only:
        controls = Controls()

        def on_sigint(signum, frame):  # first Ctrl-C: stop at a step boundary; second: abort
            if controls.stop_requested:
                raise KeyboardInterrupt
            console.print("[yellow]stopping at the next step boundary (Ctrl-C again to abort)...[/]")
            controls.stop()

        say = lambda text: console.print(f"[bold cyan]{escape(text)}[/]", highlight=False)  # noqa: E731
        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            if args.executor == "ray":
                outcome = _compare_on_ray(args, spec, out, controls, console, say)
            else:
                outcome = run_compare(
                    spec, args.home, out, controls=controls, keep_going=args.keep_going,
                    listeners_for=lambda run, i, total: [HeadlessView(console=console)], say=say)
        finally:
            signal.signal(signal.SIGINT, previous)
        status = outcome.status
        console.print(f"comparison {spec.name}: {len(outcome.ran)} run(s) this time, "
                      f"{len(outcome.skipped)} finished earlier, wall {outcome.wall_s:.0f}s")

    manifest = read_manifest(out)
    results = collect_results(spec, args.home, manifest)
    files = write_reports(spec, results, out, manifest)
    print(table_markdown(build_table(spec, results)), end="")
    console.print("reports: " + ", ".join(str(p) for p in files.values()), highlight=False)
    if status == "stopped":
        console.print(f"saved; continue with: gpta compare --resume --name {spec.name}"
                      + (f" --out {out}" if args.out else ""))
        return 130
    if status == "failed":
        console.print(f"[red]a run failed; fix the cause and continue with: gpta compare --resume "
                      f"--name {spec.name}[/]" + (f" --out {out}" if args.out else ""))
        return 1
    return 0


def _compare_on_ray(args: argparse.Namespace, spec: CompareSpec, out: Path, controls: Controls,
                    console, say):
    """The runs as Ray tasks, with a live view: a progress bar with ETA over the runs, and runs
    queued / running / finished / failed per node."""
    from rich.console import Group
    from rich.live import Live
    from rich.progress import (BarColumn, Progress, TaskProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.markup import escape as escape_text
    from rich.table import Table

    from sessions.cluster import ClusterOptions, run_compare_ray

    options = ClusterOptions(address=args.ray_address, gpus_per_run=args.gpus_per_run,
                             cpus_per_run=args.cpus_per_run, shared_home=args.shared_home,
                             max_retries=args.max_retries)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
    task = bar.add_task("runs", total=None)

    def render(progress) -> Group:
        counts = progress.counts()
        bar.update(task, total=max(1, len(progress.runs)), completed=progress.done(),
                   description=f"runs: {counts['queued']} queued, {counts['running']} running, "
                               f"{counts['finished']} finished, {counts['failed']} failed"
                               + (f", {progress.retried()} retried" if progress.retried() else ""))
        table = Table("node", "running", "finished", "failed", "stopped", box=None, pad_edge=False)
        for node, c in progress.per_node().items():
            table.add_row(escape_text(node), str(c["running"]), str(c["finished"]),
                          str(c["failed"]), str(c["stopped"] + c["interrupted"]))
        return Group(bar, table)

    with Live(console=console, refresh_per_second=2, transient=False) as live:
        return run_compare_ray(spec, args.home, out, options, controls=controls, say=say,
                               on_progress=lambda progress: live.update(render(progress)))


def cmd_prefixes_export(args: argparse.Namespace) -> int:
    from sessions.store import SessionStore

    with SessionStore(args.home).open(args.name) as handle:
        data = export_prefix_set(handle, args.file, args.top)
    print(f"wrote {len(data['prefixes'])} prefixes of session {args.name} to {args.file}")
    for i, item in enumerate(data["prefixes"], 1):
        score = "-" if item["score"] is None else f"{item['score']:.4f}"
        print(f"  {i}. {score}  {item['prefix']}")
    return 0
