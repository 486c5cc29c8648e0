"""Export a session to plain files (and import it back).

An export folder holds:

    session.json        the complete session database (re-importable), no secrets
    loss.jsonl          the training loss points, as the session stores them (re-importable)
    ta_calls.jsonl      the TA calls (requests, prompts, responses), one per line (re-importable)
    windows.jsonl       each epoch's windows record, as the session stores it (re-importable)
    scored.jsonl        every scored prefix, as the session stores it (re-importable)
    history.jsonl       each epoch's sorted history record (re-importable)
    config.toml         the run's settings: `gpta run --config config.toml` repeats the run
    history.csv/.json   the sorted history of every epoch
    scored.csv          every scored prefix, in order
    metrics.csv         validation metrics per epoch, test metrics with and without prefix
    loss.csv            the training loss curve
    validation.csv      the validation metric per epoch (at its last step), best epoch marked
    curves.png          loss (raw, smoothed) and validation per epoch, best epoch starred
    windows/epoch-N.jsonl  dialogue gradients (OpenAI chat fine-tuning format)
    best_prefix.txt     the best prefix found
    report.md           the final report
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

from engine.errors import GptaError, UsageError
from sessions.curves import write_curves
from sessions import losslog
from sessions.losslog import HISTORY_FILE, LOSS_FILE, SCORED_FILE, TA_FILE, WINDOWS_FILE
from sessions.storage import DatabaseUnreadable, atomic_write_text, parse_json_object
from sessions.store import (SCHEMA_VERSION, Table, SessionHandle, SessionStore, _check_schema,
                            _LOG_TABLES, _clean_call, _history_problem, _point_problem, _scrub,
                            _scored_problem, _ta_problem, _windows_problem,
                            format_ts,
                            validate_name)

EXPORT_FORMAT = "gpta-session-export"
# 4: scored prefixes in scored.jsonl and the history in history.jsonl (3: in the database's
# `scored` and `history` tables);
# 3: TA calls in ta_calls.jsonl and windows records in windows.jsonl (2: in the database's
# `ta_calls` and `windows` tables); 2: loss points in
# loss.jsonl (1: in the database's `loss` table). Import converts the older formats.
EXPORT_VERSION = 4
LOG_NAMES = (LOSS_FILE, TA_FILE, WINDOWS_FILE, SCORED_FILE, HISTORY_FILE)  # beside session.json


# ---- small writers -----------------------------------------------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def config_toml(config: dict) -> str:
    """A RunConfig dict as TOML that `build_config(file=...)` reads back to the same config."""
    lines = ["# gpta-tui run configuration (exported session)"]
    for key, value in config.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in config.items():
        if isinstance(value, dict):
            lines.append("")
            lines.append(f"[{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None)
    return "\n".join(lines) + "\n"


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _jsonl_text(items: list[dict]) -> str:
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)


def _md(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None or value == "" else str(value)


# ---- export ------------------------------------------------------------------------
def session_files(handle: SessionHandle) -> dict[str, str]:
    """What `import_session` reads back, as {relative path: text}: `session.json` (the whole
    database, no secrets), `loss.jsonl` (the loss points), `ta_calls.jsonl` (the TA calls)
    and `windows/epoch-N.jsonl`.
    `export_session` writes these among its files; a Ray task returns them to the driver
    (sessions/cluster.py)."""
    data = _scrub(handle.snapshot())
    # an older session read before a writer moved them
    for table in _LOG_TABLES:
        data.pop(table.value, None)
    payload = {"format": EXPORT_FORMAT, "format_version": EXPORT_VERSION,
               "schema": SCHEMA_VERSION, "exported": time.time(), "name": handle.name,
               "database": data}
    files = {"session.json": json.dumps(payload, ensure_ascii=False, indent=1),
             LOSS_FILE: handle.loss_log_text(), TA_FILE: _scrub_lines(handle.ta_log_text()),
             WINDOWS_FILE: handle.windows_log_text(), SCORED_FILE: handle.scored_log_text(),
             HISTORY_FILE: handle.history_log_text()}
    by_epoch: dict[int, list[dict]] = {}
    for w in handle.windows():
        by_epoch.setdefault(w.pop("epoch"), []).append(w)
    for epoch, items in by_epoch.items():
        files[f"windows/epoch-{epoch}.jsonl"] = _jsonl_text(items)
    return files


def export_session(handle: SessionHandle, out_dir: Path | str) -> Path:
    """Write the session's data and final report to `out_dir` (new or empty)."""
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"export folder {str(out)!r} already exists and is not empty",
                         "choose a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    rec = handle.record()
    config = rec.get("config", {})
    metric = config.get("student", {}).get("metric", "accuracy")

    for rel, text in session_files(handle).items():  # session.json, the two logs, windows
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / rel, text)
    atomic_write_text(out / "config.toml", config_toml(config))

    history = handle.history()
    points = handle.loss_points()
    atomic_write_text(out / "history.csv", _csv_text(
        ["epoch", "rank", "prefix", "score", "training_prefix"],
        [[r["epoch"], r["rank"], r["prefix"], r["score"], int(r["training_prefix"])] for r in history]))
    per_epoch: dict[int, dict] = {}
    for r in history:
        entry = per_epoch.setdefault(r["epoch"], {"epoch": r["epoch"], "training_prefix": "",
                                                  "history": []})
        entry["history"].append([r["prefix"], r["score"]])
        if r["training_prefix"]:
            entry["training_prefix"] = r["prefix"]
    atomic_write_text(out / "history.json", json.dumps(
        {"metric": metric, "order": "ascending", "epochs": list(per_epoch.values())},
        ensure_ascii=False, indent=1))

    atomic_write_text(out / "scored.csv", _csv_text(
        ["epoch", "request_id", "prefix", "score", "reused", "beat_shown_best"],
        [[s["epoch"], s["request_id"], s["prefix"], s["score"], int(s["reused"]),
          int(s.get("beat_shown_best", False))] for s in handle.scored_prefixes()]))

    atomic_write_text(out / "loss.csv", _csv_text(
        ["step", "epoch", "epoch_step", "loss", "lr"],
        [[p["step"], p["epoch"], p["epoch_step"], p["loss"], p["lr"]] for p in points]))

    atomic_write_text(out / "metrics.csv", _metrics_csv(handle, rec))
    write_curves(out, [(p["step"], p["epoch"], p["loss"]) for p in points],
                 [(v["epoch"], float(v["metrics"][metric])) for v in handle.validations()
                  if isinstance(v.get("metrics", {}).get(metric), (int, float))],
                 metric, (rec.get("best") or {}).get("epoch"), f"{handle.name}: student loss and "
                 f"validation {metric}", with_loss_csv=False)

    best = rec.get("best") or {}
    atomic_write_text(out / "best_prefix.txt", (best.get("prefix") or "") + "\n")
    atomic_write_text(out / "report.md", report_markdown(handle))
    return out


def _metrics_csv(handle: SessionHandle, rec: dict) -> str:
    validations = handle.validations()
    accuracy = {a["epoch"]: a for a in handle.prefix_accuracy()}
    finished = rec.get("finished") or {}
    keys: list[str] = []
    for metrics in [v["metrics"] for v in validations] + [finished.get("test_metrics") or {},
                                                            finished.get("test_metrics_no_prefix") or {}]:
        keys.extend(k for k in metrics if k not in keys)
    rows = []
    for v in validations:
        acc = accuracy.get(v["epoch"], {})
        rows.append(["validation", v["epoch"], v["prefix"], *[v["metrics"].get(k, "") for k in keys],
                     acc.get("accuracy", ""), acc.get("generated", ""), acc.get("better", "")])
    best_epoch = finished.get("best_epoch", "")
    if finished.get("test_metrics"):
        rows.append(["test", best_epoch, finished.get("best_prefix", ""),
                     *[finished["test_metrics"].get(k, "") for k in keys], "", "", ""])
    if finished.get("test_metrics_no_prefix"):
        rows.append(["test_no_prefix", best_epoch, "",
                     *[finished["test_metrics_no_prefix"].get(k, "") for k in keys], "", "", ""])
    return _csv_text(["split", "epoch", "prefix", *keys, "prefix_accuracy", "generated", "better"],
                     rows)


def report_markdown(handle: SessionHandle) -> str:
    """The session's final report (also readable for an unfinished session)."""
    rec = handle.record()
    cfg = rec.get("config", {})
    metric = cfg.get("student", {}).get("metric", "accuracy")
    finished = rec.get("finished") or {}
    best = rec.get("best") or {}
    lines = [f"# GPTA session `{handle.name}`", ""]
    reason = f" ({_md(rec['status_reason'])})" if rec.get("status_reason") else ""
    lines += [
        f"- Status: **{rec.get('status')}**{reason}",
        f"- Mode: {cfg.get('mode', '?')}; dataset: {_md(cfg.get('data', {}).get('dataset', '?'))}; "
        f"seed {cfg.get('seed', '?')}",
        f"- Student: {_md(cfg.get('student', {}).get('model', '?'))} "
        f"({cfg.get('student', {}).get('tuning', '?')} tuning)",
        f"- Teaching assistant: {cfg.get('ta', {}).get('backend', '?')} "
        f"{_md(cfg.get('ta', {}).get('model', ''))}; fine-tune backend: "
        f"{cfg.get('finetune', {}).get('backend', '?')}",
        f"- Epochs: {rec.get('epoch', 0)} of {cfg.get('loop', {}).get('epochs', '?')}; "
        f"optimizer steps: {rec.get('step', 0)}",
        f"- Created {format_ts(rec.get('created'))}, updated {format_ts(rec.get('updated'))}"
        + (f", resumed {len(rec['resumes'])} time(s)" if rec.get("resumes") else ""),
        "",
        "## Result",
        "",
    ]
    if best:
        lines += [f"- Best epoch: {best.get('epoch', '-')}",
                  f"- Best prefix: `{_md(best.get('prefix', ''))}`",
                  f"- Validation {metric}: {_fmt(best.get('score', (best.get('metrics') or {}).get(metric)))}"]
    else:
        lines.append("- No result yet.")
    if finished.get("test_metrics"):
        keys = list(finished["test_metrics"])
        lines += ["", "| Test | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|",
                  "| with best prefix | " + " | ".join(_fmt(finished["test_metrics"].get(k)) for k in keys) + " |"]
        if finished.get("test_metrics_no_prefix"):
            lines.append("| without prefix | " + " | ".join(
                _fmt(finished["test_metrics_no_prefix"].get(k)) for k in keys) + " |")

    validations = handle.validations()
    if validations:
        accuracy = {a["epoch"]: a for a in handle.prefix_accuracy()}
        best_of = {}
        for row in handle.history():
            if row["rank"] == 1:
                best_of[row["epoch"]] = row
        jobs_by_epoch = {j["epoch"]: j for j in handle.jobs() if not j.get("superseded")}
        lines += ["", "## Epochs", "",
                  f"| Epoch | Training prefix | Val {metric} | Best history prefix | Score | "
                  "Prefix-finding accuracy | Fine-tune |", "|---|---|---|---|---|---|---|"]
        for v in validations:
            e = v["epoch"]
            hb = best_of.get(e, {})
            acc = accuracy.get(e)
            acc_text = f"{acc['accuracy']:.2f} ({acc['better']}/{acc['generated']})" if acc else "-"
            job = jobs_by_epoch.get(e)
            lines.append(f"| {e} | {_md(v['prefix']) or '(none)'} | {_fmt(v['metrics'].get(metric))} | "
                         f"{_md(hb.get('prefix', '-'))} | {_fmt(hb.get('score'))} | {acc_text} | "
                         f"{job['status'] if job else '-'} |")

    calls = handle.ta_calls()
    if calls:
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        responses = 0
        for call in calls:
            for r in call.get("responses", []):
                responses += 1
                for k in usage:
                    usage[k] += int((r.get("usage") or {}).get(k, 0) or 0)
        superseded = len(handle.ta_calls(include_superseded=True)) - len(calls)
        models = sorted({c["model"] for c in calls if c.get("model")})
        lines += ["", "## Teaching assistant", "",
                  f"- Requests: {len(calls)} ({responses} replies)"
                  + (f"; {superseded} more were made before an interruption and redone" if superseded else ""),
                  f"- Tokens: {usage['total_tokens']} (prompt {usage['prompt_tokens']}, "
                  f"completion {usage['completion_tokens']})",
                  f"- Models: {', '.join(_md(m) for m in models)}"]
    jobs = handle.jobs()
    if jobs:
        lines += ["", "## Fine-tune jobs", "", "| Epoch | Job | Backend | Status | Model | Message |",
                  "|---|---|---|---|---|---|"]
        for j in jobs:
            status = j["status"] + (" (superseded)" if j.get("superseded") else "")
            lines.append(f"| {j['epoch']} | {_md(j['job_id']) or '-'} | {j.get('backend', '')} | {status} | "
                         f"{_md(j.get('model') or '-')} | {_md(j.get('message', ''))} |")
    descriptions = handle.descriptions()
    if descriptions:
        lines += ["", "## Dataset description", ""]
        for d in descriptions:
            note = " (set after the last checkpoint; not applied)" if d.get("superseded") else ""
            lines.append(f"- v{d['version']}, from TA request {d['applies_from_request']}{note}: "
                         f"{_md(d['text'])}")
    history = handle.history()
    if history:
        last = max(r["epoch"] for r in history)
        top = sorted((r for r in history if r["epoch"] == last), key=lambda r: r["rank"])[:5]
        lines += ["", f"## Top prefixes (epoch {last})", "", f"| Rank | Prefix | {metric} |",
                  "|---|---|---|"]
        lines += [f"| {r['rank']} | {_md(r['prefix'])} | {_fmt(r['score'])} |" for r in top]
    problems = [n for n in handle.notices() if n["level"] in ("warning", "error")]
    if problems:
        lines += ["", "## Warnings and errors", ""]
        lines += [f"- {n['level']}: {_md(n['message'])}" for n in problems]
    return "\n".join(lines) + "\n"


# ---- import ------------------------------------------------------------------------
def import_session(store: SessionStore, src_dir: Path | str, name: str | None = None, *,
                   origin: str | None = None) -> str:
    """Recreate a session from an export folder; returns its name.

    The session keeps its exported name unless `name` is given; a clash is an error. An
    export carries no checkpoints, so an imported unfinished session can be viewed but not
    resumed. `imported_from` records `origin` (default: the folder's absolute path).
    """
    src = Path(src_dir).expanduser()
    path = src / "session.json"
    if not path.is_file():
        raise UsageError(f"{str(src)!r} is not a gpta session export (no session.json in it)",
                         "pass the folder written by `gpta export`")
    try:  # as the logs: a regular file (never a link to elsewhere), under their size cap
        payload = parse_json_object(losslog.read_raw(path, MAX_SESSION_JSON_BYTES) or b"", path)
    except DatabaseUnreadable as exc:
        raise UsageError(f"export file {str(path)!r} is unreadable ({exc.reason})",
                         "export the session again") from None
    if (not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT
            or not isinstance(payload.get("database"), dict)):
        raise UsageError(f"{str(path)!r} is not a gpta session export",
                         "pass the folder written by `gpta export`")
    version = payload.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise UsageError(f"{str(path)!r} has a format_version that is not an integer",
                         "pass the folder written by `gpta export`, unedited")
    if version > EXPORT_VERSION:
        raise UsageError(f"{str(path)!r} was written by a newer gpta-tui",
                         "upgrade gpta-tui: pip install -U gpta-tui")
    stored_name = payload.get("name", "")
    if name is None and not isinstance(stored_name, str):
        raise UsageError(f"{str(path)!r} has a session name that is not a string",
                         "import it under a name: gpta import DIR --name NAME")
    name = validate_name(name or stored_name)
    data = _check_import_shape(copy.deepcopy(payload["database"]), path)
    try:  # the schema, then every table, record and field readers use
        data = _check_schema(data, name, path)
    except GptaError as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(exc.problem, "import the folder written by `gpta export`, unedited") \
            from None
    rec = data[Table.SESSION]["1"]
    rec["name"] = name
    rec.setdefault("config", {})["name"] = name
    rec["imported_from"] = origin or str(src.resolve())
    rec["imported"] = time.time()
    if rec.get("status") == "running":
        rec["status"] = "interrupted"
        rec["status_reason"] = "exported while running"
    if store.exists(name) or store.session_dir(name).exists():
        raise UsageError(f"a session named {name!r} already exists in {str(store.root)!r}",
                         f"delete it first (`gpta delete {name}`) or import under another name")
    windows = _read_window_files(src / "windows")  # validated before anything is written
    files = {f"windows/{fname}": text for fname, text in windows.items()}
    files[LOSS_FILE] = _loss_log(data, src / LOSS_FILE)
    files[TA_FILE] = _ta_log(data, src / TA_FILE)
    files[WINDOWS_FILE] = _windows_log(data, src / WINDOWS_FILE)
    files[SCORED_FILE] = _scored_log(data, src / SCORED_FILE)
    files[HISTORY_FILE] = _history_log(data, src / HISTORY_FILE)
    store.write_imported(name, _scrub(data), files)
    return name


def import_files(store: SessionStore, files: dict, *, origin: str) -> str:
    """Import a session from `session_files` output received from elsewhere (a Ray worker):
    the files are laid out as an export folder and go through `import_session`, the same
    validation as `gpta import`. Only the names an export uses are accepted."""
    import tempfile

    fix = "the worker sent something that is not a session export; check that every node runs the same gpta-tui"
    if not isinstance(files, dict) or not isinstance(files.get("session.json"), str):
        raise UsageError(f"the session sent by {origin} holds no session.json", fix)
    with tempfile.TemporaryDirectory(prefix=".gpta-receive-") as tmp:
        folder = Path(tmp)
        for rel, text in files.items():
            if not isinstance(rel, str) or not isinstance(text, str) or not (
                    rel in ("session.json", *LOG_NAMES) or (rel.startswith("windows/")
                                              and _WINDOW_NAME.fullmatch(rel[len("windows/"):]))):
                raise UsageError(f"the session sent by {origin} holds an unexpected file "
                                 f"{str(rel)[:80]!r}", fix)
            (folder / rel).parent.mkdir(exist_ok=True)
            (folder / rel).write_text(text, encoding="utf-8")
        return import_session(store, folder, origin=origin)


def _loss_log(data: dict, path: Path) -> str:
    """The imported session's loss.jsonl: the export's file (a regular file under the cap,
    every line complete and a loss point), with the points of an older export's `loss` table
    (removed from `data`) under them; a point of the file wins."""
    points = {int(p["step"]): p for doc in (data.pop(Table.LOSS.value, None) or {}).values()
              for p in doc["points"].values()}
    for record in _read_log(path, _point_problem):
        points[int(record["step"])] = record
    return "".join(losslog.line_of(points[step]) for step in sorted(points))


def _ta_log(data: dict, path: Path) -> str:
    """The imported session's ta_calls.jsonl: an older export's `ta_calls` table (removed
    from `data`, in _seq order), then the export's file, checked as `_loss_log` checks
    loss.jsonl (every line a TA request or response); secrets scrubbed."""
    table = sorted((data.pop(Table.TA_CALLS.value, None) or {}).values(),
                   key=lambda d: d.get("_seq", 0))
    calls = [_clean_call(doc) for doc in table] + _read_log(path, _ta_problem)
    return "".join(losslog.line_of(_scrub(c)) for c in calls)


def _windows_log(data: dict, path: Path) -> str:
    """The imported session's windows.jsonl: an older export's `windows` table (removed from
    `data`), then the export's file, checked line by line; a later record of an epoch wins."""
    records = {int(doc.get("epoch", key)): doc
               for key, doc in (data.pop(Table.WINDOWS.value, None) or {}).items()}
    for record in _read_log(path, _windows_problem):
        records[int(record["epoch"])] = record
    return "".join(losslog.line_of(_scrub(records[e])) for e in sorted(records))


def _scored_log(data: dict, path: Path) -> str:
    """The imported session's scored.jsonl: an older export's `scored` table (removed from
    `data`, in _seq order), then the export's file, checked line by line."""
    table = sorted((data.pop(Table.SCORED.value, None) or {}).values(),
                   key=lambda d: d.get("_seq", 0))
    records = table + _read_log(path, _scored_problem)
    return "".join(losslog.line_of(_scrub(r)) for r in records)


def _history_log(data: dict, path: Path) -> str:
    """The imported session's history.jsonl: an older export's `history` table (removed
    from `data`), then the export's file, checked line by line; a later record of an epoch
    wins."""
    records = {int(key): doc for key, doc in (data.pop(Table.HISTORY.value, None) or {}).items()}
    for record in _read_log(path, _history_problem):
        records[int(record["epoch"])] = record
    return "".join(losslog.line_of(_scrub(records[e])) for e in sorted(records))


def _read_log(path: Path, explain) -> list[dict]:
    """Every record of an export's log file, strictly: one UsageError for anything wrong."""
    try:
        return losslog.read_strict(path, explain)
    except DatabaseUnreadable as exc:
        raise UsageError(f"{str(path)!r} is unreadable ({exc.reason})",
                         "import the folder written by `gpta export`, unedited") from None


def _scrub_lines(text: str) -> str:
    """A log's text with secret keys removed from every record (as the database's are)."""
    return "".join(losslog.line_of(_scrub(json.loads(line))) for line in text.splitlines())


MAX_WINDOW_FILE_BYTES = 64 * 1024 * 1024
MAX_SESSION_JSON_BYTES = 256 * 1024 * 1024  # an export's session.json (format 1 held the loss)
_WINDOW_NAME = re.compile(r"epoch-\d{1,6}\.jsonl")


def _read_window_files(folder: Path) -> dict[str, str]:
    """The export's windows/epoch-N.jsonl files: regular files only, never links, size-capped."""
    if not os.path.lexists(folder):
        return {}
    if folder.is_symlink() or not folder.is_dir():
        raise UsageError(f"{str(folder)!r} is not a plain folder (a link or a file)",
                         "import the folder written by `gpta export`, unedited")
    out: dict[str, str] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not _WINDOW_NAME.fullmatch(entry.name):
            continue
        where = str(Path(folder) / entry.name)
        if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            raise UsageError(f"{where!r} is not a regular file (a link, folder or device)",
                             "import the folder written by `gpta export`, unedited")
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(where, flags)
        except OSError as exc:
            raise UsageError(f"cannot read {where!r} ({exc.strerror})",
                             "import the folder written by `gpta export`, unedited") from None
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise UsageError(f"{where!r} is not a regular file",
                                 "import the folder written by `gpta export`, unedited")
            raw = fh.read(MAX_WINDOW_FILE_BYTES + 1)
        if len(raw) > MAX_WINDOW_FILE_BYTES:
            raise UsageError(f"{where!r} is larger than {MAX_WINDOW_FILE_BYTES // 2**20} MiB",
                             "import the folder written by `gpta export`, unedited")
        try:
            out[entry.name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{where!r} is not UTF-8 text",
                             "import the folder written by `gpta export`, unedited") from None
    return out


def _check_import_shape(data: dict, path: Path) -> dict:
    """Every table a mapping of records, a session record, and a state that resumes safely."""
    fix = "import the folder written by `gpta export`, unedited"
    for table, rows in data.items():
        if not isinstance(table, str) or not isinstance(rows, dict) or not all(
                isinstance(doc, dict) for doc in rows.values()):
            raise UsageError(f"{str(path)!r}: table {table!r} is not a mapping of records", fix)
        bad = next((key for key in rows if not (key.isascii() and key.isdigit())), None)
        if bad is not None:
            raise UsageError(f"{str(path)!r}: table {table!r} has a record id {bad!r} that is not "
                             "a number", fix)
    rec = data.get(Table.SESSION, {}).get("1")
    if not isinstance(rec, dict):
        raise UsageError(f"{str(path)!r} holds no session record", "export the session again")
    from engine.config import RunConfig
    from engine.errors import GptaError as _GptaError

    try:
        RunConfig.from_dict(rec.get("config") if isinstance(rec.get("config"), dict) else {},
                            "exported config")
    except _GptaError as exc:
        raise UsageError(f"{str(path)!r}: {exc.problem}", fix) from None
    except (TypeError, AttributeError, ValueError):
        raise UsageError(f"{str(path)!r}: the session's config has the wrong shape", fix) from None
    for key, kind in (("config", dict), ("status", str), ("state", (dict, type(None))),
                      ("best", (dict, type(None))), ("finished", (dict, type(None)))):
        if key in rec and not isinstance(rec[key], kind):
            raise UsageError(f"{str(path)!r}: the session's {key!r} has the wrong type "
                             f"({type(rec[key]).__name__})", fix)
    state = rec.get("state")
    if state:
        from engine.paths import contained
        from engine.state import RunState

        try:
            parsed = RunState.from_dict(state)
            # Paths are checked against a stand-in session folder: an import must never name
            # anything outside its own folder, even though imported sessions are not resumed.
            base = Path("/nonexistent-gpta-session")
            if parsed.checkpoint:
                contained(base, parsed.checkpoint, "checkpoint")
            if parsed.best:
                contained(base, parsed.best.get("path"), "best checkpoint")
        except GptaError as exc:
            raise UsageError(f"{str(path)!r}: {exc.problem}", fix) from None
    return data
