"""The segmentation module's core: probability map and mask at the image's original size."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import PostprocessConfig
from .dataset import SampleSet
from .devices import resolve_device
from .image_io import to_rgb_uint8
from .metrics import image_metrics
from .model import ModelFileError, SkinSegModel, load_model
from .postprocess import postprocess
from .segmentation import Segmentation
from .transforms import normalise, working_rgb


class Segmenter:
    """Runs a model on images of any size with torch; thread-safe for one caller at a time."""

    engine = "torch"

    def __init__(self, model: SkinSegModel, device: str = "auto"):
        if model.metadata.inputs != "rgb":
            raise ModelFileError(f"{Path(model.path).name if model.path else 'this model'} is a "
                                 "click-to-fix model, not a segmentation model; choose a model "
                                 "trained with skinseg train")
        self.model = model
        self.device = resolve_device(device)
        self.network = model.network.to(self.device).to(memory_format=torch.channels_last).eval()
        self.size = model.metadata.size

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None, device: str = "auto") -> "Segmenter":
        """Load ``path``, or the bundled model when ``path`` is None."""
        if path is None:
            from .bundled import bundled_model_path

            path = bundled_model_path()
        return cls(load_model(path), device=device)

    @property
    def name(self) -> str:
        return Path(self.model.path).name if self.model.path else "model in memory"

    def predict_probability(self, image: np.ndarray, tta: bool = False) -> np.ndarray:
        """Lesion probability (float32, H x W, the input's size) for any image array."""
        rgb = to_rgb_uint8(image)
        h, w = rgb.shape[:2]
        small = working_rgb(rgb, self.size, self.model.metadata.config.colour_constancy)
        x = normalise(small[None], self.model.metadata.mean, self.model.metadata.std).to(self.device)
        with torch.inference_mode():
            if tta:  # average the original with its horizontal and vertical flips
                views = torch.cat([x, x.flip(-1), x.flip(-2)])
                probs = torch.sigmoid(self.network(views.contiguous(memory_format=torch.channels_last)))
                prob = (probs[0] + probs[1].flip(-1) + probs[2].flip(-2)) / 3
                prob = prob[None]
            else:
                prob = torch.sigmoid(self.network(x))
            if (h, w) != (self.size, self.size):
                prob = F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)
        return prob[0, 0].float().cpu().numpy()

    def segment(self, image: np.ndarray, post: PostprocessConfig | None = None,
                tta: bool = False) -> Segmentation:
        probability = self.predict_probability(image, tta=tta)
        return Segmentation(probability, postprocess(probability, post))


def mean_dice(segmenter: Segmenter, samples: SampleSet, threshold: float = 0.5) -> float:
    """Mean per-image Dice of ``segmenter`` on pairs (at the pairs' size, no post-processing):
    the one yardstick used to compare two models on the same validation pairs."""
    dices = [image_metrics(segmenter.predict_probability(image) > threshold, mask).dice
             for image, mask in zip(samples.images, samples.masks)]
    return float(np.mean(dices)) if dices else float("nan")
