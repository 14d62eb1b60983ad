"""From a probability map to a clean lesion mask, with scikit-image morphology."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import measure, morphology

from .config import PostprocessConfig


def postprocess(probability: np.ndarray, config: PostprocessConfig | None = None) -> np.ndarray:
    """Threshold, drop small components, keep the largest (or all), fill holes -> bool mask."""
    config = config or PostprocessConfig()
    mask = np.asarray(probability) > config.threshold
    if config.min_size > 0:
        mask = morphology.remove_small_objects(mask, max_size=config.min_size - 1) \
            if _has_max_size() else morphology.remove_small_objects(mask, min_size=config.min_size)
    if config.keep == "largest" and mask.any():
        labels = measure.label(mask, connectivity=2)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(sizes.argmax())
    if config.fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    return mask


def _has_max_size() -> bool:
    # scikit-image 0.26 renamed min_size (drop objects *smaller* than) to max_size (drop objects
    # of at most this size); use whichever this version offers without a deprecation warning.
    import inspect

    return "max_size" in inspect.signature(morphology.remove_small_objects).parameters
