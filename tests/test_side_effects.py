"""Nothing process-wide changes when napari (or any caller) uses the package."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import warnings

import numpy as np
import torch

from napari_skinseg import atomic, cli
from napari_skinseg.config import TrainConfig
from napari_skinseg.image_io import write_image
from napari_skinseg.model import SkinSegModel


def test_pillow_limit_is_left_alone():
    # In a fresh interpreter: reloading the module here would split its exception classes.
    code = ("from PIL import Image; before = Image.MAX_IMAGE_PIXELS; "
            "import napari_skinseg.image_io, napari_skinseg.folder_segmentation; "
            "print(Image.MAX_IMAGE_PIXELS == before)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr[-1000:]


def test_atomic_writes_never_touch_the_umask_and_give_normal_permissions(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "umask", lambda *a: calls.append(a) or 0o022)
    path = write_image(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    assert calls == []  # changing the umask is process-wide and races with other threads
    current = os.umask(0o022)
    os.umask(current)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~current
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary file left
    assert atomic.temp_path_for(path).name.startswith(".x.png.")


def test_a_new_model_leaves_the_global_torch_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    SkinSegModel.new(TrainConfig(size=64, decoder_channels=(16, 8, 8, 8, 8)))
    assert torch.equal(torch.rand(3), expected)
    a = SkinSegModel.new(TrainConfig(size=64, seed=5)).network.state_dict()
    b = SkinSegModel.new(TrainConfig(size=64, seed=5)).network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # still seeded


def test_the_cli_restores_warning_display(tmp_path):
    before = warnings.showwarning
    assert cli.main(["sample", str(tmp_path / "s"), "--n", "1", "--size", "64"]) == 0
    assert warnings.showwarning is before
