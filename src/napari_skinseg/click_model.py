"""A click-conditioned U-Net for click-to-fix (the RITM recipe, Sofiiuk et al. 2022).

The network sees the image (normalised as the segmentation model's input), the current mask and
two click maps (disks of :data:`CLICK_RADIUS` pixels at the working size around each positive and
each negative click), and predicts the corrected lesion mask. It starts as a copy of a trained
segmentation model whose first convolution gets zero weights for the three new channels, so
before training it reproduces that model; ``benchmarks/gpu/train_click_model.py`` then trains it
with simulated clicks placed in the current errors.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .model import INPUTS, SkinSegModel, build_unet
from .transforms import normalise, working_rgb

CLICK_RADIUS = 5  # pixels at the working size (RITM's disk encoding)


def _first_conv_weight(network: nn.Module) -> str:
    """The state-dict key of the network's first convolution (the one that sees the inputs)."""
    return next(n for n, m in network.named_modules() if isinstance(m, nn.Conv2d)) + ".weight"


def make_click_model(base: SkinSegModel) -> SkinSegModel:
    """A click-to-fix model initialised from the segmentation model ``base``."""
    meta = copy.deepcopy(base.metadata)
    meta.inputs = "rgb+clicks"
    meta.quality = {}
    meta.history = []
    network = build_unet(meta.config, INPUTS["rgb+clicks"])
    state = base.network.state_dict()
    key = _first_conv_weight(network)
    wide = torch.zeros_like(network.state_dict()[key])
    wide[:, :3] = state[key]
    state = {**state, key: wide}
    network.load_state_dict(state)
    return SkinSegModel(network, meta)


def disk_maps(clicks: Sequence[tuple[float, float, bool]], size: int,
              radius: float = CLICK_RADIUS) -> np.ndarray:
    """(2, size, size) float32: disks around the positive and the negative clicks, whose (y, x)
    are given at the working size."""
    maps = np.zeros((2, size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for y, x, lesion in clicks:
        disk = (yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2
        maps[0 if lesion else 1][disk] = 1.0
    return maps


def to_working(y: float, x: float, shape: tuple[int, int], size: int) -> tuple[float, float]:
    """A pixel of the original image in working-size coordinates (pixel centres aligned)."""
    h, w = shape
    return (y + 0.5) * size / h - 0.5, (x + 0.5) * size / w - 0.5


def resize_mask_to(mask: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="area")[0, 0].numpy()


class ClickRefiner:
    """Runs a click-to-fix model: image + current mask + clicks -> lesion probability."""

    def __init__(self, model: SkinSegModel, device: str = "cpu"):
        if model.metadata.inputs != "rgb+clicks":
            raise ValueError("this is a segmentation model, not a click-to-fix model")
        self.model = model
        self.device = torch.device(device)
        self.network = model.network.to(self.device).eval()
        self.size = model.metadata.size
        self._image = None  # the array whose network input is cached (held, so never reused)
        self._x = None

    def _image_input(self, rgb: np.ndarray) -> torch.Tensor:
        if rgb is not self._image:  # the image part is the same for every click on one image
            meta = self.model.metadata
            small = working_rgb(rgb, self.size, meta.config.colour_constancy)
            self._x = normalise(small[None], meta.mean, meta.std)
            self._image = rgb
        return self._x

    def probability(self, rgb: np.ndarray, mask: np.ndarray,
                    clicks: Sequence[tuple[int, int, bool]]) -> np.ndarray:
        """Lesion probability at the image's size; clicks are (y, x, lesion) in image pixels."""
        h, w = mask.shape
        x = self._image_input(rgb)
        prev = resize_mask_to(mask, self.size)
        maps = disk_maps([(*to_working(y, xx, (h, w), self.size), lesion)
                          for y, xx, lesion in clicks], self.size)
        extra = torch.from_numpy(np.concatenate([prev[None] > 0.5, maps]).astype(np.float32))[None]
        inputs = torch.cat([x, extra], 1).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            prob = torch.sigmoid(self.network(inputs.to(self.device)))
            if (h, w) != (self.size, self.size):
                prob = F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)
        return prob[0, 0].float().cpu().numpy()


__all__ = ["CLICK_RADIUS", "ClickRefiner", "make_click_model", "disk_maps", "to_working"]
