"""DashboardState: everything the run dashboard shows, rebuilt from engine events.

A pure reducer with no Textual imports: `state.apply(event)` folds one event in and returns
the names of the sections that changed, so widgets redraw only what moved. The dashboard is
fed first with a session's stored events (its whole past), then with live events, so a
resumed session looks exactly like one that never stopped.

Sections: header, chart, history, windows, finetune, log, description.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from engine.events import (
    CheckpointSaved,
    DescriptionChanged,
    Event,
    EventHandler,
    FinetuneUpdate,
    HistoryUpdated,
    Notice,
    PhaseChanged,
    PrefixFindingAccuracy,
    PrefixScored,
    Progress,
    RunFinished,
    RunStarted,
    StatusChanged,
    TAModelChanged,
    TARequest,
    TAResponse,
    TrainStep,
    ValidationResult,
    WindowsBuilt,
)
from engine.prompts import decode_assistant_message
from engine.state import best_validation

SECTIONS = ("header", "chart", "history", "windows", "finetune", "log", "description")
MAX_LOG = 2000
ACTIVE_JOB_STATUSES = {"submitted", "validating_files", "queued", "running"}
FAILED_JOB_STATUSES = {"failed", "cancelled", "timeout"}


@dataclass(frozen=True)
class LogEntry:
    ts: float
    level: str  # info | warning | error
    text: str


@dataclass
class JobView:
    """One fine-tune job as the dashboard shows it."""

    job_id: str
    backend: str
    epoch: int
    status: str = ""
    message: str = ""
    model: str = ""
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    eta_s: float | None = None
    history: list[tuple[float, str, str]] = field(default_factory=list)  # (ts, status, message)
    losses: list[tuple[int, float]] = field(default_factory=list)        # local jobs: (step, loss)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_JOB_STATUSES


@dataclass(frozen=True)
class PrefixInfo:
    """What is known about one prefix of the current epoch's history (the prefix view)."""

    prefix: str
    score: float
    epoch: int
    metrics: dict = field(default_factory=dict)
    request_id: int | None = None  # the TA request that produced it; -1: carried over
    reused: bool = False
    beat_shown_best: bool = False
    ts: float = 0.0

    @property
    def source(self) -> str:
        if self.request_id is None:
            return "from the epoch's history"
        if self.request_id < 0:
            return "carried over (no TA request)"
        return f"TA request #{self.request_id}"


@dataclass(frozen=True)
class WindowView:
    """One dialogue gradient: the user message (w sorted pairs) and the assistant's next prefix."""

    epoch: int
    index: int  # 1-based within the epoch
    user: str
    assistant: str
    system: str = ""


def target_prefixes(assistant: str) -> list[str]:
    """The prefixes in an assistant message: a `{"prefixes": [...]}` JSON reply, else the text."""
    decoded = decode_assistant_message(assistant)
    if decoded is not None:
        return decoded
    return [assistant] if assistant.strip() else []


def _window_view(epoch: int, index: int, window: dict) -> WindowView:
    parts = {"system": [], "user": [], "assistant": []}
    for message in window.get("messages", []) if isinstance(window, dict) else []:
        role = message.get("role", "")
        if role in parts:
            parts[role].append(str(message.get("content", "")))
    return WindowView(epoch, index, "\n\n".join(parts["user"]), "\n\n".join(parts["assistant"]),
                      "\n\n".join(parts["system"]))


def _metric_value(metrics: dict, metric: str) -> float | None:
    value = metrics.get(metric)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    for value in metrics.values():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


class DashboardState(EventHandler):
    """The dashboard's model. Feed it events with `apply`; read its plain attributes."""

    def __init__(self, name: str = "", config: dict | None = None) -> None:
        self.name = name
        self.config: dict = dict(config or {})
        self.mode = self.config.get("mode", "")
        self.device = ""
        self.task = "classification"
        self.metric = self.config.get("student", {}).get("metric", "accuracy")
        self.label_names: list = []
        self.status = "new"
        self.status_reason = ""
        self.resumed = False

        # where the run is
        self.epoch = 0
        self.phase = "setup"
        self.progress_done = 0
        self.progress_total = 0
        self._phase_t0: float | None = None      # ts when progress started being timed
        self._phase_done0 = 0                    # done count at that moment
        self._progress_ts: float | None = None   # ts of the latest progress
        self.segments: list[list[float]] = []    # [start_ts, last_ts] per run segment
        self.setup_step = ""                     # what the engine is loading (before RunStarted)
        self.setup_since: float | None = None
        self.setup_dequantize_at: float | None = None  # ts of the "dequantizing" notice
        # How long loading took before on this machine (gpta_tui.prefs), set by the app:
        # {"plain": s, "dequantize": s}; and this load's own duration once it is over.
        self.load_estimates: dict[str, float] = {}
        self.last_load: tuple[float, bool] | None = None  # (seconds, dequantized)
        self._before_start: tuple[float, float] | None = None

        # student curves
        self.losses: dict[int, float] = {}       # global step -> loss (upsert)
        self.step_epoch: dict[int, int] = {}
        self.val: dict[int, float] = {}          # epoch -> validation metric
        self.val_step: dict[int, int] = {}       # epoch -> last training step before validation
        self.best: dict = {}

        # prefix history of the current epoch
        self.history_epoch = 0
        self.history: list[tuple[str, float]] = []  # ascending by score
        self.training_prefix = ""
        self.new_prefixes: set[str] = set()
        self.beat_best: set[str] = set()
        self.prefix_info: dict[str, PrefixInfo] = {}
        self._latest_request = -1

        # dialogue gradients
        self.windows: dict[int, list[WindowView]] = {}
        self.windows_path: dict[int, str] = {}

        # TA and fine-tuning
        ta = self.config.get("ta", {})
        self.ta_backend = ta.get("backend", "")
        self.ta_base_model = ta.get("model", "")
        self.ta_model = ""
        self.ta_models: list[tuple[int, str, str]] = []  # (epoch, model, reason)
        self.ta_requests = 0
        self.ta_waiting: tuple[int, float, str] | None = None  # (request id, ts, model) unanswered
        self.ta_tokens = 0
        self.ta_cost = 0.0
        self.examples_sent = 0  # dataset examples shown to the TA (GPTA-Data exemplars)
        self.ta_rejected = 0
        self.jobs: dict[str, JobView] = {}       # "epoch/job_id" -> job
        self.current_job: str = ""
        self.prefix_accuracy: dict[int, tuple[float, int, int]] = {}

        # description
        self.description = self.config.get("data", {}).get("description", "")
        self.description_version = 1
        self.description_from_request = 1

        self.log: list[LogEntry] = []
        self.log_dropped = 0                     # entries trimmed from the front (MAX_LOG)
        self.saves = 0
        self.last_save_ts: float | None = None
        self.finished: RunFinished | None = None
        self.events_seen = 0
        self.revisions: dict[str, int] = {s: 0 for s in SECTIONS}

    # ---- derived views ----------------------------------------------------------
    @property
    def epochs_total(self) -> int:
        return int(self.config.get("loop", {}).get("epochs", 0) or 0)

    @property
    def k(self) -> int:
        return int(self.config.get("loop", {}).get("k", 0) or 0)

    @property
    def ta_model_in_use(self) -> str:
        """The model writing the prefixes; arms without a TA model say what writes them."""
        if self.ta_model:
            return self.ta_model
        mode = self.mode or self.config.get("mode", "")
        if mode == "random-prefix":
            return "random words (no TA model)"
        if mode == "static-prefix":
            return "a fixed instruction (no TA)"
        if self.ta_backend == "scripted":
            return "scripted prefixes (no model)"
        return self.ta_base_model

    def finish_summary(self) -> str:
        """One line for the end of a run: status, test and best validation figures, the run's
        time and the TA's cost (plain text: the reason may carry anything)."""
        from gpta_tui.formatting import duration, one_line

        finished = self.finished
        if finished is None:
            return f"Run {self.status}."
        parts = [f"Run {finished.status}" + (f": {one_line(finished.reason, 160)}" if finished.reason else "")]
        test = _metric_value(finished.test_metrics or {}, self.metric)
        if test is not None:
            parts.append(f"test {self.metric} {test:.4f}")
        best = self.best.get("score") if self.best else None
        if isinstance(best, (int, float)):
            parts.append(f"best val {self.metric} {best:.4f} (epoch {self.best.get('epoch')})")
        parts.append(f"{duration(self.elapsed_s())} run time")
        if self.ta_requests:
            parts.append(f"{self.ta_requests} TA requests" + (f", ${self.ta_cost:.4f}" if self.ta_cost else ""))
        return " · ".join(parts)

    def finetune_plan(self) -> tuple[str, str]:
        """(the fine-tune backend this run really uses, why when it is "none"), with "auto"
        resolved by the engine's own rule (RunConfig.finetune_backend)."""
        from engine.config import RunConfig

        try:
            cfg = RunConfig.from_dict(self.config)
        except Exception:  # an unreadable stored config: say what it asked for
            return str(self.config.get("finetune", {}).get("backend", "none")), ""
        backend = cfg.finetune_backend
        if backend != "none":
            return backend, ""
        if not cfg.uses_ta:
            return "none", f"{cfg.mode}: no TA to fine-tune"
        if cfg.mode == "frozen-ta":
            return "none", "frozen-ta: the TA is never fine-tuned"
        if cfg.ta.backend == "scripted":
            return "none", "the scripted TA is never fine-tuned"
        if cfg.finetune.backend == "auto":
            return "none", f"finetune.backend auto tunes only a local TA; this one is {cfg.ta.backend}"
        return "none", "finetune.backend = none: the TA stays the base model"

    @property
    def sorted_history(self) -> list[tuple[str, float]]:
        """Best first."""
        return sorted(self.history, key=lambda item: item[1], reverse=True)

    @property
    def active_job(self) -> JobView | None:
        job = self.jobs.get(self.current_job)
        return job if job is not None and job.active else None

    @property
    def live(self) -> bool:
        return self.status in ("loading", "running", "paused", "stopping")

    def prefix_details(self, prefix: str) -> PrefixInfo:
        """The prefix view of `prefix` (what the scoring said, or at least its history score)."""
        info = self.prefix_info.get(prefix)
        if info is not None:
            return info
        scores = dict(self.history)
        return PrefixInfo(prefix, scores.get(prefix, float("nan")), self.history_epoch,
                          beat_shown_best=prefix in self.beat_best)

    def all_windows(self) -> list[WindowView]:
        return [w for epoch in sorted(self.windows) for w in self.windows[epoch]]

    def eta_s(self) -> float | None:
        """Seconds left in the current phase, from the pace of the progress seen so far."""
        if not self.progress_total or self._phase_t0 is None or self._progress_ts is None:
            return None
        done = self.progress_done - self._phase_done0
        if done <= 0 or self.progress_done >= self.progress_total:
            return None if self.progress_done < self.progress_total else 0.0
        rate = (self._progress_ts - self._phase_t0) / done
        return max(0.0, rate * (self.progress_total - self.progress_done))

    def load_expected_s(self) -> float | None:
        """How long this load should take in all (gpta_tui.prefs.expected_load_s)."""
        from gpta_tui.prefs import expected_load_s

        return expected_load_s(self.load_estimates, self.setup_since, self.setup_dequantize_at)

    def elapsed_s(self, now: float | None = None) -> float:
        """Run time over all segments; the open segment counts up to `now` while live."""
        total = 0.0
        for i, (start, last) in enumerate(self.segments):
            end = last
            if now is not None and i == len(self.segments) - 1 and self.status == "running":
                end = max(last, now)
            total += max(0.0, end - start)
        return total

    # ---- the reducer ------------------------------------------------------------
    def apply_all(self, events: Iterable[Event]) -> set[str]:
        changed: set[str] = set()
        for event in events:
            changed |= self.apply(event)
        return changed

    def apply(self, event: Event) -> set[str]:
        """Fold one event in. Returns the sections that changed (and bumps their revisions)."""
        self.events_seen += 1
        if isinstance(event, RunStarted) or self.status == "paused":
            pass  # paused time is not run time: a resume opens a new segment
        elif self.segments:
            self.segments[-1][1] = max(self.segments[-1][1], event.ts)
        elif event.ts:
            # Replayed sessions keep only their latest RunStarted: time spent before it
            # (earlier segments) is counted from the events that precede it.
            lo, hi = self._before_start or (event.ts, event.ts)
            self._before_start = (min(lo, event.ts), max(hi, event.ts))
        changed: set[str] = set(self.handle(event) or ())
        for section in changed:
            self.revisions[section] += 1
        return changed

    def _log(self, ts: float, level: str, text: str) -> str:
        self.log.append(LogEntry(ts, level, text))
        if len(self.log) > MAX_LOG:
            drop = len(self.log) - MAX_LOG
            del self.log[:drop]
            self.log_dropped += drop
        return "log"

    def _set_phase(self, epoch: int, phase: str, total: int, ts: float) -> None:
        if (epoch, phase) != (self.epoch, self.phase):
            self.progress_done = 0
            self._phase_t0 = ts
            self._phase_done0 = 0
            self._progress_ts = None
        self.epoch, self.phase = epoch, phase
        if total:
            self.progress_total = total

    def _set_progress(self, done: int, total: int, ts: float) -> None:
        if self._phase_t0 is None or done < self._phase_done0:
            self._phase_t0, self._phase_done0 = ts, done
        self.progress_done, self.progress_total, self._progress_ts = done, total, ts

    def on_run_started(self, e: RunStarted):
        self.name = e.name or self.name
        self.mode = e.mode
        self.config = dict(e.config or self.config)
        self.device = e.device
        self.task = e.task
        self.metric = e.metric
        self.label_names = list(e.label_names)
        self.resumed = e.resumed
        self.status, self.status_reason = "running", ""
        self.finished = None
        ta = self.config.get("ta", {})
        self.ta_backend = ta.get("backend", self.ta_backend)
        self.ta_base_model = ta.get("model", self.ta_base_model)
        if self.events_seen == 1 or not self.description:
            self.description = self.config.get("data", {}).get("description", self.description)
        if not self.segments and self._before_start and self._before_start[1] < e.ts - 1.0:
            self.segments.append(list(self._before_start))  # an earlier, replayed segment
        self._before_start = None
        self.segments.append([e.ts, e.ts])
        if self.setup_since is not None:
            self.last_load = (e.ts - self.setup_since, self.setup_dequantize_at is not None)
        self.setup_since, self.setup_step, self.setup_dequantize_at = None, "", None
        self.ta_waiting = None
        # timing restarts with the new process; counts carry on
        self._phase_t0, self._phase_done0, self._progress_ts = None, self.progress_done, None
        verb = "resumed" if e.resumed else "started"
        return {"header", "chart", "finetune", "description",
                self._log(e.ts, "info", f"run {verb} on {e.device} ({e.mode}, {e.task}, metric {e.metric})")}

    @property
    def loading(self) -> bool:
        """The engine is loading data and models (nothing has run yet in this process)."""
        return self.status in ("new", "loading") and self.setup_since is not None

    def on_phase(self, e: PhaseChanged):
        if e.phase == "setup" and self.status in ("new", "loading"):
            self.setup_since, self.setup_step = e.ts, "loading the data and the student"
        self._set_phase(e.epoch, e.phase, e.total, e.ts)
        if not e.total:
            self.progress_total = 0
        return {"header"}

    def on_progress(self, e: Progress):
        self._set_phase(e.epoch, e.phase, e.total, e.ts)
        self._set_progress(e.done, e.total, e.ts)
        return {"header"}

    def on_train_step(self, e: TrainStep):
        self.losses[e.step] = e.loss
        self.step_epoch[e.step] = e.epoch
        self._set_phase(e.epoch, "training", e.epoch_steps, e.ts)
        self._set_progress(e.epoch_step, e.epoch_steps, e.ts)
        return {"header", "chart"}

    def on_validation(self, e: ValidationResult):
        value = _metric_value(e.metrics, self.metric)
        changed = {"chart", "header"}
        if value is not None:
            self.val[e.epoch] = value
            steps = [s for s, ep in self.step_epoch.items() if ep <= e.epoch]
            self.val_step[e.epoch] = max(steps) if steps else 0
            best = " (new best)" if e.improved else ""
            changed.add(self._log(e.ts, "info",
                                  f"epoch {e.epoch} validation {self.metric} {value:.4f}{best}"))
        if e.improved:  # otherwise the engine's best (CheckpointSaved) stands
            self.best = {"epoch": e.epoch, "score": value, "prefix": e.prefix}
        return changed

    def on_ta_request(self, e: TARequest):
        self.ta_requests = max(self.ta_requests, e.request_id)
        self.examples_sent += int(getattr(e, "examples_sent", 0) or 0)
        self.ta_waiting = (e.request_id, e.ts, e.model)
        return {"header"}

    def on_ta_response(self, e: TAResponse):
        self.ta_tokens += int(e.usage.get("total_tokens", 0) or 0) if isinstance(e.usage, dict) else 0
        self.ta_cost += float(getattr(e, "cost", 0.0) or 0.0)
        if self.ta_waiting and self.ta_waiting[0] == e.request_id:
            self.ta_waiting = None
        changed = {"header"}
        if e.prefixes:
            changed.add(self._log(e.ts, "info", f"TA request #{e.request_id}: {len(e.prefixes)} "
                                                f"prefix(es) in {e.latency_s:.1f}s"))
        if e.rejected:
            self.ta_rejected += len(e.rejected)
            reasons = sorted({str(r[1]) if isinstance(r, (list, tuple)) and len(r) > 1 else "rejected"
                              for r in e.rejected})
            sample = e.rejected[0][0] if isinstance(e.rejected[0], (list, tuple)) else e.rejected[0]
            sample = " ".join(str(sample).split())[:60]
            changed.add(self._log(e.ts, "warning",
                                  f"TA request #{e.request_id}: rejected {len(e.rejected)} "
                                  f"completion(s) ({', '.join(reasons)}), e.g. {sample!r}"))
        if e.attempt > 1:
            changed.add(self._log(e.ts, "warning",
                                  f"TA request #{e.request_id} answered on attempt {e.attempt}"))
        return changed

    def on_prefix_scored(self, e: PrefixScored):
        if e.epoch != self.history_epoch:
            self.history_epoch, self.history = e.epoch, []
            self.new_prefixes, self.beat_best, self._latest_request = set(), set(), -1
            self.prefix_info = {}
        self.history = [(p, s) for p, s in self.history if p != e.prefix] + [(e.prefix, float(e.score))]
        self.prefix_info[e.prefix] = PrefixInfo(
            e.prefix, float(e.score), e.epoch, dict(e.metrics) if isinstance(e.metrics, dict) else {},
            e.request_id, bool(e.reused), bool(e.beat_shown_best), e.ts)
        self.history.sort(key=lambda item: item[1])
        if e.request_id >= 0:
            if e.request_id > self._latest_request:
                self._latest_request, self.new_prefixes = e.request_id, set()
            if e.request_id == self._latest_request:
                self.new_prefixes.add(e.prefix)
        if e.beat_shown_best:
            self.beat_best.add(e.prefix)
        if e.request_id == -1 and not self.training_prefix:
            self.training_prefix = e.prefix
        return {"history"}

    def on_history(self, e: HistoryUpdated):
        if e.epoch != self.history_epoch:
            self.new_prefixes, self.beat_best, self._latest_request = set(), set(), -1
            self.prefix_info = {}
        self.history_epoch = e.epoch
        self.history = sorted(((str(p), float(s)) for p, s in e.history), key=lambda item: item[1])
        self.training_prefix = e.training_prefix
        return {"history"}

    def on_windows(self, e: WindowsBuilt):
        self.windows[e.epoch] = [_window_view(e.epoch, i, w) for i, w in enumerate(e.windows, 1)]
        self.windows_path[e.epoch] = e.path
        return {"windows", self._log(e.ts, "info",
                                     f"epoch {e.epoch}: {len(e.windows)} dialogue windows built")}

    def on_finetune(self, e: FinetuneUpdate):
        key = f"{e.epoch}/{e.job_id}"  # skipped/failed-to-submit jobs have no id
        job = self.jobs.get(key)
        if job is None:
            job = self.jobs[key] = JobView(e.job_id, e.backend, e.epoch)
        self.current_job = key
        changed = {"finetune", "header"}
        if e.status != job.status:
            job.history.append((e.ts, e.status, e.message))
            if e.status in FAILED_JOB_STATUSES:
                changed.add(self._log(e.ts, "error", f"fine-tune job {e.job_id or '(not submitted)'} "
                                                     f"{e.status}: {e.message or 'no reason given'}"))
            elif e.status == "succeeded":
                changed.add(self._log(e.ts, "info", f"fine-tune job {e.job_id} succeeded"
                                                    + (f": {e.model}" if e.model else "")))
            elif e.status == "skipped":
                changed.add(self._log(e.ts, "info", f"fine-tuning skipped: {e.message or e.backend}"))
            elif e.status == "submitted":
                changed.add(self._log(e.ts, "info", f"fine-tune job {e.job_id} submitted ({e.backend})"))
        job.status, job.message = e.status, e.message or job.message
        job.step, job.total_steps, job.eta_s = e.step, e.total_steps, e.eta_s
        job.model = e.model or job.model
        if e.loss is not None:
            job.loss = e.loss
            if not job.losses or job.losses[-1][0] != e.step:
                job.losses.append((e.step, e.loss))
        return changed

    def on_ta_model(self, e: TAModelChanged):
        self.ta_model = e.model
        self.ta_models.append((e.epoch, e.model, e.reason))
        return {"finetune", "header",
                self._log(e.ts, "info", f"TA model now {e.model or self.ta_base_model} ({e.reason})")}

    def on_prefix_accuracy(self, e: PrefixFindingAccuracy):
        self.prefix_accuracy[e.epoch] = (e.accuracy, e.generated, e.better)
        return {"finetune"}

    def on_description(self, e: DescriptionChanged):
        self.description = e.text
        self.description_version = e.version
        self.description_from_request = e.applies_from_request
        if e.version <= 1:  # the initial description (replayed from a store), not an edit
            return {"description"}
        return {"description", "header",
                self._log(e.ts, "info", f"description v{e.version} in use from TA request "
                                        f"#{e.applies_from_request}")}

    def on_status(self, e: StatusChanged):
        previous, self.status, self.status_reason = self.status, e.status, e.reason
        if previous == "paused" and e.status == "running" and self.segments and e.ts:
            self.segments.append([e.ts, e.ts])
        level = {"failed": "error", "interrupted": "warning"}.get(e.status, "info")
        changed = {"header"}
        # The end of a run is logged once, by RunFinished (with its test metrics).
        if e.status != previous and e.status not in ("finished", "failed", "stopped"):
            text = f"status {e.status}" + (f": {e.reason}" if e.reason else "")
            changed.add(self._log(e.ts, level, text))
        return changed

    def on_checkpoint(self, e: CheckpointSaved):
        """The engine's RunState is the source of truth for the best result, the description
        in use (including a dataset's default one) and the TA model."""
        self.saves += 1
        self.last_save_ts = e.ts
        changed = {"header"}
        st = e.state if isinstance(e.state, dict) else {}
        best = st.get("best") or {}
        value = best_validation(best, self.metric)
        if value is not None:
            # "score" here is the chosen checkpoint's validation figure (as on_validation's),
            # never the selection-split figure it was chosen on
            new_best = {"epoch": best.get("epoch", 0), "score": value,
                        "prefix": best.get("prefix", "")}
            if new_best != self.best:
                self.best = new_best
        version = st.get("description_version")
        if st.get("description") and isinstance(version, int) and (
                version > self.description_version or not self.description
                or (version == self.description_version and st["description"] != self.description)):
            self.description = st["description"]
            self.description_version = version
            self.description_from_request = int(st.get("description_from_request", 1) or 1)
            changed.add("description")
        prefix = st.get("training_prefix")
        if isinstance(prefix, str) and prefix and prefix != self.training_prefix:
            self.training_prefix = prefix  # known before the epoch's history has any score
            changed.add("history")
        if st.get("ta_model", "") != self.ta_model and "ta_model" in st:
            self.ta_model = st["ta_model"]
            changed.add("finetune")
        return changed

    def on_notice(self, e: Notice):
        level = e.level if e.level in ("info", "warning", "error") else "info"
        changed = {self._log(e.ts, level, e.message)}
        if self.loading and level == "info":
            self.setup_step = e.message  # e.g. "dequantizing Gemma 3 270M (first run only, ~2 min)"
            if e.message.startswith("dequantizing") and self.setup_dequantize_at is None:
                self.setup_dequantize_at = e.ts
            changed.add("header")
        return changed

    def on_finished(self, e: RunFinished):
        self.finished = e
        self.ta_waiting = None
        self.status = e.status
        self.status_reason = e.reason
        if e.status == "finished":
            self.phase = "done"
        level = "error" if e.status == "failed" else "info"
        parts = [f"run {e.status}" + (f": {e.reason}" if e.reason else "")]
        test = _metric_value(e.test_metrics or {}, self.metric)
        if test is not None:
            parts.append(f"test {self.metric} {test:.4f} (best epoch {e.best_epoch})")
        return {"header", "finetune", self._log(e.ts, level, "; ".join(parts))}


def build_state(events: Iterable[Event], name: str = "", config: dict | None = None) -> DashboardState:
    """A state with `events` applied, e.g. a stored session's past."""
    state = DashboardState(name, config)
    state.apply_all(events)
    return state
