import math

import numpy as np
import pytest

from mangadistill.intent.metrics import (
    accuracy,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
    min_recall_delta,
    negative_log_likelihood,
    per_class_recall,
    reliability_bins,
    top_k_accuracy,
)

# A 4-row, 3-class example: true [0, 0, 1, 2], predicted [0, 1, 1, 1].
Y_TRUE = [0, 0, 1, 2]
Y_PRED = [0, 1, 1, 1]


def test_accuracy_counts_matching_rows():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(2 / 4)
    assert accuracy([1, 1], [1, 1]) == 1.0


def test_confusion_matrix_rows_are_true_columns_predicted():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    expected = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == len(Y_TRUE)


def test_per_class_recall_by_hand_and_nan_for_absent_class():
    # class 0: 1 of 2 found; class 1: 1 of 1; class 2: 0 of 1; class 3: no true rows.
    recall = per_class_recall(Y_TRUE, Y_PRED, 4)
    np.testing.assert_allclose(recall[:3], [0.5, 1.0, 0.0])
    assert math.isnan(recall[3])


def test_macro_f1_by_hand():
    # class 0: TP 1, FP 0, FN 1 -> 2/3 ; class 1: TP 1, FP 2, FN 0 -> 2/4 ; class 2: TP 0, FP 0, FN 1 -> 0
    assert macro_f1(Y_TRUE, Y_PRED, 3) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)


def test_macro_f1_excludes_classes_neither_true_nor_predicted():
    assert macro_f1(Y_TRUE, Y_PRED, 5) == pytest.approx(macro_f1(Y_TRUE, Y_PRED, 3))
    # A class predicted but never true still counts, with F1 0.
    assert macro_f1([0, 0], [0, 1], 2) == pytest.approx((2 / 3 + 0) / 2)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "num_classes", "message"),
    [
        ([0, 1], [0], 2, "2 rows but y_pred has 1"),
        ([], [], 2, "empty"),
        ([0, 5], [0, 1], 3, "y_true: row 1 has label index 5"),
        ([0, 1], [0, -1], 3, "y_pred: row 1 has label index -1"),
        ([0.5, 1.0], [0, 1], 3, "integer"),
    ],
)
def test_bad_labels_raise_naming_the_row(y_true, y_pred, num_classes, message):
    with pytest.raises(ValueError, match=message):
        macro_f1(y_true, y_pred, num_classes)


def test_reliability_bins_by_hand():
    # confidences 0.9, 0.8, 0.6, 0.55; first two and the last one correct.
    probs = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]]
    y_true = [0, 1, 1, 1]
    table = reliability_bins(probs, y_true, bins=5)
    assert [row["lower"] for row in table] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert [row["upper"] for row in table] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert [row["count"] for row in table] == [0, 0, 2, 1, 1]  # 0.6 lies in (0.4, 0.6], 0.8 in (0.6, 0.8]
    assert math.isnan(table[0]["accuracy"]) and math.isnan(table[0]["confidence"])
    assert table[2]["accuracy"] == pytest.approx(0.5)
    assert table[2]["confidence"] == pytest.approx((0.6 + 0.55) / 2)
    assert table[3]["accuracy"] == 1.0 and table[4]["accuracy"] == 1.0


def test_ece_by_hand():
    probs = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]]
    y_true = [0, 1, 1, 1]
    expected = 2 / 4 * abs(0.5 - 0.575) + 1 / 4 * abs(1 - 0.8) + 1 / 4 * abs(1 - 0.9)
    assert expected_calibration_error(probs, y_true, bins=5) == pytest.approx(expected)


def test_ece_is_zero_when_every_bin_is_calibrated():
    # Bin (0.7, 0.8]: 4 rows at confidence 0.75, 3 correct. Bin (0.9, 1.0]: 2 rows at 1.0, both correct.
    probs = [[0.75, 0.25]] * 4 + [[1.0, 0.0]] * 2
    y_true = [0, 0, 0, 1, 0, 0]
    assert expected_calibration_error(probs, y_true) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_confident_wrong_model_is_its_confidence():
    assert expected_calibration_error([[0.95, 0.05]] * 3, [1, 1, 1]) == pytest.approx(0.95)


@pytest.mark.parametrize(
    ("probs", "y_true", "message"),
    [
        ([[0.5, 0.5], [float("nan"), 1.0]], [0, 1], "probs: row 1"),
        ([[0.5, 0.5], [1.5, -0.5]], [0, 1], "probs: row 1"),
        ([0.5, 0.5], [0], "shape"),
        ([[0.5, 0.5]], [0, 1], "1 rows but y_true has 2"),
        ([[0.5, 0.5]], [2], "y_true: row 0 has label index 2"),
    ],
)
def test_bad_probabilities_raise(probs, y_true, message):
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(probs, y_true)


def test_min_recall_delta_skips_nan_classes():
    student = [0.9, 0.4, float("nan"), 0.7]
    baseline = [0.1, 0.5, 0.3, 0.6]
    assert min_recall_delta(student, baseline, [1, 3]) == pytest.approx(-0.1)
    assert min_recall_delta(student, baseline, [2, 3]) == pytest.approx(0.1)
    assert math.isnan(min_recall_delta(student, baseline, [2]))


def test_top_k_accuracy_accepts_any_of_a_rows_plausible_classes():
    probs = np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    assert top_k_accuracy(probs, [[2], [2, 1], [0]], k=2) == pytest.approx(1 / 3)
    assert top_k_accuracy(probs, [[2], [2, 1], [0]], k=3) == 1.0
    assert top_k_accuracy(probs, [[1], [1], [0]], k=1) == 0.0
    with pytest.raises(ValueError, match="outside"):
        top_k_accuracy(probs, [[0], [3], [0]])
    with pytest.raises(ValueError, match="at least one"):
        top_k_accuracy(probs, [[0], [], [0]])


def test_negative_log_likelihood_of_the_true_label_floors_zero_probabilities():
    probs = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert negative_log_likelihood(probs, [0, 2]) == pytest.approx(math.log(2) / 2)
    assert negative_log_likelihood(probs, [2, 2]) == pytest.approx(-math.log(1e-12) / 2)
