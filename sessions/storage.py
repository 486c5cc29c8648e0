"""Crash-safe TinyDB storage.

TinyDB's stock `JSONStorage` truncates the file and rewrites it in place, so a crash or a
full disk mid-write leaves a half-written database. `AtomicJSONStorage` writes the whole
database to a temporary file in the same folder, flushes and fsyncs it, then swaps it in
with `os.replace` (atomic on POSIX and Windows): a reader, or the next run after a crash,
sees either the previous complete file or the new complete file, never a mix.

`BufferedStorage` keeps the database in memory and writes it only on `flush()`, so the
session store decides when a write is worth its cost (every N steps, at phase boundaries).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

from engine.errors import GptaError, without_lone_surrogates
from engine.fsutil import stale_temp_files, write_text_atomic

__all__ = ["AtomicJSONStorage", "BufferedStorage", "DatabaseUnreadable", "atomic_write_text",
           "read_json_file", "stale_temp_files"]

class DatabaseUnreadable(GptaError):
    """The database file exists but is not a readable JSON object."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"session database {str(self.path)!r} is unreadable ({reason})")


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (engine.fsutil: temp file, fsync, rename)."""
    write_text_atomic(path, text, mkdir=False)


def read_json_file(path: Path) -> dict | None:
    """The JSON object in `path`; None if the file does not exist or is empty.

    Raises DatabaseUnreadable for anything that is not a JSON object.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DatabaseUnreadable(path, f"{type(exc).__name__}: {exc.strerror or exc}") from None
    return parse_json_object(raw, path)


# A lone surrogate (U+D800-U+DFFF without its pair) can only come from a \uD8xx-\uDFxx
# escape: valid JSON, a Python str, but text no UTF-8 writer can write (export, a rewrite)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def valid_text(raw: bytes, value: Any) -> Any:
    """`value`, parsed from `raw`, with every lone surrogate replaced by U+FFFD (the
    replacement character). Looks only when `raw` holds such an escape; RecursionError for
    nesting deeper than Python's stack allows."""
    if not _SURROGATE_ESCAPE.search(raw):
        return value

    def clean(v: Any) -> Any:
        if isinstance(v, str):
            return without_lone_surrogates(v)
        if isinstance(v, dict):
            return {clean(k): clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return clean(value)


def parse_json_object(raw: bytes, path: Path) -> dict:
    """The JSON object in the bytes `raw` of the file `path`; DatabaseUnreadable otherwise."""
    if not raw.strip():
        # An empty file is never written by AtomicJSONStorage; treat it as damage.
        raise DatabaseUnreadable(path, "the file is empty")
    try:
        data = valid_text(raw, json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: JSONDecodeError, or an integer of over 4,300 digits (Python's limit);
        # RecursionError: arrays or objects nested too deep
        raise DatabaseUnreadable(path, f"invalid JSON: {str(exc)[:200] or type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise DatabaseUnreadable(path, f"expected a JSON object, found {type(data).__name__}")
    return data


class AtomicJSONStorage(Storage):
    """A TinyDB storage that never leaves a partially written file.

    `read()` returns None for a missing file (TinyDB's "empty database") and raises
    `DatabaseUnreadable` for a damaged one instead of silently starting over.
    With `read_only=True`, `write()` raises instead of touching the file.
    """

    def __init__(self, path: str | os.PathLike, *, create_dirs: bool = False,
                 read_only: bool = False, **json_kwargs: Any):
        self.path = Path(path)
        self.read_only = read_only
        self.json_kwargs = {"ensure_ascii": False, "separators": (",", ":"), **json_kwargs}
        if create_dirs and not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def read(self) -> dict[str, dict[str, Any]] | None:
        return read_json_file(self.path)

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        if self.read_only:
            raise GptaError(f"session database {str(self.path)!r} was opened read-only",
                            "open the session for writing to change it")
        # Serialise first: a value JSON cannot hold fails here, before any file is touched.
        text = json.dumps(data, **self.json_kwargs)
        atomic_write_text(self.path, text)

    def close(self) -> None:
        pass


class BufferedStorage(Storage):
    """Holds the database in memory; `flush()` writes it through to the inner storage.

    TinyDB reads and writes the whole database on every operation; with this layer those
    are dictionary operations, and the file is written only when the owner asks.
    """

    def __init__(self, inner: Storage, initial: dict | None = None):
        self.inner = inner
        self._data: dict[str, dict[str, Any]] | None = initial
        self._dirty = False

    @property
    def dirty(self) -> bool:
        return self._dirty

    def read(self) -> dict[str, dict[str, Any]] | None:
        if self._data is None:
            self._data = self.inner.read()
        return self._data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        self._data = data
        self._dirty = True

    def flush(self) -> bool:
        """Write pending changes; True if something was written."""
        if not self._dirty or self._data is None:
            return False
        self.inner.write(self._data)
        self._dirty = False
        return True

    def close(self) -> None:
        self.inner.close()
