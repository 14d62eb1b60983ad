"""Click-to-fix: ClickSession on synthetic lesions (probability maps made by hand, no network,
except the box and first-prediction tests which use the tiny trained model)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_skinseg.click_refine import Click, RefineParams, window_around
from napari_skinseg.interactive import ClickSession
from napari_skinseg.postprocess import postprocess
from napari_skinseg.synthetic import make_synthetic_lesion


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.fixture(scope="module")
def lesion():
    image, truth = make_synthetic_lesion((192, 192), seed=4, hairs=0)
    return image, truth


def soft(mask):
    return ndimage.gaussian_filter(mask.astype(np.float32), 2)


def test_first_mask_is_the_post_processed_probability(lesion):
    image, truth = lesion
    s = ClickSession(image, probability=soft(truth))
    assert s.mask.dtype == bool and s.mask.shape == truth.shape
    np.testing.assert_array_equal(s.mask, postprocess(soft(truth)))


def test_positive_click_adds_a_missed_part(lesion):
    image, truth = lesion
    ys, xs = np.nonzero(truth)
    cx = int(xs.mean())
    missed = truth.copy()
    missed[:, cx:] = False  # the model missed the right half
    s = ClickSession(image, probability=soft(missed) * 0.9)
    before = iou(s.mask, truth)
    error = truth & ~s.mask
    y, x = np.unravel_index(ndimage.distance_transform_edt(error).argmax(), error.shape)
    after = iou(s.click(int(y), int(x), lesion=True), truth)
    assert after > before + 0.1


def test_negative_click_removes_false_skin(lesion):
    image, truth = lesion
    false = truth.copy()
    false[10:40, 10:40] = True  # a false blob in a corner
    s = ClickSession(image, probability=soft(false))
    s.mask = ndimage.binary_fill_holes(false)  # keep both parts (largest-only would drop it)
    assert s.mask[25, 25]
    s.click(25, 25, lesion=False)
    assert not s.mask[20:30, 20:30].any()
    assert iou(s.mask, truth) > 0.95


def test_a_click_never_changes_the_mask_outside_its_window(lesion):
    image, truth = lesion
    s = ClickSession(image, probability=soft(truth))
    before = s.mask.copy()
    y, x = 180, 185  # skin, far from the lesion
    wy, wx = window_around(before.shape, y, x, before, s.params)
    after = s.click(y, x, lesion=True)
    outside = np.ones_like(before)
    outside[wy, wx] = False
    np.testing.assert_array_equal(after[outside], before[outside])
    side = max(before.shape)
    assert (wy.stop - wy.start) <= 2 * s.params.max_window * side + 1
    # and a negative click on skin that is already skin changes nothing at all
    s2 = ClickSession(image, probability=soft(truth))
    np.testing.assert_array_equal(s2.click(5, 5, lesion=False), s2.mask)
    np.testing.assert_array_equal(s2.mask, postprocess(soft(truth)))


def test_undo_restores_each_step(lesion):
    image, truth = lesion
    s = ClickSession(image, probability=soft(truth) * 0.6)
    first = s.mask.copy()
    assert not s.can_undo
    np.testing.assert_array_equal(s.undo(), first)  # nothing to undo: unchanged
    s.click(96, 20, lesion=True)
    second = s.mask.copy()
    s.click(20, 96, lesion=False)
    np.testing.assert_array_equal(s.undo(), second)
    np.testing.assert_array_equal(s.undo(), first)
    assert s.clicks == [] and not s.can_undo


def test_clicks_outside_the_image_are_refused(lesion):
    image, truth = lesion
    s = ClickSession(image, probability=soft(truth))
    with pytest.raises(ValueError, match="outside"):
        s.click(500, 3)
    with pytest.raises(ValueError, match="probability"):
        ClickSession(image, probability=np.zeros((5, 5)))


def test_a_click_between_pixels_goes_to_the_pixel_under_it(lesion):
    # a point at 10.7 (napari's Points data, as the Curate dock rounds them) lies in pixel 11;
    # the API took pixel 10, refused -0.2 (in pixel 0) and took h - 0.4 (outside the image)
    image, truth = lesion
    s = ClickSession(image, probability=soft(truth))
    h, w = truth.shape
    s.click(10.7, 20.2, lesion=True)
    assert (s.clicks[-1].y, s.clicks[-1].x) == (11, 20)
    s.click(-0.2, 5.5, lesion=True)
    assert (s.clicks[-1].y, s.clicks[-1].x) == (0, 6)
    for y, x in ((h - 0.4, 3), (3, float("nan"))):
        with pytest.raises(ValueError, match="outside"):
            s.click(y, x)


def test_window_grows_with_distance_to_the_outline():
    mask = np.zeros((200, 200), bool)
    mask[50:150, 50:150] = True
    p = RefineParams()
    near = window_around(mask.shape, 100, 52, mask, p)
    deep = window_around(mask.shape, 100, 100, mask, p)
    assert (deep[0].stop - deep[0].start) > (near[0].stop - near[0].start)
    assert Click(1, 2, True).lesion


def test_session_with_a_model_and_a_box(tiny_model_path):
    image, truth = make_synthetic_lesion((96, 96), seed=8)
    s = ClickSession(image, model=tiny_model_path)
    assert s.mask.shape == (96, 96) and s.probability.shape == (96, 96)
    before = s.mask.copy()
    after = s.box(20, 20, 70, 80)
    outside = np.ones_like(before)
    outside[20:70, 20:80] = False
    np.testing.assert_array_equal(after[outside], before[outside])
    np.testing.assert_array_equal(s.undo(), before)
