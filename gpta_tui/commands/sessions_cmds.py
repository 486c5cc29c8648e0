"""`gpta list | show | delete | export | import`: manage saved sessions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.errors import UsageError, strip_control
from engine.state import best_validation
from gpta_tui.formatting import ta_usage_text
from sessions.store import SessionStore, format_ts

STATUS_STYLE = {"running": "green", "paused": "yellow", "interrupted": "magenta",
                "failed": "red", "finished": "bold", "unreadable": "red"}


def register(subparsers) -> None:
    p = subparsers.add_parser("list", help="list saved sessions")
    p.set_defaults(handler=cmd_list)

    p = subparsers.add_parser("show", help="show one session: status, config, per-epoch results")
    p.add_argument("name", help="session name (see `gpta list`)")
    p.add_argument("--json", action="store_true", help="print the session record as JSON")
    p.set_defaults(handler=cmd_show)

    p = subparsers.add_parser("delete", help="delete a session and its checkpoints")
    p.add_argument("name", help="session name (see `gpta list`)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler=cmd_delete)

    p = subparsers.add_parser("export", help="write a session's results and report to a folder")
    p.add_argument("name", help="session name (see `gpta list`)")
    p.add_argument("dir", type=Path, help="new or empty folder to write to")
    p.set_defaults(handler=cmd_export)

    p = subparsers.add_parser("import", help="recreate a session from an export folder")
    p.add_argument("dir", type=Path, help="folder written by `gpta export`")
    p.add_argument("--name", help="import under this name instead of the exported one")
    p.set_defaults(handler=cmd_import)


def _store(args: argparse.Namespace) -> SessionStore:
    return SessionStore(getattr(args, "home", None))


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


METRIC_SHORT = {"accuracy": "acc", "macro_f1": "F1"}


def _lit(value: object) -> str:
    """Stored text (paths, names, prefixes, messages) as Rich shows it literally: no markup
    is parsed and no control byte reaches the terminal."""
    return escape(strip_control(value))


def _metric(value: float | None, name: str) -> str:
    return "-" if value is None else f"{METRIC_SHORT.get(name, name)} {value:.4f}"


def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    sessions = store.list()
    console = _console()
    if not sessions:
        console.print(f"No sessions in {_lit(store.root)}. Start one with `gpta run`.")
        return 0
    table = Table(title=f"Sessions in {_lit(store.root)}", title_justify="left")
    # Long names fold onto more lines and the other columns keep their width, so a narrow or
    # piped (80-column) output never squeezes a column to nothing; below 120 columns the
    # dataset and the update time are left out (`gpta show` has them).
    wide = console.width >= 120
    columns = [("name", 12), ("mode", 13), ("dataset", 10), ("status", 9), ("epoch", 5),
               ("best val", 10), ("test", 10), ("updated", 16)]
    if not wide:
        columns = [c for c in columns if c[0] not in ("dataset", "updated")]
    for column, min_width in columns:
        table.add_column(column, min_width=min_width, overflow="fold",
                         no_wrap=column not in ("name", "dataset"))
    for s in sessions:
        style = STATUS_STYLE.get(s.status, "")
        status = f"[{style}]{s.status}[/]" if style else s.status
        epoch = f"{s.epoch}/{s.epochs}" if s.epochs else "-"
        test = s.test_metrics.get(s.metric) if s.test_metrics else None
        cells = {"name": _lit(s.name), "mode": _lit(s.mode), "dataset": _lit(s.dataset),
                 "status": status, "epoch": epoch, "best val": _lit(_metric(s.best_metric, s.metric)),
                 "test": _lit(_metric(test, s.metric)), "updated": format_ts(s.updated)}
        table.add_row(*(cells[c] for c, _ in columns))
    console.print(table)
    for s in sessions:
        if s.error:
            console.print(f"[red]{_lit(s.name)}[/]: {_lit(s.error)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    handle = _store(args).open(args.name)
    rec = handle.record()
    # ensure_ascii: every control character (C0 and C1) is printed as a \uXXXX escape, never raw
    if args.json:
        rec.pop("state", None)
        print(json.dumps(rec, indent=2, ensure_ascii=True, default=str))
        return 0
    cfg = rec.get("config", {})
    metric = cfg.get("student", {}).get("metric", "accuracy")
    console = _console()
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    reason = f" ({_lit(rec['status_reason'])})" if rec.get("status_reason") else ""
    status = _lit(rec["status"])
    info.add_row("session", f"{_lit(handle.name)}  [dim]{_lit(handle.dir)}[/]")
    info.add_row("status", f"[{STATUS_STYLE.get(rec['status'], '')}]{status}[/]{reason}"
                 if STATUS_STYLE.get(rec["status"]) else status + reason)
    info.add_row("mode", _lit(f"{cfg.get('mode')}  seed {cfg.get('seed')}"))
    info.add_row("dataset", _lit(cfg.get("data", {}).get("dataset")))
    info.add_row("student", _lit(f"{cfg.get('student', {}).get('model')} "
                                 f"({cfg.get('student', {}).get('tuning')})"))
    ta = cfg.get("ta", {})
    info.add_row("TA", _lit(f"{ta.get('backend')} {ta.get('model')}"
                            + (f" -> {rec['ta_model']}" if rec.get("ta_model") else "")))
    info.add_row("progress", _lit(f"epoch {rec.get('epoch')}/{cfg.get('loop', {}).get('epochs')}, "
                                  f"phase {rec.get('phase')}, step {rec.get('step')}"))
    best = rec.get("best") or {}
    if best:
        selection = (best.get("selection_metrics") or {}).get(metric) \
            if isinstance(best.get("selection_metrics"), dict) else None
        figures = f"val {_metric(best_validation(best, metric), metric)}" + (
            f", selection {_metric(selection, metric)}" if isinstance(selection, (int, float)) else "")
        info.add_row("best", _lit(f"epoch {best.get('epoch')}: {figures}  {best.get('prefix', '')!r}"))
    info.add_row("created", format_ts(rec.get("created")))
    info.add_row("updated", format_ts(rec.get("updated")))
    if rec.get("resumes"):
        info.add_row("resumed", f"{len(rec['resumes'])} time(s)")
    console.print(info)

    validations = handle.validations()
    if validations:
        accuracy = {a["epoch"]: a for a in handle.prefix_accuracy()}
        table = Table(title="Epochs", title_justify="left")
        for column in ("epoch", "training prefix", f"val {metric}", "prefix accuracy"):
            table.add_column(column)
        for v in validations:
            acc = accuracy.get(v["epoch"])
            table.add_row(str(v["epoch"]), _lit(v["prefix"]) or "(none)",
                          f"{v['metrics'].get(metric, float('nan')):.4f}",
                          f"{acc['accuracy']:.2f}" if acc else "-")
        console.print(table)
    finished = rec.get("finished") or {}
    if finished.get("test_metrics"):
        console.print(_lit("test: " + ", ".join(f"{k} {v:.4f}" for k, v in finished["test_metrics"].items())
                           + ("   without prefix: " + ", ".join(
                               f"{k} {v:.4f}" for k, v in finished["test_metrics_no_prefix"].items())
                              if finished.get("test_metrics_no_prefix") else "")))
    usage = handle.ta_usage()
    if usage.requests:
        console.print(f"TA: {ta_usage_text(usage.requests, usage.tokens, usage.cost)}; "
                      f"fine-tune jobs: {len(handle.jobs())}")
    problems = [n for n in handle.notices() if n["level"] in ("warning", "error")]
    for n in problems[-5:]:
        console.print(f"[{'red' if n['level'] == 'error' else 'yellow'}]{_lit(n['level'])}[/]: "
                      f"{_lit(n['message'])}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    store = _store(args)
    if not store.session_dir(args.name).is_dir():
        raise UsageError(f"no session named {args.name!r} in {str(store.root)!r}",
                         "run `gpta list` to see the saved sessions")
    if not args.yes:
        if not sys.stdin or not sys.stdin.isatty():
            raise UsageError(f"refusing to delete session {args.name!r} without confirmation "
                             "(no terminal to ask)", "pass --yes to delete it")
        answer = input(f"Delete session {args.name!r} and everything in "
                       f"{store.session_dir(args.name)}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing deleted.")
            return 1
    store.delete(args.name)
    print(f"Deleted session {args.name}.")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sessions.export import export_session

    handle = _store(args).open(args.name)
    out = export_session(handle, args.dir)
    print(f"Exported session {args.name} to {out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from sessions.export import import_session

    name = import_session(_store(args), args.dir, name=args.name)
    print(f"Imported session {name}.")
    return 0
