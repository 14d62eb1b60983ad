"""A click-conditioned U-Net for click-to-fix (the RITM recipe, Sofiiuk et al. 2022).

The network sees the image (normalised as the segmentation model's input), the current mask and
two click maps (disks around each positive and each negative click, see
:mod:`napari_skinseg.click_inputs`), and predicts the corrected lesion mask. It starts as a copy
of a trained segmentation model whose first convolution gets zero weights for the three new
channels, so before training it reproduces that model; ``benchmarks/gpu/train_click_model.py`` then trains it
with simulated clicks placed in the current errors.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .click_inputs import ClickRunner
from .model import INPUTS, SkinSegModel, build_unet


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


class ClickRefiner(ClickRunner):
    """Runs a click-to-fix model with torch: image + current mask + clicks -> lesion probability
    (:class:`napari_skinseg.click_inputs.ClickRunner`)."""

    engine = "torch"

    def __init__(self, model: SkinSegModel, device: str = "cpu", mirror: bool = True):
        if model.metadata.inputs != "rgb+clicks":
            raise ValueError("this is a segmentation model, not a click-to-fix model")
        self.model = model
        self.device = torch.device(device)
        self.network = model.network.to(self.device).eval()
        meta = model.metadata
        self.size, self.mean, self.std = meta.size, meta.mean, meta.std
        self.colour_constancy = meta.config.colour_constancy
        self.mirror = mirror

    def _logits(self, x: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.network(inputs.to(self.device)).float().cpu().numpy()


__all__ = ["ClickRefiner", "make_click_model"]
