"""Typed events the engine emits. Front ends and the session store only ever see these.

Every event is a frozen dataclass with a stable `kind` string, serialisable with
`event.to_dict()` and rebuilt with `event_from_dict()`. Listeners are plain callables;
`EventBus` fans out to them and isolates their failures from the engine. A consumer that
treats each kind its own way subclasses `EventHandler` (one no-op `on_<kind>` method per
event kind) and overrides the kinds it cares about.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from engine.errors import GptaError

log = logging.getLogger("gpta.events")

@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = "event"
    ts: float = field(default_factory=time.time, kw_only=True, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = self.kind
        return d


_REGISTRY: dict[str, type[Event]] = {}


def _register(cls: type[Event]) -> type[Event]:
    _REGISTRY[cls.kind] = cls
    return cls


def event_from_dict(d: dict[str, Any]) -> Event:
    d = dict(d)
    cls = _REGISTRY[d.pop("kind")]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


FLOAT_MAX = 1.7976931348623157e308  # sys.float_info.max


def real_number(value: Any) -> bool:
    """A float, or an int float() takes: JSON allows an integer of 400 digits, whose float()
    (a chart, a sum, a test metric) raises OverflowError."""
    return type(value) is float or (type(value) is int and -FLOAT_MAX <= value <= FLOAT_MAX)


def _matches(value: Any, typ: Any) -> bool:
    if typ is Any:
        return True
    args = typing.get_args(typ)
    if args:  # a union such as float | None
        return any(_matches(value, a) for a in args)
    if typ is type(None):
        return value is None
    if isinstance(value, bool) and typ is not bool:
        return False
    if typ is float:
        return real_number(value)
    return isinstance(value, typ)


@functools.lru_cache(maxsize=None)
def _field_specs(cls: type[Event]) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type, required) of each field of an event class, computed once per class."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name], f.default is dataclasses.MISSING
                  and f.default_factory is dataclasses.MISSING) for f in dataclasses.fields(cls))


def shape_problem(cls: type[Event], d: Any) -> str | None:
    """Why the stored dict `d` cannot be rebuilt as a `cls` event (a required field missing or
    a field of the wrong type), or None. Stored data is untrusted: check before use."""
    if not isinstance(d, dict):
        return f"a {type(d).__name__} where a {cls.kind} record belongs"
    if "kind" in d and d["kind"] != cls.kind:
        return f"a {d['kind']!r} record where a {cls.kind} record belongs"
    for name, typ, required in _field_specs(cls):
        if name not in d:
            if required:
                return f"a {cls.kind} record without {name!r}"
            continue
        if not _matches(d[name], typ):
            return (f"a {cls.kind} record whose {name!r} is a {type(d[name]).__name__}, "
                    f"not {getattr(typ, '__name__', None) or typ}")
    return None


@_register
@dataclass(frozen=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    name: str
    mode: str
    config: dict
    resumed: bool = False
    device: str = "cpu"
    task: str = "classification"
    metric: str = "accuracy"
    label_names: list = field(default_factory=list)


@_register
@dataclass(frozen=True)
class PhaseChanged(Event):
    kind: ClassVar[str] = "phase"
    epoch: int
    phase: str
    total: int = 0  # units of work in this phase (steps, prefixes, windows), 0 if unknown


@_register
@dataclass(frozen=True)
class Progress(Event):
    kind: ClassVar[str] = "progress"
    epoch: int
    phase: str
    done: int
    total: int


@_register
@dataclass(frozen=True)
class TrainStep(Event):
    kind: ClassVar[str] = "train_step"
    epoch: int
    step: int          # global optimizer step, 1-based, unique across the run
    epoch_step: int    # 1-based within the epoch
    epoch_steps: int
    loss: float
    lr: float


@_register
@dataclass(frozen=True)
class ValidationResult(Event):
    kind: ClassVar[str] = "validation"
    epoch: int
    prefix: str
    metrics: dict
    best_epoch: int
    improved: bool


@_register
@dataclass(frozen=True)
class TARequest(Event):
    kind: ClassVar[str] = "ta_request"
    request_id: int
    epoch: int
    backend: str
    model: str
    messages: list
    params: dict
    description_version: int
    examples_sent: int = 0  # dataset examples (exemplars) included in this request


@_register
@dataclass(frozen=True)
class TAResponse(Event):
    kind: ClassVar[str] = "ta_response"
    request_id: int
    epoch: int
    texts: list
    prefixes: list
    rejected: list  # [(text, reason)]
    usage: dict
    latency_s: float
    attempt: int = 1
    cost: float = 0.0  # estimated cost of this reply (engine.pricing)


@_register
@dataclass(frozen=True)
class PrefixScored(Event):
    kind: ClassVar[str] = "prefix_scored"
    epoch: int
    prefix: str
    score: float
    metrics: dict
    reused: bool
    request_id: int  # -1: carried over / training prefix
    beat_shown_best: bool = False


@_register
@dataclass(frozen=True)
class HistoryUpdated(Event):
    kind: ClassVar[str] = "history"
    epoch: int
    history: list  # [[prefix, score], ...] ascending
    training_prefix: str


@_register
@dataclass(frozen=True)
class WindowsBuilt(Event):
    kind: ClassVar[str] = "windows"
    epoch: int
    windows: list  # [{"messages": [...]}], OpenAI chat fine-tuning format
    path: str


@_register
@dataclass(frozen=True)
class FinetuneUpdate(Event):
    kind: ClassVar[str] = "finetune"
    epoch: int
    backend: str
    job_id: str
    status: str  # submitted|validating_files|queued|running|succeeded|failed|cancelled|timeout|skipped
    message: str = ""
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    eta_s: float | None = None
    model: str = ""
    accuracy: float | None = None  # the job's training token accuracy (assistant tokens)


@_register
@dataclass(frozen=True)
class TAModelChanged(Event):
    kind: ClassVar[str] = "ta_model"
    epoch: int
    model: str
    reason: str


@_register
@dataclass(frozen=True)
class PrefixFindingAccuracy(Event):
    kind: ClassVar[str] = "prefix_accuracy"
    epoch: int
    accuracy: float
    generated: int
    better: int


@_register
@dataclass(frozen=True)
class DescriptionChanged(Event):
    kind: ClassVar[str] = "description"
    version: int
    text: str
    applies_from_request: int


@_register
@dataclass(frozen=True)
class StatusChanged(Event):
    kind: ClassVar[str] = "status"
    status: str  # running|paused|stopping|interrupted|failed|finished
    reason: str = ""


@_register
@dataclass(frozen=True)
class CheckpointSaved(Event):
    kind: ClassVar[str] = "checkpoint"
    epoch: int
    phase: str
    step: int
    state: dict  # engine RunState.to_dict(): everything needed to resume
    path: str = ""


@_register
@dataclass(frozen=True)
class Notice(Event):
    kind: ClassVar[str] = "notice"
    level: str  # info|warning|error
    message: str


@_register
@dataclass(frozen=True)
class RunFinished(Event):
    kind: ClassVar[str] = "finished"
    status: str  # finished|stopped|failed
    best_epoch: int
    best_prefix: str
    val_metrics: dict
    test_metrics: dict
    test_metrics_no_prefix: dict
    summary: dict
    reason: str = ""


Listener = Callable[[Event], None]


def handler_name(cls: type[Event]) -> str:
    """The EventHandler method for an event class: on_<kind>."""
    return f"on_{cls.kind}"


class EventHandler:
    """The one dispatch of events to code: `handle(event, *extra)` calls `on_<kind>(event,
    *extra)`. Every method here does nothing; the headless view, the session store's
    projections and the dashboard reducer override what they use. `extra` is passed through
    (the store hands its stored form of the event along). tests/test_events.py checks that
    every event kind has a method here and that no subclass defines an `on_` method no event
    reaches."""

    def handle(self, event: Event, *extra: Any) -> Any:
        return getattr(self, handler_name(type(event)))(event, *extra)

    def on_run_started(self, event: RunStarted, *extra: Any) -> Any:
        return None

    def on_phase(self, event: PhaseChanged, *extra: Any) -> Any:
        return None

    def on_progress(self, event: Progress, *extra: Any) -> Any:
        return None

    def on_train_step(self, event: TrainStep, *extra: Any) -> Any:
        return None

    def on_validation(self, event: ValidationResult, *extra: Any) -> Any:
        return None

    def on_ta_request(self, event: TARequest, *extra: Any) -> Any:
        return None

    def on_ta_response(self, event: TAResponse, *extra: Any) -> Any:
        return None

    def on_prefix_scored(self, event: PrefixScored, *extra: Any) -> Any:
        return None

    def on_history(self, event: HistoryUpdated, *extra: Any) -> Any:
        return None

    def on_windows(self, event: WindowsBuilt, *extra: Any) -> Any:
        return None

    def on_finetune(self, event: FinetuneUpdate, *extra: Any) -> Any:
        return None

    def on_ta_model(self, event: TAModelChanged, *extra: Any) -> Any:
        return None

    def on_prefix_accuracy(self, event: PrefixFindingAccuracy, *extra: Any) -> Any:
        return None

    def on_description(self, event: DescriptionChanged, *extra: Any) -> Any:
        return None

    def on_status(self, event: StatusChanged, *extra: Any) -> Any:
        return None

    def on_checkpoint(self, event: CheckpointSaved, *extra: Any) -> Any:
        return None

    def on_notice(self, event: Notice, *extra: Any) -> Any:
        return None

    def on_finished(self, event: RunFinished, *extra: Any) -> Any:
        return None


def event_classes() -> list[type[Event]]:
    """Every event class, in registration order."""
    return list(_REGISTRY.values())


class EventBus:
    """Fan-out to listeners. A listener that raises is logged and kept away from the engine."""

    def __init__(self, listeners: list[Listener] | None = None):
        self._listeners: list[Listener] = list(listeners or [])
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def emit(self, event: Event) -> None:
        """Deliver to every listener. Listeners observe: a failing one is logged, and decides
        nothing (what the engine must know was recorded goes through Engine's
        `record_checkpoint`)."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except GptaError as exc:  # e.g. the session cannot be written: its owner reports it
                log.info("event listener %r could not handle %s: %s", listener, event.kind, exc)
            except Exception:  # noqa: BLE001 - a broken listener must not kill training
                log.exception("event listener %r failed on %s", listener, event.kind)
