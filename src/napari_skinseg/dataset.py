"""Training pairs at the working size, decoded once and kept in memory as uint8.

Pairs come from folders (``images/`` + ``masks/``) or from arrays (what napari layers hold).
At 256 x 256 a pair takes 260 kB, so the 2,094 ISIC pairs fit in about 550 MB.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .image_io import ImageReadError, labels_to_mask, read_image, read_mask, to_rgb_uint8
from .pairs import Pair, Skipped, find_pairs


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 RGB to (H, W) = size; Pillow's filter antialiases when shrinking and works in
    uint8, so a 6000 x 4000 photograph needs no float copy."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if mask.shape == (h, w):
        return mask.astype(bool)
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.BILINEAR)
    return np.asarray(small) >= 128


@dataclass
class SampleSet:
    """N pairs at the working size: images (N, S, S, 3) uint8 and masks (N, S, S) bool."""

    images: np.ndarray
    masks: np.ndarray
    names: list[str]
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices: Sequence[int]) -> "SampleSet":
        idx = list(indices)
        return SampleSet(self.images[idx], self.masks[idx], [self.names[i] for i in idx])

    @property
    def lesion_fraction(self) -> float:
        return float(self.masks.mean()) if len(self) else 0.0


def _stack(images: list[np.ndarray], masks: list[np.ndarray], names: list[str], size: int,
           skipped: list[Skipped]) -> SampleSet:
    if not images:
        return SampleSet(np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), bool),
                         [], skipped)
    return SampleSet(np.stack(images), np.stack(masks), names, skipped)


def samples_from_arrays(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], size: int,
                        names: Sequence[str] | None = None) -> SampleSet:
    """Pairs from in-memory arrays (any image type :func:`to_rgb_uint8` accepts; labels > 0 = lesion).

    Raises ``ValueError`` naming the pair when an image and its labels differ in shape.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} label images")
    names = list(names) if names is not None else [f"pair {i + 1}" for i in range(len(images))]
    out_images, out_masks = [], []
    for image, label, name in zip(images, labels, names):
        rgb = to_rgb_uint8(image, name=name)
        label = np.asarray(label)
        if label.shape[:2] != rgb.shape[:2] or label.ndim != 2:
            raise ValueError(f"{name}: image is {rgb.shape[1]}x{rgb.shape[0]} but its labels are "
                             f"{label.shape[::-1]} ({label.ndim}D); they must match pixel for pixel")
        out_images.append(resize_rgb(rgb, (size, size)))
        out_masks.append(resize_mask(labels_to_mask(label, name=name), (size, size)))
    return _stack(out_images, out_masks, names, size, [])


def samples_from_pairs(pairs: Sequence[Pair], size: int) -> SampleSet:
    """Read each pair once; unreadable or mismatched pairs are skipped and reported."""
    images, masks, names, skipped = [], [], [], []
    warned_values = False
    for pair in pairs:
        try:
            rgb = read_image(pair.image)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                mask = read_mask(pair.mask, shape=rgb.shape[:2])
            if caught and not warned_values:  # say it once per data set, not once per mask
                warnings.warn(f"{caught[0].message} (and possibly other masks)", caught[0].category,
                              stacklevel=2)
                warned_values = True
        except ImageReadError as err:
            skipped.append(Skipped(pair.image, str(err)))
            continue
        images.append(resize_rgb(rgb, (size, size)))
        masks.append(resize_mask(mask, (size, size)))
        names.append(pair.name)
    return _stack(images, masks, names, size, skipped)


def samples_from_folders(images_dir, masks_dir, size: int) -> SampleSet:
    scan = find_pairs(images_dir, masks_dir)
    samples = samples_from_pairs(scan.pairs, size)
    samples.skipped = scan.skipped + samples.skipped
    if not len(samples):
        raise ValueError(f"none of the pairs in {images_dir} could be read: "
                         + "; ".join(str(s) for s in samples.skipped[:3]))
    return samples


def normalise(images: np.ndarray | torch.Tensor, mean: Sequence[float],
              std: Sequence[float]) -> torch.Tensor:
    """(N, H, W, 3) uint8 (or float 0..1 NCHW tensor) -> normalised float NCHW, channels_last."""
    if isinstance(images, np.ndarray):
        if not images.flags.writeable:  # arrays from Pillow are read-only; torch wants to own them
            images = images.copy()
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    else:
        x = images
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)
