"""The model shipped in the package: loads safely and finds a synthetic lesion."""

import numpy as np

from napari_skinseg.bundled import bundled_model_path, has_bundled_model
from napari_skinseg.metrics import image_metrics
from napari_skinseg.model import load_model
from napari_skinseg.prediction import Segmenter
from napari_skinseg.synthetic import make_synthetic_lesion


def test_bundled_model_is_shipped_small_and_documented():
    assert has_bundled_model()
    path = bundled_model_path()
    assert path.stat().st_size < 30 * 2**20
    meta = load_model(path).metadata
    assert meta.status == "complete" and meta.metrics["val_dice"] > 0.8
    assert meta.data["n_train"] > 1000 and len(meta.data["val_names"]) == meta.data["n_val"]


def test_bundled_model_segments_synthetic_lesions():
    segmenter = Segmenter.from_file(None, device="cpu")
    dices = []
    for seed in range(100, 104):
        image, truth = make_synthetic_lesion((384, 512), seed=seed)
        seg = segmenter.segment(image)
        assert seg.mask.shape == truth.shape
        dices.append(image_metrics(seg.mask, truth).dice)
    assert np.mean(dices) > 0.8, dices
