"""ABCD-style shape and colour descriptors of a segmented lesion (scikit-image based).

These are descriptors to support a clinician's assessment, not a diagnosis.

The lesion is the union of all mask pixels (several disconnected parts are measured together and
counted in ``n_components``). Definitions:

* area, perimeter (scikit-image's Crofton estimate, within 1 % for discs and ellipses), equivalent diameter (of the disc
  with the same area), maximum Feret (caliper) diameter; in pixels, and in mm (mm² for area) when
  the pixel size is given.
* asymmetry about the major / minor principal axis: the lesion is mirrored across the axis through
  its centroid; asymmetry is the fraction of lesion area not covered by its mirror image
  (0 = perfectly symmetric, 1 = no overlap).
* compactness index perimeter² / (4π·area): 1 for a disc, larger for irregular borders; solidity:
  area / convex-hull area (1 for convex shapes).
* colour: mean and standard deviation of CIELAB L*, a*, b* inside the lesion, and the dermoscopy
  colour families present: every lesion pixel is assigned to the nearest of six reference colours
  (CIE76 distance in CIELAB; references as used for ABCD colour counting: white (255,255,255),
  red (204,51,51), light brown (153,102,0), dark brown (51,0,0), blue-grey (51,153,153),
  black (0,0,0)); a family counts when it covers at least ``COLOUR_MIN_FRACTION`` (5 %) of the lesion.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from skimage import color, measure, transform

DISCLAIMER = ("Lesion descriptors support a clinician's assessment; they are not a diagnosis.")
COLOUR_MIN_FRACTION = 0.05
COLOUR_FAMILIES = {
    "white": (255, 255, 255),
    "red": (204, 51, 51),
    "light_brown": (153, 102, 0),
    "dark_brown": (51, 0, 0),
    "blue_grey": (51, 153, 153),
    "black": (0, 0, 0),
}
_FAMILY_LAB = color.rgb2lab(np.array([list(COLOUR_FAMILIES.values())], np.float64) / 255.0)[0]

SHAPE_COLUMNS = ("n_components", "area_px", "perimeter_px", "equivalent_diameter_px",
                 "feret_diameter_max_px", "area_mm2", "perimeter_mm", "equivalent_diameter_mm",
                 "feret_diameter_max_mm", "asymmetry_major_axis", "asymmetry_minor_axis",
                 "compactness", "solidity")
COLOUR_COLUMNS = ("L_mean", "L_std", "a_mean", "a_std", "b_mean", "b_std", "n_colours", "colours",
                  *(f"fraction_{name}" for name in COLOUR_FAMILIES))
COLUMNS = SHAPE_COLUMNS + COLOUR_COLUMNS


def _mirror_overlap(mask: np.ndarray, centroid: np.ndarray, direction: np.ndarray) -> float:
    """Fraction of ``mask`` not covered by its reflection across the line through ``centroid``
    along ``direction`` (both in (row, col))."""
    area = mask.sum()
    d = direction / np.linalg.norm(direction)
    reflect = 2 * np.outer(d, d) - np.eye(2)  # in (row, col); an involution
    # skimage transforms work in (x, y) = (col, row)
    swap = np.array([[0, 1], [1, 0]])
    a_xy = swap @ reflect @ swap
    c_xy = centroid[::-1]
    matrix = np.eye(3)
    matrix[:2, :2] = a_xy
    matrix[:2, 2] = c_xy - a_xy @ c_xy
    mirrored = transform.warp(mask.astype(np.float32), transform.AffineTransform(matrix=matrix),
                              order=1, preserve_range=True) >= 0.5
    return float(1 - (mask & mirrored).sum() / area)


def _crop_around(mask: np.ndarray, centroid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A square crop centred on the centroid that holds the lesion and any reflection of it."""
    rows, cols = np.nonzero(mask)
    reach = int(math.ceil(np.hypot(rows - centroid[0], cols - centroid[1]).max())) + 2
    r0, c0 = int(centroid[0]) - reach, int(centroid[1]) - reach
    size = 2 * reach + 2
    crop = np.zeros((size, size), bool)
    rr, cc = rows - r0, cols - c0
    crop[rr, cc] = True
    return crop, centroid - np.array([r0, c0])


def shape_descriptors(mask: np.ndarray, pixel_size_mm: float | None = None) -> dict[str, float]:
    mask = np.asarray(mask) > 0
    out: dict[str, float] = {name: math.nan for name in SHAPE_COLUMNS}
    out["n_components"] = int(measure.label(mask, connectivity=2).max())
    area = int(mask.sum())
    out["area_px"] = area
    if area == 0:
        return out
    props = measure.regionprops(mask.astype(np.uint8))[0]
    perimeter = float(props.perimeter_crofton)
    out["perimeter_px"] = perimeter
    out["equivalent_diameter_px"] = float(props.equivalent_diameter_area)
    out["feret_diameter_max_px"] = float(props.feret_diameter_max)
    out["solidity"] = float(props.solidity)
    out["compactness"] = perimeter ** 2 / (4 * math.pi * area) if perimeter > 0 else math.nan
    if area >= 3:
        crop, centroid = _crop_around(mask, np.array(props.centroid))
        coords = np.argwhere(crop) - centroid
        eigvals, eigvecs = np.linalg.eigh(np.cov(coords.T) + 1e-9 * np.eye(2))
        major, minor = eigvecs[:, 1], eigvecs[:, 0]
        out["asymmetry_major_axis"] = _mirror_overlap(crop, centroid, major)
        out["asymmetry_minor_axis"] = _mirror_overlap(crop, centroid, minor)
    if pixel_size_mm:
        out["area_mm2"] = area * pixel_size_mm ** 2
        for name in ("perimeter", "equivalent_diameter", "feret_diameter_max"):
            out[f"{name}_mm"] = out[f"{name}_px"] * pixel_size_mm
    return out


def colour_descriptors(image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    mask = np.asarray(mask) > 0
    out: dict[str, Any] = {name: math.nan for name in COLOUR_COLUMNS}
    out["colours"] = ""
    if not mask.any():
        out["n_colours"] = 0
        return out
    pixels = np.asarray(image)[mask][:, :3].astype(np.float64) / 255.0
    lab = color.rgb2lab(pixels[None])[0]
    for i, channel in enumerate("Lab"):
        out[f"{channel}_mean"] = float(lab[:, i].mean())
        out[f"{channel}_std"] = float(lab[:, i].std())
    distances = np.linalg.norm(lab[:, None, :] - _FAMILY_LAB[None, :, :], axis=-1)
    fractions = np.bincount(distances.argmin(axis=1), minlength=len(COLOUR_FAMILIES)) / len(lab)
    present = []
    for name, fraction in zip(COLOUR_FAMILIES, fractions):
        out[f"fraction_{name}"] = float(fraction)
        if fraction >= COLOUR_MIN_FRACTION:
            present.append(name)
    out["n_colours"] = len(present)
    out["colours"] = ";".join(present)
    return out


def measure_lesion(mask: np.ndarray, image: np.ndarray | None = None,
                   pixel_size_mm: float | None = None) -> dict[str, Any]:
    """All descriptors of one mask (and its RGB image for the colour ones)."""
    if pixel_size_mm is not None and not pixel_size_mm > 0:
        raise ValueError(f"pixel size must be positive (got {pixel_size_mm})")
    row = shape_descriptors(mask, pixel_size_mm)
    if image is not None:
        if np.shape(image)[:2] != np.shape(mask):
            raise ValueError(f"image is {np.shape(image)[:2]} but mask is {np.shape(mask)}")
        row.update(colour_descriptors(image, mask))
    return row


def write_measurements_csv(rows: Sequence[dict[str, Any]], path: str | Path,
                           overwrite: bool = False) -> Path:
    """One row per image (``id`` first); the first line is a ``#`` comment with the disclaimer."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another file or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        fh.write(f"# {DISCLAIMER}\n")
        writer = csv.DictWriter(fh, fieldnames=["id", *COLUMNS], extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


# What the napari table shows for each column: a readable name and its unit.
COLUMN_LABELS: dict[str, tuple[str, str]] = {
    "n_components": ("separate parts", ""),
    "area_px": ("area", "px²"),
    "perimeter_px": ("perimeter", "px"),
    "equivalent_diameter_px": ("equivalent diameter", "px"),
    "feret_diameter_max_px": ("largest diameter (Feret)", "px"),
    "area_mm2": ("area", "mm²"),
    "perimeter_mm": ("perimeter", "mm"),
    "equivalent_diameter_mm": ("equivalent diameter", "mm"),
    "feret_diameter_max_mm": ("largest diameter (Feret)", "mm"),
    "asymmetry_major_axis": ("asymmetry, major axis", "%"),
    "asymmetry_minor_axis": ("asymmetry, minor axis", "%"),
    "compactness": ("compactness (disc = 1)", ""),
    "solidity": ("solidity (convex = 1)", ""),
    "L_mean": ("lightness L* mean", ""),
    "L_std": ("lightness L* spread", ""),
    "a_mean": ("red-green a* mean", ""),
    "a_std": ("red-green a* spread", ""),
    "b_mean": ("yellow-blue b* mean", ""),
    "b_std": ("yellow-blue b* spread", ""),
    "n_colours": ("colour families present", ""),
    "colours": ("colours", ""),
    **{f"fraction_{name}": (f"{name.replace('_', ' ')} share", "%") for name in COLOUR_FAMILIES},
}


def display_value(column: str, value: Any) -> str:
    """A value as a person reads it: no exponents, thousands grouped, shares in percent."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value.replace(";", ", ").replace("_", " ")
    if COLUMN_LABELS.get(column, ("", ""))[1] == "%":
        return f"{100 * float(value):.1f} %"
    if isinstance(value, (int, np.integer)) or float(value).is_integer() and abs(value) >= 10:
        return f"{int(value):,}"
    value = float(value)
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def display_rows(row: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(names with units, values) for the descriptors that have a value."""
    names, values = [], []
    for column, value in row.items():
        text = display_value(column, value)
        if text == "" and column != "colours":
            continue
        label, unit = COLUMN_LABELS.get(column, (column, ""))
        names.append(f"{label} ({unit})" if unit and unit != "%" else label)
        values.append(text)
    return names, values
