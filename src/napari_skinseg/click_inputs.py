"""What a click-to-fix network sees and how its answer comes back, in numpy (torch-free, so the
torch and the ONNX Runtime engines share it: :class:`ClickRunner`).

Six channels at the working size: the image as the segmentation model's input (three), the
current mask, and two click maps (disks of :data:`CLICK_RADIUS` pixels around each positive and
each negative click: the RITM encoding). The network sees the input and its mirror image, and
the two answers are averaged: fewer clicks for a few ms more (BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from .transforms import flip_views, merge_flip_views, network_input, probability_at

CLICK_RADIUS = 5  # pixels at the working size


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


def mask_at(mask: np.ndarray, size: int) -> np.ndarray:
    """The mask at the working size (bool): each pixel takes the majority of the area it covers."""
    m = np.asarray(mask, dtype=np.float32)
    if m.shape != (size, size):
        m = np.asarray(Image.fromarray(m).resize((size, size), Image.BOX))
    return m > 0.5


def click_input(image_input: np.ndarray, mask: np.ndarray,
                clicks: Sequence[tuple[int, int, bool]]) -> np.ndarray:
    """(1, 6, S, S) float32 network input from the image's (1, 3, S, S) normalised input, the
    current mask and the clicks ((y, x, lesion) in the mask's pixels)."""
    size = image_input.shape[-1]
    shape = np.shape(mask)
    maps = disk_maps([(*to_working(y, x, shape, size), lesion) for y, x, lesion in clicks], size)
    extra = np.concatenate([mask_at(mask, size)[None].astype(np.float32), maps])[None]
    return np.ascontiguousarray(np.concatenate([np.asarray(image_input, np.float32), extra], 1))


class ClickRunner:
    """Image + current mask + clicks -> lesion probability at the image's size. Engines give
    ``size``, ``mean``, ``std``, ``colour_constancy`` and ``_logits`` ((N, 6, S, S) float32 ->
    (N, 1, S, S) logits as numpy)."""

    size: int
    mean: Sequence[float]
    std: Sequence[float]
    colour_constancy: str = "none"
    mirror: bool = True  # average with the mirrored input's answer (chosen on calibration images)
    # (image array, its network input): the image part is the same for every click on one image.
    # The array is held, so its id is never reused; one tuple, so two threads never mix them up.
    _cached: tuple[np.ndarray, np.ndarray] | None = None

    def _logits(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _image_input(self, rgb: np.ndarray) -> np.ndarray:
        cached = self._cached
        if cached is None or cached[0] is not rgb:
            cached = (rgb, network_input(rgb, self.size, self.mean, self.std,
                                         self.colour_constancy))
            self._cached = cached
        return cached[1]

    def probability(self, rgb: np.ndarray, mask: np.ndarray,
                    clicks: Sequence[tuple[int, int, bool]]) -> np.ndarray:
        """Lesion probability at the image's size; clicks are (y, x, lesion) in image pixels."""
        views = 2 if self.mirror else 1
        x = flip_views(click_input(self._image_input(rgb), mask, clicks), views)
        p = 1.0 / (1.0 + np.exp(-np.asarray(self._logits(x), dtype=np.float32)))
        return probability_at(merge_flip_views(p, views), np.shape(mask))
