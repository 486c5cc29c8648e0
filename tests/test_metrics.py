"""Metric functions against hand-computed cases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.metrics import accuracy, classification_metrics, macro_f1, per_label_f1


def test_accuracy_counts_matches():
    assert accuracy([0, 1, 2, 1], [0, 1, 1, 1]) == 0.75
    assert accuracy(["a"], ["b"]) == 0.0
    assert accuracy([2, 2], [2, 2]) == 1.0


def test_macro_f1_with_a_class_never_predicted():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 1, 0, 1, 1]
    # class 0: tp=2 fp=1 fn=0 -> 4/5; class 1: tp=1 fp=2 fn=1 -> 2/5; class 2: tp=0 -> 0
    assert per_label_f1(y_true, y_pred) == pytest.approx({0: 0.8, 1: 0.4, 2: 0.0})
    assert macro_f1(y_true, y_pred) == pytest.approx(0.4)
    assert accuracy(y_true, y_pred) == 0.5


def test_macro_f1_counts_a_predicted_class_absent_from_gold():
    # class 0: tp=1 fn=1 -> 2/3; class 1 (only predicted): fp=1 -> 0
    assert macro_f1([0, 0], [0, 1]) == pytest.approx(1 / 3)


def test_macro_f1_constant_predictor():
    # always predicting 0 on [0,0,0,1]: class 0 tp=3 fp=1 -> 6/7, class 1 -> 0
    assert macro_f1([0, 0, 0, 1], [0, 0, 0, 0]) == pytest.approx(3 / 7)


def test_classification_metrics_bundle():
    out = classification_metrics([1, 0, 1], [1, 1, 1])
    assert set(out) == {"accuracy", "macro_f1"}
    assert out["accuracy"] == pytest.approx(2 / 3)
    # class 1: tp=2 fp=1 -> 4/5; class 0: fn=1 -> 0
    assert out["macro_f1"] == pytest.approx(0.4)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="2 items but y_pred has 1"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="at least one example"):
        macro_f1([], [])


pairs = st.integers(1, 40).flatmap(
    lambda n: st.tuples(st.lists(st.integers(0, 3), min_size=n, max_size=n),
                        st.lists(st.integers(0, 3), min_size=n, max_size=n)))


@given(pairs)
def test_metric_bounds_and_perfect_score(pair):
    y_true, y_pred = pair
    acc, f1 = accuracy(y_true, y_pred), macro_f1(y_true, y_pred)
    assert 0.0 <= acc <= 1.0 and 0.0 <= f1 <= 1.0
    assert (acc == 1.0) == (f1 == 1.0) == (y_true == y_pred)
    assert macro_f1(y_true, y_true) == 1.0
