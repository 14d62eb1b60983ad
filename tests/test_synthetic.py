import numpy as np

from napari_skinseg.synthetic import make_synthetic_lesion


def test_seeded_and_plausible():
    a_img, a_mask = make_synthetic_lesion((128, 160), seed=3)
    b_img, b_mask = make_synthetic_lesion((128, 160), seed=3)
    c_img, _ = make_synthetic_lesion((128, 160), seed=4)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == (128, 160, 3) and a_img.dtype == np.uint8 and a_mask.dtype == bool
    assert 0.03 < a_mask.mean() < 0.5
    # the lesion is darker than the skin around it
    assert a_img[a_mask].mean() < a_img[~a_mask].mean() - 30


def test_one_connected_lesion():
    from skimage.measure import label

    for seed in range(5):
        _, mask = make_synthetic_lesion((96, 96), seed=seed)
        assert label(mask).max() == 1
