"""A click-conditioned U-Net for click-to-fix (the RITM recipe, Sofiiuk et al. 2022).

The network sees the image (normalised as the segmentation model's input), the current mask and
two click maps (disks around each positive and each negative click, see
:mod:`napari_skinseg.click_inputs`), and predicts the corrected lesion mask. It starts as a copy of a trained
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

from .click_inputs import click_input
from .model import INPUTS, SkinSegModel, build_unet
from .transforms import network_input


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


class ClickRefiner:
    """Runs a click-to-fix model: image + current mask + clicks -> lesion probability."""

    engine = "torch"

    def __init__(self, model: SkinSegModel, device: str = "cpu"):
        if model.metadata.inputs != "rgb+clicks":
            raise ValueError("this is a segmentation model, not a click-to-fix model")
        self.model = model
        self.device = torch.device(device)
        self.network = model.network.to(self.device).eval()
        self.size = model.metadata.size
        self._image = None  # the array whose network input is cached (held, so never reused)
        self._x = None

    def _image_input(self, rgb: np.ndarray) -> np.ndarray:
        if rgb is not self._image:  # the image part is the same for every click on one image
            meta = self.model.metadata
            self._x = network_input(rgb, self.size, meta.mean, meta.std,
                                    meta.config.colour_constancy)
            self._image = rgb
        return self._x

    def probability(self, rgb: np.ndarray, mask: np.ndarray,
                    clicks: Sequence[tuple[int, int, bool]]) -> np.ndarray:
        """Lesion probability at the image's size; clicks are (y, x, lesion) in image pixels."""
        h, w = mask.shape
        inputs = torch.from_numpy(click_input(self._image_input(rgb), mask, clicks))
        inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            prob = torch.sigmoid(self.network(inputs.to(self.device)))
            if (h, w) != (self.size, self.size):
                prob = F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)
        return prob[0, 0].float().cpu().numpy()


__all__ = ["ClickRefiner", "make_click_model"]
