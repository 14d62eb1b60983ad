"""The network's input transform, shared by training and prediction (both engines): an RGB uint8
image resized to the working size, then scaled to 0..1 and normalised with the model's mean and
std. torch is imported only by :func:`normalise` (the ONNX engine uses :func:`normalise_array`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 RGB to (H, W) = size; Pillow's filter antialiases when shrinking and works in
    uint8, so a 6000 x 4000 photograph needs no float copy."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def normalise_array(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(N, H, W, 3) uint8 -> normalised float32 NCHW (numpy; the same numbers as normalise)."""
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x - m) / s)


def normalise(images, mean: Sequence[float], std: Sequence[float]):
    """(N, H, W, 3) uint8 (or float 0..1 NCHW tensor) -> normalised float NCHW, channels_last."""
    import torch

    if isinstance(images, np.ndarray):
        if not images.flags.writeable:  # arrays from Pillow are read-only; torch wants to own them
            images = images.copy()
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    else:
        x = images
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)
