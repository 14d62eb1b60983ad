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


def test_a_lesion_split_in_two_keeps_both_halves_whichever_is_larger():
    """Two pieces of nearly equal size are one lesion the network split: both stay, so a change
    in the last bits (another engine) cannot swap which half is kept; a piece under half the
    largest's area is dropped as before."""
    for left, right in ((20, 19), (19, 20)):  # widths: the larger half swaps sides
        p = np.zeros((30, 60), np.float32)
        p[5:25, 5:5 + left] = 0.9
        p[5:25, 30:30 + right] = 0.9
        mask = postprocess(p)
        assert mask[10, 6] and mask[10, 31], (left, right)
    p = np.zeros((30, 60), np.float32)
    p[5:25, 5:25] = 0.9   # 400 px
    p[5:15, 30:51] = 0.9  # 210 px: kept (over half)
    p[20:29, 30:52] = 0.9  # 198 px: dropped (under half)
    mask = postprocess(p)
    assert mask[10, 10] and mask[10, 40] and not mask[25, 40]


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


def test_fill_holes_matches_scipy_on_awkward_masks():
    """The fast hole filling gives scipy's answer: holes touching only diagonally, regions
    reaching the border, nested rings, full and empty masks, non-square shapes."""
    from scipy import ndimage

    from napari_skinseg.postprocess import fill_holes

    rng = np.random.default_rng(3)
    masks = [rng.random((40, 57)) > t for t in (0.3, 0.5, 0.7)]  # noise: many small holes
    ring = np.zeros((30, 30), bool)
    ring[5:25, 5:25] = True
    ring[8:22, 8:22] = False
    ring[11:19, 11:19] = True  # a lesion inside the hole of a ring: both filled
    ring[14:16, 14:16] = False
    diagonal = np.zeros((9, 9), bool)
    diagonal[2:7, 2:7] = True
    diagonal[4, 4] = False
    diagonal[3, 3] = False  # a hole that touches another only at a corner
    open_edge = np.zeros((20, 20), bool)
    open_edge[0:10, 5:15] = True
    open_edge[0:5, 8:12] = False  # a notch open to the border is not a hole
    masks += [ring, diagonal, open_edge, np.ones((7, 11), bool), np.zeros((7, 11), bool)]
    for mask in masks:
        assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
    assert fill_holes(ring)[15, 15] and not fill_holes(open_edge)[2, 10]


def test_overlay_outlines_of_large_images_are_thick_and_use_no_deprecated_morphology():
    """Large images get a thicker outline, drawn inside the lesion; binary_dilation (deprecated
    in scikit-image 0.26, removed in 0.28) must not be what draws it."""
    import warnings

    from scipy import ndimage
    from skimage import morphology, segmentation

    from napari_skinseg.folder_segmentation import OVERLAY_COLOUR, overlay_outline

    mask = np.zeros((1200, 1000), bool)
    mask[300:900, 250:700] = True
    image = np.full((*mask.shape, 3), 40, np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        out = overlay_outline(image, mask)
    edges = segmentation.find_boundaries(mask, mode="inner")
    expected = ndimage.binary_dilation(edges, morphology.disk(3 // 2 + 1)) & mask
    assert ((out == OVERLAY_COLOUR).all(-1) == expected).all()
    assert (out[~expected] == 40).all() and expected.sum() > 2.5 * edges.sum()


def _whole_image_postprocess(probability, config):
    """The clean-up as it ran before it was confined to the lesion's bounding box."""
    from skimage import measure, morphology

    from napari_skinseg.postprocess import SPLIT_LESION_SHARE, fill_holes

    mask = probability > config.threshold
    if config.min_size > 0:
        mask = morphology.remove_small_objects(mask, max_size=config.min_size - 1)
    if config.keep == "largest" and mask.any():
        labels = measure.label(mask, connectivity=2)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = np.isin(labels, np.flatnonzero(sizes >= SPLIT_LESION_SHARE * sizes.max()))
    return fill_holes(mask) if config.fill_holes else mask


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_cleaning_up_inside_the_lesions_bounding_box_gives_the_whole_image_result():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    configs = [PostprocessConfig(), PostprocessConfig(keep="all"), PostprocessConfig(min_size=12),
               PostprocessConfig(fill_holes=False), PostprocessConfig(keep="all", min_size=4)]
    for i in range(120):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        p = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(0, 2.5))
        p = (p - p.min()) / (np.ptp(p) + 1e-9)
        if i % 5 == 0:  # a stripe across the image: components and holes touching its border
            p[int(rng.integers(0, h)), :] = 1
        if i % 9 == 0:
            p[:] = 1.0
        for config in configs:
            expected = _whole_image_postprocess(p, config)
            got = postprocess(p, config)
            assert got.dtype == bool and got.shape == p.shape
            np.testing.assert_array_equal(got, expected, err_msg=f"image {i}, {config}")
