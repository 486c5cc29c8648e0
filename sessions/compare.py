"""`gpta compare`'s orchestration: a comparison plan (`engine.experiments.CompareSpec`) run as
ordinary sessions, its manifest and output folder, and its results read back from the sessions.

    spec = CompareSpec.create("cmp", base_config, arms=["baseline", "gpta"], seeds=[42, 43],
                              train_sizes=[500])
    outcome = run_compare(spec, home)        # each run is a session: cmp-gpta-s42-n500, ...
    results = collect_results(spec, home, outcome.manifest)
    write_reports(spec, results, outcome.out_dir)  # engine.experiments: tables and charts

A manifest (`<out>/manifest.json`) records the plan; running the same comparison again skips
finished sessions and resumes unfinished ones. Each run goes through `sessions.runner`'s
one run loop (`run_session`). The statistics, tables and charts are pure and live in
`engine/experiments.py`.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.config import RunConfig
from engine.controls import Controls
from engine.state import best_validation
from engine.errors import GptaError, UsageError
from engine.experiments import (Band, CompareSpec, RunResult, RunSpec, Setting, dotted_differences,
                                epoch_bands, low_resource_setting, record_metric,
                                spec_differences)
from engine.fsutil import write_text_atomic
from sessions.runner import RESUME_OVERRIDABLE, resume_session, run_session, start_session
from sessions.status import session_status
from sessions.store import SessionStore

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "gpta-compare"


def default_out_dir(home: Path | str | None, name: str) -> Path:
    return SessionStore(home).home / "compare" / name



# ==========================================================================================
# The manifest
# ==========================================================================================
def read_manifest(out_dir: Path | str) -> dict | None:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # ValueError: bad JSON
        raise GptaError(f"comparison manifest {str(path)!r} is unreadable ({exc})",
                        "restore it, or remove the folder and run the comparison again "
                        "(finished sessions are reused)") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise GptaError(f"{str(path)!r} is not a gpta comparison manifest",
                        "choose another --out folder")
    return data


def _new_manifest(spec: CompareSpec) -> dict:
    now = time.time()
    return {"format": MANIFEST_FORMAT, "version": 1, "name": spec.name, "created": now,
            "updated": now, "spec": spec.to_dict(), "runs": {}}


def save_manifest(out_dir: Path, manifest: dict) -> None:
    manifest["updated"] = time.time()
    write_text_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def load_spec(out_dir: Path | str) -> CompareSpec:
    """The plan of the comparison saved in `out_dir` (to resume it with its own settings)."""
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise UsageError(f"no comparison in {str(out_dir)!r} (no {MANIFEST})",
                         "check --name / --out, or start it with its options")
    return CompareSpec.from_dict(manifest["spec"])


# ==========================================================================================
# Running
# ==========================================================================================
@dataclass
class CompareOutcome:
    spec: CompareSpec
    out_dir: Path
    manifest: dict
    status: str              # finished | stopped | failed
    ran: list[str]           # sessions run (started or resumed) by this call
    skipped: list[str]       # sessions already finished
    failed: dict[str, str]   # session -> error message
    wall_s: float


EngineKwargs = Callable[[RunConfig], dict]
ListenersFor = Callable[[RunSpec, int, int], list]


def _comparable(config: dict) -> dict:
    """A config as a complete dict (fields added since it was stored get their defaults)
    without what may legitimately differ (name, resume-only settings)."""
    out = RunConfig.from_dict(config, "stored config").to_dict()
    out.pop("name", None)
    for key in RESUME_OVERRIDABLE:
        section, _, sub = key.rpartition(".")
        (out.get(section, {}) if section else out).pop(sub, None)
    return out


#: `imported_from` of a session a Ray worker ran in its own home and sent back
#: (sessions/cluster.py); such a session has no checkpoints, so an unfinished one is rerun
RAY_ORIGIN = "ray:"


def prepare(spec: CompareSpec, home: Path | str | None, out_dir: Path | str | None
            ) -> tuple[SessionStore, Path, dict]:
    """The store, output folder and manifest of `spec` (a new manifest, or the saved one after
    checking that it was made with the same plan)."""
    spec.validate()
    store = SessionStore(home)
    out = Path(out_dir) if out_dir else default_out_dir(home, spec.name)
    manifest = read_manifest(out)
    if manifest is None:
        manifest = _new_manifest(spec)
    else:
        saved = CompareSpec.from_dict(manifest["spec"])
        diff = spec_differences(saved, spec)
        if diff:
            raise UsageError(f"comparison {spec.name!r} in {str(out)!r} was started with other "
                             f"settings (they differ in {', '.join(diff[:5])})",
                             "continue it with `gpta compare --resume --name NAME`, or choose "
                             "another --name / --out")
    save_manifest(out, manifest)
    return store, out, manifest


def manifest_entry(manifest: dict, run: RunSpec) -> dict:
    return manifest["runs"].setdefault(run.session, {
        "arm": run.arm, "seed": run.seed, "train_size": run.train_size,
        "max_windows": run.max_windows, "status": "pending", "wall_s": 0.0})


def run_state(store: SessionStore, spec: CompareSpec, run: RunSpec, config: RunConfig) -> str:
    """What to do with one planned run: "new" (no session yet), "finished" (skip it) or
    "resume" (its session exists, unfinished). A session made by something else is refused;
    an unfinished one a Ray worker sent back (no checkpoints) is deleted and counts as new."""
    if not store.exists(run.session):
        return "new"
    with store.open(run.session) as reader:
        stored, stored_status = reader.record().get("config", {}), reader.status
        origin = reader.record().get("imported_from")
    if _comparable(stored) != _comparable(config.to_dict()):
        diff = dotted_differences(_comparable(stored), _comparable(config.to_dict()))
        raise UsageError(f"session {run.session!r} exists but was not made by comparison "
                         f"{spec.name!r} (its settings differ in {', '.join(diff[:5])})",
                         f"delete it (`gpta delete {run.session}`) or choose another --name")
    if stored_status == "finished":
        return "finished"
    if isinstance(origin, str) and origin.startswith(RAY_ORIGIN):
        store.delete(run.session)
        return "new"
    return "resume"


def pending_runs(spec: CompareSpec, store: SessionStore, manifest: dict, skipped: list[str],
                 say: Callable[[str], None], on_skip: Callable[[], None] = lambda: None):
    """The runs of the plan still to run, as (i, run, config, manifest entry, "new" or
    "resume"), checked one at a time; finished ones are recorded in `skipped` and said."""
    plan = spec.runs()
    for i, run in enumerate(plan, 1):
        config = spec.run_config(run)
        entry = manifest_entry(manifest, run)
        state = run_state(store, spec, run, config)
        if state == "finished":
            entry["status"] = "finished"
            skipped.append(run.session)
            say(f"[{i}/{len(plan)}] {run.session}: finished earlier, skipped")
            on_skip()
            continue
        yield i, run, config, entry, state


def open_run(session: str, config: RunConfig, home: Path | str | None, *, resume: bool,
             listeners: list, controls: Controls, engine_kwargs: dict):
    """(handle, engine) for one run: its session resumed, or created."""
    if resume:
        return resume_session(session, home, listeners=listeners, controls=controls,
                              **engine_kwargs)
    return start_session(config, home, listeners=listeners, controls=controls, **engine_kwargs)


def finish_run(handle, engine) -> tuple[str, str]:
    """Run one opened run to its end: (result, one-line message), result being finished,
    stopped or failed. Only an interruption (KeyboardInterrupt, SystemExit) escapes."""
    try:
        # a new run that fails during setup (bad dataset, missing model) is deleted: a
        # rerun starts it afresh
        finished = run_session(handle, engine, new=True)
        return finished.status, finished.reason
    except GptaError as exc:
        return "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - the engine logged it; the comparison goes on
        return "failed", f"{type(exc).__name__}: {exc}"


def record_result(entry: dict, result: str, message: str, wall_s: float,
                  cpu_s: float | None = None) -> None:
    entry["wall_s"] = round(entry["wall_s"] + wall_s, 2)
    if cpu_s is not None:  # CPU seconds of the run's process while it ran (all its threads)
        entry["cpu_s"] = round(entry.get("cpu_s", 0.0) + cpu_s, 2)
    entry["status"] = session_status(result)
    entry["message"] = message
    if result == "finished":
        entry["ended"] = time.time()


def run_compare(spec: CompareSpec, home: Path | str | None = None, out_dir: Path | str | None = None,
                *, controls: Controls | None = None, engine_kwargs: EngineKwargs | None = None,
                listeners_for: ListenersFor | None = None, say: Callable[[str], None] = lambda s: None,
                keep_going: bool = False) -> CompareOutcome:
    """Run (or continue) every run of `spec` as a session; finished sessions are skipped.

    Stops at the first failed run unless `keep_going`; a user stop (controls.stop()) ends the
    current run at a step boundary, saved and resumable. `engine_kwargs(config)` may supply
    engine parts (tests pass fake TAs); `listeners_for(run, i, total)` gives each run's
    listeners (a progress view). `sessions.cluster.run_compare_ray` runs the same plan as Ray
    tasks, side by side.
    """
    store, out, manifest = prepare(spec, home, out_dir)
    controls = controls or Controls()
    plan = spec.runs()
    ran, skipped, failed = [], [], {}
    status = "finished"
    started = time.perf_counter()
    for i, run, config, entry, state in pending_runs(spec, store, manifest, skipped, say,
                                                     lambda: save_manifest(out, manifest)):
        kwargs = engine_kwargs(config) if engine_kwargs else {}
        listeners = listeners_for(run, i, len(plan)) if listeners_for else []
        say(f"[{i}/{len(plan)}] {run.session}: " + ("resuming" if state == "resume" else "starting"))
        handle, engine = open_run(run.session, config, home, resume=state == "resume", listeners=listeners,
                                  controls=controls, engine_kwargs=kwargs)
        entry["status"] = "running"
        entry.setdefault("started", time.time())
        save_manifest(out, manifest)
        ran.append(run.session)
        t0, cpu0 = time.perf_counter(), time.process_time()
        try:
            result, message = finish_run(handle, engine)
        except BaseException:
            entry["status"] = "interrupted"
            entry["wall_s"] = round(entry["wall_s"] + time.perf_counter() - t0, 2)
            save_manifest(out, manifest)
            raise
        finally:
            for view in listeners:
                close = getattr(view, "close", None)
                if callable(close):
                    close()
        record_result(entry, result, message, time.perf_counter() - t0, time.process_time() - cpu0)
        save_manifest(out, manifest)
        if result == "stopped":
            status = "stopped"
            break
        if result == "failed":
            failed[run.session] = message
            status = "failed"
            say(f"[{i}/{len(plan)}] {run.session}: failed: {message}")
            if not keep_going:
                break
    manifest["wall_s"] = round(manifest.get("wall_s", 0.0) + time.perf_counter() - started, 2)
    save_manifest(out, manifest)
    return CompareOutcome(spec, out, manifest, status, ran, skipped, failed,
                          round(time.perf_counter() - started, 2))



# ==========================================================================================
# Reading results back from the sessions
# ==========================================================================================
@dataclass
class EpochSeries:
    """What the over-fitting view plots for one session."""

    metric: str
    epochs: list[int]
    val: list[float]          # validation metric after each epoch's training
    train_loss: list[float]   # mean training loss of each epoch (NaN if no steps recorded)


def session_epoch_series(handle) -> EpochSeries:
    """Validation metric and mean training loss per epoch of one session (for charts)."""
    rec = handle.record()
    metric = record_metric(rec)
    val = {int(v["epoch"]): float(v["metrics"][metric]) for v in handle.validations()
           if metric in v.get("metrics", {})}
    losses: dict[int, list[float]] = {}
    for point in handle.loss_points():
        losses.setdefault(int(point["epoch"]), []).append(float(point["loss"]))
    epochs = sorted(val)
    return EpochSeries(metric, epochs, [val[e] for e in epochs],
                       [statistics.fmean(losses[e]) if losses.get(e) else math.nan for e in epochs])


def collect_results(spec: CompareSpec, home: Path | str | None = None,
                    manifest: dict | None = None) -> list[RunResult]:
    """One RunResult per planned run, read from its session (status "missing" if none)."""
    store = SessionStore(home)
    walls = {k: v.get("wall_s") for k, v in ((manifest or {}).get("runs") or {}).items()}
    results = []
    for run in spec.runs():
        if not store.exists(run.session):
            results.append(RunResult(run, "missing", wall_s=walls.get(run.session)))
            continue
        with store.open(run.session) as handle:
            results.append(session_result(handle, run, spec.metric, walls.get(run.session)))
    return results


def _floats(metrics: object) -> dict[str, float]:
    """The numeric entries of a stored metrics mapping."""
    if not isinstance(metrics, dict):
        return {}
    return {str(k): float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def session_result(handle, run: RunSpec | None = None, metric: str | None = None,
                   wall_s: float | None = None) -> RunResult:
    """One session read back as `gpta compare`'s report reads it. `run`: its place in a
    comparison plan (default: mode, seed and train size from its own config); `metric`: the
    plan's metric (default: the session's). Test figures count only for a finished session."""
    rec = handle.record()
    cfg = rec.get("config") or {}
    metric = metric or record_metric(rec)
    if run is None:
        run = RunSpec(session=handle.name, arm=str(cfg.get("mode", "?")),
                      seed=int(cfg.get("seed", 0) or 0),
                      train_size=int((cfg.get("data") or {}).get("train_size", 0) or 0),
                      max_windows=None)
    series = session_epoch_series(handle)
    status = handle.status
    scored_words = [len(str(s.get("prefix", "")).split()) for s in handle.scored_prefixes()
                    if not s.get("reused") and int(s.get("request_id", 0)) > 0]
    usage = handle.ta_usage()
    finished = rec.get("finished") or {}
    best = rec.get("best") or {}
    done = status == "finished"
    test = _floats(finished.get("test_metrics")) if done else {}
    no_prefix = _floats(finished.get("test_metrics_no_prefix")) if done else {}
    return RunResult(
        run, status,
        test=test.get(metric), test_no_prefix=no_prefix.get(metric),
        best_val=best_validation(best, metric),
        best_selection=(best.get("selection_metrics") or {}).get(metric),
        copied=int((finished.get("summary") or {}).get("copied_from_prompt", 0) or 0),
        prefix_words=scored_words,
        history_sizes=[int(e.get("history_size", 0) or 0) for e in
                       (finished.get("summary") or {}).get("epochs", []) if isinstance(e, dict)],
        best_epoch=best.get("epoch"), best_prefix=best.get("prefix", ""),
        val_curve=list(zip(series.epochs, series.val)),
        loss_curve=list(zip(series.epochs, series.train_loss)),
        ta_requests=usage.requests, ta_tokens=usage.tokens, ta_cost=usage.cost,
        wall_s=wall_s, metric=metric, test_metrics=test, test_metrics_no_prefix=no_prefix,
        epochs_done=int(rec.get("epoch", 0) or 0),
        status_reason=str(rec.get("status_reason") or finished.get("reason") or ""),
        config=cfg)


def read_sessions(names: list[str], home: Path | str | None = None) -> list[RunResult]:
    """Saved sessions side by side (gpta-tui's compare view), each read as `gpta compare`
    reads its runs; one that cannot be read comes back with status "unreadable" and the
    reason in `status_reason`."""
    store = SessionStore(home)
    results = []
    for name in names:
        try:
            with store.open(name) as handle:
                results.append(session_result(handle))
        except GptaError as exc:
            results.append(RunResult(RunSpec(name, "?", 0, 0, None), "unreadable",
                                     status_reason=str(exc)))
    return results


def overfitting_series(name: str, home: Path | str | None = None, out_dir: Path | str | None = None,
                       setting: Setting | None = None) -> dict[str, dict[str, Band]]:
    """For a saved comparison: {arm: {"val": Band, "loss": Band}} per epoch in the
    low-resource setting (or `setting`). What the TUI draws for the paper's Figure 3."""
    out = Path(out_dir) if out_dir else default_out_dir(home, name)
    spec = load_spec(out)
    results = collect_results(spec, home, read_manifest(out))
    setting = setting or low_resource_setting(spec)
    val = epoch_bands(results, setting, spec.arms, "val")
    loss = epoch_bands(results, setting, spec.arms, "loss")
    return {arm: {"val": val[arm], "loss": loss.get(arm, Band([], [], [], []))} for arm in val}

