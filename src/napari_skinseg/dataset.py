"""Training pairs at the working size, decoded once and kept in memory as uint8.

Pairs come from folders (``images/`` + ``masks/``) or from arrays (what napari layers hold).
At 256 x 256 a pair takes 260 kB, so the 2,094 ISIC pairs fit in about 550 MB.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image

from .image_io import ImageReadError, pair_arrays, read_image, read_mask
from .pairs import Pair, Skipped, find_pairs
from .transforms import resize_rgb


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
        rgb, mask = pair_arrays(image, label, name)
        out_images.append(resize_rgb(rgb, (size, size)))
        out_masks.append(resize_mask(mask, (size, size)))
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
