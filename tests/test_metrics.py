import math

import numpy as np
import pytest

from napari_skinseg.metrics import image_metrics, mean_metrics


def test_hand_computed_case():
    truth = np.zeros((4, 5), bool)
    truth[0, :4] = True  # 4 lesion pixels
    pred = np.zeros((4, 5), bool)
    pred[0, 2:5] = True  # tp 2, fp 1, fn 2, tn 15
    m = image_metrics(pred, truth)
    assert m.accuracy == pytest.approx(17 / 20)
    assert m.sensitivity == pytest.approx(2 / 4)
    assert m.specificity == pytest.approx(15 / 16)
    assert m.dice == pytest.approx(4 / 7)
    assert m.jaccard == pytest.approx(2 / 5)
    assert m.threshold_jaccard == 0.0  # 0.4 < 0.65


def test_threshold_jaccard_keeps_values_from_065():
    truth = np.zeros((10, 10), bool)
    truth[:, :10] = True
    pred = truth.copy()
    pred[:3] = False  # jaccard 0.7
    m = image_metrics(pred, truth)
    assert m.jaccard == pytest.approx(0.7) and m.threshold_jaccard == pytest.approx(0.7)
    assert math.isnan(m.specificity)  # no skin pixels in the truth


def test_empty_masks():
    empty = np.zeros((3, 3), bool)
    both = image_metrics(empty, empty)
    assert both.dice == 1 and both.jaccard == 1 and both.accuracy == 1
    assert math.isnan(both.sensitivity) and both.specificity == 1
    one = np.zeros((3, 3), bool)
    one[1, 1] = True
    missed = image_metrics(empty, one)
    assert missed.dice == 0 and missed.sensitivity == 0 and missed.accuracy == pytest.approx(8 / 9)
    false_alarm = image_metrics(one, empty)
    assert false_alarm.dice == 0 and false_alarm.specificity == pytest.approx(8 / 9)


def test_means_skip_undefined_values():
    empty = np.zeros((3, 3), bool)
    one = np.zeros((3, 3), bool)
    one[0, 0] = True
    means = mean_metrics([image_metrics(empty, empty), image_metrics(one, one)])
    assert means["dice"] == 1 and means["sensitivity"] == 1  # NaN of the empty image left out


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="prediction is"):
        image_metrics(np.zeros((2, 2)), np.zeros((3, 3)))
