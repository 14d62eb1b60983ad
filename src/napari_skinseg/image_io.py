"""Reading and writing images and masks, and turning any array a user has into RGB uint8.

Every reader raises :class:`ImageReadError` with the file name and the reason, so a folder run
can report the file and go on.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_write

MIN_SIDE = 8  # smaller images carry no lesion a U-Net could find
TIFF_EXTENSIONS = (".tif", ".tiff")
# Lossy formats: compression noise leaves values near 0 (and 255) around every edge.
JPEG_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif")
EXIF_ORIENTATION = 0x0112  # the EXIF / TIFF Orientation tag


# Photograph and raster formats; each is offered where this Pillow can open it.
_RASTER_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".tif", ".tiff", ".bmp",
                      ".dib", ".webp", ".gif", ".jp2", ".j2k", ".jpx", ".jpf", ".ppm", ".pgm",
                      ".pbm", ".pnm", ".tga", ".psd", ".avif", ".qoi", ".sgi", ".pcx")


def _readable_extensions() -> tuple[str, ...]:
    """The image files read from folders: every raster format this Pillow can open."""
    Image.init()
    openable = {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return tuple(e for e in _RASTER_EXTENSIONS
                 if e in openable or e in (".jpg", ".jpeg", ".png", ".bmp", *TIFF_EXTENSIONS))


IMAGE_EXTENSIONS = _readable_extensions()


class ImageReadError(ValueError):
    """An image or mask that cannot be used, with a message a user can act on."""


class NonBinaryMaskWarning(UserWarning):
    """A mask holds values other than 0 and 255; every value above 0 is taken as lesion."""


class ImageScalingWarning(UserWarning):
    """An image was scaled to 8 bits by its data, not by its type (12-bit data in a 16-bit file,
    floats outside 0..1); the message says how."""


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF/TIFF orientation (2-8) to an (H, W, ...) array, as Pillow's exif_transpose."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
           7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops[orientation](arr)) if orientation in ops else arr


def _too_large(path: Path) -> ImageReadError:
    # Pillow's own limit (about 179 megapixels), left as it is for the whole process.
    return ImageReadError(f"{path.name}: image is too large to read safely (over "
                          f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels)")


def _read_tiff(path: Path) -> np.ndarray | None:
    """A TIFF's first image with tifffile (float, 16-bit RGB, planar, 12-bit data: what Pillow
    misreads or cannot open); None when tifffile cannot read it either (Pillow then tries)."""
    try:
        import tifffile
    except ImportError:  # pragma: no cover - a dependency of scikit-image
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            # tifffile has no decompression-bomb limit: a small compressed file would be
            # decoded to gigabytes, so Pillow's limit holds for TIFFs too
            if Image.MAX_IMAGE_PIXELS and \
                    int(page.imagewidth) * int(page.imagelength) > 2 * Image.MAX_IMAGE_PIXELS:
                raise _too_large(path)
            if int(page.photometric) in _PILLOW_PHOTOMETRICS:
                return None  # Pillow turns these into RGB; tifffile gives the stored values
            arr = _photometric(page, page.asarray())
            axes = page.axes
            tag = page.tags.get("Orientation")
            orientation = int(tag.value) if tag is not None else 1
    except ImageReadError:
        raise
    except Exception:  # compressions without a codec, broken files: leave them to Pillow
        return None
    if "S" in axes and arr.ndim == 3 and axes.index("S") == 0:
        arr = np.moveaxis(arr, 0, -1)  # planar RGB -> interleaved
    return _orient(arr, orientation)


# TIFF colour spaces other than gray, RGB and palette: CMYK (5), YCbCr (6), CIELab (8, 9, 10).
_PILLOW_PHOTOMETRICS = (5, 6, 8, 9, 10)


def _photometric(page, arr: np.ndarray) -> np.ndarray:
    """The colours a TIFF page's pixel values stand for, as every viewer shows them: tifffile
    returns the stored values, which for a palette image are colour indices (read as gray they
    give another picture) and for a white-is-zero one are inverted grays."""
    photometric = int(page.photometric)
    if photometric == 3 and page.colormap is not None and np.issubdtype(arr.dtype, np.integer):
        colormap = np.asarray(page.colormap)  # (3, 2**bits), 16-bit values by the TIFF standard
        if colormap.max() >= 256:
            colormap = colormap >> 8
        return np.moveaxis(colormap.astype(np.uint8)[:, arr], 0, -1)
    if photometric == 0:  # MINISWHITE
        if arr.dtype == bool:
            return ~arr
        if np.issubdtype(arr.dtype, np.unsignedinteger):
            return (2 ** int(page.bitspersample) - 1 - arr).astype(arr.dtype)
    return arr


def _reads_high_byte_only(img: Image.Image) -> bool:
    """A 16-bit RGB(A) PNG: Pillow has no 16-bit colour mode and keeps each value's high byte,
    right for full-range data, black for 10-12-bit data (no installed reader does better)."""
    return img.format == "PNG" and any(len(tile) > 3 and tile[3] in ("RGB;16B", "RGBA;16B")
                                       for tile in img.tile)  # tile[3]: the raw mode


def _read_array(path: Path) -> np.ndarray:
    if path.suffix.lower() in TIFF_EXTENSIONS and path.is_file():
        arr = _read_tiff(path)
        if arr is not None:
            return arr
    try:
        with Image.open(path) as img:
            high_byte_only = _reads_high_byte_only(img)
            img.load()  # truncated files fail here, not later
            orientation = img.getexif().get(EXIF_ORIENTATION, 1)
            if orientation in range(2, 9):  # upright, as photo viewers show it (napari's
                # own reader, imageio, does not: a layer opened there is segmented as it shows)
                img = ImageOps.exif_transpose(img)
            if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGBA" if "transparency" in img.info or "A" in img.mode else "RGB")
            elif img.mode in ("I;16", "I;16B", "I;16L"):
                return np.array(img).astype(np.uint16)
            arr = np.asarray(img)
            if high_byte_only and arr.size and int(arr[..., :3].max()) < 16:
                raise ImageReadError(
                    f"{path.name}: 16-bit colour PNG whose values use at most 12 bits; Pillow "
                    "reads only the high byte of each value, which would leave it black. Save it "
                    "as a 16-bit TIFF (read in full) or an 8-bit PNG")
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ImageReadError(f"{path}: is a folder, not an image file") from None
    except Image.DecompressionBombError:
        raise _too_large(path) from None
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path.name}: not a readable image ({err})") from None
    return arr


def _bits_used(arr: np.ndarray) -> int:
    """Bit depth the data need (8, 10, 12, 14, 16, ... up to its type's width)."""
    width = np.iinfo(arr.dtype).bits
    top = int(arr.max()) if arr.size else 0
    for bits in range(8, width, 2):
        if top < 2 ** bits:
            return bits
    return width


def to_rgb_uint8(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Return an H x W x 3 uint8 copy of any 2D image array.

    RGB is kept, RGBA loses its alpha, grayscale (H x W or H x W x 1) is replicated to three
    channels, gray+alpha keeps the gray. Integer types wider than 8 bits are scaled by the bit
    depth their data use: 12-bit data in a 16-bit file (values below 4096) are scaled by 4095,
    full 16-bit data by 65535, and an :class:`ImageScalingWarning` says so whenever that is not
    the type's own range. Floats in [0, 1] are scaled by 255, other floats are rescaled from their
    own minimum and maximum (with a warning).
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
        if info.min < 0 and arr.size and int(arr.min()) < 0:
            lo, hi = int(arr.min()), int(arr.max())
            warnings.warn(f"{name}: signed {info.bits}-bit image with values from {lo} to {hi}; "
                          "rescaled from its own range", ImageScalingWarning, stacklevel=2)
        else:
            bits = _bits_used(arr)
            lo, hi = 0, 2 ** bits - 1
            if bits < info.bits - (1 if info.min < 0 else 0):
                warnings.warn(f"{name}: {info.bits}-bit image whose values stay below {2 ** bits}: "
                              f"read as {bits}-bit data (scaled by {hi})", ImageScalingWarning,
                              stacklevel=2)
        scaled = (arr.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise ImageReadError(f"{name}: image contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0 and hi <= 1:
            arr = arr * 255.0
        elif hi > lo:
            warnings.warn(f"{name}: floating-point image with values from {lo:g} to {hi:g} "
                          "(not 0 to 1): rescaled from its own range", ImageScalingWarning,
                          stacklevel=2)
            arr = (arr - lo) * (255.0 / (hi - lo))
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    raise ImageReadError(f"{name}: unsupported pixel type {arr.dtype}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB."""
    path = Path(path)
    return to_rgb_uint8(_read_array(path), name=path.name)


def labels_to_mask(labels: np.ndarray, name: str = "mask", lossy: bool = False) -> np.ndarray:
    """Turn a label image or 0/255 mask into a boolean lesion mask (> 0 is lesion).

    RGB(A) masks count a pixel as lesion when any channel is > 0 and it is not fully transparent
    (alpha 0: palette, RGBA and gray+alpha masks with a transparent background). Warns once per
    call with :class:`NonBinaryMaskWarning` when values other than 0 and 255 (or 0 and 1)
    appear, so a user learns that e.g. anti-aliased edges were counted as lesion.

    ``lossy=True`` (a JPEG mask): compression noise puts small values all around the lesion and
    in the skin, so a pixel is lesion when it is above half the mask's brightest value instead.
    """
    arr = np.asarray(labels)
    if arr.ndim == 3:
        alpha = arr[..., -1] if arr.shape[-1] in (2, 4) else None
        arr = arr[..., :3].max(axis=-1) if arr.shape[-1] in (3, 4) else arr[..., 0]
        if alpha is not None:  # a fully transparent pixel was never painted, whatever its colour
            arr = np.where(alpha > 0, arr, 0)
    if arr.ndim != 2:
        raise ImageReadError(f"{name}: expected a 2D mask, got an array of shape {np.shape(labels)}")
    if arr.dtype == bool:
        return arr.copy()
    values = np.unique(arr)
    if lossy and len(values) > 2:
        cut = values[-1] / 2
        warnings.warn(f"{name}: JPEG mask with {len(values)} distinct values (compression noise); "
                      f"values above {cut:g} (half the brightest) are taken as lesion; save masks "
                      "as PNG to keep them exact", NonBinaryMaskWarning, stacklevel=2)
        return arr > cut
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
    mask = labels_to_mask(_read_array(path), name=path.name,
                          lossy=path.suffix.lower() in JPEG_EXTENSIONS)
    if shape is not None and mask.shape != tuple(shape[:2]):
        raise ImageReadError(f"{path.name}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                             f"{shape[1]}x{shape[0]}")
    return mask


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """Boolean (or label) mask to the ISIC file convention: uint8, 0 = skin, 255 = lesion."""
    return (np.asarray(mask) > 0).astype(np.uint8) * 255


def write_image(path: str | os.PathLike, array: np.ndarray, overwrite: bool = False,
                png_compress_level: int | None = None) -> Path:
    """Write an image atomically (temporary file, then rename); never overwrites unless asked,
    not even a file that another process creates while this one encodes (``FileExistsError``).
    A failing disk raises :class:`~napari_skinseg.destinations.WriteError` (path and cause).
    ``png_compress_level`` (0-9, PNG only; lossless at every level) trades size for speed."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; not overwriting it")
    fmt = _pil_format(path)
    options = {"compress_level": png_compress_level} \
        if fmt == "PNG" and png_compress_level is not None else {}
    return atomic_write(path, lambda tmp: Image.fromarray(np.asarray(array)).save(tmp, format=fmt,
                                                                                **options),
                        overwrite=overwrite)


def write_mask(path: str | os.PathLike, mask: np.ndarray, overwrite: bool = False) -> Path:
    return write_image(path, mask_to_uint8(mask), overwrite=overwrite)


def _pil_format(path: Path) -> str:
    ext = path.suffix.lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}.get(ext, "PNG")
