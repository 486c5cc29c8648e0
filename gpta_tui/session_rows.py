"""SessionRow: what the sessions list (screens/sessions.py) and its preview pane
(widgets/session_preview.py) show for one saved session, and `session_row`, which builds one
from a `SessionStore.list()` entry. Below screens and widgets, so both import it (no cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpta_tui.formatting import score
from sessions.status import resumable, shown


@dataclass(frozen=True)
class SessionRow:
    """What the table shows for one saved session."""

    name: str
    mode: str
    dataset: str
    status: str
    epoch: str
    best: str
    updated: float | None
    error: str = ""
    test: str = "-"
    student: str = ""
    ta: str = ""
    best_epoch: int = 0
    best_prefix: str = ""
    best_score: float | None = None
    test_metrics: tuple = ()  # ((metric, value), ...) sorted

    @property
    def searchable(self) -> str:
        """What the filter (/) matches, lower case."""
        return " ".join((self.name, self.mode, self.dataset, self.status, self.student,
                         self.ta)).lower()

    @property
    def resumable(self) -> bool:
        return resumable(self.status)


def figure(value: Any, metric: str) -> str:
    """A metric value as shown in the list ("accuracy 0.7125"), "-" when there is none."""
    return f"{metric} {score(float(value))}".strip() if isinstance(value, (int, float)) else "-"


def session_row(item: Any, live: bool = False, test: dict | None = None) -> SessionRow:
    """One `SessionStore.list()` entry (a SessionSummary) -> a table row. `live`: a process
    holds the session; `test`: its stored test metrics."""
    best = getattr(item, "best_metric", None)
    metric = getattr(item, "metric", "") or ""
    epoch, epochs = getattr(item, "epoch", 0), getattr(item, "epochs", 0)
    status = shown(str(getattr(item, "status", "") or "-"), live)
    return SessionRow(
        name=str(item.name),
        mode=str(getattr(item, "mode", "") or "-"),
        dataset=str(getattr(item, "dataset", "") or "-"),
        status=status,
        epoch=f"{epoch}/{epochs}" if epochs else "-",
        best=figure(best, metric),
        updated=float(getattr(item, "updated", 0.0) or 0.0) or None,
        error=str(getattr(item, "error", "") or ""),
        test=figure((test or {}).get(metric), metric),
        student=str(getattr(item, "student", "") or ""),
        ta=str(getattr(item, "ta", "") or ""),
        best_epoch=int(getattr(item, "best_epoch", 0) or 0),
        best_prefix=str(getattr(item, "best_prefix", "") or ""),
        best_score=float(best) if isinstance(best, (int, float)) else None,
        test_metrics=tuple(sorted((test or {}).items())),
    )
