"""Colour constancy (part of a model's input transform) and the bf16 training option."""

from __future__ import annotations

import numpy as np
import pytest

from napari_skinseg.config import TrainConfig
from napari_skinseg.engines import make_segmenter
from napari_skinseg.model import load_model
from napari_skinseg.training import run_training
from napari_skinseg.transforms import colour_correct, shades_of_gray, working_rgb

from .conftest import TINY


def _textured(seed=0, shape=(48, 64)):
    rng = np.random.default_rng(seed)
    grey = rng.uniform(60, 200, shape)
    return np.repeat(grey[..., None], 3, axis=2)


def test_shades_of_gray_removes_a_colour_cast():
    grey = _textured()
    cast = np.clip(grey * np.array([1.25, 1.0, 0.7]), 0, 255).astype(np.uint8)
    corrected = shades_of_gray(cast).astype(float)
    means = corrected.reshape(-1, 3).mean(0)
    # the cast made red 1.8x blue; corrected, the channels agree within 3 %
    assert cast.reshape(-1, 3).mean(0)[0] / cast.reshape(-1, 3).mean(0)[2] > 1.7
    assert means.max() / means.min() < 1.03
    # two dermoscopes' casts of the same scene give nearly the same corrected image
    other = np.clip(grey * np.array([0.8, 1.0, 1.2]), 0, 255).astype(np.uint8)
    assert np.abs(shades_of_gray(other).astype(float) - corrected).mean() < 3


def test_colour_correction_works_on_stacks_and_keeps_dtype_and_shape():
    stack = np.stack([_textured(i).astype(np.uint8) for i in range(3)])
    out = colour_correct(stack, "shades_of_gray")
    assert out.dtype == np.uint8 and out.shape == stack.shape
    np.testing.assert_array_equal(out[1], shades_of_gray(stack[1]))
    assert colour_correct(stack, "none") is stack
    with pytest.raises(ValueError, match="colour constancy"):
        colour_correct(stack, "retinex")
    black = np.zeros((8, 8, 3), np.uint8)  # no light at all: no division by zero
    assert (shades_of_gray(black) == 0).all()
    assert working_rgb(stack[0], 32, "shades_of_gray").shape == (32, 32, 3)


def test_unknown_settings_are_refused_by_the_config():
    with pytest.raises(ValueError, match="colour_constancy"):
        TrainConfig(colour_constancy="grey-world-ish")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    config = TrainConfig(colour_constancy="shades_of_gray", precision="bf16")
    command = config.cli_command("imgs", "masks", "m.pt")
    assert "--colour-constancy shades_of_gray" in command and "--precision bf16" in command


def test_a_colour_constancy_model_applies_it_in_both_engines(tmp_path, tiny_samples):
    out = tmp_path / "sog.pt"
    config = TrainConfig(**{**TINY, "epochs": 3}, learning_rate=3e-3,
                         colour_constancy="shades_of_gray")
    run_training(tiny_samples, config, out)
    assert load_model(out).metadata.config.colour_constancy == "shades_of_gray"
    image = np.clip(tiny_samples.images[0].astype(float) * [1.3, 1.0, 0.75], 0, 255).astype(np.uint8)
    torch_prob = make_segmenter(out, device="cpu", engine="torch").predict_probability(image)
    onnx_prob = make_segmenter(out, device="cpu", engine="onnx").predict_probability(image)
    np.testing.assert_allclose(torch_prob, onnx_prob, atol=1e-3)
    # the correction is really applied: the same network without it answers differently
    plain = load_model(out)
    plain.metadata.config = plain.metadata.config.replace(colour_constancy="none")
    from napari_skinseg.prediction import Segmenter

    assert np.abs(Segmenter(plain, "cpu").predict_probability(image) - torch_prob).max() > 1e-3


def test_bf16_training_gives_a_usable_model(tmp_path, tiny_samples):
    out = tmp_path / "bf16.pt"
    result = run_training(tiny_samples, TrainConfig(**{**TINY, "epochs": 2}, precision="bf16"), out)
    assert len(result.history) == 2
    assert all(np.isfinite(h.val_loss) and 0 <= h.val_dice <= 1 for h in result.history)
    assert load_model(out).metadata.config.precision == "bf16"


def test_fine_tuning_keeps_the_starting_models_colour_constancy(tmp_path, tiny_samples):
    base = tmp_path / "base.pt"
    run_training(tiny_samples, TrainConfig(**TINY, colour_constancy="shades_of_gray"), base)
    tuned = tmp_path / "tuned.pt"
    # the person's settings say nothing of colour constancy: the network's input stays the same
    run_training(tiny_samples, TrainConfig(**TINY), tuned, init=base)
    assert load_model(tuned).metadata.config.colour_constancy == "shades_of_gray"
    # asked for, it is added to a model trained without it (bundled model v2 was made so)
    plain = tmp_path / "plain.pt"
    run_training(tiny_samples, TrainConfig(**TINY), plain)
    corrected = tmp_path / "corrected.pt"
    run_training(tiny_samples, TrainConfig(**TINY, colour_constancy="shades_of_gray"), corrected,
                 init=plain)
    assert load_model(corrected).metadata.config.colour_constancy == "shades_of_gray"


def test_shades_of_gray_by_lookup_table_matches_the_float_formula():
    """The histogram + lookup-table version gives the per-pixel formula's answer to within one
    grey level (float32 rounding), for one image and for a stack."""
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (3, 31, 47, 3)).astype(np.uint8)
    images[1, ..., 0] //= 3  # a strong cast in one image

    def float_formula(x, p=6):
        x = np.asarray(x, dtype=np.float64)
        illuminant = np.mean(x ** p, axis=(-3, -2), keepdims=True) ** (1 / p)
        illuminant /= np.linalg.norm(illuminant, axis=-1, keepdims=True)
        return np.clip(x / (illuminant * np.sqrt(3.0)) + 0.5, 0, 255).astype(np.uint8)

    stack = shades_of_gray(images)
    assert stack.dtype == np.uint8 and stack.shape == images.shape
    assert np.abs(stack.astype(int) - float_formula(images)).max() <= 1
    for image, corrected in zip(images, stack):
        np.testing.assert_array_equal(shades_of_gray(image), corrected)


@pytest.mark.parametrize("colour", ["none", "shades_of_gray"])
@pytest.mark.parametrize("tta", [False, True])
def test_network_input_by_lookup_gives_the_same_numbers_as_resize_correct_normalise(colour, tta):
    from napari_skinseg.synthetic import make_synthetic_lesion
    from napari_skinseg.transforms import flip_views, network_input, normalise_array

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    images = [make_synthetic_lesion((90, 70), seed=s)[0] for s in range(4)]
    images += [np.zeros((20, 20, 3), np.uint8), np.full((33, 17, 3), 255, np.uint8)]
    for image in images:
        expected = flip_views(normalise_array(working_rgb(image, 48, colour)[None], mean, std),
                              3 if tta else 1)
        got = network_input(image, 48, mean, std, colour, tta)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="colour constancy"):
        network_input(images[0], 48, mean, std, "retinex")
