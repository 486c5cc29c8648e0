"""Atomic file writes and directory swaps: the one home of "write beside it, fsync, replace".

    write_text_atomic(path, text)     # a reader sees the old file or the new one, never a mix
    write_bytes_atomic(path, data)
    replace_dir(staging, target)      # a finished sibling folder takes the place of `target`

A temporary file lives in the same folder as its target (`.NAME.XXXX.tmp`), so the final
`os.replace` is atomic on POSIX and Windows; if anything fails the old file is untouched
and the temporary file is removed. Written files get the existing file's mode, else the
usual mode (0666 minus the umask), not mkstemp's owner-only 0600.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from engine.errors import utf8

TMP_PREFIX = "."
TMP_SUFFIX = ".tmp"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_current_umask()


def fsync_dir(folder: Path | str) -> None:
    """Make a rename durable: fsync the folder that holds it, where the platform allows."""
    if os.name == "nt":  # pragma: no cover - folders cannot be opened on Windows
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path | str, data: bytes, *, mkdir: bool = True) -> None:
    """Replace `path` with `data` atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.",
                               suffix=TMP_SUFFIX)
    try:
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = FILE_MODE
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: Path | str, text: str, *, mkdir: bool = True) -> None:
    """`write_bytes_atomic` for UTF-8 text (newlines written as they are; a lone surrogate
    as U+FFFD, `engine.errors.utf8`)."""
    write_bytes_atomic(path, utf8(text), mkdir=mkdir)


def stale_temp_files(path: Path | str) -> list[Path]:
    """Temporary files a killed writer of `path` may have left behind."""
    path = Path(path)
    return sorted(path.parent.glob(f"{TMP_PREFIX}{path.name}.*{TMP_SUFFIX}"))


def replace_dir(staging: Path | str, target: Path | str) -> None:
    """Put the finished folder `staging` (a sibling of `target`) in the place of `target`.

    An existing `target` is first renamed aside and removed only after the swap, so at
    every moment either the old or the new folder is complete at some path.
    """
    staging, target = Path(staging), Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
    fsync_dir(target.parent)
