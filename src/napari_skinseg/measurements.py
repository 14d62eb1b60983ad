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
import io
import math
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np
from scipy import ndimage
from skimage import color, measure

from .atomic import atomic_write_text, folder_lock
from .csv_cells import escape_cell, unescape_cell

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


_CHUNK = 1 << 20  # pixels per step: keeps a 24-megapixel lesion's working memory small


def _row_chunks(n_rows: int, width: int):
    step = max(1, _CHUNK // max(width, 1))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


_EDGE_MIDPOINTS = ((-0.5, 0.0), (0.5, 0.0), (0.0, -0.5), (0.0, 0.5))


def _hull(sub: np.ndarray, offsets=_EDGE_MIDPOINTS) -> np.ndarray:
    """Vertices (row, col) of the convex hull of the lesion's pixels, each pixel taken as the
    points ``offsets`` from its centre (its edges' midpoints), in order.

    Only each row's first and last lesion pixel can touch the hull, so the hull is found from
    two pixels per row, never from every lesion pixel."""
    rows = np.flatnonzero(sub.any(axis=1))
    left = sub[rows].argmax(axis=1) if len(rows) < 4096 else np.array(
        [sub[r].argmax() for r in rows])
    right = sub.shape[1] - 1 - (sub[rows, ::-1].argmax(axis=1) if len(rows) < 4096 else np.array(
        [sub[r, ::-1].argmax() for r in rows]))
    r = np.concatenate([rows, rows]).astype(np.float64)
    c = np.concatenate([left, right]).astype(np.float64)
    corners = np.concatenate([np.stack([r + dr, c + dc], axis=1) for dr, dc in offsets])
    corners = np.unique(corners, axis=0)
    try:
        from scipy.spatial import ConvexHull

        return corners[ConvexHull(corners).vertices]
    except Exception:  # degenerate (a line of pixels): the corners themselves
        return corners


def _max_distance(points: np.ndarray) -> float:
    best = 0.0
    for start in range(0, len(points), 1024):
        block = points[start:start + 1024]
        d = np.hypot(block[:, None, 0] - points[None, :, 0], block[:, None, 1] - points[None, :, 1])
        best = max(best, float(d.max()))
    return best


def _pixels_in_polygon(polygon: np.ndarray) -> int:
    """How many pixel centres (integer coordinates) lie in the convex polygon (row, col), edges
    included: a scanline count, never an image of the hull."""
    y, x = polygon[:, 0], polygon[:, 1]
    y2, x2 = np.roll(y, -1), np.roll(x, -1)
    total = 0
    rows = np.arange(math.ceil(y.min() - 1e-9), math.floor(y.max() + 1e-9) + 1, dtype=np.float64)
    for start in range(0, len(rows), 1024):
        ry = rows[start:start + 1024, None]
        lo, hi = np.minimum(y, y2), np.maximum(y, y2)
        valid = (ry >= lo - 1e-9) & (ry <= hi + 1e-9) & (hi > lo)
        with np.errstate(divide="ignore", invalid="ignore"):
            xs = x + (ry - y) * (x2 - x) / (y2 - y)
        xmin = np.where(valid, xs, np.inf).min(axis=1)
        xmax = np.where(valid, xs, -np.inf).max(axis=1)
        counts = np.floor(xmax + 1e-9) - np.ceil(xmin - 1e-9) + 1
        total += int(np.clip(counts[np.isfinite(counts)], 0, None).sum())
    return total


def _moments(sub: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (row, col) and covariance of the lesion pixels' coordinates, from sums per row
    (no list of pixel coordinates)."""
    h, w = sub.shape
    rr = np.arange(h, dtype=np.float64)
    cc = np.arange(w, dtype=np.float64)
    row_counts = sub.sum(axis=1).astype(np.float64)
    col_counts = sub.sum(axis=0).astype(np.float64)
    n = row_counts.sum()
    mr, mc = (row_counts @ rr) / n, (col_counts @ cc) / n
    src = 0.0
    for a, b in _row_chunks(h, w):
        src += float(rr[a:b] @ (sub[a:b].astype(np.float32) @ cc.astype(np.float32)).astype(np.float64))
    srr, scc = row_counts @ rr ** 2, col_counts @ cc ** 2
    cov = np.array([[srr / n - mr ** 2, src / n - mr * mc],
                    [src / n - mr * mc, scc / n - mc ** 2]])
    return np.array([mr, mc]), cov


def _mirror_overlap(sub: np.ndarray, centroid: np.ndarray, direction: np.ndarray) -> float:
    """Fraction of the lesion not covered by its reflection across the line through ``centroid``
    along ``direction`` (both in (row, col)): each lesion pixel's mirror position is sampled
    (bilinear, outside = skin) and counts as covered when that value is at least 0.5."""
    d = direction / np.linalg.norm(direction)
    reflect = 2 * np.outer(d, d) - np.eye(2)  # an involution: it is its own inverse
    values = sub.astype(np.float32)
    area, covered = 0, 0
    for a, b in _row_chunks(*sub.shape):
        rows, cols = np.nonzero(sub[a:b])
        if not len(rows):
            continue
        coords = np.stack([rows + a, cols]).astype(np.float64) - centroid[:, None]
        mirrored = reflect @ coords + centroid[:, None]
        sampled = ndimage.map_coordinates(values, mirrored, order=1, mode="constant", cval=0.0)
        covered += int((sampled >= 0.5).sum())
        area += len(rows)
    return float(1 - covered / area)


def shape_descriptors(mask: np.ndarray, pixel_size_mm: float | None = None) -> dict[str, float]:
    mask = np.asarray(mask) > 0
    out: dict[str, float] = {name: math.nan for name in SHAPE_COLUMNS}
    out["n_components"] = int(ndimage.label(mask, structure=np.ones((3, 3), bool))[1])
    area = int(np.count_nonzero(mask))
    out["area_px"] = area
    if area == 0:
        return out
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    sub = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # the bounding box, a view
    perimeter = float(measure.perimeter_crofton(sub, directions=4))
    out["perimeter_px"] = perimeter
    out["equivalent_diameter_px"] = math.sqrt(4 * area / math.pi)
    # The convex hull of the pixels' edge midpoints, as scikit-image's convex image: Feret
    # diameter across it, solidity against the pixel centres inside it; no image of it is built.
    out["feret_diameter_max_px"] = _max_distance(_hull(sub, _EDGE_MIDPOINTS))
    out["solidity"] = min(1.0, area / max(_pixels_in_polygon(_hull(sub, _EDGE_MIDPOINTS)), area))
    out["compactness"] = perimeter ** 2 / (4 * math.pi * area) if perimeter > 0 else math.nan
    if area >= 3:
        centroid, cov = _moments(sub)
        eigvals, eigvecs = np.linalg.eigh(cov + 1e-9 * np.eye(2))
        major, minor = eigvecs[:, 1], eigvecs[:, 0]
        out["asymmetry_major_axis"] = _mirror_overlap(sub, centroid, major)
        out["asymmetry_minor_axis"] = _mirror_overlap(sub, centroid, minor)
    if pixel_size_mm:
        out["area_mm2"] = area * pixel_size_mm ** 2
        for name in ("perimeter", "equivalent_diameter", "feret_diameter_max"):
            out[f"{name}_mm"] = out[f"{name}_px"] * pixel_size_mm
    return out


def colour_descriptors(image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """CIELAB statistics and colour families, a block of rows at a time (bounded memory)."""
    mask = np.asarray(mask) > 0
    image = np.asarray(image)
    out: dict[str, Any] = {name: math.nan for name in COLOUR_COLUMNS}
    out["colours"] = ""
    if not mask.any():
        out["n_colours"] = 0
        return out
    n, mean, m2 = 0, np.zeros(3), np.zeros(3)  # Chan et al.'s parallel mean/variance
    counts = np.zeros(len(COLOUR_FAMILIES), np.int64)
    for a, b in _row_chunks(*mask.shape):
        pixels = image[a:b][mask[a:b]][:, :3]
        if not len(pixels):
            continue
        lab = color.rgb2lab(pixels[None].astype(np.float64) / 255.0)[0]
        k = len(lab)
        chunk_mean = lab.mean(axis=0)
        chunk_m2 = ((lab - chunk_mean) ** 2).sum(axis=0)
        delta = chunk_mean - mean
        total = n + k
        mean = mean + delta * (k / total)
        m2 = m2 + chunk_m2 + delta ** 2 * (n * k / total)
        n = total
        nearest = np.full(k, np.inf)
        family = np.zeros(k, np.int64)
        for i, ref in enumerate(_FAMILY_LAB):
            dist = ((lab - ref) ** 2).sum(axis=1)
            closer = dist < nearest
            nearest[closer], family[closer] = dist[closer], i
        counts += np.bincount(family, minlength=len(COLOUR_FAMILIES))
    std = np.sqrt(np.maximum(m2 / n, 0))
    for i, channel in enumerate("Lab"):
        out[f"{channel}_mean"] = float(mean[i])
        out[f"{channel}_std"] = float(std[i])
    fractions = counts / n
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


TEXT_FIELDS = ("id", "layer", "colours")  # escaped for spreadsheets (csv_cells); the others are numbers


def _cell(field: str, value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return escape_cell(value) if field in TEXT_FIELDS and isinstance(value, str) else value


def _csv_text(rows: Sequence[dict[str, Any]], extra_fields: Sequence[str] = ()) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["id", *extra_fields, *COLUMNS],
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(k, v) for k, v in row.items()})
    return buffer.getvalue()


def write_measurements_csv(rows: Sequence[dict[str, Any]], path: str | Path,
                           overwrite: bool = False, extra_fields: Sequence[str] = ()) -> Path:
    """A plain table: one header line, one row per image (``id`` first, then ``extra_fields``,
    such as napari's ``layer``), written atomically.

    The disclaimer (:data:`DISCLAIMER`) is not in the file, so any CSV reader reads it as it is;
    show it wherever the numbers are shown.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another file or pass --overwrite")
    return atomic_write_text(path, _csv_text(rows, extra_fields), overwrite=overwrite)


def read_measurements_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a measurements CSV as written (strings); [] when the file does not exist.

    A leading ``#`` line (written by earlier versions) is skipped; a file that is not such a
    table raises ``ValueError``."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:  # as written
        lines = list(fh)
    while lines and lines[0].startswith("#"):  # only before the header: "#1" may be an image id
        lines.pop(0)
    if not lines:
        return []
    reader = csv.DictReader(lines)
    if not reader.fieldnames or reader.fieldnames[0] != "id":
        raise ValueError(f"{path} is not a measurements table (its first column is not 'id'); "
                         "move it away or pass --overwrite")
    rows = list(reader)
    for row in rows:  # the text as measured, not as escaped for spreadsheets
        row.update({k: unescape_cell(row[k]) for k in TEXT_FIELDS if row.get(k)})
    return rows


def made_with_pixel_size(row: dict[str, Any], pixel_size_mm: float | None) -> bool:
    """Whether a row (as read from a measurements CSV) can stay in a run given ``pixel_size_mm``:
    it was measured with that pixel size, or the run gives none (a rerun that adds overlays asks
    nothing of the millimetre columns, so rows made with a pixel size keep theirs). The file does
    not store the pixel size; the row's area in mm² over its area in pixels gives it back (to the
    6 digits written). A row of an empty mask has no lengths to get wrong: it fits any size."""
    if pixel_size_mm is None:
        return True
    try:
        area_px, area_mm2 = float(row["area_px"]), float(row.get("area_mm2") or "nan")
    except (KeyError, TypeError, ValueError):
        return False  # not a row this module wrote: measure again
    if not area_px > 0:
        return True
    if not (math.isfinite(area_mm2) and area_mm2 > 0):
        return False  # made without millimetres: measured again with them
    return math.isclose(math.sqrt(area_mm2 / area_px), pixel_size_mm, rel_tol=1e-4)


def merge_measurements_csv(rows: Sequence[dict[str, Any]], path: str | Path,
                           replace: bool = False, replace_ids: Collection[str] = ()
                           ) -> tuple[Path, int]:
    """Add ``rows`` to the table at ``path`` (created if missing), returning it and how many rows
    were added. Rows already there are kept unless ``replace`` (then a new row for the same id
    replaces the old one) or their id is in ``replace_ids``. Runs that merge into one folder at
    once take turns (a folder lock), so none loses another's rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(path.parent):
        existing = read_measurements_csv(path)
        new = {str(r["id"]): r for r in rows}
        merged, added = [], 0
        for row in existing:
            if (replace or row["id"] in replace_ids) and row["id"] in new:
                merged.append(new.pop(row["id"]))
            else:
                new.pop(row["id"], None)
                merged.append(row)
        for row in new.values():
            merged.append(row)
            added += 1
        if added or replace or replace_ids or not path.exists():
            atomic_write_text(path, _csv_text(merged))
    return path, added



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
