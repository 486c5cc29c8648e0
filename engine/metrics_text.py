"""Text metrics: SQuAD exact match / F1 (official normalisation) and ROUGE (rouge-score).

All scores are fractions in [0, 1] (like accuracy), not percentages.

SQuAD follows the official v2.0 evaluation script, which equals v1.1 on answerable
questions: answers are lower-cased, stripped of punctuation and of the articles a/an/the,
and whitespace is collapsed; a prediction scores the maximum over the gold answers.
A question without gold answers (SQuAD v2 "unanswerable") expects the empty prediction: it
scores 1 for "" and 0 for anything else.

ROUGE uses Google's `rouge-score` package (the reference re-implementation of ROUGE-1.5.5)
with Porter stemming, and reports the mean F-measure.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

from engine.errors import UsageError

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Bag-of-tokens F1 between the normalised strings (1.0 when both are empty)."""
    pred, ref = _tokens(prediction), _tokens(gold)
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answers: Sequence[str]) -> list[str]:
    """The gold answers scored against: those that survive normalisation, or [""] if none."""
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def squad_scores(prediction: str, answers: Sequence[str]) -> tuple[float, float]:
    """(exact_match, f1) of one prediction: the best over the gold answers."""
    golds = gold_answers(answers)
    return (max(exact_match(prediction, g) for g in golds),
            max(token_f1(prediction, g) for g in golds))


def squad_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """{"f1", "exact_match"} averaged over examples; references[i] lists example i's answers."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("metrics need at least one example")
    em = f1 = 0.0
    for prediction, answers in zip(predictions, references):
        e, f = squad_scores(prediction, answers)
        em += e
        f1 += f
    n = len(predictions)
    return {"f1": f1 / n, "exact_match": em / n}


def _scorer(types: Sequence[str]):
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise UsageError("package 'rouge-score' is not installed (needed for ROUGE)",
                         "run: pip install rouge-score") from None
    return rouge_scorer.RougeScorer(list(types), use_stemmer=True)


def rouge_scores(predictions: Sequence[str], references: Sequence[str],
                 types: Sequence[str] = ROUGE_TYPES) -> dict[str, float]:
    """Mean ROUGE F-measure per type, e.g. {"rouge1": .., "rouge2": .., "rougeL": ..}."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("metrics need at least one example")
    scorer = _scorer(types)
    totals = dict.fromkeys(types, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)  # (target, prediction)
        for name in types:
            totals[name] += scores[name].fmeasure
    return {name: total / len(predictions) for name, total in totals.items()}
