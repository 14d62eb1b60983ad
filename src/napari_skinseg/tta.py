"""Test-time views: the network's probability under the eight flips/rotations of the square.

Each view is the prediction for a flipped/rotated copy of the image, turned back into the image's
orientation, at the model's working size. The views' disagreement is the cheapest honest signal of
how sure the model is; :mod:`napari_skinseg.quality` turns it into a predicted Dice.

Numpy only: either engine (torch or ONNX Runtime) runs the eight views as one batch, so the
review queue needs no torch where the ONNX engine segments.
"""

from __future__ import annotations

import numpy as np

from .image_io import to_rgb_uint8

N_VIEWS = 8  # identity first: (rotations 0..3) x (no flip, horizontal flip)
VIEWS = [(k, flip) for flip in (False, True) for k in range(4)]


def _forward(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    x = np.rot90(x, k, axes=(-2, -1))
    return x[..., ::-1] if flip else x


def _backward(y: np.ndarray, k: int, flip: bool) -> np.ndarray:
    y = y[..., ::-1] if flip else y
    return np.rot90(y, -k, axes=(-2, -1))


def predict_views(segmenter, image: np.ndarray, n_views: int = N_VIEWS) -> np.ndarray:
    """(n_views, S, S) float32 lesion probabilities at the working size S; view 0 is the plain
    prediction (the one ``segmenter.predict_probability`` resizes to the image). ``segmenter``:
    a :class:`~.prediction.Segmenter` or :class:`~.onnx_engine.OnnxSegmenter`."""
    x = segmenter.network_input(to_rgb_uint8(image))
    views = VIEWS[:n_views]
    batch = np.ascontiguousarray(np.concatenate([_forward(x, k, f) for k, f in views]))
    probs = segmenter.network_probabilities(batch)
    out = np.concatenate([_backward(probs[i:i + 1], k, f) for i, (k, f) in enumerate(views)])
    return np.ascontiguousarray(out[:, 0], dtype=np.float32)
