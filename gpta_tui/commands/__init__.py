"""Subcommands of the headless `gpta` CLI; each module exposes `register(subparsers)`."""
