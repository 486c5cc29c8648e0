"""RunState: the single source of truth for where a run is. JSON-safe, so it can be persisted
by sessions and handed back to `Engine(resume=...)`.

Phases within an epoch, in order: training -> validating -> collecting -> windows ->
finetuning; after the last epoch: testing -> done.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

STATE_VERSION = 1


class Phase(str, enum.Enum):
    """Where a run is; stored and shown as the plain string (Phase.TRAINING == "training").

    Within an epoch: training -> validating -> collecting -> windows -> finetuning -> next
    (the hand-over to the following epoch); after the last epoch: testing -> done. setup is
    before anything is loaded."""

    SETUP = "setup"
    TRAINING = "training"
    VALIDATING = "validating"
    COLLECTING = "collecting"
    WINDOWS = "windows"
    FINETUNING = "finetuning"
    NEXT = "next"
    TESTING = "testing"
    DONE = "done"

    __str__ = str.__str__  # "training", not "Phase.TRAINING", in messages and f-strings
    __format__ = str.__format__


@dataclass
class RunState:
    version: int = STATE_VERSION
    epoch: int = 1                 # current epoch, 1-based
    phase: str = "setup"           # phase to (re)enter when resuming
    step: int = 0                  # global optimizer steps completed
    epoch_step: int = 0            # steps completed within the current epoch
    training_prefix: str = ""      # the prefix the student trains with this epoch
    pending: list = field(default_factory=list)   # TA candidates not yet scored
    history: list = field(default_factory=list)   # [[prefix, score], ...] of the current epoch, insertion order
    history_metrics: dict = field(default_factory=dict)  # prefix -> full validation metrics, this epoch
    request_id: int = 0            # TA requests made so far (ids are 1-based)
    epoch_requests: int = 0        # TA requests made in the current epoch's collection
    checkpoint: str = ""           # workdir-relative dir of the student checkpoint this state matches
    generated: int = 0             # new prefixes generated this epoch (prefix-finding accuracy)
    better: int = 0                # ... of which beat the best score shown in their request
    copied: int = 0                # TA prefixes rejected as copies of the prompt's worked examples (run total)
    description: str = ""
    description_version: int = 1
    description_from_request: int = 1
    ta_model: str = ""             # "" = base TA; else fine-tuned model id / adapter dir
    job: dict | None = None        # {"job_id", "backend", "epoch", "started"} while fine-tuning
    best: dict = field(default_factory=dict)      # {"epoch", "score", "prefix", "metrics"}
    epochs: list = field(default_factory=list)    # one record per finished epoch
    ta_tokens: int = 0             # total TA tokens used (budget)
    ta_cost: float = 0.0           # estimated TA cost (budget)
    ta_exhausted: str = ""         # why no further TA calls are made (budget), "" while allowed
    status_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunState":
        """A state from stored data, every field checked for its type (stored data is untrusted)."""
        from engine.errors import GptaError

        fix = "the session's stored state is damaged; delete the session or import a clean export"
        if not isinstance(data, dict):
            raise GptaError(f"the stored run state is a {type(data).__name__}, not a mapping", fix)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            allowed = _FIELD_TYPES[f.name]
            if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
                raise GptaError(f"the stored run state's field {f.name!r} is a "
                                f"{type(value).__name__}, expected {' or '.join(t.__name__ for t in allowed)}",
                                fix)
            values[f.name] = value
        if not all(isinstance(p, str) for p in values.get("pending", [])) or not all(
                isinstance(r, list) and len(r) == 2 and isinstance(r[0], str)
                and isinstance(r[1], (int, float)) and not isinstance(r[1], bool)
                for r in values.get("history", [])):
            raise GptaError("the stored run state's history or pending prefixes have the wrong shape", fix)
        if values.get("phase", "setup") not in PHASE_NAMES:
            raise GptaError(f"the stored run state's phase {values['phase']!r} is unknown", fix)
        return cls(**values)


PHASE_NAMES = tuple(p.value for p in Phase)

_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    f.name: {"int": (int,), "str": (str,), "list": (list,), "dict": (dict,), "float": (float, int),
             "dict | None": (dict, type(None))}[f.type]
    for f in dataclasses.fields(RunState)
}


def best_validation(best: Any, metric: str) -> float | None:
    """The validation figure of the chosen ("best") checkpoint, the one every "best val" label
    shows: ``best["metrics"][metric]``. ``best["score"]`` is the figure the checkpoint was
    chosen on, which is the selection split's whenever the run has one (`Engine._select`), so
    it is used only for records that have no validation metrics (older sessions, where it is
    the validation figure anyway). None when there is no number."""
    if not isinstance(best, dict):
        return None
    metrics = best.get("metrics")
    value = metrics.get(metric) if isinstance(metrics, dict) else None
    if value is None:
        value = best.get("score")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
