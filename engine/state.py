"""RunState: the single source of truth for where a run is. JSON-safe, so it can be persisted
by sessions and handed back to `Engine(resume=...)`.

Phases within an epoch, in order: training -> validating -> collecting -> windows ->
finetuning; after the last epoch: testing -> done.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

STATE_VERSION = 1


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
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
