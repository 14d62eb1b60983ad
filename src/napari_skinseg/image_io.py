"""Reading and writing images and masks, and turning any array a user has into RGB uint8.

Every reader raises :class:`ImageReadError` with the file name and the reason, so a folder run
can report the file and go on.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_write

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MIN_SIDE = 8  # smaller images carry no lesion a U-Net could find


class ImageReadError(ValueError):
    """An image or mask that cannot be used, with a message a user can act on."""


class NonBinaryMaskWarning(UserWarning):
    """A mask holds values other than 0 and 255; every value above 0 is taken as lesion."""


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _read_array(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()  # truncated files fail here, not later
            if img.mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("I;16", "I;16B", "I;16L"):
                return np.array(img).astype(np.uint16)
            arr = np.asarray(img)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except Image.DecompressionBombError:
        # Pillow's own limit (about 179 megapixels), left as it is for the whole process.
        raise ImageReadError(f"{path.name}: image is too large to read safely (over "
                             f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path.name}: not a readable image ({err})") from None
    return arr


def to_rgb_uint8(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Return an H x W x 3 uint8 copy of any 2D image array.

    RGB is kept, RGBA loses its alpha, grayscale (H x W or H x W x 1) is replicated to three
    channels, gray+alpha keeps the gray. Integer types wider than 8 bits are scaled by their
    type's range (a 16-bit 65535 becomes 255); floats in [0, 1] are scaled by 255, other floats
    are rescaled from their own minimum and maximum.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] in (1, 2):
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ImageReadError(f"{name}: expected a 2D grayscale, RGB or RGBA image, got an array of "
                             f"shape {arr.shape}")
    arr = arr[..., :3]
    h, w = arr.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageReadError(f"{name}: image is {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} "
                             "is needed to find a lesion")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        lo = min(info.min, 0)
        scaled = (arr.astype(np.float32) - lo) * (255.0 / (info.max - lo))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise ImageReadError(f"{name}: image contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0 and hi <= 1:
            arr = arr * 255.0
        elif hi > lo:
            arr = (arr - lo) * (255.0 / (hi - lo))
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    raise ImageReadError(f"{name}: unsupported pixel type {arr.dtype}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB."""
    path = Path(path)
    return to_rgb_uint8(_read_array(path), name=path.name)


def labels_to_mask(labels: np.ndarray, name: str = "mask") -> np.ndarray:
    """Turn a label image or 0/255 mask into a boolean lesion mask (> 0 is lesion).

    Warns once per call with :class:`NonBinaryMaskWarning` when values other than 0 and 255
    (or 0 and 1) appear, so a user learns that e.g. anti-aliased edges were counted as lesion.
    """
    arr = np.asarray(labels)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=-1) if arr.shape[-1] in (3, 4) else arr[..., 0]
    if arr.ndim != 2:
        raise ImageReadError(f"{name}: expected a 2D mask, got an array of shape {np.shape(labels)}")
    if arr.dtype == bool:
        return arr.copy()
    values = np.unique(arr)
    if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
        warnings.warn(f"{name}: mask holds {len(values)} distinct values, not only 0 and 255; "
                      "every value above 0 is taken as lesion", NonBinaryMaskWarning, stacklevel=2)
    return arr > 0


def pair_arrays(image: np.ndarray, labels: np.ndarray, name: str = "pair") -> tuple[np.ndarray, np.ndarray]:
    """An image and its labels as (RGB uint8, boolean lesion mask); raises ``ImageReadError``
    naming the pair when they differ in shape."""
    rgb = to_rgb_uint8(image, name=name)
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape != rgb.shape[:2]:
        raise ImageReadError(f"{name}: image is {rgb.shape[1]}x{rgb.shape[0]} but its labels are "
                             f"{labels.shape[::-1]} ({labels.ndim}D); they must match pixel for pixel")
    return rgb, labels_to_mask(labels, name=name)


def read_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask file as a boolean array; ``shape`` (H, W) is checked when given."""
    path = Path(path)
    mask = labels_to_mask(_read_array(path), name=path.name)
    if shape is not None and mask.shape != tuple(shape[:2]):
        raise ImageReadError(f"{path.name}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                             f"{shape[1]}x{shape[0]}")
    return mask


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """Boolean (or label) mask to the ISIC file convention: uint8, 0 = skin, 255 = lesion."""
    return (np.asarray(mask) > 0).astype(np.uint8) * 255


def write_image(path: str | os.PathLike, array: np.ndarray, overwrite: bool = False) -> Path:
    """Write an image atomically (temporary file, then rename); never overwrites unless asked."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; not overwriting it")
    return atomic_write(path, lambda tmp: Image.fromarray(np.asarray(array)).save(tmp, format=_pil_format(path)))


def write_mask(path: str | os.PathLike, mask: np.ndarray, overwrite: bool = False) -> Path:
    return write_image(path, mask_to_uint8(mask), overwrite=overwrite)


def _pil_format(path: Path) -> str:
    ext = path.suffix.lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}.get(ext, "PNG")
