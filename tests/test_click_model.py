"""The click-conditioned network: built from a segmentation model, kept apart from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_skinseg.click_model import ClickRefiner, disk_maps, make_click_model, to_working
from napari_skinseg.errors import ModelFileError
from napari_skinseg.model import load_model
from napari_skinseg.prediction import Segmenter


def test_a_new_click_model_reproduces_its_segmentation_model(tiny_model_path, tiny_samples):
    base = load_model(tiny_model_path)
    click = make_click_model(base)
    assert click.metadata.inputs == "rgb+clicks"
    image = tiny_samples.images[3]
    seg_prob = Segmenter(base, "cpu").predict_probability(image)
    refiner = ClickRefiner(click, "cpu")
    mask = seg_prob > 0.5
    # the new channels start with zero weights: mask and clicks change nothing yet
    prob = refiner.probability(image, mask, [(10, 10, True), (40, 50, False)])
    np.testing.assert_allclose(prob, seg_prob, atol=1e-5)


def test_click_models_round_trip_and_are_refused_as_segmentation_models(tmp_path, tiny_model_path):
    click = make_click_model(load_model(tiny_model_path))
    path = click.save(tmp_path / "click.pt")
    loaded = load_model(path)
    assert loaded.metadata.inputs == "rgb+clicks"
    first = next(m for m in loaded.network.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 6
    with pytest.raises(ModelFileError, match="click-to-fix model"):
        Segmenter(loaded, "cpu")
    with pytest.raises(ValueError, match="not a click-to-fix model"):
        ClickRefiner(load_model(tiny_model_path))


def test_click_maps_put_disks_at_the_working_size_positions():
    maps = disk_maps([(10, 20, True), (30, 5, False)], size=64, radius=3)
    assert maps.shape == (2, 64, 64)
    assert maps[0, 10, 20] == 1 and maps[0, 10, 24] == 0 and maps[1, 30, 5] == 1
    assert maps[0].sum() == maps[1].sum() == 29  # a radius-3 disk
    y, x = to_working(255.5, 511.5, (512, 1024), 64)  # the image's centre maps to the centre
    assert abs(y - 31.5) < 1e-9 and abs(x - 31.5) < 1e-9
