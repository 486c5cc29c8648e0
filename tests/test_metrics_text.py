"""engine.metrics_text: SQuAD normalisation / EM / F1 and ROUGE against hand-computed values."""

from __future__ import annotations

import pytest

from engine.metrics_text import (
    exact_match,
    gold_answers,
    normalize_answer,
    rouge_scores,
    squad_metrics,
    squad_scores,
    token_f1,
)


@pytest.mark.parametrize("text, expected", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  an   Apple, a pear and THE plum. ", "apple pear and plum"),
    ("theatre anthem", "theatre anthem"),          # articles only as whole words
    ("A.B.C.", "abc"),                             # punctuation removed inside words too
    ("the", ""),
    ("", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_and_f1_by_hand():
    assert exact_match("The Louvre.", "louvre") == 1.0
    assert exact_match("Louvre museum", "louvre") == 0.0
    # pred tokens [louvre, museum], gold [louvre]: P = 1/2, R = 1, F1 = 2/3
    assert token_f1("Louvre museum", "the Louvre") == pytest.approx(2 / 3)
    # repeated tokens count with multiplicity: pred [a?] -> [paris, paris], gold [paris]
    assert token_f1("Paris Paris", "Paris") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("Berlin", "Paris") == 0.0
    # empty against empty is a match, empty against text is not (SQuAD v2 rule)
    assert token_f1("", "") == 1.0 and token_f1("", "Paris") == 0.0 and token_f1("the", "") == 1.0


def test_best_over_gold_answers_and_unanswerable():
    em, f1 = squad_scores("in Paris", ["Lyon", "Paris, France", "in Paris"])
    assert (em, f1) == (1.0, 1.0)
    em, f1 = squad_scores("Paris", ["Lyon", "Paris, France"])
    assert em == 0.0 and f1 == pytest.approx(2 / 3)      # P = 1, R = 1/2
    assert gold_answers([]) == [""] and gold_answers(["the", "Paris"]) == ["Paris"]
    assert squad_scores("", []) == (1.0, 1.0)           # no answer, correctly none predicted
    assert squad_scores("Paris", []) == (0.0, 0.0)
    assert squad_scores("", ["Paris"]) == (0.0, 0.0)


def test_squad_metrics_average():
    metrics = squad_metrics(["Paris", "Louvre museum", ""], [["Paris"], ["the Louvre"], ["Rome"]])
    assert metrics["exact_match"] == pytest.approx(1 / 3)
    assert metrics["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    with pytest.raises(ValueError):
        squad_metrics(["a"], [])
    with pytest.raises(ValueError):
        squad_metrics([], [])


def test_rouge_by_hand():
    # reference "the cat sat on the mat", prediction "the cat was on the mat":
    # unigrams: 5 of 6 shared -> 5/6; bigrams: the-cat, on-the, the-mat of 5 -> 3/5;
    # LCS "the cat on the mat" = 5 tokens -> 5/6
    scores = rouge_scores(["the cat was on the mat"], ["the cat sat on the mat"])
    assert scores == pytest.approx({"rouge1": 5 / 6, "rouge2": 3 / 5, "rougeL": 5 / 6})
    # averaged over examples; stemming makes "cats"/"cat" equal
    scores = rouge_scores(["cats running", "nothing alike"], ["cat runs", "the reference"])
    assert scores["rouge1"] == pytest.approx(0.5)
    assert scores["rouge2"] == pytest.approx(0.5)
    assert list(rouge_scores(["a b"], ["a b"], types=("rouge1",))) == ["rouge1"]
    with pytest.raises(ValueError):
        rouge_scores(["a"], ["a", "b"])
