import numpy as np
import pytest

from napari_skinseg.config import PostprocessConfig
from napari_skinseg.postprocess import postprocess


def _prob():
    p = np.zeros((40, 40), np.float32)
    p[5:25, 5:25] = 0.9  # big lesion
    p[12:16, 12:16] = 0.1  # hole inside it
    p[30:33, 30:33] = 0.8  # small speck
    return p


def test_largest_component_with_filled_holes():
    mask = postprocess(_prob())
    assert mask[5:25, 5:25].all() and not mask[30:33, 30:33].any()


def test_keep_all_and_min_size_and_no_fill():
    p = _prob()
    assert postprocess(p, PostprocessConfig(keep="all"))[31, 31]
    assert not postprocess(p, PostprocessConfig(keep="all", min_size=10))[31, 31]
    assert postprocess(p, PostprocessConfig(keep="all", min_size=9))[31, 31]
    assert not postprocess(p, PostprocessConfig(fill_holes=False))[13, 13]


def test_threshold_and_empty():
    p = _prob()
    assert not postprocess(p, PostprocessConfig(threshold=0.95)).any()
    assert postprocess(p, PostprocessConfig(threshold=0.05, keep="all"))[13, 13]
    with pytest.raises(ValueError, match="threshold"):
        PostprocessConfig(threshold=1.5)
