"""Containment of paths that come from stored state, imports, configs or TA replies.

A session's state names its checkpoints, best checkpoint, adapters and window files by
paths. Those strings are untrusted (a hand-edited export, a damaged database), so nothing is
read, written or deleted through them before `contained` has checked that the path lies
strictly inside its session folder. Every call site uses this one helper.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from engine.errors import GptaError


#: A session (and comparison) name: a file name on every platform, at most 64 characters.
#: Use with .match; \Z (not $) so that a trailing newline does not pass.
SESSION_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


class UnsafePath(GptaError):
    """A stored path that points outside its session folder (or is not a path at all)."""


def contained(base: Path | str, ref: object, what: str) -> Path:
    """The absolute path of `ref` inside `base`, or UnsafePath (nothing is touched).

    `ref` may be relative to `base` or absolute; it must be a non-empty string, and after
    resolving `..` and symbolic links it must lie strictly below `base` (never `base` itself).
    """
    fix = "the session's stored state was altered or damaged; delete the session or import a clean export"
    if not isinstance(ref, str) or not ref.strip():
        raise UnsafePath(f"{what} path is empty or not a string ({type(ref).__name__})", fix)
    if "\x00" in ref:
        raise UnsafePath(f"{what} path contains a NUL byte", fix)
    root = Path(base).expanduser().resolve()
    candidate = Path(ref)
    if not candidate.is_absolute():
        candidate = root / candidate
    resolved = Path(os.path.realpath(candidate))
    if resolved == root or root not in resolved.parents:
        raise UnsafePath(f"{what} path {ref!r} lies outside the session folder {str(root)!r}", fix)
    return resolved


def is_contained(base: Path | str, ref: object) -> bool:
    try:
        contained(base, ref, "path")
    except UnsafePath:
        return False
    return True
