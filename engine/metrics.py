"""Classification metrics without sklearn.

Labels are any hashable values (usually ints). Macro averages run over every label that occurs
in y_true or y_pred, so a class the model never predicts counts with F1 = 0, and a predicted
class absent from the gold labels counts too (its F1 is 0: only false positives).
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable, Sequence


def _check(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("metrics need at least one example")


def accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    """Fraction of positions where prediction equals the gold label."""
    _check(y_true, y_pred)
    return sum(t == p for t, p in zip(y_true, y_pred)) / len(y_true)


def per_label_f1(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> dict[Hashable, float]:
    """F1 of each label in y_true ∪ y_pred: 2·tp / (2·tp + fp + fn)."""
    _check(y_true, y_pred)
    tp: Counter = Counter()
    fp: Counter = Counter()
    fn: Counter = Counter()
    for t, p in zip(y_true, y_pred):
        if t == p:
            tp[t] += 1
        else:
            fp[p] += 1
            fn[t] += 1
    labels = set(y_true) | set(y_pred)
    # Every label in the union has tp + fp + fn >= 1, so the denominator is never zero.
    return {label: 2 * tp[label] / (2 * tp[label] + fp[label] + fn[label]) for label in labels}


def macro_f1(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    """Unweighted mean of per-label F1 over labels in y_true ∪ y_pred."""
    scores = per_label_f1(y_true, y_pred)
    return sum(scores.values()) / len(scores)


def classification_metrics(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> dict[str, float]:
    """{"accuracy": ..., "macro_f1": ...} for one set of predictions."""
    return {"accuracy": accuracy(y_true, y_pred), "macro_f1": macro_f1(y_true, y_pred)}
