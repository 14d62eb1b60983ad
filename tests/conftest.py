"""Shared fixtures: small synthetic data and one tiny trained model per test session."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_skinseg.config import TrainConfig
from napari_skinseg.dataset import samples_from_arrays
from napari_skinseg.synthetic import make_synthetic_dataset, write_synthetic_dataset

# One intra-op thread: the tiny test networks gain nothing from two, and on a busy 2-core machine
# OpenMP's waiting threads made training fixtures 10-20x slower.
torch.set_num_threads(1)

TINY = dict(size=64, batch_size=4, epochs=1, decoder_channels=(32, 16, 16, 8, 8), device="cpu")


@pytest.fixture(scope="session", autouse=True)
def onnx_cache_dir(tmp_path_factory):
    """ONNX exports go to a test folder, not the user's cache (model workers inherit it)."""
    import os

    path = tmp_path_factory.mktemp("onnx-cache")
    os.environ["SKINSEG_CACHE"] = str(path)
    return path


@pytest.fixture
def tiny_config() -> TrainConfig:
    return TrainConfig(**TINY)


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    images_dir, masks_dir = write_synthetic_dataset(root, 6, (96, 128), seed=1)
    return images_dir, masks_dir


@pytest.fixture(scope="session")
def tiny_samples():
    images, masks = make_synthetic_dataset(16, (80, 80), seed=2)
    return samples_from_arrays(images, masks, size=64)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, tiny_samples):
    """A model trained for a few epochs on synthetic lesions (good enough to find them roughly)."""
    from napari_skinseg.training import run_training

    out = tmp_path_factory.mktemp("model") / "tiny.pt"
    config = TrainConfig(**{**TINY, "epochs": 10}, learning_rate=3e-3)
    run_training(tiny_samples, config, out)
    return out


def rng_image(shape, seed=0, dtype=np.uint8):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(dtype)
