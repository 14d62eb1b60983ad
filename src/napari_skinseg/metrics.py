"""Segmentation metrics with the ISIC 2018 Task 1 definitions, computed per image then averaged.

Conventions for empty masks (documented because the challenge's formulas divide by zero there):
Dice and Jaccard are 1 when truth and prediction are both empty and 0 when only one is;
sensitivity is undefined (NaN) without lesion pixels in the truth, specificity is undefined
without skin pixels; undefined values are left out of the means.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

THRESHOLD_JACCARD_CUTOFF = 0.65
METRIC_NAMES = ("accuracy", "sensitivity", "specificity", "dice", "jaccard", "threshold_jaccard")


@dataclass(frozen=True)
class ImageMetrics:
    accuracy: float
    sensitivity: float
    specificity: float
    dice: float
    jaccard: float
    threshold_jaccard: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _ratio(num: int, den: int, empty: float) -> float:
    return num / den if den else empty


def image_metrics(pred: np.ndarray, truth: np.ndarray) -> ImageMetrics:
    """Metrics of one predicted mask against its truth (both boolean or > 0 = lesion)."""
    pred = np.asarray(pred) > 0
    truth = np.asarray(truth) > 0
    if pred.shape != truth.shape:
        raise ValueError(f"prediction is {pred.shape} but truth is {truth.shape}")
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    tn = truth.size - tp - fp - fn
    both_empty = 1.0 if tp + fp + fn == 0 else 0.0
    jaccard = _ratio(tp, tp + fp + fn, both_empty)
    return ImageMetrics(
        accuracy=(tp + tn) / truth.size,
        sensitivity=_ratio(tp, tp + fn, math.nan),
        specificity=_ratio(tn, tn + fp, math.nan),
        dice=_ratio(2 * tp, 2 * tp + fp + fn, both_empty),
        jaccard=jaccard,
        threshold_jaccard=jaccard if jaccard >= THRESHOLD_JACCARD_CUTOFF else 0.0,
    )


def mean_metrics(per_image: list[ImageMetrics]) -> dict[str, float]:
    """Mean of each metric over images, leaving out undefined (NaN) values."""
    means = {}
    for name in METRIC_NAMES:
        values = [getattr(m, name) for m in per_image if not math.isnan(getattr(m, name))]
        means[name] = float(np.mean(values)) if values else math.nan
    return means
