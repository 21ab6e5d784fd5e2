import numpy as np
import pytest

from streamer.train.metrics import (confusion, expected_calibration_error, macro_f1, per_class_recall, summary,
                                    unweighted_accuracy, weighted_accuracy)


def test_known_confusion_matrix():
    # 3 classes; rows true, columns predicted
    m = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 6]])
    assert per_class_recall(m).tolist() == pytest.approx([0.8, 0.75, 1.0])
    assert unweighted_accuracy(m) == pytest.approx((0.8 + 0.75 + 1.0) / 3)
    assert weighted_accuracy(m) == pytest.approx(17 / 20)
    f1 = [2 * 8 / (10 + 9), 2 * 3 / (4 + 5), 1.0]
    assert macro_f1(m) == pytest.approx(np.mean(f1))


def test_confusion_counts():
    m = confusion([0, 1, 2, 2], [0, 2, 2, 2], 3)
    assert m.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 2]]


def test_ece_perfectly_calibrated_and_overconfident():
    probs = np.array([[1.0, 0.0]] * 4)
    assert expected_calibration_error(probs, [0, 0, 0, 0]) == 0.0
    assert expected_calibration_error(probs, [0, 0, 1, 1]) == pytest.approx(0.5)


def test_summary_keys_and_absent_classes():
    probs = np.eye(7)[[0, 1, 1]]
    rep = summary(probs, [0, 1, 2], skipped=2)
    assert rep["n"] == 3 and rep["skipped"] == 2
    assert rep["per_class_recall"]["angry"] == 1.0 and rep["per_class_recall"]["surprise"] is None
    assert rep["ua"] == pytest.approx(2 / 3)
    assert np.array(rep["confusion"]["matrix"]).shape == (7, 7)
