"""The GPTA loop (Liu & Zhang 2024, sections 3.3-3.5), readable in one sitting.

Per epoch:
  1. training    train the student with the current best prefix
  2. validating  score the trained student with that prefix on the validation split
  3. collecting  ask the TA for l prefixes at a time, showing it the history sorted ascending,
                 until the history holds k (prefix, score) pairs scored by the frozen student;
                 then re-score the best few and "no prefix" on the selection split, which
                 chooses the epoch's candidate for the best checkpoint (validation only ranks)
  4. windows     slide a window of w pairs over the sorted history: dialogue gradients
  5. finetuning  fine-tune the TA on them; the tuned TA answers next epoch
After the last epoch the best checkpoint (by selection score) is reloaded and tested.
The control arms (engine.arms) run the same loop: frozen-ta skips step 5, random-prefix
answers step 3 with random words, baseline and static-prefix skip steps 3-5.

Everything the engine knows lives in `self.state` (a RunState). Every phase reads and
writes it, so a run can stop at any step boundary and resume from the last checkpoint.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from engine import prompts
from engine.config import RunConfig
from engine.controls import Controls
from engine.errors import GptaError, StopRun, TAError, TAUnavailable, strip_control
from engine.events import (
    CheckpointSaved,
    DescriptionChanged,
    Event,
    EventBus,
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
from engine.finetune.base import FinetuneBackend
from engine.fsutil import replace_dir
from engine.history import History, build_windows, cap_windows, write_jsonl
from engine.parsing import COPIED, clean_prefixes, parse_prefixes
from engine.paths import contained
from engine.pricing import estimate_cost, price_for
from engine.seeds import engine_seed
from engine.state import Phase, RunState
from engine.ta.base import TeachingAssistant

if TYPE_CHECKING:  # typing only: the student and data modules load torch / datasets
    from engine.data import TaskData
    from engine.student.base import Student

log = logging.getLogger("gpta.engine")

Listener = Callable[[Event], None]


class Engine:
    def __init__(self, config: RunConfig, workdir: Path | str, *, controls: Controls | None = None,
                 listeners: Iterable[Listener] = (), resume: dict | None = None,
                 student: Student | None = None, ta: TeachingAssistant | None = None,
                 finetune: FinetuneBackend | None = None, data: TaskData | None = None,
                 on_ta_unavailable: str = "stop",
                 record_checkpoint: Callable[[CheckpointSaved], None] | None = None):
        """`record_checkpoint(event)` records a new resume state durably (the session store)
        and raises if it cannot; only then is the previous checkpoint deleted. Listeners are
        observers: their failures never decide what is kept."""
        self.config = config.copy().validate()
        self.workdir = Path(workdir)
        self.controls = controls or Controls()
        self.bus = EventBus(list(listeners))
        self.record_checkpoint = record_checkpoint
        self.state = RunState.from_dict(resume) if resume else RunState()
        self.resumed = resume is not None
        self.student = student
        self.ta = ta
        self.finetune = finetune
        self.data = data
        self.device = "cpu"
        self.on_ta_unavailable = on_ta_unavailable  # "stop" (headless) or "pause" (interactive)
        self.exemplars: list[dict] = []
        self.prompt_examples: tuple[str, ...] = ()  # the TA prompt's own worked examples
        self.template = prompts.DEFAULT_TEMPLATE  # the TA wording (ta.*_template), set up in setup()

    # ---- plumbing --------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self.bus.subscribe(listener)

    def emit(self, event: Event) -> None:
        self.bus.emit(event)

    def notice(self, message: str, level: str = "warning") -> None:
        message = strip_control(message)  # echoes file contents and TA replies
        log.debug("%s: %s", level, message)
        self.emit(Notice(level=level, message=message))

    def _on_pause(self, paused: bool) -> None:
        if paused:
            self.save_checkpoint()
            self.emit(StatusChanged(status="paused"))
        else:
            self.emit(StatusChanged(status="running"))

    def _boundary(self) -> None:
        """A step boundary: honour pause/stop, and save if the user asked to."""
        if self.controls.take_save_request():
            self.save_checkpoint()
        self.controls.checkpoint(self._on_pause)

    @property
    def metric(self) -> str:
        return self.config.student.metric

    # ---- checkpoints -----------------------------------------------------------------
    def _write_student(self, name: str, training_state: bool) -> None:
        """Save the student into workdir/name atomically (a sibling dir, then a rename)."""
        target = contained(self.workdir, name, "checkpoint")
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            self.student.save(tmp, training_state=training_state)
            replace_dir(tmp, target)
        except (OSError, RuntimeError) as exc:
            # torch reports a full disk as a RuntimeError from its zip writer
            if isinstance(exc, RuntimeError) and "writ" not in str(exc).lower():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise GptaError(f"cannot write checkpoint {str(target)!r} ({why})",
                            "free space on that disk (or make the session folder writable), "
                            "then resume the session") from None

    def save_checkpoint(self, weights: bool = True) -> None:
        """Write the student's training state (if it changed) and emit the matching RunState.

        Weights only change in training, so a checkpoint is named by its global step. The new
        checkpoint is a fresh directory; the previous one is removed only after the
        session store has recorded the new state (record_checkpoint), so a crash
        at any moment leaves the stored state pointing at a complete checkpoint.
        """
        previous = self.state.checkpoint
        if weights and self.student is not None and self.state.phase not in (Phase.SETUP, Phase.DONE):
            name = f"checkpoints/step-{self.state.step}"
            if name != previous:
                self._write_student(name, training_state=True)
                self.state.checkpoint = name
        self._checkpoint_saved(previous, self.state.checkpoint)

    def _save_best(self, epoch: int, score: float, prefix: str, metrics: dict, **extra) -> None:
        previous = self.state.best.get("path")
        name = f"checkpoints/best-e{epoch}"
        self._write_student(name, training_state=False)
        self.state.best = {"epoch": epoch, "score": score, "prefix": prefix,
                           "metrics": metrics, "path": name, **extra}
        self._checkpoint_saved(previous, name)

    def _checkpoint_saved(self, previous: str | None, current: str) -> None:
        """Record the current state (record_checkpoint), tell the listeners (CheckpointSaved),
        then delete the `previous` checkpoint folder if it is not `current` -- but only when
        the state was recorded: a state that failed to record (disk full) may still be the
        stored one, and it points at `previous`."""
        event = CheckpointSaved(epoch=self.state.epoch, phase=self.state.phase,
                                step=self.state.step, state=self.state.to_dict(),
                                path=self.state.checkpoint)
        recorded = True
        if self.record_checkpoint is not None:
            try:
                self.record_checkpoint(event)
            except GptaError as exc:  # e.g. the session cannot be written: its owner reports it
                recorded = False
                log.info("checkpoint state not recorded: %s", exc)
            except Exception:  # noqa: BLE001 - keep the old checkpoint, let the run go on
                recorded = False
                log.exception("recording the checkpoint state failed")
        self.emit(event)
        if recorded and previous and previous != current:
            self._remove_checkpoint(previous)

    def _local_adapters(self) -> bool:
        return self.config.ta.backend == "local"

    def _stored_ta_model(self, model: str) -> str:
        """What the state records for a tuned TA: a local adapter folder relative to the session
        folder (so the session can move, and a stored path can be contained), else the id."""
        if not self._local_adapters() or not model:
            return model
        path = Path(model)
        path = path if path.is_absolute() else Path.cwd() / path
        return contained(self.workdir, str(path), "TA adapter").relative_to(
            self.workdir.resolve()).as_posix()

    def _ta_model_ref(self, stored: str) -> str:
        """The model reference to load for a stored TA model: for a local TA, the base model's
        own name, or an adapter folder checked to lie inside this session's folder."""
        if not self._local_adapters():
            return stored
        from engine.ta.local import is_base_ref

        if is_base_ref(self.config, stored):
            return stored
        return str(contained(self.workdir, stored, "TA adapter"))

    def _remove_checkpoint(self, ref: str) -> None:
        """Delete an old checkpoint folder; a path outside the session folder is never touched."""
        shutil.rmtree(contained(self.workdir, ref, "old checkpoint"), ignore_errors=True)

    def _check_stored_paths(self) -> None:
        """Refuse (before anything is read or deleted) a resumed state whose paths leave the session."""
        st = self.state
        if st.checkpoint:
            contained(self.workdir, st.checkpoint, "checkpoint")
        elif self.resumed and st.phase not in (Phase.SETUP,):
            from engine.paths import UnsafePath

            raise UnsafePath(f"the stored state is in phase {st.phase!r} but names no checkpoint",
                             "the session cannot be resumed; start a new run with its config")
        if st.best:
            if not isinstance(st.best, dict):
                from engine.paths import UnsafePath

                raise UnsafePath("the stored best checkpoint is not a mapping",
                                 "the session cannot be resumed; start a new run with its config")
            contained(self.workdir, st.best.get("path"), "best checkpoint")
        if st.ta_model:
            self._ta_model_ref(st.ta_model)

    # ---- setup -----------------------------------------------------------------------
    def _setup(self) -> None:
        import torch

        from engine.device import resolve_device
        from engine.student import build_student

        from transformers.utils import logging as hf_logging

        # Library progress bars and load reports would scribble over a TUI; events say it all.
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        cfg = self.config
        self.device = resolve_device(cfg.device)
        if cfg.device == "auto" and self.device == "cpu":
            from engine.device import cuda_unavailable_reason

            reason = cuda_unavailable_reason()
            if reason:
                self.notice(reason)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.resumed:
            self._check_stored_paths()
        self.emit(PhaseChanged(epoch=self.state.epoch, phase=Phase.SETUP))
        if self.data is None:
            from engine.data import load_task_data

            self.data = load_task_data(cfg.data, cfg.seed)
        for warning in getattr(self.data, "warnings", []):
            self.notice(warning)
        if cfg.mode == "gpta-data":
            self.exemplars = self.data.exemplars(cfg.data.exemplars, cfg.seed)
        if self.student is None:
            torch.manual_seed(engine_seed(cfg.seed, "student-init"))
            self.student = build_student(cfg, self.data, self.device)
        if self.resumed and self.state.checkpoint:
            self.student.load(contained(self.workdir, self.state.checkpoint, "checkpoint"),
                              training_state=True)
        if cfg.mode == "random-prefix" and cfg.collects:
            from engine.arms import RandomWordsTA, word_vocabulary

            if not isinstance(self.ta, RandomWordsTA):  # this arm never asks a real TA
                self.ta = RandomWordsTA(word_vocabulary(self.student.tokenizer.get_vocab()))
        if cfg.uses_ta:
            if self.ta is None:
                from engine.ta import build_ta

                self.ta = build_ta(cfg, self.device, on_status=lambda m: self.notice(m, "info"))
            if self.finetune is None and cfg.finetune_backend != "none":
                from engine.finetune import build_finetune

                self.finetune = build_finetune(cfg, self.device)
            if self.state.ta_model:
                self.ta.use_model(self._ta_model_ref(self.state.ta_model))
        self.template = prompts.PromptTemplate.from_config(cfg.ta)
        self.prompt_examples = (tuple(self.ta.prompt_examples()) if self.ta is not None else ()) \
            + tuple(self.template.sentences())
        if not self.state.description:
            self.state.description = cfg.data.description or self.data.default_description

    # ---- the run ---------------------------------------------------------------------
    def run(self) -> RunFinished:
        out_of_memory: GptaError | None = None
        try:
            self._setup()
            from engine.device import device_label

            self.emit(RunStarted(name=self.config.name, mode=self.config.mode,
                                 config=self.config.to_dict(), resumed=self.resumed,
                                 device=device_label(self.device, self.config.student.amp),
                                 task=self.data.task, metric=self.metric,
                                 label_names=list(self.data.label_names)))
            self.emit(StatusChanged(status="running"))
            self._loop()
            return self._finish("finished")
        except StopRun:
            self.save_checkpoint()
            return self._finish("stopped", "stopped by the user; resume to continue")
        except Exception as exc:
            out_of_memory = self._out_of_memory(exc)
            if out_of_memory is None:
                message = str(exc) if isinstance(exc, GptaError) else f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, GptaError):
                    log.exception("run failed")
                if self.student is not None and self.state.phase != Phase.SETUP:
                    try:
                        self.save_checkpoint()
                    except GptaError as again:  # e.g. the disk is full: the first error says it
                        log.info("no checkpoint after the failure: %s", again)
                self._finish("failed", message)
                raise
            # Out of memory: leave this block, which drops the exception, its traceback and
            # the frames holding GPU tensors, before memory is freed and the error raised.
        finally:
            # The fine-tune backend first: a running local LoRA job may hold the TA's weights.
            for closable in (self.finetune, self.ta):
                if closable is not None:
                    try:
                        closable.close()
                    except Exception:  # noqa: BLE001
                        log.exception("closing %r failed", closable)
        self._release_memory()
        self._finish("failed", str(out_of_memory))
        raise out_of_memory

    def _out_of_memory(self, exc: BaseException) -> GptaError | None:
        """The one-line error for an out-of-memory failure (engine/oom.py), else None.

        No checkpoint is written: an optimizer step may have been cut short, so the session
        keeps the last state it recorded, which names a complete checkpoint."""
        from engine.oom import describe, find_oom

        found = find_oom(exc)
        if found is None:
            return None
        rows = getattr(getattr(self.student, "cfg", None), "eval_batch_size", None)
        error = describe(found, self.state.phase, self.config, self.device, rows)
        log.warning("%s (%s)", error, " ".join(str(found).split())[:300])
        return error

    def _release_memory(self) -> None:
        """After an out-of-memory failure: drop the student's gradients and empty the cache."""
        from engine.oom import free_memory

        optimizer = getattr(self.student, "optimizer", None)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        free_memory(self.device)

    def _loop(self) -> None:
        cfg, st = self.config, self.state
        if st.phase == Phase.SETUP:
            if cfg.loop.seed_prefixes:  # prefix transfer: no s0 TA call
                st.training_prefix = cfg.loop.seed_prefixes[0]
                if cfg.collects:
                    st.pending = list(cfg.loop.seed_prefixes[1:])
            elif cfg.mode == "static-prefix":
                from engine.arms import static_instruction

                st.training_prefix = static_instruction(self.data.task, list(self.data.label_names))
            elif cfg.collects:
                st.training_prefix = self._initial_prefix()
            st.phase = Phase.TRAINING
            self.save_checkpoint()
        while st.epoch <= cfg.loop.epochs and st.phase not in (Phase.TESTING, Phase.DONE):
            if st.phase == Phase.TRAINING:
                self._train()
            if st.phase == Phase.VALIDATING:
                self._validate()
            if st.phase == Phase.COLLECTING:
                self._collect()
            if st.phase == Phase.WINDOWS:
                self._windows()
            if st.phase == Phase.FINETUNING:
                self._finetune_ta()
            if st.phase == Phase.NEXT:
                self._next_epoch()
        if st.phase != Phase.DONE:
            st.phase = Phase.TESTING

    # ---- 1. training ---------------------------------------------------------------
    def _train(self) -> None:
        st = self.state
        total = self.student.steps_per_epoch()
        self.emit(PhaseChanged(epoch=st.epoch, phase=Phase.TRAINING, total=total))
        every = self.config.student.checkpoint_every
        for result in self.student.train_epoch(st.training_prefix, st.epoch, start_step=st.epoch_step):
            st.step += 1
            st.epoch_step = result.epoch_step
            self.emit(TrainStep(epoch=st.epoch, step=st.step, epoch_step=result.epoch_step,
                                epoch_steps=total, loss=result.loss, lr=result.lr))
            if result.epoch_step % every == 0 and result.epoch_step < total:
                self.save_checkpoint()
            self._boundary()
        st.phase = Phase.VALIDATING
        self.save_checkpoint()

    # ---- 2. validation ---------------------------------------------------------------
    def _validate(self) -> None:
        st = self.state
        self.emit(PhaseChanged(epoch=st.epoch, phase=Phase.VALIDATING, total=1))
        metrics = self.student.evaluate(st.training_prefix, "validation")
        score = metrics[self.metric]
        record = {"epoch": st.epoch, "prefix": st.training_prefix, "val_metrics": metrics,
                  "val_score": score, "steps": st.step}
        st.epochs = [r for r in st.epochs if r["epoch"] != st.epoch] + [record]
        if not self.config.collects:  # baseline, static-prefix, a fixed transferred prefix
            improved = self._select({st.training_prefix: metrics})
            st.phase = Phase.NEXT
        else:
            history = History()
            history.add(st.training_prefix, score)
            st.history = history.to_list()
            st.history_metrics = {st.training_prefix: metrics}
            st.generated = st.better = st.epoch_requests = 0
            improved = False
            st.phase = Phase.COLLECTING
        self.emit(ValidationResult(epoch=st.epoch, prefix=st.training_prefix, metrics=metrics,
                                   best_epoch=int(st.best.get("epoch", st.epoch)),
                                   improved=improved))
        self.save_checkpoint(weights=False)

    def _consider_best(self, score: float, prefix: str, metrics: dict, **extra) -> bool:
        best = self.state.best
        if best and score <= best["score"]:
            return False
        self._save_best(self.state.epoch, score, prefix, metrics, **extra)
        return True

    @property
    def _has_selection(self) -> bool:
        return bool(getattr(self.data, "selection", None))

    def _select(self, candidates: dict[str, dict]) -> bool:
        """Choose this epoch's candidate for the best checkpoint; True if it beat the best so far.

        `candidates` maps the epoch's best prefixes (best first) to their validation metrics.
        Validation ranked them, so their validation scores are optimistic (best of k). With a
        selection split (data.selection_size > 0) they are re-scored there together with "no
        prefix", and the checkpoint and prefix sent to test are chosen on those scores; every
        arm, the baseline included, chooses this way. Without one (older sessions) the best
        validation prefix is chosen, as in the paper.
        """
        st, metric = self.state, self.metric
        if not self._has_selection:
            prefix, metrics = next(iter(candidates.items()))
            return self._consider_best(metrics[metric], prefix, metrics)
        if "" not in candidates:
            candidates = {**candidates, "": self.student.evaluate("", "validation")}
        prefixes = list(candidates)
        results = self.student.score_prefixes(prefixes, "selection")
        rows = [{"prefix": p, "val_score": candidates[p][metric], "selection_score": r[metric],
                 "selection_metrics": r} for p, r in zip(prefixes, results)]
        # Highest selection score; ties go to the better validation rank (the given order).
        chosen = max(rows, key=lambda r: (r["selection_score"], -prefixes.index(r["prefix"])))
        selection = {"candidates": [[r["prefix"], r["val_score"], r["selection_score"]] for r in rows],
                     "prefix": chosen["prefix"], "score": chosen["selection_score"]}
        for record in st.epochs:
            if record["epoch"] == st.epoch:
                record["selection"] = selection
        return self._consider_best(chosen["selection_score"], chosen["prefix"],
                                   candidates[chosen["prefix"]],
                                   selection_metrics=chosen["selection_metrics"])

    # ---- 3. history collection -----------------------------------------------------
    def _collect(self) -> None:
        cfg, st = self.config, self.state
        history = History.from_list(st.history)
        k = cfg.loop.k
        self.emit(PhaseChanged(epoch=st.epoch, phase=Phase.COLLECTING, total=k))
        # Candidates carried into this epoch (the first TA call's extras, last epoch's best)
        # are re-scored by the new student before any new request.
        if st.pending:
            self._score_new(history, list(st.pending), request_id=-1, shown_best=None)
            st.pending = []
            st.history = history.to_list()
            self.save_checkpoint(weights=False)
        limit = self.config.max_requests_per_epoch
        while len(history) < k and st.epoch_requests < limit and not st.ta_exhausted:
            self._boundary()
            want = min(cfg.loop.l, k - len(history))
            shown = history.sorted()
            shown_best = shown[-1][1] if shown else None
            messages = self._request_messages(shown, want)
            new = self._ask_ta(messages, want)
            st.epoch_requests += 1
            if new is None:
                continue
            self._score_new(history, new, request_id=st.request_id, shown_best=shown_best)
            st.history = history.to_list()
            self.emit(HistoryUpdated(epoch=st.epoch, history=[list(p) for p in history.sorted()],
                                     training_prefix=st.training_prefix))
            self.emit(Progress(epoch=st.epoch, phase=Phase.COLLECTING, done=len(history), total=k))
            self.save_checkpoint(weights=False)
        if len(history) < k:
            why = st.ta_exhausted or f"{st.epoch_requests} TA requests (the per-epoch limit)"
            self.notice(f"epoch {st.epoch}: history holds {len(history)} of k={k} prefixes after {why}")
        accuracy = st.better / st.generated if st.generated else 0.0
        self.emit(PrefixFindingAccuracy(epoch=st.epoch, accuracy=accuracy,
                                        generated=st.generated, better=st.better))
        best_prefix, best_score = history.best()
        for record in st.epochs:
            if record["epoch"] == st.epoch:
                record.update(best_prefix=best_prefix, best_score=best_score,
                              history_size=len(history), prefix_accuracy=accuracy,
                              generated=st.generated, better=st.better,
                              copied_total=st.copied)
        self.emit(HistoryUpdated(epoch=st.epoch, history=[list(p) for p in history.sorted()],
                                 training_prefix=st.training_prefix))
        # The top prefixes' full metrics were computed when they were scored; only a state
        # saved before they were kept (an older session) needs the extra evaluation.
        top = [p for p, _ in history.top(self.config.loop.selection_top if self._has_selection else 1)]
        self._select({p: st.history_metrics.get(p) or self.student.evaluate(p, "validation")
                      for p in top})
        st.phase = Phase.WINDOWS
        self.save_checkpoint(weights=False)

    def _score_new(self, history: History, prefixes: list[str], request_id: int,
                   shown_best: float | None) -> list[str]:
        """Score prefixes not yet in the history (batched); repeats reuse their known score."""
        st = self.state
        fresh = [p for p in dict.fromkeys(prefixes) if p not in history]
        for p in prefixes:
            if p in history and request_id >= 0:
                st.generated += 1
                self.emit(PrefixScored(epoch=st.epoch, prefix=p, score=history.score_of(p),
                                       metrics={}, reused=True, request_id=request_id))
        fresh = fresh[: max(0, self.config.loop.k - len(history))]
        if not fresh:
            return []
        results = self.student.score_prefixes(fresh, "validation")
        for prefix, metrics in zip(fresh, results):
            score = metrics[self.metric]
            history.add(prefix, score)
            st.history_metrics[prefix] = metrics
            beat = shown_best is not None and score > shown_best
            if request_id >= 0:
                st.generated += 1
                st.better += int(beat)
            self.emit(PrefixScored(epoch=st.epoch, prefix=prefix, score=score, metrics=metrics,
                                   reused=False, request_id=request_id, beat_shown_best=beat))
        return fresh

    # ---- talking to the TA -----------------------------------------------------------
    def _apply_description_update(self) -> None:
        text = self.controls.take_description()
        if text is None or text.strip() == self.state.description.strip():
            return
        st = self.state
        st.description = text.strip()
        st.description_version += 1
        st.description_from_request = st.request_id + 1
        self.emit(DescriptionChanged(version=st.description_version, text=st.description,
                                     applies_from_request=st.description_from_request))
        self.save_checkpoint(weights=False)

    def _system_prompt(self) -> str:
        return prompts.system_prompt(self.data.task, self.student.family, self.student.placement,
                                     list(self.data.label_names), template=self.template,
                                     metric=self.metric)

    def _request_messages(self, shown: list[tuple[str, float]], n: int) -> list[dict]:
        self._apply_description_update()
        user = prompts.user_prompt(self.state.description, shown, n,
                                   exemplars=self.exemplars or None,
                                   label_names=list(self.data.label_names), metric=self.metric,
                                   task=self.data.task, template=self.template)
        return prompts.build_messages(self._system_prompt(), user)

    def _ask_ta(self, messages: list[dict], n: int) -> list[str] | None:
        """One TA request with bounded retries on unusable replies. None if nothing usable.

        A stop during the request (the TA gives up mid-generation, or a boundary between
        attempts) rolls the state back to before the request, so the checkpoint written on
        the way out is the last boundary and a resume replays the same request: same request
        id, same seeds, same numbers.
        """
        st = self.state
        before = (st.request_id, st.ta_tokens, st.ta_cost, st.ta_exhausted)
        try:
            return self._request(messages, n)
        except StopRun:
            st.request_id, st.ta_tokens, st.ta_cost, st.ta_exhausted = before
            raise

    def _request(self, messages: list[dict], n: int) -> list[str] | None:
        cfg, st = self.config, self.state
        if not self._budget_left():
            return None
        st.request_id += 1
        rid = st.request_id
        attempts = cfg.ta.retries + 1
        params = {"n": n, "temperature": cfg.ta.temperature, "top_p": cfg.ta.top_p}
        self.emit(TARequest(request_id=rid, epoch=st.epoch, backend=self.ta.backend,
                            model=self.ta.model_name, messages=messages, params=params,
                            description_version=st.description_version,
                            examples_sent=len(self.exemplars)))
        attempt = 0
        while attempt < attempts:
            if not self._budget_left():
                return None
            attempt += 1
            seed = engine_seed(cfg.seed, "ta", rid, attempt)
            started = time.perf_counter()
            try:
                reply = self._call_ta(messages, n, seed)
            except TAUnavailable as exc:
                self._ta_unavailable(exc)  # raises (headless) or waits for the user (TUI)
                attempt -= 1  # provider trouble the user fixed does not use up an attempt
                continue
            except TAError as exc:
                self.notice(f"TA request {rid} attempt {attempt}/{attempts} failed: {exc}")
                self._boundary()
                continue
            cost = self._cost(reply.usage)
            st.ta_tokens += int(reply.usage.get("total_tokens", 0) or 0)
            st.ta_cost += cost
            candidates = [c for text in reply.texts for c in parse_prefixes(text or "")]
            accepted, rejected = clean_prefixes(
                candidates, max_words=cfg.ta.max_prefix_words, max_chars=cfg.ta.max_prefix_chars,
                prompt_examples=self.prompt_examples, copy_threshold=cfg.ta.copy_similarity)
            copied = sum(1 for _, why in rejected if why == COPIED)
            if copied:
                st.copied += copied
                self.notice(f"TA request {rid}: {copied} prefix(es) copied from the prompt's worked "
                            "examples were rejected", "info")
            self.emit(TAResponse(request_id=rid, epoch=st.epoch, texts=list(reply.texts),
                                 prefixes=accepted, rejected=[list(r) for r in rejected],
                                 usage=dict(reply.usage),
                                 latency_s=round(time.perf_counter() - started, 4),
                                 attempt=attempt, cost=cost))
            if accepted:
                return accepted
            self.notice(f"TA request {rid} attempt {attempt}/{attempts}: no usable prefix in the "
                        f"reply ({len(rejected)} candidates rejected)")
            self._boundary()
        self.notice(f"TA request {rid}: nothing usable after {attempts} attempts", "error")
        return None

    def _call_ta(self, messages: list[dict], n: int, seed: int):
        try:
            return self.ta.propose(messages, n=n, temperature=self.config.ta.temperature, seed=seed,
                                   should_stop=lambda: self.controls.stop_requested)
        except (GptaError, StopRun):
            raise
        except Exception as exc:  # noqa: BLE001 - a backend bug must not kill the run
            raise TAError(f"TA backend error: {type(exc).__name__}: {exc}") from exc

    def _ta_unavailable(self, exc: TAUnavailable) -> None:
        """Persistent provider trouble: pause (interactive) or stop (headless), resumable."""
        if self.state.phase == Phase.SETUP and not self.resumed and self.on_ta_unavailable == "stop":
            # Nothing is trained or checkpointed yet: a new run that stops here is not worth
            # keeping, and its front end removes it (gpta run says so).
            self.notice(f"{exc} — the run stops before training started", "error")
        else:
            self.notice(f"{exc} — the session is saved; fix it and resume", "error")
        if self.on_ta_unavailable == "pause":
            self.controls.pause()
            self.state.status_reason = str(exc)
            self._boundary()
            self.state.status_reason = ""
        else:
            raise exc

    def _cost(self, usage: dict) -> float:
        """Estimated cost of one reply: config prices, else the built-in price table."""
        return estimate_cost(usage, price_for(self.ta.backend, self.ta.model_name, self.config.ta))

    def _budget_left(self) -> bool:
        """False once the session's TA token/cost budget is spent (then no more TA calls)."""
        cfg, st = self.config.ta, self.state
        if st.ta_exhausted:
            return False
        if cfg.max_tokens_budget and st.ta_tokens >= cfg.max_tokens_budget:
            st.ta_exhausted = f"TA token budget spent ({st.ta_tokens} >= {cfg.max_tokens_budget})"
        elif cfg.max_cost and st.ta_cost >= cfg.max_cost:
            st.ta_exhausted = f"TA cost budget spent ({st.ta_cost:.4f} >= {cfg.max_cost})"
        else:
            return True
        self.notice(f"{st.ta_exhausted}: no further TA calls; continuing with the best prefix so far")
        return False

    def _initial_prefix(self) -> str:
        """s0: the first prefix of the first TA call (the rest are scored in epoch 1)."""
        self._boundary()  # a pause/stop before the (possibly slow) first TA reply
        messages = self._request_messages([], self.config.loop.l)
        prefixes = self._ask_ta(messages, self.config.loop.l)
        if not prefixes:
            raise TAError(
                f"the teaching assistant ({self.ta.backend}: {self.ta.model_name}) returned no usable "
                f"prefix after {self.config.ta.retries + 1} attempts",
                "check --ta-model / --ta-base-url, or raise ta.retries")
        self.state.pending = prefixes[1:]
        return prefixes[0]

    # ---- 4. dialogue gradients -------------------------------------------------------
    def _windows(self) -> None:
        cfg, st = self.config, self.state
        history = History.from_list(st.history)
        pairs = history.sorted()
        windows = cap_windows(build_windows(pairs, cfg.loop.window), cfg.finetune.max_windows)
        self.emit(PhaseChanged(epoch=st.epoch, phase=Phase.WINDOWS, total=len(windows)))
        system = self._system_prompt()
        examples = [prompts.window_example(system, st.description, window, target,
                                           exemplars=self.exemplars or None,
                                           label_names=list(self.data.label_names),
                                           metric=self.metric, task=self.data.task,
                                           template=self.template)
                    for window, target in windows]
        path = contained(self.workdir, f"windows/epoch-{st.epoch}.jsonl", "windows file")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(examples, path)
        # Session-relative, like every stored path: events are persisted and exported.
        self.emit(WindowsBuilt(epoch=st.epoch, windows=examples,
                               path=f"windows/epoch-{st.epoch}.jsonl"))
        st.phase = Phase.FINETUNING
        self.save_checkpoint(weights=False)

    # ---- 5. TA optimisation ----------------------------------------------------------
    def _finetune_ta(self) -> None:
        cfg, st = self.config, self.state
        backend = self.finetune
        record = next((r for r in st.epochs if r["epoch"] == st.epoch), {})
        path = contained(self.workdir, f"windows/epoch-{st.epoch}.jsonl", "windows file")
        from engine.history import read_jsonl

        examples = read_jsonl(path) if path.exists() else []
        skip = ""
        if cfg.mode == "frozen-ta":
            skip = "frozen-ta arm: the TA is never fine-tuned"
        elif cfg.mode == "random-prefix":
            skip = "random-prefix arm: random words, no TA to tune"
        elif backend is None or backend.name == "none":
            skip = "fine-tune backend 'none': the TA stays frozen"
        elif st.epoch >= cfg.loop.epochs:
            skip = "last epoch: no later epoch would use a tuned TA"
        elif not examples:
            skip = (f"no dialogue gradients (history of {len(st.history)} < window "
                    f"{cfg.loop.window} + 1)")
        if skip:
            self.emit(FinetuneUpdate(epoch=st.epoch, backend=getattr(backend, "name", "none"),
                                     job_id="", status="skipped", message=skip))
            record["finetune"] = {"status": "skipped", "message": skip}
            st.phase = Phase.NEXT
            self.save_checkpoint(weights=False)
            return
        self.emit(PhaseChanged(epoch=st.epoch, phase=Phase.FINETUNING, total=len(examples)))
        job = st.job
        if job and job.get("epoch") == st.epoch and backend.can_attach(job["job_id"]):
            job_id = job["job_id"]
            self.notice(f"re-attached to fine-tune job {job_id}", "info")
        else:
            # Tuning builds up across epochs (as in the paper): continue from the current
            # tuned TA (an OpenAI fine-tuned model id, or a local adapter directory).
            base = self._ta_model_ref(st.ta_model) if st.ta_model else (cfg.finetune.model or cfg.ta.model)
            try:
                job_id = backend.submit(examples, base, self.workdir, st.epoch)
            except GptaError as exc:
                self.emit(FinetuneUpdate(epoch=st.epoch, backend=backend.name, job_id="",
                                         status="failed", message=f"submit failed: {exc}"))
                self._job_done(record, "", "failed", f"submit failed: {exc}")
                return
            st.job = {"job_id": job_id, "backend": backend.name, "epoch": st.epoch,
                      "started": time.time()}
            self.emit(FinetuneUpdate(epoch=st.epoch, backend=backend.name, job_id=job_id,
                                     status="submitted", message=f"{len(examples)} examples"))
            self.save_checkpoint(weights=False)
        started = st.job.get("started", time.time())
        last_status = ""
        try:
            while True:
                status = self._poll(job_id)
                for message in status.events:
                    self.emit(FinetuneUpdate(epoch=st.epoch, backend=backend.name, job_id=job_id,
                                             status=status.status, message=message,
                                             step=status.step, total_steps=status.total_steps,
                                             loss=status.loss, eta_s=status.eta_s,
                                             accuracy=status.accuracy))
                if status.status != last_status:
                    self.emit(FinetuneUpdate(epoch=st.epoch, backend=backend.name, job_id=job_id,
                                             status=status.status, message=status.message,
                                             step=status.step, total_steps=status.total_steps,
                                             loss=status.loss, eta_s=status.eta_s,
                                             model=self._stored_ta_model(status.model),
                                             accuracy=status.accuracy))
                    last_status = status.status
                if status.done:
                    break
                if time.time() - started > cfg.finetune.timeout_s:
                    backend.cancel(job_id)
                    message = f"no result after {cfg.finetune.timeout_s:.0f}s; cancelled"
                    self.emit(FinetuneUpdate(epoch=st.epoch, backend=backend.name, job_id=job_id,
                                             status="timeout", message=message))
                    self._job_done(record, job_id, "timeout", message)
                    return
                self.controls.checkpoint(lambda p: self._pause_job(job_id, p))
                self.controls.sleep(backend.poll_interval_s)
        except StopRun:
            backend.cancel(job_id)
            st.job = None
            raise
        if status.accuracy is not None:  # paper Figure 4, second reading: the job's own accuracy
            record["finetune_train_accuracy"] = status.accuracy
        if status.status == "succeeded" and status.model:
            st.ta_model = self._stored_ta_model(status.model)
            self.ta.use_model(self._ta_model_ref(st.ta_model))
            self.emit(TAModelChanged(epoch=st.epoch, model=self.ta.model_name,
                                     reason=f"fine-tune job {job_id} succeeded"))
        self._job_done(record, job_id, status.status, status.message)

    def _poll(self, job_id: str):
        try:
            return self.finetune.poll(job_id)
        except GptaError as exc:
            from engine.finetune.base import JobStatus

            return JobStatus(job_id, "failed", message=f"poll failed: {exc}")

    def _pause_job(self, job_id: str, paused: bool) -> None:
        self.finetune.set_paused(job_id, paused)
        self._on_pause(paused)

    def _job_done(self, record: dict, job_id: str, status: str, message: str) -> None:
        st = self.state
        if status != "succeeded":
            self.notice(f"epoch {st.epoch}: fine-tune job {job_id or '-'} {status}"
                        f"{': ' + message if message else ''}; the TA keeps model "
                        f"{self.ta.model_name}")
        record["finetune"] = {"status": status, "job_id": job_id, "message": message,
                              "model": self.ta.model_name}
        st.job = None
        st.phase = Phase.NEXT
        self.save_checkpoint(weights=False)

    # ---- epoch boundary and the end ----------------------------------------------------
    def _next_epoch(self) -> None:
        st = self.state
        if self.config.collects:
            history = History.from_list(st.history)
            best = history.best()
            if best:
                st.training_prefix = best[0]
            # Last epoch's top prefixes are re-scored by the next student (no TA call needed).
            carry = [p for p, _ in history.top(self.config.loop.window) if p != st.training_prefix]
            st.pending = carry
        st.history = []
        st.history_metrics = {}
        st.epoch += 1
        st.epoch_step = 0
        st.phase = Phase.TRAINING
        self.save_checkpoint(weights=False)

    def _finish(self, status: str, reason: str = "") -> RunFinished:
        st = self.state
        test_metrics: dict = {}
        no_prefix: dict = {}
        if status == "finished":
            st.phase = Phase.TESTING
            self.emit(PhaseChanged(epoch=min(st.epoch, self.config.loop.epochs), phase=Phase.TESTING, total=2))
            if st.best.get("path"):
                self.student.load(contained(self.workdir, st.best["path"], "best checkpoint"),
                                  training_state=False)
            best_prefix = st.best.get("prefix", "")
            test_metrics = self.student.evaluate(best_prefix, "test")
            no_prefix = test_metrics if not best_prefix else self.student.evaluate("", "test")
            st.phase = Phase.DONE
            st.epoch = min(st.epoch, self.config.loop.epochs)
            self.save_checkpoint(weights=False)
        summary = {
            "epochs": st.epochs,
            "steps": st.step,
            "ta_requests": st.request_id,
            "ta_tokens": st.ta_tokens,
            "ta_cost": round(st.ta_cost, 6),
            "ta_model": self.ta.model_name if self.ta else "",
            "ta_exhausted": st.ta_exhausted,
            "copied_from_prompt": st.copied,
            "selection_metrics": st.best.get("selection_metrics", {}),
            "description_version": st.description_version,
            "device": self.device,
            "metric": self.metric,
        }
        event = RunFinished(status=status, best_epoch=int(st.best.get("epoch", 0)),
                            best_prefix=st.best.get("prefix", ""),
                            val_metrics=st.best.get("metrics", {}), test_metrics=test_metrics,
                            test_metrics_no_prefix=no_prefix, summary=summary, reason=reason)
        self.emit(StatusChanged(status=status, reason=reason))
        self.emit(event)
        return event
