"""Test-time views: the network's probability under the eight flips/rotations of the square.

Each view is the prediction for a flipped/rotated copy of the image, turned back into the image's
orientation, at the model's working size. The views' disagreement is the cheapest honest signal of
how sure the model is; :mod:`napari_skinseg.quality` turns it into a predicted Dice.
"""

from __future__ import annotations

import numpy as np
import torch

from .image_io import to_rgb_uint8
from .prediction import Segmenter
from .transforms import normalise, working_rgb

N_VIEWS = 8  # identity first: (rotations 0..3) x (no flip, horizontal flip)


def _forward(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, k, dims=(-2, -1))
    return x.flip(-1) if flip else x


def _backward(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    y = y.flip(-1) if flip else y
    return torch.rot90(y, -k, dims=(-2, -1))


VIEWS = [(k, flip) for flip in (False, True) for k in range(4)]


def predict_views(segmenter: Segmenter, image: np.ndarray, n_views: int = N_VIEWS) -> np.ndarray:
    """(n_views, S, S) float32 lesion probabilities at the working size S; view 0 is the plain
    prediction (the one :meth:`Segmenter.predict_probability` resizes to the image)."""
    rgb = to_rgb_uint8(image)
    size = segmenter.size
    meta = segmenter.model.metadata
    small = working_rgb(rgb, size, meta.config.colour_constancy)
    x = normalise(small[None], meta.mean, meta.std).to(segmenter.device)
    views = VIEWS[:n_views]
    with torch.inference_mode():
        batch = torch.cat([_forward(x, k, f) for k, f in views]).contiguous(
            memory_format=torch.channels_last)
        probs = torch.sigmoid(segmenter.network(batch))
        out = torch.cat([_backward(probs[i:i + 1], k, f) for i, (k, f) in enumerate(views)])
    return out[:, 0].float().cpu().numpy()
