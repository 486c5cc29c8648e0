"""Append-only JSON-lines files: the session's high-rate series (training loss points in
`loss.jsonl`, TA calls with their prompts and replies in `ta_calls.jsonl`, each epoch's
dialogue-gradient windows in `windows.jsonl`, scored prefixes in `scored.jsonl`, each epoch's
sorted history in `history.jsonl`).

TinyDB rewrites its whole file on every write, so a series that grows with the run (31,250
loss points in a paper-scale run) makes every write cost more than the last. Loss points
therefore live in `loss.jsonl` beside the database, one JSON object per line, and a write
appends only the new lines: its cost does not depend on how long the run has been going.

Write policy (the session store decides when; see `sessions/store.py`):

- `write(sync=False)`: the buffered lines go to the file with one `write(2)` on an
  `O_APPEND` descriptor. No fsync: once `write` returned, the lines are in the kernel's page
  cache and survive a SIGKILL of the process; only a power loss or kernel crash could take
  them, and then ...
- `write(sync=True)`: ... the file is fsynced before the database records anything that
  refers to it (a checkpoint, a phase boundary, the end), so a durable checkpoint at step S
  always has its loss points up to S durable too.
- A write cut short (disk full) is cut back to the last complete line, so the file never
  holds a partial line followed by whole ones.
- `replace(records)` rewrites the file atomically (temp file, fsync, rename): used when a
  resume forgets the points after its checkpoint and when a schema-2 session moves its
  points out of the database. Both are once per resume or migration, not per step.

Reading trusts nothing: only regular files (never a symbolic link), every complete line a
JSON object. A last line without its newline is a write a crash cut short: readers ignore
it, and a writer cuts it off (`repair`) before it appends. Any other damage is one
`DatabaseUnreadable`.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Callable, Iterable

from engine.errors import utf8
from engine.fsutil import fsync_dir, write_text_atomic
from sessions.storage import DatabaseUnreadable, valid_text

LOSS_FILE = "loss.jsonl"
TA_FILE = "ta_calls.jsonl"  # schema 4: TA requests and responses (sessions/store.py)
WINDOWS_FILE = "windows.jsonl"  # schema 4: the dialogue-gradient windows of each epoch
SCORED_FILE = "scored.jsonl"    # schema 5: every scored prefix
HISTORY_FILE = "history.jsonl"  # schema 5: each epoch's sorted history (the later line wins)
LOG_FILES = (LOSS_FILE, TA_FILE, WINDOWS_FILE, SCORED_FILE, HISTORY_FILE)
MAX_LOG_BYTES = 256 * 2**20  # about a million loss points; more is not a file gpta wrote

# One encoder for every line: json.dumps with options builds a new encoder per call, which
# was most of the cost of writing out a 31,250-point log (export).
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def line_of(record: dict) -> str:
    """One record as a log line (newline included)."""
    return _ENCODE(record) + "\n"


def read_raw(path: Path | str, max_bytes: int = MAX_LOG_BYTES) -> bytes | None:
    """The bytes of a regular file (None when there is none). Links, devices, FIFOs and
    files over `max_bytes` raise DatabaseUnreadable."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        if os.path.islink(path):
            raise DatabaseUnreadable(path, "it is a symbolic link") from None
        return None
    except OSError as exc:
        why = "it is a symbolic link" if os.path.islink(path) else (exc.strerror or str(exc))
        raise DatabaseUnreadable(path, why) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DatabaseUnreadable(path, "it is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise DatabaseUnreadable(path, f"it is larger than {max_bytes // 2**20} MiB")
    return raw


def parse(raw: bytes, path: Path | str, *, strict: bool = False
          ) -> tuple[list[tuple[int, dict]], int, list[str]]:
    """([(line number, record)], length of the complete part, problems) of a log's bytes.
    A last line without its newline (a torn write) is left out; a line that is not a JSON
    object is left out and named in the problems. `strict` (import) refuses both instead."""
    end = raw.rfind(b"\n") + 1
    if end < len(raw) and strict:
        raise DatabaseUnreadable(Path(path), "its last line is incomplete")
    fast = _whole_lines(raw[:end])
    if fast is not None:
        try:
            return list(enumerate(valid_text(raw[:end], fast), start=1)), end, []
        except RecursionError:
            pass  # the line reader names the line
    lines = raw[:end].split(b"\n")[:-1]
    records, problems = [], []
    for number, line in enumerate(lines, start=1):
        try:
            record = valid_text(line, json.loads(line.decode("utf-8")))
            problem = "" if isinstance(record, dict) else \
                f"line {number} is a {type(record).__name__}, not a JSON object"
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            # ValueError: JSONDecodeError, or an integer of over 4,300 digits
            problem = f"line {number} is not JSON: {str(exc)[:200] or type(exc).__name__}"
        if problem and strict:
            raise DatabaseUnreadable(Path(path), problem)
        if problem:
            problems.append(problem)
        else:
            records.append((number, record))
    return records, end, problems


_DECODE = json.JSONDecoder().raw_decode


def _whole_lines(text: bytes) -> list[dict] | None:
    """The records of complete lines that are each exactly one JSON object (no whitespace
    around it): what the line-by-line reader returns for them, about 1.3x faster. None at
    the first line that is anything else: the caller then reads line by line and names it.
    Each object must end exactly at the first newline after its start, so no record can
    span lines (a newline is JSON whitespace: raw_decode takes `{\n"a": 1}` as one object)."""
    try:
        s = text.decode("utf-8")
        out, pos, n = [], 0, len(s)
        while pos < n:
            newline = s.find("\n", pos)
            record, pos = _DECODE(s, pos)
            if pos != newline or type(record) is not dict:
                return None
            out.append(record)
            pos += 1
        return out
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None  # ValueError: also an integer of over 4,300 digits (Python's limit)


def read(path: Path | str) -> tuple[list[tuple[int, dict]], list[str], bool]:
    """([(line number, record)], problems, torn tail?) of the log at `path` (none: empty)."""
    records, problems, torn, _ = _read(path)
    return records, problems, torn


def _read(path: Path | str) -> tuple[list[tuple[int, dict]], list[str], bool, bytes]:
    raw = read_raw(path)
    if raw is None:
        return [], [], False, b""
    records, end, problems = parse(raw, path)
    return records, problems, end < len(raw), raw[:end]


def load(path: Path | str, accept: Callable[[Any], Any], explain: Callable[[Any], str]
         ) -> tuple[list[Any], str, bool]:
    """A log for a session handle, which treats it as display data: ([accept(record) of every
    record it accepts (not None)], problem, damaged?). A link or other non-file is ignored, a
    torn last line and records `accept` refuses are left out; `problem` says so in one line
    (empty when only a torn tail was cut: that is what a crash leaves) and `explain(record)`
    names what is wrong with the first refused one. `damaged` tells a writer to rewrite the
    file clean before it appends (`AppendLog.replace`)."""
    return load_with_bytes(path, accept, explain)[:3]


def load_with_bytes(path: Path | str, accept: Callable[[Any], Any],
                    explain: Callable[[Any], str]) -> tuple[list[Any], str, bool, bytes | None]:
    """`load`, and the file's bytes when they say exactly what was loaded: nothing left out
    and every value the parsed record itself (`accept` returned it unchanged); else None."""
    try:
        records, problems, torn, raw = _read(path)
    except DatabaseUnreadable as exc:
        return [], f"{str(exc.path)!r} was ignored ({exc.reason})", True, None
    out = []
    as_is = True
    for number, record in records:
        value = accept(record)
        if value is None:
            problems.append(f"line {number}: {explain(record)}")
        else:
            as_is = as_is and value is record
            out.append(value)
    problem = (f"{str(Path(path))!r}: {problems[0]} ({len(problems)} line(s) left out)"
               if problems else "")
    damaged = bool(problems) or torn
    return out, problem, damaged, raw if as_is and not damaged else None


def read_strict(path: Path | str, explain: Callable[[Any], str | None]) -> list[dict]:
    """Every record of an imported log (none without a file): a regular file under the cap,
    every line complete and a JSON object `explain` finds nothing wrong with; otherwise one
    DatabaseUnreadable naming the line."""
    raw = read_raw(path)
    if raw is None:
        return []
    out = []
    for number, record in parse(raw, path, strict=True)[0]:
        problem = explain(record)
        if problem:
            raise DatabaseUnreadable(Path(path), f"line {number}: {problem}")
        out.append(record)
    return out


class AppendLog:
    """The writing end of one log: buffered lines, appended by `write`. Not thread-safe on
    its own: the session handle calls it under its lock."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._pending: list[str] = []
        self._fd: int | None = None
        self._size = 0            # bytes of complete lines in the file
        self._unsynced = False
        self._created = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def append(self, record: dict) -> None:
        self._pending.append(line_of(record))

    def repair(self, complete: int, length: int) -> None:
        """Cut a torn last line off (the file is `length` bytes, `complete` of them whole)."""
        if complete < length:
            fd = self._open()
            os.ftruncate(fd, complete)
            os.fsync(fd)
            self._size = complete

    def _open(self) -> int:
        if self._fd is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
            self._created = not self.path.exists()
            fd = os.open(self.path, flags, 0o666)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(f"{self.path} is not a regular file")
            self._fd, self._size = fd, os.fstat(fd).st_size
        return self._fd

    def write(self, sync: bool) -> None:
        """Append the buffered lines; with `sync`, also fsync what was appended so far."""
        if self._pending:
            data = utf8("".join(self._pending))
            fd = self._open()
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                try:  # never leave part of a line for the next write to follow
                    os.ftruncate(fd, self._size)
                except OSError:
                    pass
                raise
            self._size += len(data)
            self._pending.clear()
            self._unsynced = True
        if sync and self._unsynced and self._fd is not None:
            os.fsync(self._fd)
            if self._created:
                fsync_dir(self.path.parent)
                self._created = False
            self._unsynced = False

    def replace(self, records: Iterable[dict]) -> None:
        """Make the file hold exactly `records` (atomically); buffered lines are dropped."""
        text = "".join(line_of(r) for r in records)
        self.close_fd()
        write_text_atomic(self.path, text, mkdir=False)
        self._pending.clear()
        self._unsynced = False

    def close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
