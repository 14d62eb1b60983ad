"""The standard simulated user of click-to-fix benchmarks (torch-free: napari may run it)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def next_click(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, bool] | None:
    """The standard simulated user: the largest error region, its point farthest from its border."""
    best = None
    for lesion, error in ((True, truth & ~pred), (False, pred & ~truth)):
        labels, n = ndimage.label(error)
        if n:
            sizes = np.bincount(labels.ravel())[1:]
            k = int(sizes.argmax())
            if best is None or sizes[k] > best[0]:
                best = (sizes[k], labels == k + 1, lesion)
    if best is None:
        return None
    region = best[1]
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return int(y), int(x), best[2]
