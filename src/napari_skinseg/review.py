"""The review queue: which masks most likely need a person's correction, worst first.

:func:`estimate_quality` predicts the Dice of a model's mask against an expert's (see
:mod:`napari_skinseg.quality`); :func:`rank` orders estimates worst first; :func:`write_review`
writes ``review.csv`` (one header line, then one row per image, worst first) and ``review.html``
(a self-contained contact sheet: outline thumbnails as inline PNGs, worst first, with the
estimate; opens in any browser). Only :func:`estimate_quality` needs the network, run by
whichever engine segments (torch or ONNX Runtime); ranking and writing are torch-free.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .atomic import atomic_write
from .csv_cells import escape_cell
from .quality import FEATURE_NAMES, UNCALIBRATED, predicted_dice, quality_features

THUMBNAIL = 160  # pixels, longer side
REVIEW_CSV = "review.csv"
REVIEW_HTML = "review.html"


@dataclass
class QualityEstimate:
    """A mask's predicted Dice (0..1; higher = better), whether it is calibrated, the features."""

    id: str
    predicted_dice: float
    calibrated: bool
    features: dict[str, float] = field(default_factory=dict)
    thumbnail: np.ndarray | None = None  # small RGB image with the outline, for the contact sheet


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    if mask.shape == (size, size):
        return mask.astype(bool)
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BILINEAR)
    return np.asarray(small) > 127


def estimate_from_views(id: str, views: np.ndarray, mask: np.ndarray | None,
                        calibration: dict | None) -> QualityEstimate:
    """Torch-free: the estimate from test-time views already computed (e.g. by a worker)."""
    original = None if mask is None else np.asarray(mask, dtype=bool)
    mask = None if original is None else _resize_mask(original, views.shape[-1])
    features = quality_features(views, mask)
    if original is not None:  # a lesion too small to survive the resize is still a lesion
        features["empty"] = float(not original.any())
    value, calibrated = predicted_dice(features, calibration)
    return QualityEstimate(id, value, calibrated, features)


def estimate_quality(segmenter: Any, image: np.ndarray, mask: np.ndarray | None = None,
                     id: str = "", thumbnail: bool = False) -> QualityEstimate:
    """Predicted Dice of ``mask`` (default: the model's own post-processed mask) for ``image``,
    from the eight flip/rotation views of ``segmenter`` (a :class:`~.prediction.Segmenter` or
    :class:`~.onnx_engine.OnnxSegmenter`) and the calibration stored in its model file
    (uncalibrated ``tta_dice`` when there is none)."""
    from .tta import predict_views

    views = predict_views(segmenter, image)
    if mask is None:
        from .postprocess import postprocess

        h, w = image.shape[:2]
        prob = np.asarray(Image.fromarray(views[0].astype(np.float32)).resize((w, h), Image.BILINEAR))
        mask = postprocess(prob)
    calibration = segmenter.quality_calibration
    estimate = estimate_from_views(id, views, mask, calibration)
    if thumbnail:
        estimate.thumbnail = outline_thumbnail(image, mask)
    return estimate


def rank(estimates: Iterable[QualityEstimate]) -> list[QualityEstimate]:
    """Worst first: increasing predicted Dice, ties by id."""
    return sorted(estimates, key=lambda e: (e.predicted_dice, e.id))


def outline_thumbnail(image: np.ndarray, mask: np.ndarray, size: int = THUMBNAIL) -> np.ndarray:
    """A small copy of the image with the mask's outline in green (torch-free)."""
    from skimage.segmentation import find_boundaries

    from .image_io import to_rgb_uint8

    rgb = to_rgb_uint8(image)
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(rgb).resize((tw, th), Image.BILINEAR))
    small_mask = np.asarray(Image.fromarray(np.asarray(mask, np.uint8) * 255).resize(
        (tw, th), Image.BILINEAR)) > 127
    out = small.copy()
    out[find_boundaries(small_mask, mode="inner")] = (0, 255, 0)
    return out


def _png_base64(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def review_rows(estimates: list[QualityEstimate]) -> tuple[list[str], list[list[str]]]:
    ranked = rank(estimates)
    names = list(FEATURE_NAMES)
    header = ["rank", "id", "predicted_dice", "calibrated", *names]
    rows = [[str(i + 1), escape_cell(e.id), f"{e.predicted_dice:.4f}",
             "yes" if e.calibrated else "no",
             *(f"{e.features.get(n, float('nan')):.4f}" for n in names)]
            for i, e in enumerate(ranked)]
    return header, rows


def write_review_csv(estimates: list[QualityEstimate], path: str | os.PathLike) -> Path:
    header, rows = review_rows(estimates)

    def write(tmp):
        # ids of file names that are not UTF-8 keep their bytes (see atomic_write_text)
        with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    return atomic_write(path, write)


def write_review_html(estimates: list[QualityEstimate], path: str | os.PathLike,
                      title: str = "skinseg review queue") -> Path:
    ranked = rank(estimates)
    calibrated = all(e.calibrated for e in ranked)
    note = ("Predicted Dice against an expert's mask (calibrated on images the model never "
            "trained on)." if calibrated else f"Score is {UNCALIBRATED}; no calibration in "
            "this model file, so it ranks images but is not a Dice estimate.")
    cards = []
    for i, e in enumerate(ranked):
        colour = "#c0392b" if e.predicted_dice < 0.8 else "#d68910" if e.predicted_dice < 0.9 \
            else "#1e8449"
        img = (f'<img src="data:image/png;base64,{_png_base64(e.thumbnail)}" alt="{html.escape(e.id)}">'
               if e.thumbnail is not None else '<div class="none">no thumbnail</div>')
        cards.append(f'<figure>{img}<figcaption><b>#{i + 1}</b> {html.escape(e.id)}<br>'
                     f'<span style="color:{colour}">predicted Dice {e.predicted_dice:.2f}</span>'
                     f'</figcaption></figure>')
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1em}}figure{{display:inline-block;margin:.4em;
width:{THUMBNAIL}px;vertical-align:top;font-size:12px}}figure img{{width:{THUMBNAIL}px}}
.none{{width:{THUMBNAIL}px;height:{THUMBNAIL}px;background:#eee}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{len(ranked)} images, most likely to need correction first.
{html.escape(note)}</p>
{chr(10).join(cards)}
</body></html>
"""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8",
                                                               errors="backslashreplace"))


# What every review.csv / review.html this package wrote holds (since the first version): a rerun
# replaces its own queue, never a person's file that happens to have the same name.
_OWN_MARKS = {REVIEW_CSV: "rank,id,predicted_dice,", REVIEW_HTML: "most likely to need correction first"}


def check_review_files(folder: str | os.PathLike) -> None:
    """Raise ``ValueError`` when ``folder`` holds a review.csv or review.html that is not a review
    queue written by this package (checked before any work; ``--overwrite`` skips the check)."""
    from .destinations import check_output_file

    for name, mark in _OWN_MARKS.items():
        path = check_output_file(Path(folder) / name, overwrite=True, what="review queue")
        if not path.exists():
            continue
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(1 << 16)
        if mark not in head:
            raise ValueError(f"{path} is not a review queue written by skinseg; move it away or "
                             "pass --overwrite")


def write_review(estimates: list[QualityEstimate], folder: str | os.PathLike) -> tuple[Path, Path]:
    """``folder/review.csv`` and ``folder/review.html``, both worst first."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return (write_review_csv(estimates, folder / REVIEW_CSV),
            write_review_html(estimates, folder / REVIEW_HTML))
