"""Seeded, dermoscopy-like synthetic images with exact lesion masks.

For tests, demos and napari's sample data: a textured skin-tone background with vignetting, one
irregular pigmented lesion with colour variation, and a few dark hairs that are *not* lesion.
No real patient data is involved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import draw

from .image_io import write_image, write_mask
from .pairs import PairFolder

SKIN_TONES = np.array([[224, 184, 160], [210, 160, 130], [235, 200, 180], [190, 140, 110]],
                      dtype=np.float32)
LESION_TONES = np.array([[120, 70, 45], [90, 50, 35], [150, 95, 65], [70, 45, 40]], dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return noise / (noise.std() + 1e-6)


def _lesion_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An irregular blob: a radius that varies with angle as a short Fourier series."""
    cy = h * rng.uniform(0.4, 0.6)
    cx = w * rng.uniform(0.4, 0.6)
    r0 = min(h, w) * rng.uniform(0.16, 0.3)
    theta = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    radius = np.ones_like(theta)
    for k in range(2, 7):
        radius += rng.uniform(0, 0.18 / k ** 0.5) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    stretch = rng.uniform(0.75, 1.25)
    rows = cy + r0 * radius * np.sin(theta) * stretch
    cols = cx + r0 * radius * np.cos(theta) / stretch
    return draw.polygon2mask((h, w), np.stack([rows, cols], axis=1))


def make_synthetic_lesion(shape: tuple[int, int] = (256, 256), seed: int = 0,
                          hairs: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(image, mask)``: an H x W x 3 uint8 image and its exact boolean lesion mask."""
    h, w = shape
    rng = np.random.default_rng(seed)
    mask = _lesion_mask(rng, h, w)

    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.92, 1.05)
    texture = 8 * _smooth_noise(rng, (h, w), max(h, w) / 40) + 3 * rng.standard_normal((h, w))
    image = skin[None, None, :] + texture[..., None]

    # Pigment: darker core, colour blotches, a soft edge so the border is not a perfect step.
    lesion_colour = LESION_TONES[rng.integers(len(LESION_TONES))]
    inside = ndimage.distance_transform_edt(mask)
    depth = np.clip(inside / (inside.max() + 1e-6), 0, 1)
    blotch = _smooth_noise(rng, (h, w), max(h, w) / 25)
    pigment = lesion_colour[None, None, :] * (1.15 - 0.35 * depth[..., None]) + 12 * blotch[..., None]
    weight = ndimage.gaussian_filter(mask.astype(np.float32), 1.2)[..., None]
    image = image * (1 - weight) + pigment * weight

    # Dermoscope vignetting: darker corners.
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2))
    image *= np.clip(1.05 - 0.25 * r ** 3, 0.5, 1.05)[..., None]

    n_hairs = int(rng.integers(1, 4)) if hairs is None else hairs
    for _ in range(n_hairs):
        r0, c0, r1, c1 = (int(v) for v in rng.integers(0, [h, w, h, w]))
        rm, cm = (r0 + r1) // 2 + int(rng.integers(-h // 6, h // 6 + 1)), (c0 + c1) // 2
        rr, cc = draw.bezier_curve(r0, c0, rm, cm, r1, c1, 1.0, shape=(h, w))
        for dr in (0, 1):
            ok = rr + dr < h
            image[rr[ok] + dr, cc[ok]] = image[rr[ok] + dr, cc[ok]] * 0.35
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def make_synthetic_dataset(n: int, shape: tuple[int, int] = (256, 256),
                           seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    pairs = [make_synthetic_lesion(shape, seed=seed * 100_003 + i) for i in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def write_synthetic_dataset(folder: str | Path, n: int, shape: tuple[int, int] = (256, 256),
                            seed: int = 0, image_ext: str = ".png", overwrite: bool = True
                            ) -> tuple[Path, Path]:
    """Write ``n`` pairs as ``images/synth_XXXX<ext>`` and ``masks/synth_XXXX_segmentation.png``.

    ``overwrite=False`` raises ``FileExistsError`` before anything is written when one of those
    files exists (an earlier sample's mask may have been corrected by hand since)."""
    folder = Path(folder)
    pf = PairFolder(folder)
    images_dir, masks_dir = pf.images, pf.masks
    names = [f"synth_{seed:03d}_{i:04d}" for i in range(n)]
    if not overwrite:
        for name in names:
            for path in (pf.image_path(name, image_ext), pf.mask_path(name)):
                if path.exists():
                    raise FileExistsError(f"{path} exists; choose another folder or --seed "
                                          "(samples never replace files)")
    images, masks = make_synthetic_dataset(n, shape, seed)
    for name, image, mask in zip(names, images, masks):
        write_image(pf.image_path(name, image_ext), image, overwrite=overwrite)
        write_mask(pf.mask_path(name), mask, overwrite=overwrite)
    return images_dir, masks_dir
