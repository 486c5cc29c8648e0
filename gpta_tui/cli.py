"""`gpta`: the headless command line. Same engine and sessions as the TUI."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from engine.errors import GptaError

COMMAND_MODULES = [
    "gpta_tui.commands.run",
    "gpta_tui.commands.sessions_cmds",
    "gpta_tui.commands.audit",
    "gpta_tui.commands.compare",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpta",
        description="Train a small NLP student with an LLM teaching assistant (GPTA). "
                    "Runs are saved as sessions under --home (or $GPTA_HOME) and can be resumed.")
    parser.add_argument("--home", type=Path, default=None,
                        help="data directory for sessions (default: $GPTA_HOME or the user data dir)")
    parser.add_argument("--log-level", default="WARNING", help="python logging level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    _home_everywhere(sub)
    return parser


def _home_everywhere(sub: argparse._SubParsersAction) -> None:
    """`gpta list --home X` works like `gpta --home X list` (both places, every command; the
    one after the command wins)."""
    for command in sub.choices.values():
        if "--home" not in command._option_string_actions:
            command.add_argument("--home", type=Path, default=argparse.SUPPRESS,
                                 help="data directory for sessions (as the global --home)")
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _home_everywhere(action)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except GptaError as exc:
        print(f"gpta: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gpta: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
