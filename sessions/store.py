"""Sessions: every engine event persisted in TinyDB, one folder per session.

Layout under the data directory (`GPTA_HOME` / `--home`, default `default_home()`):

    <home>/sessions/<name>/session.json   TinyDB database (AtomicJSONStorage)
    <home>/sessions/<name>/loss.jsonl     training loss points, append-only (sessions/losslog.py)
    <home>/sessions/<name>/session.lock   held by the one process writing the session
    <home>/sessions/<name>/checkpoints/   \
    <home>/sessions/<name>/windows/        > the engine's workdir (`SessionHandle.dir`)
    <home>/sessions/<name>/ta-adapters/   /

One writer per session (a file lock); readers need no lock because every write replaces
the database file atomically and the loss log is only appended to (a reader ignores a last
line still being written). Loss points never enter the database: the one series that grows
with every training step is appended to `loss.jsonl`, so no write costs more as a run gets
longer. They are appended every `flush_steps` steps or `flush_seconds` seconds; everything
else (phase boundaries, checkpoints, status changes, TA replies, the end) is written at
once, the loss log fsynced first, so a recorded checkpoint never refers to a point that is
not on disk. Anything buffered when a process dies lies after the last checkpoint, and the
engine replays it on resume.
"""

from __future__ import annotations

import copy
import enum
import errno
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import filelock
from tinydb import TinyDB
from tinydb.table import Document
from tinydb.table import Table as TinyTable

from engine.config import SECRET_FIELDS, RunConfig
from engine.errors import GptaError, UsageError
from engine.events import (CheckpointSaved, DescriptionChanged, Event, EventHandler, FinetuneUpdate,
                           HistoryUpdated, Notice, PhaseChanged, PrefixFindingAccuracy,
                           PrefixScored, Progress, RunFinished, RunStarted, StatusChanged,
                           TAModelChanged, TARequest, TAResponse, TrainStep, ValidationResult,
                           WindowsBuilt, event_from_dict, real_number, shape_problem)
from engine.state import RunState, best_validation
from engine.fsutil import stale_temp_files
from engine.paths import SESSION_NAME_RE
from sessions import losslog
from sessions.losslog import (HISTORY_FILE, LOG_FILES, LOSS_FILE, SCORED_FILE, TA_FILE,
                              WINDOWS_FILE, AppendLog)
from sessions.status import ENGINE_TO_SESSION, SESSION_STATUSES
from sessions.storage import (AtomicJSONStorage, BufferedStorage, DatabaseUnreadable,
                              read_json_file)

SCHEMA_VERSION = 5
# Raw database upgrades: MIGRATIONS[v] turns the data of schema v into schema v + 1.


def _v1_to_v2(data: dict) -> dict:
    """Schema 2 adds data.selection_size (default 100); sessions saved before it had no
    selection split, so they keep choosing on validation (selection_size 0) and resume exactly."""
    rec = data.get("session", {}).get("1")
    if isinstance(rec, dict) and isinstance(rec.get("config"), dict):
        section = rec["config"].get("data")
        if isinstance(section, dict):
            section.setdefault("selection_size", 0)
    return data


def _v2_to_v3(data: dict) -> dict:
    """Schema 3 keeps loss points in loss.jsonl, not in the database. The raw data cannot
    write that file, so a migrated database keeps its `loss` table: every handle reads those
    points as if they were in the log, and a writer moves them there on open
    (`SessionHandle._move_tables`), as `write_imported` does for an older export."""
    return data


def _v3_to_v4(data: dict) -> dict:
    """Schema 4 keeps TA calls (requests with their prompts, and responses) in
    ta_calls.jsonl and the windows in windows.jsonl, not in the database: as for schema 3, a
    migrated database keeps its `ta_calls` and `windows` tables in memory, every handle reads
    them as if they were the logs, and a writer moves them there on open
    (`SessionHandle._move_tables`)."""
    return data


def _v4_to_v5(data: dict) -> dict:
    """Schema 5 keeps the scored prefixes in scored.jsonl and each epoch's sorted history in
    history.jsonl, not in the database (whose every write then costs the same in epoch 5 as
    in epoch 1): a migrated database keeps its `scored` and `history` tables in memory until
    a writer moves them, as for schemas 3 and 4."""
    return data


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4,
                                                 4: _v4_to_v5}

SESSIONS_DIR = "sessions"
DB_FILE = "session.json"
LOCK_FILE = "session.lock"
STATUSES = SESSION_STATUSES
NAME_RE = SESSION_NAME_RE  # defined once, in engine/paths.py

# Engine statuses (StatusChanged / RunFinished) -> session statuses. A stopped run is saved
# and resumable, which is what "paused" means for a session nobody is running.
_STATUS_MAP = ENGINE_TO_SESSION  # defined once, in sessions/status.py



class Table(str, enum.Enum):
    """The database's tables (one name each; the members are the stored strings)."""

    META = "meta"                        # app version and schema of the file
    SESSION = "session"                  # the session record (doc 1): config, status, state
    LOSS = "loss"                        # schema <= 2 only: loss points (now in loss.jsonl)
    VALIDATIONS = "validations"          # ValidationResult per epoch
    PREFIX_ACCURACY = "prefix_accuracy"  # PrefixFindingAccuracy per epoch
    SCORED = "scored"                    # schema <= 4 only: PrefixScored (now scored.jsonl)
    HISTORY = "history"                  # schema <= 4 only: HistoryUpdated (now history.jsonl)
    WINDOWS = "windows"                  # schema <= 3 only: WindowsBuilt (now windows.jsonl)
    JOBS = "jobs"                        # fine-tune jobs with their updates
    TA_CALLS = "ta_calls"                # schema <= 3 only: TA calls (now in ta_calls.jsonl)
    DESCRIPTIONS = "descriptions"        # DescriptionChanged per version
    NOTICES = "notices"                  # every Notice
    TA_MODELS = "ta_models"              # TAModelChanged per epoch

    __str__ = str.__str__
    __format__ = str.__format__


# Tables of older schemas whose records now live in the logs, in the order of a handle's
# `_logs` (loss, TA calls, windows: schemas 3 and 4; scored prefixes, history: schema 5).
_LOG_TABLES = (Table.LOSS, Table.TA_CALLS, Table.WINDOWS, Table.SCORED, Table.HISTORY)

# Kinds written at the next batch boundary rather than at once (all are followed by a
# checkpoint, which flushes, or replayed after a resume).
_BUFFERED = {"train_step", "progress", "prefix_scored", "ta_request", "history"}
_INTERNAL = ("_seq", "kind")


def _now() -> float:
    return time.time()


def _scrub(obj: Any) -> Any:
    """A copy of obj with secret keys (api_key, ...) removed at any depth."""
    if isinstance(obj, dict):
        return {k: _scrub(v) for k, v in obj.items() if k not in SECRET_FIELDS}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    return obj


# A stored loss point: TrainStep's fields and its _seq, nothing else (values are scalars).
_POINT_KEYS = ("epoch", "step", "epoch_step", "epoch_steps", "loss", "lr", "ts", "_seq")


def _point(doc: dict) -> dict:
    return {k: doc[k] for k in _POINT_KEYS if k in doc}


_POINT_KEYSET = frozenset(_POINT_KEYS)
_MAX_STEP = 2**53  # a step float() keeps exactly (the charts draw steps as floats)


def _valid_point(doc: Any) -> dict | None:
    """`_point(doc)` when `_point_problem(doc)` finds nothing, else None; written out because
    a 31,250-step log is checked on every open (tests/test_sessions_losslog.py checks that
    the two agree). A dict of exactly the point's keys is returned as it is (no copy: the
    log's parse made it)."""
    if type(doc) is not dict:
        return None
    if doc.keys() == _POINT_KEYSET:  # a line this store wrote: the parsed dict itself
        step, seq, ts = doc["step"], doc["_seq"], doc["ts"]
        if (type(doc["epoch"]) is int and type(step) is int and 1 <= step <= _MAX_STEP
                and type(doc["epoch_step"]) is int and type(doc["epoch_steps"]) is int
                and real_number(doc["loss"]) and real_number(doc["lr"])
                and real_number(ts) and type(seq) is int):
            return doc
        return None
    if "kind" in doc:
        return None
    try:
        out = {"epoch": doc["epoch"], "step": doc["step"], "epoch_step": doc["epoch_step"],
               "epoch_steps": doc["epoch_steps"], "loss": doc["loss"], "lr": doc["lr"]}
    except KeyError:
        return None
    if not (type(out["epoch"]) is int and type(out["step"]) is int
            and 1 <= out["step"] <= _MAX_STEP
            and type(out["epoch_step"]) is int and type(out["epoch_steps"]) is int
            and real_number(out["loss"]) and real_number(out["lr"])):
        return None
    if "ts" in doc:
        if not real_number(doc["ts"]):
            return None
        out["ts"] = doc["ts"]
    if "_seq" in doc:
        if type(doc["_seq"]) is not int:
            return None
        out["_seq"] = doc["_seq"]
    if "superseded" in doc and type(doc["superseded"]) is not bool:
        return None
    return out


def _point_event(doc: dict) -> TrainStep:
    """A stored point as its event, without the generic (deep-copying) path: a replay of a
    31,250-step session builds 31,250 of these."""
    return TrainStep(**{k: doc[k] for k in _POINT_KEYS[:-1] if k in doc})


def _not_in(table_docs: Iterable[dict], log_records: list[dict]) -> list[dict]:
    """An older schema's table records, in _seq order, without those the log holds too
    (same _seq): what a writer's move left when it was cut short before the table went."""
    logged = {r["_seq"] for r in log_records if "_seq" in r}
    return sorted((d for d in table_docs if d.get("_seq") not in logged),
                  key=lambda d: d.get("_seq", 0))


def _clean_call(doc: dict) -> dict:
    """A TA call as the handle keeps it: a plain dict (not a TinyDB document) with its own
    list of responses and a superseded mark."""
    return {**doc, "responses": list(doc.get("responses", [])),
            "superseded": bool(doc.get("superseded", False))}


def _clean(doc: dict) -> dict:
    """Plain data for readers: a deep copy without internal bookkeeping keys."""
    out = {k: copy.deepcopy(v) for k, v in doc.items() if k not in _INTERNAL}
    for key in ("responses", "updates"):
        if key in out:
            out[key] = [{k: v for k, v in item.items() if k not in _INTERNAL} for item in out[key]]
    return out


class SessionWriteError(GptaError):
    """The session database could not be written (disk full, read-only folder, ...). The
    file on disk still holds the last complete write, so the session stays resumable."""

    def __init__(self, path: Path, name: str, exc: OSError, new: bool = False):
        self.errno = exc.errno
        then = "run it again" if new else f"`gpta resume {name}`"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = f"free space on that disk, then {then}"
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = f"make {str(Path(path).parent)!r} writable, then {then}"
        else:
            fix = f"fix the problem with that disk, then {then}"
        super().__init__(f"cannot write session database {str(path)!r} "
                         f"({exc.strerror or type(exc).__name__})", fix)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UsageError(f"invalid session name {name!r}",
                         "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def _slug(text: str) -> str:
    text = Path(text).stem if ("/" in text or "\\" in text or text.endswith(".csv")) else text
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    return slug[:40] or "run"


def format_ts(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _ta_label(cfg: dict) -> str:
    """'backend:model' of a stored config's TA ('' when it has none)."""
    ta = cfg.get("ta") if isinstance(cfg, dict) else None
    if not isinstance(ta, dict) or not ta.get("backend") or ta.get("backend") == "none":
        return ""
    return f"{ta['backend']}:{ta['model']}" if ta.get("model") else str(ta["backend"])


@dataclass(frozen=True)
class TAUsage:
    """A session's TA requests, tokens and estimated cost (`SessionReader.ta_usage`)."""

    requests: int = 0
    tokens: int = 0
    cost: float = 0.0


@dataclass(frozen=True)
class SessionSummary:
    name: str
    mode: str
    dataset: str
    status: str          # running|paused|interrupted|failed|finished, or "unreadable"
    epoch: int
    epochs: int
    phase: str
    best_metric: float | None
    metric: str
    updated: float
    path: Path
    error: str = ""      # why the session is unreadable
    student: str = ""    # the student model
    ta: str = ""         # "backend:model" of the teaching assistant ("" when none)
    best_epoch: int = 0
    best_prefix: str = ""
    test_metrics: dict = field(default_factory=dict, hash=False)  # stored test figures ({}: none)


def _test_metrics(rec: dict) -> dict:
    """The numeric test metrics a session record's RunFinished stored ({} when none)."""
    finished = rec.get("finished") or {}
    metrics = finished.get("test_metrics") if isinstance(finished, dict) else None
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))
            and not isinstance(v, bool)} if isinstance(metrics, dict) else {}


class SessionStore:
    """All sessions under one data directory."""

    def __init__(self, home: Path | str | None = None):
        if home is None:
            from engine.resources import default_home

            home = default_home()
        self.home = Path(home).expanduser()
        self.root = self.home / SESSIONS_DIR

    # ---- paths and locks --------------------------------------------------------
    def session_dir(self, name: str) -> Path:
        return self.root / validate_name(name)

    def _lock(self, name: str) -> filelock.FileLock:
        return filelock.FileLock(self.session_dir(name) / LOCK_FILE, thread_local=False)

    def _acquire(self, name: str) -> filelock.FileLock:
        lock = self._lock(name)
        try:
            # A short wait rides over another process merely probing the lock.
            lock.acquire(timeout=0.5)
        except filelock.Timeout:
            raise UsageError(f"session {name!r} is in use by another gpta process "
                             f"(lock {str(lock.lock_file)!r})",
                             "stop that run or close that window first, or wait for it to finish"
                             ) from None
        return lock

    def is_locked(self, name: str) -> bool:
        """True while some process (this one included) writes the session."""
        lock = self._lock(name)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return True
        except OSError:
            return False  # cannot even create the lock file: nobody can be writing
        lock.release()
        return False

    # ---- queries ------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return (self.session_dir(name) / DB_FILE).is_file()

    def stamp(self, name: str) -> tuple:
        """What a session's summary depends on, cheaply (a few stat calls and a lock probe),
        for views that follow a running session: (size, mtime, inode) of the database, the
        TA calls and each epoch's history, and whether a process holds the session (a run
        that dies changes no file, yet its "running" reads as interrupted once the lock is
        gone). A different stamp means the session may have changed; never raises."""
        out: list = []
        for file in (DB_FILE, TA_FILE, HISTORY_FILE):
            try:
                st = os.stat(self.session_dir(name) / file, follow_symlinks=False)
                # the inode too: the database is replaced whole (a new inode), and a rewrite
                # of the same size within one tick of a coarse mtime clock looks the same
                out.append((st.st_size, st.st_mtime_ns, st.st_ino))
            except (OSError, ValueError, GptaError):  # no such file, or a name that is not one
                out.append(None)
        try:  # only where the database is: a probe creates the lock file
            out.append(out[0] is not None and self.is_locked(name))
        except (OSError, ValueError, GptaError):
            out.append(None)
        return tuple(out)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob(f"*/{DB_FILE}")
                      if NAME_RE.match(p.parent.name))

    def list(self) -> list[SessionSummary]:
        """Every session, most recently updated first. Damaged ones are listed as unreadable."""
        out = []
        for name in self.names():
            path = self.session_dir(name)
            try:
                data = read_json_file(path / DB_FILE)
                data = _check_schema(data or {}, name, path / DB_FILE)
            except GptaError as exc:
                out.append(SessionSummary(name=name, mode="?", dataset="?", status="unreadable",
                                          epoch=0, epochs=0, phase="", best_metric=None,
                                          metric="", updated=(path / DB_FILE).stat().st_mtime,
                                          path=path, error=str(exc)))
                continue
            rec = dict(data.get(Table.SESSION, {}).get("1", {}))
            status = self._effective_status(name, rec.get("status", "interrupted"))
            cfg = rec.get("config", {})
            best = rec.get("best") or {}
            metric = cfg.get("student", {}).get("metric", "")
            out.append(SessionSummary(
                name=name, mode=rec.get("mode", cfg.get("mode", "?")),
                dataset=cfg.get("data", {}).get("dataset", "?"), status=status,
                epoch=int(rec.get("epoch", 0)), epochs=int(cfg.get("loop", {}).get("epochs", 0)),
                phase=rec.get("phase", ""), best_metric=best_validation(best, metric),
                metric=metric,
                updated=max(float(rec.get("updated", 0.0)), _log_mtime(path)), path=path,
                student=str(cfg.get("student", {}).get("model", "") or ""), ta=_ta_label(cfg),
                best_epoch=best.get("epoch") if type(best.get("epoch")) is int else 0,
                best_prefix=best.get("prefix") if isinstance(best.get("prefix"), str) else "",
                test_metrics=_test_metrics(rec)))
        out.sort(key=lambda s: s.updated, reverse=True)
        return out

    def _effective_status(self, name: str, stored: str) -> str:
        if stored == "running" and not self.is_locked(name):
            return "interrupted"
        return stored

    def unique_name(self, base: str) -> str:
        """`base` made into a valid name that no session uses yet (base, base-2, ...)."""
        stem = _slug(base)[:58]
        name, n = stem, 1
        while self.session_dir(name).exists():
            n += 1
            name = f"{stem}-{n}"
        return name

    # ---- create / open / delete -------------------------------------------------
    def create(self, config: RunConfig) -> "SessionHandle":
        """A new session for `config` (named config.name, or a generated unique name),
        opened for writing. The session record stores `config.to_dict()` (no secrets)."""
        self.root.mkdir(parents=True, exist_ok=True)
        generated = not config.name
        while True:
            name = validate_name(config.name) if not generated else self.unique_name(
                f"{_slug(config.data.dataset)}-{config.mode}-{time.strftime('%m%d-%H%M')}")
            folder = self.session_dir(name)
            try:
                folder.mkdir()
                break
            except FileExistsError:
                if not generated:
                    raise UsageError(f"a session named {name!r} already exists in {str(self.root)!r}",
                                     f"resume it with `gpta resume {name}`, choose another name, "
                                     f"or delete it with `gpta delete {name}`") from None
        lock = self._acquire(name)
        try:
            stored = config.copy()
            stored.name = name
            now = _now()
            record = {
                "name": name, "created": now, "updated": now, "status": "running",
                "status_reason": "created", "mode": stored.mode, "config": _scrub(stored.to_dict()),
                "epoch": 1, "phase": "setup", "step": 0, "best": {}, "state": None,
                "checkpoint_seq": 0, "seq": 0, "resumes": [], "ta_model": "",
            }
            data = {Table.META: {"1": _meta()}, Table.SESSION: {"1": record}}
            handle = SessionHandle(self, name, data, lock=lock)
            handle._storage.write(data)
            handle.flush()
        except BaseException as exc:
            lock.release()
            shutil.rmtree(folder, ignore_errors=True)
            if isinstance(exc, SessionWriteError):  # nothing is left to resume
                raise GptaError(exc.problem, exc.fix.replace(f"`gpta resume {name}`",
                                                             "run it again")) from None
            raise
        return handle

    def open(self, name: str, write: bool = False) -> "SessionHandle":
        """Open a session. `write=True` takes the session's lock (UsageError if another
        process holds it); readers take no lock and see the last flushed state."""
        if not self.exists(name):
            raise UsageError(f"no session named {name!r} in {str(self.root)!r}",
                             "run `gpta list` to see the saved sessions")
        lock = self._acquire(name) if write else None
        try:
            path = self.session_dir(name) / DB_FILE
            if write:  # left by a writer that was killed
                for tmp in stale_temp_files(path) + [
                        t for f in LOG_FILES for t in stale_temp_files(path.with_name(f))]:
                    tmp.unlink(missing_ok=True)
            data, migrated_from = self._load(name, path, write)
            handle = SessionHandle(self, name, data, lock=lock)
            if write and migrated_from is not None:
                backup = path.with_name(f"{DB_FILE}.schema-{migrated_from}")
                if not backup.exists():
                    shutil.copy2(path, backup)
                handle._storage.write(data)
            if write and (migrated_from is not None or any(t.value in data for t in _LOG_TABLES)):
                handle._move_tables()
                handle.flush()
            if write and handle._session_record().get("status") == "running":
                handle._update_session_record(
                    status="interrupted",
                    status_reason="the process running it ended without saving a status")
                handle.flush()
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return handle

    def _load(self, name: str, path: Path, write: bool) -> tuple[dict, int | None]:
        try:
            data = read_json_file(path)
            if data is None:
                raise DatabaseUnreadable(path, "the file disappeared")
            if not isinstance(_meta_doc(data).get("schema"), int):
                raise DatabaseUnreadable(path, "no schema version: not a gpta-tui session database")
        except DatabaseUnreadable as exc:
            backup = _backup_corrupt(path)
            raise GptaError(f"session database {str(path)!r} is unreadable ({exc.reason}); "
                            f"a copy was kept as {str(backup)!r}",
                            f"restore a good copy over it, or remove the session with "
                            f"`gpta delete {name}`") from None
        version = data[Table.META]["1"]["schema"]
        data = _check_schema(data, name, path)
        return data, (version if version != SCHEMA_VERSION else None)

    def delete(self, name: str) -> None:
        """Delete a session and its artifacts; refuses while a process writes it."""
        if self.session_dir(name).is_symlink():
            raise UsageError(f"session folder {str(self.session_dir(name))!r} is a symbolic link; "
                             "gpta deletes only folders it created",
                             "remove the link yourself (rm, not rm -r)")
        if not self.session_dir(name).is_dir():
            raise UsageError(f"no session named {name!r} in {str(self.root)!r}",
                             "run `gpta list` to see the saved sessions")
        lock = self._lock(name)
        try:
            lock.acquire(timeout=0.5)
        except filelock.Timeout:
            raise UsageError(f"session {name!r} is running in another gpta process",
                             "stop that run first, then delete the session") from None
        try:
            shutil.rmtree(self.session_dir(name))
        finally:
            lock.release()

    def write_imported(self, name: str, data: dict, files: dict[str, str] | None = None) -> None:
        """Create session `name` from complete database data and text files (relative paths
        such as "windows/epoch-1.jsonl"), used by import. Everything is written into a hidden
        staging folder that is renamed into place at the end: an import completes or leaves
        nothing behind."""
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.session_dir(name)
        exists = UsageError(f"a session named {name!r} already exists in {str(self.root)!r}",
                            f"delete it first (`gpta delete {name}`) or import under another name")
        if os.path.lexists(folder):
            raise exists
        staging = Path(tempfile.mkdtemp(prefix=".import-", dir=self.root))
        try:
            try:
                AtomicJSONStorage(staging / DB_FILE).write(data)
            except OSError as exc:
                raise SessionWriteError(folder / DB_FILE, name, exc, new=True) from None
            for rel, text in (files or {}).items():
                target = staging / rel
                if staging.resolve() not in target.resolve().parents:
                    raise UsageError(f"import file name {rel!r} leaves the session folder",
                                     "import the folder written by `gpta export`, unedited")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
            try:
                os.mkdir(folder)  # claims the name; rename then replaces the empty folder
            except FileExistsError:
                raise exists from None
            os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _log_mtime(folder: Path) -> float:
    """When the session's loss log was last appended to (0 without one): during training
    the database is written only at checkpoints, the log every few seconds."""
    try:
        return (folder / LOSS_FILE).stat().st_mtime
    except OSError:
        return 0.0


def _app_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gpta-tui")
    except PackageNotFoundError:  # running from a source checkout
        return "source"


def _meta() -> dict:
    return {"schema": SCHEMA_VERSION, "app": "gpta-tui", "app_version": _app_version()}


def _meta_doc(data: Any) -> dict:
    """The meta document of raw database data, or {} when the data has no such mapping."""
    table = data.get(Table.META) if isinstance(data, dict) else None
    doc = table.get("1") if isinstance(table, dict) else None
    return doc if isinstance(doc, dict) else {}


_NUMBER = (int, float)
# The session record's fields that readers use, with the types they must have.
_RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "status": (str,), "status_reason": (str,), "mode": (str,), "phase": (str,),
    "config": (dict,), "epoch": (int,), "step": (int,), "seq": (int,), "checkpoint_seq": (int,),
    "best": (dict,), "state": (dict, type(None)), "resumes": (list,), "created": _NUMBER,
    "updated": _NUMBER, "checkpoint_ts": _NUMBER, "checkpoint_path": (str,), "ta_model": (str,),
    "finished": (dict, type(None)), "imported_from": (str,), "metric": (str,),
    "label_names": (list,), "device": (str,), "task": (str,),
}
_BEST_TYPES: dict[str, tuple[type, ...]] = {"score": _NUMBER, "epoch": (int,), "prefix": (str,),
                                            "metrics": (dict,)}
# Tables whose documents are stored events, and the event each holds.
_EVENT_TABLES = {Table.VALIDATIONS: ValidationResult, Table.PREFIX_ACCURACY: PrefixFindingAccuracy,
                 Table.SCORED: PrefixScored, Table.HISTORY: HistoryUpdated,
                 Table.WINDOWS: WindowsBuilt, Table.DESCRIPTIONS: DescriptionChanged,
                 Table.NOTICES: Notice, Table.TA_MODELS: TAModelChanged,
                 Table.TA_CALLS: TARequest, Table.JOBS: FinetuneUpdate}
_METRIC_FIELDS = ("metrics", "val_metrics", "test_metrics", "test_metrics_no_prefix")


def _typed(value: Any, types: tuple[type, ...]) -> bool:
    if types is _NUMBER:  # a number readers turn into a float (a 400-digit int would not go)
        return real_number(value)
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def _fields_problem(doc: dict, types: dict[str, tuple[type, ...]], what: str) -> str | None:
    for key, allowed in types.items():
        if key in doc and not _typed(doc[key], allowed):
            return f"{what} field {key!r} has the wrong type ({type(doc[key]).__name__})"
    return None


_BOOKKEEPING_TYPES: dict[str, tuple[type, ...]] = {"_seq": (int,), "superseded": (bool,)}


def _event_problem(cls: type, doc: Any, replayed: bool = True) -> str | None:
    """`shape_problem` plus what readers use: a `kind` on records replayed as events, the
    bookkeeping fields, metric values that are numbers, history rows that are [prefix,
    score] pairs, windows that are mappings."""
    problem = shape_problem(cls, doc)
    if problem:
        return problem
    if replayed and "kind" not in doc:
        return f"a {cls.kind} record without its kind"
    problem = _fields_problem(doc, _BOOKKEEPING_TYPES, f"{cls.kind} record")
    if problem:
        return problem
    for key in _METRIC_FIELDS:
        if key in doc and not all(_typed(v, _NUMBER) for v in doc[key].values()):
            return f"a {cls.kind} record with a {key} value that is not a number"
    if cls is HistoryUpdated and not all(
            isinstance(r, list) and len(r) == 2 and isinstance(r[0], str) and _typed(r[1], _NUMBER)
            for r in doc["history"]):
        return "a history record whose rows are not [prefix, score] pairs"
    if cls is WindowsBuilt and not all(isinstance(w, dict) and _chat_ok(w.get("messages", []))
                                       for w in doc["windows"]):
        return "a windows record whose windows are not chat messages"
    if cls is TARequest and not _chat_ok(doc["messages"]):
        return "a TA request whose messages are not chat messages"
    if cls is TAResponse and not (
            all(isinstance(t, str) for t in doc["texts"] + doc["prefixes"])
            and all(_typed(v, _NUMBER) for v in doc["usage"].values())
            and all(isinstance(r, list) and all(isinstance(x, str) for x in r)
                    for r in doc["rejected"])):
        return "a TA response whose texts, prefixes, rejections or token counts have the wrong type"
    if cls is RunStarted and not all(isinstance(n, str) for n in doc.get("label_names", [])):
        return "a run start whose label names are not strings"
    return None


def _chat_ok(messages: Any) -> bool:
    """A list of {"role": str, "content": str} messages."""
    return isinstance(messages, list) and all(
        isinstance(m, dict) and isinstance(m.get("role", ""), str)
        and isinstance(m.get("content", ""), str) for m in messages)


def _point_problem(point: Any) -> str | None:
    """Why a stored loss point (a TrainStep without its kind, with its _seq) cannot be read."""
    problem = _event_problem(TrainStep, point, replayed=False)
    if problem is None and "kind" in point:
        return "a loss point with a kind"
    if problem is None and not 1 <= point["step"] <= _MAX_STEP:
        return f"a loss point with step {str(point['step'])[:40]}"
    return problem


def _ta_problem(doc: Any) -> str | None:
    """Why a line of ta_calls.jsonl cannot be read: a TA request (with the responses it
    already had when the log was last rewritten, and its superseded mark) or a TA response."""
    if not isinstance(doc, dict):
        return f"a {type(doc).__name__}, not a TA call record"
    kind = doc.get("kind")
    if kind == "ta_response":
        return _event_problem(TAResponse, doc)
    if kind != "ta_request":
        return f"a record of kind {str(kind)[:40]!r}, not a TA request or response"
    problem = _event_problem(TARequest, doc)
    if problem:
        return problem
    responses = doc.get("responses", [])
    if not isinstance(responses, list):
        return f"a TA request whose responses are a {type(responses).__name__}, not a list"
    for item in responses:
        problem = _event_problem(TAResponse, item)
        if problem:
            return f"a TA request's response: {problem}"
        if item.get("request_id") != doc["request_id"]:
            return "a TA request holding a response to another request"
    return None


def _valid_ta(doc: Any) -> dict | None:
    return doc if _ta_problem(doc) is None else None


def _log_record_check(cls: type, what: str, kind_word: str
                      ) -> tuple[Callable[[Any], str | None], Callable[[Any], dict | None]]:
    """(why a line of an event log of `cls` records cannot be read, the record when it can)."""

    def problem(doc: Any) -> str | None:
        if not isinstance(doc, dict):
            return f"a {type(doc).__name__}, not {what}"
        if doc.get("kind") != cls.kind:
            return f"a record of kind {str(doc.get('kind'))[:40]!r}, not {kind_word}"
        return _event_problem(cls, doc)

    def valid(doc: Any) -> dict | None:
        return doc if problem(doc) is None else None

    return problem, valid


# windows.jsonl (schema 4), scored.jsonl and history.jsonl (schema 5)
_windows_problem, _valid_windows = _log_record_check(WindowsBuilt, "a windows record", "windows")
_scored_problem, _valid_scored = _log_record_check(PrefixScored, "a scored prefix",
                                                   "a scored prefix")
_history_problem, _valid_history = _log_record_check(HistoryUpdated, "a history record",
                                                     "a history")


def _shape_problem(data: dict) -> str | None:
    """Why raw database data cannot be read as a session (wrong-shaped tables, records or
    fields), or None. Readers then never meet a value of an unexpected type."""
    for table, docs in data.items():
        if not isinstance(docs, dict):
            return f"table {table!r} is a {type(docs).__name__}, not a mapping"
        for doc_id, doc in docs.items():
            if not (str(doc_id).isascii() and str(doc_id).isdigit()):  # int("²") fails
                return f"table {table!r} has a record id {doc_id!r} that is not a number"
            if not isinstance(doc, dict):
                return f"table {table!r} record {doc_id} is a {type(doc).__name__}, not a mapping"
    rec = data.get(Table.SESSION, {}).get("1")
    if rec is None:
        return "no session record"
    if "config" not in rec:
        return "the session record has no config"
    problem = _fields_problem(rec, _RECORD_TYPES, "session record")
    if problem:
        return problem
    problem = _fields_problem(rec.get("best") or {}, _BEST_TYPES, "best result")
    if problem:
        return problem
    try:
        RunConfig.from_dict(rec.get("config", {}), "stored config")
        if rec.get("state"):
            RunState.from_dict(rec["state"])
    except GptaError as exc:
        return exc.problem
    for key, cls in (("run_started", RunStarted), ("phase_event", PhaseChanged),
                     ("finished", RunFinished), ("progress", Progress)):
        if rec.get(key) is not None:
            problem = _event_problem(cls, rec[key])
            if problem:
                return f"session record {key}: {problem}"
    if rec.get("run_started"):
        try:  # the config a front end shows when it replays the run
            RunConfig.from_dict(rec["run_started"]["config"], "stored run start")
        except GptaError as exc:
            return exc.problem
    for table, cls in _EVENT_TABLES.items():
        for doc in data.get(table, {}).values():
            problem = _event_problem(cls, doc, replayed=table != Table.JOBS)
            if problem:
                return f"table {table!r}: {problem}"
            nested = {Table.TA_CALLS: ("responses", TAResponse),
                      Table.JOBS: ("updates", FinetuneUpdate)}.get(table)
            if nested:
                items = doc.get(nested[0])
                if not isinstance(items, list):
                    return f"table {table!r}: {nested[0]} is a {type(items).__name__}, not a list"
                for item in items:
                    problem = _event_problem(nested[1], item)
                    if problem:
                        return f"table {table!r} {nested[0]}: {problem}"
    for doc in data.get(Table.LOSS, {}).values():
        points = doc.get("points")
        if not isinstance(points, dict):
            return "table 'loss' has a record without a mapping of points"
        for key, point in points.items():
            problem = _point_problem(point)
            if problem or not str(key).isdigit():
                return f"table 'loss': {problem or f'point key {key!r} is not a step number'}"
    return None


def _check_shape(data: dict, name: str, path: Path) -> dict:
    """`data` if every table, record and field has the shape readers expect; else a one-line
    GptaError naming the file and what is wrong."""
    problem = _shape_problem(data)
    if problem:
        raise GptaError(f"session database {str(path)!r} has the wrong shape ({problem})",
                        f"restore a good copy over it, or remove the session with "
                        f"`gpta delete {name}`")
    return data


def _check_schema(data: dict, name: str, path: Path) -> dict:
    """Refuse newer schemas, migrate older ones (in memory), pass current ones through."""
    meta = _meta_doc(data)
    version = meta.get("schema")
    if not isinstance(version, int):
        raise GptaError(f"session database {str(path)!r} has no schema version",
                        "it is not a gpta-tui session database; move it out of the sessions folder")
    if version > SCHEMA_VERSION:
        raise UsageError(f"session {name!r} was saved by a newer gpta-tui (database schema "
                         f"{version}; this version reads up to {SCHEMA_VERSION})",
                         "upgrade gpta-tui: pip install -U gpta-tui")
    while version < SCHEMA_VERSION:
        migrate = MIGRATIONS.get(version)
        if migrate is None:
            raise UsageError(f"session {name!r} uses database schema {version}, which this "
                             f"gpta-tui (schema {SCHEMA_VERSION}) cannot migrate",
                             "open it with the gpta-tui release that created it and export it")
        data = migrate(copy.deepcopy(data))
        version += 1
        data.setdefault(Table.META, {})["1"] = {**_meta_doc(data), "schema": version}
    return _check_shape(data, name, path)


def _backup_corrupt(path: Path) -> Path:
    """Copy a damaged database aside (once per distinct content) and return the copy."""
    raw = path.read_bytes() if path.exists() else b""
    for existing in sorted(path.parent.glob(f"{path.name}.corrupt-*")):
        try:
            if existing.read_bytes() == raw:
                return existing
        except OSError:
            continue
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while backup.exists():
        n += 1
        backup = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    backup.write_bytes(raw)
    return backup


class SessionLifecycle:
    """An open session's database (in memory, written by `flush`), its lock and `close`, and
    the record every part reads: config, status, last state. SessionWriter and SessionReader
    build on it; `SessionHandle` is all three."""

    flush_steps = 25        # loss points buffered at most this many steps ...
    flush_seconds = 5.0     # ... or this many seconds

    def __init__(self, store: SessionStore, name: str, data: dict, *,
                 lock: filelock.FileLock | None):
        self.store = store
        self.name = name
        self.dir = store.session_dir(name)
        self.path = self.dir / DB_FILE
        self._file_lock = lock
        self._mutex = threading.RLock()
        inner = AtomicJSONStorage(self.path, read_only=lock is None)
        self._storage = BufferedStorage(inner, initial=data)
        self._db = TinyDB(storage=lambda: self._storage)
        self._closed = False
        self._saw_events = False
        self._resume_prepared = False
        self._steps_since_flush = 0
        self._last_flush = time.monotonic()
        self._seq = int(self._session_record().get("seq", 0))
        self._config: RunConfig | None = None
        self.write_error: SessionWriteError | None = None  # the last failed write, if any
        self.on_write_error: Callable[[SessionWriteError], None] | None = None
        self._recorded_checkpoint: CheckpointSaved | None = None
        self._ta_index: dict[int, int] = {}
        self._job_index: dict[tuple[int, str], int] = {}
        self._reindex()
        self._loss_log = AppendLog(self.dir / LOSS_FILE)
        self._ta_log = AppendLog(self.dir / TA_FILE)
        self._windows_log = AppendLog(self.dir / WINDOWS_FILE)
        self._scored_log = AppendLog(self.dir / SCORED_FILE)
        self._history_log = AppendLog(self.dir / HISTORY_FILE)
        self._logs = (self._loss_log, self._ta_log, self._windows_log, self._scored_log,
                      self._history_log)
        self._windows: dict[int, dict] = {}  # epoch -> its windows record (the later wins)
        self._scored: list[dict] = []        # every scored prefix, in _seq order
        self._history: dict[int, dict] = {}  # epoch -> its history record (the later wins)
        self._loss: dict[int, dict] = {}   # step -> stored point (with _seq), log and table
        self._loss_raw: bytes | None = None  # loss.jsonl's bytes while they are exactly _loss
        self._calls: list[dict] = []       # TA requests with their responses, in _seq order
        self.loss_log_problem = ""         # why some of loss.jsonl was left out, if it was
        self.ta_log_problem = ""           # the same for ta_calls.jsonl ...
        self.windows_log_problem = ""      # ... windows.jsonl ...
        self.scored_log_problem = ""       # ... scored.jsonl ...
        self.history_log_problem = ""      # ... and history.jsonl
        damaged = self._load_logs()
        if lock is not None:
            for log in damaged:  # a writer appends only to a clean log
                self._replace_log(log)

    def _load_logs(self) -> list[AppendLog]:
        """Read the loss points and the TA calls: a table of an older schema not yet moved
        (`loss`, schema 2; `ta_calls`, schema 3), then loss.jsonl / ta_calls.jsonl (a point of
        the log wins; its calls come after the table's). The logs are display data (a resume
        never reads them), so damage does not make the session unreadable: a link or other
        non-file is ignored, a torn last line and wrong-shaped lines are left out, and
        `loss_log_problem` / `ta_log_problem` say so. Returns the logs that hold anything that
        was left out."""
        self._loss = {int(p["step"]): _point(p) for doc in self._table(Table.LOSS).all()
                      for p in doc["points"].values()}
        points, self.loss_log_problem, loss_damaged, raw = losslog.load_with_bytes(
            self._loss_log.path, _valid_point, _point_problem)
        # A reader of a clean log exports its bytes as they are (`loss_log_text`): the same
        # lines as encoding the points again when they are exactly the handle's points, in
        # step order, nothing else in them (a 31,250-point log: 0.15 s less per export).
        exact = (raw is not None and self._file_lock is None and not self._loss
                 and all(a["step"] < b["step"] for a, b in zip(points, points[1:])))
        self._loss_raw = raw if exact else None
        for point in points:
            self._loss[point["step"]] = point
        records, self.ta_log_problem, ta_damaged = losslog.load(
            self._ta_log.path, _valid_ta, _ta_problem)
        # A move cut short leaves a table and the log that already holds its records: every
        # record has its own _seq, so the log's copy wins (no record is read twice).
        self._calls = [_clean_call(doc) for doc in _not_in(self._table(Table.TA_CALLS).all(),
                                                           records)]
        self._index_calls()
        for record in records:
            if record["kind"] == "ta_request":
                call = _clean_call(record)
                if not call["superseded"]:
                    self._ta_index[int(call["request_id"])] = len(self._calls)
                self._calls.append(call)
            else:
                self._add_response(record, log=False)
        self._windows = {doc.doc_id: dict(doc) for doc in self._table(Table.WINDOWS).all()}
        records, self.windows_log_problem, windows_damaged = losslog.load(
            self._windows_log.path, _valid_windows, _windows_problem)
        for record in records:
            self._windows[int(record["epoch"])] = record
        records, self.scored_log_problem, scored_damaged = losslog.load(
            self._scored_log.path, _valid_scored, _scored_problem)
        self._scored = [dict(doc) for doc in _not_in(self._table(Table.SCORED).all(), records)]
        self._scored.extend(records)
        self._history = {doc.doc_id: dict(doc) for doc in self._table(Table.HISTORY).all()}
        records, self.history_log_problem, history_damaged = losslog.load(
            self._history_log.path, _valid_history, _history_problem)
        for record in records:
            self._history[int(record["epoch"])] = record
        self._seq = max([self._seq, *(int(p.get("_seq", 0)) for p in self._loss.values()),
                         *(int(w.get("_seq", 0)) for w in self._windows.values()),
                         *(int(d.get("_seq", 0)) for d in self._scored),
                         *(int(h.get("_seq", 0)) for h in self._history.values()),
                         *(int(c.get("_seq", 0)) for c in self._calls),
                         *(int(r.get("_seq", 0)) for c in self._calls for r in c["responses"])])
        return [log for log, bad in zip(self._logs, (loss_damaged, ta_damaged, windows_damaged,
                                                     scored_damaged, history_damaged)) if bad]

    def _index_calls(self) -> None:
        """request id -> the current (not superseded) call of that id."""
        self._ta_index = {int(c["request_id"]): i for i, c in enumerate(self._calls)
                          if not c.get("superseded")}

    def _add_response(self, d: dict, log: bool = True) -> None:
        """Attach a TA response to its request; one whose request was not recorded (a
        listener that joined late) gets an empty request, written to the log before it."""
        i = self._ta_index.get(int(d["request_id"]))
        if i is None:
            call = {"kind": "ta_request", "request_id": d["request_id"],
                    "epoch": d["epoch"], "backend": "", "model": "", "messages": [],
                    "params": {}, "description_version": 0, "ts": d["ts"],
                    "_seq": d.get("_seq", 0), "responses": [], "superseded": False}
            if log:
                self._ta_log.append(call)
            i = self._ta_index[int(d["request_id"])] = len(self._calls)
            self._calls.append(call)
        self._calls[i]["responses"].append(d)
        if log:
            self._ta_log.append(d)

    def _log_records(self, log: AppendLog) -> list[dict]:
        if log is self._windows_log:
            return [self._windows[e] for e in sorted(self._windows)]
        if log is self._history_log:
            return [self._history[e] for e in sorted(self._history)]
        if log is self._scored_log:
            return self._scored
        return self._points() if log is self._loss_log else self._calls

    def _replace_log(self, log: AppendLog) -> None:
        """Rewrite a log to hold exactly what the handle holds (atomically)."""
        try:
            log.replace(self._log_records(log))
        except OSError as exc:
            raise SessionWriteError(log.path, self.name, exc) from None

    def _move_tables(self) -> None:
        """Schema 2 kept loss points and schema 3 TA calls in the database: write them (with
        what the logs hold) to loss.jsonl / ta_calls.jsonl atomically, then drop the tables;
        the caller flushes the database. A crash in between leaves both, which the next open
        merges and moves again."""
        with self._mutex:
            for table, log in zip(_LOG_TABLES, self._logs):
                if table.value in self._db.tables():
                    self._replace_log(log)
                    self._db.drop_table(table.value)

    # ---- basics ----------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        return self._file_lock is not None and not self._closed

    def _table(self, name: Table) -> TinyTable:
        return self._db.table(name.value, cache_size=0)

    def _session_record(self) -> dict:
        doc = self._table(Table.SESSION).get(doc_id=1)
        return dict(doc) if doc else {}

    def _update_session_record(self, **fields: Any) -> None:
        self._table(Table.SESSION).update(fields, doc_ids=[1])

    def _reindex(self) -> None:
        self._job_index = {(int(d["epoch"]), d["job_id"]): d.doc_id for d in self._table(Table.JOBS).all()}

    @property
    def config(self) -> RunConfig:
        with self._mutex:
            if self._config is None:
                self._config = RunConfig.from_dict(self._session_record()["config"], f"session {self.name}")
            return self._config.copy()

    @property
    def status(self) -> str:
        with self._mutex:
            stored = self._session_record().get("status", "interrupted")
            if self.writable:
                return stored
            return self.store._effective_status(self.name, stored)

    @property
    def last_state(self) -> dict | None:
        with self._mutex:
            state = self._session_record().get("state")
            return copy.deepcopy(state) if state else None

    def reload(self) -> None:
        """Re-read the database file (readers: see what the writer flushed since)."""
        with self._mutex:
            if self.writable:
                return
            data, _ = self.store._load(self.name, self.path, write=False)
            self._storage._data = data
            self._db.clear_cache()
            self._seq = int(self._session_record().get("seq", 0))
            self._config = None
            self._reindex()
            self._load_logs()

    def flush(self) -> None:
        with self._mutex:
            if self._closed or self._file_lock is None:
                return
            self._write()
            self._steps_since_flush = 0
            self._last_flush = time.monotonic()

    def _write(self, sync_log: bool = False) -> None:
        """Write pending changes: append the buffered loss points, and when the database has
        changes, fsync the log first and then replace the database. An OSError becomes one
        SessionWriteError (the files keep the last complete write, the changes stay in memory
        for the next try), and the first one is reported to `on_write_error` (the runner
        stops the engine with it)."""
        path = self._loss_log.path
        try:
            commit = self._storage.dirty
            for log in self._logs:
                path = log.path
                log.write(sync=commit or sync_log)
            if commit:
                path = self.path
                self._update_session_record(seq=self._seq)
                self._storage.flush()
        except OSError as exc:
            error = SessionWriteError(path, self.name, exc)
            first, self.write_error = self.write_error is None, error
            if first and self.on_write_error is not None:
                self.on_write_error(error)
            raise error from None
        self.write_error = None

    def close(self) -> None:
        """Flush, mark a run that ended without a final status as interrupted, unlock."""
        with self._mutex:
            if self._closed:
                return
            try:
                if self._file_lock is not None:
                    if self._saw_events and self._session_record().get("status") == "running":
                        self._update_session_record(status="interrupted",
                                      status_reason="the run ended without a final status")
                    self._write(sync_log=True)
            finally:
                self._closed = True
                for log in self._logs:
                    log.close_fd()
                self._db.close()
                if self._file_lock is not None:
                    self._file_lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "writer" if self.writable else "reader"
        return f"SessionHandle({self.name!r}, {mode}, {str(self.dir)!r})"

    def _points(self) -> list[dict]:
        return [self._loss[step] for step in sorted(self._loss)]


class SessionWriter(SessionLifecycle, EventHandler):
    """The writing side: the engine's `listener` and `record_checkpoint`, the projections of
    each event kind into the tables (`on_<kind>`, engine.events.EventHandler), and the
    resume truncation (`begin_resume`)."""

    # ---- the engine listener -----------------------------------------------------------
    def record_checkpoint(self, event: CheckpointSaved) -> None:
        """Record a new resume state durably, or raise (SessionWriteError): the engine's
        `record_checkpoint`, which deletes the previous checkpoint only after this returned.
        The same event reaching `listener` afterwards is not recorded twice."""
        with self._mutex:
            self._recorded_checkpoint = event
            self._persist(event)

    def listener(self, event: Event) -> None:
        """Persist one engine event. Subscribe it to the engine (thread-safe)."""
        with self._mutex:
            if event is self._recorded_checkpoint:
                return
            self._persist(event)

    def _persist(self, event: Event) -> None:
        with self._mutex:
            if not self.writable:
                raise GptaError(f"session {self.name!r} is not open for writing",
                                "open it with write=True to record events")
            self._seq += 1
            if isinstance(event, TrainStep):  # scalars only: asdict's deep copy is its main cost
                d = {**vars(event), "kind": event.kind}
            else:
                d = _scrub(event.to_dict())
            d["_seq"] = self._seq
            self.handle(event, d)
            self._saw_events = True
            if event.kind == "train_step":  # the log only: the database is not touched
                self._steps_since_flush += 1
            else:
                self._update_session_record(updated=_now(), seq=self._seq)
            if (event.kind not in _BUFFERED or self._steps_since_flush >= self.flush_steps
                    or time.monotonic() - self._last_flush >= self.flush_seconds):
                self.flush()

    def on_run_started(self, event: Event, d: dict) -> None:
        if event.resumed and not self._resume_prepared:
            self.begin_resume()
        self._config = None
        self._update_session_record(run_started=d, config=d["config"], mode=event.mode, status="running",
                      status_reason="", device=event.device, task=event.task,
                      metric=event.metric, label_names=list(event.label_names))

    def on_phase(self, event: Event, d: dict) -> None:
        self._update_session_record(phase_event=d, epoch=event.epoch, phase=event.phase)

    def on_progress(self, event: Event, d: dict) -> None:
        self._update_session_record(progress=d)

    def on_train_step(self, event: Event, d: dict) -> None:
        # Appended to loss.jsonl (a replayed step appends again; the later line wins).
        point = _point(d)
        self._loss[int(event.step)] = point
        self._loss_raw = None
        self._loss_log.append(point)

    def on_validation(self, event: Event, d: dict) -> None:
        self._table(Table.VALIDATIONS).upsert(Document(d, doc_id=int(event.epoch)))

    def on_prefix_accuracy(self, event: Event, d: dict) -> None:
        self._table(Table.PREFIX_ACCURACY).upsert(Document(d, doc_id=int(event.epoch)))

    def on_ta_request(self, event: Event, d: dict) -> None:
        # Appended to ta_calls.jsonl with its (empty) responses; each response is a line of
        # its own after it (a reader attaches it to the request of its id before it).
        d.update(responses=[], superseded=False)
        self._ta_log.append(d)
        self._ta_index[int(event.request_id)] = len(self._calls)
        self._calls.append(d)

    def on_ta_response(self, event: Event, d: dict) -> None:
        self._add_response(d)

    def on_prefix_scored(self, event: Event, d: dict) -> None:
        self._scored.append(d)
        self._scored_log.append(d)

    def on_history(self, event: Event, d: dict) -> None:
        # Appended to history.jsonl; a later record of an epoch wins (as the upsert did).
        self._history[int(event.epoch)] = d
        self._history_log.append(d)

    def on_windows(self, event: Event, d: dict) -> None:
        # Appended to windows.jsonl; a replayed epoch appends again and the later line wins.
        self._windows[int(event.epoch)] = d
        self._windows_log.append(d)

    def on_finetune(self, event: Event, d: dict) -> None:
        table = self._table(Table.JOBS)
        key = (int(event.epoch), event.job_id)
        latest = {k: d[k] for k in ("backend", "status", "message", "step", "total_steps",
                                    "loss", "eta_s")}
        if event.model:
            latest["model"] = event.model
        doc_id = self._job_index.get(key)
        if doc_id is None:
            doc = {"epoch": event.epoch, "job_id": event.job_id, "model": event.model,
                   "created": event.ts, "_seq": d["_seq"], "superseded": False,
                   "updates": [d], **latest}
            self._job_index[key] = table.insert(doc)
            return
        updates = list(table.get(doc_id=doc_id)["updates"])
        last = updates[-1] if updates else {}
        if any(last.get(k) != d.get(k) for k in ("status", "message", "step", "model")):
            updates.append(d)
        table.update({**latest, "updates": updates, "superseded": False}, doc_ids=[doc_id])

    def on_ta_model(self, event: Event, d: dict) -> None:
        self._table(Table.TA_MODELS).upsert(Document(d, doc_id=int(event.epoch)))
        self._update_session_record(ta_model=event.model)

    def on_description(self, event: Event, d: dict) -> None:
        d["superseded"] = False
        self._table(Table.DESCRIPTIONS).upsert(Document(d, doc_id=int(event.version)))

    def on_status(self, event: Event, d: dict) -> None:
        self._update_session_record(status=_STATUS_MAP.get(event.status, event.status),
                      status_reason=event.reason, engine_status=event.status)

    def on_checkpoint(self, event: Event, d: dict) -> None:
        state = d["state"]
        best = {k: v for k, v in (state.get("best") or {}).items() if k != "path"}
        self._update_session_record(state=state, checkpoint_seq=d["_seq"], checkpoint_ts=event.ts,
                      checkpoint_path=event.path, epoch=event.epoch, phase=event.phase,
                      step=event.step, best=best)
        version = int(state.get("description_version", 1))
        if state.get("description") and self._table(Table.DESCRIPTIONS).get(doc_id=version) is None:
            # The first description is never announced by an event: record it from the state.
            self._table(Table.DESCRIPTIONS).insert(Document(
                {"kind": "description", "version": version, "text": state["description"],
                 "applies_from_request": int(state.get("description_from_request", 1)),
                 "ts": event.ts, "_seq": d["_seq"], "superseded": False}, doc_id=version))

    def on_notice(self, event: Event, d: dict) -> None:
        self._table(Table.NOTICES).insert(d)

    def on_finished(self, event: Event, d: dict) -> None:
        fields: dict[str, Any] = {"finished": d, "status": _STATUS_MAP.get(event.status, event.status),
                                  "status_reason": event.reason}
        if event.best_epoch:
            best = dict(self._session_record().get("best") or {})
            best.update(epoch=event.best_epoch, prefix=event.best_prefix,
                        metrics=event.val_metrics)
            fields["best"] = best
        self._update_session_record(**fields)

    def begin_resume(self) -> None:
        """Forget what the engine will replay: call before `Engine(resume=last_state)`.

        The engine continues from the last persisted checkpoint and re-emits what came after
        it. Loss points after the checkpoint's step and prefixes scored after it are dropped
        (they come again); TA calls and fine-tune jobs made after it are kept for the record
        but marked `superseded` (they may have cost money); descriptions the resumed state
        does not know are marked superseded too.
        """
        with self._mutex:
            if not self.writable:
                raise GptaError(f"session {self.name!r} is not open for writing",
                                "open it with write=True to resume it")
            rec = self._session_record()
            state = rec.get("state") or {}
            cp_seq = int(rec.get("checkpoint_seq", 0))
            step = int(state.get("step", 0))
            later = [s for s in self._loss if s > step]
            if later:
                self._loss_raw = None
                for s in later:
                    del self._loss[s]
                # once per resume: the log holds exactly the points up to the checkpoint
                self._replace_log(self._loss_log)
            kept = [d for d in self._scored if d.get("_seq", 0) <= cp_seq]
            if len(kept) < len(self._scored):
                self._scored = kept
                self._replace_log(self._scored_log)  # once per resume, as for the loss points
            later = [c for c in self._calls if c.get("_seq", 0) > cp_seq and not c.get("superseded")]
            if later:
                for call in later:
                    call["superseded"] = True
                self._replace_log(self._ta_log)  # once per resume, as for the loss points
            later = [d.doc_id for d in self._table(Table.JOBS).all()
                     if d.get("_seq", 0) > cp_seq and not d.get("superseded")]
            if later:
                self._table(Table.JOBS).update({"superseded": True}, doc_ids=later)
            version = int(state.get("description_version", 1))
            newer = [d.doc_id for d in self._table(Table.DESCRIPTIONS).all() if d.doc_id > version]
            if newer:
                self._table(Table.DESCRIPTIONS).update({"superseded": True}, doc_ids=newer)
            resumes = list(rec.get("resumes", [])) + [{
                "ts": _now(), "epoch": int(state.get("epoch", 1)),
                "phase": state.get("phase", "setup"), "step": step,
                "dropped_after_seq": cp_seq}]
            self._update_session_record(resumes=resumes, epoch=int(state.get("epoch", 1)),
                          phase=state.get("phase", "setup"), step=step)
            self._reindex()
            self._index_calls()
            self._resume_prepared = True
            self.flush()

    def pending_description(self) -> str | None:
        """The newest description the user set that the last checkpoint does not hold."""
        with self._mutex:
            newer = [d for d in self._table(Table.DESCRIPTIONS).all() if d.get("superseded")]
            if not newer:
                return None
            return max(newer, key=lambda d: d.doc_id)["text"]

    def update_config(self, config: RunConfig) -> None:
        """Store a changed config (only fields that cannot change results; see runner)."""
        with self._mutex:
            self._update_session_record(config=_scrub(config.to_dict()))
            self._config = None
            self.flush()


class SessionReader(SessionLifecycle):
    """The reading side: queries of the tables and the replay of the stored events."""

    def snapshot(self) -> dict:
        """A deep copy of the whole database (including what is not flushed yet); the loss
        points are not in it (`loss_points`, `loss_log_text`)."""
        with self._mutex:
            return copy.deepcopy(self._storage.read() or {})

    def record(self) -> dict:
        """The session record: name, created, updated, status, mode, config, epoch, phase,
        step, best, state (the last checkpoint's RunState dict), resumes, ..."""
        with self._mutex:
            rec = _clean(self._session_record())
            rec["status"] = self.status
            return rec

    def loss_points(self) -> list[dict]:
        """[{step, epoch, epoch_step, epoch_steps, loss, lr, ts}], ordered by step."""
        with self._mutex:
            out = [p.copy() for p in self._points()]
            for p in out:
                p.pop("_seq", None)
            return out

    def loss_log_text(self) -> str:
        """The loss points as loss.jsonl holds them (bookkeeping included), for export."""
        with self._mutex:
            if self._loss_raw is not None:
                return self._loss_raw.decode("utf-8")
            return "".join(losslog.line_of(p) for p in self._points())

    def validations(self) -> list[dict]:
        """Validation results per epoch: [{epoch, prefix, metrics, best_epoch, improved, ts}]."""
        with self._mutex:
            return [_clean(d) for d in sorted(self._table(Table.VALIDATIONS).all(), key=lambda d: d.doc_id)]

    def prefix_accuracy(self) -> list[dict]:
        """Prefix-finding accuracy per epoch: [{epoch, accuracy, generated, better, ts}]."""
        with self._mutex:
            return [_clean(d) for d in sorted(self._table(Table.PREFIX_ACCURACY).all(), key=lambda d: d.doc_id)]

    def scored_prefixes(self, epoch: int | None = None) -> list[dict]:
        """Every scored prefix in order: [{epoch, prefix, score, metrics, reused, request_id,
        beat_shown_best, ts}], optionally for one epoch."""
        with self._mutex:
            docs = sorted(self._scored, key=lambda d: d.get("_seq", 0))
            return [_clean(d) for d in docs if epoch is None or d["epoch"] == epoch]

    def history(self, epoch: int | None = None) -> list[dict]:
        """The sorted history of each epoch (or one), ascending as the TA sees it:
        [{epoch, rank, prefix, score, training_prefix}] with rank 1 = the best score."""
        with self._mutex:
            rows = []
            for number in sorted(self._history):
                if epoch is not None and number != epoch:
                    continue
                doc = self._history[number]
                pairs = doc["history"]
                for i, (prefix, score) in enumerate(pairs):
                    rows.append({"epoch": number, "rank": len(pairs) - i, "prefix": prefix,
                                 "score": score, "training_prefix": prefix == doc["training_prefix"]})
            return rows

    def windows(self, epoch: int | None = None) -> list[dict]:
        """Dialogue-gradient windows: [{epoch, messages}] (OpenAI chat fine-tuning format
        plus the epoch), optionally for one epoch."""
        with self._mutex:
            rows = []
            for number in sorted(self._windows):
                if epoch is None or number == epoch:
                    rows.extend({**copy.deepcopy(w), "epoch": number}
                                for w in self._windows[number]["windows"])
            return rows

    def jobs(self) -> list[dict]:
        """Fine-tune jobs: [{epoch, job_id, backend, status, message, model, step,
        total_steps, loss, eta_s, created, superseded, updates: [status history]}]."""
        with self._mutex:
            return [_clean(d) for d in sorted(self._table(Table.JOBS).all(), key=lambda d: d.get("_seq", 0))]

    def ta_calls(self, include_superseded: bool = False) -> list[dict]:
        """TA requests with their responses (token usage in each response's `usage`)."""
        with self._mutex:
            docs = sorted(self._calls, key=lambda d: d.get("_seq", 0))
            return [_clean(d) for d in docs if include_superseded or not d.get("superseded")]

    def ta_usage(self) -> "TAUsage":
        """What the TA cost this session, over the calls that count (superseded ones, replayed
        after a resume, do not): requests (the highest request id, as the dashboard counts
        them), tokens and estimated cost summed over every reply (retries included).
        `gpta show`, the TUI's compare view and `gpta compare`'s report read it here."""
        calls = self.ta_calls()
        requests = max((int(c.get("request_id", 0) or 0) for c in calls), default=0)
        replies = [r for c in calls for r in c.get("responses", []) if isinstance(r, dict)]
        tokens = sum(int((r.get("usage") or {}).get("total_tokens", 0) or 0)
                     for r in replies if isinstance(r.get("usage") or {}, dict))
        cost = sum(float(r.get("cost", 0.0) or 0.0) for r in replies
                   if isinstance(r.get("cost", 0.0) or 0.0, (int, float)))
        return TAUsage(requests, tokens, cost)

    def windows_log_text(self) -> str:
        """The windows records as windows.jsonl holds them after a rewrite, for export."""
        return self._log_text(self._windows_log)

    def scored_log_text(self) -> str:
        """The scored prefixes as scored.jsonl holds them, for export."""
        return self._log_text(self._scored_log)

    def history_log_text(self) -> str:
        """Each epoch's history record as history.jsonl holds it after a rewrite, for export."""
        return self._log_text(self._history_log)

    def _log_text(self, log: AppendLog) -> str:
        with self._mutex:
            return "".join(losslog.line_of(r) for r in self._log_records(log))

    def ta_log_text(self) -> str:
        """The TA calls as ta_calls.jsonl holds them after a rewrite (each request with its
        responses, bookkeeping included), for export."""
        with self._mutex:
            return "".join(losslog.line_of(c) for c in self._calls)

    def ta_models(self) -> list[dict]:
        """TA model switches after fine-tuning: [{epoch, model, reason, ts}]."""
        with self._mutex:
            return [_clean(d) for d in sorted(self._table(Table.TA_MODELS).all(), key=lambda d: d.doc_id)]

    def descriptions(self) -> list[dict]:
        """Each dataset-description version: [{version, text, applies_from_request, ts,
        superseded}]."""
        with self._mutex:
            return [_clean(d) for d in sorted(self._table(Table.DESCRIPTIONS).all(), key=lambda d: d.doc_id)]

    def notices(self) -> list[dict]:
        with self._mutex:
            return [_clean(d) for d in sorted(self._table(Table.NOTICES).all(), key=lambda d: d.get("_seq", 0))]

    def events(self) -> list[Event]:
        """The session replayed as engine events, in their original order, for a UI to
        rebuild its view: the run start, loss points, scores, TA calls, jobs, ... and finally
        the current status (and RunFinished if the run ended)."""
        with self._mutex:
            rec = self._session_record()
            dicts: list[dict] = []
            for key in ("run_started", "phase_event"):
                if rec.get(key):
                    dicts.append(rec[key])
            dicts.extend(self._points())  # the only records without a kind
            for table in (Table.VALIDATIONS, Table.PREFIX_ACCURACY, Table.TA_MODELS,
                          Table.NOTICES):
                dicts.extend(self._table(table).all())
            dicts.extend(self._scored)
            dicts.extend(self._history.values())
            dicts.extend(self._windows.values())
            dicts.extend(d for d in self._table(Table.DESCRIPTIONS).all() if not d.get("superseded"))
            for call in self._calls:
                if call.get("superseded"):
                    continue
                if call.get("backend"):
                    dicts.append(call)
                dicts.extend(call["responses"])
            for job in self._table(Table.JOBS).all():
                if not job.get("superseded"):
                    dicts.extend(job["updates"])
            dicts.sort(key=lambda d: d.get("_seq", 0))
            events = [event_from_dict(copy.deepcopy(d)) if "kind" in d else _point_event(d)
                      for d in dicts]
            if rec.get("state"):
                st = rec["state"]
                events.append(CheckpointSaved(epoch=rec.get("epoch", st.get("epoch", 1)),
                                              phase=rec.get("phase", st.get("phase", "")),
                                              step=int(st.get("step", 0)),
                                              state=copy.deepcopy(st),
                                              path=rec.get("checkpoint_path", ""),
                                              ts=rec.get("checkpoint_ts", rec.get("updated", 0))))
            events.append(StatusChanged(status=self.status, reason=rec.get("status_reason", ""),
                                        ts=rec.get("updated", 0.0)))
            if rec.get("finished"):
                events.append(event_from_dict(copy.deepcopy(rec["finished"])))
            return events


class SessionHandle(SessionWriter, SessionReader):
    """One open session. A writer (opened with write=True) holds the session's lock and
    persists engine events through `listener` (SessionWriter); every handle offers the read
    API (SessionReader); SessionLifecycle flushes and closes.

    All methods are thread-safe: the engine thread writes while a UI thread reads.
    """
