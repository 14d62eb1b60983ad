import numpy as np
import pytest

from napari_skinseg.config import PostprocessConfig
from napari_skinseg.metrics import image_metrics
from napari_skinseg.prediction import Segmenter
from napari_skinseg.synthetic import make_synthetic_lesion


@pytest.fixture(scope="module")
def segmenter(tiny_model_path):
    return Segmenter.from_file(tiny_model_path, device="cpu")


def test_original_size_and_types(segmenter):
    image, _ = make_synthetic_lesion((90, 150), seed=40)
    seg = segmenter.segment(image)
    assert seg.probability.shape == seg.mask.shape == (90, 150)
    assert seg.probability.dtype == np.float32 and seg.mask.dtype == bool
    assert 0 <= seg.probability.min() <= seg.probability.max() <= 1
    tta = segmenter.segment(image, tta=True)
    assert tta.mask.shape == (90, 150)


def test_finds_a_synthetic_lesion_roughly(segmenter):
    dices = []
    for seed in range(50, 54):
        image, truth = make_synthetic_lesion((96, 96), seed=seed)
        dices.append(image_metrics(segmenter.segment(image).mask, truth).dice)
    assert np.mean(dices) > 0.5


def test_grayscale_rgba_and_huge_images(segmenter):
    gray = np.full((40, 60), 128, np.uint8)
    assert segmenter.predict_probability(gray).shape == (40, 60)
    rgba = np.zeros((40, 60, 4), np.uint8)
    assert segmenter.predict_probability(rgba).shape == (40, 60)
    big = np.zeros((4000, 6000, 3), np.uint8)
    big[1500:2500, 2500:3500] = 60
    seg = segmenter.segment(big, PostprocessConfig())
    assert seg.mask.shape == (4000, 6000)
